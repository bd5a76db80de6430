"""Landmark-based facial masks (ShuffleNetV2-SVM Fig. 2 (e); MobileViT Fig. 2 (E)).

The ShuffleNetV2-SVM paper: "eye regions and regions that produce little or no
movement are masked by marked facial marker points so as to avoid noise caused by eye
movements (e.g., blinking) and to reduce redundant features". The MobileViT paper
masks the eyes only. Neither gives the geometry, so it is explicit here
(:class:`MaskConfig`), measured in units of the inter-ocular distance (IOD: distance
between the two eye centres) so that it does not depend on the output size:

* eyes: convex hull of points 36-41 and of 42-47, each grown by ``eye_margin`` x IOD
  (a Minkowski sum with a disc, i.e. a morphological dilation), so that eyelids and
  blink-driven skin motion around the eye are also removed;
* outside the face (the background, hair, neck: regions with "little or no"
  expression movement): everything outside the convex hull of the jaw line 0-16 and
  of the brows 17-26 lifted by ``brow_lift`` x IOD (the forehead above the brows moves
  in brow raises, AU1/AU2, so it is kept), grown by ``face_margin`` x IOD;
* optionally the nose (``mask_nose``): hull of 27-35 grown by ``nose_margin`` x IOD;
  the nose is nearly rigid, but the nose wrinkle (AU9) is a disgust cue, so it is kept
  by default.

Masks are boolean ``H x W`` arrays with **True = keep**. Landmarks are the 68 dlib
points in the (aligned) output coordinates, ``(x, y)`` pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from .face import LEFT_EYE, RIGHT_EYE, check_landmarks, inter_ocular_distance

JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
NOSE = tuple(range(27, 36))


@dataclass(frozen=True)
class MaskConfig:
    """Geometry of the facial mask; lengths are multiples of the inter-ocular distance.

    Defaults (``MaskConfig()``, the ShuffleNetV2-SVM reading): eyes masked with a margin
    of 0.2 IOD, outside-the-face masked with the brows lifted by 0.5 IOD, nose kept.
    ``MaskConfig.eyes_only()`` is the MobileViT reading, ``MaskConfig.none()`` keeps
    everything (Off-TANet and STSTNet do not mask).
    """

    mask_eyes: bool = True
    eye_margin: float = 0.2
    mask_outside_face: bool = True
    brow_lift: float = 0.5
    face_margin: float = 0.0
    mask_nose: bool = False
    nose_margin: float = 0.05

    def __post_init__(self) -> None:
        for name in ("eye_margin", "brow_lift", "face_margin", "nose_margin"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0 or value > 3:
                raise ValueError(f"MaskConfig.{name} must be in [0, 3] inter-ocular distances, got {value}")

    @classmethod
    def none(cls) -> "MaskConfig":
        """Keep every pixel."""
        return cls(mask_eyes=False, mask_outside_face=False, mask_nose=False)

    @classmethod
    def eyes_only(cls, eye_margin: float = 0.2) -> "MaskConfig":
        """Mask the eyes only (MobileViT paper, Fig. 2 (E))."""
        return cls(mask_eyes=True, eye_margin=eye_margin, mask_outside_face=False, mask_nose=False)

    @property
    def is_identity(self) -> bool:
        return not (self.mask_eyes or self.mask_outside_face or self.mask_nose)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MaskConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MaskConfig fields: {sorted(unknown)}")
        return cls(**data)


def _fill_hull(canvas: np.ndarray, points: np.ndarray, grow_px: float) -> None:
    """Set the convex hull of ``points`` grown by ``grow_px`` to 1 in ``canvas`` (uint8)."""
    shift = 4  # sub-pixel vertex precision for fillConvexPoly: 1/16 px
    hull = cv2.convexHull(np.round(points * (1 << shift)).astype(np.int32))
    cv2.fillConvexPoly(canvas, hull, 1, lineType=cv2.LINE_8, shift=shift)
    radius = int(round(grow_px))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        canvas[:] = cv2.dilate(canvas, kernel)


def build_mask(landmarks_out: np.ndarray, size: int | tuple[int, int], config: MaskConfig | None = None) -> np.ndarray:
    """Boolean keep-mask (True = keep) of shape ``size`` from output-space landmarks.

    ``size`` is an int (square) or ``(height, width)``. See the module docstring for the
    regions; grown margins are rounded to whole pixels (at least the hull itself is
    always masked when its flag is set).
    """
    config = config or MaskConfig()
    pts = check_landmarks(landmarks_out)
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"mask size must be positive, got {size}")
    keep = np.ones((h, w), dtype=bool)
    if config.is_identity:
        return keep
    iod = inter_ocular_distance(pts)
    if config.mask_outside_face:
        face = np.zeros((h, w), np.uint8)
        brows = pts[list(BROWS)].copy()
        brows[:, 1] -= config.brow_lift * iod  # aligned faces are upright: "up" is -y
        _fill_hull(face, np.vstack([pts[list(JAW)], brows]), config.face_margin * iod)
        keep &= face.astype(bool)
    if config.mask_eyes:
        for eye in (LEFT_EYE, RIGHT_EYE):
            region = np.zeros((h, w), np.uint8)
            _fill_hull(region, pts[list(eye)], config.eye_margin * iod)
            keep &= ~region.astype(bool)
    if config.mask_nose:
        region = np.zeros((h, w), np.uint8)
        _fill_hull(region, pts[list(NOSE)], config.nose_margin * iod)
        keep &= ~region.astype(bool)
    return keep


def apply_mask(image_or_flow: np.ndarray, mask: np.ndarray, fill: float = 0) -> np.ndarray:
    """Copy of ``image_or_flow`` with masked-out pixels (``mask == False``) set to ``fill``.

    Accepts ``H x W``, ``H x W x C`` with C <= 4 (image channels, flow ``(u, v)``,
    flow stacks) and ``T x H x W`` / ``T x H x W x C`` clips (the mask is broadcast over
    frames). Dtype is preserved.
    """
    arr = np.asarray(image_or_flow)
    m = np.asarray(mask)
    if m.dtype != bool:
        raise ValueError(f"mask must be boolean (True = keep), got dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    out = arr.copy()
    if arr.shape[:2] == m.shape and (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] <= 4)):
        out[~m] = fill  # H x W, or H x W x C with C <= 4 channels
    elif arr.ndim in (3, 4) and arr.shape[1:3] == m.shape:
        out[:, ~m] = fill  # T x H x W or T x H x W x C
    else:
        raise ValueError(f"mask shape {m.shape} does not match array shape {arr.shape}")
    return out
