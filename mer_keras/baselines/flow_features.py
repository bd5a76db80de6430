"""Optical-flow descriptors: HOOF and Bi-WOOF, per block.

Both take the flow ``(u, v)`` of a clip (the cached TV-L1 flow onset -> apex,
``LOSODataset.from_cache(..., input="flow_stack")`` channels 0 and 1; Bi-WOOF also its
optical strain, channel 2) and return one orientation histogram per block of a grid
(:mod:`mer_keras.baselines.blocks`), concatenated in row-major block order.

Angle convention (image coordinates, x to the right, y *down*, as the flow of
:mod:`mer_keras.preprocess.flow`): a pixel's orientation is ``atan2(v, u)`` taken in
``[0, 2 pi)``, so motion to the right is 0, *down* (``v > 0``) is ``pi / 2``, left is
``pi`` and up is ``3 pi / 2`` (clockwise on screen). With ``B`` bins, bin ``j`` is
centred on ``2 pi j / B`` and covers ``[2 pi (j - 1/2) / B, 2 pi (j + 1/2) / B)``
(wrapping at 0), so the four axis directions fall in the middle of a bin (for ``B = 8``:
right 0, down 2, left 4, up 6). Pixels without motion (magnitude 0) have no orientation
and cast no vote.
"""

from __future__ import annotations

import numpy as np

from .blocks import block_histograms, block_ids, check_blocks


def _check_field(a, name: str, shape=None) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an H x W array, got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array, got dtype {arr.dtype}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} (the shape of u)")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds {int(arr.size - np.isfinite(arr).sum())} NaN or infinite value(s)")
    return arr


def _check_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != shape:
        raise ValueError(f"mask has shape {m.shape}, expected {shape} (the shape of u)")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ValueError("mask must be boolean (True = pixel used) or hold only 0 and 1")
        m = m.astype(bool)
    return m


def _check_bins(bins) -> int:
    try:
        ok = not isinstance(bins, bool) and int(bins) == bins and int(bins) >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    return int(bins)


def flow_orientation(u, v) -> np.ndarray:
    """Orientation ``atan2(v, u)`` in ``[0, 2 pi)`` (image coordinates, y down; see the module docstring)."""
    angle = np.arctan2(np.asarray(v, dtype=np.float64), np.asarray(u, dtype=np.float64))
    return np.mod(angle, 2 * np.pi)


def orientation_bin(angle, bins: int) -> np.ndarray:
    """Bin index of each angle: bin ``j`` is centred on ``2 pi j / bins`` (int64)."""
    bins = _check_bins(bins)
    width = 2 * np.pi / bins
    return (np.floor(np.mod(np.asarray(angle, dtype=np.float64), 2 * np.pi) / width + 0.5).astype(np.int64)) % bins


def _orientation_histograms(u: np.ndarray, v: np.ndarray, keep: np.ndarray, bins: int, grid, weighted: bool,
                            min_magnitude: float) -> np.ndarray:
    magnitude = np.hypot(u, v)
    used = keep & (magnitude > min_magnitude)
    codes = orientation_bin(flow_orientation(u, v), bins)
    weights = np.where(used, magnitude if weighted else 1.0, 0.0)
    ids = block_ids(u.shape, grid)
    return block_histograms(codes, ids, grid[0] * grid[1], bins, weights=weights)


def hoof(u, v, mask=None, bins: int = 8, blocks=(5, 5), magnitude_weighted: bool = True,
         min_magnitude: float = 0.0) -> np.ndarray:
    """HOOF: histograms of oriented optical flow, one per block.

    Reference: HOOF, "Histograms of oriented optical flow and Binet-Cauchy kernels on
    nonlinear dynamical systems for the recognition of human actions" (IEEE CVPR 2009), a
    long-standing optical-flow baseline of micro-expression recognition. Differences from
    that paper, as MER baselines use it: orientations binned over the full circle (the
    paper folds left and right motion together, as a mirror-invariant action descriptor;
    for faces the direction matters), one histogram per block instead of one per frame,
    and the flow is the clip's single onset -> apex field, not a frame-to-frame sequence.

    Each pixel with magnitude ``> min_magnitude`` (inside ``mask``) votes for the bin of
    its orientation (module docstring: image coordinates, bin ``j`` centred on
    ``2 pi j / bins``) with weight = its magnitude (``magnitude_weighted``, the default)
    or 1. Each block's histogram is normalised to sum 1; a block without motion is all
    zero.

    Args:
        u, v: ``H x W`` horizontal and vertical flow in pixels (``v > 0`` = down).
        mask: optional ``H x W`` boolean, True where the pixel counts (e.g. the face mask).
        bins: orientation bins (>= 2).
        blocks: ``(rows, cols)`` block grid (an int ``b`` = ``(b, b)``).
        magnitude_weighted: votes weighted by the flow magnitude (else counted).
        min_magnitude: pixels moving this much or less cast no vote (>= 0).

    Returns:
        float64 vector of length ``rows * cols * bins`` (row-major blocks).
    """
    u = _check_field(u, "u")
    v = _check_field(v, "v", u.shape)
    keep = _check_mask(mask, u.shape)
    bins = _check_bins(bins)
    grid = check_blocks(blocks, u.shape)
    if not (np.isfinite(min_magnitude) and min_magnitude >= 0):
        raise ValueError(f"min_magnitude must be finite and >= 0, got {min_magnitude!r}")
    return _orientation_histograms(u, v, keep, bins, grid, bool(magnitude_weighted), float(min_magnitude)).ravel()


def bi_woof(u, v, strain, mask=None, blocks=(5, 5), bins: int = 8) -> np.ndarray:
    """Bi-WOOF: bi-weighted oriented optical flow, one weighted histogram per block.

    Reference: Bi-WOOF, "Less is more: micro-expression recognition from video using apex
    frame" (Signal Processing: Image Communication 2018), computed on the flow between the
    onset and the apex frame. Two weights:

    * local -- each pixel votes for its orientation bin with its flow magnitude (the
      magnitude-weighted :func:`hoof` histogram of the block, normalised to sum 1);
    * global -- the block's histogram is multiplied by the block's mean optical-strain
      magnitude ``mean(|strain|)`` over its pixels (inside ``mask``), so blocks that barely
      deform count little and a block with zero strain contributes a zero histogram.

    Args:
        u, v: ``H x W`` flow onset -> apex in pixels (image coordinates, ``v > 0`` = down).
        strain: ``H x W`` optical-strain magnitude (e.g. the cache's strain channel).
        mask: optional ``H x W`` boolean, True where the pixel counts.
        blocks: ``(rows, cols)`` block grid.
        bins: orientation bins (>= 2; bin ``j`` centred on ``2 pi j / bins``).

    Returns:
        float64 vector of length ``rows * cols * bins`` (row-major blocks), block ``b``'s
        histogram times its mean strain.
    """
    u = _check_field(u, "u")
    v = _check_field(v, "v", u.shape)
    s = np.abs(_check_field(strain, "strain", u.shape))
    keep = _check_mask(mask, u.shape)
    bins = _check_bins(bins)
    grid = check_blocks(blocks, u.shape)
    local = _orientation_histograms(u, v, keep, bins, grid, True, 0.0)
    ids = block_ids(u.shape, grid)
    n_blocks = grid[0] * grid[1]
    strain_sum = np.bincount(ids.ravel(), weights=np.where(keep, s, 0.0).ravel(), minlength=n_blocks)
    pixels = np.bincount(ids.ravel(), weights=keep.ravel().astype(np.float64), minlength=n_blocks)
    global_weight = np.divide(strain_sum, pixels, out=np.zeros(n_blocks), where=pixels > 0)
    return (local * global_weight[:, None]).ravel()
