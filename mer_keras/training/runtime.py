"""Where and how a fold trains: the device names, the mixed-precision policy, and the backend's context.

These context managers wrap the training of one or more LOSO folds, in the driver process
(in-process executor) or inside a worker (Ray executor, :mod:`mer_keras.training.executors`),
so a fold trains under the same settings wherever it runs.
"""

from __future__ import annotations

from .backends import DEVICES, precision_policy


def fold_runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """The current Keras backend's training context (:func:`mer_keras.training.backends.runtime`).

    Yields ``{"backend", "device", "precision", "op_determinism"}``. TensorFlow: mixed
    precision only on a GPU and only when asked for; op determinism on for CPU training and
    off on GPU unless asked for. JAX and PyTorch: see their modules.
    """
    from . import backends

    return backends.runtime(device, mixed_precision=mixed_precision, deterministic=deterministic)


def device_scope(device: str):
    """TensorFlow's device context (:func:`mer_keras.training.backends.tensorflow.device_scope`)."""
    from .backends.tensorflow import device_scope as scope

    return scope(device)


__all__ = ["DEVICES", "device_scope", "fold_runtime", "precision_policy"]
