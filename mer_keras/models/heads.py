"""Classifier heads, the SVM (multi-class margin) loss and weight-transfer helpers.

- :class:`MultiMarginLoss` — Eq. 17 of the ShuffleNetV2-SVM paper (PyTorch
  ``MultiMarginLoss`` semantics); train a ``head="svm"`` model (linear outputs) with it.
- :func:`classifier_head` — the head every builder appends when ``include_top=True``:
  global average pooling (layer ``"avg_pool"``) -> optional dropout (``"head_dropout"``)
  -> Dense ``"predictions"`` (softmax, or linear for ``head="svm"``).
- :func:`swap_head` — new model = existing backbone up to its pooled-features layer +
  a fresh classifier (shares the backbone layers and therefore its weights).
- :func:`downsampling_layer_names` / :func:`copy_layer_weights` — the "down-sampling"
  layers whose weights the papers carry over from pre-training (optical-flow pre-training
  in the ShuffleNetV2-SVM paper, macro-expression transfer in the MobileViT paper).

Also the small amount of plumbing shared by the builders (``weights`` validation, input
handling), kept here to avoid another module.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import keras
from keras import ops

from mer_keras.models.layers import PACKAGE

HEADS = ("softmax", "svm")
#: Names of the pooled-features layer, in order of preference ("features": DeiT's class
#: token and MobileNetV3's last-point layer; "avg_pool": the CNNs' global pooling).
FEATURE_LAYER_NAMES = ("features", "avg_pool", "max_pool")


# --------------------------------------------------------------------------- loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiMarginLoss(keras.losses.Loss):
    """Multi-class margin ("SVM hinge") loss, PyTorch ``nn.MultiMarginLoss`` semantics.

    For one sample with scores ``x`` (C classes, linear outputs) and label ``y``::

        loss(x, y) = (1 / C) * sum_{i != y} max(0, margin - x[y] + x[i]) ** p

    (Eq. 17 of the ShuffleNetV2-SVM paper, where N is the number of classes), then averaged
    over the batch (``reduction="sum_over_batch_size"``, PyTorch ``reduction="mean"``).
    Keras' ``categorical_hinge`` is the Crammer-Singer form ``max(0, 1 + max_{i!=y} x_i - x_y)``
    (no sum, no 1/C) and gives different values.

    Labels: integer class ids of shape (B,) or (B, 1), *or* one-hot / probability rows of
    shape (B, C). The two are told apart by shape: ``y_true`` whose last axis equals C
    (and C > 1) and whose rank equals ``y_pred``'s rank is treated as one-hot and
    converted with ``argmax``; anything else is treated as integer labels. (A (B, 1) array
    with C == 1 is ambiguous and read as integer labels.)
    """

    def __init__(self, margin: float = 1.0, p: int = 1, reduction="sum_over_batch_size",
                 name: str = "multi_margin_loss", **kwargs):
        if p not in (1, 2):
            raise ValueError("p must be 1 or 2 (as in PyTorch)")
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = float(margin)
        self.p = int(p)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        classes = y_pred.shape[-1]
        y_true = ops.convert_to_tensor(y_true)
        if (len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == classes
                and classes != 1):
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = ops.reshape(y_true, (-1,))
        onehot = ops.one_hot(ops.cast(labels, "int32"), classes, dtype=y_pred.dtype)
        x_y = ops.sum(y_pred * onehot, axis=-1, keepdims=True)
        terms = ops.maximum(self.margin - x_y + y_pred, 0.0)
        if self.p == 2:
            terms = terms * terms
        terms = terms * (1.0 - onehot)
        return ops.sum(terms, axis=-1) / classes

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "p": self.p}


# --------------------------------------------------------------------------- builder plumbing


def check_weights(weights) -> None:
    """``weights`` must be None or the path of an existing .keras / .weights.h5 / .h5 file."""
    if weights is None:
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None or a file path, got {type(weights).__name__}")
    path = os.fspath(weights)
    if not path.endswith((".keras", ".weights.h5", ".h5")) or not os.path.exists(path):
        raise ValueError(
            f"weights={path!r}: expected None or the path of an existing .keras or "
            ".weights.h5 file. mer_keras never downloads weights (no 'imagenet' etc.); "
            "pre-train with the project's recipes and pass the saved file.")


def load_weights(model: keras.Model, weights) -> keras.Model:
    if weights is not None:
        model.load_weights(os.fspath(weights))
    return model


def resolve_input(input_tensor, input_shape):
    """keras.applications-style input handling -> (img_input, model_inputs)."""
    if input_tensor is None:
        img_input = keras.Input(shape=tuple(input_shape), name="input")
        return img_input, img_input
    if not keras.backend.is_keras_tensor(input_tensor):
        img_input = keras.Input(tensor=input_tensor, shape=tuple(input_shape), name="input")
        return img_input, img_input
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return head


def l2_regularizer(l2: float):
    return keras.regularizers.L2(l2) if l2 else None


def classifier_head(x, classes: int, head: str = "softmax", dropout: float = 0.0,
                    l2: float = 0.0, classifier_activation="softmax", pool: bool = True):
    """GAP ("avg_pool", if ``pool``) -> Dropout ("head_dropout", if > 0) -> Dense ("predictions").

    ``head="svm"`` forces a linear output (``classifier_activation`` is ignored) for training
    with :class:`MultiMarginLoss`.
    """
    check_head(head)
    if pool:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    activation = None if head == "svm" else classifier_activation
    return keras.layers.Dense(classes, activation=activation,
                              kernel_regularizer=l2_regularizer(l2), name="predictions")(x)


def pool_features(x, pooling):
    """``include_top=False`` pooling switch: None (4-D map), "avg" or "max"."""
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if pooling is None:
        return x
    raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")


# --------------------------------------------------------------------------- swap / transfer


def features_layer(model: keras.Model) -> keras.layers.Layer | None:
    for name in FEATURE_LAYER_NAMES:
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    return None


def swap_head(model: keras.Model, classes: int, head: str = "softmax", dropout: float = 0.0,
              l2: float = 0.0, classifier_activation="softmax", name: str | None = None
              ) -> keras.Model:
    """Return a new model: ``model``'s backbone + a freshly initialised classifier.

    The backbone is taken up to the pooled-features layer (``"features"``, ``"avg_pool"``
    or ``"max_pool"``, first found); for a headless model without pooling, its 4-D output is globally
    average-pooled (new layer ``"avg_pool"``). The backbone layers are *shared* with
    ``model`` (same weights; clone the model first for an independent copy). The new head
    is Dropout (``"head_dropout"``, if ``dropout``) -> Dense ``"predictions"`` with
    ``l2`` on its kernel; ``head="svm"`` makes it linear.
    """
    check_head(head)
    feat = features_layer(model)
    if feat is not None:
        x = feat.output
        pool = False
    else:
        x = model.outputs[0]
        if len(x.shape) == 2:
            pool = False
        elif len(x.shape) == 4:
            pool = True
        else:
            raise ValueError(f"cannot find pooled features in {model.name!r}")
    out = classifier_head(x, classes, head=head, dropout=dropout, l2=l2,
                          classifier_activation=classifier_activation, pool=pool)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, out, name=name or f"{model.name}_{head}{classes}")


_SHUFFLENET_DOWN = re.compile(r"^(stem_|stage[234]_|conv5_)")
_MOBILEVIT_DOWN = re.compile(r"^(stem_|layer\d_mv2_)")


def downsampling_layer_names(model: keras.Model) -> list[str]:
    """Names of the backbone's "down-sampling" layers that carry weights.

    - ShuffleNetV2 (incl. CBAM / ViT variants): the stem conv and every unit of stages 2-4
      plus conv5 — i.e. the plain ShuffleNetV2 convolutions (the paper's Fig. 5: "the
      convolutional layer of ShuffleNetV2 is responsible for downsampling"); the inserted
      CBAM / ViT layers and the classifier are excluded.
    - MobileViT: the stem and all MobileNetV2 (MV2) blocks (the MobileViT paper transfers
      "the MobileNetV2 block" from macro-expression training); MobileViT blocks, the final
      1x1 conv and the classifier are excluded.
    - Other models: every weighted layer before the pooled features except the head.
    """
    layers = [l for l in model.layers if l.weights]
    names = [l.name for l in layers]
    if any(n.startswith("stage2_") for n in names):
        pat = _SHUFFLENET_DOWN
    elif any(n.startswith("layer1_mv2") for n in names):
        pat = _MOBILEVIT_DOWN
    else:
        return [n for n in names if n != "predictions" and not n.startswith("head_")]
    return [n for n in names if pat.match(n)]


def copy_layer_weights(src: keras.Model, dst: keras.Model, names: Iterable[str] | None = None
                       ) -> list[str]:
    """Copy the weights of layers ``names`` (default: ``downsampling_layer_names(dst)``)
    from ``src`` to ``dst``; returns the copied names. Raises ValueError when a layer is
    missing in either model or its weight shapes differ.
    """
    names = list(downsampling_layer_names(dst) if names is None else names)
    copied = []
    for n in names:
        try:
            s, d = src.get_layer(n), dst.get_layer(n)
        except ValueError as err:
            raise ValueError(f"layer {n!r} missing: {err}") from None
        sw, dw = s.get_weights(), d.get_weights()
        shapes_s = [w.shape for w in sw]
        shapes_d = [w.shape for w in dw]
        if shapes_s != shapes_d:
            raise ValueError(f"layer {n!r}: weight shapes differ {shapes_s} vs {shapes_d}")
        d.set_weights(sw)
        copied.append(n)
    return copied


__all__ = [
    "MultiMarginLoss", "classifier_head", "swap_head", "downsampling_layer_names",
    "copy_layer_weights", "features_layer", "check_weights", "resolve_input", "HEADS",
]
