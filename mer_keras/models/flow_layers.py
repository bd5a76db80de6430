"""Custom Keras layers for the optical-flow networks (Off-TANet, ARFNet, STSTNet, Table-2 baselines).

Every layer is written with ``keras.ops`` only (it runs under the TensorFlow, JAX and
PyTorch backends), is vectorised (no Python loop over heads, channels or pixels at call
time) and is registered for serialisation under the ``mer_keras`` package, so models
using them round-trip through ``model.save("x.keras")`` / ``keras.models.load_model``.

Layers
------
``OffTANetMHSA``
    The multi-head self-attention of the Off-TANet code (Zhang, Liu, Zhou 2021, Eq. 7-10),
    reused unchanged by the ARFNet code (Zhang, Liu, Qi 2022) as its "bottleneck
    Transformer" self-attention. Attention is computed *per channel* on the H x W feature
    map seen as a matrix (it is not the token-wise attention of ViT/BoTNet).
``TorchMaxPooling2D``
    ``torch.nn.MaxPool2d(kernel, stride, padding)``: pads ``padding`` cells of ``-inf`` on
    every side and floors the output size. Keras' ``padding="same"`` places the windows
    differently, so it is not a substitute.
``ChannelMeanMax``
    [mean over channels; max over channels] -> 2 channels, the input of the CBAM spatial
    attention (Woo et al. 2018) as the Off-TANet code computes it (mean first).
``SpatialSoftmax``
    mean over channels followed by a softmax over all H*W positions (one map per sample),
    the spatial attention of the Micro-Attention re-implementation in the Off-TANet code.
``ChannelSlice``
    ``x[..., start:stop]``, used to split a (u, v) flow input into per-component streams.
``BatchNormMaxPool2D``
    ``BatchNorm2d`` followed by ``MaxPool2d`` computed in the commuted order (pool first,
    normalise the pooled map): the same function and gradients, a ninth of the
    normalisation work after a 3/3 pool. STSTNet's training recipe uses it.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from mer_keras.models.heads import l2_regularizer

__all__ = [
    "BatchNormMaxPool2D",
    "ChannelMeanMax",
    "ChannelSlice",
    "OffTANetMHSA",
    "SpatialSoftmax",
    "TorchMaxPooling2D",
    "sinusoidal_position_code",
]


def sinusoidal_position_code(size: int) -> np.ndarray:
    """The fixed 2-D position code P of the Off-TANet paper (Eq. 8-10) as its code builds it.

    ``e_i = sin(1 / 10000 ** (floor(i/2) / size))`` for even ``i`` and ``cos(...)`` for odd
    ``i``; ``P[i, j] = e_i + e_j`` (a symmetric ``size x size`` matrix). Note that the code
    uses ``floor(i/2) / size`` where Eq. 9-10 read ``2i/d``; the code is followed.
    """
    e = np.array(
        [(np.sin if i % 2 == 0 else np.cos)(1.0 / (10000.0 ** ((i // 2) / size))) for i in range(size)],
        dtype=np.float32,
    )
    return (e[:, None] + e[None, :]).astype(np.float32)


@keras.saving.register_keras_serializable(package="mer_keras")
class OffTANetMHSA(keras.layers.Layer):
    """Per-channel multi-head self-attention with a fixed sinusoidal position code.

    Implements Eq. 7 of the Off-TANet paper exactly as the official PyTorch code
    (``MultiHeadSelfAttention`` / ``SelfAttention``; identical to ARFNet's ``ARFMHSA``):

    * each head ``n`` has 1x1 projections (with bias) ``W_q, W_k, W_v: C_in -> d``;
    * for each of the ``d`` output channels ``c`` the ``H x W`` maps ``q_c, k_c, v_c`` are
      treated as matrices: ``logits_c = q_c k_c^T + q_c P^T`` (``position="query"``, the
      default and the paper's form), ``q_c k_c^T + P`` (``position="bias"``, the code's
      ``pos_bias=True`` switch) or ``q_c k_c^T`` (``position=None``, an ablation);
    * ``att_c = softmax`` over all ``H*W`` entries of ``logits_c`` (one softmax per channel);
    * ``out_c = att_c * v_c`` (element-wise, not a matrix product);
    * heads are concatenated along channels (head-major: channel ``n*d + c``).

    Because ``q_c k_c^T`` is ``H x H`` and is multiplied element-wise onto the ``H x W``
    value map, the feature map must be square (``H == W``); ``P`` is ``W x W`` and is
    built from the input width (14 in Off-TANet/ARFNet). ``P`` is a constant, not a weight.

    Weights: ``{q,k,v}_kernel`` of shape ``(heads, C_in, d)`` and ``{q,k,v}_bias`` of shape
    ``(heads, d)`` — i.e. ``3 * heads * (C_in * d + d)`` parameters.

    Args:
        heads: number of heads (4 in both papers).
        head_channels: output channels ``d`` per head (Off-TANet: ``C_in // 4``; ARFNet:
            ``C_out // heads``).
        position: ``"query"``, ``"bias"`` or ``None`` (see above).
        use_bias: projections with bias (the official code: yes).
    """

    def __init__(
        self,
        heads: int = 4,
        head_channels: int = 7,
        position: str | None = "query",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position not in ("query", "bias", None):
            raise ValueError(f"position must be 'query', 'bias' or None, got {position!r}")
        self.heads = int(heads)
        self.head_channels = int(head_channels)
        self.position = position
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        height, width, channels = input_shape[1], input_shape[2], input_shape[3]
        if height is not None and width is not None and height != width:
            raise ValueError(f"OffTANetMHSA needs a square feature map, got {height}x{width}")
        if width is None:
            raise ValueError("OffTANetMHSA needs a known spatial size (the position code is fixed)")
        self._size = int(width)
        self._pos = sinusoidal_position_code(self._size)
        shape = (self.heads, int(channels), self.head_channels)
        for name in ("q", "k", "v"):
            setattr(
                self,
                f"{name}_kernel",
                self.add_weight(
                    name=f"{name}_kernel",
                    shape=shape,
                    initializer=self.kernel_initializer,
                    regularizer=self.kernel_regularizer,
                ),
            )
            if self.use_bias:
                setattr(
                    self,
                    f"{name}_bias",
                    self.add_weight(
                        name=f"{name}_bias",
                        shape=(self.heads, self.head_channels),
                        initializer=self.bias_initializer,
                    ),
                )

    def _project(self, x, name):
        # (B, H, W, C_in) x (n, C_in, d) -> (B, n, d, H, W)
        y = ops.einsum("bhwi,nid->bndhw", x, getattr(self, f"{name}_kernel"))
        if self.use_bias:
            y = y + ops.reshape(getattr(self, f"{name}_bias"), (1, self.heads, self.head_channels, 1, 1))
        shape = ops.shape(y)
        return ops.reshape(y, (shape[0], self.heads * self.head_channels, shape[3], shape[4]))

    def call(self, inputs):
        q = self._project(inputs, "q")  # (B, C, H, W)
        k = self._project(inputs, "k")
        v = self._project(inputs, "v")
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))  # (B, C, H, H)
        if self.position is not None:
            pos = ops.convert_to_tensor(self._pos, dtype=q.dtype)
            if self.position == "query":
                logits = logits + ops.matmul(q, ops.transpose(pos))
            else:
                logits = logits + pos
        shape = ops.shape(logits)
        att = ops.softmax(ops.reshape(logits, (shape[0], shape[1], shape[2] * shape[3])), axis=-1)
        out = ops.reshape(att, shape) * v
        return ops.transpose(out, (0, 2, 3, 1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[2], self.heads * self.head_channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_channels=self.head_channels,
            position=self.position,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
        )
        return config


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


@keras.saving.register_keras_serializable(package="mer_keras")
class TorchMaxPooling2D(keras.layers.Layer):
    """``torch.nn.MaxPool2d(pool_size, strides, padding)`` for channels-last inputs.

    Pads ``padding`` cells of ``-inf`` on each side of H and W, then max-pools with
    ``"valid"`` windows; the output size is ``floor((n + 2p - k) / s) + 1`` as in PyTorch
    (``ceil_mode=False``). With ``padding=0`` this equals ``keras.layers.MaxPooling2D``.
    """

    def __init__(self, pool_size=2, strides=None, padding=0, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides if strides is not None else pool_size)
        self.padding = _pair(padding)
        if any(2 * p > k for p, k in zip(self.padding, self.pool_size)):
            raise ValueError("padding must be at most half the pool size (as in PyTorch)")

    def call(self, inputs):
        ph, pw = self.padding
        x = inputs
        if ph or pw:
            x = ops.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-math.inf)
        return ops.max_pool(x, pool_size=self.pool_size, strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        out = [input_shape[0]]
        for n, k, s, p in zip(input_shape[1:3], self.pool_size, self.strides, self.padding):
            out.append(None if n is None else (n + 2 * p - k) // s + 1)
        return (*out, input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="mer_keras")
class ChannelMeanMax(keras.layers.Layer):
    """Concatenate the channel mean and the channel max: ``(B, H, W, C) -> (B, H, W, 2)``.

    Channel 0 is the mean, channel 1 the max (the order of ``torch.cat([avg, max], 1)`` in
    the Off-TANet code's ``SpatialAttention``), so ported 3x3 kernels line up.
    """

    def call(self, inputs):
        return ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1
        )

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


@keras.saving.register_keras_serializable(package="mer_keras")
class SpatialSoftmax(keras.layers.Layer):
    """Mean over channels, then a softmax over all ``H*W`` positions: ``-> (B, H, W, 1)``."""

    def call(self, inputs):
        m = ops.mean(inputs, axis=-1)  # (B, H, W)
        shape = ops.shape(m)
        att = ops.softmax(ops.reshape(m, (shape[0], shape[1] * shape[2])), axis=-1)
        return ops.reshape(att, (shape[0], shape[1], shape[2], 1))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable(package="mer_keras")
class ChannelSlice(keras.layers.Layer):
    """``x[..., start:stop]`` as a serialisable layer (splits flow components into streams)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, inputs):
        return inputs[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        config = super().get_config()
        config.update(start=self.start, stop=self.stop)
        return config


# ---------------------------------------------------------------------------------------
# Builder helpers shared by off_tanet, arfnet, ststnet and flow_baselines (not layers).
# They translate PyTorch module semantics into Keras layers with stable names.
# ---------------------------------------------------------------------------------------

#: PyTorch BatchNorm2d defaults in Keras terms (eps 1e-5; running-stat momentum 0.1).
TORCH_BN_EPSILON = 1e-5
TORCH_BN_MOMENTUM = 0.9


def model_input(input_tensor, input_shape):
    """``(img_input, model_inputs)`` following keras.applications conventions."""
    if input_tensor is None:
        img_input = keras.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = keras.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor
    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else img_input
    return img_input, inputs


def torch_conv2d(x, filters, kernel_size, *, name, strides=1, padding=0, dilation=1, use_bias=True, l2=0.0):
    """``nn.Conv2d(..., padding=p)`` = ``ZeroPadding2D(p)`` (named ``<name>_pad``) + valid conv ``<name>``."""
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        dilation_rate=dilation,
        use_bias=use_bias,
        kernel_regularizer=l2_regularizer(l2),
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="mer_keras")
class BatchNormMaxPool2D(keras.layers.BatchNormalization):
    """``nn.BatchNorm2d`` then ``nn.MaxPool2d(pool_size, strides, padding)``, fused and exact.

    Batch normalisation is a per-channel affine map ``y = (x - mean) * s + beta`` with
    ``s = gamma / sqrt(var + eps)``: increasing where ``s >= 0`` and decreasing where
    ``s < 0``. So ``maxpool(BN(x)) = BN(sign(s) * maxpool(sign(s) * x))``: the statistics
    are still taken over the *full* input map (training) or are the moving ones
    (inference), as in ``BatchNormalization``, but the affine map and everything downstream
    of it run on the pooled map. The gradients are those of the unfused pair (the pooled
    element is the one the unfused max-pool would pick; ``sign(s)`` is piecewise constant).

    Measured (``experiments/00c_training_throughput.py``, STSTNet, 2-core CPU): see the
    :mod:`mer_keras.training.bench` table. The layer is a ``BatchNormalization`` subclass
    with the same four variables in the same order, so ``bn*`` weights move between the
    fused and the unfused model by layer name; its output has the pooled shape.
    """

    def __init__(self, pool_size=2, strides=None, padding=0, **kwargs):
        kwargs.setdefault("epsilon", TORCH_BN_EPSILON)
        kwargs.setdefault("momentum", TORCH_BN_MOMENTUM)
        if kwargs.get("axis", -1) not in (-1, 3):
            raise ValueError("BatchNormMaxPool2D normalises the channels-last axis only")
        super().__init__(**kwargs)
        self.pool = TorchMaxPooling2D(pool_size, strides, padding, name=f"{self.name}_pool", dtype=self.dtype_policy)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("BatchNormMaxPool2D does not take a mask")
        inputs = ops.cast(inputs, backend_result_dtype(inputs.dtype))
        if training and self.trainable:
            mean, variance = self._moments(inputs, None)
            self.moving_mean.assign(ops.cast(self.moving_mean, inputs.dtype) * self.momentum
                                    + mean * (1.0 - self.momentum))
            self.moving_variance.assign(ops.cast(self.moving_variance, inputs.dtype) * self.momentum
                                        + variance * (1.0 - self.momentum))
        else:
            mean = ops.cast(self.moving_mean, inputs.dtype)
            variance = ops.cast(self.moving_variance, inputs.dtype)
        scale = ops.cast(self.gamma, inputs.dtype) * ops.rsqrt(variance + self.epsilon)
        sign = ops.where(scale < 0, -1.0, 1.0)
        pooled = sign * self.pool(sign * inputs)
        outputs = (pooled - mean) * scale + ops.cast(self.beta, inputs.dtype)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self.pool.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool.pool_size, strides=self.pool.strides, padding=self.pool.padding)
        return config


def backend_result_dtype(dtype) -> str:
    """``float32`` or wider: batch statistics in half precision overflow (as in ``BatchNormalization``)."""
    return keras.backend.result_type(dtype, "float32")


def torch_batch_norm(x, *, name):
    """``nn.BatchNorm2d`` with PyTorch's epsilon and momentum."""
    return keras.layers.BatchNormalization(epsilon=TORCH_BN_EPSILON, momentum=TORCH_BN_MOMENTUM, name=name)(x)


def act(x, activation, *, name):
    """An activation layer; ``activation`` is anything ``keras.layers.Activation`` accepts
    (``"relu"``, ``"leaky_relu"``, ``"swish"``...)."""
    return keras.layers.Activation(activation, name=name)(x)


def off_tanet_stem(x, activation, l2):
    """The stem the Off-TANet and ARFNet official code share: ``nn.Conv2d(3, 8, 7, stride=2,
    padding=3)`` -> activation -> ``BatchNorm2d`` (activation *before* BN), 112 -> 56."""
    x = torch_conv2d(x, 8, 7, strides=2, padding=3, l2=l2, name="conv1_0")
    x = act(x, activation, name="conv1_1")
    return torch_batch_norm(x, name="conv1_2")


def flatten_nchw(x, *, name="flatten"):
    """Flatten in PyTorch's channels-first order (index ``c*H*W + h*W + w``).

    A ``Permute((3, 1, 2))`` (named ``<name>_nchw``) precedes ``Flatten``, so ported dense
    kernels need no row permutation (only the ``(out, in) -> (in, out)`` transpose).
    """
    x = keras.layers.Permute((3, 1, 2), name=f"{name}_nchw")(x)
    return keras.layers.Flatten(name=name)(x)


def classification_top(
    x,
    *,
    include_top,
    pooling,
    classes,
    classifier_activation,
    head,
    hidden_units,
    dropout,
    activation,
    l2,
    prefix="dense",
    torch_dropout=True,
):
    """Flatten (NCHW order) -> [Dense -> activation -> Dropout] * len(hidden_units) -> classes.

    Layer names follow the indices of the PyTorch ``nn.Sequential`` named ``prefix``
    (``dense_0``, ``dense_1`` (activation), ``dense_2`` (dropout), ``dense_3``...); the
    final layer is ``predictions``. ``torch_dropout`` says whether the official Sequential
    holds Dropout modules (it fixes the indices; a Keras Dropout is added only when
    ``dropout > 0``). ``head="svm"`` makes the final layer linear (logits for a
    multi-class margin loss); ``classifier_activation`` applies to ``head="softmax"`` only.
    Without the top, ``pooling`` None/"avg"/"max" returns the feature map / a global pool.
    """
    if head not in ("softmax", "svm"):
        raise ValueError(f"head must be 'softmax' or 'svm', got {head!r}")
    if not include_top:
        if pooling == "avg":
            return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if pooling == "max":
            return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        if pooling is not None:
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
        return x
    x = flatten_nchw(x)
    index = 0
    for units in hidden_units:
        x = keras.layers.Dense(units, kernel_regularizer=l2_regularizer(l2), name=f"{prefix}_{index}")(x)
        x = act(x, activation, name=f"{prefix}_{index + 1}")
        step = 2
        if torch_dropout:
            if dropout:
                x = keras.layers.Dropout(dropout, name=f"{prefix}_{index + 2}")(x)
            step = 3
        elif dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_{index + 1}_dropout")(x)
        index += step
    final_activation = None if head == "svm" else classifier_activation
    return keras.layers.Dense(
        classes, activation=final_activation, kernel_regularizer=l2_regularizer(l2), name="predictions"
    )(x)


def finish_model(inputs, outputs, name, weights):
    """``keras.Model`` + optional weight loading from a local ``.keras`` / ``.weights.h5`` file."""
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.load_weights(str(weights))
    return model


def trainable_params(model) -> int:
    """Number of trainable parameters (the papers' and PyTorch's convention)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
