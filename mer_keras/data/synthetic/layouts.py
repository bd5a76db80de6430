"""Synthetic datasets written in the real datasets' on-disk layouts (``datasets.md``).

Real micro-expression datasets are licence-gated, so the project tests its readers and
pipelines on synthetic twins written here in exactly the real formats: folder layout,
frame file names with realistic frame numbers, and the annotation spreadsheet with the
real sheet structure and column names. The dataset readers load them unchanged.

Two modes:

* **rendered** (default): ``n_subjects`` synthetic faces (:func:`make_subjects`), each
  with ``clips_per_subject`` clips rendered by :func:`render_clip`. Emotions are drawn
  from the dataset's own vocabulary weighted by its real counts; each subject's first
  three clips cover the three classes. The rendered motion class is the emotion's
  3-class group (:data:`MOTION_CLASS`; ``others`` for unmapped emotions); the
  expression both moves the face and shades it (creases, bulges: :mod:`.appearance`,
  ``appearance_strength=0`` for motion only).
* **structural twin** (``counts="real"``): the real annotation size, subjects and
  emotion counts (e.g. CASME II 255 rows / 26 subjects), arranged so the protocol
  composites reproduce the tables of ``datasets.md`` exactly; frames are three 8x8
  grey images per clip (no rendering), so a twin writes in about a second.

Ground truth is kept outside the dataset's own files: ``root/.synthetic/clips.csv``
(one row per clip, keyed by the readers' ``subject``/``clip`` ids) and, in rendered mode,
``root/.synthetic/ground_truth/{subject}__{clip}.npz`` (``apex_flow`` onset->apex,
``label``, ``blink``, ``onset_index``/``apex_index``/``offset_index``, ``frame_numbers``).
:func:`load_ground_truth` reads them back.

``faults=`` injects bad input for the readers' tests (see :data:`FAULTS`); the clips hit
are listed in the returned dict and in the ``fault`` column of ``clips.csv``.

``release=`` writes the raw frames (``"raw"``, default), the dataset's cropped release
(``"cropped"``) or both (``"both"``), for the datasets that have one (:data:`CROPPED_RELEASES`:
CASME, CASME II, CAS(ME)^2, SAMM, SMIC, SMIC-E). The cropped twin holds, for every clip, the
face crop of every written frame (padding included) at the same frame numbers, in the
cropped release's folder and file names; one fixed box per subject from its landmarks
(:func:`.cropped.crop_box`), at native resolution, stored in ``clips.csv``
(``crop_x0, crop_y0, crop_x1, crop_y1``; empty when no crop was written). The ground-truth
flows stay in full-frame pixels: a crop's flow is ``apex_flow[y0:y1, x0:x1]``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd

from .cropped import CROP_COLUMNS, CroppedRelease, ReleasePaths, crop_box

SIDECAR = ".synthetic"

WRITE_RELEASES = ("raw", "cropped", "both")
"""Values of ``write_dataset(release=...)``: the raw frames, the cropped release, or both."""

FAULTS = ("apex_outside", "missing_frames", "unknown_emotion", "duplicate_clip", "missing_column", "blank_apex")
"""Injectable bad-input cases:

``apex_outside``    one row's apex far before its onset (like SAMM ``032_3_1``)
``missing_frames``  one clip's frames removed entirely (its folder deleted, or emptied where
                    the folder is the clip); for annotated sets also one clip's onset frame
                    and one clip's apex frame file deleted
``unknown_emotion`` one row's emotion replaced by ``confusion`` (outside every vocabulary)
``duplicate_clip``  one row repeated (folder datasets: a clip copied to a second label folder)
``missing_column``  the apex column (CAS(ME)^2: the expression-type column) removed
``blank_apex``      one row's apex written ``/`` and another's left blank
"""

MOTION_CLASS = {
    **{e: "positive" for e in ("happiness", "happy", "positive", "amusement")},
    "surprise": "surprise",
    **{e: "negative" for e in ("anger", "contempt", "disgust", "fear", "sadness", "repression", "negative")},
}
"""Emotion (lower case) -> rendered motion class; anything else renders ``others``."""


def motion_class(emotion: str) -> str:
    """The class rendered for an emotion: its 3-class group, ``others`` when unmapped."""
    return MOTION_CLASS.get(str(emotion).strip().lower(), "others")


# ============================================================================ clip plans


@dataclass
class ClipPlan:
    """One clip to write: reader-normalised ids, release emotion, frame numbering.

    ``start`` is the frame number of the first rendered frame. After rendering,
    ``onset``/``apex``/``offset`` hold the dataset frame numbers written to the annotation.
    """

    subject: str
    clip: str
    emotion: str
    subject_index: int = 0
    start: int = 1
    extra: dict = field(default_factory=dict)
    numbers: tuple[int, ...] = ()
    onset: int = 0
    apex: int = 0
    offset: int = 0
    blink: bool = False
    motion: str = "others"
    fault: str = ""
    crop: tuple[int, int, int, int] | None = None


def _deal(counts: dict[str, int], holders: Sequence) -> list[tuple[object, str]]:
    """Deal ``counts[emotion]`` items round-robin over ``holders`` (deterministic)."""
    items = [e for e, n in counts.items() for _ in range(n)]
    return [(holders[i % len(holders)], e) for i, e in enumerate(items)]


def _class_emotions(weights: dict[str, int]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for emotion in weights:
        out.setdefault(motion_class(emotion), []).append(emotion)
    return out


def _draw_emotions(weights: dict[str, int], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` emotions for one subject: first one per class present, then by real frequency."""
    names = list(weights)
    p = np.array([weights[e] for e in names], float)
    p /= p.sum()
    by_class = _class_emotions(weights)
    chosen = []
    for cls in ("negative", "positive", "surprise"):
        if cls in by_class and len(chosen) < n:
            options = by_class[cls]
            q = np.array([weights[e] for e in options], float)
            chosen.append(options[int(rng.choice(len(options), p=q / q.sum()))])
    while len(chosen) < n:
        chosen.append(names[int(rng.choice(len(names), p=p))])
    rng.shuffle(chosen)
    return chosen


# ============================================================================ spreadsheets


def write_xlsx(path: Path, sheets: dict[str, list[list]]) -> None:
    """Write sheets of raw rows (``None`` = empty cell) with openpyxl, first sheet first."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append([None if _is_blank(v) else v for v in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def write_xls(path: Path, rows: list[list], sheet: str = "Sheet1") -> None:
    """Write a legacy ``.xls`` sheet with xlwt (CASME's annotation format)."""
    import xlwt

    book = xlwt.Workbook()
    ws = book.add_sheet(sheet)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if not _is_blank(value):
                ws.write(r, c, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(str(path))


def _is_blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class Sheet:
    """An annotation table being built: header names (``None`` = blank header) and rows."""

    header: list
    rows: list[list] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)  # (subject, clip) per row

    def col(self, name) -> int:
        return self.header.index(name)

    def drop_column(self, name) -> None:
        i = self.col(name)
        self.header.pop(i)
        for row in self.rows:
            row.pop(i)


# ============================================================================ layouts


class Layout:
    """One dataset's on-disk format. Subclasses define ids, paths and the annotation file."""

    name = ""
    frame_size = (640, 480)
    grey = False
    ext = ".jpg"
    emotions: dict[str, int] = {}
    pad = 0  # neutral frames written before the onset and after the offset
    frames = "full"  # which rendered frames are written: full | to_apex | apex
    apex_column = None
    emotion_column = None
    dropped_column = None
    faults_supported: tuple[str, ...] = FAULTS
    missing_frame_cases = 3  # whole clip, onset frame, apex frame; 1 when no annotation gives frame numbers
    folder_is_clip = False  # the folder itself is the clip (no annotation row): emptied rather than removed
    cropped: CroppedRelease | None = None  # the dataset's cropped release; None: it has none

    # -- plans ---------------------------------------------------------------------
    def subject_ids(self, n: int) -> list[str]:
        raise NotImplementedError

    def plan(self, rng, n_subjects: int, clips_per_subject: int) -> list[ClipPlan]:
        plans = []
        for s, subject in enumerate(self.subject_ids(n_subjects)):
            emotions = _draw_emotions(self.emotions, clips_per_subject, rng)
            for k, emotion in enumerate(emotions):
                plans.append(self.new_clip(subject, s, k, emotion, rng))
        return plans

    def new_clip(self, subject, s, k, emotion, rng) -> ClipPlan:
        raise NotImplementedError

    def twin(self) -> list[ClipPlan]:
        raise ValueError(f"{self.name}: no documented real counts for a structural twin")

    # -- files ---------------------------------------------------------------------
    def clip_dir(self, root: Path, plan: ClipPlan) -> Path:
        raise NotImplementedError

    def frame_name(self, plan: ClipPlan, number: int) -> str:
        raise NotImplementedError

    def frame_path(self, root: Path, plan: ClipPlan, number: int) -> Path:
        return self.clip_dir(root, plan) / self.frame_name(plan, number)

    annotation_name: str | None = None
    """File name of a one-sheet ``.xlsx`` annotation; layouts with another format override
    :meth:`write_annotation`, layouts without a spreadsheet (SMIC-HS) leave it ``None``."""

    def write_annotation(self, root: Path, plans: list[ClipPlan], faults: dict) -> Path | None:
        if self.annotation_name is None:
            return None
        sheet = apply_sheet_faults(self, self.sheet(plans), plans, faults)
        path = root / self.annotation_name
        write_xlsx(path, {"Sheet1": [sheet.header] + sheet.rows})
        return path

    def sheet(self, plans) -> Sheet | None:
        return None


def _roman(i: int) -> str:
    return ["I", "II", "III", "IV", "V", "VI", "VII"][i % 7]


class CASME2Layout(Layout):
    """``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` + ``CASME2-coding-20140508.xlsx``.

    ``version="20190701"`` writes the later file with blank ``Unnamed: 2``/``Unnamed: 6``
    columns and an ``Objective Class`` column.
    """

    name = "casme2"
    frame_size = (640, 480)
    emotions = {"happiness": 32, "surprise": 25, "disgust": 63, "repression": 27, "others": 99, "sadness": 7,
                "fear": 2}
    pad = 1
    cropped = CroppedRelease("CASME2_RAW_selected", "Cropped", "reg_",
                             "confirmed: datasets.md, Cropped/sub01/EP02_01f/reg_img46.jpg")
    apex_column, emotion_column, dropped_column = "ApexFrame", "Estimated Emotion", "ApexFrame"

    def __init__(self, version: str = "20140508"):
        if version not in ("20140508", "20190701"):
            raise ValueError(f"casme2 version must be '20140508' or '20190701', got {version!r}")
        self.version = version

    def subject_ids(self, n):
        return [f"sub{i + 1:02d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        suffix = "f" if rng.random() < 0.5 else ""
        return ClipPlan(subject, f"EP{k + 2:02d}_{int(rng.integers(1, 10)):02d}{suffix}", emotion, s,
                        start=int(rng.integers(1, 120)), extra={"au": "4+7" if k % 2 else "R12"})

    def twin(self):
        """255 rows / 26 subjects with the real emotion counts; MEGC rules leave 145 / 24.

        Subjects 18 and 21 get only unmapped emotions (an arrangement of the twin, not a
        fact of the release); ``sub04/EP12_01f`` and ``sub05/EP09_05f`` are disgust.
        """
        subjects = [f"sub{i:02d}" for i in range(1, 27)]
        unmapped_only = {"sub18", "sub21"}
        mapped_subjects = [s for s in subjects if s not in unmapped_only]
        mapped = {"happiness": 32, "surprise": 25, "disgust": 63 - 2, "repression": 27}
        rest = {"others": 99, "sadness": 7, "fear": 2}
        deals = _deal(mapped, mapped_subjects) + _deal(rest, sorted(unmapped_only) + subjects)
        plans = [ClipPlan("sub04", "EP12_01f", "disgust", start=40), ClipPlan("sub05", "EP09_05f", "disgust", start=40)]
        counter: dict[str, int] = {}
        for subject, emotion in deals:
            counter[subject] = counter.get(subject, 0) + 1
            clip = f"EP{counter[subject]:02d}_{counter[subject] % 7 + 1:02d}"
            plans.append(ClipPlan(subject, clip, emotion, start=46))
        return plans

    def clip_dir(self, root, plan):
        return root / "CASME2_RAW_selected" / plan.subject / plan.clip

    def frame_name(self, plan, number):
        return f"img{number}.jpg"

    def sheet(self, plans):
        if self.version == "20140508":
            header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                      "Estimated Emotion"]
        else:
            header = ["Subject", "Filename", None, "OnsetFrame", "ApexFrame", "OffsetFrame", None,
                      "Action Units", "Estimated Emotion", "Objective Class"]
        sheet = Sheet(header)
        for i, p in enumerate(plans):
            values = {"Subject": int(p.subject[3:]), "Filename": p.clip, "OnsetFrame": p.onset, "ApexFrame": p.apex,
                      "OffsetFrame": p.offset, "Action Units": p.extra.get("au", "4"),
                      "Estimated Emotion": p.emotion, "Objective Class": _roman(i)}
            sheet.rows.append([values.get(h) if h else None for h in header])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    @property
    def annotation_name(self):
        return f"CASME2-coding-{self.version}.xlsx"


SAMM_NOTES = [
    "SAMM Micro-Movement FACS codes (synthetic twin of the release's sheet layout)",
    "Subject: participant number; the frame folder is the number zero-padded to 3 digits",
    "Filename: clip folder, subject_inducement_index",
    "Inducement Code: the stimulus video that induced the movement",
    "Onset/Apex/Offset Frame: frame numbers of the clip's files",
    "Duration: offset - onset + 1 frames",
    "Micro: whether the movement is a micro-movement",
    "Action Units: FACS action units",
    "Estimated Emotion: emotion estimated from the AUs and the stimulus",
    "Objective Classes: AU-based classes I-VII",
    "Notes: coder remarks",
    "Recorded at 200 fps, 2040x1088 cropped to the face region in the frames",
    "",
]
"""Thirteen rows of notes before the header (the header is the 14th row, datasets.md)."""


class SAMMLayout(Layout):
    """``SAMM/006/006_1_2/006_05562.jpg`` (960x650 grey) + ``SAMM_Micro_FACS_Codes_v2.xlsx``."""

    name = "samm"
    frame_size = (960, 650)
    grey = True
    cropped = CroppedRelease("SAMM", "SAMM_CROP", "", "inferred: the raw names under SAMM_CROP/")
    emotions = {"Anger": 57, "Other": 26, "Happiness": 26, "Surprise": 15, "Contempt": 12, "Disgust": 9, "Fear": 8,
                "Sadness": 6}
    pad = 1
    apex_column, emotion_column, dropped_column = "Apex Frame", "Estimated Emotion", "Apex Frame"
    HEADER = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]

    def subject_ids(self, n):
        return [f"{i + 6:03d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        inducement = int(rng.integers(1, 8))
        return ClipPlan(subject, f"{subject}_{inducement}_{k + 1}", emotion, s, start=int(rng.integers(1000, 9000)),
                        extra={"inducement": inducement})

    def twin(self):
        """159 rows / 32 subjects (006..037) with the real counts; MEGC rules leave 133 / 28.

        Four subjects get only ``Other`` clips (a twin arrangement). ``032_3_1`` is Anger
        with Onset 4896, Apex 1930, Offset 4970 (the release's known error).
        """
        subjects = [f"{i:03d}" for i in range(6, 38)]
        other_only = ["013", "024", "027", "029"]
        mapped_subjects = [s for s in subjects if s not in other_only]
        mapped = {e: n for e, n in self.emotions.items() if e != "Other"}
        mapped["Anger"] -= 1
        deals = _deal(mapped, mapped_subjects) + _deal({"Other": 26}, other_only + subjects)
        special = ClipPlan("032", "032_3_1", "Anger", start=4896, extra={"inducement": 3, "apex": 1930, "length": 75})
        plans = [special]
        counter: dict[str, int] = {}
        for subject, emotion in deals:
            counter[subject] = counter.get(subject, 0) + 1
            k = counter[subject]
            plans.append(ClipPlan(subject, f"{subject}_{k % 7 + 1}_{k // 7 + 2}", emotion, start=1000 + 50 * k,
                                  extra={"inducement": k % 7 + 1}))
        return plans

    def clip_dir(self, root, plan):
        return root / "SAMM" / plan.subject / plan.clip

    def frame_name(self, plan, number):
        return f"{plan.subject}_{number:05d}.jpg"

    def sheet(self, plans):
        sheet = Sheet(list(self.HEADER))
        for i, p in enumerate(plans):
            apex = p.extra.get("apex", p.apex)
            sheet.rows.append([int(p.subject), p.clip, p.extra.get("inducement", 1), p.onset, apex, p.offset,
                               p.offset - p.onset + 1, "Micro - 1/2", p.extra.get("au", "R14"), p.emotion,
                               _roman(i), None])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    def write_annotation(self, root, plans, faults):
        sheet = apply_sheet_faults(self, self.sheet(plans), plans, faults)
        notes = [[line] for line in SAMM_NOTES]
        path = root / "SAMM_Micro_FACS_Codes_v2.xlsx"
        write_xlsx(path, {"FACS_Movement_Only": notes + [sheet.header] + sheet.rows})
        return path


SMIC_SHORT = {"negative": "ne", "positive": "po", "surprise": "sur"}
SMIC_HS_SUBJECTS = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12, 13, 14, 15, 18, 19, 20)
"""Sixteen HS subject numbers (twin choice; the folders are written ``s1``, ``s2``, ...)."""


class SMICLayout(Layout):
    """``SMIC_all_raw/HS/s1/micro/negative/s1_ne_01/image059472.bmp``; the label is the folder.

    Frames of a clip folder run onset..offset; there is no spreadsheet, so the
    ``apex_outside``, ``blank_apex`` and ``missing_column`` faults do not apply.
    """

    name = "smic"
    frame_size = (640, 480)
    ext = ".bmp"
    cropped = CroppedRelease("SMIC_all_raw", "SMIC_all_cropped", "reg_",
                             "inferred: SMIC_all_cropped/HS/... with reg_image*.bmp names")
    emotions = {"negative": 70, "positive": 51, "surprise": 43}
    faults_supported = ("missing_frames", "unknown_emotion", "duplicate_clip")
    missing_frame_cases = 1
    folder_is_clip = True

    def subject_ids(self, n):
        return [f"s{i:02d}" for i in SMIC_HS_SUBJECTS[:n]] if n <= 16 else [f"s{i + 1:02d}" for i in range(n)]

    def _clip(self, subject, s, emotion, k, start):
        number = int(subject[1:])
        name = f"s{number}_{SMIC_SHORT[emotion]}_{k:02d}"
        return ClipPlan(subject, f"{subject}_{SMIC_SHORT[emotion]}_{k:02d}", emotion, s, start=start,
                        extra={"folder": f"s{number}", "name": name})

    def plan(self, rng, n_subjects, clips_per_subject):
        plans = []
        for s, subject in enumerate(self.subject_ids(n_subjects)):
            counter: dict[str, int] = {}
            for emotion in _draw_emotions(self.emotions, clips_per_subject, rng):
                counter[emotion] = counter.get(emotion, 0) + 1
                plans.append(self._clip(subject, s, emotion, counter[emotion], int(rng.integers(10000, 90000))))
        return plans

    def twin(self):
        """164 clips over 16 subjects: 70 negative, 51 positive, 43 surprise."""
        subjects = [f"s{i:02d}" for i in SMIC_HS_SUBJECTS]
        counter: dict[tuple, int] = {}
        plans = []
        for subject, emotion in _deal(self.emotions, subjects):
            counter[subject, emotion] = counter.get((subject, emotion), 0) + 1
            plans.append(self._clip(subject, 0, emotion, counter[subject, emotion], 20000))
        return plans

    def clip_dir(self, root, plan):
        return root / "SMIC_all_raw" / "HS" / plan.extra["folder"] / "micro" / plan.emotion / plan.extra["name"]

    def frame_name(self, plan, number):
        return f"image{number:06d}.bmp"


class SMICELayout(SMICLayout):
    """``SMIC-HS-E/s01/s1_ne_01/image{6 digits}.jpg`` + ``SMIC-HS-E_annotation.xlsx``."""

    name = "smic_e"
    ext = ".jpg"
    pad = 1
    cropped = CroppedRelease("SMIC-HS-E", "SMIC-HS-E_cropped", "reg_", "inferred: SMIC-HS-E_cropped/ with reg_ names")
    apex_column, emotion_column, dropped_column = None, "Emotion", "OnsetF"
    faults_supported = ("missing_frames", "unknown_emotion", "duplicate_clip", "missing_column")
    missing_frame_cases = 3
    folder_is_clip = False

    def clip_dir(self, root, plan):
        return root / "SMIC-HS-E" / plan.subject / plan.extra["name"]

    def frame_name(self, plan, number):
        return f"image{number:06d}.jpg"

    def sheet(self, plans):
        sheet = Sheet(["Subject", "Filename", "OnsetF", "OffsetF", "Emotion"])
        for p in plans:
            sheet.rows.append([p.subject, p.extra["name"], p.onset, p.offset, p.emotion])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    annotation_name = "SMIC-HS-E_annotation.xlsx"


class MMEWLayout(Layout):
    """``Micro_Expression/{emotion}/S01-01-001/15.jpg`` + ``MMEW_Micro_Exp.xlsx``."""

    name = "mmew"
    frame_size = (1920, 1080)
    emotions = {"happiness": 36, "surprise": 89, "disgust": 72, "fear": 16, "sadness": 13, "anger": 8, "others": 66}
    pad = 1
    apex_column, emotion_column, dropped_column = "ApexFrame", "Estimated Emotion", "ApexFrame"

    def subject_ids(self, n):
        return [f"S{i + 1:02d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        return ClipPlan(subject, f"{subject}-{k // 3 + 1:02d}-{k + 1:03d}", emotion, s, start=int(rng.integers(1, 40)))

    def twin(self):
        """300 clips over 30 subjects (S01..S30) with the real emotion counts."""
        plans, counter = [], {}
        for subject, emotion in _deal(self.emotions, [f"S{i:02d}" for i in range(1, 31)]):
            counter[subject] = counter.get(subject, 0) + 1
            plans.append(ClipPlan(subject, f"{subject}-01-{counter[subject]:03d}", emotion, start=10))
        return plans

    def clip_dir(self, root, plan):
        return root / "Micro_Expression" / plan.emotion / plan.clip

    def frame_name(self, plan, number):
        return f"{number}.jpg"

    def sheet(self, plans):
        sheet = Sheet(["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units",
                       "Estimated Emotion", "remarks"])
        for p in plans:
            sheet.rows.append([p.subject, p.clip, p.onset, p.apex, p.offset, "AU12", p.emotion, None])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    annotation_name = "MMEW_Micro_Exp.xlsx"


class CASMELayout(Layout):
    """``CASME_raw_selected/sub01/EP01_5/EP01_5-1.jpg`` + ``CASME-coding.xls`` (xlwt, blank columns)."""

    name = "casme"
    frame_size = (640, 480)
    cropped = CroppedRelease("CASME_raw_selected", "Cropped", "reg_",
                             "file names confirmed (datasets.md: reg_EP01_5-113.jpg); the Cropped folder inferred")
    emotions = {"happiness": 10, "surprise": 19, "disgust": 44, "repression": 38, "fear": 2, "sadness": 1, "tense": 75}
    pad = 1
    apex_column, emotion_column, dropped_column = "ApexF1", "Emotion", "ApexF1"
    HEADER = ["Subject", "Filename", None, "OnsetF", "ApexF1", "ApexF2", "OffsetF", None, "Action Units", "Emotion"]

    def subject_ids(self, n):
        return [f"sub{i + 1:02d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        return ClipPlan(subject, f"EP{k + 1:02d}_{int(rng.integers(1, 10))}", emotion, s,
                        start=int(rng.integers(1, 90)))

    def twin(self):
        """189 rows / 19 subjects; the Off-TANet rules leave 114 over 16 (85 / 10 / 19).

        datasets.md gives only the composite counts for CASME, so the per-emotion split
        (:attr:`emotions`) and the three tense-only subjects (04, 07, 15) are twin choices.
        """
        subjects = [f"sub{i:02d}" for i in range(1, 20)]
        tense_only = ["sub04", "sub07", "sub15"]
        mapped = {e: n for e, n in self.emotions.items() if e != "tense"}
        deals = (_deal(mapped, [s for s in subjects if s not in tense_only])
                 + _deal({"tense": 75}, tense_only + subjects))
        plans, counter = [], {}
        for subject, emotion in deals:
            counter[subject] = counter.get(subject, 0) + 1
            plans.append(ClipPlan(subject, f"EP{counter[subject]:02d}_{counter[subject] % 9 + 1}", emotion, start=20))
        return plans

    def clip_dir(self, root, plan):
        return root / "CASME_raw_selected" / plan.subject / plan.clip

    def frame_name(self, plan, number):
        return f"{plan.clip}-{number}.jpg"

    def sheet(self, plans):
        sheet = Sheet(list(self.HEADER))
        for p in plans:
            sheet.rows.append([int(p.subject[3:]), p.clip, None, p.onset, p.apex, None, p.offset, None, "12",
                               p.emotion])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    def write_annotation(self, root, plans, faults):
        sheet = apply_sheet_faults(self, self.sheet(plans), plans, faults)
        path = root / "CASME-coding.xls"
        write_xls(path, [sheet.header] + sheet.rows)
        return path


CASME_SQ_VIDEOS = (
    ("disgust1", 101, "disgustingteeth"), ("disgust2", 102, "eatingworms"), ("anger1", 401, "girlcrashing"),
    ("anger2", 402, "shouting"), ("happy1", 502, "funnyerrors"), ("happy2", 503, "funnybaby"),
    ("happy3", 505, "funnypets"), ("surprise1", 507, "suddenclimb"), ("sad1", 508, "lostdog"),
)
"""Stimulus videos: name (clip prefix), code (``naming rule2``), folder description."""

CASME_SQ_FOLDERS = tuple(n for n in range(15, 41) if n not in (17, 18, 28, 29))
"""Twenty-two participant folder numbers (``s15``...); a twin choice."""

CASME_SQ_VIDEO_OF = {"positive": "happy1", "negative": "disgust1", "surprise": "surprise1", "others": "sad1"}


class CASMESqLayout(Layout):
    """``rawpic/s15/15_0101disgustingteeth/img1.jpg`` + ``CAS(ME)^2code_final.xlsx`` (no header row).

    Sheets: ``CASFEcode_final`` (participant, clip name, onset, apex, offset, AUs,
    estimated emotion, expression type, self-reported emotion), ``naming rule1``
    (folder, prefix, participant) and ``naming rule2`` (code, video name). A video
    folder holds all of a participant's clips from that video, frames numbered from 1.
    """

    name = "casme_sq"
    frame_size = (640, 480)
    cropped = CroppedRelease("rawpic", "cropped", "", "inferred from the official Off-TANet data.py: "
                             "casme^2_cropped/<Subject>/<Sample>/img<n>.jpg")
    emotions = {"negative": 21, "positive": 6, "surprise": 8, "others": 22}
    pad = 2
    apex_column, emotion_column, dropped_column = "apex", "estimated emotion", "expression type"
    HEADER = ["participant", "clip name", "onset", "apex", "offset", "action units", "estimated emotion",
              "expression type", "self-reported emotion"]

    def subject_ids(self, n):
        return [f"s{CASME_SQ_FOLDERS[i]}" for i in range(n)]

    def plan(self, rng, n_subjects, clips_per_subject):
        plans = []
        for s, subject in enumerate(self.subject_ids(n_subjects)):
            for emotion in _draw_emotions(self.emotions, clips_per_subject, rng):
                plans.append(self._clip(subject, s, emotion, "micro-expression"))
        return self._number(plans)

    def _clip(self, subject, s, emotion, kind, video=None):
        return ClipPlan(subject, "", emotion, s, extra={"video": video or CASME_SQ_VIDEO_OF[emotion], "type": kind})

    def _number(self, plans, length=None):
        """Clip names ``{video}_{k}`` and non-overlapping frame numbers within each video folder."""
        counter: dict[tuple, int] = {}
        next_start: dict[tuple, int] = {}
        for p in plans:
            key = (p.subject, p.extra["video"])
            counter[key] = counter.get(key, 0) + 1
            p.clip = f"{p.extra['video']}_{counter[key]}"
            p.start = next_start.get(key, 1 + self.pad)
            next_start[key] = p.start + (length or 200) + 2 * self.pad + 5
        return plans

    def twin(self):
        """357 rows / 22 participants: 57 micro (35 mapped over 9 participants) + 300 macro."""
        subjects = [f"s{n}" for n in CASME_SQ_FOLDERS]
        mapped = {"negative": 21, "positive": 6, "surprise": 8}
        plans = [self._clip(s, 0, e, "micro-expression") for s, e in _deal(mapped, subjects[:9])]
        plans += [self._clip(s, 0, e, "micro-expression") for s, e in _deal({"others": 22}, subjects)]
        macro = {"negative": 120, "positive": 90, "surprise": 40, "others": 50}
        plans += [self._clip(s, 0, e, "macro-expression") for s, e in _deal(macro, subjects)]
        return self._number(plans, length=3)

    def participants(self, plans) -> dict[str, int]:
        folders = sorted({p.subject for p in plans}, key=lambda f: int(f[1:]))
        return {f: i + 1 for i, f in enumerate(folders)}

    def clip_dir(self, root, plan):
        name, code, description = next(v for v in CASME_SQ_VIDEOS if v[0] == plan.extra["video"])
        return root / "rawpic" / plan.subject / f"{plan.subject[1:]}_{code:04d}{description}"

    def frame_name(self, plan, number):
        return f"img{number}.jpg"

    def sheet(self, plans):
        ids = self.participants(plans)
        sheet = Sheet(list(self.HEADER))
        for p in plans:
            sheet.rows.append([ids[p.subject], p.clip, p.onset, p.apex, p.offset, "4+10", p.emotion,
                               p.extra["type"], p.extra["video"].rstrip("0123456789")])
            sheet.keys.append((p.subject, p.clip))
        return sheet

    def write_annotation(self, root, plans, faults):
        sheet = apply_sheet_faults(self, self.sheet(plans), plans, faults)
        ids = self.participants(plans)
        rule1 = [[folder, folder[1:], number] for folder, number in ids.items()]
        rule2 = [[code, name] for name, code, _ in CASME_SQ_VIDEOS]
        path = root / "CAS(ME)^2code_final.xlsx"
        write_xlsx(path, {"CASFEcode_final": sheet.rows, "naming rule1": rule1, "naming rule2": rule2})
        return path


# ---------------------------------------------------------------------------- macro sets


CKPLUS_CODES = {"anger": 1, "contempt": 2, "disgust": 3, "fear": 4, "happy": 5, "sadness": 6, "surprise": 7}


class CKPlusLayout(Layout):
    """``cohn-kanade-images/S005/001/S005_001_00000001.png`` + ``Emotion/S005/001/..._emotion.txt``.

    Sequences run neutral -> apex (the rendered onset..apex frames); every third
    sequence of a subject is left unlabelled (no emotion file), as in the release.
    """

    name = "ckplus"
    frame_size = (640, 490)
    grey = True
    ext = ".png"
    emotions = {"anger": 45, "contempt": 18, "disgust": 59, "fear": 25, "happy": 69, "sadness": 28, "surprise": 83}
    frames = "to_apex"
    faults_supported = ("missing_frames", "unknown_emotion")
    missing_frame_cases = 1

    def subject_ids(self, n):
        return [f"S{5 + 5 * i:03d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        return ClipPlan(subject, f"{subject}_{k + 1:03d}", emotion, s, start=1, extra={"labelled": k % 3 != 2})

    def twin(self):
        """593 sequences / 123 subjects, 327 labelled with the real emotion counts."""
        subjects = [f"S{i:03d}" for i in range(5, 128)]
        deals = _deal(self.emotions, subjects) + [(s, "neutral") for s, _ in _deal({"x": 593 - 327}, subjects)]
        plans, counter = [], {}
        for subject, emotion in deals:
            counter[subject] = counter.get(subject, 0) + 1
            plans.append(ClipPlan(subject, f"{subject}_{counter[subject]:03d}", emotion, start=1,
                                  extra={"labelled": emotion != "neutral"}))
        return plans

    def clip_dir(self, root, plan):
        return root / "cohn-kanade-images" / plan.subject / plan.clip.split("_")[1]

    def frame_name(self, plan, number):
        return f"{plan.clip}_{number:08d}.png"

    def write_annotation(self, root, plans, faults):
        bad = {key for key in faults.get("unknown_emotion", [])}
        for p in plans:
            if not p.extra.get("labelled", True):
                continue
            code = 9 if (p.subject, p.clip) in bad else CKPLUS_CODES[p.emotion]
            txt = root / "Emotion" / p.subject / p.clip.split("_")[1] / f"{p.clip}_{p.offset:08d}_emotion.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(f"   {code:.7e}\n")
        return root / "Emotion"


OULU_EMOTIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


class OuluCASIALayout(Layout):
    """``OriginalImg/VL/Strong/P001/Happiness/000.jpeg``: each subject shows the six emotions."""

    name = "oulu_casia"
    frame_size = (320, 240)
    ext = ".jpeg"
    emotions = {e: 80 for e in OULU_EMOTIONS}
    frames = "to_apex"
    faults_supported = ("missing_frames", "unknown_emotion")
    missing_frame_cases = 1
    folder_is_clip = True

    def subject_ids(self, n):
        return [f"P{i + 1:03d}" for i in range(n)]

    def plan(self, rng, n_subjects, clips_per_subject):
        order = ("Happiness", "Surprise", "Anger", "Disgust", "Sadness", "Fear")
        emotions = order[: max(1, min(6, clips_per_subject))]
        return [ClipPlan(subject, f"{subject}_{e}", e, s, start=0)
                for s, subject in enumerate(self.subject_ids(n_subjects)) for e in emotions]

    def twin(self):
        """80 subjects x 6 emotions = 480 sequences."""
        return [ClipPlan(s, f"{s}_{e}", e, start=0) for s in self.subject_ids(80) for e in OULU_EMOTIONS]

    def clip_dir(self, root, plan):
        return root / "OriginalImg" / "VL" / "Strong" / plan.subject / plan.emotion

    def frame_name(self, plan, number):
        return f"{number:03d}.jpeg"


JAFFE_POSERS = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
JAFFE_CODES = {"anger": "AN", "disgust": "DI", "fear": "FE", "happiness": "HA", "neutral": "NE", "sadness": "SA",
               "surprise": "SU"}


class JAFFELayout(Layout):
    """``KA.AN1.39.tiff`` stills (256x256 grey): the rendered apex frame (onset frame for neutral)."""

    name = "jaffe"
    frame_size = (256, 256)
    grey = True
    ext = ".tiff"
    emotions = {"anger": 30, "disgust": 29, "fear": 32, "happiness": 31, "neutral": 30, "sadness": 31, "surprise": 30}
    frames = "apex"
    faults_supported = ("unknown_emotion",)

    def subject_ids(self, n):
        return list(JAFFE_POSERS[:n]) if n <= 10 else [f"{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(n)]

    def plan(self, rng, n_subjects, clips_per_subject):
        plans = super().plan(rng, n_subjects, clips_per_subject)
        return self._number(plans)

    def new_clip(self, subject, s, k, emotion, rng):
        return ClipPlan(subject, "", emotion, s)

    def _number(self, plans):
        takes: dict[tuple, int] = {}
        for i, p in enumerate(plans):
            takes[p.subject, p.emotion] = takes.get((p.subject, p.emotion), 0) + 1
            p.start = 1 + i
            p.extra["code"] = f"{JAFFE_CODES[p.emotion]}{takes[p.subject, p.emotion]}"
            p.clip = f"{p.subject}.{p.extra['code']}.{p.start}"
        return plans

    def twin(self):
        """213 images of 10 posers with the emotion counts of :attr:`emotions`."""
        return self._number([ClipPlan(s, "", e) for s, e in _deal(self.emotions, list(JAFFE_POSERS))])

    def clip_dir(self, root, plan):
        return root

    def frame_name(self, plan, number):
        return f"{plan.clip}.tiff"


MUG_EMOTIONS = {"anger": 1, "disgust": 1, "fear": 1, "happiness": 1, "neutral": 1, "sadness": 1, "surprise": 1}


class MUGLayout(Layout):
    """``subjects3/001/happiness/take000/img_0000.jpg``: neutral -> apex -> neutral takes (896x896)."""

    name = "mug"
    frame_size = (896, 896)
    emotions = MUG_EMOTIONS
    faults_supported = ("missing_frames", "unknown_emotion")
    missing_frame_cases = 1
    folder_is_clip = True

    def subject_ids(self, n):
        return [f"{i + 1:03d}" for i in range(n)]

    def new_clip(self, subject, s, k, emotion, rng):
        return ClipPlan(subject, "", emotion, s, start=0)

    def plan(self, rng, n_subjects, clips_per_subject):
        plans = super().plan(rng, n_subjects, clips_per_subject)
        takes: dict[tuple, int] = {}
        for p in plans:
            takes[p.subject, p.emotion] = takes.get((p.subject, p.emotion), -1) + 1
            p.extra["take"] = f"take{takes[p.subject, p.emotion]:03d}"
            p.clip = f"{p.subject}_{p.emotion}_{p.extra['take']}"
        return plans

    def clip_dir(self, root, plan):
        return root / "subjects3" / plan.subject / plan.emotion / plan.extra["take"]

    def frame_name(self, plan, number):
        return f"img_{number:04d}.jpg"


LAYOUTS: dict[str, Callable[..., Layout]] = {
    "casme": CASMELayout,
    "casme2": CASME2Layout,
    "samm": SAMMLayout,
    "smic": SMICLayout,
    "smic_e": SMICELayout,
    "mmew": MMEWLayout,
    "casme_sq": CASMESqLayout,
    "ckplus": CKPlusLayout,
    "oulu_casia": OuluCASIALayout,
    "jaffe": JAFFELayout,
    "mug": MUGLayout,
}
"""Dataset name (as in the reader registry) -> layout class."""

CROPPED_RELEASES: dict[str, CroppedRelease] = {name: cls.cropped for name, cls in LAYOUTS.items() if cls.cropped}
"""Datasets with a cropped release the writer can twin (``release="cropped"`` / ``"both"``) -> its layout.

Confirmed by datasets.md: CASME II ``Cropped/sub01/EP02_01f/reg_img46.jpg`` and CASME's
``reg_EP01_5-113.jpg`` names. Inferred: CASME's ``Cropped`` folder, CAS(ME)^2 ``cropped/``
mirroring ``rawpic/`` (the official Off-TANet ``data.py`` reads ``casme^2_cropped/<Subject>/
<Sample>/img<n>.jpg``), SAMM ``SAMM_CROP/`` with the raw names, SMIC
``SMIC_all_cropped/HS/...`` with ``reg_image*.bmp`` names, SMIC-E ``SMIC-HS-E_cropped/``.
MMEW and the macro-expression sets have none."""


# ============================================================================ faults


def _pick_targets(plans: list[ClipPlan], faults: Sequence[str], layout: Layout) -> dict[str, list[tuple[str, str]]]:
    """Distinct clips for each fault, preferring clips of the three classes (deterministic)."""
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}; known: {FAULTS}")
    unsupported = [f for f in faults if f not in layout.faults_supported]
    if unsupported:
        raise ValueError(f"{layout.name}: fault(s) {unsupported} do not apply (supported: {layout.faults_supported})")
    needs = {"missing_frames": layout.missing_frame_cases, "blank_apex": 2}
    pool = [p for p in plans if motion_class(p.emotion) != "others" and p.extra.get("labelled", True)
            and p.extra.get("type", "micro-expression") == "micro-expression" and "apex" not in p.extra]
    pool += [p for p in plans if p not in pool and p.extra.get("labelled", True)]
    targets, i = {}, 0
    for fault in faults:
        if fault == "missing_column":
            targets[fault] = []
            continue
        n = needs.get(fault, 1)
        if i + n > len(pool):
            raise ValueError(f"{layout.name}: not enough clips to inject {list(faults)}")
        targets[fault] = [(p.subject, p.clip) for p in pool[i : i + n]]
        for p in pool[i : i + n]:
            p.fault = fault
        i += n
    return targets


def apply_sheet_faults(layout: Layout, sheet: Sheet, plans, faults: dict) -> Sheet:
    """Edit the annotation table for the row-level faults (see :data:`FAULTS`)."""
    row_of = {key: i for i, key in enumerate(sheet.keys)}
    by_key = {(p.subject, p.clip): p for p in plans}
    for key in faults.get("apex_outside", []):
        p = by_key[key]  # SAMM 032_3_1 has its apex 2966 frames before its onset
        sheet.rows[row_of[key]][sheet.col(layout.apex_column)] = p.onset - 2966 if p.onset > 2966 else p.offset + 2966
    blank = faults.get("blank_apex", [])
    for j, key in enumerate(blank):
        sheet.rows[row_of[key]][sheet.col(layout.apex_column)] = "/" if j == 0 else None
    for key in faults.get("unknown_emotion", []):
        sheet.rows[row_of[key]][sheet.col(layout.emotion_column)] = "confusion"
    for key in faults.get("duplicate_clip", []):
        sheet.rows.append(list(sheet.rows[row_of[key]]))
        sheet.keys.append(key)
    if "missing_column" in faults:
        sheet.drop_column(layout.dropped_column)
    return sheet


def _apply_file_faults(layout: Layout, root: Path, plans: list[ClipPlan], faults: dict,
                       paths: Layout | ReleasePaths | None = None) -> None:
    """Faults that act on files: missing frames; for folder-labelled sets, emotion and duplicates.

    ``paths`` is the release whose files are hit (:class:`.cropped.ReleasePaths`; default the
    layout's own raw paths); the writer calls this once per release written.
    """
    paths = layout if paths is None else paths
    by_key = {(p.subject, p.clip): p for p in plans}
    for j, key in enumerate(faults.get("missing_frames", [])):
        p = by_key[key]
        if j == 0:
            if isinstance(layout, CASMESqLayout):  # shared video folder: remove this clip's frames
                for n in range(p.onset - layout.pad, p.offset + layout.pad + 1):
                    paths.frame_path(root, p, n).unlink(missing_ok=True)
            elif isinstance(layout, JAFFELayout):
                paths.frame_path(root, p, p.onset).unlink(missing_ok=True)
            elif layout.folder_is_clip:
                for frame in paths.clip_dir(root, p).iterdir():
                    frame.unlink()
            else:
                shutil.rmtree(paths.clip_dir(root, p))
        else:  # the onset frame of the second clip, the apex frame of the third
            paths.frame_path(root, p, p.onset if j == 1 else p.apex).unlink()
    if type(layout) is SMICLayout:
        for key in faults.get("unknown_emotion", []):
            p = by_key[key]
            src = paths.clip_dir(root, p)
            dst = src.parent.parent / "others" / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
        for key in faults.get("duplicate_clip", []):
            p = by_key[key]
            src = paths.clip_dir(root, p)
            other = "surprise" if p.emotion != "surprise" else "positive"
            number = int(p.subject[1:])
            # the copy uses the other spelling (s01_...), which the reader normalises to the same clip
            dst = src.parent.parent / other / f"s{number:02d}_{p.clip.split('_', 1)[1]}"
            shutil.copytree(src, dst)
    if isinstance(layout, (OuluCASIALayout, MUGLayout)):
        for key in faults.get("unknown_emotion", []):
            p = by_key[key]
            src = layout.clip_dir(root, p)
            bad = "Contempt" if isinstance(layout, OuluCASIALayout) else "boredom"
            dst = src.parent / bad if isinstance(layout, OuluCASIALayout) else src.parent.parent / bad / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
    if isinstance(layout, JAFFELayout):
        for key in faults.get("unknown_emotion", []):
            p = by_key[key]
            src = layout.frame_path(root, p, p.onset)
            src.rename(src.with_name(src.name.replace(f".{p.extra['code']}.", ".XX1.")))


# ============================================================================ frames


_TINY_CACHE: dict[str, bytes] = {}


def _tiny_frame_bytes(ext: str) -> bytes:
    """An encoded 8x8 grey image (the structural twin's frame), cached per extension."""
    if ext not in _TINY_CACHE:
        ok, buf = cv2.imencode(ext, np.full((8, 8), 128, np.uint8))
        if not ok:  # pragma: no cover
            raise RuntimeError(f"cannot encode {ext}")
        _TINY_CACHE[ext] = buf.tobytes()
    return _TINY_CACHE[ext]


def _write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path}")


def _twin_frames(layout: Layout, root: Path, plan: ClipPlan, releases: Sequence[ReleasePaths]) -> None:
    """Number a twin clip (3 frames, or the special clip's length) and write tiny frames in each release."""
    length = plan.extra.get("length", 3)
    if layout.frames == "apex":
        length = 1
    plan.numbers = tuple(range(plan.start, plan.start + length))
    plan.onset, plan.offset = plan.numbers[0], plan.numbers[-1]
    plan.apex = plan.numbers[-1] if layout.frames == "to_apex" else plan.numbers[len(plan.numbers) // 2]
    plan.motion = motion_class(plan.emotion)
    data = _tiny_frame_bytes(layout.ext)
    for release in releases:
        release.clip_dir(root, plan).mkdir(parents=True, exist_ok=True)
        for n in plan.numbers:
            release.frame_path(root, plan, n).write_bytes(data)


def _render_frames(
    layout: Layout, root: Path, plan: ClipPlan, subject, n_frames: int, rng, sidecar: Path, appearance_strength: float,
    releases: Sequence[ReleasePaths] = (),
) -> None:
    """Render one clip, write its frames (plus neutral padding) in each release and its ground-truth npz.

    ``releases`` default to the raw one; a cropped release stores each frame cut by ``plan.crop``.
    """
    releases = tuple(releases) or (ReleasePaths(layout),)
    from .render import render_clip

    clip = render_clip(subject, plan.motion, n_frames=n_frames, rng=rng, appearance_strength=appearance_strength)
    frames = list(clip.frames)
    onset, apex, offset = int(clip.onset), int(clip.apex), int(clip.offset)
    if layout.frames == "to_apex":
        frames, offset = frames[: apex + 1], apex
    elif layout.frames == "apex":
        index = onset if plan.emotion == "neutral" else apex
        frames, onset, apex, offset = [frames[index]], 0, 0, 0
    plan.numbers = tuple(plan.start + i for i in range(len(frames)))
    plan.onset, plan.apex, plan.offset = plan.numbers[onset], plan.numbers[apex], plan.numbers[offset]
    plan.blink = bool(clip.blink)
    written = list(zip(plan.numbers, frames))
    for k in range(1, layout.pad + 1):
        written += [(plan.numbers[0] - k, frames[0]), (plan.numbers[-1] + k, frames[-1])]
    for release in releases:
        for number, image in written:
            _write_image(release.frame_path(root, plan, number), release.image(image, plan.crop))
    extra = {}
    if getattr(clip, "expression_flow", None) is not None:
        extra["expression_flow"] = np.asarray(clip.expression_flow, np.float32)
    np.savez_compressed(
        sidecar / "ground_truth" / f"{plan.subject}__{plan.clip}.npz", **extra,
        apex_flow=np.asarray(clip.apex_flow, np.float32), label=plan.motion, blink=plan.blink,
        onset_index=onset, apex_index=apex, offset_index=offset, frame_numbers=np.asarray(plan.numbers),
    )


def _write_sidecar(sidecar: Path, layout: Layout, plans: list[ClipPlan], rendered: bool) -> Path:
    rows = [dict(dataset=layout.name if layout.name != "smic_e" else "smic", subject=p.subject, clip=p.clip,
                 emotion=p.emotion, motion_label=p.motion, onset=p.onset, apex=p.apex, offset=p.offset,
                 n_frames=len(p.numbers), blink=p.blink, fault=p.fault,
                 ground_truth=f"ground_truth/{p.subject}__{p.clip}.npz" if rendered else "",
                 **dict(zip(CROP_COLUMNS, p.crop or (None,) * len(CROP_COLUMNS))))
            for p in plans]
    path = sidecar / "clips.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _read_sidecar(path: Path, **kw) -> pd.DataFrame:
    """``clips.csv`` with string ids and the crop box as nullable integers (``<NA>`` when not cropped)."""
    table = pd.read_csv(path, dtype={"subject": str, "clip": str, **kw.pop("dtype", {})}, **kw)
    for column in CROP_COLUMNS:
        if column in table.columns:
            table[column] = pd.to_numeric(table[column].replace("", np.nan)).astype("Int64")
    return table


def _releases(layout: Layout, release: str) -> tuple[ReleasePaths, ...]:
    """The releases ``write_dataset(release=...)`` writes; a dataset without a cropped release raises."""
    if release not in WRITE_RELEASES:
        raise ValueError(f"release must be one of {WRITE_RELEASES}, got {release!r}")
    if release != "raw" and layout.cropped is None:
        raise ValueError(f"{layout.name}: the dataset has no documented cropped release, so release={release!r} "
                         f"cannot be written; use release='raw' (cropped releases: {sorted(CROPPED_RELEASES)})")
    raw, cropped = ReleasePaths(layout), ReleasePaths(layout, layout.cropped)
    return {"raw": (raw,), "cropped": (cropped,), "both": (raw, cropped)}[release]


# ============================================================================ public API


def write_dataset(
    name: str,
    root,
    *,
    n_subjects: int = 4,
    clips_per_subject: int = 6,
    frame_size: tuple[int, int] | None = None,
    n_frames: int = 15,
    seed: int = 0,
    photos=None,
    faults: Iterable[str] = (),
    counts: str | None = None,
    appearance_strength: float | None = None,
    release: str = "raw",
    identity_variety: bool = False,
    **options,
) -> dict:
    """Write a synthetic ``name`` dataset under ``root`` in the real layout; return a summary.

    ``name`` is a reader registry name (``casme``, ``casme2``, ``samm``, ``smic``,
    ``smic_e``, ``mmew``, ``casme_sq``, ``ckplus``, ``oulu_casia``, ``jaffe``, ``mug``).
    ``frame_size`` is ``(width, height)``, by default the dataset's real size (CASME II
    640x480 colour, SAMM 960x650 grey, ...). ``counts="real"`` writes the structural
    twin (real annotation size and class counts, tiny unrendered frames); ``n_subjects``,
    ``clips_per_subject``, ``frame_size``, ``n_frames`` and ``photos`` are then unused.
    ``faults`` injects bad-input cases (:data:`FAULTS`). ``appearance_strength``: the
    rendered expressions' shading (creases, bulges; :func:`render_clip`), ``None`` for the
    default :data:`.appearance.APPEARANCE_STRENGTH`, 0 for motion only.
    ``identity_variety``: subjects morphed between the base photos, reshaped and lit
    (``make_subjects(variety=True)``); off by default. ``options`` go
    to the layout (CASME II: ``version="20140508"`` or ``"20190701"``). Deterministic per
    ``seed``: the rendered frames do not depend on ``release``.

    ``release``: ``"raw"`` (the raw layout), ``"cropped"`` (only the dataset's cropped
    release, :data:`CROPPED_RELEASES`) or ``"both"``. A cropped release holds the face crop of
    every written frame (padding frames included) at the same frame numbers; the box is
    fixed per subject (:func:`.cropped.crop_box` of its landmarks), the crop is at native
    resolution, and ``clips.csv`` records it (``crop_x0, crop_y0, crop_x1, crop_y1``, empty
    for raw-only writes and for the structural twin, whose tiny frames are written as they
    are in the cropped layout). File faults hit every release written. A dataset without a
    cropped release (MMEW, the macro sets) raises ``ValueError`` for ``"cropped"``/``"both"``.

    Returns ``{"name", "root", "annotation", "n_clips", "clips", "faults", "ground_truth",
    "release"}``: ``clips`` is the ground-truth table (also ``root/.synthetic/clips.csv``)
    and ``faults`` maps each injected fault to the ``(subject, clip)`` pairs it hit.
    """
    if name not in LAYOUTS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(LAYOUTS)}")
    if counts not in (None, "real"):
        raise ValueError(f"counts must be None or 'real', got {counts!r}")
    if appearance_strength is not None:
        from .appearance import check_strength

        appearance_strength = check_strength(appearance_strength)
    layout = LAYOUTS[name](**options)
    releases = _releases(layout, release)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sidecar = root / SIDECAR
    (sidecar / "ground_truth").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    plans = layout.twin() if counts == "real" else layout.plan(rng, n_subjects, clips_per_subject)
    for p in plans:
        p.motion = motion_class(p.emotion)
    targets = _pick_targets(plans, tuple(faults), layout)
    if counts == "real":
        for p in plans:
            _twin_frames(layout, root, p, releases)
    else:
        _render_all(layout, root, plans, frame_size or layout.frame_size, n_frames, seed, photos, rng, sidecar,
                    appearance_strength, releases, identity_variety)
    annotation = layout.write_annotation(root, plans, targets)
    for paths in releases:
        _apply_file_faults(layout, root, plans, targets, paths)
    clips_csv = _write_sidecar(sidecar, layout, plans, rendered=counts != "real")
    return dict(name=name, root=str(root), annotation=None if annotation is None else str(annotation),
                n_clips=len(plans), clips=_read_sidecar(clips_csv), faults=targets, ground_truth=str(clips_csv),
                release=release)


def _render_all(layout, root, plans, frame_size, n_frames, seed, photos, rng, sidecar, appearance_strength,
                releases=(), identity_variety=False) -> None:
    from .appearance import APPEARANCE_STRENGTH
    from .faces import make_subjects

    strength = APPEARANCE_STRENGTH if appearance_strength is None else appearance_strength
    n = max(p.subject_index for p in plans) + 1
    subjects = make_subjects(n, frame_size=tuple(frame_size), grey=layout.grey, seed=seed, photos=photos,
                             variety=bool(identity_variety))
    if any(r.cropped is not None for r in releases):  # one registered box per subject, as in the releases
        boxes = [crop_box(s.landmarks, tuple(frame_size)) for s in subjects]
        for p in plans:
            p.crop = boxes[p.subject_index]
    for p in plans:
        _render_frames(layout, root, p, subjects[p.subject_index], n_frames, rng, sidecar, strength, releases)


def load_ground_truth(root, *, flows: bool = False) -> pd.DataFrame:
    """The ground-truth table of a synthetic dataset (``root/.synthetic/clips.csv``).

    Columns: ``dataset, subject, clip, emotion, motion_label, onset, apex, offset,
    n_frames, blink, fault, ground_truth`` (the npz path, relative to the sidecar) and
    ``crop_x0, crop_y0, crop_x1, crop_y1`` (the clip's face box in the cropped release,
    nullable integers: ``<NA>`` when no crop was written; sidecars written before the crop
    columns existed lack them). With ``flows=True`` an ``apex_flow`` column holds each
    clip's ``(H, W, 2)`` float32 onset->apex flow (``None`` for the structural twin), in
    full-frame pixels.
    """
    sidecar = Path(root) / SIDECAR
    table = _read_sidecar(sidecar / "clips.csv", dtype={"fault": str, "ground_truth": str}, keep_default_na=False)
    if flows:
        table["apex_flow"] = [np.load(sidecar / g)["apex_flow"] if g else None for g in table["ground_truth"]]
    return table


COMPOSITES = {
    "megc2019": ("casme2", "samm", "smic"),
    "off_tanet": ("casme", "casme2", "casme_sq"),
    "shufflenet": ("casme2", "smic", "samm", "mmew"),
    "mobilevit_micro": ("casme2", "samm", "smic"),
    "mobilevit_macro": ("ckplus", "oulu_casia", "jaffe", "mug"),
}
"""Composite name -> the datasets it is built from (keyword names of the composite functions)."""


def write_composite(
    name: str,
    root,
    *,
    subjects_per_dataset: int = 4,
    clips_per_subject: int = 6,
    frame_size: tuple[int, int] | None = None,
    n_frames: int = 15,
    seed: int = 0,
    photos=None,
    counts: str | None = None,
    appearance_strength: float | None = None,
    release: str = "raw",
    identity_variety: bool = False,
) -> dict[str, str]:
    """Write every dataset of composite ``name`` under ``root/{dataset}``; return their roots.

    The result's keys are the composite function's keyword names, so
    ``megc2019(**write_composite("megc2019", tmp))`` builds the composite. Each dataset
    gets its own seed (``seed`` and its position) so subjects differ across datasets.
    ``appearance_strength`` and ``identity_variety`` go to every :func:`write_dataset`.
    ``release`` (``"raw"``, ``"cropped"``, ``"both"``) goes to every dataset that has a
    cropped release (:data:`CROPPED_RELEASES`); the others (MMEW, the macro sets) are
    written ``"raw"`` only.
    """
    if name not in COMPOSITES:
        raise KeyError(f"unknown composite {name!r}; known: {sorted(COMPOSITES)}")
    if release not in WRITE_RELEASES:
        raise ValueError(f"release must be one of {WRITE_RELEASES}, got {release!r}")
    roots = {}
    for i, dataset in enumerate(COMPOSITES[name]):
        path = Path(root) / dataset
        write_dataset(dataset, path, n_subjects=subjects_per_dataset, clips_per_subject=clips_per_subject,
                      frame_size=frame_size, n_frames=n_frames, seed=seed * 100 + i, photos=photos, counts=counts,
                      appearance_strength=appearance_strength, identity_variety=identity_variety,
                      release=release if dataset in CROPPED_RELEASES else "raw")
        roots[dataset] = str(path)
    return roots
