"""mer-keras: lightweight micro-expression recognition in Keras 3."""

__version__ = "0.1.0"


def _quiet_worker() -> None:
    """In a worker process of a quiet command, the quiet ``import tensorflow`` of :mod:`mer_keras.quiet`."""
    import os

    if os.environ.get("MER_KERAS_QUIET_TF") == "1":
        from .quiet import install_import_hook

        install_import_hook()


_quiet_worker()
del _quiet_worker

_LAZY = {"load_pipeline": "mer_keras.inference.predict", "Pipeline": "mer_keras.inference.predict"}


def __getattr__(name):
    """``mer_keras.load_pipeline`` / ``mer_keras.Pipeline``, imported on first use (``import mer_keras`` is light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mer_keras' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
