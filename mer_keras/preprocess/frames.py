"""Frame-file integrity: complete files, one size and channel count per clip.

Shared by ``mer-keras prepare`` (:mod:`mer_keras.preprocess.cache`, and every path that
:func:`mer_keras.preprocess.face.load_grey` reads) and ``mer-keras predict``
(:mod:`mer_keras.inference.clips`), so that both commands refuse the same clips with the
same text.

Why: OpenCV decodes a truncated JPEG without an error -- ``cv2.imread`` returns an image
whose missing bottom rows are grey and only libjpeg prints "Premature end of JPEG file" --
and such a frame, used as an apex, gives a flow several times the clean one. OpenCV 5
returns ``None`` for truncated PNG, BMP, TIFF and WebP files, but a frame that is not
decoded (``prepare`` decodes only the onset and the apex) is checked from its bytes too:

* **JPEG** (ITU-T T.81 Annex B): the marker segments are walked from SOI; after each SOS
  the entropy-coded data is skipped to the next marker that is neither a stuffed ``FF 00``
  nor a restart marker ``RSTn``; the file is complete when the EOI marker ``FF D9`` is
  reached (bytes after it -- camera trailers -- are ignored, as libjpeg ignores them). The
  size and the number of components come from the SOFn segment.
* **PNG** (ISO/IEC 15948 §5.3): the chunks are walked from the signature; the file is
  complete when the ``IEND`` chunk is reached whole. Size and colour type from ``IHDR``.
* **BMP** (``BITMAPFILEHEADER`` + ``BITMAPINFOHEADER`` / ``BITMAPCOREHEADER``): for
  uncompressed bitmaps the file must hold ``bfOffBits + stride * |height|`` bytes. A
  palette bitmap counts as 1 channel when its palette is grey, else 3.
* other formats: decoded with ``cv2.IMREAD_UNCHANGED``; ``None`` is a refusal.

A clip's frames must then agree in size and channel count (:func:`check_consistent`):
frames of different cameras or formats in one folder are a mistake, and the alignment of
one frame's face applied to a frame of another size is meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np

PathLikeStr = Union[str, PathLike]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
"""PNG colour type -> channels (grey, RGB, palette, grey + alpha, RGBA)."""
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""JPEG start-of-frame markers (DHT ``C4``, JPG ``C8`` and DAC ``CC`` share the range)."""
_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})
"""JPEG markers without a length field besides EOI: TEM, RST0-7 and SOI."""


class FrameError(ValueError):
    """A frame file is incomplete or unreadable, or a clip's frames differ in size or channels."""


@dataclass(frozen=True)
class FrameInfo:
    """What a frame file declares: ``format`` (``"jpeg"``, ``"png"``, ``"bmp"``, ``"other"``
    or ``"array"``), ``width`` and ``height`` in pixels, ``channels`` (``None`` = not known)."""

    path: str
    format: str
    width: int
    height: int
    channels: int | None

    def describe(self) -> str:
        channels = "" if self.channels is None else f", {self.channels} channel{'s' * (self.channels != 1)}"
        return f"{self.width}x{self.height}{channels}"


def _truncated(path, what: str, before: str) -> FrameError:
    return FrameError(f"{path}: truncated {what}: the file ends before {before}; only part of the image would be "
                      "decoded (copy or extract the frame again)")


def _jpeg_info(path, data: bytes) -> FrameInfo:
    n, pos, size = len(data), 2, None
    end_marker = "its end-of-image marker (FF D9)"
    while True:
        pos = data.find(b"\xff", pos)  # markers follow segments directly; stray bytes are skipped as libjpeg does
        while 0 <= pos < n and data[pos] == 0xFF:
            pos += 1  # fill bytes
        if pos < 0 or pos >= n:
            raise _truncated(path, "JPEG", end_marker)
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            break
        if marker in _STANDALONE or marker == 0x00:
            continue
        if pos + 2 > n:
            raise _truncated(path, "JPEG", end_marker)
        length = int.from_bytes(data[pos: pos + 2], "big")
        if length < 2:
            raise FrameError(f"{path}: corrupt JPEG: a marker segment of length {length}")
        segment_end = pos + length
        if segment_end > n:
            raise _truncated(path, "JPEG", end_marker)
        if marker in _SOF_MARKERS and length >= 8 and size is None:
            height = int.from_bytes(data[pos + 3: pos + 5], "big")
            width = int.from_bytes(data[pos + 5: pos + 7], "big")
            size = (width, height, data[pos + 7])
        pos = segment_end
        if marker == 0xDA:  # start of scan: skip the entropy-coded data up to the next real marker
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0:
                    raise _truncated(path, "JPEG", end_marker)
                nxt = pos + 1
                while nxt < n and data[nxt] == 0xFF:
                    nxt += 1
                if nxt >= n:
                    raise _truncated(path, "JPEG", end_marker)
                if data[nxt] == 0x00 or 0xD0 <= data[nxt] <= 0xD7:
                    pos = nxt + 1
                    continue
                pos = nxt - 1
                break
    if size is None:
        raise FrameError(f"{path}: corrupt JPEG: no start-of-frame segment before the end-of-image marker")
    return FrameInfo(str(path), "jpeg", size[0], size[1], int(size[2]))


def _png_info(path, data: bytes) -> FrameInfo:
    n, pos, header = len(data), len(_PNG_SIGNATURE), None
    while True:
        if pos + 12 > n:
            raise _truncated(path, "PNG", "its IEND chunk")
        length = int.from_bytes(data[pos: pos + 4], "big")
        kind = data[pos + 4: pos + 8]
        end = pos + 12 + length
        if end > n:
            raise _truncated(path, "PNG", "its IEND chunk")
        if kind == b"IHDR" and length >= 13:
            body = data[pos + 8: pos + 8 + 13]
            header = (int.from_bytes(body[0:4], "big"), int.from_bytes(body[4:8], "big"), body[9])
        if kind == b"IEND":
            break
        pos = end
    if header is None:
        raise FrameError(f"{path}: corrupt PNG: no IHDR chunk")
    return FrameInfo(str(path), "png", header[0], header[1], _PNG_CHANNELS.get(int(header[2])))


def _bmp_info(path, data: bytes) -> FrameInfo:
    n = len(data)
    if n < 26:
        raise _truncated(path, "BMP", "the end of its header")
    offset = int.from_bytes(data[10:14], "little")
    dib = int.from_bytes(data[14:18], "little")
    if dib == 12:  # BITMAPCOREHEADER (OS/2)
        width, height = int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little", signed=True)
        bits, compression, entry, colours = int.from_bytes(data[24:26], "little"), 0, 3, 0
    else:
        if n < 14 + 40:
            raise _truncated(path, "BMP", "the end of its header")
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = int.from_bytes(data[22:26], "little", signed=True)
        bits = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
        entry, colours = 4, int.from_bytes(data[46:50], "little")
    if compression in (0, 3, 6):  # BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS: rows stored whole
        stride = (abs(width) * bits + 31) // 32 * 4
        if n < offset + stride * abs(height):
            raise _truncated(path, "BMP", f"its {abs(height)} rows of pixels")
    if bits <= 8:
        count = colours or (1 << bits)
        palette = data[14 + dib: 14 + dib + entry * count]
        table = np.frombuffer(palette[: len(palette) // entry * entry], np.uint8).reshape(-1, entry)[:, :3]
        channels = 1 if len(table) and bool(np.all(table == table[:, :1])) else 3
    else:
        channels = 4 if bits == 32 else 3
    return FrameInfo(str(path), "bmp", abs(width), abs(height), channels)


def inspect_frame(path: PathLikeStr) -> FrameInfo:
    """Check that the image file ``path`` is complete (see the module docstring) and return what it declares.

    Raises ``FileNotFoundError`` for a missing file and :class:`FrameError` for an incomplete,
    corrupt or undecodable one.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frame not found: {path}")
    data = path.read_bytes()
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_info(path, data)
    if data[:8] == _PNG_SIGNATURE:
        return _png_info(path, data)
    if data[:2] == b"BM":
        return _bmp_info(path, data)
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise FrameError(f"{path}: not an image OpenCV can decode")
    return FrameInfo(str(path), "other", int(image.shape[1]), int(image.shape[0]),
                     1 if image.ndim == 2 else int(image.shape[2]))


def read_grey(path: PathLikeStr, *, checked: bool = False) -> np.ndarray:
    """Grey uint8 pixels of a complete frame file: :func:`inspect_frame`, then ``cv2.imread(path, IMREAD_GRAYSCALE)``.

    The pixels are exactly those ``cv2.imread`` gives (the decoder is unchanged; the check
    only refuses files it would decode partly). ``checked=True`` skips :func:`inspect_frame`
    when the caller has just run it on ``path``.
    """
    return _imread(path, checked, colour=False)


def read_colour(path: PathLikeStr, *, checked: bool = False) -> np.ndarray:
    """BGR uint8 pixels of a complete frame file, as ``cv2.imread(path)`` gives them (grey files: 3 equal channels).

    The cropped-release route reads frames this way before resizing and converting to grey,
    in the order of the official Off-TANet ``data.py`` (imread -> resize -> grey).
    """
    return _imread(path, checked, colour=True)


def _imread(path: PathLikeStr, checked: bool, *, colour: bool) -> np.ndarray:
    import cv2

    if not checked:
        inspect_frame(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FrameError(f"{path}: not an image OpenCV can decode")
    return image


def check_consistent(infos: Sequence[FrameInfo]) -> None:
    """Raise :class:`FrameError` unless every frame has the same size and channel count.

    The message names the clip's folder (the first frame's; nothing for ``"array"`` frames),
    the first frame's size and the frames (up to three, by file name) that differ from it,
    so ``prepare`` (the annotated frames) and ``predict`` (every image of the folder) word
    it alike.
    """
    if not infos:
        return
    first = infos[0]
    odd = [i for i in infos if (i.width, i.height, i.channels) != (first.width, first.height, first.channels)]
    if not odd:
        return
    shown = ", ".join(f"{Path(i.path).name} is {i.describe()}" for i in odd[:3])
    more = f" (and {len(odd) - 3} more)" if len(odd) > 3 else ""
    where = "" if first.format == "array" else f"{Path(first.path).parent}: "
    raise FrameError(f"{where}frames differ in size or channels: the first frame is {first.describe()}, but {shown}"
                     f"{more}; every frame of a clip must have one size and one channel count (one camera, one format)")


def check_clip_frames(paths: Iterable[PathLikeStr]) -> list[FrameInfo]:
    """:func:`inspect_frame` on every frame file of a clip, then :func:`check_consistent`; their infos in order.

    The first incomplete frame raises; ``FileNotFoundError`` for a missing one.
    """
    infos = [inspect_frame(p) for p in paths]
    check_consistent(infos)
    return infos


__all__ = ["FrameError", "FrameInfo", "check_clip_frames", "check_consistent", "inspect_frame", "read_colour",
           "read_grey"]
