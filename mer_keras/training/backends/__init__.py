"""Backend-specific training code, one module per Keras 3 backend; everything else is ``keras.ops``.

The backend is chosen the Keras way (``KERAS_BACKEND``, or ``mer-keras --backend``, which
sets it before Keras is imported). Each module gives the same three things:

* ``runtime(device, mixed_precision, deterministic)`` -- a context manager that trains on
  the requested device under that backend's precision and determinism settings and yields
  ``{"backend", "device", "precision", "op_determinism"}``;
* ``FoldTrainer(model, optimizer, loss, x_train, y_train, batch_size, *, mixed=False,
  transform_gradients=None)`` -- one fold's compiled training epoch
  (``train_epoch(perm, lr) -> (loss, accuracy)``) and inference (``predict(x)``);
* ``seed(value)`` -- Python, NumPy and backend seeds for a fold;
* ``supports_vectorised`` -- whether K folds can train in one compiled step
  (:class:`~mer_keras.training.backends.jax.FoldProgram`; JAX only).

:mod:`.tensorflow` keeps the compiled ``tf.function`` epoch, zero-copy tensors, op
determinism and the one-replica all-reduce skip; :mod:`.jax` compiles one epoch of padded,
masked mini-batches with Keras' stateless API (``jax.lax.scan``), shared by every fold of a
run and vectorised over folds with ``jax.vmap``; :mod:`.torch` runs an eager loop with
autograd. Importing this package imports no backend.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager

BACKENDS = ("tensorflow", "jax", "torch")
DEVICES = ("auto", "cpu", "gpu")


@contextmanager
def precision_policy(enabled: bool):
    """``mixed_float16`` as Keras' global policy inside the block when ``enabled``; restored afterwards."""
    import keras

    if not enabled:
        yield "float32"
        return
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield "mixed_float16"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def name() -> str:
    """The Keras backend in use (``keras.backend.backend()``)."""
    import keras

    return keras.backend.backend()


def get(backend: str | None = None):
    """The training module of ``backend`` (default: the one Keras uses)."""
    backend = backend or name()
    if backend not in BACKENDS:
        raise RuntimeError(f"Keras backend {backend!r} cannot train here; set KERAS_BACKEND to one of {BACKENDS}")
    return importlib.import_module(f"{__name__}.{backend}")


def seed(value: int) -> None:
    """Seed Python, NumPy and the backend for a fold (``keras.utils.set_random_seed`` on TensorFlow).

    On JAX and PyTorch the TensorFlow seed is not set, so training there never imports it;
    a model's initial weights and dropout streams come from Python's ``random`` (Keras'
    default seeds), which is seeded on every backend.
    """
    get().seed(int(value))


def runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """The current backend's training context (see the module docstring)."""
    return get().runtime(device, mixed_precision=mixed_precision, deterministic=deterministic)


def fold_trainer(model, optimizer, loss, x_train, y_train, batch_size: int, *, mixed: bool = False,
                 transform_gradients=None):
    """One fold's compiled trainer on the current backend (see the module docstring)."""
    return get().FoldTrainer(model, optimizer, loss, x_train, y_train, batch_size, mixed=mixed,
                             transform_gradients=transform_gradients)


__all__ = ["BACKENDS", "DEVICES", "precision_policy", "fold_trainer", "get", "name", "runtime", "seed"]
