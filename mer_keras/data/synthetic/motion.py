"""Facial motion fields for synthetic micro-expressions: class-specific action units and blinks.

Conventions used throughout this module:

* Points are ``(x, y)`` pixel coordinates with pixel centres at integers (the
  convention of dlib and OpenCV); ``landmarks`` is a ``(68, 2)`` array in dlib's
  68-point order.
* A displacement field is an ``(H, W, 2)`` float32 array holding ``(dx, dy)`` in
  pixels for every pixel of the *source* (neutral / onset) image: the content at
  ``(x, y)`` moves to ``(x + dx, y + dy)`` (the forward optical-flow convention).
* "Face frame" directions are measured against the eye line, so they stay correct
  under in-plane head roll: ``outward`` points away from the facial midline, ``down``
  points from the brows towards the chin.

Each class is a set of :class:`Action` entries, each a smooth Gaussian push anchored
on a few landmarks; sigmas are fractions of the inter-ocular distance so the pattern
scales with the face. :func:`displacement_field` adds per-clip variation (which
optional actions appear, their weights, directions, widths and left/right balance)
and rescales the sum so its peak magnitude equals the requested amplitude exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

LABELS: tuple[str, ...] = ("negative", "positive", "surprise", "others")
"""Classes :func:`displacement_field` can render (the three MEGC2019 classes plus ``others``)."""

RIGHT_EYE = tuple(range(36, 42))
"""Landmarks of the eye on the image's left (the subject's right eye in an unmirrored photo)."""
LEFT_EYE = tuple(range(42, 48))
"""Landmarks of the eye on the image's right."""

_TRUNCATE = 3.5
"""Gaussian pushes are cut to exactly zero beyond this many sigmas."""

BLINK_PEAK = 0.12
"""Upper-lid displacement of a full blink, as a fraction of the eye width."""
BLINK_SIGMAS = (0.3, 0.15)
"""Blink Gaussian sigmas along / across the eye, as fractions of the eye width."""


@dataclass(frozen=True)
class Action:
    """One facial action: a Gaussian push anchored on landmarks, in face-frame directions.

    ``direction`` is ``(outward, down)`` in the face frame (normalised when used);
    ``outward`` is taken with the sign of each anchor's side of the midline, so the two
    mouth corners of ``(0.6, -0.8)`` both move up and away from the midline.
    ``weight`` is the action's peak relative to the other actions of the clip;
    ``sigma`` is the Gaussian width as a fraction of the inter-ocular distance;
    ``probability`` is the chance the action appears in a clip (1.0: always).
    """

    name: str
    landmarks: tuple[int, ...]
    direction: tuple[float, float]
    weight: float = 1.0
    sigma: float = 0.25
    probability: float = 1.0


CLASS_ACTIONS: dict[str, tuple[Action, ...]] = {
    "positive": (
        Action("AU12 lip corner puller", (48, 54), (0.6, -0.8), 1.0, 0.22),
        Action("AU6 cheek raiser", (40, 41, 46, 47), (0.0, -1.0), 0.35, 0.18, probability=0.5),
    ),
    "negative": (
        Action("AU4 brow lowerer", (20, 21, 22, 23), (-0.6, 0.8), 1.0, 0.16),
        Action("AU15 lip corner depressor", (48, 54), (0.2, 1.0), 0.6, 0.2, probability=0.4),
        Action("AU9 nose wrinkler", (31, 32, 34, 35), (0.0, -1.0), 0.5, 0.15, probability=0.3),
    ),
    "surprise": (
        Action("AU1+2 brow raiser", tuple(range(17, 27)), (0.0, -1.0), 1.0, 0.2),
        Action("AU26 jaw drop", (7, 8, 9, 57), (0.0, 1.0), 1.0, 0.3),
        Action("AU5 upper lid raiser", (37, 38, 43, 44), (0.0, -1.0), 0.3, 0.1, probability=0.4),
    ),
    "others": (
        Action("AU14 dimpler", (48, 54), (-1.0, 0.0), 1.0, 0.2, probability=0.5),
        Action("AU17 chin raiser", (8, 57), (0.0, -1.0), 1.0, 0.25, probability=0.5),
        Action("AU10 upper lip raiser", (50, 52), (0.0, -1.0), 0.8, 0.18, probability=0.4),
        Action("AU7 lid tightener", (40, 41, 46, 47), (0.0, -1.0), 0.6, 0.12, probability=0.4),
        Action("AU24 lip pressor", (48, 54), (-0.5, 0.0), 0.7, 0.2, probability=0.3),
    ),
}
"""Actions of each class. ``others`` is a random mix: each action appears with its
probability and at least one always does."""


@dataclass(frozen=True)
class FaceFrame:
    """The face's own axes: ``center`` between the eyes, ``x_axis`` along the eye line
    (image-left eye to image-right eye), ``y_axis`` perpendicular pointing to the chin,
    ``iod`` the inter-ocular (eye-centre) distance in pixels."""

    center: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    iod: float


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """Face axes from the eye centres (means of landmarks 36-41 and 42-47)."""
    pts = _check_landmarks(landmarks)
    eye_a = pts[list(RIGHT_EYE)].mean(axis=0)
    eye_b = pts[list(LEFT_EYE)].mean(axis=0)
    axis = eye_b - eye_a
    iod = float(np.hypot(*axis))
    if iod < 1.0:
        raise ValueError("landmarks are degenerate: the two eye centres coincide")
    x_axis = axis / iod
    y_axis = np.array([-x_axis[1], x_axis[0]])
    return FaceFrame((eye_a + eye_b) / 2.0, x_axis, y_axis, iod)


def displacement_field(
    landmarks: np.ndarray,
    shape_hw: tuple[int, int],
    label: str,
    amplitude: float,
    rng: np.random.Generator,
    actions: Sequence[Action] | None = None,
) -> np.ndarray:
    """Expression displacement field of one clip at its apex, ``(H, W, 2)`` float32 ``(dx, dy)`` px.

    Each action of ``CLASS_ACTIONS[label]`` becomes a sum of Gaussians centred on its
    anchor landmarks (sigma = action sigma x inter-ocular distance, cut to zero beyond
    3.5 sigma, so the field is exactly zero far from the face), scaled to the action's
    weight; the actions are summed and the total is rescaled so that the largest
    per-pixel magnitude equals ``amplitude`` exactly. ``rng`` draws the per-clip
    variation: optional actions, weight (x0.7-1.3), direction (+-15 degrees), width
    (x0.8-1.25) and a left/right gain (x0.75-1.25) for asymmetric expressions.

    ``actions``: the clip's actions when already drawn with :func:`draw_actions` (the
    renderer does, to give the same actions their appearance change); by default they are
    drawn here, first, from ``rng`` -- the same draws, so both ways give the same field.
    """
    label = check_label(label)
    amplitude = check_amplitude(amplitude)
    pts = _check_landmarks(landmarks)
    h, w = _check_shape(shape_hw)
    frame = face_frame(pts)

    actions = draw_actions(label, rng) if actions is None else list(actions)
    if not actions or not all(isinstance(a, Action) for a in actions):
        raise ValueError(f"actions must be a non-empty sequence of motion.Action, got {actions!r}")
    # Work on the box that can receive motion (anchors +- the largest truncated sigma).
    reach = _TRUNCATE * 1.25 * max(a.sigma for a in actions) * frame.iod
    anchors = pts[sorted({i for a in actions for i in a.landmarks})]
    x0, y0 = np.maximum(np.floor(anchors.min(0) - reach).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(anchors.max(0) + reach).astype(int) + 1, (w, h))
    if x0 >= x1 or y0 >= y1:
        raise ValueError("the landmarks lie outside the image: the expression field is empty")
    origin = np.array([x0, y0], dtype=np.float64)
    total = np.zeros((y1 - y0, x1 - x0, 2), np.float32)
    for action in actions:
        weight = action.weight * rng.uniform(0.7, 1.3)
        turn = math.radians(rng.uniform(-15.0, 15.0))
        sigma = action.sigma * rng.uniform(0.8, 1.25) * frame.iod
        side_gain = {-1: rng.uniform(0.75, 1.25), 1: rng.uniform(0.75, 1.25)}
        part = np.zeros_like(total)
        for index in action.landmarks:
            point = pts[index]
            offset = float(np.dot(point - frame.center, frame.x_axis))
            side = float(np.clip(offset / (0.05 * frame.iod), -1.0, 1.0))
            vector = _face_vector(frame, action.direction, side, turn)
            vector *= side_gain[1 if offset >= 0 else -1]
            _splat(part, point - origin, vector, sigma)
        peak = _peak(part)
        if peak > 0:
            total += part * np.float32(weight / peak)
    peak = _peak(total)
    if peak <= 0:
        raise ValueError("the landmarks lie outside the image: the expression field is empty")
    total *= np.float32(amplitude / peak)
    field = np.zeros((h, w, 2), np.float32)
    field[y0:y1, x0:x1] = total
    return field


def blink_field(landmarks: np.ndarray, shape_hw: tuple[int, int], closure: float) -> np.ndarray:
    """Eyelid motion of a partial blink, ``(H, W, 2)`` float32 ``(dx, dy)`` px, zero outside the eyes.

    For each eye (landmarks 36-41 and 42-47, eye width = corner-to-corner distance)
    the upper lid (midpoint of 37/38, resp. 43/44) is pushed along the face's ``down``
    direction by ``0.12 x closure x eye width`` (about a third of the lid gap at
    ``closure=1``), with an anisotropic Gaussian (sigma 0.3 eye widths along the eye, 0.15
    across it) that is tapered to exactly zero at 3 sigma: nothing farther than 0.9 eye
    widths along the eye or 0.45 eye widths across it from the upper lid moves. The
    compression stays well below 1, so the map is invertible (a warp cannot occlude,
    so the lid droops rather than closing fully). ``closure`` is in [0, 1]; 0 gives an
    all-zero field.
    """
    closure = float(closure)
    if not 0.0 <= closure <= 1.0 or not math.isfinite(closure):
        raise ValueError(f"closure must be in [0, 1], got {closure!r}")
    pts = _check_landmarks(landmarks)
    h, w = _check_shape(shape_hw)
    field = np.zeros((h, w, 2), np.float32)
    if closure == 0.0:
        return field
    for eye in (RIGHT_EYE, LEFT_EYE):
        _add_eyelid_push(field, pts[list(eye)], closure)
    return field


def draw_actions(label: str, rng: np.random.Generator) -> list[Action]:
    """The actions present in one clip of ``label``: each with its probability, never none."""
    pool = CLASS_ACTIONS[check_label(label)]
    chosen = [a for a in pool if a.probability >= 1.0 or rng.random() < a.probability]
    if not chosen:
        chosen = [pool[int(rng.integers(len(pool)))]]
    return chosen


def check_label(label: str) -> str:
    """Return ``label`` if it is one of :data:`LABELS`, else raise a ValueError."""
    if label not in CLASS_ACTIONS:
        raise ValueError(f"unknown label {label!r}; expected one of {sorted(CLASS_ACTIONS)}")
    return label


def check_amplitude(amplitude: float) -> float:
    """Return ``amplitude`` as a float if it is a finite number > 0 (pixels), else raise."""
    try:
        value = float(amplitude)
    except (TypeError, ValueError):
        raise ValueError(f"amplitude must be a positive number of pixels, got {amplitude!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"amplitude must be a positive number of pixels, got {amplitude!r}")
    return value


# ----------------------------------------------------------------------------- helpers


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"landmarks must be a finite (68, 2) array of (x, y), got shape {pts.shape}")
    return pts


def _check_shape(shape_hw: tuple[int, int]) -> tuple[int, int]:
    if len(shape_hw) < 2:
        raise ValueError(f"shape_hw must be (height, width), got {shape_hw!r}")
    h, w = int(shape_hw[0]), int(shape_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"shape_hw must be positive, got {shape_hw!r}")
    return h, w


def _face_vector(frame: FaceFrame, direction: tuple[float, float], side: float, turn: float) -> np.ndarray:
    """Image-space unit vector of a face-frame ``(outward, down)`` direction, rotated by ``turn`` rad."""
    out, down = direction
    local = np.array([out * side, down], dtype=np.float64)
    norm = np.hypot(*local)
    if norm == 0:
        return np.zeros(2)
    c, s = math.cos(turn), math.sin(turn)
    local = np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]]) / norm
    return local[0] * frame.x_axis + local[1] * frame.y_axis


def _splat(field: np.ndarray, point: np.ndarray, vector: np.ndarray, sigma: float) -> None:
    """Add ``vector x exp(-r^2 / 2 sigma^2)`` around ``point``, truncated at 3.5 sigma (in place)."""
    h, w = field.shape[:2]
    radius = _TRUNCATE * sigma
    x0, x1 = max(0, int(math.floor(point[0] - radius))), min(w, int(math.ceil(point[0] + radius)) + 1)
    y0, y1 = max(0, int(math.floor(point[1] - radius))), min(h, int(math.ceil(point[1] + radius)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    dx = np.arange(x0, x1, dtype=np.float32) - np.float32(point[0])
    dy = np.arange(y0, y1, dtype=np.float32) - np.float32(point[1])
    g = np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / np.float32(2.0 * sigma * sigma))
    g[(dy[:, None] ** 2 + dx[None, :] ** 2) > radius * radius] = 0.0
    field[y0:y1, x0:x1, 0] += g * np.float32(vector[0])
    field[y0:y1, x0:x1, 1] += g * np.float32(vector[1])


def _peak(field: np.ndarray) -> float:
    return float(np.sqrt(np.max(field[..., 0] ** 2 + field[..., 1] ** 2))) if field.size else 0.0


def _add_eyelid_push(field: np.ndarray, eye: np.ndarray, closure: float) -> None:
    """Push one eye's upper lid along the face's down direction (in place); ``eye`` is its 6 landmarks."""
    h, w = field.shape[:2]
    u = eye[3] - eye[0]
    width = float(np.hypot(*u))
    if width < 1.0:
        return
    u = u / width
    n = np.array([-u[1], u[0]])  # perpendicular to the eye axis, pointing down the face
    upper = (eye[1] + eye[2]) / 2.0
    sigma_a, sigma_b = BLINK_SIGMAS[0] * width, BLINK_SIGMAS[1] * width
    extent = 3.0 * sigma_a
    x0, x1 = max(0, int(math.floor(upper[0] - extent))), min(w, int(math.ceil(upper[0] + extent)) + 1)
    y0, y1 = max(0, int(math.floor(upper[1] - extent))), min(h, int(math.ceil(upper[1] + extent)) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float64)[None, :] - upper[0]
    ys = np.arange(y0, y1, dtype=np.float64)[:, None] - upper[1]
    r2 = ((xs * u[0] + ys * u[1]) / sigma_a) ** 2 + ((xs * n[0] + ys * n[1]) / sigma_b) ** 2
    r = np.sqrt(r2)
    taper = np.clip((3.0 - r) / 0.5, 0.0, 1.0)  # 1 inside 2.5 sigma, 0 beyond 3 sigma
    taper = np.sin(0.5 * np.pi * taper) ** 2
    magnitude = (BLINK_PEAK * closure * width) * np.exp(-0.5 * r2) * taper
    field[y0:y1, x0:x1, 0] += (magnitude * n[0]).astype(np.float32)
    field[y0:y1, x0:x1, 1] += (magnitude * n[1]).astype(np.float32)
