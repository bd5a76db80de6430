"""STSTNet (Liong et al. 2019, FG/MEGC2019): shallow triple-stream
three-dimensional CNN on (u, v, optical strain).

Two variants:

* ``variant="original"`` — the original authors' released PyTorch code (whose per-fold
  weights give UF1 0.7209 / UAR 0.7250 on the MEGC2019 composite): 1,683 parameters;
* ``variant="off_tanet"`` — the re-implementation in the Off-TANet code (Zhang, Liu, Zhou
  2021, Table 2: 162,051 parameters).

Keras layer names are the PyTorch module names (``conv1``, ``bn1``, ..., ``fc`` -> the
final layer ``predictions``; ``stream1.conv`` -> ``stream1_conv``, ``dense.0`` ->
``dense_0`` in the re-implementation). With ``fuse_streams=True`` the three streams of the
original network are one 16-filter stream (``conv``, ``bn``, ...); :func:`copy_stream_weights`
moves weights between the two layouts.
"""

from __future__ import annotations

import keras
import numpy as np

from mer_keras.models.flow_layers import (
    BatchNormMaxPool2D,
    TorchMaxPooling2D,
    act,
    classification_top,
    finish_model,
    model_input,
    torch_batch_norm,
    torch_conv2d,
)

#: Original code: Keras layer name -> PyTorch module name.
TORCH_NAMES: dict[str, str] = {
    "conv1": "conv1",
    "conv2": "conv2",
    "conv3": "conv3",
    "bn1": "bn1",
    "bn2": "bn2",
    "bn3": "bn3",
    "predictions": "fc",
}

#: Off-TANet code's re-implementation.
TORCH_NAMES_OFF_TANET: dict[str, str] = {
    "stream1_conv": "stream1.conv",
    "stream2_conv": "stream2.conv",
    "stream3_conv": "stream3.conv",
    "dense_0": "dense.0",
    "predictions": "dense.2",
}

_STREAM_FILTERS = (3, 5, 8)


def STSTNet(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(28, 28, 3),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="ststnet",
    *,
    variant="original",
    hidden_units=None,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
    fuse_bn_pool=False,
    fuse_streams=False,
):
    """STSTNet (Liong et al. 2019), as computed by the original or the Off-TANet code.

    Input ``28 x 28 x 3`` (u, v, optical strain; the original code reads 0..255 images with
    ``cv2.imread``, so the channel order is whatever those files hold).

    ``variant="original"`` (the original released code): three parallel streams,
    conv3x3 with 3 / 5 / 8 filters and padding 2 (-> 30x30), each -> ReLU -> BN (ReLU
    *before* BN) -> maxpool 3/3 with padding 1 (PyTorch semantics: ``-inf`` padding,
    floor -> 10x10; :class:`~mer_keras.models.flow_layers.TorchMaxPooling2D`) -> dropout;
    concat 16 channels -> avgpool 2 -> 5x5x16 -> NCHW flatten 400 -> Dense ``classes``.
    1,683 trainable parameters for 3 classes.

    ``variant="off_tanet"`` (re-implementation in the Off-TANet code, its Table 2): each
    stream is only conv3x3 (padding 1, no activation, no BN) -> maxpool 3/3 padding 1
    (-> 10x10); concat -> *max*pool 2 -> 400 -> Dense 400 -> ReLU -> Dense ``classes``; no
    dropout. 162,051 parameters.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in ``keras.applications`` (``weights``: None or a
            local ``.keras`` / ``.weights.h5``; PyTorch checkpoints: :mod:`mer_keras.models.port`).
        variant: ``"original"`` or ``"off_tanet"`` (above).
        hidden_units: hidden dense width before the classifier. ``None`` = the variant's
            own (none for ``original``, 400 for ``off_tanet``); 0 = none. With
            ``variant="original"`` and ``hidden_units=400`` the original streams (with BN)
            feed a 400-unit hidden layer: 162,083 parameters, 32 more than Table 2 because
            the Off-TANet re-implementation has no BN.
        l2: L2 factor on convolution and dense kernels.
        dropout: the original code's per-stream dropout rate (0.5); ignored by
            ``off_tanet`` (the re-implementation has none).
        activation: replaces the ReLUs (after the convolutions of ``original`` and in the
            hidden dense layer).
        head: ``"softmax"`` or ``"svm"`` (final linear Dense for a multi-class margin loss).
        fuse_bn_pool: ``variant="original"`` only: each stream's ``bn<i>`` + ``maxpool<i>``
            become one :class:`~mer_keras.models.flow_layers.BatchNormMaxPool2D` named
            ``bn<i>`` (the same function, gradients and weights; the normalisation runs on
            the pooled 10x10 map).
        fuse_streams: ``variant="original"`` only: the three streams read the same input
            with the same kernel size and padding and are concatenated, and everything in
            a stream (ReLU, BN, max-pool, dropout) acts per channel, so they are one
            convolution with 3 + 5 + 8 = 16 filters followed by one ReLU, BN, max-pool and
            dropout (layers ``conv``, ``relu``, ``bn``, ``maxpool``, ``dropout``; channels in
            stream order). The same function, parameters and gradients (dropout draws one
            independent mask per element either way); :func:`copy_stream_weights` maps
            ``conv1..3`` / ``bn1..3`` onto it and back. The training recipe ``"ststnet"``
            sets it and ``fuse_bn_pool`` for speed (``mer-keras bench train``).
    """
    if variant not in ("original", "off_tanet"):
        raise ValueError(f"variant must be 'original' or 'off_tanet', got {variant!r}")
    if fuse_bn_pool and variant != "original":
        raise ValueError("fuse_bn_pool applies to variant='original' (the re-implementation has no BatchNorm)")
    if fuse_streams and variant != "original":
        raise ValueError("fuse_streams applies to variant='original' (the re-implementation's streams are not fused)")
    if hidden_units is None:
        hidden_units = 400 if variant == "off_tanet" else 0
    img_input, inputs = model_input(input_tensor, input_shape)
    if variant == "original" and fuse_streams:
        x = _original_stream(img_input, sum(_STREAM_FILTERS), "", l2, activation, fuse_bn_pool, dropout)
    else:
        streams = []
        for i, filters in enumerate(_STREAM_FILTERS, start=1):
            if variant == "original":
                y = _original_stream(img_input, filters, str(i), l2, activation, fuse_bn_pool, dropout)
            else:
                y = torch_conv2d(img_input, filters, 3, padding=1, l2=l2, name=f"stream{i}_conv")
                y = TorchMaxPooling2D(3, 3, 1, name=f"stream{i}_pool")(y)
            streams.append(y)
        x = keras.layers.Concatenate(axis=-1, name="concat")(streams)
    if variant == "original":
        x = keras.layers.AveragePooling2D(2, name="avgpool")(x)
    else:
        x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = classification_top(
        x,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        head=head,
        hidden_units=(hidden_units,) if hidden_units else (),
        dropout=0.0,
        activation=activation,
        l2=l2,
        torch_dropout=False,
    )
    return finish_model(inputs, x, name, weights)


def _original_stream(x, filters, suffix, l2, activation, fuse_bn_pool, dropout):
    """conv3x3 (padding 2) -> ReLU -> BN -> maxpool 3/3 (padding 1) -> dropout of the original code."""
    y = torch_conv2d(x, filters, 3, padding=2, l2=l2, name=f"conv{suffix}")
    y = act(y, activation, name=f"relu{suffix}")
    if fuse_bn_pool:
        y = BatchNormMaxPool2D(3, 3, 1, name=f"bn{suffix}")(y)
    else:
        y = torch_batch_norm(y, name=f"bn{suffix}")
        y = TorchMaxPooling2D(3, 3, 1, name=f"maxpool{suffix}")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"dropout{suffix}")(y)
    return y


def _is_fused(model) -> bool:
    names = {layer.name for layer in model.layers}
    if "conv" in names:
        return True
    if "conv1" in names:
        return False
    raise ValueError(f"{model.name!r} is not an original-variant STSTNet (no layer 'conv' or 'conv1')")


def copy_stream_weights(source, target) -> None:
    """Copy the weights of one original-variant STSTNet into another, across stream layouts.

    Either model may be built with or without ``fuse_streams`` (and ``fuse_bn_pool``): the
    fused ``conv`` / ``bn`` hold ``conv1..3`` / ``bn1..3`` concatenated along the output
    channels in stream order; the classifier is copied by name.
    """
    fused_source, fused_target = _is_fused(source), _is_fused(target)
    for prefix in ("conv", "bn"):
        if fused_source:
            parts = source.get_layer(prefix).get_weights()
        else:
            per_stream = [source.get_layer(f"{prefix}{i}").get_weights() for i in range(1, 4)]
            parts = [np.concatenate(arrays, axis=-1) for arrays in zip(*per_stream)]
        if fused_target:
            target.get_layer(prefix).set_weights(parts)
        else:
            bounds = np.cumsum((0, *_STREAM_FILTERS))
            for i in range(3):
                target.get_layer(f"{prefix}{i + 1}").set_weights([w[..., bounds[i]:bounds[i + 1]] for w in parts])
    for layer in source.layers:
        if layer.weights and not layer.name.startswith(("conv", "bn")):
            target.get_layer(layer.name).set_weights(layer.get_weights())


__all__ = ["STSTNet", "TORCH_NAMES", "TORCH_NAMES_OFF_TANET", "copy_stream_weights"]
