"""Keras 3 builders for every architecture of the four papers (see ``registry`` for names)."""

from mer_keras.models.registry import available, get

__all__ = ["available", "get"]
