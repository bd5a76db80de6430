"""PyTorch's default initialisation applied to a built Keras model.

A recipe that reproduces an official PyTorch code starts from the weights that code starts
from. PyTorch's ``nn.Conv{1,2,3}d`` and ``nn.Linear`` (``reset_parameters``) draw their
weights from ``kaiming_uniform_(a=sqrt(5))`` and their biases from ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))``. With ``a = sqrt(5)`` the gain is ``sqrt(2 / (1 + a^2)) = sqrt(1/3)`` and
the kaiming bound ``gain * sqrt(3 / fan_in)`` is also ``1 / sqrt(fan_in)``, so weights and
biases share one bound. ``fan_in`` is the weight's size per output unit: ``in/groups * kh *
kw`` for a convolution (``kh * kw`` for a depthwise one), ``in`` for a linear layer.
``nn.BatchNorm`` starts at gamma 1, beta 0, mean 0, variance 1, which are Keras' defaults.

The Keras builders keep Keras' defaults (glorot-uniform kernels, zero biases); the
training engine calls :func:`pytorch_default_init` on a fresh model when a recipe says
``init="pytorch"``.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["pytorch_default_init", "torch_fan_in"]


def _walk(layer):
    """``layer`` and every layer nested in it (functional sub-models and ``layers`` attributes)."""
    yield layer
    for sub in getattr(layer, "layers", None) or ():
        if sub is not layer:
            yield from _walk(sub)


def torch_fan_in(layer) -> int | None:
    """PyTorch's ``fan_in`` of ``layer``'s kernel, or ``None`` for a layer PyTorch builds differently.

    Keras layouts: ``ConvND`` kernel ``(*k, in/groups, out)``; ``DepthwiseConv2D`` kernel
    ``(kh, kw, in, multiplier)`` (PyTorch: ``Conv2d(groups=in)``, weight ``(out, 1, kh,
    kw)``); ``Dense`` kernel ``(in, out)``; the per-head 1x1 projections of
    :class:`~mer_keras.models.flow_layers.OffTANetMHSA` ``(heads, in, d)`` (one
    ``nn.Conv2d(in, d, 1)`` per head in the official code).
    """
    import keras

    name = type(layer).__name__
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return int(np.prod(layer.kernel.shape[:2]))
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        return int(np.prod(layer.kernel.shape[:-1]))
    if isinstance(layer, keras.layers.Dense):
        return int(layer.kernel.shape[0])
    if name == "OffTANetMHSA":
        return int(layer.q_kernel.shape[1])
    return None


def _draw(rng: np.random.Generator, variable, fan_in: int) -> None:
    bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
    shape = tuple(int(d) for d in variable.shape)
    variable.assign(rng.uniform(-bound, bound, size=shape).astype(variable.dtype))


def pytorch_default_init(model, seed: int | None = None) -> dict:
    """Re-draw ``model``'s convolution, linear and projection weights as PyTorch initialises them.

    Args:
        model: a built Keras model (any backend).
        seed: seed of the draw; ``None`` takes one from Python's ``random`` (seeded per fold
            by the training engine), so a seeded fold gets the same weights on every backend.

    Returns:
        ``{"reinitialised": [layer names], "kept": [layer names]}`` -- ``kept`` lists layers
        with trainable weights this function does not know (they keep the builder's
        initialisation); BatchNorm layers are neither (their defaults already match).
    """
    import keras

    if seed is None:
        seed = random.getrandbits(32)
    rng = np.random.default_rng(int(seed))
    done, kept, seen = [], [], set()
    for layer in _walk(model):
        if id(layer) in seen or layer is model:
            continue
        seen.add(id(layer))
        own = [w for w in layer.trainable_weights]
        if not own or hasattr(layer, "layers"):
            continue
        fan_in = torch_fan_in(layer)
        if fan_in is None:
            if not isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
                kept.append(layer.name)
            continue
        if type(layer).__name__ == "OffTANetMHSA":
            variables = [getattr(layer, f"{p}_{kind}") for p in "qkv" for kind in ("kernel", "bias")
                         if hasattr(layer, f"{p}_{kind}")]
        else:
            variables = [layer.kernel] + ([layer.bias] if getattr(layer, "bias", None) is not None else [])
        for variable in variables:
            _draw(rng, variable, fan_in)
        done.append(layer.name)
    return {"reinitialised": done, "kept": kept}
