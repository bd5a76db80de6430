"""Where and how a fold trains: device choice, mixed precision, op determinism, quiet tracing.

These context managers wrap the training of one or more LOSO folds, in the driver process
(in-process executor) or inside a worker (Ray executor, :mod:`mer_keras.training.executors`),
so a fold trains under the same settings wherever it runs.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

DEVICES = ("auto", "cpu", "gpu")


@contextmanager
def device_scope(device: str):
    """Context that trains on ``device`` (``"auto"``, ``"cpu"``, ``"gpu"``); yields ``"cpu"`` or ``"gpu"``.

    ``"cpu"`` hides the GPUs (``tf.config.set_visible_devices([], "GPU")``, which only works
    before TensorFlow initialises its devices) and in any case places the ops on the CPU;
    ``"gpu"`` raises ``RuntimeError`` when TensorFlow sees none; ``"auto"`` uses a GPU if
    there is one.
    """
    import tensorflow as tf

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
def fold_runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """All of the above for training folds; yields ``{"device", "precision", "op_determinism"}``.

    Mixed precision is used only on a GPU and only when asked for; op determinism defaults
    to on for CPU training and off on GPU (some GPU kernels have no deterministic version).
    """
    with (device_scope(device) as used,
          precision_policy(mixed_precision and used == "gpu") as policy,
          op_determinism(deterministic if deterministic is not None else used == "cpu") as determinism,
          quiet_retracing()):
        yield {"device": used, "precision": policy, "op_determinism": determinism}


__all__ = ["DEVICES", "device_scope", "fold_runtime", "op_determinism", "precision_policy", "quiet_retracing"]
