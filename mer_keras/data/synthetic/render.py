"""Render a synthetic micro-expression clip (onset..offset frames) from a subject's neutral face.

Every frame ``t`` is the neutral image warped by a known forward displacement field

    D_t(p) = s(t) * E(p) + b(t) * B(p) + j(t)

where ``E`` is the expression field at its apex (:func:`.motion.displacement_field`),
``s(t)`` its temporal profile (0 at onset, exactly 1 at the apex, decaying towards
the offset), ``B`` a blink field (:func:`.motion.blink_field`, eye regions only) with
its own short temporal bump ``b(t)``, and ``j(t)`` a global sub-pixel translation
(head jitter, a random walk starting at 0, applied to the whole frame). The onset
frame has ``D_0 = 0``, so it is the neutral face itself; ``D_t`` is therefore also the
true motion from the onset frame to frame ``t``.

Forward convention: the content at onset pixel ``(x, y)`` is at ``(x, y) + D_t(x, y)``
in frame ``t``. Frames are rendered with one bicubic :func:`cv2.remap` of the neutral
image each, which needs the backward map; it is found by fixed-point inversion (not
the first-order ``q - D(q)``): for each output pixel ``q`` iterate
``p <- q - j - L(p)`` (``L`` the local expression + blink part), which converges
because the fields are smooth (spatial gradient well below 1). The iteration only
runs on the face region where ``L`` is non-zero; elsewhere ``p = q - j`` exactly.
Content that jitter brings in from outside the frame is edge-replicated. Accuracy:
the inversion residual is below 0.01 px and cv2.remap quantises sampling positions to
1/32 px, so the stored flows describe the frames to a few hundredths of a pixel (up to
interpolation and uint8 rounding of the frames).

The expression also changes the face's appearance (creases, furrows, bulges:
:mod:`.appearance`): after the warp, frame ``t`` is shaded by ``(1 + s(t) * A)``, with
``A`` the clip's relative brightness change at the apex (:func:`.appearance.appearance_change`,
for the same actions as the motion) and ``s(t)`` the expression's temporal profile, so
the shading is 0 at the onset and largest at the apex. The shading is not motion: the
stored flows remain the geometric field ``D_t``. ``appearance_strength=0`` renders
exactly the motion-only clip.

Sensor noise is added per frame after warping and shading (Gaussian, drawn through a
256-level inverse-CDF table for speed) and frames are rounded to uint8 with the subject's
channels (RGB, or grey).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

from .appearance import APPEARANCE_STRENGTH, appearance_change, check_strength
from .faces import SyntheticSubject
from .motion import blink_field, check_amplitude, check_label, displacement_field, draw_actions

AMPLITUDE_RANGE = (0.5, 3.0)
"""Default per-clip range of the expression's peak displacement, in pixels."""

FRAME_INTERPOLATION = cv2.INTER_CUBIC
"""Resampling of the frames: bicubic keeps sub-pixel-shifted frames about as sharp as the
(unresampled) onset. ``cv2.INTER_LINEAR`` renders about 1.5x faster but blurs every
shifted frame slightly relative to the onset."""

INVERSION_ITERATIONS = 5
"""Fixed-point iterations of :func:`warp_forward`."""
MAX_INVERSION_ITERATIONS = 12
INVERSION_TOLERANCE = 0.01
"""Target residual of the backward-map inversion in :func:`render_clip`, in pixels."""


@dataclass
class SyntheticClip:
    """A rendered clip with its ground truth.

    ``frames``: uint8 frames onset..offset inclusive, same shape/channels as the subject
    image (RGB or grey). ``onset``/``apex``/``offset``: 0-based indices into ``frames``
    (``onset == 0``, ``offset == len(frames) - 1``).

    ``apex_flow``: ``(H, W, 2)`` float32 ``(dx, dy)`` px, the true total pixel motion
    from the onset frame to the apex frame in the forward optical-flow convention
    (onset content at ``(x, y)`` is at ``(x + dx, y + dy)`` in the apex frame). It
    includes the expression, the blink displacement at the apex frame (when a blink
    overlaps it) and the head-jitter translation at the apex (the onset frame has no
    jitter); it excludes the sensor noise, which is not motion. This is what a flow
    estimator run from onset to apex should recover (score it by end-point error;
    a margin of a few pixels at the frame border, where content enters, is best left out).

    ``expression_flow``: ``(H, W, 2)`` float32, the expression-only part of
    ``apex_flow`` (no jitter, no blink). ``blink``: whether a blink happens anywhere in
    the clip. ``label``: the class rendered.

    ``appearance_change``: ``(H, W)`` float32, the relative brightness change of the
    expression's shading at the apex (frame ``t`` is shaded by ``1 + s(t) x`` this, ``s``
    the expression profile; all zero when the appearance model is off). ``actions``: the
    names of the action units the clip contains (motion and shading).
    """

    frames: list[np.ndarray]
    onset: int
    apex: int
    offset: int
    apex_flow: np.ndarray
    expression_flow: np.ndarray
    blink: bool
    label: str
    appearance_change: np.ndarray
    actions: tuple[str, ...]


def render_clip(
    subject: SyntheticSubject,
    label: str,
    *,
    n_frames: int = 15,
    apex_index: int | None = None,
    amplitude: float | None = None,
    rng: np.random.Generator,
    noise_sigma: float = 1.5,
    jitter_px: float = 0.3,
    blink_prob: float = 0.25,
    appearance_strength: float = APPEARANCE_STRENGTH,
) -> SyntheticClip:
    """Render one clip of ``label`` on ``subject``; deterministic given the state of ``rng``.

    ``apex_index`` defaults to a random frame in the middle 30-70 % of the clip (it
    must be in ``1..n_frames-1``); ``amplitude`` (peak expression displacement, px)
    defaults to uniform in :data:`AMPLITUDE_RANGE`. ``noise_sigma`` is the sensor noise
    standard deviation in grey levels (0 disables it), ``jitter_px`` the typical size of
    the head-jitter random walk in px (0 disables it), ``blink_prob`` the probability
    that a blink happens during the clip. ``appearance_strength`` is the largest relative
    brightness change of the expression's shading, in ``[0, 0.5]``
    (:data:`.appearance.APPEARANCE_STRENGTH`, 0.24 = 24 % at the deepest crease; each clip
    draws its own peak in ``[0.6, 1] x`` this); 0 disables it, and the frames are then
    exactly those of the motion-only renderer.

    The shading's random variation comes from a child generator (``rng.spawn``), which
    does not advance ``rng``: the motion, blink, jitter and noise of this clip, and every
    later clip drawn from ``rng``, are the same whatever ``appearance_strength``.
    """
    label = check_label(label)
    n_frames, apex = _check_timing(n_frames, apex_index)
    noise_sigma = _check_nonnegative("noise_sigma", noise_sigma)
    jitter_px = _check_nonnegative("jitter_px", jitter_px)
    blink_prob = _check_nonnegative("blink_prob", blink_prob)
    appearance_strength = check_strength(appearance_strength)
    if blink_prob > 1:
        raise ValueError(f"blink_prob must be in [0, 1], got {blink_prob!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
    image = np.asarray(subject.image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"subject.image must be a uint8 HxW or HxWxC array, got {image.dtype} {image.shape}")
    shape_hw = image.shape[:2]

    amplitude = rng.uniform(*AMPLITUDE_RANGE) if amplitude is None else check_amplitude(amplitude)
    if apex is None:
        apex = int(rng.integers(max(1, round(0.3 * (n_frames - 1))), round(0.7 * (n_frames - 1)) + 1))
    actions = draw_actions(label, rng)
    expression = displacement_field(subject.landmarks, shape_hw, label, amplitude, rng, actions=actions)
    profile = expression_profile(n_frames, apex, rng)

    blink = bool(rng.random() < blink_prob)
    if blink:
        blink_flow = blink_field(subject.landmarks, shape_hw, rng.uniform(0.5, 1.0))
        blink_weights = blink_profile(n_frames, rng)
    else:
        blink_flow = None
        blink_weights = np.zeros(n_frames)
    jitter = jitter_path(n_frames, jitter_px, rng)

    fields = (expression,) if blink_flow is None else (expression, blink_flow)
    warper = _Warper(image, fields, max_shift=float(np.abs(jitter).max()))
    if appearance_strength > 0:
        change = appearance_change(subject.landmarks, shape_hw, actions, appearance_strength, _child(rng))
    else:
        change = np.zeros(shape_hw, np.float32)
    shading = _Shading(change)
    noise = _Noise(shape_hw + image.shape[2:], noise_sigma, rng)
    frames = []
    for t in range(n_frames):
        coefficients = (profile[t],) if blink_flow is None else (profile[t], blink_weights[t])
        warped = warper.warp(coefficients, jitter[t])
        shading.apply(warped, profile[t])
        frames.append(noise.add(warped))

    apex_flow = expression + jitter[apex].astype(np.float32)  # profile[apex] == 1 exactly
    if blink_flow is not None and blink_weights[apex] != 0:
        apex_flow += np.float32(blink_weights[apex]) * blink_flow
    return SyntheticClip(
        frames=frames,
        onset=0,
        apex=apex,
        offset=n_frames - 1,
        apex_flow=apex_flow,
        expression_flow=expression,
        blink=blink,
        label=label,
        appearance_change=change,
        actions=tuple(a.name for a in actions),
    )


def expression_profile(n_frames: int, apex: int, rng: np.random.Generator) -> np.ndarray:
    """Expression intensity per frame: 0 at frame 0, exactly 1 at ``apex``, then decaying.

    Rise: ``(0.5 - 0.5 cos(pi t / apex)) ** k`` with a random shape exponent
    ``k`` in [0.7, 1.4]; decay: raised cosine from 1 at the apex down to a residual
    in [0, 0.25] at the last frame (micro-expressions fade, not always completely).
    """
    t = np.arange(n_frames, dtype=np.float64)
    shape = rng.uniform(0.7, 1.4)
    residual = rng.uniform(0.0, 0.25)
    profile = np.empty(n_frames)
    rise = t <= apex
    profile[rise] = (0.5 - 0.5 * np.cos(np.pi * t[rise] / apex)) ** shape
    tail = n_frames - 1 - apex
    if tail > 0:
        phase = (t[~rise] - apex) / tail
        profile[~rise] = residual + (1.0 - residual) * (0.5 + 0.5 * np.cos(np.pi * phase))
    profile[0], profile[apex] = 0.0, 1.0
    return profile


def blink_profile(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Blink closure weight per frame: a raised-cosine bump at a random frame, 0 at frame 0."""
    t = np.arange(n_frames, dtype=np.float64)
    centre = int(rng.integers(1, n_frames))
    half = min(rng.uniform(1.5, 1.0 + 0.25 * n_frames), float(centre))
    weights = np.where(np.abs(t - centre) < half, np.cos(0.5 * np.pi * (t - centre) / half) ** 2, 0.0)
    weights[0] = 0.0
    return weights


def jitter_path(n_frames: int, jitter_px: float, rng: np.random.Generator) -> np.ndarray:
    """Global head translation per frame, ``(n_frames, 2)`` ``(dx, dy)`` px: a Gaussian random walk
    from ``(0, 0)`` at the onset whose end point has standard deviation ``jitter_px`` per axis."""
    steps = rng.normal(0.0, jitter_px / math.sqrt(max(n_frames - 1, 1)), size=(n_frames, 2))
    steps[0] = 0.0
    return np.cumsum(steps, axis=0)


def warp_forward(image: np.ndarray, flow: np.ndarray, iterations: int = INVERSION_ITERATIONS) -> np.ndarray:
    """Warp ``image`` so that its content at ``p`` lands at ``p + flow(p)`` (forward convention).

    The backward map is found by fixed-point inversion over the whole image (the same
    method :func:`render_clip` uses on the face region); bilinear sampling, edge
    replication at the borders. Returns float32 with the input's shape.
    """
    flow = np.asarray(flow, np.float32)
    h, w = flow.shape[:2]
    if flow.shape != (h, w, 2) or image.shape[:2] != (h, w):
        raise ValueError(f"flow must be (H, W, 2) matching the image, got {flow.shape} for {image.shape}")
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    px, py = _invert(flow, gx, gy, 0.0, 0.0, iterations)
    return cv2.remap(image.astype(np.float32), px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ----------------------------------------------------------------------------- helpers


def _check_timing(n_frames: int, apex_index: int | None) -> tuple[int, int | None]:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 3:
        raise ValueError(f"n_frames must be an integer >= 3, got {n_frames!r}")
    if apex_index is None:
        return int(n_frames), None
    if isinstance(apex_index, bool) or not isinstance(apex_index, (int, np.integer)):
        raise ValueError(f"apex_index must be an integer, got {apex_index!r}")
    if not 1 <= apex_index <= n_frames - 1:
        raise ValueError(f"apex_index must be in 1..{n_frames - 1} (the onset is frame 0), got {apex_index}")
    return int(n_frames), int(apex_index)


def _check_nonnegative(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return value


def _invert(
    local: np.ndarray, qx: np.ndarray, qy: np.ndarray, shift_x: float, shift_y: float, iterations: int,
    origin: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``p + shift + local(p) = q`` for ``p`` by fixed-point iteration.

    ``local`` is an ``(h, w, 2)`` field whose pixel ``(0, 0)`` sits at image position
    ``origin = (x0, y0)``; ``qx``, ``qy`` are image coordinates. Returns ``(px, py)``.
    """
    x0, y0 = np.float32(origin[0]), np.float32(origin[1])
    px = qx - np.float32(shift_x)
    py = qy - np.float32(shift_y)
    bx, by = px, py
    for _ in range(iterations):
        d = cv2.remap(local, px - x0, py - y0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        px, py = bx - d[..., 0], by - d[..., 1]
    return px, py


class _Warper:
    """Warps one neutral image by ``sum_k c_k F_k + shift`` for per-frame coefficients ``c_k``.

    The fields ``F_k`` are cropped once to the box where any of them is non-zero
    (plus a margin covering their peak and the largest shift); the fixed-point
    inversion runs on that box only, with as many iterations as the fields'
    steepness requires for a residual below :data:`INVERSION_TOLERANCE` px.
    """

    def __init__(self, image: np.ndarray, fields: tuple[np.ndarray, ...], max_shift: float):
        self.source = image.astype(np.float32)
        h, w = image.shape[:2]
        self.grid_x, self.grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        # a pixel moves if either float32 component is non-zero: test both as one 64-bit word
        support = np.logical_or.reduce([np.ascontiguousarray(f).view(np.uint64).reshape(h, w) != 0 for f in fields])
        rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
        self.box = None
        if rows.size:
            crops = [f[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] for f in fields]
            self.peaks = [_peak(c) for c in crops]
            margin = int(math.ceil(sum(self.peaks) + max_shift * math.sqrt(2.0))) + 2
            x0, x1 = max(0, cols[0] - margin), min(w, cols[-1] + margin + 1)
            y0, y1 = max(0, rows[0] - margin), min(h, rows[-1] + margin + 1)
            self.box = (x0, y0, x1, y1)
            self.fields = [np.ascontiguousarray(f[y0:y1, x0:x1]) for f in fields]
            self.slopes = [_slope(f) for f in self.fields]

    def warp(self, coefficients: tuple[float, ...], shift: np.ndarray) -> np.ndarray:
        sx, sy = float(shift[0]), float(shift[1])
        active = [(c, k) for k, c in enumerate(coefficients) if c != 0]
        if not active and sx == 0 and sy == 0:
            return self.source.copy()  # identity (the onset frame): no resampling
        map_x = self.grid_x - np.float32(sx)
        map_y = self.grid_y - np.float32(sy)
        if self.box is not None and active:
            x0, y0, x1, y1 = self.box
            local = sum(np.float32(c) * self.fields[k] for c, k in active)
            peak = sum(abs(c) * self.peaks[k] for c, k in active)
            slope = sum(abs(c) * self.slopes[k] for c, k in active)
            px, py = _invert(
                local, self.grid_x[y0:y1, x0:x1], self.grid_y[y0:y1, x0:x1], sx, sy,
                _iterations(peak, slope), origin=(x0, y0),
            )
            map_x[y0:y1, x0:x1] = px
            map_y[y0:y1, x0:x1] = py
        return cv2.remap(self.source, map_x, map_y, FRAME_INTERPOLATION, borderMode=cv2.BORDER_REPLICATE)


def _child(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator derived from ``rng`` without advancing it (``Generator.spawn``).

    Generators without a seed sequence (built from a bare, legacy-seeded bit generator)
    cannot spawn; for those one draw of ``rng`` seeds the child instead.
    """
    try:
        return rng.spawn(1)[0]
    except TypeError:
        return np.random.default_rng(int(rng.integers(2**63)))


class _Shading:
    """Multiplies frames by ``1 + c * change`` on the box where ``change`` is non-zero (in place)."""

    def __init__(self, change: np.ndarray):
        rows, cols = np.flatnonzero(change.any(axis=1)), np.flatnonzero(change.any(axis=0))
        self.box = None
        if rows.size:
            self.box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            self.change = change[self.box]

    def apply(self, frame: np.ndarray, coefficient: float) -> None:
        """Shade ``frame`` (float32, ``H x W`` or ``H x W x C``) by ``coefficient`` times the change."""
        if self.box is None or coefficient == 0:
            return
        factor = 1.0 + np.float32(coefficient) * self.change
        region = frame[self.box]
        region *= factor if frame.ndim == 2 else factor[..., None]


def _peak(field: np.ndarray) -> float:
    return float(np.sqrt((field.astype(np.float64) ** 2).sum(-1).max())) if field.size else 0.0


def _slope(field: np.ndarray) -> float:
    """Upper bound of the field's spatial derivative (sum of the largest absolute partial derivatives)."""
    if min(field.shape[:2]) < 2:
        return 0.0
    dx = np.abs(np.diff(field, axis=1)).max()
    dy = np.abs(np.diff(field, axis=0)).max()
    return float(dx + dy)


def _iterations(peak: float, slope: float) -> int:
    """Fixed-point iterations for a residual below INVERSION_TOLERANCE: the error shrinks by
    ``slope`` per iteration, starting from ``peak``."""
    if peak <= INVERSION_TOLERANCE:
        return 1
    if slope >= 0.95:
        return MAX_INVERSION_ITERATIONS
    needed = math.log(INVERSION_TOLERANCE / peak) / math.log(max(slope, 1e-3))
    return int(min(MAX_INVERSION_ITERATIONS, max(1, math.ceil(needed))))


class _Noise:
    """Per-frame Gaussian noise of standard deviation ``sigma`` grey levels, then rounding to uint8.

    Normal deviates come from uniform bytes through a 256-entry inverse-CDF table
    (rescaled to unit variance): much faster than drawing normals directly.
    """

    def __init__(self, shape: tuple[int, ...], sigma: float, rng: np.random.Generator):
        self.shape, self.sigma, self.rng = shape, sigma, rng
        if sigma > 0:
            quantiles = np.array([NormalDist().inv_cdf((k + 0.5) / 256) for k in range(256)])
            self.table = (quantiles / quantiles.std() * sigma).astype(np.float32)

    def add(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` (float32, modified in place) plus noise, rounded and saturated to uint8."""
        if self.sigma > 0:
            index = self.rng.integers(0, 256, size=self.shape, dtype=np.uint8)
            cv2.add(frame, cv2.LUT(index, self.table), dst=frame)
        np.maximum(frame, 0.0, out=frame)
        return cv2.convertScaleAbs(frame)  # rounds to nearest and saturates at 255
