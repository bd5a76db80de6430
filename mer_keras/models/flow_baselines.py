"""Table-2 baselines of the Off-TANet paper (Zhang, Liu, Zhou 2021), as re-implemented in
the Off-TANet authors' code.

The paper re-implements each baseline on its 3-class composite and states that "the
architectures of MACNN and Micro-Attention are slightly adjusted to speed up the training
process, avoid over-fitting and save GPU memory". These builders reproduce the
*re-implementations* (the models behind Table 2), not the original papers' networks;
their trainable-parameter counts equal Table 2 (torchstat counts, rounded there):

=================  ===========  ==================  ==========
builder            input        trainable (here)    Table 2
=================  ===========  ==================  ==========
OffApexNet         28x28x2      2,664,475           2.66M
DualInception      28x28x2      6,449,867           6.45M
MACNN              112x112x3    70,573,923          70.57M
MicroAttention     224x224x3    53,384,195          53.38M
=================  ===========  ==================  ==========

Keras layer names are the PyTorch module paths with ``.`` -> ``_``; :data:`TORCH_NAMES`
holds the tables (usable with :func:`mer_keras.models.port.load_torch_state_dict`).
Every flatten follows PyTorch's NCHW order; a two-stream network concatenates its
streams along channels before that flatten, which equals the code's
``cat([x.view(-1, n), y.view(-1, n)])``.
"""

from __future__ import annotations

import keras

from mer_keras.models.flow_layers import (
    ChannelSlice,
    SpatialSoftmax,
    TorchMaxPooling2D,
    act,
    classification_top,
    finish_model,
    model_input,
    torch_batch_norm,
    torch_conv2d,
)

__all__ = ["DualInception", "MACNN", "MicroAttention", "OffApexNet", "TORCH_NAMES"]


def _table(*pairs):
    return {k.replace(".", "_"): k for k in pairs}


#: Keras layer name -> PyTorch module path, per baseline.
TORCH_NAMES: dict[str, dict[str, str]] = {
    "off_apexnet": {
        **_table(*(f"cnn{s}.conv{i}" for s in (1, 2) for i in (1, 2)), "dense.0", "dense.3"),
        "predictions": "dense.6",
    },
    "dual_inception": {
        **_table(
            *(
                f"icpt{s}.{b}.{p}"
                for s in (1, 2)
                for b in (0, 1)
                for p in ("path1.0", "path1.2", "path2.0", "path2.2", "path3.1", "path4")
            ),
            "dense.0",
        ),
        "predictions": "dense.2",
    },
    "macnn": {
        **_table(
            *(f"res_vgg.{b}.{p}" for b in range(4) for p in ("conv.0", "conv.2", "botneck")),
            "aconv.0",
            "aconv.2",
            "dense.0",
            "dense.3",
        ),
        "predictions": "dense.6",
    },
    "micro_attention": {
        **_table(
            "conv.0",
            *(
                f"ma.{b}.{p}"
                for b in (0, 2, 4)
                for p in ("convl_1.0", "convl_1.1", "convl_2.0", "convl_2.1", "convm", "convr")
            ),
            "dense.0",
        ),
        "predictions": "dense.3",
    },
}


def _top(x, *, include_top, pooling, classes, classifier_activation, head, hidden, dropout, activation, l2,
         torch_dropout=True):
    return classification_top(
        x,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        head=head,
        hidden_units=hidden,
        dropout=dropout,
        activation=activation,
        l2=l2,
        torch_dropout=torch_dropout,
    )


# ---------------------------------------------------------------------------------------
# Off-ApexNet
# ---------------------------------------------------------------------------------------


def OffApexNet(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(28, 28, 2),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="off_apexnet",
    *,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
):
    """Off-ApexNet (Gan et al. 2019) as re-implemented in the Off-TANet code.

    Input ``28 x 28 x 2`` (u, v). Two streams (``cnn1`` on u, ``cnn2`` on v), each
    conv5x5 1->6 (padding 2) -> maxpool 2 -> conv5x5 6->16 (padding 2) -> maxpool 2 ->
    7x7x16. The re-implementation has *no* activation in the streams (kept as is). Concat
    -> NCHW flatten 1568 -> FC 1024 -> ReLU -> dropout -> FC 1024 -> ReLU -> dropout ->
    ``classes``. 2,664,475 trainable parameters (Table 2: 2.66M).

    Args: as :func:`~mer_keras.models.off_tanet.OffTANet` (``dropout``: head dropout rate,
    official 0.5; ``activation``: the head's ReLUs).
    """
    img_input, inputs = model_input(input_tensor, input_shape)
    streams = []
    for s in (1, 2):
        y = ChannelSlice(s - 1, s, name=f"cnn{s}_input")(img_input)
        y = torch_conv2d(y, 6, 5, padding=2, l2=l2, name=f"cnn{s}_conv1")
        y = keras.layers.MaxPooling2D(2, name=f"cnn{s}_pool1")(y)
        y = torch_conv2d(y, 16, 5, padding=2, l2=l2, name=f"cnn{s}_conv2")
        y = keras.layers.MaxPooling2D(2, name=f"cnn{s}_pool2")(y)
        streams.append(y)
    x = keras.layers.Concatenate(axis=-1, name="concat")(streams)
    x = _top(x, include_top=include_top, pooling=pooling, classes=classes,
             classifier_activation=classifier_activation, head=head, hidden=(1024, 1024),
             dropout=dropout, activation=activation, l2=l2)
    return finish_model(inputs, x, name, weights)


# ---------------------------------------------------------------------------------------
# Dual-Inception
# ---------------------------------------------------------------------------------------


def _inception_block(x, filters, name, activation, l2):
    """``InceptionBlock(in_c, out_c)``: [1x1 -> act -> 5x5 -> act | 1x1 -> act -> 3x3 -> act |
    maxpool3/1 -> 1x1 -> act | 1x1 (no activation)], concat, maxpool 2."""
    p1 = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_path1_0")
    p1 = act(p1, activation, name=f"{name}_path1_1")
    p1 = torch_conv2d(p1, filters, 5, padding=2, l2=l2, name=f"{name}_path1_2")
    p1 = act(p1, activation, name=f"{name}_path1_3")
    p2 = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_path2_0")
    p2 = act(p2, activation, name=f"{name}_path2_1")
    p2 = torch_conv2d(p2, filters, 3, padding=1, l2=l2, name=f"{name}_path2_2")
    p2 = act(p2, activation, name=f"{name}_path2_3")
    p3 = TorchMaxPooling2D(3, 1, 1, name=f"{name}_path3_0")(x)
    p3 = torch_conv2d(p3, filters, 1, l2=l2, name=f"{name}_path3_1")
    p3 = act(p3, activation, name=f"{name}_path3_2")
    p4 = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_path4")
    y = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([p1, p2, p3, p4])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def DualInception(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(28, 28, 2),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="dual_inception",
    *,
    l2=0.0,
    dropout=0.0,
    activation="relu",
    head="softmax",
):
    """Dual-Inception (Zhou et al. 2019) as re-implemented in the Off-TANet code.

    Input ``28 x 28 x 2`` (u, v). One Inception stack per flow component (``icpt1`` on u,
    ``icpt2`` on v): InceptionBlock 1->4x6 (28 -> 14) then 24->4x16 (14 -> 7), each with
    paths 1x1->5x5, 1x1->3x3, maxpool3->1x1, 1x1; concat -> NCHW flatten 6272 -> FC 1024
    -> ReLU -> ``classes``. 6,449,867 trainable parameters (Table 2: 6.45M).

    Args: as :func:`~mer_keras.models.off_tanet.OffTANet`; the official head has no
    dropout, so ``dropout`` defaults to 0 (a positive rate adds one after the hidden layer).
    """
    img_input, inputs = model_input(input_tensor, input_shape)
    streams = []
    for s in (1, 2):
        y = ChannelSlice(s - 1, s, name=f"icpt{s}_input")(img_input)
        y = _inception_block(y, 6, f"icpt{s}_0", activation, l2)
        y = _inception_block(y, 16, f"icpt{s}_1", activation, l2)
        streams.append(y)
    x = keras.layers.Concatenate(axis=-1, name="concat")(streams)
    x = _top(x, include_top=include_top, pooling=pooling, classes=classes,
             classifier_activation=classifier_activation, head=head, hidden=(1024,),
             dropout=dropout, activation=activation, l2=l2, torch_dropout=False)
    return finish_model(inputs, x, name, weights)


# ---------------------------------------------------------------------------------------
# MACNN
# ---------------------------------------------------------------------------------------


def _res_vgg_block(x, filters, name, activation, l2):
    """``ResBlock(in_c, out_c)``: [conv3x3 -> act] x2 (no BN) + conv1x1 shortcut, maxpool 2."""
    shortcut = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_botneck")
    y = torch_conv2d(x, filters, 3, padding=1, l2=l2, name=f"{name}_conv_0")
    y = act(y, activation, name=f"{name}_conv_1")
    y = torch_conv2d(y, filters, 3, padding=1, l2=l2, name=f"{name}_conv_2")
    y = act(y, activation, name=f"{name}_conv_3")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def MACNN(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(112, 112, 3),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="macnn",
    *,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
):
    """MACNN (Lai et al. 2020) as re-implemented ("slightly adjusted") in
    the Off-TANet code.

    Input ``112 x 112 x 3`` (u, v, strain). Four residual VGG blocks 32/64/128/256 (two
    conv3x3 + ReLU, no BN, 1x1 shortcut, maxpool 2: 112 -> 7), two dilated conv3x3 256->256
    (dilation 4 padding 4, dilation 2 padding 2) + ReLU, NCHW flatten 12544 -> FC 4096 ->
    ReLU -> dropout -> FC 4096 -> ReLU -> dropout -> ``classes``. 70,573,923 trainable
    parameters (Table 2: 70.57M); the FC layers hold 97% of them.
    """
    img_input, inputs = model_input(input_tensor, input_shape)
    x = img_input
    for b, filters in enumerate((32, 64, 128, 256)):
        x = _res_vgg_block(x, filters, f"res_vgg_{b}", activation, l2)
    x = torch_conv2d(x, 256, 3, padding=4, dilation=4, l2=l2, name="aconv_0")
    x = act(x, activation, name="aconv_1")
    x = torch_conv2d(x, 256, 3, padding=2, dilation=2, l2=l2, name="aconv_2")
    x = act(x, activation, name="aconv_3")
    x = _top(x, include_top=include_top, pooling=pooling, classes=classes,
             classifier_activation=classifier_activation, head=head, hidden=(4096, 4096),
             dropout=dropout, activation=activation, l2=l2)
    return finish_model(inputs, x, name, weights)


# ---------------------------------------------------------------------------------------
# Micro-Attention
# ---------------------------------------------------------------------------------------


def _micro_attention_block(x, filters, name, activation, l2):
    """``MABlock(in_c, out_c)``: xl1 = conv3x3+BN+act(x); xl2 = conv3x3+BN+act(xl1);
    xm = conv1x1(x); xl3 = xl2 + xm; xr = conv1x1 3C->3C([xl1; xl2; xm]); a = softmax over
    H*W of the channel mean of xr; out = xl3 + xl3 * a."""
    xl1 = torch_conv2d(x, filters, 3, padding=1, l2=l2, name=f"{name}_convl_1_0")
    xl1 = torch_batch_norm(xl1, name=f"{name}_convl_1_1")
    xl1 = act(xl1, activation, name=f"{name}_convl_1_2")
    xl2 = torch_conv2d(xl1, filters, 3, padding=1, l2=l2, name=f"{name}_convl_2_0")
    xl2 = torch_batch_norm(xl2, name=f"{name}_convl_2_1")
    xl2 = act(xl2, activation, name=f"{name}_convl_2_2")
    xm = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_convm")
    xl3 = keras.layers.Add(name=f"{name}_sum")([xl2, xm])
    xr = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([xl1, xl2, xm])
    xr = torch_conv2d(xr, 3 * filters, 1, l2=l2, name=f"{name}_convr")
    att = SpatialSoftmax(name=f"{name}_softmax")(xr)
    weighted = keras.layers.Multiply(name=f"{name}_apply")([xl3, att])
    return keras.layers.Add(name=f"{name}_out")([xl3, weighted])


def MicroAttention(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(224, 224, 3),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="micro_attention",
    *,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
):
    """Micro-Attention (Wang et al. 2020) as re-implemented ("slightly adjusted")
    in the Off-TANet code.

    Input ``224 x 224 x 3``. conv7x7/2 3->32 (padding 3) + ReLU -> maxpool 3/2 (padding 1)
    -> 56x56; three micro-attention residual blocks 64/128/256 each followed by maxpool 2
    -> 7x7x256; NCHW flatten 12544 -> FC 4096 -> ReLU -> dropout -> ``classes``.
    53,384,195 trainable parameters (Table 2: 53.38M).
    """
    img_input, inputs = model_input(input_tensor, input_shape)
    x = torch_conv2d(img_input, 32, 7, strides=2, padding=3, l2=l2, name="conv_0")
    x = act(x, activation, name="conv_1")
    x = TorchMaxPooling2D(3, 2, 1, name="pool")(x)
    for i, filters in enumerate((64, 128, 256)):
        x = _micro_attention_block(x, filters, f"ma_{2 * i}", activation, l2)
        x = keras.layers.MaxPooling2D(2, name=f"ma_{2 * i + 1}")(x)
    x = _top(x, include_top=include_top, pooling=pooling, classes=classes,
             classifier_activation=classifier_activation, head=head, hidden=(4096,),
             dropout=dropout, activation=activation, l2=l2)
    return finish_model(inputs, x, name, weights)
