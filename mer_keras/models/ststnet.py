"""STSTNet (Liong et al. 2019, FG/MEGC2019): shallow triple-stream
three-dimensional CNN on (u, v, optical strain).

Two variants:

* ``variant="original"`` — the original authors' released PyTorch code (whose per-fold
  weights give UF1 0.7209 / UAR 0.7250 on the MEGC2019 composite): 1,683 parameters;
* ``variant="off_tanet"`` — the re-implementation in the Off-TANet code (Zhang, Liu, Zhou
  2021, Table 2: 162,051 parameters).

Keras layer names are the PyTorch module names (``conv1``, ``bn1``, ..., ``fc`` -> the
final layer ``predictions``; ``stream1.conv`` -> ``stream1_conv``, ``dense.0`` ->
``dense_0`` in the re-implementation).
"""

from __future__ import annotations

import keras

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
            the pooled 10x10 map). The training recipe ``"ststnet"`` sets it for speed.
    """
    if variant not in ("original", "off_tanet"):
        raise ValueError(f"variant must be 'original' or 'off_tanet', got {variant!r}")
    if fuse_bn_pool and variant != "original":
        raise ValueError("fuse_bn_pool applies to variant='original' (the re-implementation has no BatchNorm)")
    if hidden_units is None:
        hidden_units = 400 if variant == "off_tanet" else 0
    img_input, inputs = model_input(input_tensor, input_shape)
    streams = []
    for i, filters in enumerate(_STREAM_FILTERS, start=1):
        if variant == "original":
            y = torch_conv2d(img_input, filters, 3, padding=2, l2=l2, name=f"conv{i}")
            y = act(y, activation, name=f"relu{i}")
            if fuse_bn_pool:
                y = BatchNormMaxPool2D(3, 3, 1, name=f"bn{i}")(y)
            else:
                y = torch_batch_norm(y, name=f"bn{i}")
                y = TorchMaxPooling2D(3, 3, 1, name=f"maxpool{i}")(y)
            if dropout:
                y = keras.layers.Dropout(dropout, name=f"dropout{i}")(y)
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


__all__ = ["STSTNet", "TORCH_NAMES", "TORCH_NAMES_OFF_TANET"]
