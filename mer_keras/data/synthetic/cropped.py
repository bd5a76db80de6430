"""The datasets' cropped releases in the synthetic writer: the face box and the cropped layouts.

Several datasets are also distributed as face crops, and the official Off-TANet
``data.py`` reads those rather than the raw frames (preprocessing.md). A released crop is
a registered face: one box per clip, the same for every frame, cut at the recording's
native resolution (no resize), about 150-250 px on a side. The synthetic twin of such a
release crops every written frame of a clip with one fixed box per subject:

* :func:`crop_box` -- the box from a subject's 68 landmarks: their bounding box, widened by
  :data:`CROP_SIDES` of its width on each side and raised by :data:`CROP_FOREHEAD` of its
  height above the brows (so the brows and a little forehead are in), down to the chin,
  clipped to the frame;
* :class:`CroppedRelease` -- how a raw layout's paths become the cropped release's: the
  top folder renamed and a file-name prefix added (CASME II
  ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` ->
  ``Cropped/sub01/EP02_01f/reg_img46.jpg``, datasets.md);
* :class:`ReleasePaths` -- the clip folders and frame files of one release of a layout,
  with the layout's own path interface, so the writer and the fault injection treat the raw
  and the cropped release alike.

Boxes are half-open pixel ranges ``(x0, y0, x1, y1)``: the crop is
``frame[y0:y1, x0:x1]``, of ``(y1 - y0)`` rows and ``(x1 - x0)`` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CROP_FOREHEAD = 0.25
"""Forehead kept above the highest landmark (the brows), as a fraction of the landmarks' height."""

CROP_SIDES = 0.05
"""Margin kept beside the jaw line on each side, as a fraction of the landmarks' width."""

CROP_COLUMNS = ("crop_x0", "crop_y0", "crop_x1", "crop_y1")
"""Columns of the ground-truth table (``clips.csv``) holding a clip's crop box."""


def crop_box(landmarks, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The fixed face box ``(x0, y0, x1, y1)`` of a subject, from its ``(68, 2)`` ``(x, y)`` landmarks.

    ``frame_size`` is ``(width, height)``. Top = brow top minus :data:`CROP_FOREHEAD` of the
    landmarks' height, bottom = the chin, sides = the jaw line plus :data:`CROP_SIDES` of the
    landmarks' width; rounded outwards and clipped to the frame.
    """
    points = np.asarray(landmarks, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not len(points):
        raise ValueError(f"landmarks must be an (N, 2) array of (x, y) points, got shape {points.shape}")
    (x_lo, y_lo), (x_hi, y_hi) = points.min(0), points.max(0)
    width, height = int(frame_size[0]), int(frame_size[1])
    margin_x, forehead = CROP_SIDES * (x_hi - x_lo), CROP_FOREHEAD * (y_hi - y_lo)
    x0 = max(0, math.floor(x_lo - margin_x))
    y0 = max(0, math.floor(y_lo - forehead))
    x1 = min(width, math.ceil(x_hi + margin_x) + 1)
    y1 = min(height, math.ceil(y_hi) + 1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the landmarks lie outside the {width}x{height} frame: empty box {(x0, y0, x1, y1)}")
    return x0, y0, x1, y1


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` as a contiguous array (grey or colour)."""
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


@dataclass(frozen=True)
class CroppedRelease:
    """How a raw layout's paths map to its cropped release.

    ``raw_folder`` is the raw layout's top folder under the dataset root, ``folder`` the
    cropped release's, ``prefix`` what the cropped frame files add to the raw names
    (``reg_`` for CASME and CASME II, datasets.md). ``source`` says where the layout is known
    from (datasets.md, the official Off-TANet code) or that it is inferred.
    """

    raw_folder: str
    folder: str
    prefix: str = ""
    source: str = ""

    def move(self, root: Path, raw_path: Path) -> Path:
        """The cropped release's counterpart of a raw folder under ``root`` (the top folder renamed)."""
        relative = Path(raw_path).relative_to(root)
        if not relative.parts or relative.parts[0] != self.raw_folder:
            raise ValueError(f"{raw_path} is not under {Path(root) / self.raw_folder}")
        return Path(root, self.folder, *relative.parts[1:])

    def frame(self, root: Path, raw_frame: Path) -> Path:
        """The cropped release's counterpart of a raw frame file (moved, and the file name prefixed)."""
        moved = self.move(root, raw_frame)
        return moved.with_name(self.prefix + moved.name)


class ReleasePaths:
    """Clip folders and frame files of one release of a layout, with the layout's path methods.

    ``cropped=None`` is the raw release (the layout's own paths); otherwise every path is
    moved into the :class:`CroppedRelease`.
    """

    def __init__(self, layout, cropped: CroppedRelease | None = None):
        self.layout = layout
        self.cropped = cropped

    @property
    def release(self) -> str:
        return "raw" if self.cropped is None else "cropped"

    def clip_dir(self, root: Path, plan) -> Path:
        folder = self.layout.clip_dir(root, plan)
        return folder if self.cropped is None else self.cropped.move(root, folder)

    def frame_path(self, root: Path, plan, number: int) -> Path:
        path = self.layout.frame_path(root, plan, number)
        return path if self.cropped is None else self.cropped.frame(root, path)

    def image(self, frame: np.ndarray, box) -> np.ndarray:
        """What this release stores for a rendered frame: the frame itself, or its crop by ``box``."""
        return frame if self.cropped is None else crop(frame, box)

    def __repr__(self) -> str:
        return f"ReleasePaths({self.layout.name!r}, {self.release!r})"
