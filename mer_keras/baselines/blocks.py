"""The block grid shared by the handcrafted descriptors, and per-block histograms.

Block-based descriptors (LBP-TOP, LBP-SIP, HOOF, Bi-WOOF) split the face into a grid of
``rows x cols`` non-overlapping blocks and concatenate one histogram per block, in
row-major block order (top-left block first, then along the top row). Block edges are
``floor(i * n / b)`` for ``i = 0 .. b`` (:func:`block_edges`), so block sizes differ by at
most one pixel and every pixel belongs to exactly one block.
"""

from __future__ import annotations

import numpy as np


def check_blocks(blocks, shape: tuple[int, int]) -> tuple[int, int]:
    """``blocks`` as ``(rows, cols)`` of positive integers no larger than the image ``shape``.

    An integer ``b`` means ``(b, b)``. ``ValueError`` otherwise.
    """
    if isinstance(blocks, (int, np.integer)) and not isinstance(blocks, bool):
        blocks = (int(blocks), int(blocks))
    try:
        rows, cols = (int(b) for b in blocks)
        ok = all(int(b) == b for b in blocks)
    except (TypeError, ValueError):
        raise ValueError(f"blocks must be (rows, cols) positive integers, got {blocks!r}") from None
    if not ok or rows < 1 or cols < 1:
        raise ValueError(f"blocks must be (rows, cols) positive integers, got {blocks!r}")
    if rows > shape[0] or cols > shape[1]:
        raise ValueError(f"a {rows}x{cols} block grid needs an image of at least {rows}x{cols} pixels, got "
                         f"{shape[0]}x{shape[1]}")
    return rows, cols


def block_edges(n: int, b: int) -> np.ndarray:
    """The ``b + 1`` edges of ``b`` blocks over ``n`` pixels: ``floor(i * n / b)``."""
    return (np.arange(b + 1) * int(n)) // int(b)


def block_ids(shape: tuple[int, int], blocks: tuple[int, int], offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Block number (row-major) of every pixel of a ``shape`` window of a larger image.

    The grid ``blocks`` partitions the *full* image; the window starts at pixel ``offset``
    of it and the full image extends ``offset`` pixels beyond the window on every side
    (descriptors that drop a border of ``offset`` pixels, e.g. LBP's radius, pass the
    inner window here). Returns an ``h x w`` int64 array.
    """
    h, w = shape
    oy, ox = offset
    rows = np.searchsorted(block_edges(h + 2 * oy, blocks[0]), np.arange(oy, oy + h), side="right") - 1
    cols = np.searchsorted(block_edges(w + 2 * ox, blocks[1]), np.arange(ox, ox + w), side="right") - 1
    return rows[:, None] * blocks[1] + cols[None, :]


def block_histograms(codes: np.ndarray, ids: np.ndarray, n_blocks: int, n_bins: int, weights=None,
                     *, normalise: bool = True) -> np.ndarray:
    """``n_blocks x n_bins`` histograms of integer ``codes`` grouped by block ``ids``.

    ``codes`` is ``... x h x w`` (leading axes, e.g. time, are pooled) with values in
    ``0 .. n_bins - 1``; ``ids`` is ``h x w`` (:func:`block_ids`); ``weights`` (same shape
    as ``codes``) weigh each vote (default 1). With ``normalise`` each block's histogram
    is divided by its total, so it sums to 1; a block with no mass stays all zero.
    """
    codes = np.asarray(codes)
    ids = np.broadcast_to(ids, codes.shape)
    flat = ids.astype(np.int64).ravel() * n_bins + codes.astype(np.int64).ravel()
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    hist = np.bincount(flat, weights=w, minlength=n_blocks * n_bins).reshape(n_blocks, n_bins).astype(np.float64)
    if normalise:
        total = hist.sum(axis=1, keepdims=True)
        hist = np.divide(hist, total, out=np.zeros_like(hist), where=total > 0)
    return hist
