"""Face detection, 68-point landmarks and in-plane alignment of micro-expression frames.

Implements the pre-processing of the ShuffleNetV2-SVM paper (Fig. 2 (a)-(d): grey
conversion, face extraction and cropping, rotation of the face to horizontal by the
angle of Eq. 1) and the same steps of the MobileViT paper; the output size is a
parameter (224 ShuffleNetV2, 256 MobileViT, 112 Off-TANet / ARFNet, 28 STSTNet).

Conventions
-----------
* Images are ``numpy`` arrays: colour images are **BGR** (as ``cv2.imread`` returns
  them; BGRA is accepted), grey images are 2-D. Everything downstream is grey uint8.
* Points are ``(x, y)`` in pixels, x to the right, y down, origin at the centre of the
  top-left pixel (OpenCV's convention).
* Landmarks follow dlib's 68-point (iBUG 300-W) scheme: jaw 0-16, brows 17-26, nose
  27-35, eye on the image's left 36-41, eye on the image's right 42-47, mouth 48-67.
* A flow field is ``H x W x 2`` float32 with channels ``(u, v) = (dx, dy)`` in pixels.

The alignment is one similarity transform (rotation about the eyes' midpoint, crop,
uniform scale) applied with a single ``cv2.warpAffine``, so each output frame is
interpolated once (cubic by default, as the Off-TANet pipeline resizes its crops).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from ..resources import landmark_model_path
from .frames import FrameInfo, check_consistent, read_grey

ImageLike = Union[str, PathLike, np.ndarray]

LEFT_EYE = tuple(range(36, 42))
"""dlib indices of the eye that appears on the image's left (the subject's right eye)."""
RIGHT_EYE = tuple(range(42, 48))
"""dlib indices of the eye that appears on the image's right (the subject's left eye)."""

ALIGN_MODES = ("reuse", "per_frame")


class NoFaceError(RuntimeError):
    """Raised when the face detector finds no face where one is required."""


# --------------------------------------------------------------------------- images


def to_grey(image: np.ndarray) -> np.ndarray:
    """Grey uint8 view of ``image``: 2-D is returned as is, 3-channel is BGR, 4 is BGRA.

    Floating images are taken to be in [0, 1] when their maximum is <= 1, else in
    [0, 255]; they are rounded and clipped to uint8.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        if image.shape[2] == 3:
            image = cv2.cvtColor(_as_uint8(image), cv2.COLOR_BGR2GRAY)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(_as_uint8(image), cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"expected a grey, BGR or BGRA image, got shape {image.shape}")
    elif image.ndim != 2:
        raise ValueError(f"expected a 2-D grey or H x W x 3 BGR image, got shape {image.shape}")
    return _as_uint8(image)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.size == 0:
        raise ValueError("empty image")
    if np.issubdtype(image.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(image)) <= 1.0 else 1.0
        return np.clip(np.rint(image * scale), 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def load_grey(image: ImageLike) -> np.ndarray:
    """Read a path (any format ``cv2.imread`` reads) or take an array, and return grey uint8.

    A path is read with :func:`mer_keras.preprocess.frames.read_grey`: an incomplete file
    (a truncated JPEG, which OpenCV would decode partly) raises
    :class:`~mer_keras.preprocess.frames.FrameError`.
    """
    if isinstance(image, (str, PathLike)):
        return read_grey(image)
    return to_grey(np.asarray(image))


def _describe(image: ImageLike, index: int | None = None) -> str:
    where = f"frame {index}" if index is not None else "the image"
    if isinstance(image, (str, PathLike)):
        return f"{where} ({Path(image)})"
    return where


# --------------------------------------------------------------------------- landmarks


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"expected 68 x 2 dlib landmarks (x, y), got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("landmarks contain NaN or inf")
    return pts


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(A, B)`` of the two eyes: the means of points 36-41 and of 42-47.

    ``A`` is the eye on the image's left (the subject's right eye), ``B`` the eye on the
    image's right; both are ``(x, y)`` float64 pixel coordinates.
    """
    pts = check_landmarks(landmarks)
    return pts[list(LEFT_EYE)].mean(axis=0), pts[list(RIGHT_EYE)].mean(axis=0)


def eyes_midpoint(landmarks: np.ndarray) -> np.ndarray:
    """The point ``C`` midway between the two eye centres (the rotation centre of Eq. 1)."""
    a, b = eye_centres(landmarks)
    return (a + b) / 2.0


def rotation_angle(landmarks: np.ndarray) -> float:
    """Angle gamma of the eye line with the horizontal, in degrees (ShuffleNetV2-SVM Eq. 1).

    Eq. 1: ``gamma = arctan((y_C - y_A) / (x_C - x_A))`` with ``A`` the left eye's centre
    and ``C`` the eyes' midpoint. It is evaluated with ``atan2`` so that it is defined for
    any eye line; for ``x_C > x_A`` (the eye 36-41 on the image's left, as for any upright
    face) both agree. In image coordinates (y down) a positive angle means the eye on the
    image's right is lower; rotating the image by ``+gamma`` with
    ``cv2.getRotationMatrix2D`` (counter-clockwise on screen) makes the eye line horizontal.
    """
    a, b = eye_centres(landmarks)
    c = (a + b) / 2.0
    dx, dy = c[0] - a[0], c[1] - a[1]
    if dx == 0.0 and dy == 0.0:
        raise ValueError("the two eye centres coincide; the landmarks are degenerate")
    return math.degrees(math.atan2(dy, dx))


def inter_ocular_distance(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres, in pixels."""
    a, b = eye_centres(landmarks)
    return float(np.hypot(*(b - a)))


# --------------------------------------------------------------------------- transform


@dataclass(frozen=True)
class AlignmentTransform:
    """A similarity transform from raw-frame pixels to an ``output_size`` square.

    ``matrix`` is the 2 x 3 affine ``[A | t]`` with ``p_out = A @ p_raw + t`` for ``(x, y)``
    column vectors; ``A = scale * R(angle)``. ``angle_deg`` is the Eq. 1 angle that was
    removed, ``scale`` the output pixels per raw pixel, ``centre`` the rotation centre C
    (raw pixels) and ``crop_side`` the side of the square crop in (rotated) raw pixels.
    """

    matrix: np.ndarray
    output_size: int
    angle_deg: float = 0.0
    scale: float = 1.0
    centre: tuple[float, float] = (0.0, 0.0)
    crop_side: float = 0.0

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (2, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"matrix must be a finite 2 x 3 affine, got {m!r}")
        if abs(np.linalg.det(m[:, :2])) < 1e-12:
            raise ValueError("matrix is singular")
        if int(self.output_size) < 1:
            raise ValueError(f"output_size must be >= 1, got {self.output_size}")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "output_size", int(self.output_size))

    @property
    def linear(self) -> np.ndarray:
        """The 2 x 2 linear part ``A`` (rotation times scale) acting on vectors."""
        return self.matrix[:, :2]

    @property
    def inverse(self) -> np.ndarray:
        """The 2 x 3 affine mapping output pixels back to raw-frame pixels."""
        return cv2.invertAffineTransform(self.matrix)

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``N x 2`` raw ``(x, y)`` points into output coordinates (float64)."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must be N x 2 (x, y), got shape {pts.shape}")
        return pts @ self.matrix[:, :2].T + self.matrix[:, 2]

    def inverse_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``N x 2`` output points back to raw-frame coordinates."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must be N x 2 (x, y), got shape {pts.shape}")
        inv = self.inverse
        return pts @ inv[:, :2].T + inv[:, 2]

    def resized(self, size: int) -> "AlignmentTransform":
        """The same crop mapped onto a ``size`` x ``size`` output (flow at a working resolution).

        The crop's square covers the output's pixel area ``[-0.5, S - 0.5]`` (see
        :func:`estimate_alignment`), so ``x_W = (W / S) * (x_S + 0.5) - 0.5``.
        """
        size = int(size)
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        ratio = size / self.output_size
        matrix = np.array(self.matrix, dtype=np.float64)
        matrix[:, :2] *= ratio
        matrix[:, 2] = ratio * (matrix[:, 2] + 0.5) - 0.5
        return AlignmentTransform(matrix=matrix, output_size=size, angle_deg=self.angle_deg,
                                  scale=self.scale * ratio, centre=self.centre, crop_side=self.crop_side)

    def transform_flow(self, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Express a raw-frame flow field in output coordinates.

        ``flow`` is ``H x W x 2`` (u, v) in raw pixels, defined on the raw frame's pixel
        grid. Because the transform is affine, a displacement ``d`` at raw point ``p``
        becomes ``A @ d`` at ``M(p)``: vectors are rotated and scaled by ``A`` and the
        field is resampled at the output pixel positions (``M^-1`` of each output pixel,
        bilinear by default, edge values replicated). Returns ``S x S x 2`` float32 in
        output pixels.
        """
        f = np.asarray(flow, dtype=np.float32)
        if f.ndim != 3 or f.shape[2] != 2:
            raise ValueError(f"flow must be H x W x 2 (u, v), got shape {f.shape}")
        s = self.output_size
        resampled = cv2.warpAffine(f, self.matrix, (s, s), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
        a = self.linear.astype(np.float32)
        return (resampled.reshape(-1, 2) @ a.T).reshape(s, s, 2).astype(np.float32)


def estimate_alignment(landmarks: np.ndarray, size: int, margin: float = 0.1) -> AlignmentTransform:
    """Alignment transform from raw-frame landmarks to a ``size`` x ``size`` output.

    Steps (ShuffleNetV2-SVM Fig. 2 (c)-(d), Eq. 1):

    1. rotate about the eyes' midpoint C by the Eq. 1 angle so that the eye line is
       horizontal;
    2. crop rule: take the axis-aligned bounding box of the *rotated* 68 landmarks
       (brows to chin, jaw line to jaw line), let ``side = max(width, height) * (1 +
       2 * margin)`` and centre a square of that side on the box's centre, i.e. the
       landmarks' extent plus ``margin`` of it on every side, centred;
    3. scale the square uniformly to ``size`` x ``size``.

    ``margin`` is a fraction of the landmarks' extent (0.1 = 10 % on each side).
    """
    pts = check_landmarks(landmarks)
    size = int(size)
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if not (0.0 <= margin <= 2.0):
        raise ValueError(f"margin must be in [0, 2] (fraction of the landmarks' extent), got {margin}")
    angle = rotation_angle(pts)
    c = eyes_midpoint(pts)
    rot = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, 1.0)
    rotated = pts @ rot[:, :2].T + rot[:, 2]
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    extent = float(max(hi - lo))
    if extent <= 1.0:
        raise ValueError("landmarks span less than one pixel; cannot crop")
    side = extent * (1.0 + 2.0 * margin)
    centre = (lo + hi) / 2.0
    origin = centre - side / 2.0
    k = size / side
    # Pixel centres sit at integer coordinates, so the crop [origin, origin + side] maps
    # onto the output's pixel area [-0.5, size - 0.5]: x_out = k * (x_rot - origin) - 0.5.
    shift = np.array([[k, 0.0, -k * origin[0] - 0.5], [0.0, k, -k * origin[1] - 0.5]])
    full = shift @ np.vstack([rot, [0.0, 0.0, 1.0]])
    return AlignmentTransform(
        matrix=full,
        output_size=size,
        angle_deg=float(angle),
        scale=float(k),
        centre=(float(c[0]), float(c[1])),
        crop_side=float(side),
    )


def align_frame(image: ImageLike, transform: AlignmentTransform, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Apply ``transform`` to one frame: grey uint8 ``S x S`` (BGR/grey/path input).

    One ``cv2.warpAffine`` with ``interpolation`` (cubic by default); pixels that fall
    outside the raw frame repeat the frame's edge (so no artificial black borders enter
    the optical flow).
    """
    grey = load_grey(image)
    s = transform.output_size
    return cv2.warpAffine(grey, transform.matrix, (s, s), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------- detector


class FaceAligner:
    """dlib frontal-face detector (HOG) + 68-point shape predictor, created lazily.

    The predictor model (about 100 MB) is loaded on first use and shared by all
    ``FaceAligner`` instances of the process that use the same model path. dlib objects
    are not documented as thread-safe, so each thread gets its own copies.

    ``upsample`` is the number of times dlib upsamples the image before detecting
    (0 finds faces larger than about 80 px; each step doubles the resolution and costs
    about 4x the time); ``fallback_upsample`` is tried when nothing is found at
    ``upsample`` (``None`` disables the retry). When several faces are found the
    largest is used.
    """

    _shared = threading.local()

    def __init__(self, upsample: int = 0, fallback_upsample: int | None = 1, model_path: str | PathLike | None = None):
        if int(upsample) < 0 or (fallback_upsample is not None and int(fallback_upsample) < 0):
            raise ValueError("upsample counts must be >= 0")
        self.upsample = int(upsample)
        self.fallback_upsample = None if fallback_upsample is None else int(fallback_upsample)
        self.model_path = str(model_path) if model_path is not None else None

    # -- lazy dlib objects
    def _objects(self):
        import dlib  # imported lazily: heavy, and not needed for flow-only work

        cache = getattr(self._shared, "objects", None)
        if cache is None:
            cache = {}
            self._shared.objects = cache
        path = self.model_path or str(landmark_model_path())
        if "detector" not in cache:
            cache["detector"] = dlib.get_frontal_face_detector()
        key = ("predictor", path)
        if key not in cache:
            if not Path(path).is_file():
                raise FileNotFoundError(f"dlib landmark model not found: {path}")
            cache[key] = dlib.shape_predictor(path)
        return dlib, cache["detector"], cache[key]

    @property
    def detector(self):
        return self._objects()[1]

    @property
    def predictor(self):
        return self._objects()[2]

    def detect(self, image: ImageLike) -> tuple[int, int, int, int] | None:
        """Largest face as ``(left, top, right, bottom)`` pixels, or ``None``."""
        grey = load_grey(image)
        _, detector, _ = self._objects()
        tries = [self.upsample]
        if self.fallback_upsample is not None and self.fallback_upsample != self.upsample:
            tries.append(self.fallback_upsample)
        for up in tries:
            rects = detector(grey, up)
            if len(rects) > 0:
                best = max(rects, key=lambda r: r.width() * r.height())
                return (best.left(), best.top(), best.right(), best.bottom())
        return None

    def landmarks(self, image: ImageLike, box: tuple[int, int, int, int] | None = None) -> np.ndarray | None:
        """68 x 2 float64 ``(x, y)`` landmarks of the largest face (or inside ``box``).

        Returns ``None`` when ``box`` is not given and no face is detected.
        """
        grey = load_grey(image)
        if box is None:
            box = self.detect(grey)
            if box is None:
                return None
        return self.landmarks_in_box(grey, box)

    def landmarks_in_box(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """Run only the shape predictor on ``grey`` inside ``box`` (left, top, right, bottom)."""
        dlib, _, predictor = self._objects()
        grey = to_grey(grey)
        left, top, right, bottom = (int(round(v)) for v in box)
        if right <= left or bottom <= top:
            raise ValueError(f"empty face box {box}")
        shape = predictor(grey, dlib.rectangle(left, top, right, bottom))
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)

    def alignment(self, image: ImageLike, size: int, margin: float = 0.1) -> tuple[AlignmentTransform, np.ndarray]:
        """Detect, find landmarks and estimate the alignment; raise ``NoFaceError`` if no face."""
        pts = self.landmarks(image)
        if pts is None:
            raise NoFaceError(f"no face detected in {_describe(image)}")
        return estimate_alignment(pts, size, margin=margin), pts


# --------------------------------------------------------------------------- clips


@dataclass
class AlignedClip:
    """Result of :func:`align_clip`.

    ``frames``: ``T x S x S`` grey uint8; ``landmarks``: the reference frame's 68
    landmarks in output coordinates (``68 x 2`` float64); ``transform``: the reference
    frame's transform; ``transforms``: the transform actually used for each frame
    (the reference one for every frame in ``"reuse"`` mode and for fallbacks);
    ``n_fallback``: frames in ``"per_frame"`` mode where no face was found and the
    reference transform was used; ``fallback_indices``: their indices.
    """

    frames: np.ndarray
    landmarks: np.ndarray
    transform: AlignmentTransform
    n_fallback: int = 0
    transforms: list[AlignmentTransform] = field(default_factory=list)
    fallback_indices: list[int] = field(default_factory=list)
    reference: int = 0


def _as_frame_list(frames) -> list:
    if isinstance(frames, np.ndarray):
        if frames.ndim not in (3, 4) or frames.shape[0] == 0:
            raise ValueError(f"a clip array must be T x H x W (grey) or T x H x W x C (BGR), got shape {frames.shape}")
        return [frames[i] for i in range(frames.shape[0])]
    frames = list(frames)
    if not frames:
        raise ValueError("the clip has no frames")
    return frames


def align_clip(
    frames: Sequence[ImageLike] | np.ndarray,
    size: int,
    reference: int = 0,
    mode: str = "reuse",
    margin: float = 0.1,
    aligner: FaceAligner | None = None,
    interpolation: int = cv2.INTER_CUBIC,
) -> AlignedClip:
    """Align every frame of a clip to ``size`` x ``size`` grey uint8.

    ``mode="reuse"`` (default): detect the face and landmarks once, on frame
    ``reference`` (the onset), and apply that transform to all frames. The camera and
    head are still during a micro-expression, and re-detecting per frame adds landmark
    jitter comparable to the motion being measured.

    ``mode="per_frame"``: detect on every frame; a frame without a detected face uses the
    reference transform and is counted in ``n_fallback``.

    Frames are paths or arrays (BGR as ``cv2.imread`` gives them, or grey). Raises
    ``NoFaceError`` if the reference frame has no detectable face, and
    :class:`~mer_keras.preprocess.frames.FrameError` if a frame file is incomplete or the
    frames differ in size (one transform cannot align them all).
    """
    if mode not in ALIGN_MODES:
        raise ValueError(f"mode must be one of {ALIGN_MODES}, got {mode!r}")
    items = _as_frame_list(frames)
    n = len(items)
    if not (-n <= reference < n):
        raise IndexError(f"reference frame {reference} out of range for a clip of {n} frames")
    reference = reference % n
    aligner = aligner or FaceAligner()
    greys = [load_grey(f) for f in items]
    check_consistent([FrameInfo(str(f) if isinstance(f, (str, PathLike)) else f"frame {i}",
                                "array" if isinstance(f, np.ndarray) else "file", g.shape[1], g.shape[0], None)
                      for i, (f, g) in enumerate(zip(items, greys))])
    ref_pts = aligner.landmarks(greys[reference])
    if ref_pts is None:
        raise NoFaceError(f"no face detected in the reference {_describe(items[reference], reference)}")
    ref_tf = estimate_alignment(ref_pts, size, margin=margin)
    out = np.empty((n, ref_tf.output_size, ref_tf.output_size), dtype=np.uint8)
    transforms: list[AlignmentTransform] = []
    fallbacks: list[int] = []
    for i, grey in enumerate(greys):
        tf = ref_tf
        if mode == "per_frame" and i != reference:
            pts = aligner.landmarks(grey)
            if pts is None:
                fallbacks.append(i)
            else:
                tf = estimate_alignment(pts, size, margin=margin)
        transforms.append(tf)
        out[i] = align_frame(grey, tf, interpolation=interpolation)
    return AlignedClip(
        frames=out,
        landmarks=ref_tf.transform_points(ref_pts),
        transform=ref_tf,
        n_fallback=len(fallbacks),
        transforms=transforms,
        fallback_indices=fallbacks,
        reference=reference,
    )
