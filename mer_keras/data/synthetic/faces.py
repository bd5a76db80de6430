"""Synthetic "subjects": distinct neutral faces made from a few real portrait photos.

A subject is one real photo put through a random but known geometric and photometric
transform and placed in a lab-style frame:

1. optional mirroring (the 68 landmark indices are permuted left <-> right, see
   :data:`MIRROR_PERMUTATION`);
2. a similarity transform with a slightly anisotropic scale (face width/height ratio
   x0.92-1.08) that sets the in-plane roll to a random value within +-8 degrees, the
   face size (brow-to-chin landmark extent = 30-45 % of the frame height, i.e. about
   40-60 % with the forehead) and the face position (near the frame centre);
3. a smooth identity warp: a low-frequency displacement field (a 4x4 grid of random
   vectors, cubic-interpolated, windowed to the face area) whose peak is 1.5-5 % of
   the face height (about 3-10 px at 480 rows), which changes the face's shape;
4. tone changes: per-channel gain, contrast, brightness and gamma; then conversion to
   grey for ``grey=True``.

``variety=True`` widens the identities beyond what the few bundled photos give
(:data:`VARIETY`):

5. a **morph** between two base photos (where there are two or more): the second photo is
   brought onto the first by a similarity fitted on their landmarks, both are warped
   piecewise-affinely (Delaunay triangles over the 68 landmarks, forehead points above the
   brows and the photo's border) onto a landmark shape blended with a random weight, and
   their faces are cross-dissolved with that weight inside a feathered face hull (outside
   it: the first photo);
6. **landmark-driven shape changes** on top: eye spacing, nose length, mouth width and jaw
   width each scaled by a random factor, by moving those landmark groups in the same
   piecewise-affine warp;
7. **lighting**: a directional linear shading across the face (gain up to +-25 % at the
   face's edge) and a colour cast (per-channel gain), before the tone changes of step 4.

Landmarks are detected once per base photo with dlib (cached) and pushed through the
same transforms, so they are exact for the synthetic image. Every produced subject is
checked with dlib (frontal detector, no upsampling): exactly one face must be detected
and its predicted landmarks must agree with the stored ones (mean distance below
:data:`LANDMARK_TOLERANCE` inter-ocular distances); otherwise a new random draw is
tried, up to :data:`MAX_TRIES` times.

Images are RGB (OpenCV reads BGR; the loader converts). Coordinates are ``(x, y)``
pixels with pixel centres at integers, as in dlib and OpenCV.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from mer_keras.resources import face_photo_paths, landmark_model_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

MAX_TRIES = 25
"""Random draws tried per subject before :func:`make_subjects` gives up."""

MAX_ROLL_DEG = 8.0
FACE_FRACTION = (0.30, 0.45)
"""Brow-to-chin landmark extent as a fraction of the frame height."""

LANDMARK_TOLERANCE = 0.12
"""Largest accepted mean distance, in inter-ocular distances, between the stored
landmarks and the ones dlib predicts on the finished subject image."""

MIN_FRAME_SIDE = 240

VARIETY = {
    "morph_weight": (0.2, 0.8),
    "eye_spacing": (0.9, 1.1),
    "nose_length": (0.88, 1.12),
    "mouth_width": (0.88, 1.12),
    "jaw_width": (0.92, 1.08),
    "light_gain": (0.0, 0.25),
    "colour_gain": (0.85, 1.15),
}
"""Ranges of the ``variety=True`` draws (uniform): blend weight of the second photo, the
shape factors (relative to the face's own proportions), the directional lighting gain at
the face's edge and the per-channel colour gain."""


def _mirror_permutation() -> np.ndarray:
    """Index map of dlib's 68 points under a horizontal flip: ``flipped[i]`` is original ``perm[i]``."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw line
    pairs += [(17 + i, 26 - i) for i in range(5)]  # eyebrows
    pairs += [(31, 35), (32, 34)]  # nose base
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lips
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR_PERMUTATION: np.ndarray = _mirror_permutation()
"""``MIRROR_PERMUTATION[i]`` is the landmark of the original image that becomes landmark
``i`` after a horizontal flip (an involution: self-paired points are the nose bridge
27-30, nose tip 33, lip centres 51, 57, 62, 66 and the chin 8)."""


@dataclass
class SyntheticSubject:
    """One synthetic subject's neutral face.

    ``image`` is uint8 RGB ``(H, W, 3)`` (``(H, W)`` for grey subjects) at the requested
    frame size; ``landmarks`` is ``(68, 2)`` float32 ``(x, y)`` in that image's pixels,
    dlib 68-point order.
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray


def make_subjects(
    n: int,
    *,
    frame_size: tuple[int, int] = (640, 480),
    grey: bool = False,
    seed: int = 0,
    photos: str | Path | Sequence[str | Path] | None = None,
    variety: bool = False,
) -> list[SyntheticSubject]:
    """Make ``n`` distinct synthetic subjects (``subject01``, ``subject02``, ...).

    ``frame_size`` is ``(width, height)``. ``photos`` is ``None`` for the portraits that
    ship inside the dependencies, or a folder, a single file or a list of face photos
    (photos without a detectable face are skipped with a warning); subject ``i`` is
    built from photo ``i mod len(photos)``. Base-photo landmarks are cached in-process.
    Subject ``i`` depends only on ``seed``, ``i`` and the other arguments (not on
    ``n``), so results are deterministic per seed. ``variety=True`` adds the morphs,
    shape changes and lighting of steps 5-7 of the module docstring, drawn from a separate
    random stream (``variety=False`` subjects are unchanged by the option's existence).
    Raises ``RuntimeError`` if no accepted draw is found in :data:`MAX_TRIES` attempts.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    width, height = _check_frame_size(frame_size)
    bases = [b for b in (_load_base(p) for p in _photo_list(photos)) if b is not None]
    if not bases:
        raise ValueError("none of the given photos contains a face dlib can detect")
    subjects = []
    for i in range(int(n)):
        name = f"subject{i + 1:02d}"
        rng = np.random.default_rng([int(seed), i])
        base = bases[i % len(bases)]
        lighting = None
        if variety:
            vrng = np.random.default_rng([int(seed), i, 1])
            k = len(bases)  # the partner is always another photo, cycling through them
            partner = bases[(i % k + 1 + (i // k) % (k - 1)) % k] if k > 1 else None
            base = _varied_base(base, partner, vrng)
            lighting = _lighting_draw(vrng)
        image, landmarks = _draw_subject(base, (width, height), grey, rng, name, lighting)
        subjects.append(SyntheticSubject(name, image, landmarks))
    return subjects


def detect_landmarks(image: np.ndarray, *, upsample: int = 0) -> list[np.ndarray]:
    """dlib faces and landmarks of an RGB or grey uint8 image: one ``(68, 2)`` float32 array per face,
    largest face first."""
    detector, predictor = _dlib_models()
    image = np.ascontiguousarray(image)
    rects = sorted(detector(image, upsample), key=lambda r: -r.area())
    out = []
    for rect in rects:
        shape = predictor(image, rect)
        out.append(np.array([(shape.part(k).x, shape.part(k).y) for k in range(68)], np.float32))
    return out


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of the horizontally flipped image (``x -> width - 1 - x``), re-indexed left <-> right."""
    pts = np.asarray(landmarks, np.float32)
    flipped = pts.copy()
    flipped[:, 0] = (width - 1) - flipped[:, 0]
    return flipped[MIRROR_PERMUTATION]


# ----------------------------------------------------------------------------- photos


def _check_frame_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in frame_size)
    except (TypeError, ValueError):
        raise ValueError(f"frame_size must be (width, height), got {frame_size!r}") from None
    if min(width, height) < MIN_FRAME_SIDE:
        raise ValueError(
            f"frame_size {frame_size!r} is too small: both sides must be >= {MIN_FRAME_SIDE} px "
            "for dlib to find the face"
        )
    return width, height


def _photo_list(photos: str | Path | Iterable[str | Path] | None) -> list[Path]:
    if photos is None:
        bundled = face_photo_paths()
        return [bundled[k] for k in sorted(bundled)]
    if isinstance(photos, (str, Path)):
        folder = Path(photos)
        if folder.is_dir():
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
            return paths
        photos = [folder]
    paths = [Path(p) for p in photos]
    if not paths:
        raise ValueError("photos is empty")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"photos not found: {missing}")
    return paths


@dataclass(frozen=True)
class _Base:
    image: np.ndarray  # RGB uint8, read-only
    landmarks: np.ndarray  # (68, 2) float64


def _load_base(path: Path) -> _Base | None:
    base = _base_photo(str(Path(path).resolve()))
    if base is None:
        warnings.warn(f"no face detected in {path}; the photo is skipped", stacklevel=3)
    return base


@functools.lru_cache(maxsize=64)
def _base_photo(path: str) -> _Base | None:
    """Read a photo as RGB and detect its largest face once (cached per path)."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    faces = detect_landmarks(rgb, upsample=0) or detect_landmarks(rgb, upsample=1)
    if not faces:
        return None
    rgb.setflags(write=False)
    return _Base(rgb, faces[0].astype(np.float64))


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmark_model_path()))


# ----------------------------------------------------------------------------- one subject


def _draw_subject(
    base: _Base, size: tuple[int, int], grey: bool, rng: np.random.Generator, name: str, lighting=None
) -> tuple[np.ndarray, np.ndarray]:
    """Random draws until dlib accepts the result; returns (image, landmarks)."""
    failures = []
    for _ in range(MAX_TRIES):
        image, landmarks = _render_subject(base, size, grey, rng, lighting)
        problem = _verify(image, landmarks)
        if problem is None:
            return image, landmarks.astype(np.float32)
        failures.append(problem)
    raise RuntimeError(
        f"could not make {name}: dlib rejected {MAX_TRIES} random draws "
        f"(last problems: {failures[-3:]}); try another seed, a larger frame_size or other photos"
    )


def _verify(image: np.ndarray, landmarks: np.ndarray) -> str | None:
    """``None`` if dlib finds exactly one face whose landmarks match ``landmarks``, else why not."""
    faces = detect_landmarks(image, upsample=0)
    if len(faces) != 1:
        return f"{len(faces)} faces detected"
    iod = float(np.hypot(*(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))))
    error = float(np.mean(np.hypot(*(faces[0] - landmarks).T))) / iod
    if error > LANDMARK_TOLERANCE:
        return f"landmark mismatch {error:.3f} IOD"
    return None


def _render_subject(
    base: _Base, size: tuple[int, int], grey: bool, rng: np.random.Generator, lighting=None
) -> tuple[np.ndarray, np.ndarray]:
    width, height = size
    photo, points = base.image, base.landmarks
    if rng.random() < 0.5:
        photo = photo[:, ::-1]
        points = mirror_landmarks(points, photo.shape[1]).astype(np.float64)
    affine = _placement(points, photo.shape[:2], size, rng)
    placed = _apply_affine(affine, points)
    identity_warp = _identity_field(placed, (height, width), rng)
    landmarks = placed + _sample_field(identity_warp, placed)
    map_x, map_y = _backward_map(identity_warp, affine)
    image = cv2.remap(
        np.ascontiguousarray(photo), map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    if lighting is not None:
        image = _light(image, landmarks, *lighting)
    image = _tone(image, rng)
    if grey:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image, landmarks


def _placement(
    points: np.ndarray, photo_hw: tuple[int, int], size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """2x3 affine photo -> frame: roll to a random angle, scale to the face fraction, place near the
    centre, shifted so that the photo covers the frame where it can (the rest is edge-replicated)."""
    width, height = size
    eye_a, eye_b = points[36:42].mean(0), points[42:48].mean(0)
    photo_roll = math.atan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])
    target_roll = math.radians(rng.uniform(-MAX_ROLL_DEG, MAX_ROLL_DEG))
    # Upright the face first, so its extent and anisotropic stretch are in face axes.
    up = _rotation(-photo_roll)
    upright = points @ up.T
    extent = upright.max(0) - upright.min(0)
    scale = rng.uniform(*FACE_FRACTION) * height / extent[1]
    stretch = rng.uniform(0.92, 1.08)
    linear = _rotation(target_roll) @ np.diag([scale * stretch, scale]) @ up
    centre = points.mean(0)
    half = 0.5 * np.abs(linear) @ (points.max(0) - points.min(0)) * 1.15  # rough half-size with margin
    target = np.array([width / 2.0, height / 2.0]) + rng.uniform(-1, 1, 2) * np.array([0.08 * width, 0.06 * height])
    target += _cover_shift(linear, target - linear @ centre, photo_hw, size)
    target = np.clip(target, half, np.array([width - 1.0, height - 1.0]) - half)
    affine = np.zeros((2, 3))
    affine[:, :2] = linear
    affine[:, 2] = target - linear @ centre
    return affine


def _cover_shift(
    linear: np.ndarray, offset: np.ndarray, photo_hw: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Frame-space shift that keeps the frame inside the photo where possible (fewer filled borders).

    Per photo axis: if the frame's footprint in the photo sticks out on one side only, the
    footprint is moved back inside (as far as the photo allows); the result is the
    matching shift of the frame-space translation.
    """
    width, height = size
    corners = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)
    inverse = np.linalg.inv(linear)
    footprint = (corners - offset) @ inverse.T
    lo, hi = footprint.min(0), footprint.max(0)
    limit = np.array([photo_hw[1] - 1.0, photo_hw[0] - 1.0])
    move = np.zeros(2)
    for axis in range(2):
        under, over = -lo[axis], hi[axis] - limit[axis]
        if under > 0 and over <= 0:
            move[axis] = min(under, -over)
        elif over > 0 and under <= 0:
            move[axis] = -min(over, -under)
    return -(linear @ move)


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def _identity_field(landmarks: np.ndarray, shape_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Low-frequency (dx, dy) field over the face area, peak 1.5-5 % of the face height, zero elsewhere."""
    h, w = shape_hw
    lo, hi = landmarks.min(0), landmarks.max(0)
    face_h = float(hi[1] - lo[1])
    centre = (lo + hi) / 2.0
    half = (hi - lo) * 0.85  # window covers the face plus a margin (forehead, cheeks)
    x0, y0 = np.floor(centre - half).astype(int)
    x1, y1 = np.ceil(centre + half).astype(int)
    field = np.zeros((h, w, 2), np.float32)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    coarse = rng.normal(size=(4, 4, 2)).astype(np.float32)
    patch = cv2.resize(coarse, (bw, bh), interpolation=cv2.INTER_CUBIC)
    wy = np.sin(np.linspace(0.0, np.pi, bh, dtype=np.float32)) ** 2
    wx = np.sin(np.linspace(0.0, np.pi, bw, dtype=np.float32)) ** 2
    patch *= (wy[:, None] * wx[None, :])[..., None]
    peak = float(np.sqrt((patch**2).sum(-1)).max())
    patch *= np.float32(rng.uniform(0.015, 0.05) * face_h / max(peak, 1e-6))
    # Paste the part of the patch that falls inside the frame.
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1 + 1, w), min(y1 + 1, h)
    field[fy0:fy1, fx0:fx1] = patch[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return field


def _sample_field(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W, 2) field at (x, y) points (edge values outside)."""
    h, w = field.shape[:2]
    x = np.clip(points[:, 0], 0, w - 1)
    y = np.clip(points[:, 1], 0, h - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, w - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = field.astype(np.float64)
    return (
        f[y0, x0] * (1 - fx) * (1 - fy)
        + f[y0, x0 + 1] * fx * (1 - fy)
        + f[y0 + 1, x0] * (1 - fx) * fy
        + f[y0 + 1, x0 + 1] * fx * fy
    )


def _backward_map(field: np.ndarray, affine: np.ndarray, iterations: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Photo coordinates to sample for every frame pixel q: ``A^-1 (p)`` with ``p + field(p) = q``.

    ``p`` is found by fixed-point iteration ``p <- q - field(p)`` (converges since the
    identity field is smooth, with gradient well below 1).
    """
    h, w = field.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    px, py = gx - field[..., 0], gy - field[..., 1]
    for _ in range(iterations - 1):
        d = cv2.remap(field, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        px, py = gx - d[..., 0], gy - d[..., 1]
    inverse = cv2.invertAffineTransform(affine)
    map_x = inverse[0, 0] * px + inverse[0, 1] * py + inverse[0, 2]
    map_y = inverse[1, 0] * px + inverse[1, 1] * py + inverse[1, 2]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _tone(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gain (x0.9-1.1), contrast (x0.8-1.2), brightness (+-15) and gamma (0.8-1.25)."""
    img = image.astype(np.float32)
    img *= rng.uniform(0.9, 1.1, 3).astype(np.float32)
    mean = float(img.mean())
    img = (img - mean) * np.float32(rng.uniform(0.8, 1.2)) + np.float32(mean + rng.uniform(-15, 15))
    img = np.clip(img, 0, 255) / 255.0
    img = 255.0 * img ** np.float32(rng.uniform(0.8, 1.25))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- identity variety


def _varied_base(base: _Base, partner: _Base | None, rng: np.random.Generator) -> _Base:
    """A new base photo: ``base`` morphed toward ``partner`` (if any) and reshaped (steps 5-6)."""
    lo, hi = VARIETY["morph_weight"]
    weight = float(rng.uniform(lo, hi)) if partner is not None else 0.0
    factors = {k: float(rng.uniform(*VARIETY[k])) for k in ("eye_spacing", "nose_length", "mouth_width", "jaw_width")}
    source = base.landmarks
    if partner is not None:
        similarity, _ = cv2.estimateAffinePartial2D(partner.landmarks, source, method=cv2.LMEDS)
        partner_points = _apply_affine(similarity, partner.landmarks)
        blended = (1.0 - weight) * source + weight * partner_points
    else:
        blended = source.copy()
    target = _reshape(blended, factors)
    h, w = base.image.shape[:2]
    images, sources = [base.image], [source]
    if partner is not None:
        images.append(cv2.warpAffine(np.ascontiguousarray(partner.image), similarity, (w, h), flags=cv2.INTER_CUBIC,
                                     borderMode=cv2.BORDER_REPLICATE))
        sources.append(partner_points)
    warped = [x.astype(np.float32) for x in _piecewise_warps(images, sources, target, (h, w))]
    image = warped[0]
    if partner is not None:
        mask = _face_mask(target, (h, w))[..., None] * np.float32(weight)
        image = image + mask * (warped[1] - image)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return _Base(out, target)


def _reshape(points: np.ndarray, factors: dict[str, float]) -> np.ndarray:
    """Landmarks with the eye spacing, nose length, mouth and jaw widths scaled in face axes."""
    eye_a, eye_b = points[36:42].mean(0), points[42:48].mean(0)
    axis_x = (eye_b - eye_a) / max(float(np.hypot(*(eye_b - eye_a))), 1e-6)
    axis_y = np.array([-axis_x[1], axis_x[0]])
    centre = (eye_a + eye_b) / 2.0
    out = points.copy()
    half = (eye_b - eye_a) / 2.0 * (factors["eye_spacing"] - 1.0)
    out[list(range(17, 22)) + list(range(36, 42))] -= half  # the right eye and brow move with its eye
    out[list(range(22, 27)) + list(range(42, 48))] += half
    nose_top = points[27]
    for i in range(28, 36):  # nose bridge and base stretched along the face's vertical axis from its top
        along = float((points[i] - nose_top) @ axis_y)
        out[i] += axis_y * along * (factors["nose_length"] - 1.0)
    mouth_centre = points[48:68].mean(0)
    for i in range(48, 68):
        across = float((points[i] - mouth_centre) @ axis_x)
        out[i] += axis_x * across * (factors["mouth_width"] - 1.0)
    for i in range(0, 17):
        across = float((points[i] - centre) @ axis_x)
        out[i] += axis_x * across * (factors["jaw_width"] - 1.0)
    return out


def _anchors(points: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Forehead points (the brows lifted by 0.6 of the brow-to-nose-tip distance) and a border ring."""
    h, w = shape_hw
    brows = points[17:27]
    lift = 0.6 * (points[33] - brows.mean(0))
    forehead = brows - lift
    xs, ys = np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5)
    border = [(x, 0) for x in xs] + [(x, h - 1) for x in xs]
    border += [(0, y) for y in ys[1:-1]] + [(w - 1, y) for y in ys[1:-1]]
    return np.vstack([forehead, np.array(border, np.float64)])


def _piecewise_warps(images: Sequence[np.ndarray], sources: Sequence[np.ndarray], target: np.ndarray,
                     shape_hw) -> list[np.ndarray]:
    """Each image warped so that its ``sources`` landmarks land on ``target`` (piecewise affine, cubic).

    The forehead anchors follow the landmarks of each shape; the border ring stays fixed.
    The triangulation of ``target`` and every pixel's barycentric coordinates in it are
    computed once for all the images.
    """
    from scipy.spatial import Delaunay

    h, w = shape_hw
    triangles = Delaunay(np.vstack([target, _anchors(target, (h, w))]))
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pixels = np.stack([gx.ravel(), gy.ravel()], 1)
    simplex = triangles.find_simplex(pixels)
    inside = simplex >= 0
    transforms = triangles.transform[simplex[inside]]  # (n, 3, 2): barycentric coordinates from dst points
    bary2 = np.einsum("nij,nj->ni", transforms[:, :2], pixels[inside] - transforms[:, 2])
    bary = np.concatenate([bary2, 1.0 - bary2.sum(1, keepdims=True)], 1)
    corners = triangles.simplices[simplex[inside]]  # (n, 3) point indices
    warped = []
    for image, source in zip(images, sources):
        src = np.vstack([source, _anchors(source, (h, w))])
        map_xy = pixels.copy()
        map_xy[inside] = np.einsum("ni,nij->nj", bary, src[corners])
        map_x = map_xy[:, 0].reshape(h, w).astype(np.float32)
        map_y = map_xy[:, 1].reshape(h, w).astype(np.float32)
        warped.append(cv2.remap(np.ascontiguousarray(image), map_x, map_y, cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REPLICATE))
    return warped


def _face_mask(points: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Feathered convex hull of the landmarks and forehead points, 1 inside, float32."""
    h, w = shape_hw
    hull_points = np.vstack([points, _anchors(points, shape_hw)[:10]])
    mask = np.zeros((h, w), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.rint(hull_points).astype(np.int32)), 1.0)
    face_h = float(np.ptp(points[:, 1]))
    sigma = max(1.0, 0.06 * face_h)
    return cv2.GaussianBlur(mask, (0, 0), sigma)


def _lighting_draw(rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """(gain at the face's edge, direction in radians, per-channel colour gains) for :func:`_light`."""
    gain = float(rng.uniform(*VARIETY["light_gain"]))
    return gain, float(rng.uniform(0.0, 2.0 * math.pi)), rng.uniform(*VARIETY["colour_gain"], 3).astype(np.float32)


def _light(image: np.ndarray, landmarks: np.ndarray, gain: float, angle: float, colour: np.ndarray) -> np.ndarray:
    """Directional linear shading across the face (``1 + gain`` at its edge, clipped at +-2 x gain), colour cast."""
    h, w = image.shape[:2]
    centre = landmarks.mean(0)
    radius = max(float(np.ptp(landmarks[:, 0])), float(np.ptp(landmarks[:, 1]))) / 2.0
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    along = ((gx - centre[0]) * math.cos(angle) + (gy - centre[1]) * math.sin(angle)) / np.float32(radius)
    shade = 1.0 + np.float32(gain) * np.clip(along, -2.0, 2.0)
    out = image.astype(np.float32) * shade[..., None] * colour[None, None, :]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
