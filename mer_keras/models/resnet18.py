"""ResNet18 (He et al. 2016) in the torchvision layout — the comparison model of Table 4 of
the MobileViT paper (and the ResNet18-based baseline family cited by both papers).

conv1 7x7/2 64 (no bias) -> BN -> act -> max-pool 3x3/2 -> four stages of two BasicBlocks
(64, 128, 256, 512; the first block of stages 2-4 has stride 2 and a 1x1 conv + BN
projection shortcut) -> global average pooling -> linear classifier. Padding as PyTorch
(``ZeroPadding2D`` + "valid"); BatchNorm ``epsilon=1e-5, momentum=0.9`` (PyTorch
semantics). 1000 classes: 11,689,512 trainable parameters.

Layer names: ``conv1_*``, ``pool1_*``, ``layer{1..4}_block{1,2}_{conv1,bn1,act1,conv2,bn2,
downsample_conv,downsample_bn,add,out}``, ``avg_pool``, ``head_dropout``, ``predictions``.
"""

from __future__ import annotations

import keras

from mer_keras.models import heads as _h
from mer_keras.models.layers import activation_layer, check_activation

BN = dict(momentum=0.9, epsilon=1e-5)


def _conv(x, filters, kernel, stride, reg, name):
    pad = kernel // 2
    if pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, use_bias=False,
                               kernel_regularizer=reg, name=name)(x)


def _basic_block(x, filters, stride, reg, activation, name):
    shortcut = x
    y = _conv(x, filters, 3, stride, reg, f"{name}_conv1")
    y = keras.layers.BatchNormalization(**BN, name=f"{name}_bn1")(y)
    y = activation_layer(activation, name=f"{name}_act1")(y)
    y = _conv(y, filters, 3, 1, reg, f"{name}_conv2")
    y = keras.layers.BatchNormalization(**BN, name=f"{name}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, reg, f"{name}_downsample_conv")
        shortcut = keras.layers.BatchNormalization(**BN, name=f"{name}_downsample_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation_layer(activation, name=f"{name}_out")(y)


def ResNet18(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
             pooling=None, classes=3, classifier_activation="softmax", name="resnet18",
             l2=0.0, dropout=0.0, activation="relu", head="softmax"):
    """ResNet18, torchvision layout (MobileViT paper Table 4 comparison).

    Args: keras.applications order (``weights`` = None or a .keras/.weights.h5 path, never
    downloaded; ``pooling`` for include_top=False: None/"avg"/"max"); paper switches ``l2``
    (every conv/dense kernel), ``dropout`` (before the classifier), ``activation``
    ("relu" original, "leaky_relu", "swish"), ``head`` ("softmax" or "svm" = linear output,
    ``classifier_activation`` ignored).
    """
    _h.check_weights(weights)
    _h.check_head(head)
    check_activation(activation)
    reg = _h.l2_regularizer(l2)
    img_input, inputs = _h.resolve_input(input_tensor, input_shape)
    x = _conv(img_input, 64, 7, 2, reg, "conv1_conv")
    x = keras.layers.BatchNormalization(**BN, name="conv1_bn")(x)
    x = activation_layer(activation, name="conv1_act")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in (1, 2):
            stride = 2 if (block == 1 and stage > 1) else 1
            x = _basic_block(x, filters, stride, reg, activation, f"layer{stage}_block{block}")
    if include_top:
        x = _h.classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                               classifier_activation=classifier_activation)
    else:
        x = _h.pool_features(x, pooling)
    model = keras.Model(inputs, x, name=name)
    return _h.load_weights(model, weights)


__all__ = ["ResNet18"]
