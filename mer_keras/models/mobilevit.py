"""MobileViT S / XS / XXS (Mehta & Rastegari 2021), as used by the MobileViT
macro-expression-transfer paper (Liu et al. 2022, Front. Neurorobot., Table 1, Figs. 3-5,
section "Optimized MobileViT Model").

Follows the reference PyTorch implementation: convolutions without bias + BatchNorm +
swish; MV2 = MobileNetV2 inverted residual (1x1 expand -> depthwise 3x3 -> 1x1 linear
project, residual when stride 1 and in == out); MobileViT block = 3x3 conv -> 1x1 conv to d
(no BN/act) -> unfold into 2x2 patches -> L pre-norm transformer layers (LayerNorm, MHSA with
one qkv projection with bias, FFN 2d with swish) -> LayerNorm -> fold -> 1x1 conv to C ->
concat with the block input -> 3x3 conv; final 1x1 conv (4x the last width), global average
pooling, dropout, linear classifier. BatchNorm: ``epsilon=1e-5, momentum=0.9`` (PyTorch
semantics); LayerNorm epsilon 1e-5; 4 attention heads.

Layer names: ``stem_*``, ``layer{1..5}_mv2_{k}_*`` (MobileNetV2 blocks),
``layer{3,4,5}_mvit_*`` (MobileViT blocks), ``conv_1x1_exp_*``, ``avg_pool``,
``head_dropout``, ``predictions``.
"""

from __future__ import annotations

import keras

from mer_keras.models import heads as _h
from mer_keras.models._blocks import BuildContext, conv_bn
from mer_keras.models.layers import (
    Fold, TransformerEncoder, Unfold, check_activation)

NUM_HEADS = 4
PATCH = 2

# per variant: stem, layer1, layer2 widths; (width, d, L) for layers 3-5; expansion;
# final-conv factor 4 ("last_layer_exp_factor")
CONFIGS = {
    "s": dict(stem=16, l1=32, l2=64, vit=((96, 144, 2), (128, 192, 4), (160, 240, 3)),
              expansion=4),
    "xs": dict(stem=16, l1=32, l2=48, vit=((64, 96, 2), (80, 120, 4), (96, 144, 3)),
               expansion=4),
    "xxs": dict(stem=16, l1=16, l2=24, vit=((48, 64, 2), (64, 80, 4), (80, 96, 3)),
                expansion=2),
}





def _mv2(x, ctx, out_c, stride, expansion, name):
    """MobileNetV2 inverted residual block (MV2 in Fig. 3)."""
    in_c = x.shape[-1]
    hidden = int(round(in_c * expansion))
    y = x
    if expansion != 1:
        y = conv_bn(y, ctx, hidden, 1, 1, f"{name}_expand")
    y = conv_bn(y, ctx, None, 3, stride, f"{name}_depthwise", depthwise=True)
    y = conv_bn(y, ctx, out_c, 1, 1, f"{name}_project", act=False)
    if stride == 1 and in_c == out_c:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def _mobilevit_block(x, ctx, dim, layers, name):
    """MobileViT block (Fig. 4, Eq. 15): local conv -> unfold -> transformer -> fold -> fuse."""
    c = x.shape[-1]
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None or h % PATCH or w % PATCH:
        raise ValueError(f"{name}: feature map {h}x{w} must be static and divisible by "
                         f"the patch size {PATCH} (choose an input size divisible by 64)")
    y = conv_bn(x, ctx, c, 3, 1, f"{name}_local")
    y = keras.layers.Conv2D(dim, 1, use_bias=False, kernel_regularizer=ctx.reg,
                            name=f"{name}_proj_in")(y)
    y = Unfold(PATCH, name=f"{name}_unfold")(y)
    for i in range(layers):
        y = TransformerEncoder(dim, NUM_HEADS, 2 * dim, activation="swish",
                               kernel_regularizer=ctx.reg,
                               name=f"{name}_transformer{i + 1}")(y)
    y = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_norm")(y)
    y = Fold(h, w, PATCH, name=f"{name}_fold")(y)
    y = conv_bn(y, ctx, c, 1, 1, f"{name}_proj_out")
    y = keras.layers.Concatenate(name=f"{name}_concat")([x, y])
    return conv_bn(y, ctx, c, 3, 1, f"{name}_fusion")


def MobileViT(include_top=True, weights=None, input_tensor=None, input_shape=(256, 256, 3),
              pooling=None, classes=3, classifier_activation="softmax", name=None,
              variant="s", l2=0.0, dropout=0.1, activation="swish", head="softmax"):
    """MobileViT (Mehta & Rastegari 2021; MobileViT paper Table 1, Figs. 3-4).

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: keras.applications semantics; ``weights`` is None or
            a .keras / .weights.h5 path (no downloads). Input 256x256 as in the original;
            height and width must be multiples of 64 (five halvings, then 2x2 patches).
        variant: "s" (the paper's choice, "the largest scale model"), "xs" or "xxs".
        l2: L2 factor on every conv / dense kernel incl. the transformer's (paper: 0.01 by
            grid search, 0.2 in its setup text — choose in the recipe).
        dropout: rate before the classifier (reference: 0.1; paper: 0.5).
        activation: "swish" (MobileViT) / "relu" / "leaky_relu" for the convolutional
            layers; the transformer FFN always uses swish.
        head: "softmax" or "svm" (linear output for :class:`MultiMarginLoss`; the paper
            ends in an SVM classifier; ``classifier_activation`` is then ignored).

    Trainable parameters at 1000 classes: S 5,578,632, XS 2,317,848, XXS 1,272,024 (the
    reference implementation). The paper transfers "the MobileNetV2 blocks" from
    macro-expression training: :func:`mer_keras.models.heads.downsampling_layer_names`
    returns the stem and all ``layer*_mv2_*`` layers. 4 attention heads (reference
    default; the paper is silent, parameter-free).
    """
    _h.check_weights(weights)
    _h.check_head(head)
    check_activation(activation)
    if variant not in CONFIGS:
        raise ValueError(f"variant must be one of {sorted(CONFIGS)}")
    cfg = CONFIGS[variant]
    ctx = BuildContext(activation, l2)  # PyTorch BatchNorm settings
    e = cfg["expansion"]

    img_input, inputs = _h.resolve_input(input_tensor, input_shape)
    x = conv_bn(img_input, ctx, cfg["stem"], 3, 2, "stem")
    x = _mv2(x, ctx, cfg["l1"], 1, e, "layer1_mv2_1")
    for i, s in enumerate((2, 1, 1), start=1):
        x = _mv2(x, ctx, cfg["l2"], s, e, f"layer2_mv2_{i}")
    for layer, (width, dim, depth) in enumerate(cfg["vit"], start=3):
        x = _mv2(x, ctx, width, 2, e, f"layer{layer}_mv2_1")
        x = _mobilevit_block(x, ctx, dim, depth, f"layer{layer}_mvit")
    x = conv_bn(x, ctx, 4 * cfg["vit"][-1][0], 1, 1, "conv_1x1_exp")

    if include_top:
        x = _h.classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                               classifier_activation=classifier_activation)
    else:
        x = _h.pool_features(x, pooling)
    model = keras.Model(inputs, x, name=name or f"mobilevit_{variant}")
    return _h.load_weights(model, weights)


def _variant(variant, doc):
    def builder(include_top=True, weights=None, input_tensor=None, input_shape=(256, 256, 3),
                pooling=None, classes=3, classifier_activation="softmax",
                name=f"mobilevit_{variant}", **kwargs):
        return MobileViT(include_top, weights, input_tensor, input_shape, pooling, classes,
                         classifier_activation, name, variant=variant, **kwargs)

    builder.__name__ = builder.__qualname__ = f"MobileViT{variant.upper()}"
    builder.__doc__ = doc + "\n\n    See :func:`MobileViT` for the arguments and choices."
    return builder


MobileViTS = _variant("s", "MobileViT-S (5,578,632 trainable params at 1000 classes); the "
                           "MobileViT paper's model.")
MobileViTXS = _variant("xs", "MobileViT-XS (2,317,848 trainable params at 1000 classes).")
MobileViTXXS = _variant("xxs", "MobileViT-XXS (1,272,024 trainable params at 1000 classes).")

__all__ = ["MobileViT", "MobileViTS", "MobileViTXS", "MobileViTXXS"]
