"""mer-keras: lightweight micro-expression recognition in Keras 3."""

__version__ = "0.1.0"

_LAZY = {"load_pipeline": "mer_keras.inference.predict", "Pipeline": "mer_keras.inference.predict"}


def __getattr__(name):
    """``mer_keras.load_pipeline`` / ``mer_keras.Pipeline``, imported on first use (``import mer_keras`` stays light)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mer_keras' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
