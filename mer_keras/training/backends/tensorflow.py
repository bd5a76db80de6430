"""TensorFlow training: the compiled ``tf.function`` epoch, zero-copy tensors, op determinism.

The default backend on CPU (the papers' stack). One ``tf.function`` runs one epoch (a
``tf.range`` loop over the mini-batches of a per-epoch permutation; the last partial batch
kept, as PyTorch's ``drop_last=False``); the learning rate is set between epochs. Timings
against ``model.fit`` and the reference PyTorch loops are produced by ``mer-keras bench
train`` (:mod:`mer_keras.training.bench`), not kept here.

Determinism: on CPU :func:`runtime` enables ``tf.config.experimental.enable_op_determinism()``
for the duration of the run (restored afterwards), so a fold gives bit-identical scores
whether it runs in a full run, alone, or after a resume; on GPU it stays off unless asked
for (some GPU kernels have no deterministic version).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np

supports_vectorised = False


def seed(value: int) -> None:
    """``keras.utils.set_random_seed`` (Python, NumPy, TensorFlow, Keras' global generator)."""
    import keras

    keras.utils.set_random_seed(int(value))


def skip_one_replica_all_reduce(optimizer):
    """``optimizer`` without the gradient all-reduce Keras runs outside a ``tf.distribute`` strategy.

    Without a strategy that all-reduce is a sum over one replica, the identity, but Keras'
    TensorFlow optimiser runs it through ``tf.custom_gradient``, which in a traced function
    registers a gradient function in TensorFlow's process-wide gradient registry and never
    removes it. That function holds the traced epoch graph, so every fold's graph (model,
    gradients, optimiser update) stayed alive (``tests/test_memory.py``). Every TensorFlow
    training loop of the engine takes its optimiser through here.
    """
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        for each in {optimizer, getattr(optimizer, "inner_optimizer", optimizer)}:
            each._all_reduce_sum_gradients = list  # (grads, variables) pairs unchanged
    return optimizer


def prepare_optimizer(optimizer, *, mixed: bool = False):
    """Loss-scaled when ``mixed``, and without the one-replica all-reduce (see above)."""
    import keras

    if mixed:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return skip_one_replica_all_reduce(optimizer)


def epoch_steps(model, optimizer, loss_fn, x, y, perm, batch_size: int, *, mixed: bool = False,
                transform_gradients=None):
    """One epoch of mini-batch steps (traced inside a ``tf.function``); returns ``(mean loss, accuracy)``.

    Batches follow ``perm`` (last partial batch kept, as PyTorch's ``drop_last=False``);
    the loss includes the model's regularisation losses, is scaled for a
    ``LossScaleOptimizer`` when ``mixed``, and ``transform_gradients(grads)`` (e.g. a
    freeze mask) is applied before the optimiser step.
    """
    import tensorflow as tf

    variables = model.trainable_variables
    n = tf.shape(perm)[0]
    bs = int(batch_size)
    steps = (n + bs - 1) // bs
    total, correct = tf.constant(0.0), tf.constant(0)
    for s in tf.range(steps):
        idx = perm[s * bs: tf.minimum((s + 1) * bs, n)]
        xb, yb = tf.gather(x, idx), tf.gather(y, idx)
        with tf.GradientTape() as tape:
            out = tf.cast(model(xb, training=True), tf.float32)
            loss = loss_fn(yb, out)
            if model.losses:
                loss = loss + tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
            scaled = optimizer.scale_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, variables)
        if transform_gradients is not None:
            grads = transform_gradients(grads)
        optimizer.apply(grads, variables)
        total += loss * tf.cast(tf.shape(idx)[0], tf.float32)
        correct += tf.reduce_sum(tf.cast(tf.equal(tf.cast(tf.argmax(out, -1), tf.int32), yb), tf.int32))
    return total / tf.cast(n, tf.float32), tf.cast(correct, tf.float32) / tf.cast(n, tf.float32)


def to_tensor(x):
    """``x`` as a TensorFlow tensor, without a copy when TensorFlow can share its memory.

    A writeable, C-contiguous, 64-byte-aligned numpy array (e.g. from
    :func:`~mer_keras.training.datasets.aligned_empty`) is handed over through DLPack: the
    tensor reads the array's memory and keeps the array alive, so the caller must not write
    to it afterwards. Any
    other array is copied by ``tf.constant``, which needs a transient of its own on top of
    the array (also for aligned arrays; measured size: docs/benchmarks.md, section
    "``tf.constant`` copy transient"). A tensor is returned as it is.
    """
    import tensorflow as tf

    from ..datasets import TENSOR_ALIGNMENT

    if isinstance(x, tf.Tensor):
        return x
    x = np.asarray(x)
    if (x.size and x.flags.c_contiguous and x.flags.writeable and x.ctypes.data % TENSOR_ALIGNMENT == 0
            and x.dtype.kind in "uif"):
        return tf.experimental.dlpack.from_dlpack(x.__dlpack__())
    return tf.constant(x)


class FoldTrainer:
    """Compiled per-epoch training and inference of one fold's model (in-memory tensors).

    ``x_train`` reaches TensorFlow through :func:`to_tensor`:
    without a copy for a 64-byte-aligned buffer (the two-stage frames), else copied. The
    compiled functions close over the model, optimiser and tensors, not over the trainer,
    so a dropped trainer frees its tensors at once (no reference cycle waiting for the
    garbage collector).
    """

    def __init__(self, model, optimizer, loss_fn, x_train, y_train, batch_size: int, *, mixed: bool = False,
                 transform_gradients=None):
        import tensorflow as tf

        self.model, self.mixed = model, mixed
        self.optimizer = optimizer = prepare_optimizer(optimizer, mixed=mixed)
        optimizer.build(model.trainable_variables)
        self.x = x = to_tensor(x_train)
        self.y = y = tf.constant(np.asarray(y_train).astype(np.int32))
        batch_size = int(batch_size)

        def epoch(perm):
            return epoch_steps(model, optimizer, loss_fn, x, y, perm, batch_size, mixed=mixed,
                               transform_gradients=transform_gradients)

        def infer(batch):
            return tf.cast(model(batch, training=False), tf.float32)

        self._epoch = tf.function(epoch, reduce_retracing=True)
        self._infer = tf.function(infer, reduce_retracing=True)

    def train_epoch(self, perm: np.ndarray, lr: float) -> tuple[float, float]:
        self.optimizer.learning_rate.assign(lr)
        loss, acc = self._epoch(np.asarray(perm).astype(np.int32))
        return float(loss), float(acc)

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        out = [self._infer(x[i: i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros((0, int(self.model.output_shape[-1])))
        return np.concatenate(out).astype(np.float64)


@contextmanager
def device_scope(device: str):
    """Context that trains on ``device`` (``"auto"``, ``"cpu"``, ``"gpu"``); yields ``"cpu"`` or ``"gpu"``.

    ``"cpu"`` hides the GPUs (``tf.config.set_visible_devices([], "GPU")``, which only works
    before TensorFlow initialises its devices) and in any case places the ops on the CPU;
    ``"gpu"`` raises ``RuntimeError`` when TensorFlow sees none; ``"auto"`` uses a GPU if
    there is one.
    """
    import tensorflow as tf

    from . import DEVICES

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # devices already initialised: placing ops below is enough
            pass
        with tf.device("/CPU:0"):
            yield "cpu"
        return
    gpus = tf.config.list_logical_devices("GPU")
    if device == "gpu" and not gpus:
        raise RuntimeError("device 'gpu' requested but TensorFlow sees no GPU (use --device auto or cpu)")
    yield "gpu" if gpus else "cpu"


@contextmanager
def quiet_retracing():
    """Silence TensorFlow's "triggered tf.function retracing" warning inside the block.

    Every fold builds a fresh model and therefore traces its compiled epoch once: expected,
    not the accidental retracing the warning is about.
    """
    tf_logger = logging.getLogger("tensorflow")
    previous = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(previous)


@contextmanager
def op_determinism(enabled: bool):
    """TensorFlow op determinism inside the block when ``enabled``; the previous state is restored after."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the public API has no getter/disable

    previous = bool(tf_config.is_op_determinism_enabled())
    if enabled and not previous:
        tf.config.experimental.enable_op_determinism()
    try:
        yield bool(tf_config.is_op_determinism_enabled())
    finally:
        if enabled and not previous:
            tf_config.disable_op_determinism()


@contextmanager
def runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """Device, precision (mixed only on a GPU and when asked), determinism (default on for CPU)."""
    from . import precision_policy

    with (device_scope(device) as used,
          precision_policy(mixed_precision and used == "gpu") as policy,
          op_determinism(deterministic if deterministic is not None else used == "cpu") as determinism,
          quiet_retracing()):
        yield {"backend": "tensorflow", "device": used, "precision": policy, "op_determinism": determinism}


__all__ = ["FoldTrainer", "seed", "to_tensor", "device_scope", "epoch_steps", "op_determinism", "prepare_optimizer", "quiet_retracing",
           "runtime", "skip_one_replica_all_reduce", "supports_vectorised"]
