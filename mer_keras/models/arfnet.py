"""ARFNet / mini-AORCNN (Zhang, Liu, Qi 2022, Computer Science 49(6A)): bottleneck-Transformer
micro-expression network.

The paper ("Lightweight Micro-expression Recognition Architecture Based on Bottleneck
Transformer") is short; the block structure follows the authors' released PyTorch code,
where the network is called ``ARFNet`` (module names ``conv1``, ``res1``, ``res2``,
``sa``, ``dense``). Keras layer names are those module paths with ``.`` -> ``_``.
"""

from __future__ import annotations

import keras

from mer_keras.models.flow_layers import (
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

#: Keras layer name -> PyTorch module path of the official code (``net_type`` 'mhsa' =
#: default, 'sa' = ``heads=1``, 'res' = ``self_attention=False``).
TORCH_NAMES: dict[str, str] = {
    "conv1_0": "conv1.0",
    "conv1_2": "conv1.2",
    **{f"{r}_conv_{i}": f"{r}.conv.{i}" for r in ("res1", "res2", "sa") for i in (0, 1, 3, 4)},
    "res1_botneck": "res1.botneck",
    "res2_botneck": "res2.botneck",
    "sa_botneck": "sa.botneck",
    "sa_sa_0": "sa.sa.0",
    "sa_sa_1": "sa.sa.1",
    "dense_0": "dense.0",
    "dense_3": "dense.3",
    "predictions": "dense.6",
}




def _arf_residual(x, filters, name, activation, l2):
    """``ARFRes(in_c, out_c)``, the parameter-saving residual block.

    [conv3x3 C->C + BN + act] x2 (both convolutions keep the input width), add the
    identity, *then* a 1x1 conv C->out (with bias) and maxpool 2 — the channel change
    happens once, after the sum, instead of in a 3x3 conv plus a 1x1 shortcut.
    """
    channels = x.shape[-1]
    y = torch_conv2d(x, channels, 3, padding=1, l2=l2, name=f"{name}_conv_0")
    y = torch_batch_norm(y, name=f"{name}_conv_1")
    y = act(y, activation, name=f"{name}_conv_2")
    y = torch_conv2d(y, channels, 3, padding=1, l2=l2, name=f"{name}_conv_3")
    y = torch_batch_norm(y, name=f"{name}_conv_4")
    y = act(y, activation, name=f"{name}_conv_5")
    y = keras.layers.Add(name=f"{name}_add")([y, x])
    y = torch_conv2d(y, filters, 1, l2=l2, name=f"{name}_botneck")
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def _bottleneck_transformer(x, filters, name, heads, position, l2):
    """``ARFBottleneckTransformer(in_c, out_c, fm_sz, head_n)``: conv1x1 shortcut C->out plus
    two stacked MHSA layers (C -> heads x out/heads, then out -> heads x out/heads), summed,
    maxpool 2. The MHSA is the Off-TANet one (per-channel attention with the fixed
    sinusoidal code; :class:`~mer_keras.models.flow_layers.OffTANetMHSA`)."""
    if filters % heads:
        raise ValueError(f"heads ({heads}) must divide the block's output channels ({filters})")
    reg = l2_regularizer(l2)
    shortcut = torch_conv2d(x, filters, 1, l2=l2, name=f"{name}_botneck")
    y = OffTANetMHSA(heads=heads, head_channels=filters // heads, position=position,
                     kernel_regularizer=reg, name=f"{name}_sa_0")(x)
    y = OffTANetMHSA(heads=heads, head_channels=filters // heads, position=position,
                     kernel_regularizer=reg, name=f"{name}_sa_1")(y)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.MaxPooling2D(2, name=f"{name}_pool")(y)


def ARFNet(
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=(112, 112, 3),
    pooling=None,
    classes=3,
    classifier_activation="softmax",
    name="arfnet",
    *,
    self_attention=True,
    position_encoding=True,
    heads=4,
    l2=0.0,
    dropout=0.5,
    activation="relu",
    head="softmax",
):
    """ARFNet / mini-AORCNN (Zhang, Liu, Qi 2022), as computed by the authors' PyTorch code.

    Same input (112x112x3 = u, v, optical strain), stem, head, training and LOSO protocol
    as Off-TANet (Zhang, Liu, Zhou 2021). Structure:

    * stem ``conv1``: conv7x7/2 3->8 (padding 3) -> ReLU -> BN -> 56x56x8;
    * ``res1``, ``res2``: ARF residual blocks 8->18, 18->28 ("parameter-saving residual
      blocks"): [conv3x3 C->C + BN + ReLU] x2, + identity, conv1x1 C->out, maxpool 2;
    * ``sa``: bottleneck-Transformer block 28->8 at 14x14 (the paper's block that
      "replace[s] the convolution operators in residual blocks with self-attention"):
      conv1x1 shortcut 28->8 + [MHSA 28 -> 4 heads x 2, MHSA 8 -> 4 heads x 2], summed,
      maxpool 2 -> 7x7x8;
    * head: NCHW flatten 392 -> 64 -> ReLU -> dropout -> 64 -> ReLU -> dropout -> classes.

    3 classes at 112x112x3: 39,685 trainable parameters (the paper's abstract).

    Choices the paper leaves open, resolved by the official code:

    * "relative position encoding": the MHSA adds ``q_c P^T`` to ``q_c k_c^T`` with the
      *fixed* sinusoidal code ``P[i, j] = e_i + e_j`` of Off-TANet (Eq. 8-10 there); it has
      no parameters. The parameter budget confirms it: stem 1,200 + ARF blocks 1,362 +
      6,472 + shortcut 232 + MHSA 696 + 216 + head 29,507 = 39,685 exactly, so a learned
      relative-logit encoding as in BoTNet (Srinivas et al. 2021) would overshoot the
      paper's count.
    * attention is per channel on the 14x14 map seen as a matrix, softmax over all 196
      entries (see :class:`~mer_keras.models.flow_layers.OffTANetMHSA`); the
      Transformer block has no BN, no FFN and no normalisation.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, name: as in ``keras.applications``; ``weights`` is None or
            a local ``.keras`` / ``.weights.h5`` file (PyTorch checkpoints: see
            :mod:`mer_keras.models.port`). Use ``input_shape=(112, 112, 2)`` for the
            "no optical strain" ablation.
        self_attention: False = the "no self-attention" ablation. The paper does not say
            what replaces the MHSA; we follow the official code's ``net_type='res'``: the
            whole Transformer block becomes an ARF residual block 28->8 (two 3x3
            convolutions 28->28 + BN + ReLU, identity, 1x1 conv 28->8, maxpool 2), i.e. the
            convolutions that BoTNet replaces by MHSA are put back (53,053 parameters).
        position_encoding: True (= ``"query"``, the code's ``q P^T`` term), ``"bias"`` (the
            code's ``pos_bias=True``: ``+ P``) or False (the "no relative position
            encoding" ablation: logits ``q k^T`` only; same parameter count).
        heads: heads per MHSA (official 4; 1 = the code's single-head ``net_type='sa'``).
        l2: L2 factor on every convolution, attention-projection and dense kernel.
        dropout: rate of the two head dropouts (official 0.5).
        activation: replaces every ReLU of the stem, residual blocks and head.
        head: ``"softmax"`` or ``"svm"`` (final linear Dense for a multi-class margin loss).
    """
    if position_encoding is True:
        position = "query"
    elif position_encoding in (False, None):
        position = None
    elif position_encoding in ("query", "bias"):
        position = position_encoding
    else:
        raise ValueError(f"position_encoding must be True, False, 'query' or 'bias', got {position_encoding!r}")
    img_input, inputs = model_input(input_tensor, input_shape)
    x = off_tanet_stem(img_input, activation, l2)
    x = _arf_residual(x, 18, "res1", activation, l2)
    x = _arf_residual(x, 28, "res2", activation, l2)
    if self_attention:
        x = _bottleneck_transformer(x, 8, "sa", heads, position, l2)
    else:
        x = _arf_residual(x, 8, "sa", activation, l2)
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
