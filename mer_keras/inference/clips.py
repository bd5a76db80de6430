"""Reading a clip to recognise: a video file, a folder of frames, two images, or arrays.

:func:`read_clip` turns any accepted source into a :class:`RawClip` of grey uint8 frames
(the only form the pre-processing uses: :func:`mer_keras.preprocess.face.load_grey`):

* a **video file** (anything OpenCV's ``cv2.VideoCapture`` opens: ``.avi``, ``.mp4``,
  ``.mov``, ...): every frame, converted from BGR to grey;
* a **folder of frames**: every image file in it (``.png``, ``.jpg``, ``.jpeg``,
  ``.bmp``, ``.tif``, ``.tiff``), sorted *naturally* (``img9`` before ``img10``, as the
  datasets number their frames), read with ``cv2.imread(..., IMREAD_GRAYSCALE)`` exactly
  as ``mer-keras prepare`` reads them;
* a **sequence** of image paths or arrays (e.g. ``[onset_path, apex_path]``), or a
  ``T x H x W (x C)`` array (colour frames are BGR, as OpenCV gives them).

Bad input raises :class:`ClipError` (a ``ValueError``) with a message naming the file:
a missing path, a video OpenCV cannot open or decode, a folder without images, an
unreadable image. Image files go through the checks ``mer-keras prepare`` runs
(:func:`mer_keras.preprocess.frames.check_clip_frames`, same message): an incomplete file
(a truncated JPEG, which OpenCV would decode partly and which could be spotted as the
apex) or frames of different sizes or channel counts refuse the whole clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence, Union

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm")
MAX_FRAMES = 3000
"""Largest number of frames read from one video or folder (micro-expressions last under
0.5 s, i.e. 100 frames at 200 fps); longer sources are refused with a :class:`ClipError`
asking for a cut around the expression."""

ClipSource = Union[str, PathLike, np.ndarray, Sequence]


class ClipError(ValueError):
    """A clip cannot be recognised (unreadable, too few frames, no face); the message says why."""


@dataclass
class RawClip:
    """Grey uint8 frames of one clip and where they came from.

    ``frames``: list of ``H x W`` uint8 arrays; ``names``: one label per frame (file name,
    ``"frame 12"``); ``source``: a printable description; ``kind``: ``"video"``,
    ``"folder"``, ``"images"`` or ``"arrays"``; ``read_ms``: time spent reading and
    converting to grey.
    """

    frames: list
    names: list
    source: str
    kind: str
    read_ms: float = 0.0
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically: ``img9.jpg`` < ``img10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(name))]


def describe(source: ClipSource) -> str:
    """A short printable name of a clip source (a path as given, or ``"<array>"``)."""
    if isinstance(source, (str, PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))}>"
    items = list(source)
    if items and all(isinstance(i, (str, PathLike)) for i in items):
        return " + ".join(str(i) for i in items)
    return f"<{len(items)} frames>"


def read_clip(source: ClipSource, *, max_frames: int = MAX_FRAMES) -> RawClip:
    """Read ``source`` into grey frames (see the module docstring); raises :class:`ClipError`."""
    import time

    start = time.perf_counter()
    if isinstance(source, (str, PathLike)):
        path = Path(source)
        if not path.exists():
            raise ClipError(f"{path}: no such file or folder")
        if path.is_dir():
            clip = _read_folder(path, max_frames)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            clip = _read_images([path], str(path))
        else:
            clip = _read_video(path, max_frames)
    elif isinstance(source, np.ndarray):
        if source.ndim not in (3, 4) or source.shape[0] == 0:
            raise ClipError(f"a clip array must be T x H x W (grey) or T x H x W x C (BGR), got shape {source.shape}")
        clip = _from_arrays(list(source), describe(source))
    else:
        items = list(source)
        if not items:
            raise ClipError("the clip has no frames")
        if all(isinstance(i, (str, PathLike)) for i in items):
            clip = _read_images([Path(i) for i in items], describe(items))
        elif all(isinstance(i, np.ndarray) for i in items):
            clip = _from_arrays(items, describe(items))
        else:
            raise ClipError("a frame list must hold image paths or numpy arrays, not a mix")
    clip.read_ms = 1e3 * (time.perf_counter() - start)
    return clip


def _to_grey(image: np.ndarray, where: str) -> np.ndarray:
    from mer_keras.preprocess.face import to_grey

    try:
        return to_grey(image)
    except ValueError as exc:
        raise ClipError(f"{where}: {exc}") from None


def _from_arrays(items: list, source: str) -> RawClip:
    from mer_keras.preprocess.frames import FrameError, FrameInfo, check_consistent

    arrays = [np.asarray(f) for f in items]
    infos = [FrameInfo(f"frame {i}", "array", int(a.shape[1]) if a.ndim >= 2 else 0, int(a.shape[0]) if a.ndim else 0,
                       (1 if a.ndim == 2 else int(a.shape[2])) if a.ndim in (2, 3) else None)
             for i, a in enumerate(arrays)]
    try:
        check_consistent(infos)
    except FrameError as exc:
        raise ClipError(f"{source}: {exc}") from None
    frames = [_to_grey(a, f"{source} frame {i}") for i, a in enumerate(arrays)]
    return RawClip(frames, [f"frame {i}" for i in range(len(frames))], source, "arrays")


def _read_images(paths: list, source: str) -> RawClip:
    from mer_keras.preprocess.frames import FrameError, FrameInfo, check_clip_frames, check_consistent, read_grey

    for path in paths:
        if not path.is_file():
            raise ClipError(f"{path}: no such image file")
    try:  # every file complete, one size and channel count: the checks and words of `prepare`
        infos = check_clip_frames(paths)
        frames = [read_grey(p, checked=True) for p in paths]
        # the decoded sizes too (EXIF orientation can turn a frame), with the same wording
        check_consistent([FrameInfo(i.path, i.format, f.shape[1], f.shape[0], i.channels)
                          for i, f in zip(infos, frames)])
    except FrameError as exc:
        raise ClipError(str(exc)) from None
    return RawClip(frames, [p.name for p in paths], source, "images" if len(paths) <= 2 else "folder")


def _read_folder(path: Path, max_frames: int) -> RawClip:
    files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise ClipError(f"{path}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) > max_frames:
        raise ClipError(f"{path}: {len(files)} frames is more than {max_frames}; cut the clip around the expression")
    clip = _read_images(files, str(path))
    clip.kind = "folder"
    return clip


def _read_video(path: Path, max_frames: int) -> RawClip:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ClipError(f"{path}: OpenCV cannot open it as a video (unknown format, corrupt file, or a codec "
                            "this OpenCV build lacks)")
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            frames.append(_to_grey(frame, f"{path} frame {len(frames)}"))
            if len(frames) > max_frames:
                raise ClipError(f"{path}: more than {max_frames} frames; cut the clip around the expression")
    finally:
        capture.release()
    if not frames:
        raise ClipError(f"{path}: no frame could be decoded (corrupt or empty video)")
    return RawClip(frames, [f"frame {i}" for i in range(len(frames))], str(path), "video")


__all__ = ["ClipError", "IMAGE_SUFFIXES", "MAX_FRAMES", "RawClip", "VIDEO_SUFFIXES", "describe", "natural_key",
           "read_clip"]
