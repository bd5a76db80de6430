"""Serialisable custom layers shared by the backbones (``keras.ops`` only, backend-agnostic).

Every layer is registered under the ``mer_keras`` package, implements ``get_config`` and
uses only ``keras.ops`` so that it runs under the TensorFlow and JAX backends. Sequence and
patch manipulations are reshapes/transposes (no Python loops over patches).

Contents
--------
- :class:`ChannelShuffle`, :class:`ChannelSplit` — ShuffleNetV2 unit pieces (Ma et al. 2018).
- :class:`ChannelAttention`, :class:`SpatialAttention` — CBAM (Woo et al. 2018), Eqs. 10-11
  of the ShuffleNetV2-SVM paper; each returns the *refined* feature map (input times map).
- :class:`GhostModule` — Ghost module (Han et al. 2020).
- :class:`SharedQKVAttention` — MoCoViT-style self-attention (Ma et al. 2022) with Ghost
  projections and Q = K = V (Eqs. 13-14 of the ShuffleNetV2-SVM paper), computed per
  pixel position over the patches of a MobileViT-style unfolding.
- :class:`GhostTransformerEncoder` — pre-norm transformer layer using that attention.
- :class:`Unfold`, :class:`Fold` — MobileViT patch unfolding / folding (Mehta & Rastegari 2021).
- :class:`TransformerEncoder` — pre-norm transformer layer (MHSA with one qkv projection,
  FFN, configurable activation) used by MobileViT (FFN 2d, swish) and DeiT (FFN 4d, GELU).
- :class:`ClassToken`, :class:`AddPositionEmbedding`, :class:`TakeToken` — DeiT pieces.

Helpers :func:`activation_layer` and :data:`LEAKY_RELU_SLOPE` implement the ``activation``
switch of the builders.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "mer_keras"

#: Negative slope of the ``"leaky_relu"`` switch. The ShuffleNetV2-SVM paper (Keras 2.2.4)
#: does not state it; Keras' ``LeakyReLU`` layer default (0.3) is used.
LEAKY_RELU_SLOPE = 0.3

ACTIVATIONS = ("relu", "leaky_relu", "swish")


def activation_layer(activation: str, name: str | None = None) -> keras.layers.Layer:
    """A layer for one of the builder activation switches ("relu", "leaky_relu", "swish").

    Other Keras activation names (e.g. "relu6", "hard_swish", "gelu") are accepted as
    plain ``Activation`` layers.
    """
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=LEAKY_RELU_SLOPE, name=name)
    if activation == "swish":
        return keras.layers.Activation("swish", name=name)
    return keras.layers.Activation(activation, name=name)


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def _act(x, activation):
    """Apply an activation given by name (keras.activations) inside a layer's call."""
    if activation is None:
        return x
    if activation == "leaky_relu":
        return ops.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)
    if activation == "gelu":
        return ops.gelu(x, approximate=False)
    return keras.activations.get(activation)(x)


def _reg(regularizer):
    return keras.regularizers.get(regularizer)


def _ser(obj):
    return keras.regularizers.serialize(obj) if obj is not None else None


# --------------------------------------------------------------------------- ShuffleNetV2


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelShuffle(keras.layers.Layer):
    """Channel shuffle (Ma et al. 2018): reshape C into (groups, C/groups), transpose, flatten.

    Same channel order as torchvision's ``channel_shuffle`` (NCHW) applied to NHWC tensors.
    """

    def __init__(self, groups: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, x):
        channels = x.shape[-1]
        if channels % self.groups:
            raise ValueError(f"channels ({channels}) not divisible by groups ({self.groups})")
        shape = ops.shape(x)
        y = ops.reshape(x, (-1, shape[1], shape[2], self.groups, channels // self.groups))
        y = ops.transpose(y, (0, 1, 2, 4, 3))
        return ops.reshape(y, (-1, shape[1], shape[2], channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSplit(keras.layers.Layer):
    """Split the last axis into ``num_splits`` equal parts; returns a list of tensors."""

    def __init__(self, num_splits: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_splits = int(num_splits)

    def call(self, x):
        return ops.split(x, self.num_splits, axis=-1)

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        part = None if c is None else c // self.num_splits
        return [tuple(input_shape[:-1]) + (part,) for _ in range(self.num_splits)]

    def get_config(self):
        return {**super().get_config(), "num_splits": self.num_splits}


# --------------------------------------------------------------------------- CBAM


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelAttention(keras.layers.Layer):
    """CBAM channel attention (Woo et al. 2018; Eq. 10 of the ShuffleNetV2-SVM paper).

    ``M_c = sigmoid(W1 relu(W0 avgpool(F)) + W1 relu(W0 maxpool(F)))`` with a shared MLP of
    ``max(1, C // ratio)`` hidden units; returns ``F * M_c``. ``use_bias`` follows the CBAM
    reference (``nn.Linear`` with bias) by default.
    """

    def __init__(self, ratio: int = 16, use_bias: bool = True, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)
        self.use_bias = bool(use_bias)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.ratio)
        self.mlp_hidden = keras.layers.Dense(
            hidden, activation="relu", use_bias=self.use_bias,
            kernel_regularizer=self.kernel_regularizer, name="mlp_hidden")
        self.mlp_out = keras.layers.Dense(
            channels, use_bias=self.use_bias, kernel_regularizer=self.kernel_regularizer,
            name="mlp_out")
        self.mlp_hidden.build((None, channels))
        self.mlp_out.build((None, hidden))
        self.built = True

    def call(self, x):
        avg = ops.mean(x, axis=(1, 2))
        mx = ops.max(x, axis=(1, 2))
        att = self.mlp_out(self.mlp_hidden(avg)) + self.mlp_out(self.mlp_hidden(mx))
        att = ops.sigmoid(att)
        return x * att[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "use_bias": self.use_bias,
                "kernel_regularizer": _ser(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SpatialAttention(keras.layers.Layer):
    """CBAM spatial attention (Eq. 11): ``M_s = sigmoid(conv_kxk([mean_c(F); max_c(F)]))``.

    One ``kernel_size`` x ``kernel_size`` convolution 2 -> 1 ("same" padding, with bias as
    written in Eq. 11; the CBAM reference adds a BatchNorm instead of the bias — not done
    here). Returns ``F * M_s``.
    """

    def __init__(self, kernel_size: int = 7, use_bias: bool = True, kernel_regularizer=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.use_bias = bool(use_bias)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        self.conv = keras.layers.Conv2D(
            1, self.kernel_size, padding="same", use_bias=self.use_bias,
            kernel_regularizer=self.kernel_regularizer, name="conv")
        self.conv.build(tuple(input_shape[:-1]) + (2,))
        self.built = True

    def call(self, x):
        desc = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)
        return x * ops.sigmoid(self.conv(desc))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "use_bias": self.use_bias, "kernel_regularizer": _ser(self.kernel_regularizer)}


# --------------------------------------------------------------------------- Ghost / MoCoViT


@keras.saving.register_keras_serializable(package=PACKAGE)
class GhostModule(keras.layers.Layer):
    """Ghost module (Han et al. 2020) on NHWC maps.

    primary ``kernel_size`` conv (no bias) to ``m = ceil(filters / ratio)`` channels
    (+ BN, + activation) -> cheap depthwise ``dw_size`` conv with depth multiplier
    ``ratio - 1`` (+ BN, + activation) -> concatenate -> keep the first ``filters``
    channels. ``activation=None`` makes it a linear projection (used inside attention).
    """

    def __init__(self, filters: int, ratio: int = 2, kernel_size: int = 1, dw_size: int = 3,
                 use_bn: bool = True, activation: str | None = None,
                 bn_momentum: float = 0.9, bn_epsilon: float = 1e-5,
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if ratio < 2:
            raise ValueError("ratio must be >= 2")
        self.filters = int(filters)
        self.ratio = int(ratio)
        self.kernel_size = int(kernel_size)
        self.dw_size = int(dw_size)
        self.use_bn = bool(use_bn)
        self.activation = activation
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        init = math.ceil(self.filters / self.ratio)
        self.primary = keras.layers.Conv2D(
            init, self.kernel_size, padding="same", use_bias=not self.use_bn,
            kernel_regularizer=self.kernel_regularizer, name="primary_conv")
        self.primary.build(input_shape)
        self.cheap = keras.layers.DepthwiseConv2D(
            self.dw_size, padding="same", depth_multiplier=self.ratio - 1,
            use_bias=not self.use_bn, depthwise_regularizer=self.kernel_regularizer,
            name="cheap_dwconv")
        mid = tuple(input_shape[:-1]) + (init,)
        self.cheap.build(mid)
        if self.use_bn:
            self.primary_bn = keras.layers.BatchNormalization(
                momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="primary_bn")
            self.primary_bn.build(mid)
            self.cheap_bn = keras.layers.BatchNormalization(
                momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="cheap_bn")
            self.cheap_bn.build(tuple(input_shape[:-1]) + (init * (self.ratio - 1),))
        self.built = True

    def call(self, x, training=None):
        p = self.primary(x)
        if self.use_bn:
            p = self.primary_bn(p, training=training)
        p = _act(p, self.activation)
        c = self.cheap(p)
        if self.use_bn:
            c = self.cheap_bn(c, training=training)
        c = _act(c, self.activation)
        return ops.concatenate([p, c], axis=-1)[..., : self.filters]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "ratio": self.ratio,
                "kernel_size": self.kernel_size, "dw_size": self.dw_size,
                "use_bn": self.use_bn, "activation": self.activation,
                "bn_momentum": self.bn_momentum, "bn_epsilon": self.bn_epsilon,
                "kernel_regularizer": _ser(self.kernel_regularizer)}


def _unfold(x, ph, pw):
    """(B, H, W, C) -> (B, ph*pw, (H/ph)*(W/pw), C); patch-position major, as MobileViT."""
    shape = ops.shape(x)
    h, w, c = shape[1], shape[2], x.shape[-1]
    nh, nw = h // ph, w // pw
    y = ops.reshape(x, (-1, nh, ph, nw, pw, c))
    y = ops.transpose(y, (0, 2, 4, 1, 3, 5))  # B, ph, pw, nh, nw, C
    return ops.reshape(y, (-1, ph * pw, nh * nw, c))


def _fold(x, ph, pw, nh, nw):
    """Inverse of :func:`_unfold` for a grid of nh x nw patches of ph x pw pixels."""
    c = x.shape[-1]
    y = ops.reshape(x, (-1, ph, pw, nh, nw, c))
    y = ops.transpose(y, (0, 3, 1, 4, 2, 5))  # B, nh, ph, nw, pw, C
    return ops.reshape(y, (-1, nh * ph, nw * pw, c))


@keras.saving.register_keras_serializable(package=PACKAGE)
class Unfold(keras.layers.Layer):
    """MobileViT unfolding: (B, H, W, C) -> (B, P, N, C), P = ph*pw pixels per patch,
    N = (H/ph)(W/pw) patches. H and W must be multiples of the patch size."""

    def __init__(self, patch_size=2, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (
            int(patch_size), int(patch_size))

    def call(self, x):
        return _unfold(x, *self.patch_size)

    def compute_output_shape(self, input_shape):
        ph, pw = self.patch_size
        _, h, w, c = input_shape
        n = None if h is None or w is None else (h // ph) * (w // pw)
        return (input_shape[0], ph * pw, n, c)

    def get_config(self):
        return {**super().get_config(), "patch_size": list(self.patch_size)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Fold(keras.layers.Layer):
    """Inverse of :class:`Unfold`: (B, P, N, C) -> (B, H, W, C) for a fixed H x W map."""

    def __init__(self, height: int, width: int, patch_size=2, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)
        self.patch_size = tuple(patch_size) if isinstance(patch_size, (list, tuple)) else (
            int(patch_size), int(patch_size))

    def call(self, x):
        ph, pw = self.patch_size
        return _fold(x, ph, pw, self.height // ph, self.width // pw)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "patch_size": list(self.patch_size)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SharedQKVAttention(keras.layers.Layer):
    """MoCoViT-style self-attention with a shared projection (Ma et al. 2022).

    Eqs. 13-14 of the ShuffleNetV2-SVM paper: one projection gives ``V`` and ``Q = K = V``,
    ``out = softmax(V V^T / sqrt(d_h)) V`` per head; the value projection and the output
    projection are Ghost modules (linear: BN, no activation) instead of dense layers.

    Input and output are NHWC maps (B, H, W, dim). Attention runs, as in a MobileViT block
    (Eq. 15, Fig. 4), between the pixels that share a position inside ``patch_size`` patches:
    the map is unfolded to (B, P, N, dim) and each of the P positions attends over the N
    patches (``patch_size=1`` = plain global attention over all pixels). Because the Ghost
    projections act on the map, their cheap depthwise convolution mixes neighbouring pixels.
    """

    def __init__(self, dim: int, num_heads: int = 1, patch_size: int = 2, ghost_ratio: int = 2,
                 ghost_dw_size: int = 3, attention_dropout: float = 0.0,
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.patch_size = int(patch_size)
        self.ghost_ratio = int(ghost_ratio)
        self.ghost_dw_size = int(ghost_dw_size)
        self.attention_dropout = float(attention_dropout)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        kw = dict(ratio=self.ghost_ratio, dw_size=self.ghost_dw_size, activation=None,
                  kernel_regularizer=self.kernel_regularizer)
        self.v_proj = GhostModule(self.dim, name="v_proj", **kw)
        self.v_proj.build(input_shape)
        self.out_proj = GhostModule(self.dim, name="out_proj", **kw)
        self.out_proj.build(tuple(input_shape[:-1]) + (self.dim,))
        self.drop = keras.layers.Dropout(self.attention_dropout)
        self.built = True

    def call(self, x, training=None):
        v = self.v_proj(x, training=training)  # B, H, W, d
        shape = ops.shape(v)
        h, w = shape[1], shape[2]
        p = self.patch_size
        t = _unfold(v, p, p)  # B, P, N, d
        n_p = p * p
        hd = self.dim // self.num_heads
        t = ops.reshape(t, (-1, n_p, h * w // n_p, self.num_heads, hd))
        t = ops.transpose(t, (0, 1, 3, 2, 4))  # B, P, heads, N, hd
        logits = ops.matmul(t, ops.swapaxes(t, -1, -2)) / math.sqrt(hd)
        att = self.drop(ops.softmax(logits, axis=-1), training=training)
        o = ops.matmul(att, t)  # B, P, heads, N, hd
        o = ops.transpose(o, (0, 1, 3, 2, 4))
        o = ops.reshape(o, (-1, n_p, h * w // n_p, self.dim))
        o = _fold(o, p, p, h // p, w // p)
        return self.out_proj(o, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "patch_size": self.patch_size, "ghost_ratio": self.ghost_ratio,
                "ghost_dw_size": self.ghost_dw_size,
                "attention_dropout": self.attention_dropout,
                "kernel_regularizer": _ser(self.kernel_regularizer)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GhostTransformerEncoder(keras.layers.Layer):
    """Pre-norm transformer layer on NHWC maps with :class:`SharedQKVAttention`.

    ``x = x + SharedQKVAttention(LN(x)); x = x + FFN(LN(x))``, FFN = Dense(ffn_dim,
    activation) -> dropout -> Dense(dim) (applied per pixel, i.e. per token).
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int = 1, patch_size: int = 2,
                 activation: str = "swish", dropout: float = 0.0,
                 attention_dropout: float = 0.0, ghost_ratio: int = 2, ghost_dw_size: int = 3,
                 layer_norm_epsilon: float = 1e-5, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.ffn_dim, self.num_heads = int(dim), int(ffn_dim), int(num_heads)
        self.patch_size = int(patch_size)
        self.activation = activation
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.ghost_ratio, self.ghost_dw_size = int(ghost_ratio), int(ghost_dw_size)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        shp = tuple(input_shape[:-1]) + (self.dim,)
        self.norm1 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="norm1")
        self.norm1.build(shp)
        self.attn = SharedQKVAttention(
            self.dim, self.num_heads, self.patch_size, self.ghost_ratio, self.ghost_dw_size,
            self.attention_dropout, kernel_regularizer=self.kernel_regularizer, name="attn")
        self.attn.build(shp)
        self.norm2 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="norm2")
        self.norm2.build(shp)
        self.fc1 = keras.layers.Dense(self.ffn_dim, kernel_regularizer=self.kernel_regularizer,
                                      name="fc1")
        self.fc1.build(shp)
        self.fc2 = keras.layers.Dense(self.dim, kernel_regularizer=self.kernel_regularizer,
                                      name="fc2")
        self.fc2.build(tuple(input_shape[:-1]) + (self.ffn_dim,))
        self.drop = keras.layers.Dropout(self.dropout)
        self.built = True

    def call(self, x, training=None):
        x = x + self.drop(self.attn(self.norm1(x), training=training), training=training)
        y = _act(self.fc1(self.norm2(x)), self.activation)
        y = self.fc2(self.drop(y, training=training))
        return x + self.drop(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "ffn_dim": self.ffn_dim,
                "num_heads": self.num_heads, "patch_size": self.patch_size,
                "activation": self.activation, "dropout": self.dropout,
                "attention_dropout": self.attention_dropout, "ghost_ratio": self.ghost_ratio,
                "ghost_dw_size": self.ghost_dw_size,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "kernel_regularizer": _ser(self.kernel_regularizer)}


# --------------------------------------------------------------------------- transformer


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerEncoder(keras.layers.Layer):
    """Pre-norm transformer encoder layer on token sequences (..., N, dim).

    ``x = x + Drop(MHSA(LN(x))); x = x + Drop(FFN(LN(x)))``. MHSA uses one ``qkv`` dense
    projection (dim -> 3 dim, with bias, PyTorch/timm layout: [q | k | v], heads
    contiguous) and an output projection with bias; FFN = Dense(ffn_dim, activation) ->
    dropout -> Dense(dim). Any number of leading batch axes is allowed (MobileViT feeds
    (B, P, N, d)). Parameters: 4 d^2 + 4 d (attention) + 2 d f + f + d (FFN) + 4 d (LNs).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, activation: str = "swish",
                 dropout: float = 0.0, attention_dropout: float = 0.0,
                 layer_norm_epsilon: float = 1e-5, qkv_bias: bool = True,
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.num_heads, self.ffn_dim = int(dim), int(num_heads), int(ffn_dim)
        self.activation = activation
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.qkv_bias = bool(qkv_bias)
        self.kernel_regularizer = _reg(kernel_regularizer)

    def build(self, input_shape):
        shp = tuple(input_shape[:-1]) + (self.dim,)
        r = self.kernel_regularizer
        self.norm1 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="norm1")
        self.norm1.build(shp)
        self.qkv = keras.layers.Dense(3 * self.dim, use_bias=self.qkv_bias,
                                      kernel_regularizer=r, name="qkv")
        self.qkv.build(shp)
        self.proj = keras.layers.Dense(self.dim, kernel_regularizer=r, name="proj")
        self.proj.build(shp)
        self.norm2 = keras.layers.LayerNormalization(epsilon=self.layer_norm_epsilon, name="norm2")
        self.norm2.build(shp)
        self.fc1 = keras.layers.Dense(self.ffn_dim, kernel_regularizer=r, name="fc1")
        self.fc1.build(shp)
        self.fc2 = keras.layers.Dense(self.dim, kernel_regularizer=r, name="fc2")
        self.fc2.build(tuple(input_shape[:-1]) + (self.ffn_dim,))
        self.attn_drop = keras.layers.Dropout(self.attention_dropout)
        self.drop = keras.layers.Dropout(self.dropout)
        self.built = True

    def _mhsa(self, x, training):
        hd = self.dim // self.num_heads
        qkv = self.qkv(x)  # ..., N, 3d
        lead = ops.shape(qkv)[:-2]
        n = ops.shape(qkv)[-2]
        qkv = ops.reshape(qkv, (-1, n, 3, self.num_heads, hd))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # 3, B', heads, N, hd
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = ops.matmul(q, ops.swapaxes(k, -1, -2)) * (hd ** -0.5)
        att = self.attn_drop(ops.softmax(att, axis=-1), training=training)
        o = ops.transpose(ops.matmul(att, v), (0, 2, 1, 3))  # B', N, heads, hd
        o = ops.reshape(o, tuple(lead) + (n, self.dim))
        return self.proj(o)

    def call(self, x, training=None):
        x = x + self.drop(self._mhsa(self.norm1(x), training), training=training)
        y = _act(self.fc1(self.norm2(x)), self.activation)
        y = self.fc2(self.drop(y, training=training))
        return x + self.drop(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads,
                "ffn_dim": self.ffn_dim, "activation": self.activation,
                "dropout": self.dropout, "attention_dropout": self.attention_dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon, "qkv_bias": self.qkv_bias,
                "kernel_regularizer": _ser(self.kernel_regularizer)}


# --------------------------------------------------------------------------- DeiT pieces


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassToken(keras.layers.Layer):
    """Prepend a learned class token: (B, N, d) -> (B, N + 1, d). Initialised N(0, 0.02)."""

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, int(input_shape[-1])), name="cls_token",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.built = True

    def call(self, x):
        b = ops.shape(x)[0]
        tok = ops.broadcast_to(ops.cast(self.token, x.dtype), (b, 1, x.shape[-1]))
        return ops.concatenate([tok, x], axis=1)

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], n, input_shape[2])


@keras.saving.register_keras_serializable(package=PACKAGE)
class AddPositionEmbedding(keras.layers.Layer):
    """Add a learned position embedding of shape (1, N, d). Initialised N(0, 0.02)."""

    def build(self, input_shape):
        self.pos_embed = self.add_weight(
            shape=(1, int(input_shape[1]), int(input_shape[2])), name="pos_embed",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        self.built = True

    def call(self, x):
        return x + ops.cast(self.pos_embed, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=PACKAGE)
class TakeToken(keras.layers.Layer):
    """Select token ``index`` of a (B, N, d) sequence -> (B, d)."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


__all__ = [
    "ACTIVATIONS", "LEAKY_RELU_SLOPE", "activation_layer", "check_activation",
    "ChannelShuffle", "ChannelSplit", "ChannelAttention", "SpatialAttention", "GhostModule",
    "SharedQKVAttention", "GhostTransformerEncoder", "Unfold", "Fold", "TransformerEncoder",
    "ClassToken", "AddPositionEmbedding", "TakeToken",
]
