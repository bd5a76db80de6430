"""ShuffleNetV2 (Ma et al. 2018) and the two attention variants of the ShuffleNetV2-SVM paper
(Liu et al. 2022, "Micro-expression recognition model based on TV-L1 optical flow method
and improved ShuffleNet", Table 1, Figs. 3-6, Eqs. 10-17).

Layout follows torchvision's ``shufflenet_v2_x*`` (stem conv 3x3/2 -> BN -> act -> max-pool
3x3/2; stages of 4/8/4 units; conv5 1x1; global average pooling; linear classifier), with
convolutions without bias. Stride-2 convolutions/pooling pad one pixel on every side
(``ZeroPadding2D`` + "valid", the PyTorch alignment; zero padding before the max-pool equals
PyTorch's -inf padding for the non-negative ReLU output). BatchNorm uses the PyTorch
semantics ``epsilon=1e-5, momentum=0.9`` (PyTorch momentum 0.1), overridable.

Layer names: ``stem_*``, ``stage{2,3,4}_unit{k}_{branch1,branch2}_*``, ``conv5_*``,
``vit_{before,after}_stage4_*``, ``cbam_after_stage4_*``, ``avg_pool``, ``head_dropout``,
``predictions``.
"""

from __future__ import annotations

import keras

from mer_keras.models import heads as _h
from mer_keras.models._blocks import BuildContext, conv_bn
from mer_keras.models.layers import (
    ChannelAttention, ChannelShuffle, ChannelSplit, GhostTransformerEncoder, SpatialAttention,
    check_activation)

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

#: Default dimensions of the improved lightweight ViT units (see ShuffleNetV2 docstring):
#: (transformer dim d, transformer layers L) for the unit before and the unit after stage 4.
VIT_DIMS = ((64, 2), (64, 2))
VIT_HEADS = 2
CBAM_RATIO = 16





def _unit(x, ctx, out_channels, stride, name):
    """ShuffleNetV2 unit (Fig. 6 / torchvision ``InvertedResidual``)."""
    bf = out_channels // 2
    if stride == 1:
        x1, x2 = ChannelSplit(2, name=f"{name}_split")(x)
    else:
        b1 = conv_bn(x, ctx, None, 3, stride, f"{name}_branch1_1", act=False, depthwise=True)
        x1 = conv_bn(b1, ctx, bf, 1, 1, f"{name}_branch1_2")
        x2 = x
    b2 = conv_bn(x2, ctx, bf, 1, 1, f"{name}_branch2_1")
    b2 = conv_bn(b2, ctx, None, 3, stride, f"{name}_branch2_2", act=False, depthwise=True)
    b2 = conv_bn(b2, ctx, bf, 1, 1, f"{name}_branch2_3")
    x = keras.layers.Concatenate(name=f"{name}_concat")([x1, b2])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def _vit_unit(x, ctx, dim, layers, heads, name):
    """Improved lightweight ViT unit (Eqs. 13-15, Figs. 4-5), ShuffleNet-style.

    Channel split -> [identity | MobileViT-style block on C/2 channels] -> concat ->
    channel shuffle. The block: depthwise 3x3 (+BN+act) -> 1x1 to ``dim`` -> ``layers`` x
    :class:`GhostTransformerEncoder` (Ghost projections, Q = K = V, FFN 2*dim, swish,
    2x2 patches, or 1x1 when the map is not divisible by 2 or is one 2x2 patch, where each
    token could attend only to itself) -> LayerNorm -> 1x1 back to
    C/2 (+BN+act) -> concat with the block input -> depthwise 3x3 (+BN+act) -> 1x1 to C/2
    (+BN+act).
    """
    c = x.shape[-1]
    half = c // 2
    h, w = x.shape[1], x.shape[2]
    patch = 2 if (h is not None and w is not None and h % 2 == 0 and w % 2 == 0 and h * w > 4) else 1
    x1, x2 = ChannelSplit(2, name=f"{name}_split")(x)
    y = conv_bn(x2, ctx, None, 3, 1, f"{name}_local", depthwise=True)
    y = keras.layers.Conv2D(dim, 1, use_bias=False, kernel_regularizer=ctx.reg,
                            name=f"{name}_proj_in")(y)
    for i in range(layers):
        y = GhostTransformerEncoder(dim, 2 * dim, num_heads=heads, patch_size=patch,
                                    activation="swish", kernel_regularizer=ctx.reg,
                                    name=f"{name}_transformer{i + 1}")(y)
    y = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(y)
    y = conv_bn(y, ctx, half, 1, 1, f"{name}_proj_out")
    y = keras.layers.Concatenate(name=f"{name}_fuse_concat")([x2, y])
    y = conv_bn(y, ctx, None, 3, 1, f"{name}_fuse_local", depthwise=True)
    y = conv_bn(y, ctx, half, 1, 1, f"{name}_fuse_proj")
    x = keras.layers.Concatenate(name=f"{name}_concat")([x1, y])
    return ChannelShuffle(2, name=f"{name}_shuffle")(x)


def _cbam(x, ctx, ratio, name):
    """CBAM (Eqs. 10-11, Fig. 3): channel attention then spatial attention (7x7)."""
    x = ChannelAttention(ratio, kernel_regularizer=ctx.reg, name=f"{name}_channel")(x)
    return SpatialAttention(7, kernel_regularizer=ctx.reg, name=f"{name}_spatial")(x)


def ShuffleNetV2(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
                 pooling=None, classes=3, classifier_activation="softmax",
                 name="shufflenet_v2", width_multiplier=1.0, attention=None, l2=0.0,
                 dropout=0.0, activation="relu", head="softmax", vit_dims=VIT_DIMS,
                 vit_heads=VIT_HEADS, cbam_ratio=CBAM_RATIO, bn_momentum=BN_MOMENTUM,
                 bn_epsilon=BN_EPSILON):
    """ShuffleNetV2 (Ma et al. 2018) as used by the ShuffleNetV2-SVM paper (Table 1).

    Args:
        include_top: append global average pooling + (dropout) + classifier.
        weights: None or path to a .keras / .weights.h5 file (nothing is ever downloaded).
        input_tensor, input_shape: keras.applications semantics (224x224x3 in the paper;
            any size with H, W >= 32 works; the ViT variant needs static H, W).
        pooling: when ``include_top=False``: None (4-D conv5 map), "avg" or "max".
        classes: number of outputs (3 = negative / positive / surprise).
        classifier_activation: output activation for ``head="softmax"``; ignored (forced to
            linear) for ``head="svm"``.
        width_multiplier: 0.5 / 1.0 / 1.5 / 2.0 (torchvision stage widths 48/96/192,
            116/232/464, 176/352/704, 244/488/976; conv5 1024, 2048 for 2.0).
        attention: None, "cbam" or "vit" (the paper's two variants, see below).
        l2: L2 factor on every conv / depthwise / dense kernel (paper: 0.2).
        dropout: dropout rate before the classifier (paper: 0.5).
        activation: "relu" (ShuffleNetV2), "leaky_relu" (paper; slope 0.3, Keras' default —
            not stated in the paper) or "swish". Applies to the ShuffleNetV2 and ViT-unit
            convolutions; the transformer FFN always uses swish.
        head: "softmax" or "svm" (Eq. 17: linear output for :class:`MultiMarginLoss`).
        vit_dims: ((d, L) before stage 4, (d, L) after stage 4) of the ViT units.
        vit_heads: attention heads of the ViT units.
        cbam_ratio: CBAM channel-MLP reduction ratio r (paper silent; CBAM default 16).
        bn_momentum, bn_epsilon: BatchNorm settings (default PyTorch semantics).

    Choices the paper leaves open:
        * CBAM placement: the paper only says (Results) that CBAM "is applied only once in
          the network structure" — one CBAM after stage 4 (before conv5), r = 16, 7x7
          spatial kernel with bias, Dense layers with bias.
        * Improved ViT (Fig. 5: inserted before and after the last stage): the paper gives
          the block structure (MobileViT block with MoCoViT attention) and the total
          "1.53 million training parameters", not the dimensions. A MobileViT block with
          standard n x n convolutions on the 232 / 464-channel maps alone would cost
          more than 2M parameters, so each insertion is a ShuffleNet-style unit that runs
          a MobileViT-style block on half of the channels (the other half is an identity
          branch, then concat + channel shuffle) and uses depthwise 3x3 convolutions (+1x1)
          for its two n x n convolutions. Defaults ``vit_dims=((64, 2), (64, 2))``: d = 64,
          2 transformer layers in both units (before stage 4 on the 14x14x232 map with 2x2
          patches; after stage 4 on the 7x7x464 map, where 7 is not divisible by 2 so the
          patch is 1x1 = global attention over the 49 pixels), 2 heads (head dim 32, the
          MobileViT default), FFN 2d with swish, Ghost ratio 2 with a 3x3 cheap depthwise
          conv and BN in the Ghost projections. 1.0x, 224x224, 3 classes: 1,535,955
          trainable parameters (paper: "1.53 million", +0.4%).
        * Pre-training transfer keeps the "down-sampling" layers (stem, stages 2-4, conv5):
          see :func:`mer_keras.models.heads.downsampling_layer_names`.
    """
    _h.check_weights(weights)
    _h.check_head(head)
    check_activation(activation)
    if width_multiplier not in STAGE_CHANNELS:
        raise ValueError(f"width_multiplier must be one of {sorted(STAGE_CHANNELS)}")
    if attention not in (None, "cbam", "vit"):
        raise ValueError(f"attention must be None, 'cbam' or 'vit', got {attention!r}")
    ctx = BuildContext(activation, l2, bn_momentum, bn_epsilon)
    stem_c, c2, c3, c4, c5 = STAGE_CHANNELS[width_multiplier]

    img_input, inputs = _h.resolve_input(input_tensor, input_shape)
    x = conv_bn(img_input, ctx, stem_c, 3, 2, "stem")
    x = keras.layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for stage, (repeats, out_c) in enumerate(zip(STAGE_REPEATS, (c2, c3, c4)), start=2):
        if stage == 4 and attention == "vit":
            d, n = vit_dims[0]
            x = _vit_unit(x, ctx, d, n, vit_heads, "vit_before_stage4")
        for unit in range(1, repeats + 1):
            x = _unit(x, ctx, out_c, 2 if unit == 1 else 1, f"stage{stage}_unit{unit}")
    if attention == "vit":
        d, n = vit_dims[1]
        x = _vit_unit(x, ctx, d, n, vit_heads, "vit_after_stage4")
    elif attention == "cbam":
        x = _cbam(x, ctx, cbam_ratio, "cbam_after_stage4")
    x = conv_bn(x, ctx, c5, 1, 1, "conv5")

    if include_top:
        x = _h.classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                               classifier_activation=classifier_activation)
    else:
        x = _h.pool_features(x, pooling)
    model = keras.Model(inputs, x, name=name)
    return _h.load_weights(model, weights)


def ShuffleNetV2CBAM(include_top=True, weights=None, input_tensor=None,
                     input_shape=(224, 224, 3), pooling=None, classes=3,
                     classifier_activation="softmax", name="shufflenet_v2_cbam", **kwargs):
    """ShuffleNetV2 + CBAM (ShuffleNetV2-SVM paper, Fig. 3, Eqs. 10-11); see
    :func:`ShuffleNetV2` (``attention="cbam"``) for the switches and placement choice."""
    return ShuffleNetV2(include_top, weights, input_tensor, input_shape, pooling, classes,
                        classifier_activation, name, attention="cbam", **kwargs)


def ShuffleNetV2ViT(include_top=True, weights=None, input_tensor=None,
                    input_shape=(224, 224, 3), pooling=None, classes=3,
                    classifier_activation="softmax", name="shufflenet_v2_vit", **kwargs):
    """ShuffleNetV2 + improved lightweight ViT (ShuffleNetV2-SVM paper, Figs. 4-5,
    Eqs. 12-15); see :func:`ShuffleNetV2` (``attention="vit"``) for the chosen dimensions."""
    return ShuffleNetV2(include_top, weights, input_tensor, input_shape, pooling, classes,
                        classifier_activation, name, attention="vit", **kwargs)


__all__ = ["ShuffleNetV2", "ShuffleNetV2CBAM", "ShuffleNetV2ViT"]
