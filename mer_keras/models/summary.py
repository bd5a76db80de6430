"""Parameter and FLOP summary of the registered builders.

:func:`count_trainable` sums the sizes of the trainable weights (BatchNorm moving mean /
variance excluded) — the convention of the papers and of PyTorch, and the one used by
the parameter anchors (Keras' ``count_params()`` also counts the moving statistics).

FLOPs are computed **analytically** (:func:`count_flops`) as 2 x multiply-accumulates of
the convolutions (incl. depthwise), dense layers and attention matrix products
(Q K^T and A V; for the shared-Q=K=V attention V V^T and A V), walking the layers of the
built model with their static shapes. BatchNorm, activations, pooling, softmax,
normalisation and element-wise operations are not counted (the usual convention of the
papers' "FLOPs"/"MAdds"). The TF profiler (``tf.compat.v1.profiler`` on a frozen concrete
function) was not used: under Keras 3 it silently omits op types (depthwise convolutions
have no registered FLOP statistics, and batched/multi-dimensional matmuls are
inconsistently counted), so its totals are not comparable across architectures.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from mer_keras.models import layers as L


def count_trainable(model: keras.Model) -> int:
    """Number of trainable parameters (sum of trainable weight sizes)."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))


def _prod(shape) -> int:
    return int(np.prod([d for d in shape if d is not None])) if shape else 1


def _shape(t):
    return tuple(t.shape)


def _ghost_macs(gm: L.GhostModule, hw: int, c_in: int) -> int:
    init = math.ceil(gm.filters / gm.ratio)
    primary = hw * gm.kernel_size ** 2 * c_in * init
    cheap = hw * gm.dw_size ** 2 * init * (gm.ratio - 1)
    return primary + cheap


def _layer_macs(layer) -> int:
    """Multiply-accumulates of one layer for a batch of one."""
    if isinstance(layer, keras.Model):
        return sum(_layer_macs(sub) for sub in layer.layers)
    try:
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    except (AttributeError, ValueError):
        return 0
    if isinstance(in_shape, tuple) and in_shape and isinstance(in_shape[0], tuple):
        in_shape = in_shape[0]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:]) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:]) * kh * kw * in_shape[-1] // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return _prod(in_shape[1:-1]) * in_shape[-1] * layer.units
    if isinstance(layer, L.ChannelAttention):
        c = in_shape[-1]
        hidden = max(1, c // layer.ratio)
        return 2 * (c * hidden + hidden * c)
    if isinstance(layer, L.SpatialAttention):
        return _prod(in_shape[1:3]) * layer.kernel_size ** 2 * 2
    if isinstance(layer, L.TransformerEncoder):
        d, f = layer.dim, layer.ffn_dim
        n = in_shape[-2]
        seqs = _prod(in_shape[1:-2])
        tokens = seqs * n
        return tokens * (4 * d * d + 2 * d * f) + seqs * 2 * n * n * d
    if isinstance(layer, L.GhostTransformerEncoder):
        d, f = layer.dim, layer.ffn_dim
        hw = _prod(in_shape[1:3])
        p = layer.patch_size ** 2
        n = hw // p
        ghost = _ghost_macs(layer.attn.v_proj, hw, d) + _ghost_macs(layer.attn.out_proj, hw, d)
        return ghost + p * 2 * n * n * d + hw * 2 * d * f
    if isinstance(layer, L.GhostModule):
        return _ghost_macs(layer, _prod(in_shape[1:3]), in_shape[-1])
    return 0


def count_flops(model: keras.Model) -> int:
    """Analytical FLOPs (= 2 x MACs) for one input; see the module docstring."""
    return 2 * sum(_layer_macs(layer) for layer in model.layers)


def model_summary_table(names=None, classes: int = 3, progress=None):
    """pandas DataFrame: name, input size, trainable params, MACs and FLOPs (analytical, 2 x MACs).

    The layout of the Off-TANet paper's Table 2 (its "Flops" column, measured with a
    PyTorch statistics tool, counts multiply-accumulates: compare it with ``macs``).
    ``names``: registry names (default: every registered builder). Models are built at
    their default input size; ``progress`` is called with each name before it is built.
    """
    import pandas as pd

    from mer_keras.models import registry

    names = registry.available() if names is None else list(names)
    rows = []
    for name in names:
        if progress is not None:
            progress(name)
        model = registry.get(name)(classes=classes)
        shape = tuple(model.input_shape[1:])
        flops = count_flops(model)
        rows.append({"name": name, "input_size": "x".join(str(s) for s in shape),
                     "trainable_params": count_trainable(model), "macs": flops // 2, "flops": flops})
        del model
        keras.backend.clear_session()
    return pd.DataFrame(rows)

__all__ = ["count_trainable", "count_flops", "model_summary_table"]
