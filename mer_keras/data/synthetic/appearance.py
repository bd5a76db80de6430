"""Facial appearance changes of synthetic micro-expressions: action-unit creases and furrows as shading.

Why: a facial action does not only move the skin, it changes how the face looks. The
Facial Action Coding System describes each action unit by its appearance changes as well
as its motion (Ekman, Friesen & Hager, *FACS Manual*, 2002): AU4 (brow lowerer) produces
vertical wrinkles between the brows and bunches the inner brow heads; AU9 (nose
wrinkler) wrinkles the root of the nose; AU12 (lip corner puller) deepens the nasolabial
furrow and raises the cheek beside it; AU6 (cheek raiser) adds crow's-feet wrinkles at
the outer eye corners and an infraorbital furrow below the lower lid; AU1+2 (brow
raisers) produce horizontal forehead wrinkles and stretch the brows; AU26 (jaw drop)
parts the lips, showing the dark mouth cavity, and stretches the nasolabial and
chin-lip furrows flat; AU15 deepens the lines below the lip corners; AU17 the chin-lip
furrow; AU14 dimples the lip corners. Without these cues a synthetic expression exists
only as motion: the 0.5-3 px expression is much smaller than the 3-10 px identity
differences between subjects, so one frame of an unseen subject shows no class, and
recipes that classify single (apex) frames cannot learn from the data at all.

What is modelled: every action a clip contains (the actions :func:`.motion.draw_actions`
drew for its motion, so the shading matches the motion) adds its :data:`APPEARANCE_CUES`:
a few :class:`Stroke` elements (line-shaped creases, furrows and lit ridges, a few small
round ones) anchored on the 68 landmarks with lengths in inter-ocular distances (IOD),
so they scale and rotate with the face. :func:`appearance_change` sums them into a
relative brightness change map ``A`` (negative = darker, a crease's shadow; positive =
brighter, skin stretched or bulging towards the light) at the apex. The renderer shades
frame ``t`` as ``I_t * (1 + s(t) * A)`` after the geometric warp, with ``s(t)`` the
expression's own temporal profile (0 at the onset, 1 at the apex), so the shading grows
and fades with the motion. Shading is multiplicative because a crease changes the
illumination of the skin, not its reflectance: it darkens light and dark skin by the
same fraction.

Per-clip variation (drawn from the clip's random generator): the peak change
``strength x U(0.6, 1)``, each cue's weight (x0.7-1.3) and width (x0.75-1.3), a
left/right gain (x0.75-1.25) for asymmetric expressions, and a small shift of every
stroke (up to 0.03 IOD along each face axis). The map is exactly zero farther than 3.5
stroke widths from every stroke, so the background and the face away from the action's
anchors are untouched.

Magnitude (measured; see :data:`APPEARANCE_STRENGTH`): the cues are creases 0.025-0.07
IOD wide rather than broad patches, because optical flow mistakes a broad smooth
brightness change on the cheek for motion over its whole area (with a 0.2 IOD wide cheek
highlight the TV-L1 error of a positive clip was about four times that with narrow creases
of the same depth), while a narrow crease stays a local outlier of the flow's L1 data term.
With the default strength a linear leave-one-subject-out probe on the demo composite's 64 px
aligned, masked apex frames finds the class (UF1 0.58; 0.28, chance, without the shading).

Simplifications: the map is anchored on the neutral (onset) landmarks and applied in
frame coordinates, so it does not follow the 0.5-3 px expression motion or the
sub-pixel head jitter; the shading is not motion, so the ground-truth flows stay the
geometric field. Shading violates the brightness constancy that optical flow assumes,
as real creases do: flow estimated on shaded clips is less accurate than on
motion-only clips (``appearance_strength=0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .faces import MIRROR_PERMUTATION
from .motion import Action, FaceFrame, face_frame

APPEARANCE_STRENGTH = 0.24
"""Default largest relative brightness change of a clip at its apex (0.24 = 24 %); each clip
draws its own peak uniformly in ``[0.6, 1] x`` this, reached only at the centre of its deepest
crease: 20-35 grey levels there on skin of grey level 130-150 (up to about 50 on
over-exposed skin), while 90 % of the changed pixels change by less than 10-25 levels.
0 switches the appearance model off (the rendering is then exactly the motion-only one).

Chosen by measurement on the demo's data (MEGC2019-style composite, seed 0, ShuffleNetV2
preset at 64 px, linear leave-one-subject-out probe): apex-frame UF1 0.28 without shading,
0.51 at 0.2 and 0.58 at 0.24 (0.63 and 0.75 for composite seeds 1 and 2), flow-image UF1
0.81 -> 0.90. The price is flow accuracy: the TV-L1 end-point error of the whole-chain
recovery check grows from 6-25 % of the mean motion to 22-42 %
(``tests/test_synthetic_recovery.py``)."""

MAX_APPEARANCE_STRENGTH = 0.5
"""Largest accepted ``strength``: beyond it the "shading" would no longer be subtle."""

CLIP_STRENGTH_RANGE = (0.6, 1.0)
"""Per-clip peak change, as a fraction of ``strength``."""

STROKE_SHIFT = 0.03
"""Largest per-clip shift of a stroke along each face axis, in inter-ocular distances."""

_TRUNCATE = 3.5
"""Strokes are cut to exactly zero beyond this many widths."""

_END_TAPER = 0.6
"""A stroke's depth falls by this fraction from its middle to its ends (creases fade out)."""


@dataclass(frozen=True)
class Anchor:
    """A point on the face: the mean of ``landmarks`` shifted by ``offset``.

    ``offset`` is ``(outward, down)`` in inter-ocular distances in the face frame
    (:func:`.motion.face_frame`); ``outward`` points towards the image's left for a
    stroke as written and towards the image's right for its mirror image.
    """

    landmarks: tuple[int, ...]
    offset: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Stroke:
    """A line-shaped (or, with ``start == end``, round) shading element.

    The relative brightness change at distance ``d`` from the segment ``start``-``end``
    is ``gain x exp(-d^2 / 2 width^2)``, tapered towards the segment's ends by
    :data:`_END_TAPER` and cut to zero beyond 3.5 widths. ``width`` is in inter-ocular
    distances; ``gain`` is relative to the other strokes of the clip (negative: darker).
    ``mirrored`` strokes are written for the face's image-left half and also drawn on the
    other half (landmarks swapped by :data:`.faces.MIRROR_PERMUTATION`).
    """

    start: Anchor
    end: Anchor
    width: float
    gain: float
    mirrored: bool = True


def _line(a: Anchor, b: Anchor, width: float, gain: float, mirrored: bool = True) -> Stroke:
    """A crease, furrow or lit ridge from ``a`` to ``b``."""
    return Stroke(a, b, width, gain, mirrored)


def _spot(at: Anchor, width: float, gain: float, mirrored: bool = True) -> Stroke:
    """A round shading element (a dimple, a bunched or lit patch) centred on ``at``."""
    return Stroke(at, at, width, gain, mirrored)


APPEARANCE_CUES: dict[str, tuple[Stroke, ...]] = {
    # -- negative
    "AU4 brow lowerer": (
        # vertical glabellar furrows between the inner brow heads, one each side of the midline
        _line(Anchor((21, 22), (0.07, -0.12)), Anchor((21, 22), (0.05, 0.14)), 0.045, -1.0),
        # transverse (procerus) line at the root of the nose
        _line(Anchor((21, 22, 27), (0.11, 0.05)), Anchor((21, 22, 27), (-0.11, 0.05)), 0.035, -0.5, mirrored=False),
        # bunched inner brow heads catch the light
        _spot(Anchor((20, 21), (0.0, -0.08)), 0.07, 0.3),
    ),
    "AU9 nose wrinkler": (
        # transverse wrinkles across the root of the nose, and the deepened nose-wing furrow
        _line(Anchor((28,), (0.1, 0.0)), Anchor((28,), (-0.1, 0.0)), 0.03, -0.7, mirrored=False),
        _line(Anchor((28, 29), (0.09, 0.02)), Anchor((28, 29), (-0.09, 0.02)), 0.03, -0.5, mirrored=False),
        _spot(Anchor((31,), (0.04, -0.03)), 0.05, -0.4),
    ),
    "AU15 lip corner depressor": (
        _line(Anchor((48,), (0.03, 0.04)), Anchor((48,), (0.07, 0.3)), 0.06, -0.7),  # lines below the corners
    ),
    # -- positive
    "AU12 lip corner puller": (
        # nasolabial furrow, from above the nose wing to beside the mouth corner ...
        _line(Anchor((31,), (0.12, -0.06)), Anchor((48,), (0.12, 0.04)), 0.07, -1.0),
        # ... with the raised cheek's edge catching the light just lateral to it
        _line(Anchor((31,), (0.24, -0.08)), Anchor((48,), (0.24, 0.02)), 0.07, 0.5),
        # deepened lip corner
        _spot(Anchor((48,), (0.05, 0.0)), 0.05, -0.5),
    ),
    "AU6 cheek raiser": (
        # crow's feet fanning out from the outer eye corner
        _line(Anchor((36,), (0.14, -0.07)), Anchor((36,), (0.32, -0.16)), 0.025, -0.7),
        _line(Anchor((36,), (0.15, 0.0)), Anchor((36,), (0.34, 0.0)), 0.025, -0.7),
        _line(Anchor((36,), (0.14, 0.06)), Anchor((36,), (0.3, 0.16)), 0.025, -0.7),
        # infraorbital furrow below the lower lid
        _line(Anchor((41,), (0.05, 0.22)), Anchor((40,), (-0.02, 0.2)), 0.05, -0.5),
    ),
    # -- surprise
    "AU1+2 brow raiser": (
        # horizontal forehead wrinkles above the brows, with a lit ridge between them
        _line(Anchor((19,), (0.05, -0.13)), Anchor((24,), (-0.05, -0.13)), 0.04, -0.8, mirrored=False),
        _line(Anchor((19,), (0.05, -0.27)), Anchor((24,), (-0.05, -0.27)), 0.04, -0.6, mirrored=False),
        _line(Anchor((19,), (0.05, -0.2)), Anchor((24,), (-0.05, -0.2)), 0.03, 0.3, mirrored=False),
        # the raised, stretched brows catch the light
        _line(Anchor((17, 18), (0.0, -0.03)), Anchor((20, 21), (0.0, -0.03)), 0.07, 0.5),
    ),
    "AU26 jaw drop": (
        # parted lips show the dark mouth cavity
        _line(Anchor((60,), (-0.05, 0.0)), Anchor((64,), (0.05, 0.0)), 0.07, -1.0, mirrored=False),
        # the lowered jaw stretches the cheeks and chin: nasolabial and chin-lip furrows flatten
        _line(Anchor((31,), (0.12, -0.06)), Anchor((48,), (0.12, 0.04)), 0.07, 0.4),
        _line(Anchor((57,), (0.15, 0.12)), Anchor((57,), (-0.15, 0.12)), 0.07, 0.4, mirrored=False),
    ),
    "AU5 upper lid raiser": (
        _spot(Anchor((37, 38), (0.0, -0.02)), 0.06, 0.5),  # more of the eye white and upper lid shows
    ),
    # -- others
    "AU14 dimpler": (_spot(Anchor((48,), (0.07, 0.0)), 0.05, -0.8),),
    "AU17 chin raiser": (
        _line(Anchor((57,), (0.15, 0.12)), Anchor((57,), (-0.15, 0.12)), 0.05, -0.8, mirrored=False),  # chin-lip furrow
        _spot(Anchor((57, 8), (0.0, 0.05)), 0.1, 0.3, mirrored=False),  # bunched chin boss
    ),
    "AU10 upper lip raiser": (
        _line(Anchor((31,), (0.08, -0.08)), Anchor((31,), (0.14, 0.15)), 0.05, -0.8),  # upper nasolabial furrow
    ),
    "AU7 lid tightener": (
        _line(Anchor((41,), (0.0, 0.07)), Anchor((40,), (0.0, 0.07)), 0.035, 0.5),  # lower-lid bulge
    ),
    "AU24 lip pressor": (
        _line(Anchor((48,)), Anchor((54,)), 0.03, -0.5, mirrored=False),  # pressed lip line
        _spot(Anchor((51,), (0.0, -0.08)), 0.07, 0.3, mirrored=False),  # bulge above the upper lip
    ),
}
"""Shading of each action of :data:`.motion.CLASS_ACTIONS` (keyed by the action's name)."""

CUE_WEIGHTS: dict[str, float] = {
    "AU4 brow lowerer": 1.0, "AU9 nose wrinkler": 0.6, "AU15 lip corner depressor": 0.7,
    "AU12 lip corner puller": 1.0, "AU6 cheek raiser": 0.7,
    "AU1+2 brow raiser": 1.0, "AU26 jaw drop": 1.0, "AU5 upper lid raiser": 0.5,
    "AU14 dimpler": 1.0, "AU17 chin raiser": 1.0, "AU10 upper lip raiser": 0.8,
    "AU7 lid tightener": 0.6, "AU24 lip pressor": 0.7,
}
"""Weight of each action's shading relative to the other actions of a clip (before the
per-clip x0.7-1.3 variation): the defining action of each class is 1."""


def appearance_change(
    landmarks: np.ndarray,
    shape_hw: tuple[int, int],
    actions: Iterable[Action | str],
    strength: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Relative brightness change of one clip at its apex, ``(H, W)`` float32 (0.1 = 10 % brighter).

    ``actions``: the clip's actions (:class:`.motion.Action` or their names, keys of
    :data:`APPEARANCE_CUES`). ``strength``: the largest change a clip can have
    (:data:`APPEARANCE_STRENGTH`); this clip's peak ``|change|`` is
    ``strength x U(0.6, 1)`` exactly (0 gives an all-zero map and draws nothing).
    ``rng`` draws the per-clip variation (see the module docstring). The map is zero
    farther than 3.5 stroke widths from every stroke of the clip's cues.
    """
    strength = check_strength(strength)
    names = [a.name if isinstance(a, Action) else a for a in actions]
    unknown = [n for n in names if n not in APPEARANCE_CUES]
    if unknown:
        raise ValueError(f"no appearance cue for actions {unknown}; known: {sorted(APPEARANCE_CUES)}")
    h, w = _check_shape(shape_hw)
    frame = face_frame(landmarks)  # validates the landmarks
    pts = np.asarray(landmarks, dtype=np.float64)
    change = np.zeros((h, w), np.float32)
    if strength == 0.0 or not names:
        return change
    peak = strength * rng.uniform(*CLIP_STRENGTH_RANGE)
    for name in names:
        weight = CUE_WEIGHTS[name] * rng.uniform(0.7, 1.3)
        widen = rng.uniform(0.75, 1.3)
        side_gain = {False: rng.uniform(0.75, 1.25), True: rng.uniform(0.75, 1.25)}
        for stroke in APPEARANCE_CUES[name]:
            for mirror in (False, True) if stroke.mirrored else (False,):
                shift = rng.uniform(-STROKE_SHIFT, STROKE_SHIFT, size=2)
                a = _place(stroke.start, pts, frame, mirror, shift)
                b = _place(stroke.end, pts, frame, mirror, shift)
                gain = weight * stroke.gain * side_gain[mirror]
                _draw_stroke(change, a, b, stroke.width * widen * frame.iod, gain)
    largest = float(np.abs(change).max())
    if largest > 0:
        change *= np.float32(peak / largest)
    return change


def check_strength(strength: float) -> float:
    """Return ``strength`` as a float if it is a number in ``[0, MAX_APPEARANCE_STRENGTH]``, else raise."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"appearance strength must be a number in [0, {MAX_APPEARANCE_STRENGTH}], "
                         f"got {strength!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= MAX_APPEARANCE_STRENGTH:
        raise ValueError(f"appearance strength must be a number in [0, {MAX_APPEARANCE_STRENGTH}] "
                         f"(a relative brightness change), got {strength!r}")
    return value


# ----------------------------------------------------------------------------- helpers


def _check_shape(shape_hw: tuple[int, int]) -> tuple[int, int]:
    if len(shape_hw) < 2 or int(shape_hw[0]) < 1 or int(shape_hw[1]) < 1:
        raise ValueError(f"shape_hw must be a positive (height, width), got {shape_hw!r}")
    return int(shape_hw[0]), int(shape_hw[1])


def _place(anchor: Anchor, pts: np.ndarray, frame: FaceFrame, mirror: bool, shift: np.ndarray) -> np.ndarray:
    """Image position of ``anchor`` (on the mirrored half when ``mirror``), moved by ``shift`` IOD."""
    indices = [int(MIRROR_PERMUTATION[i]) for i in anchor.landmarks] if mirror else list(anchor.landmarks)
    outward = frame.x_axis if mirror else -frame.x_axis
    out, down = anchor.offset[0] + shift[0], anchor.offset[1] + shift[1]
    return pts[indices].mean(axis=0) + frame.iod * (out * outward + down * frame.y_axis)


def _draw_stroke(change: np.ndarray, a: np.ndarray, b: np.ndarray, width: float, gain: float) -> None:
    """Add ``gain x exp(-d^2 / 2 width^2)`` (``d``: distance to segment ``a``-``b``, tapered) in place."""
    h, w = change.shape
    reach = _TRUNCATE * width
    x0 = max(0, int(math.floor(min(a[0], b[0]) - reach)))
    x1 = min(w, int(math.ceil(max(a[0], b[0]) + reach)) + 1)
    y0 = max(0, int(math.floor(min(a[1], b[1]) - reach)))
    y1 = min(h, int(math.ceil(max(a[1], b[1]) + reach)) + 1)
    if x0 >= x1 or y0 >= y1 or width <= 0:
        return
    px = np.arange(x0, x1, dtype=np.float64)[None, :] - a[0]
    py = np.arange(y0, y1, dtype=np.float64)[:, None] - a[1]
    axis = b - a
    length2 = float(axis @ axis)
    if length2 > 1e-12:
        t = np.clip((px * axis[0] + py * axis[1]) / length2, 0.0, 1.0)
        taper = 1.0 - _END_TAPER * (2.0 * t - 1.0) ** 2
    else:
        t, taper = np.zeros_like(px + py), 1.0
    d2 = (px - t * axis[0]) ** 2 + (py - t * axis[1]) ** 2
    value = gain * taper * np.exp(-0.5 * d2 / (width * width))
    value[d2 > reach * reach] = 0.0
    change[y0:y1, x0:x1] += value.astype(np.float32)
