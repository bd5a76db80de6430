"""Dynamic-texture descriptors of a grey frame stack: LBP-TOP and LBP-SIP.

Both take a ``T x H x W`` grey stack (the aligned frames onset..apex of a prepared cache,
``LOSODataset.from_cache(..., input="frames")``) and return one normalised histogram per
block and plane, concatenated (:mod:`mer_keras.baselines.blocks` for the block grid).
Local binary patterns are computed with scikit-image's
:func:`skimage.feature.local_binary_pattern` on 2-D slices of the stack.

Conventions shared by both:

* a neighbour's bit is 1 when its grey value is ``>=`` the centre's (scikit-image's
  comparison), so a constant region gives the all-ones code;
* only *interior* voxels are coded: those whose whole neighbourhood lies inside the stack
  (``t`` in ``[Rt, T - Rt)``, ``y`` in ``[Ry, H - Ry)``, ``x`` in ``[Rx, W - Rx)`` with
  each radius rounded up), the border handling of the LBP-TOP reference construction;
  neighbours may lie in the next block, the voxel itself decides its block;
* each block-plane histogram is divided by its number of voxels (it sums to 1);
* ``n_frames`` first resamples the stack in time to a fixed length by linear
  interpolation, rounded to whole grey levels (:func:`resample_frames`). MER baselines
  normalise clip length with the temporal interpolation model (TIM; "TIM10" = 10 frames in
  the spontaneous micro-expression LBP-TOP baseline, ICCV 2011); plain linear
  interpolation stands in for TIM's graph embedding here. Onset..apex stacks are often
  shorter than the ``2 * Rt + 1 = 9`` frames that ``Rt = 4`` needs.
"""

from __future__ import annotations

import math

import numpy as np

from .blocks import block_histograms, block_ids, check_blocks

LBP_METHODS = ("default", "uniform", "nri_uniform")
"""scikit-image LBP mappings accepted here (see :func:`lbp_bins`)."""


def lbp_bins(points: int, method: str) -> int:
    """Number of distinct codes of scikit-image's ``method`` with ``points`` neighbours.

    ``"default"``: all ``2 ** P`` patterns; ``"nri_uniform"``: the ``P (P - 1) + 3``
    uniform patterns, not rotation invariant (59 for P = 8: the "u2" mapping of LBP-TOP);
    ``"uniform"``: the ``P + 2`` rotation-invariant uniform patterns ("riu2").
    """
    if method not in LBP_METHODS:
        raise ValueError(f"method must be one of {LBP_METHODS}, got {method!r}")
    p = int(points)
    return {"default": 2 ** p, "nri_uniform": p * (p - 1) + 3, "uniform": p + 2}[method]


# ----------------------------------------------------------------------------- validation


def check_frames(frames, name: str = "frames") -> np.ndarray:
    """``frames`` as a ``T x H x W`` real array (a trailing channel axis of size 1 is dropped)."""
    a = np.asarray(frames)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"{name} must be a T x H x W grey stack, got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer or float grey levels, got dtype {a.dtype}")
    if min(a.shape) < 1:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int(a.size - np.isfinite(a).sum())} NaN or infinite value(s)")
    return a


def _positive_int(value, name: str) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _radii(radii) -> tuple[float, float, float]:
    try:
        rx, ry, rt = (float(r) for r in radii)
    except (TypeError, ValueError):
        raise ValueError(f"radii must be (Rx, Ry, Rt), got {radii!r}") from None
    if not all(math.isfinite(r) and r > 0 for r in (rx, ry, rt)):
        raise ValueError(f"radii must be finite and > 0, got {radii!r}")
    return rx, ry, rt


def _points(points) -> tuple[int, int, int]:
    if isinstance(points, (int, np.integer)):
        points = (points,) * 3
    try:
        values = tuple(points)
    except TypeError:
        raise ValueError(f"points must be (P_xy, P_xt, P_yt), got {points!r}") from None
    if len(values) != 3:
        raise ValueError(f"points must be (P_xy, P_xt, P_yt), got {points!r}")
    out = tuple(_positive_int(p, "points") for p in values)
    if min(out) < 2:
        raise ValueError(f"points must be >= 2 per plane, got {points!r}")
    return out


# ----------------------------------------------------------------------------- helpers


def resample_frames(frames, n_frames: int) -> np.ndarray:
    """The stack linearly interpolated in time to ``n_frames`` frames (first and last kept).

    Frame ``i`` of the result samples time ``i * (T - 1) / (n_frames - 1)`` of the input.
    Integer input is rounded to whole grey levels and keeps its dtype (so equal
    neighbours stay exactly equal for the LBP comparisons); float input stays float64. A
    single-frame stack is repeated.
    """
    a = check_frames(frames)
    n = _positive_int(n_frames, "n_frames")
    t = a.shape[0]
    if t == 1:
        return np.repeat(a, n, axis=0)
    pos = np.linspace(0.0, t - 1, n)
    lo = np.minimum(np.floor(pos).astype(np.int64), t - 2)
    w = (pos - lo)[:, None, None]
    out = (1.0 - w) * a[lo].astype(np.float64) + w * a[lo + 1].astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        return np.rint(out).astype(a.dtype)
    return out


def _stretch(slices: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Linear up-sampling by the integer ``k`` along ``axis``, every value multiplied by ``k``.

    Sample ``k * i + m`` is ``(k - m) * a[i] + m * a[i + 1]``: the linear interpolation at
    ``i + m / k`` times ``k``, exact in integer arithmetic. (Multiplying every grey level
    by the same positive ``k`` changes no LBP comparison.)
    """
    a = np.moveaxis(slices, axis, -1)
    n = a.shape[-1]
    out = np.empty((*a.shape[:-1], k * (n - 1) + 1), dtype=a.dtype)
    for m in range(k):
        out[..., m: k * (n - 1): k] = (k - m) * a[..., :-1] + m * a[..., 1:]
    out[..., -1] = k * a[..., -1]
    return np.moveaxis(out, -1, axis)


def plane_codes(slices: np.ndarray, row_radius: float, col_radius: float, points: int, method: str) -> np.ndarray:
    """LBP codes of a stack of 2-D slices ``S x A x B`` with an (elliptical) neighbourhood.

    The ``points`` neighbours of a pixel lie on the ellipse with semi-axis ``row_radius``
    along the slice's rows (axis 1) and ``col_radius`` along its columns (axis 2), sampled
    bilinearly. scikit-image samples a circle (one radius), so when the radii differ the
    axis with the smaller radius is first up-sampled by the integer ratio ``k`` of the two
    (:func:`_stretch`; linear interpolation on the up-sampled grid equals bilinear
    interpolation on the original one), the circle of the larger radius is used, and the
    codes are read back at every ``k``-th sample. The ratio must therefore be an integer
    (``ValueError`` otherwise). Slices are coded in a single call, stacked along the rows;
    codes are only meaningful where the neighbourhood stays inside the slice (callers keep
    those). Returns ``S x A x B`` float64 codes.
    """
    from skimage.feature import local_binary_pattern

    s = np.asarray(slices)
    s = s.astype(np.int64) if np.issubdtype(s.dtype, np.integer) else s.astype(np.float64)
    radius, k_row, k_col = float(row_radius), 1, 1
    if row_radius != col_radius:
        big, small = max(row_radius, col_radius), min(row_radius, col_radius)
        k = round(big / small)
        if abs(big / small - k) > 1e-9:
            raise ValueError(f"the radii of one plane must be equal or integer multiples of each other (scikit-image "
                             f"samples a circle; the ellipse is made a circle by integer up-sampling), got "
                             f"{row_radius} and {col_radius}")
        radius = big
        if row_radius < col_radius:
            s, k_row = _stretch(s, 1, k), k
        else:
            s, k_col = _stretch(s, 2, k), k
    n, a, b = s.shape
    codes = local_binary_pattern(s.reshape(n * a, b), int(points), radius, method).reshape(n, a, b)
    return codes[:, ::k_row, ::k_col]


def _margins(frames: np.ndarray, rt: float, ry: float, rx: float, what: str) -> tuple[int, int, int]:
    mt, my, mx = (math.ceil(r - 1e-9) for r in (rt, ry, rx))
    t, h, w = frames.shape
    if t < 2 * mt + 1:
        raise ValueError(f"{what} with temporal radius {rt:g} needs at least {2 * mt + 1} frames, got {t}; "
                         "resample the stack with n_frames=...")
    if h < 2 * my + 1 or w < 2 * mx + 1:
        raise ValueError(f"{what} with radii (x {rx:g}, y {ry:g}) needs frames of at least {2 * my + 1}x{2 * mx + 1} "
                         f"pixels, got {h}x{w}")
    return mt, my, mx


def _check_block_coverage(shape: tuple[int, int], blocks: tuple[int, int], margins: tuple[int, int], what: str):
    ids = block_ids((shape[0] - 2 * margins[0], shape[1] - 2 * margins[1]), blocks, margins)
    empty = sorted(set(range(blocks[0] * blocks[1])) - set(np.unique(ids).tolist()))
    if empty:
        raise ValueError(f"{what}: block(s) {empty[:5]} of the {blocks[0]}x{blocks[1]} grid hold no interior pixel "
                         f"of {shape[0]}x{shape[1]} frames (border {margins[0]}x{margins[1]}); use fewer blocks")
    return ids


# ----------------------------------------------------------------------------- descriptors


def lbp_top(frames, blocks=(5, 5), radii=(1, 1, 4), points=(8, 8, 8), method: str = "nri_uniform",
            n_frames: int | None = None) -> np.ndarray:
    """LBP-TOP: local binary patterns on three orthogonal planes, per block.

    Reference: LBP-TOP, "Dynamic texture recognition using local binary patterns with an
    application to facial expressions" (IEEE TPAMI 2007); for micro-expressions the
    spontaneous micro-expression recognition baseline (ICCV 2011) and the MEGC2019
    challenge baseline (IEEE FG 2019: 5 x 5 blocks, radii 1, 1, 4).

    For every interior voxel ``(t, y, x)`` (see the module docstring) three codes are
    computed: on the XY plane (frame ``t``), on the XT plane (row ``y`` over time) and on
    the YT plane (column ``x`` over time). Each block of the ``blocks`` grid gets one
    histogram per plane over its interior voxels of *all* frames, each normalised to sum 1.

    Radii ``(Rx, Ry, Rt)`` map onto the planes as in the reference construction: XY uses
    ``Rx`` along x and ``Ry`` along y, XT ``Rx`` along x and ``Rt`` along t, YT ``Ry``
    along y and ``Rt`` along t. The reference samples an ellipse when a plane's two
    radii differ (XT and YT with ``Rt = 4``); scikit-image samples a circle, so the axis
    of the smaller radius is up-sampled by the integer ratio first (:func:`plane_codes`),
    which reproduces the elliptical bilinear sampling exactly; radius ratios that are not
    integers are rejected. ``points`` = ``(P_xy, P_xt, P_yt)`` neighbours per plane.

    Args:
        frames: ``T x H x W`` grey stack (uint8 as cached, any integer or float type;
            ``T x H x W x 1`` accepted). Integer grey levels are recommended (scikit-image
            warns that float LBP is sensitive to rounding).
        blocks: ``(rows, cols)`` block grid over the full frame (an int ``b`` = ``(b, b)``).
        radii: ``(Rx, Ry, Rt)`` > 0.
        points: neighbours per plane ``(P_xy, P_xt, P_yt)`` (an int = the same for all).
        method: ``"nri_uniform"`` (default; the 59-bin uniform "u2" mapping for P = 8, as in
            the reference), ``"uniform"`` (rotation-invariant uniform, ``P + 2`` bins) or
            ``"default"`` (``2 ** P`` bins); see :func:`lbp_bins`.
        n_frames: resample the stack to this many frames first (:func:`resample_frames`).

    Returns:
        float64 vector of length ``rows * cols * (bins_xy + bins_xt + bins_yt)``
        (``rows * cols * 3 * 59`` for the defaults): block by block in row-major order,
        within a block the XY, then the XT, then the YT histogram.
    """
    a = check_frames(frames)
    if n_frames is not None:
        a = resample_frames(a, n_frames)
    rx, ry, rt = _radii(radii)
    p_xy, p_xt, p_yt = _points(points)
    bins = [lbp_bins(p, method) for p in (p_xy, p_xt, p_yt)]
    grid = check_blocks(blocks, a.shape[1:])
    mt, my, mx = _margins(a, rt, ry, rx, "LBP-TOP")
    t, h, w = a.shape
    ids = _check_block_coverage((h, w), grid, (my, mx), "LBP-TOP")
    n_blocks = grid[0] * grid[1]

    xy = plane_codes(a[mt: t - mt], ry, rx, p_xy, method)[:, my: h - my, mx: w - mx]
    xt = plane_codes(a[:, my: h - my, :].transpose(1, 0, 2), rt, rx, p_xt, method)  # (y, t, x)
    xt = xt[:, mt: t - mt, mx: w - mx].transpose(1, 0, 2)
    yt = plane_codes(a[:, :, mx: w - mx].transpose(2, 0, 1), rt, ry, p_yt, method)  # (x, t, y)
    yt = yt[:, mt: t - mt, my: h - my].transpose(1, 2, 0)
    hists = [block_histograms(codes, ids, n_blocks, n) for codes, n in zip((xy, xt, yt), bins)]
    return np.concatenate(hists, axis=1).ravel()


def lbp_sip(frames, blocks=(5, 5), radius: float = 1, temporal_radius: int = 1,
            n_frames: int | None = None) -> np.ndarray:
    """LBP-SIP: LBP with six intersection points, per block.

    Reference: LBP-SIP, "LBP with six intersection points: reducing redundant information in
    LBP-TOP for micro-expression recognition" (ACCV 2014). With four neighbours per plane,
    the three LBP-TOP circles meet in six distinct points: the four spatial neighbours
    (right, up, left, down at ``radius``) and the two temporal ones (the same pixel
    ``temporal_radius`` frames before and after). LBP-SIP codes the four spatial points
    as one 4-bit pattern (16 bins; scikit-image ``P=4``, ``"default"`` mapping: bit 0
    right, 1 up, 2 left, 3 down) and the two temporal points as one 2-bit pattern
    (4 bins: bit 0 previous frame, bit 1 next frame, each ``>=`` the centre), and
    concatenates the two histograms.

    Args:
        frames: ``T x H x W`` grey stack (see :func:`lbp_top`).
        blocks: ``(rows, cols)`` block grid.
        radius: spatial radius (the four points are axis-aligned, so any radius is exact
            on the pixel grid only when it is an integer; others are interpolated).
        temporal_radius: frames between the centre and its temporal neighbours (integer).
        n_frames: resample the stack to this many frames first.

    Returns:
        float64 vector of length ``rows * cols * 20``: per block (row-major) the
        16-bin spatial histogram, then the 4-bin temporal histogram, each summing to 1.
    """
    from skimage.feature import local_binary_pattern

    a = check_frames(frames)
    if n_frames is not None:
        a = resample_frames(a, n_frames)
    r = float(radius)
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"radius must be finite and > 0, got {radius!r}")
    rt = _positive_int(temporal_radius, "temporal_radius")
    grid = check_blocks(blocks, a.shape[1:])
    mt, my, mx = _margins(a, rt, r, r, "LBP-SIP")
    t, h, w = a.shape
    ids = _check_block_coverage((h, w), grid, (my, mx), "LBP-SIP")
    n_blocks = grid[0] * grid[1]

    centre = a[mt: t - mt]
    grey = centre.astype(np.int64) if np.issubdtype(a.dtype, np.integer) else centre.astype(np.float64)
    spatial = local_binary_pattern(grey.reshape(-1, w), 4, r, "default").reshape(grey.shape)
    spatial = spatial[:, my: h - my, mx: w - mx]
    inner = (slice(None), slice(my, h - my), slice(mx, w - mx))
    before, after = a[: t - 2 * mt][inner], a[2 * mt:][inner]
    c = centre[inner]
    temporal = (before >= c).astype(np.int64) + 2 * (after >= c).astype(np.int64)
    hists = [block_histograms(spatial, ids, n_blocks, 16), block_histograms(temporal, ids, n_blocks, 4)]
    return np.concatenate(hists, axis=1).ravel()
