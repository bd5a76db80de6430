"""Helpers shared by the dataset readers: header matching, frame listing and the repair rules.

Every rule that repairs or drops a clip is implemented once here and logged through an
:class:`~mer_keras.data.manifest.IssueLog`; the readers' docstrings point to these rules:

=====================================  =========  ==============================================
problem                                action     rule
=====================================  =========  ==============================================
required annotation column missing     error      :class:`AnnotationError` naming column and file
duplicate clip row                     dropped    the first row of a (subject, clip) pair is kept
emotion not in the dataset vocabulary  dropped
subject / onset / offset not a number  dropped
onset after offset                     dropped
apex blank or not a number (``/``)     fixed      apex := middle frame ``(onset + offset) // 2``
apex outside onset..offset             fixed      apex := middle frame (SAMM ``032_3_1``)
clip folder missing or empty           dropped
no frame file inside onset..offset     dropped
onset / offset frame file missing      fixed      range shrunk to the first / last existing frame
frame files missing inside the range   fixed      the existing frames are kept
apex frame file missing                fixed      apex := nearest existing frame (earlier on ties)
=====================================  =========  ==============================================
"""

from __future__ import annotations

import math
import re
import warnings
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from ..manifest import ISSUE_COLUMNS, AnnotationError, IssueLog, make_manifest

FRAME_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff")
_EXT = "(?:" + "|".join(FRAME_EXTENSIONS) + ")"


def frame_regex(pattern: str) -> re.Pattern:
    """Compile a frame-name pattern; ``{ext}`` stands for any image extension (case-insensitive)."""
    return re.compile("^" + pattern.replace("{ext}", _EXT) + "$", re.IGNORECASE)


# ----------------------------------------------------------------------------- headers


def header_key(name) -> str:
    """Normalised header: lower case, only letters and digits (``' Onset Frame '`` -> ``onsetframe``)."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def select_columns(
    table: pd.DataFrame,
    spec: Mapping[str, tuple[str, ...]],
    path: Path | str,
    optional: Iterable[str] = (),
) -> pd.DataFrame:
    """Pick annotation columns by name and rename them to canonical names.

    ``spec`` maps a canonical name to the header spellings accepted for it, the first
    being the dataset's documented name. Matching ignores case, spaces and punctuation,
    so blank ``Unnamed: N`` columns and extra columns are simply not selected
    (datasets.md: "a reader must select columns by name, not by position").
    A missing required column raises :class:`AnnotationError` naming the column and file.
    Fully blank rows (spacer lines of a sheet) are skipped: they describe no clip.
    """
    optional = set(optional)
    by_key: dict[str, str] = {}
    for col in table.columns:
        by_key.setdefault(header_key(col), col)
    picked = {}
    for canonical, spellings in spec.items():
        found = next((by_key[header_key(s)] for s in spellings if header_key(s) in by_key), None)
        if found is None:
            if canonical in optional:
                continue
            raise AnnotationError(
                f"required column {spellings[0]!r} not found in annotation file {path} "
                f"(columns present: {[str(c) for c in table.columns]})"
            )
        picked[canonical] = table[found]
    return pd.DataFrame(picked).dropna(how="all").reset_index(drop=True)


def find_header_row(raw: pd.DataFrame, required: Iterable[str], preferred: int | None = None) -> int | None:
    """Index of the row of a header-less read that holds all ``required`` header names."""
    keys = {header_key(r) for r in required}
    rows = ([preferred] if preferred is not None and preferred < len(raw) else []) + list(range(min(len(raw), 40)))
    for i in rows:
        if keys <= {header_key(v) for v in raw.iloc[i].tolist() if not _blank(v)}:
            return i
    return None


def read_sheet(path: Path, **kw) -> pd.DataFrame:
    """``pandas.read_excel`` that names the file when it cannot be parsed.

    Legacy ``.xls`` files (CASME) are read with xlrd, whose pandas engine is deprecated;
    that deprecation warning is silenced here (python-calamine would replace it).
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*xlrd.*deprecated.*")
            return pd.read_excel(path, **kw)
    except (ValueError, KeyError, OSError) as exc:
        raise AnnotationError(f"cannot read annotation file {path}: {exc}") from exc
    except Exception as exc:  # a damaged workbook: zip, zlib, XML, openpyxl or xlrd errors
        if not _damaged_workbook(exc):
            raise
        raise AnnotationError(f"cannot read annotation file {path} ({type(exc).__name__}: {exc}): it is damaged or "
                              "truncated; copy it again from the dataset's distribution") from exc


def _damaged_workbook(exc: BaseException) -> bool:
    """Whether ``exc`` is how a truncated or corrupt .xlsx/.xls fails (zip, zlib, XML, openpyxl, xlrd)."""
    import xml.etree.ElementTree
    import zipfile
    import zlib

    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError, xml.etree.ElementTree.ParseError)):
        return True
    return type(exc).__name__ in ("InvalidFileException", "XLRDError", "XMLSyntaxError")


def find_annotation(root: Path, annotation, patterns: Iterable[str], dataset: str) -> Path:
    """The annotation path: ``annotation`` if given (relative to ``root`` allowed), else the first match."""
    if annotation is not None:
        path = Path(annotation)
        if not path.is_absolute() and not path.exists():
            path = root / path
        if not path.is_file():
            raise FileNotFoundError(f"{dataset}: annotation file {path} not found")
        return path
    for pattern in patterns:
        hits = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("~$"))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"{dataset}: no annotation file matching {list(patterns)} in {root}")


def first_existing_dir(root: Path, candidates: Iterable[str], override=None) -> Path:
    """``override`` (relative to ``root`` allowed), else the first candidate folder under ``root``, else ``root``."""
    if override is not None:
        path = Path(override)
        return path if path.is_absolute() else root / path
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root


def locate_frames(
    root: Path, raw_dirs: Iterable[str], cropped_dirs: Iterable[str], release: str, override, dataset: str
) -> tuple[Path, str]:
    """The frames folder of one release and the release it holds: ``(folder, "raw" | "cropped")``.

    * ``override`` (``frames_dir=``, relative to ``root`` allowed) wins and is taken as the
      requested ``release``;
    * ``release="raw"``: the first of ``raw_dirs`` under ``root``; where none exists but a
      cropped release does, that one (recorded ``"cropped"``); else ``root`` itself;
    * ``release="cropped"``: the first of ``cropped_dirs`` under ``root``; none raises
      ``FileNotFoundError`` naming the folders looked for and the two fixes.
    """
    if override is not None:
        return first_existing_dir(root, (), override), release
    raw_dirs, cropped_dirs = tuple(raw_dirs), tuple(cropped_dirs)
    cropped = next((root / name for name in cropped_dirs if (root / name).is_dir()), None)
    if release == "cropped":
        if cropped is None:
            raise missing_cropped_release(dataset, root, cropped_dirs)
        return cropped, "cropped"
    raw = next((root / name for name in raw_dirs if (root / name).is_dir()), None)
    if raw is None and cropped is not None:
        return cropped, "cropped"
    return (raw or root), "raw"


def missing_cropped_release(dataset: str, root: Path, looked_for: Iterable[str]) -> FileNotFoundError:
    """The error of ``release="cropped"`` when no cropped-release folder exists under ``root``."""
    return FileNotFoundError(
        f"{dataset}: release='cropped' but none of the cropped-release folders {list(looked_for)} exists under "
        f"{root}; pass release='raw' to read the raw frames (and align them), or frames_dir= the folder that holds "
        "the cropped clips"
    )


# ----------------------------------------------------------------------------- values


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def as_int(value) -> int | None:
    """An annotation cell as an int; ``None`` for blanks, ``/`` and other non-numbers."""
    if _blank(value) or isinstance(value, bool):
        return None
    if isinstance(value, (int,)):
        return int(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if math.isnan(number) or number != int(number):
        return None
    return int(number)


def as_text(value) -> str:
    """An annotation cell as stripped text (``''`` for blanks; ``6.0`` -> ``'6'``)."""
    if _blank(value):
        return ""
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value).strip()


def normalise_label_map(label_map: Mapping | None) -> dict[str, str | None]:
    """Lower-cased emotion -> 3-class name (or ``None``)."""
    return {str(k).strip().lower(): v for k, v in (label_map or {}).items()}


def middle(onset: int, offset: int) -> int:
    """The middle frame number of an onset..offset range (lower middle for even lengths)."""
    return (onset + offset) // 2


# ----------------------------------------------------------------------------- frames


def list_frames(folder: Path | None, regex: re.Pattern) -> dict[int, Path]:
    """Frame number -> path for the files of ``folder`` whose names match ``regex`` (group 1 = number)."""
    if folder is None or not folder.is_dir():
        return {}
    out = {}
    for entry in folder.iterdir():
        m = regex.match(entry.name)
        if m:
            out[int(m.group(1))] = entry
    return out


def nearest(numbers: list[int], target: int) -> int:
    """The element of sorted ``numbers`` closest to ``target`` (the earlier one on ties)."""
    i = bisect_left(numbers, target)
    if i == 0:
        return numbers[0]
    if i == len(numbers):
        return numbers[-1]
    before, after = numbers[i - 1], numbers[i]
    return after if after - target < target - before else before


class ReaderBase:
    """Base of every reader: builds ``.manifest`` (with ``attrs["issues"]``) and ``.issues``.

    Subclasses set ``name``, ``fps``, ``vocabulary`` (lower-case emotions the release
    uses), ``default_label_map`` and implement :meth:`_rows`. ``label_map`` overrides the
    emotion -> 3-class mapping (keys case-insensitive; unmapped emotions get ``None``);
    its keys also extend the vocabulary.
    """

    name: str = ""
    fps: float = float("nan")
    vocabulary: tuple[str, ...] = ()
    default_label_map: Mapping[str, str | None] = {}
    frames_release: str = "raw"  # the release of the folder read; readers of a cropped release set it

    def __init__(self, root, annotation=None, label_map=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.name}: dataset root {self.root} is not a folder")
        self.annotation = annotation
        self.label_map = normalise_label_map(self.default_label_map if label_map is None else label_map)
        self.log = IssueLog(self.name)
        self._seen: set[tuple[str, str]] = set()
        rows = list(self._rows())
        self.manifest = make_manifest(rows, self.log.frame())

    @property
    def issues(self) -> pd.DataFrame:
        """The issue table (columns ``ISSUE_COLUMNS``): every clip fixed or dropped."""
        return self.manifest.attrs.get("issues", pd.DataFrame(columns=list(ISSUE_COLUMNS)))

    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, clips={len(self.manifest)}, issues={len(self.issues)})"

    def _rows(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared rules -------------------------------------------------------------------

    def label_of(self, emotion: str):
        return self.label_map.get(emotion.strip().lower())

    def known_emotion(self, subject, clip, emotion: str) -> bool:
        """Rule: an emotion outside the vocabulary (and the label map) drops the clip."""
        key = emotion.strip().lower()
        if key in self.vocabulary or key in self.label_map:
            return True
        self.log.add(subject, clip, "unknown emotion", "dropped", f"{emotion!r} is not in the {self.name} vocabulary")
        return False

    def first_occurrence(self, subject, clip) -> bool:
        """Rule: a repeated (subject, clip) row is dropped, the first one is kept."""
        key = (str(subject), str(clip))
        if key in self._seen:
            self.log.add(subject, clip, "duplicate clip row", "dropped", "the first row is kept")
            return False
        self._seen.add(key)
        return True

    def checked_range(self, subject, clip, onset, apex, offset):
        """Onset/offset must be numbers in order; a blank or outside apex becomes the middle frame.

        Returns ``(onset, apex, offset)`` as ints, or ``None`` when the clip is dropped.
        """
        on, off = as_int(onset), as_int(offset)
        if on is None or off is None:
            self.log.add(subject, clip, "onset/offset not a number", "dropped", f"onset={onset!r} offset={offset!r}")
            return None
        if on > off:
            self.log.add(subject, clip, "onset after offset", "dropped", f"onset={on} offset={off}")
            return None
        ap = as_int(apex)
        if ap is None:
            mid = middle(on, off)
            self.log.add(subject, clip, "apex blank or not a number", "fixed", f"apex={apex!r} -> middle frame {mid}")
            return on, mid, off
        if not on <= ap <= off:
            mid = middle(on, off)
            self.log.add(subject, clip, "apex outside onset..offset", "fixed",
                         f"apex={ap} not in {on}..{off} -> middle frame {mid}")
            return on, mid, off
        return on, ap, off

    def frames_in_range(self, subject, clip, available: dict[int, Path], onset, apex, offset, folder=None):
        """Apply the missing-frame rules; returns ``(numbers, paths, onset, apex, offset)`` or ``None``."""
        if not available:
            self.log.add(subject, clip, "clip folder missing or empty", "dropped", f"no frame files in {folder}")
            return None
        numbers = sorted(n for n in available if onset <= n <= offset)
        if not numbers:
            self.log.add(subject, clip, "no frame file inside onset..offset", "dropped",
                         f"{onset}..{offset} in {folder}")
            return None
        if numbers[0] != onset or numbers[-1] != offset:
            self.log.add(
                subject, clip, "onset/offset frame file missing", "fixed",
                f"{onset}..{offset} -> {numbers[0]}..{numbers[-1]}",
            )
            onset, offset = numbers[0], numbers[-1]
        expected = offset - onset + 1
        if len(numbers) < expected:
            self.log.add(
                subject, clip, "frame files missing inside the clip", "fixed",
                f"{expected - len(numbers)} of {expected} frames missing; the existing ones are kept",
            )
        if apex not in available or not onset <= apex <= offset:
            new = nearest(numbers, apex)
            self.log.add(subject, clip, "apex frame file missing", "fixed", f"apex {apex} -> nearest frame {new}")
            apex = new
        return tuple(numbers), tuple(str(available[n]) for n in numbers), onset, apex, offset

    def make_row(self, subject, clip, emotion, numbers, paths, onset, apex, offset, fps=None) -> dict:
        return dict(
            dataset=self.name,
            subject=str(subject),
            clip=str(clip),
            frames=paths,
            frame_numbers=numbers,
            onset=int(onset),
            apex=int(apex),
            offset=int(offset),
            emotion=emotion,
            label=self.label_of(emotion),
            fps=self.fps if fps is None else fps,
            release=self.frames_release,
        )


class AnnotatedReader(ReaderBase):
    """A reader driven by an annotation table with subject/clip/onset/apex/offset/emotion rows.

    Subclasses implement :meth:`_table` (canonical columns ``subject, clip, onset, apex,
    offset, emotion``; ``apex`` may be absent) and :meth:`_clip_folder`, and set
    ``frame_pattern``. Rows then go through the rules of this module in order:
    subject check, duplicate, vocabulary, range/apex, frame files.
    """

    frame_pattern: re.Pattern
    optional_columns: tuple[str, ...] = ()
    frames_dir = None  # readers taking ``frames_dir=`` set it before ``super().__init__``
    release = "raw"  # readers taking ``release=`` set it (checked) before ``super().__init__``
    frame_dirs: tuple[str, ...] = ()  # raw-release folders under root, in order of preference
    cropped_dirs: tuple[str, ...] = ()  # cropped-release folders under root (none: no cropped release)

    def _locate(self) -> Path:
        """Find the annotation file and the frames root of the requested release (:func:`locate_frames`)."""
        self.annotation_path = find_annotation(self.root, self.annotation, self.annotation_patterns, self.name)
        self.frames_root, self.frames_release = locate_frames(
            self.root, self.frame_dirs, self.cropped_dirs, self.release, self.frames_dir, self.name)
        return self.annotation_path

    def _table(self) -> pd.DataFrame:
        """The first sheet of the annotation file, columns selected by name (``columns``)."""
        path = self._locate()
        return select_columns(read_sheet(path, sheet_name=0), self.columns, path, optional=self.optional_columns)

    def _subject_id(self, value) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _clip_id(self, record: dict, subject: str) -> str:
        return as_text(record["clip"])

    def _clip_folder(self, subject: str, clip: str, record: dict) -> Path | None:  # pragma: no cover
        raise NotImplementedError

    def _apex_value(self, record: dict, subject: str, clip: str, onset, offset):
        return record.get("apex")

    def _rows(self):
        table = self._table()
        for record in table.to_dict("records"):
            row = self._row(record)
            if row is not None:
                yield row

    def _row(self, record: dict):
        clip_text = as_text(record.get("clip"))
        subject = self._subject_id(record.get("subject"))
        if subject is None:
            self.log.add(None, clip_text, "subject not readable", "dropped", f"subject={record.get('subject')!r}")
            return None
        clip = self._clip_id(record, subject)
        if not self.first_occurrence(subject, clip):
            return None
        emotion = as_text(record.get("emotion"))
        if not self.known_emotion(subject, clip, emotion):
            return None
        apex = self._apex_value(record, subject, clip, record.get("onset"), record.get("offset"))
        checked = self.checked_range(subject, clip, record.get("onset"), apex, record.get("offset"))
        if checked is None:
            return None
        folder = self._clip_folder(subject, clip, record)
        frames = self.frames_in_range(subject, clip, list_frames(folder, self.frame_pattern), *checked, folder=folder)
        if frames is None:
            return None
        return self.make_row(subject, clip, emotion, *frames)
