"""Convolution blocks shared by the image backbones (ShuffleNetV2, MobileViT)."""

from __future__ import annotations

import keras

from mer_keras.models import heads as _h
from mer_keras.models.layers import activation_layer


class BuildContext:
    """Per-build switches the block functions share: activation, L2 regulariser, BatchNorm settings.

    BatchNorm defaults are PyTorch's (eps 1e-5, running-stat momentum 0.1 = Keras ``momentum=0.9``).
    """

    def __init__(self, activation, l2, bn_momentum=0.9, bn_epsilon=1e-5):
        self.activation = activation
        self.reg = _h.l2_regularizer(l2)
        self.bn = dict(momentum=bn_momentum, epsilon=bn_epsilon)


def conv_bn(x, ctx: BuildContext, filters, kernel, stride, name, act=True, depthwise=False):
    """Bias-free (depthwise) conv -> BatchNorm -> optional activation, PyTorch-style padding.

    A strided conv pads ``kernel // 2`` zeros on every side and convolves "valid" (as
    PyTorch's ``Conv2d(padding=k//2)``); Keras "same" would pad asymmetrically.
    """
    pad = kernel // 2
    if stride > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding=padding,
                                         use_bias=False, depthwise_regularizer=ctx.reg,
                                         name=f"{name}_dw")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding,
                                use_bias=False, kernel_regularizer=ctx.reg,
                                name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(**ctx.bn, name=f"{name}_bn")(x)
    if act:
        x = activation_layer(ctx.activation, name=f"{name}_act")(x)
    return x
