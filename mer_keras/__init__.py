"""mer-keras: lightweight micro-expression recognition in Keras 3."""

__version__ = "0.1.0"
