"""JAX training: one compiled epoch shared by every fold of a run, and K folds in one vectorised step.

The epoch is a pure function of a fold's state ``(trainable, non-trainable, optimiser)``
values, built from a *template* model with Keras' stateless API
(``model.stateless_call``, ``optimizer.stateless_apply``): every fold of a recipe has the
same structure, so the function is traced and compiled once per run and each fold only
brings its own state (its freshly built, seeded model's values). An epoch is a
``jax.lax.scan`` over fixed-size mini-batches gathered on the device from one shared pool
(the whole dataset, plus its mirrored copies when the recipe oversamples):

* the last, ragged batch of a fold is padded and *masked*: padded samples add nothing to
  the loss (a masked mean over the real samples) nor to the BatchNorm moments (every
  BatchNorm layer takes the sample mask through :func:`masked_moments`), so a padded step
  computes what the unpadded one does;
* a step with no real sample (a fold with fewer batches than the longest fold of its group)
  leaves weights, optimiser state and BatchNorm statistics unchanged;
* per-fold normalisation statistics are applied inside the step.

:class:`FoldProgram` trains one fold (``epoch``) or a group of K folds at once
(``vectorised_epoch``: ``jax.vmap`` of the same function over stacked states, batches,
masks and statistics; each fold's dropout draws come from its own seed-generator state).
Both give the same predictions within float tolerance (``tests/test_backends.py``). On a
GPU the vectorised step trains many small folds for the price of about one; on XLA's CPU
backend a vectorised convolution gradient is slow, so the serial loop is the CPU default.
Timings: ``experiments/00e_gpu_training.py``.
"""

from __future__ import annotations

import contextvars
import types
from contextlib import contextmanager

import numpy as np

def seed(value: int) -> None:
    """Python's and NumPy's seeds (Keras' default initialiser and dropout seeds come from Python's ``random``)."""
    import random

    random.seed(int(value))
    np.random.seed(int(value))


supports_vectorised = True

_SAMPLE_MASK: contextvars.ContextVar = contextvars.ContextVar("mer_keras_sample_mask", default=None)


def masked_moments(model) -> int:
    """Make every BatchNormalization layer of ``model`` take the active sample mask; returns how many.

    While :func:`sample_mask` is active, a layer's training-time moments are taken over the
    samples whose mask is 1 only (Keras' own masked-moment code, the mask broadcast over
    the spatial axes); outside it the layers behave as before. Installed per layer instance.
    """
    import keras

    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.BatchNormalization) or getattr(layer, "_mer_masked", False):
            continue
        original = layer._moments

        def moments(self, inputs, mask, _original=original):
            active = _SAMPLE_MASK.get()
            if mask is None and active is not None:
                shape = tuple(inputs.shape[:-1])
                mask = keras.ops.broadcast_to(
                    keras.ops.reshape(active, (shape[0],) + (1,) * (len(shape) - 1)), shape)
            return _original(inputs, mask)

        object.__setattr__(layer, "_moments", types.MethodType(moments, layer))
        object.__setattr__(layer, "_mer_masked", True)
        count += 1
    return count


@contextmanager
def sample_mask(mask):
    """Inside the block, BatchNorm layers prepared by :func:`masked_moments` use ``mask`` (shape (B,))."""
    token = _SAMPLE_MASK.set(mask)
    try:
        yield
    finally:
        _SAMPLE_MASK.reset(token)


def model_state(model) -> tuple[list, list]:
    """The ``(trainable, non-trainable)`` variable values of a built model (JAX arrays)."""
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]


def assign_state(model, trainable, non_trainable) -> None:
    """Write state values back into ``model``'s variables (to save or inspect the fitted model)."""
    for var, value in zip(model.trainable_variables, trainable):
        var.assign(np.asarray(value))
    for var, value in zip(model.non_trainable_variables, non_trainable):
        var.assign(np.asarray(value))


class FoldProgram:
    """Compiled epoch and inference functions of one model structure (see the module docstring).

    Args:
        template: a built model of the recipe (its structure is used, never its values).
        optimizer: a fresh Keras optimiser of the recipe (built here on the template).
        per_sample_loss: a Keras loss with ``reduction=None``.
        pool_x, pool_y: every sample a fold may train on (the dataset, then its mirrored
            copies when the recipe oversamples), float32 NHWC and int labels; moved to the
            device once.
        batch_size: mini-batch size.
        flip_from: first pool position of the mirrored copies whose channel 0 (flow ``u``)
            changes sign *after* normalisation (``None``: no such copies).
    """

    def __init__(self, template, optimizer, per_sample_loss, pool_x, pool_y, batch_size: int, *,
                 flip_from: int | None = None):
        import jax
        import jax.numpy as jnp

        self.template = template
        self.batch_size = int(batch_size)
        masked_moments(template)
        optimizer.build(template.trainable_variables)
        self.optimizer = optimizer
        paths = [v.path for v in optimizer.variables]
        self._lr_index = next(i for i, p in enumerate(paths) if p.endswith("learning_rate"))
        self.optimizer_init = [v.value for v in optimizer.variables]
        self.pool_x = jax.device_put(np.asarray(pool_x, dtype=np.float32))
        self.pool_y = jax.device_put(np.asarray(pool_y, dtype=np.int32))
        flip_from = -1 if flip_from is None else int(flip_from)
        model, lr_index = template, self._lr_index

        def loss_and_updates(tv, ntv, xb, yb, mask):
            with sample_mask(mask):
                out, ntv2, losses = model.stateless_call(tv, ntv, xb, training=True, return_losses=True)
            out = jnp.asarray(out, jnp.float32)
            per = jnp.asarray(per_sample_loss(yb, out), jnp.float32)
            n = jnp.maximum(mask.sum(), 1.0)
            loss = (per * mask).sum() / n
            for term in losses:
                loss = loss + jnp.asarray(term, jnp.float32)
            return loss, (ntv2, out)

        grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

        def epoch(state, lr, idx, mask, mean, std):
            tv, ntv, ov = state
            ov = list(ov)
            ov[lr_index] = jnp.asarray(lr, ov[lr_index].dtype)

            def body(carry, batch):
                tv, ntv, ov, total, correct, count = carry
                i, m = batch
                xb = (self.pool_x[i] - mean) / std
                if flip_from >= 0:
                    sign = jnp.where(i >= flip_from, -1.0, 1.0)[:, None, None]
                    xb = xb.at[..., 0].multiply(sign)
                yb = self.pool_y[i]
                (loss, (ntv2, out)), grads = grad_fn(tv, ntv, xb, yb, m)
                tv2, ov2 = optimizer.stateless_apply(ov, grads, tv)
                active = m.sum() > 0
                keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)  # noqa: E731
                hits = ((jnp.argmax(out, -1) == yb) * m).sum()
                carry = (keep(tv2, tv), keep(ntv2, ntv), keep(list(ov2), ov), total + loss * m.sum(),
                         correct + hits, count + m.sum())
                return carry, None

            zero = jnp.zeros((), jnp.float32)
            (tv, ntv, ov, total, correct, count), _ = jax.lax.scan(body, (tv, ntv, ov, zero, zero, zero), (idx, mask))
            count = jnp.maximum(count, 1.0)
            return (tv, ntv, ov), total / count, correct / count

        def infer(tv, ntv, x):
            out, _ = model.stateless_call(tv, ntv, x, training=False)
            return jnp.asarray(out, jnp.float32)

        self._epoch = jax.jit(epoch, donate_argnums=(0,))
        self._vepoch = jax.jit(jax.vmap(epoch, in_axes=(0, None, 0, 0, 0, 0)), donate_argnums=(0,))
        self._infer = jax.jit(infer)
        self._compiled: dict = {}

    # ------------------------------------------------------------------ states

    def init_state(self, model) -> tuple:
        """A fold's starting state: copies of its freshly built model's values and a fresh optimiser state."""
        import jax.numpy as jnp

        tv, ntv = model_state(model)
        return [jnp.array(v) for v in tv], [jnp.array(v) for v in ntv], [jnp.array(v) for v in self.optimizer_init]

    @staticmethod
    def stack(states) -> tuple:
        """K fold states stacked along a new leading axis (the vectorised step's input)."""
        import jax
        import jax.numpy as jnp

        return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)

    @staticmethod
    def unstack(state, k: int) -> list:
        import jax

        return [jax.tree_util.tree_map(lambda a: a[i], state) for i in range(k)]

    # ------------------------------------------------------------------ batches

    def batches(self, rows_in_order: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Pool positions in epoch order -> ``(idx, mask)`` of shape (steps, batch), padded with masked zeros."""
        bs = self.batch_size
        idx = np.zeros(steps * bs, dtype=np.int32)
        mask = np.zeros(steps * bs, dtype=np.float32)
        idx[: len(rows_in_order)] = rows_in_order
        mask[: len(rows_in_order)] = 1.0
        return idx.reshape(steps, bs), mask.reshape(steps, bs)

    def steps_for(self, n: int) -> int:
        return max(1, -(-int(n) // self.batch_size))

    # ------------------------------------------------------------------ training and inference

    def epoch(self, state, lr: float, idx, mask, mean, std):
        """One epoch of one fold; returns ``(state, mean loss, accuracy)`` (device values)."""
        return self._epoch(state, np.float32(lr), idx, mask, mean, std)

    def vectorised_epoch(self, state, lr: float, idx, mask, mean, std):
        """One epoch of K folds (stacked state; idx/mask (K, steps, batch); mean/std (K, C))."""
        return self._vectorised_compiled(state, idx, mask, mean, std)(state, np.float32(lr), idx, mask, mean, std)

    def _vectorised_compiled(self, state, idx, mask, mean, std):
        key = (tuple(np.shape(idx)), tuple(np.shape(mean)))
        if key not in self._compiled:
            self._compiled[key] = self._vepoch.lower(state, np.float32(0.0), idx, mask, mean, std).compile()
        return self._compiled[key]

    def vectorised_bytes(self, k: int, steps: int, channels: int) -> int | None:
        """Device memory one compiled K-fold epoch needs (XLA's memory analysis; compiled once and kept)."""
        state = self.stack([self.init_state(self.template)] * k)
        idx = np.zeros((k, steps, self.batch_size), np.int32)
        mask = np.zeros((k, steps, self.batch_size), np.float32)
        mean, std = np.zeros((k, channels), np.float32), np.ones((k, channels), np.float32)
        compiled = self._vectorised_compiled(state, idx, mask, mean, std)
        del state
        try:
            analysis = compiled.memory_analysis()
            return int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes)
        except Exception:  # noqa: BLE001 - not every XLA backend reports it
            return None

    def predict(self, state, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Inference-mode scores of ``x`` (already normalised), in fixed-size padded chunks (one compilation)."""
        tv, ntv = state[0], state[1]
        n = len(x)
        out = []
        for start in range(0, n, batch_size):
            chunk = np.asarray(x[start: start + batch_size], dtype=np.float32)
            pad = batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
            out.append(np.asarray(self._infer(tv, ntv, chunk))[: batch_size - pad])
        if not out:
            return np.zeros((0, int(self.template.output_shape[-1])))
        return np.concatenate(out).astype(np.float64)


class FoldTrainer:
    """One fold on its own arrays, with the engine's trainer interface (used by the multi-stage kinds).

    A thin use of :class:`FoldProgram` with the fold's training arrays as the pool.
    """

    def __init__(self, model, optimizer, loss_fn, x_train, y_train, batch_size: int, *, mixed: bool = False,
                 transform_gradients=None):
        if transform_gradients is not None:
            raise NotImplementedError("gradient transforms (frozen layers) train on the TensorFlow backend only")
        per_sample = _per_sample(loss_fn)
        self.model = model
        self.program = FoldProgram(model, optimizer, per_sample, x_train, y_train, batch_size)
        self.state = self.program.init_state(model)
        c = np.asarray(x_train).shape[-1]
        self._mean, self._std = np.zeros(c, np.float32), np.ones(c, np.float32)
        self.n = len(y_train)

    def train_epoch(self, perm: np.ndarray, lr: float) -> tuple[float, float]:
        idx, mask = self.program.batches(np.asarray(perm), self.program.steps_for(self.n))
        self.state, loss, acc = self.program.epoch(self.state, lr, idx, mask, self._mean, self._std)
        assign_state(self.model, self.state[0], self.state[1])
        return float(loss), float(acc)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return self.program.predict(self.state, x, batch_size)


def _per_sample(loss_fn):
    """A per-sample version of a Keras loss object (``reduction=None``), rebuilt from its config.

    (``copy.copy`` of a Keras loss serialises it, which imports TensorFlow when installed.)
    """
    if hasattr(loss_fn, "get_config"):
        return type(loss_fn).from_config({**loss_fn.get_config(), "reduction": None})
    raise TypeError("the JAX trainer needs a Keras loss object (make_loss(..., per_sample=True))")


@contextmanager
def runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """JAX device context; float32 (mixed precision is not used on this backend).

    XLA's CPU kernels are deterministic; on a GPU determinism needs
    ``XLA_FLAGS=--xla_gpu_deterministic_ops=true`` set before JAX starts, reported as found.
    """
    import os

    import jax

    from . import DEVICES

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    gpus = [d for d in jax.devices() if d.platform == "gpu"] if jax.default_backend() == "gpu" else []
    if device == "gpu" and not gpus:
        raise RuntimeError("device 'gpu' requested but JAX sees no GPU (use --device auto or cpu)")
    used = "gpu" if gpus and device != "cpu" else "cpu"
    target = gpus[0] if used == "gpu" else jax.devices("cpu")[0]
    deterministic_flag = "xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")
    with jax.default_device(target):
        yield {"backend": "jax", "device": used, "precision": "float32",
               "op_determinism": used == "cpu" or deterministic_flag}


__all__ = ["FoldProgram", "seed", "FoldTrainer", "assign_state", "masked_moments", "model_state", "runtime", "sample_mask",
           "supports_vectorised"]
