"""DeiT Tiny / Small / Base (Touvron et al. 2021) — the pure-transformer comparison of
Table 2 (ShuffleNetV2-SVM paper) and Table 4 (MobileViT paper).

224x224 input, 16x16 patches (conv patch embedding with bias), class token, learned
position embedding (197 tokens), 12 pre-norm transformer layers (LayerNorm eps 1e-6, MHSA
with qkv bias, FFN 4d with exact GELU), final LayerNorm, class-token features, linear
classifier. No distillation token (the plain DeiT/ViT head). Stochastic depth is not
implemented (``dropout`` only before the classifier; ``attention_dropout`` and
``token_dropout`` optional).

Trainable parameters at 1000 classes: Tiny 5,717,416; Small 22,050,664; Base 86,567,656.

Layer names: ``patch_embed``, ``patch_flatten``, ``cls_token``, ``pos_embed``,
``block{1..12}``, ``norm``, ``features`` (class token), ``head_dropout``, ``predictions``.
"""

from __future__ import annotations

import inspect

import keras

from mer_keras.models import heads as _h
from mer_keras.models.layers import (
    AddPositionEmbedding, ClassToken, TakeToken, TransformerEncoder)

CONFIGS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
DEPTH = 12
PATCH = 16


def DeiT(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
         pooling=None, classes=3, classifier_activation="softmax", name=None, variant="tiny",
         l2=0.0, dropout=0.0, head="softmax", token_dropout=0.0, attention_dropout=0.0):
    """DeiT (Touvron et al. 2021), patch 16, without distillation token.

    Args: keras.applications order (``weights`` = None or a .keras/.weights.h5 path, never
    downloaded); ``pooling`` with ``include_top=False``: None (normalised token sequence
    (B, 1 + N, d)), "token" (class token) or "avg" (mean of the patch tokens); ``variant``
    "tiny"/"small"/"base"; ``l2`` on every dense / patch-embedding kernel; ``dropout``
    before the classifier; ``head`` "softmax" or "svm" (linear output,
    ``classifier_activation`` ignored). There is no ``activation`` switch (GELU is part
    of the transformer definition). Input H, W must be multiples of 16.
    """
    _h.check_weights(weights)
    _h.check_head(head)
    if variant not in CONFIGS:
        raise ValueError(f"variant must be one of {sorted(CONFIGS)}")
    dim, heads = CONFIGS[variant]
    reg = _h.l2_regularizer(l2)
    img_input, inputs = _h.resolve_input(input_tensor, input_shape)
    h, w = img_input.shape[1], img_input.shape[2]
    if h is None or w is None or h % PATCH or w % PATCH:
        raise ValueError(f"input {h}x{w} must be static and a multiple of {PATCH}")
    x = keras.layers.Conv2D(dim, PATCH, strides=PATCH, kernel_regularizer=reg,
                            name="patch_embed")(img_input)
    x = keras.layers.Reshape(((h // PATCH) * (w // PATCH), dim), name="patch_flatten")(x)
    x = ClassToken(name="cls_token")(x)
    x = AddPositionEmbedding(name="pos_embed")(x)
    if token_dropout:
        x = keras.layers.Dropout(token_dropout, name="pos_drop")(x)
    for i in range(DEPTH):
        x = TransformerEncoder(dim, heads, 4 * dim, activation="gelu", dropout=token_dropout,
                               attention_dropout=attention_dropout, layer_norm_epsilon=1e-6,
                               kernel_regularizer=reg, name=f"block{i + 1}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    if include_top or pooling == "token":
        x = TakeToken(0, name="features")(x)
    elif pooling == "avg":
        x = keras.layers.Cropping1D((1, 0), name="patch_tokens")(x)
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    elif pooling is not None:
        raise ValueError(f"pooling must be None, 'token' or 'avg', got {pooling!r}")
    if include_top:
        x = _h.classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                               classifier_activation=classifier_activation, pool=False)
    model = keras.Model(inputs, x, name=name or f"deit_{variant}")
    return _h.load_weights(model, weights)


def _variant(variant, count):
    def builder(include_top=True, weights=None, input_tensor=None, input_shape=(224, 224, 3),
                pooling=None, classes=3, classifier_activation="softmax",
                name=f"deit_{variant}", **kwargs):
        return DeiT(include_top, weights, input_tensor, input_shape, pooling, classes,
                    classifier_activation, name, variant=variant, **kwargs)

    # Advertise DeiT's own keyword arguments (not ``**kwargs``), so callers that pass only
    # what a builder accepts (the two-stage recipe's shared ``activation=``) can tell.
    signature = inspect.signature(DeiT)
    builder.__signature__ = signature.replace(
        parameters=[p.replace(default=f"deit_{variant}") if p.name == "name" else p
                    for p in signature.parameters.values() if p.name != "variant"])
    builder.__name__ = builder.__qualname__ = f"DeiT{variant.capitalize()}"
    builder.__doc__ = (f"DeiT-{variant.capitalize()}/16 ({count} trainable params at 1000 "
                       "classes). See :func:`DeiT` for the arguments.")
    return builder


DeiTTiny = _variant("tiny", "5,717,416")
DeiTSmall = _variant("small", "22,050,664")
DeiTBase = _variant("base", "86,567,656")

__all__ = ["DeiT", "DeiTTiny", "DeiTSmall", "DeiTBase"]
