"""Attention-map analysis of Off-TANet (Zhang, Liu, Zhou 2021, Sec. 4.4: Fig. 5 and Table 5).

* :func:`attention_maps` -- the spatial-attention map (Eq. 5, one ``h x w`` map per clip)
  and the per-channel self-attention maps (Eq. 7, ``h x w x C``, each a softmax over its
  ``h*w`` entries) of a trained Off-TANet model's triplet-attention block, for a batch of
  inputs. The spatial map is a layer output (``<block>_spa_sigmoid``); the self-attention
  weights live inside :class:`~mer_keras.models.flow_layers.OffTANetMHSA` and are
  recomputed from that layer's input (``<block>_sa``) and weights exactly as its ``call``
  does (the layer's output is ``maps * v``).
* :func:`figure5_maps` -- the maps as the authors' visualisation code prepares them for
  Fig. 5: the spatial map resized to the input size (bilinear, OpenCV's default); the
  self-attention maps aggregated by a channel-wise maximum, blurred (3 x 3 Gaussian),
  resized, min-max normalised and multiplied on the min-max-normalised spatial map.
* :func:`soft_count` (Eq. 13) and :func:`hoyer_sparseness` (Eq. 14) -- the paper's two
  sparseness indicators; :func:`sparseness` applies both to a batch of maps.
* :func:`plot_attention_maps` -- the Fig. 5 figure of one clip (apex frame, flow image,
  spatial attention, self-attention x spatial attention), built on a bare
  ``matplotlib.figure.Figure`` (no pyplot state; safe under the Agg backend).

Which maps Table 5 measures is our reading of the text (the released code has no Table-5
cell): the spatial map as the sigmoid values resized to the input size (a min-max
normalised map has its minimum at 0, which would give ``Soft_0.01 >= 1`` where the paper
reports 0), and "the attention map after the self-attention enhancement" as the Fig. 5
product map of :func:`figure5_maps`; each indicator is computed per test clip and averaged
over the fold's clips ("the mean value of these two indicators").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SOFT_THRESHOLD = 0.01
"""The threshold ``t`` of Table 5's ``Soft_0.01`` (Eq. 13)."""


class AttentionMaps(NamedTuple):
    """The attention maps of one batch: ``spatial`` ``(N, h, w)`` in (0, 1) (Eq. 5, the
    sigmoid map multiplied on every channel) and ``self_attention`` ``(N, h, w, C)`` (Eq. 7,
    channel ``c`` of clip ``i`` sums to 1 over its ``h*w`` entries)."""

    spatial: np.ndarray
    self_attention: np.ndarray


# ----------------------------------------------------------------------------- sparseness (Eqs. 13-14)


def _as_maps(maps, name: str) -> tuple[np.ndarray, bool]:
    """``(batch (N, n) float64, single)``: one map (1-D or 2-D) or a batch (>= 3-D, axis 0)."""
    arr = np.asarray(maps)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: maps must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError(f"{name}: maps must be a map (1-D or 2-D) or a batch of maps (>= 3-D), got a scalar")
    if arr.size == 0:
        raise ValueError(f"{name}: maps are empty (shape {arr.shape})")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: maps hold {int(arr.size - np.isfinite(arr).sum())} NaN or infinite value(s)")
    single = arr.ndim <= 2
    flat = arr.reshape(1, -1) if single else arr.reshape(arr.shape[0], -1)
    return flat, single


def soft_count(maps, threshold: float = SOFT_THRESHOLD):
    """Soft 0-norm ``Soft_t(x) = |{i : x_i < t}|`` (Off-TANet paper, Eq. 13; Table 5 uses ``t = 0.01``).

    ``maps``: one map (1-D or 2-D array) -> an ``int``; or a batch of maps (>= 3-D, maps
    along axis 0, each flattened) -> an ``int`` array of length N. Raises ``TypeError`` for
    a non-numeric array and ``ValueError`` for a scalar, an empty array, NaN/inf values or a
    non-finite threshold.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    flat, single = _as_maps(maps, "soft_count")
    counts = (flat < float(threshold)).sum(axis=1)
    return int(counts[0]) if single else counts.astype(np.int64)


def hoyer_sparseness(maps):
    """Hoyer sparseness (Hoyer 2004; Off-TANet paper, Eq. 14):
    ``(sqrt(n) - sum|x_i| / sqrt(sum x_i^2)) / (sqrt(n) - 1)``, ``n`` = entries of the map.

    0 for a map whose entries all have the same magnitude, 1 for a map with a single
    non-zero entry. ``maps``: one map (1-D or 2-D) -> a ``float``; a batch (>= 3-D, maps
    along axis 0) -> a float array of length N. An all-zero map has no defined value (0/0)
    and gives NaN. Raises ``ValueError`` for a scalar, an empty array, a map of one entry
    (``n = 1``) or NaN/inf values, ``TypeError`` for a non-numeric array.
    """
    flat, single = _as_maps(maps, "hoyer_sparseness")
    n = flat.shape[1]
    if n < 2:
        raise ValueError("hoyer_sparseness: a map needs at least 2 entries (the denominator sqrt(n) - 1 is 0 for n = 1)")
    l1 = np.abs(flat).sum(axis=1)
    l2 = np.sqrt((flat ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (np.sqrt(n) - l1 / l2) / (np.sqrt(n) - 1.0)
    value = np.where(l2 > 0, np.clip(value, 0.0, 1.0), np.nan)
    return float(value[0]) if single else value


def sparseness(maps, threshold: float = SOFT_THRESHOLD) -> dict[str, np.ndarray]:
    """Both Table-5 indicators of a batch of maps ``(N, h, w)``: ``{"soft": (N,), "hoyer": (N,)}``."""
    arr = np.asarray(maps)
    if arr.ndim != 3:
        raise ValueError(f"sparseness: expected a batch of maps (N, h, w), got shape {arr.shape}")
    return {"soft": soft_count(arr, threshold), "hoyer": hoyer_sparseness(arr)}


# ----------------------------------------------------------------------------- maps of a model


def _block_layers(model, block: str):
    from mer_keras.models.flow_layers import OffTANetMHSA

    names = {layer.name for layer in model.layers}
    spatial, mhsa = f"{block}_spa_sigmoid", f"{block}_sa"
    if spatial not in names or mhsa not in names:
        raise ValueError(f"model {model.name!r} has no triplet-attention block {block!r} (layers {spatial!r} and "
                         f"{mhsa!r}); build Off-TANet with block='triplet' (enhance_all_blocks=True adds 'res1', 'res2')")
    layer = model.get_layer(mhsa)
    if not isinstance(layer, OffTANetMHSA):
        raise ValueError(f"layer {mhsa!r} is a {type(layer).__name__}, not an OffTANetMHSA")
    return model.get_layer(spatial), layer


def _self_attention_weights(layer, x: np.ndarray) -> np.ndarray:
    """The per-channel softmax maps of ``OffTANetMHSA`` ``layer`` on its input ``x`` (N, H, W, C_in) -> (N, H, W, C)."""
    from keras import ops

    from mer_keras.models.flow_layers import sinusoidal_position_code

    def project(name):
        kernel = ops.convert_to_numpy(getattr(layer, f"{name}_kernel")).astype(np.float64)  # (heads, C_in, d)
        y = np.einsum("bhwi,nid->bndhw", x, kernel)
        if layer.use_bias:
            y = y + ops.convert_to_numpy(getattr(layer, f"{name}_bias")).astype(np.float64)[None, :, :, None, None]
        n, heads, d, h, w = y.shape
        return y.reshape(n, heads * d, h, w)  # channel = head * d + c, as the layer concatenates heads

    q, k = project("q"), project("k")
    logits = q @ np.swapaxes(k, -1, -2)
    if layer.position is not None:
        pos = sinusoidal_position_code(x.shape[2]).astype(np.float64)
        logits = logits + (q @ pos.T if layer.position == "query" else pos)
    n, c, h, w = logits.shape
    flat = logits.reshape(n, c, h * w)
    flat = np.exp(flat - flat.max(axis=-1, keepdims=True))
    att = (flat / flat.sum(axis=-1, keepdims=True)).reshape(n, c, h, w)
    return np.transpose(att, (0, 2, 3, 1)).astype(np.float32)


def attention_maps(model, x, *, block: str = "eres", batch_size: int = 64) -> AttentionMaps:
    """The spatial- and self-attention maps of an Off-TANet model (paper Eqs. 5 and 7) on inputs ``x``.

    ``model``: a :func:`mer_keras.models.off_tanet.OffTANet` with ``block="triplet"``;
    ``block``: its triplet-attention block (``"eres"``, the paper's model; ``"res1"`` /
    ``"res2"`` with ``enhance_all_blocks=True``). ``x``: ``(N, H, W, C)`` as the model reads
    it (the same normalisation as in training). The maps are read in inference mode (batch
    normalisation with its moving statistics) through a Keras sub-model over the block's
    spatial-attention output and self-attention input. Returns :class:`AttentionMaps`:
    ``spatial`` ``(N, h, w)`` and ``self_attention`` ``(N, h, w, C)`` (``h = w = H / 8``
    for ``"eres"``; ``C = 28`` in the paper's model).
    """
    import keras

    x = np.asarray(x)
    expected = tuple(model.input_shape[1:])
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"x must be a batch shaped (N, {', '.join(map(str, expected))}) for model {model.name!r}, "
                         f"got {x.shape}")
    if len(x) == 0:
        raise ValueError("x holds no samples")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values")
    spatial_layer, mhsa = _block_layers(model, block)
    probe = keras.Model(model.input, [spatial_layer.output, mhsa.input], name=f"{model.name}_{block}_attention")
    spatial, self_att = [], []
    for start in range(0, len(x), int(batch_size)):
        spa, features = probe(x[start:start + int(batch_size)], training=False)
        spatial.append(keras.ops.convert_to_numpy(spa)[..., 0])
        self_att.append(_self_attention_weights(mhsa, keras.ops.convert_to_numpy(features).astype(np.float64)))
    return AttentionMaps(np.concatenate(spatial).astype(np.float32), np.concatenate(self_att))


# ----------------------------------------------------------------------------- Fig. 5 processing


def _minmax(maps: np.ndarray) -> np.ndarray:
    """Each map scaled to [0, 1] (the authors' ``norm``); a constant map becomes zeros."""
    lo = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 0, (maps - lo) / np.where(span > 0, span, 1.0), 0.0)


def figure5_maps(maps: AttentionMaps, size: int, *, blur: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(spatial, self_map)``, both ``(N, size, size)``, prepared as the paper's Fig. 5.

    ``spatial``: the sigmoid map resized to ``size`` (bilinear), values as the network
    computes them (the map Table 5 calls "spatial attention"). ``self_map``: the
    self-attention maps aggregated by a channel-wise maximum, blurred with a 3 x 3 Gaussian
    (``blur``), resized, min-max normalised and multiplied on the min-max-normalised resized
    spatial map -- the authors' visualisation code; "the attention map after the
    self-attention enhancement" of Table 5. ``size`` is the network's input size (112 in
    the paper: "The attention maps are firstly resized to 112 x 112").
    """
    import cv2

    spatial = np.asarray(maps.spatial, dtype=np.float32)
    self_att = np.asarray(maps.self_attention, dtype=np.float32)
    if spatial.ndim != 3 or self_att.ndim != 4 or self_att.shape[:3] != spatial.shape:
        raise ValueError(f"expected spatial (N, h, w) and self_attention (N, h, w, C) of the same clips, got "
                         f"{spatial.shape} and {self_att.shape}")
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    size = int(size)

    def resize(m):
        return cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)

    spatial_big = np.stack([resize(m) for m in spatial])
    peak = self_att.max(axis=-1)
    if blur:
        peak = np.stack([cv2.GaussianBlur(m, (3, 3), 0) for m in peak])
    self_big = np.stack([resize(m) for m in peak])
    return spatial_big.astype(np.float32), (_minmax(spatial_big) * _minmax(self_big)).astype(np.float32)


# ----------------------------------------------------------------------------- Fig. 5 figure


def plot_attention_maps(apex, flow_image, spatial, self_map, *, title: str | None = None, alpha: float = 0.5):
    """The Fig. 5 figure of one clip: a ``matplotlib.figure.Figure`` with four panels.

    ``apex``: the grey apex frame ``(S, S)`` (or ``None``: the flow image is the background);
    ``flow_image``: the ``(S, S, 3)`` flow image (u, v, third channel) or ``None``;
    ``spatial`` / ``self_map``: ``(S, S)`` maps of :func:`figure5_maps`, shown min-max
    normalised over the apex frame with the ``hot`` colour map (as the authors' code).
    Built without pyplot (nothing global, safe under Agg): save it with ``fig.savefig``.
    """
    from matplotlib.figure import Figure

    spatial = np.asarray(spatial, dtype=np.float64)
    self_map = np.asarray(self_map, dtype=np.float64)
    if spatial.ndim != 2 or self_map.shape != spatial.shape:
        raise ValueError(f"spatial and self_map must be two maps of one shape (S, S), got {spatial.shape} and "
                         f"{self_map.shape}")
    if apex is None and flow_image is None:
        raise ValueError("give the apex frame, the flow image or both")
    background = np.asarray(apex if apex is not None else flow_image)

    panels = []
    if apex is not None:
        panels.append(("apex frame", np.asarray(apex), None))
    if flow_image is not None:
        panels.append(("flow image", np.asarray(flow_image), None))
    panels.append(("spatial attention", background, _minmax(spatial[None])[0]))
    panels.append(("self-attention x spatial", background, _minmax(self_map[None])[0]))
    fig = Figure(figsize=(3.0 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (name, image, overlay) in zip(np.atleast_1d(axes), panels):
        shown = image.astype(np.float64)
        if shown.max() > shown.min():
            shown = (shown - shown.min()) / (shown.max() - shown.min())
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
        if overlay is not None:
            extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
            im = ax.imshow(overlay, cmap="hot", alpha=alpha, vmin=0, vmax=1, extent=extent)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["AttentionMaps", "SOFT_THRESHOLD", "attention_maps", "figure5_maps", "hoyer_sparseness",
           "plot_attention_maps", "soft_count", "sparseness"]
