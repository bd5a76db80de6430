"""Off-TANet (Zhang, Liu, Zhou 2021, PRICAI): optical-flow triplet-attention network.

The builder follows the authors' released PyTorch code (module ``OffTANet``), which the
paper defers to for details ("More details about the network can be found in the
published source code"). Keras layer names are the PyTorch module paths with ``.``
replaced by ``_`` (``res1.conv.0`` -> ``res1_conv_0``), so :data:`TORCH_NAMES` (used by
:func:`mer_keras.models.port.load_torch_state_dict`) is a near-identity table.
"""

from __future__ import annotations

import keras

from mer_keras.models.flow_layers import (
    ChannelMeanMax,
    OffTANetMHSA,
    act,
    classification_top,
    finish_model,
    model_input,
    off_tanet_stem,
    torch_batch_norm,
    torch_conv2d,
)
from mer_keras.models.heads import l2_regularizer

BLOCKS = ("triplet", "residual", "self_attention", "cbam", "bottleneck_transformer")

#: Keras layer name -> PyTorch module path of the official code, for every variant the
#: builder produces with ``enhance_all_blocks=False`` (official ``net_type`` in brackets):
#: triplet ['ta'], cbam ['cbam'], self_attention ['sa'], residual ['res'],
#: bottleneck_transformer ['bot']. Only entries whose Keras layer exists are used.
TORCH_NAMES: dict[str, str] = {
    # stem: Conv2d -> ReLU -> BatchNorm2d
    "conv1_0": "conv1.0",
    "conv1_2": "conv1.2",
    # Residual(8, 18), Residual(18, 28)
    **{f"{r}_conv_{i}": f"{r}.conv.{i}" for r in ("res1", "res2") for i in (0, 1, 3, 4)},
    "res1_botneck": "res1.botneck",
    "res2_botneck": "res2.botneck",
    # EnhancedResidual(28, 8) ['ta', 'cbam', 'sa']
    "eres_conv1_0": "eres.conv1.0",
    "eres_conv1_1": "eres.conv1.1",
    "eres_conv2_0": "eres.conv2.0",
    "eres_conv2_1": "eres.conv2.1",
    "eres_botneck": "eres.botneck",
    "eres_ca_fc1": "eres.ca.fc1",
    "eres_ca_fc2": "eres.ca.fc2",
    "eres_spa_conv1": "eres.spa.conv1",
    "eres_sa": "eres.sa",
    # Residual(28, 8) ['res']
    **{f"eres_conv_{i}": f"eres.conv.{i}" for i in (0, 1, 3, 4)},
    # BottleneckTransformer(28, 8) ['bot']
    "eres_sa_0": "eres.sa.0",
    "eres_sa_1": "eres.sa.1",
    # head
    "dense_0": "dense.0",
    "dense_3": "dense.3",
    "predictions": "dense.6",
}

#: State-dict prefixes that the official code creates but never uses in ``forward`` for a
#: given block (``'sa'`` builds ``conv2`` and skips it); pass as ``ignore=`` when porting.
TORCH_UNUSED: dict[str, tuple[str, ...]] = {"self_attention": ("eres.conv2.",)}


def _heads_for(channels: int, max_heads: int = 4) -> int:
    """Largest head count <= ``max_heads`` dividing ``channels`` (4 for 28 and 8, 3 for 18)."""
    return next(h for h in range(max_heads, 0, -1) if channels % h == 0)




def _residual(x, filters, name, activation, l2):
    """``Residual(in_c, out_c)``: [conv3x3 + BN + act] x2 (in->out->out) + conv1x1 shortcut, maxpool 2."""
    shortcut = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_botneck")
    y = torch_conv2d(x, filters, 3, padding=1, l2=l2, name=f"{name}_conv_0")
    y = torch_batch_norm(y, name=f"{name}_conv_1")
    y = act(y, activation, name=f"{name}_conv_2")
    y = torch_conv2d(y, filters, 3, padding=1, l2=l2, name=f"{name}_conv_3")
    y = torch_batch_norm(y, name=f"{name}_conv_4")
    y = act(y, activation, name=f"{name}_conv_5")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def _channel_attention(x, name, l2, ratio=None):
    """CBAM channel attention (Eq. 6) as ``ChannelAttention(in_planes=C, ratio=C)``.

    Shared MLP of bias-free 1x1 convolutions C -> C//ratio (= 1) -> C with a ReLU between,
    applied to the global average- and max-pooled maps, summed, sigmoid; multiplied on x.
    """
    channels = x.shape[-1]
    hidden = max(1, channels // (ratio or channels))  # the code passes ratio = in_planes
    fc1 = keras.layers.Conv2D(hidden, 1, use_bias=False,
                              kernel_regularizer=l2_regularizer(l2), name=f"{name}_fc1")
    relu = keras.layers.Activation("relu", name=f"{name}_relu1")
    fc2 = keras.layers.Conv2D(channels, 1, use_bias=False,
                              kernel_regularizer=l2_regularizer(l2), name=f"{name}_fc2")
    avg = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg_pool")(x)
    mx = keras.layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max_pool")(x)
    att = keras.layers.Add(name=f"{name}_sum")([fc2(relu(fc1(avg))), fc2(relu(fc1(mx)))])
    att = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(att)
    return keras.layers.Multiply(name=f"{name}_apply")([att, x])


def _spatial_attention(x, name, l2):
    """CBAM spatial attention (Eq. 5) as ``SpatialAttention``: [mean; max] -> conv3x3 2->1
    (padding 1, no bias) -> sigmoid; multiplied on x."""
    att = ChannelMeanMax(name=f"{name}_mean_max")(x)
    att = torch_conv2d(att, 1, 3, padding=1, use_bias=False, l2=l2, name=f"{name}_conv1")
    att = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(att)
    return keras.layers.Multiply(name=f"{name}_apply")([att, x])


def _enhanced_residual(x, filters, name, mode, activation, l2, position="query"):
    """``EnhancedResidual(in_c, out_c, fm_sz, net_type)`` (paper Fig. 2).

    x0 = conv1x1(x); x = conv3x3 C->C + BN + act; then
    * ``"triplet"`` ('ta'): x = CA(x)*x; x = SpA(x)*x; x = MHSA(x) (C -> C); x = conv3x3 C->out + BN + act;
    * ``"cbam"``: CA, SpA, conv3x3 C->out + BN + act;
    * ``"self_attention"`` ('sa'): x = MHSA(x) with C -> out channels and *no* second conv
      (the official code comments it out of ``forward``);
    x = x + x0; maxpool 2.
    """
    in_c = x.shape[-1]
    shortcut = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_botneck")
    y = torch_conv2d(x, in_c, 3, padding=1, l2=l2, name=f"{name}_conv1_0")
    y = torch_batch_norm(y, name=f"{name}_conv1_1")
    y = act(y, activation, name=f"{name}_conv1_2")
    if mode in ("triplet", "cbam"):
        y = _channel_attention(y, f"{name}_ca", l2)
        y = _spatial_attention(y, f"{name}_spa", l2)
    if mode in ("triplet", "self_attention"):
        out_c = in_c if mode == "triplet" else filters
        heads = _heads_for(out_c)
        y = OffTANetMHSA(heads=heads, head_channels=out_c // heads, position=position,
                         kernel_regularizer=l2_regularizer(l2), name=f"{name}_sa")(y)
    if mode in ("triplet", "cbam"):
        y = torch_conv2d(y, filters, 3, padding=1, l2=l2, name=f"{name}_conv2_0")
        y = torch_batch_norm(y, name=f"{name}_conv2_1")
        y = act(y, activation, name=f"{name}_conv2_2")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def _bottleneck_transformer(x, filters, name, l2, heads=4, position="query"):
    """``BottleneckTransformer(in_c, out_c, fm_sz, head_n=4)`` ('bot'): conv1x1 shortcut +
    MHSA(in -> out) -> MHSA(out -> out) (no convolution, no BN), summed, maxpool 2."""
    heads = _heads_for(filters, heads)
    reg = l2_regularizer(l2)
    shortcut = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_botneck")
    y = OffTANetMHSA(heads=heads, head_channels=filters // heads, position=position,
                     kernel_regularizer=reg, name=f"{name}_sa_0")(x)
    y = OffTANetMHSA(heads=heads, head_channels=filters // heads, position=position,
                     kernel_regularizer=reg, name=f"{name}_sa_1")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def _block(x, filters, name, block, activation, l2):
    if block == "residual":
        return _residual(x, filters, name, activation, l2)
    if block == "bottleneck_transformer":
        return _bottleneck_transformer(x, filters, name, l2)
    return _enhanced_residual(x, filters, name, block, activation, l2)


def OffTANet(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(112, 112, 3),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="off_tanet",
    *,
    block="triplet",
    enhance_all_blocks=False,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
):
    """Off-TANet (Zhang, Liu, Zhou 2021), as computed by the authors' PyTorch code.

    Input: ``112 x 112 x 3`` = (u, v, optical strain) of the onset-apex TV-L1 flow (Sec. 3.1,
    Fig. 1). Architecture (paper Fig. 3; Fig. 2 for the attention block; Eq. 5-10):

    * stem ``conv1``: conv7x7/2 3->8 (bias, padding 3) -> ReLU -> BN (ReLU *before* BN, as in
      the code) -> 56x56x8;
    * ``res1``, ``res2``: ``Residual`` 8->18, 18->28: [conv3x3 + BN + ReLU] x2 plus a 1x1 conv
      shortcut (bias, no BN), summed, maxpool 2 -> 28x28x18, 14x14x28;
    * ``eres``: triplet-attention residual block 28->8 (Fig. 2): x0 = conv1x1(x);
      conv3x3 28->28 + BN + ReLU; channel attention (Eq. 6, shared MLP 28->1->28, i.e.
      ratio 28); spatial attention (Eq. 5, conv3x3 on [mean; max], no bias); 4-head
      self-attention (Eq. 7-10, 7 channels per head,
      :class:`~mer_keras.models.flow_layers.OffTANetMHSA`); conv3x3 28->8 + BN + ReLU;
      + x0; maxpool 2 -> 7x7x8;
    * head: flatten in PyTorch's NCHW order (a ``Permute`` before ``Flatten``) 392 -> 64 ->
      ReLU -> dropout -> 64 -> ReLU -> dropout -> ``classes``.

    3 classes at 112x112x3 with ``block="triplet"``: 59,403 trainable parameters (Table 2).

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in ``keras.applications``. ``weights`` is None or
            a local ``.keras`` / ``.weights.h5`` path (nothing is downloaded); PyTorch
            checkpoints go through :func:`mer_keras.models.port.load_torch_state_dict`.
            The spatial size must make the last block's map square (the position code is
            fixed per size); the flatten width depends on it.
        block: design of the last block (Table 4; official ``net_type``):
            ``"triplet"`` ('ta', the paper's model), ``"residual"`` ('res', "no
            enhancement": a plain ``Residual(28, 8)``), ``"self_attention"`` ('sa': conv3x3
            28->28 + BN + ReLU, then 4-head MHSA 28 -> 4 x 2 = 8 channels and no second
            conv, as the code's ``forward`` does), ``"cbam"`` ('cbam': channel + spatial
            attention between the two convolutions), ``"bottleneck_transformer"`` ('bot':
            1x1 shortcut + two stacked MHSA 28->8->8, 2 channels per head).
        enhance_all_blocks: Table-3 ablation "all residual block attention-enhanced". Not
            in the released code; our reading: ``res1`` and ``res2`` are built with the
            same ``block`` design as ``eres`` and the same output shapes (8->18 at 56x56,
            18->28 at 28x28). The MHSA keeps the code's head width rule (C_in channels
            out) but, since 18 is not divisible by 4, uses the largest head count <= 4
            that divides the channel count (4 heads x 2 for 8 channels, 3 heads x 6 for 18).
            No effect with ``block="residual"``.
        l2: L2 factor on every convolution, attention-projection and dense kernel (0 = off,
            the official setting).
        dropout: rate of the two head dropouts (official 0.5).
        activation: replaces every ReLU of the stem, residual convolutions and head (the
            ReLU inside the channel-attention MLP is kept).
        head: ``"softmax"`` or ``"svm"`` (final linear Dense for a multi-class margin loss).
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    img_input, inputs = model_input(input_tensor, input_shape)
    x = off_tanet_stem(img_input, activation, l2)
    for name_, filters in (("res1", 18), ("res2", 28)):
        if enhance_all_blocks:
            x = _block(x, filters, name_, block, activation, l2)
        else:
            x = _residual(x, filters, name_, activation, l2)
    x = _block(x, 8, "eres", block, activation, l2)
    x = classification_top(
        x,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        head=head,
        hidden_units=(64, 64),
        dropout=dropout,
        activation=activation,
        l2=l2,
    )
    return finish_model(inputs, x, name, weights)
