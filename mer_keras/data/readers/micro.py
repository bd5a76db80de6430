"""Readers of the micro-expression datasets: CASME, CASME II, SAMM, SMIC (HS and E), MMEW, CAS(ME)^2.

Each class reads a dataset from the layout described in ``datasets.md`` and exposes
``.manifest`` (a manifest frame, see :mod:`mer_keras.data.manifest`) and ``.issues``.
All repair/drop rules are those of :mod:`mer_keras.data.readers._common`:

* a required annotation column that is missing raises ``AnnotationError`` (column + file);
* duplicate (subject, clip) rows: the first is kept, the others dropped;
* an emotion outside the dataset's vocabulary: dropped;
* non-numeric onset/offset or onset > offset: dropped;
* blank / non-numeric apex (``/``) or apex outside onset..offset: apex := middle frame, fixed;
* clip folder missing/empty, or no frame inside onset..offset: dropped;
* onset/offset frame file missing: range shrunk to the existing frames, fixed;
* apex frame file missing: apex := nearest existing frame, fixed.

Frame numbers in the manifest are the dataset's own (``img46.jpg`` -> 46).

Releases: every reader but MMEW takes ``release="raw"`` (the recorded frames) or
``release="cropped"`` (the dataset's own face crops, which the official Off-TANet
``data.py`` reads: ``casme1_cropped/``, ``casme2_cropped/``, ``casme^2_cropped/``;
preprocessing.md). ``"raw"`` looks in the raw folders first and, where only a cropped
release exists, reads that one; ``"cropped"`` looks only in the cropped folders and raises
``FileNotFoundError`` naming them when none exists. The manifest's ``release`` column
records the folder actually read. ``frames_dir=`` overrides the folder and is taken as the
requested release. Each docstring says which cropped layout is confirmed (datasets.md, the
official code) and which is inferred.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..manifest import AnnotationError, check_release
from ._common import (
    AnnotatedReader,
    ReaderBase,
    as_int,
    as_text,
    find_header_row,
    first_existing_dir,
    frame_regex,
    header_key,
    list_frames,
    missing_cropped_release,
    read_sheet,
    select_columns,
)

NEGATIVE_EMOTIONS = ("anger", "contempt", "disgust", "fear", "sadness", "repression", "negative")
"""Emotions grouped as ``negative`` by the broad mapping (MMEW and macro sets)."""


def broad_label_map(vocabulary) -> dict[str, str | None]:
    """happiness -> positive, surprise -> surprise, negative emotions -> negative, else ``None``."""
    out = {}
    for emotion in vocabulary:
        if emotion in ("happiness", "happy", "positive", "amusement"):
            out[emotion] = "positive"
        elif emotion in ("surprise",):
            out[emotion] = "surprise"
        elif emotion in NEGATIVE_EMOTIONS:
            out[emotion] = "negative"
        else:
            out[emotion] = None
    return out


# ----------------------------------------------------------------------------- CASME II


class CASME2(AnnotatedReader):
    """CASME II (2014): 26 subjects, 255 coded rows, 200 fps, 640x480 colour.

    Layout (datasets.md): ``CASME2-coding-20140508.xlsx`` (or ``-20190701.xlsx``), one
    sheet, header in row 1; columns selected by name (``Subject, Filename, OnsetFrame,
    ApexFrame, OffsetFrame, Estimated Emotion``; blank ``Unnamed: N``, ``Action Units``
    and ``Objective Class`` columns are ignored). ``Subject`` 1 -> subject id ``sub01``.

    Frames: raw ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg`` (``CASME2_RAW`` also
    accepted); cropped ``Cropped/sub01/EP02_01f/reg_img46.jpg`` (confirmed: datasets.md), also
    under ``CASME2_Cropped/`` or ``casme2_cropped/`` (the folder name of the official
    Off-TANet ``data.py``). ``release`` picks the folder (module docstring: ``"raw"`` falls
    back to a cropped folder when no raw one exists, else root); ``frames_dir`` overrides it.

    Default labels are the MEGC2019 rules: happiness -> positive, surprise -> surprise,
    disgust and repression -> negative, others/sadness/fear -> ``None``.
    Issue rules: see the module docstring (a ``/`` or blank apex -> middle frame).
    """

    name = "casme2"
    fps = 200.0
    vocabulary = ("happiness", "surprise", "disgust", "repression", "others", "sadness", "fear")
    default_label_map = {"happiness": "positive", "surprise": "surprise", "disgust": "negative",
                         "repression": "negative"}
    annotation_patterns = ("CASME2-coding-*.xlsx", "CASME2-coding-*.xls", "CASME2*.xlsx")
    frame_dirs = ("CASME2_RAW_selected", "CASME2_RAW")
    cropped_dirs = ("Cropped", "CASME2_Cropped", "casme2_cropped")
    frame_pattern = frame_regex(r"(?:reg_)?img(\d+)\.{ext}")
    columns = {
        "subject": ("Subject",),
        "clip": ("Filename",),
        "onset": ("OnsetFrame", "Onset Frame", "Onset"),
        "apex": ("ApexFrame", "Apex Frame", "Apex"),
        "offset": ("OffsetFrame", "Offset Frame", "Offset"),
        "emotion": ("Estimated Emotion", "Emotion"),
    }

    def __init__(self, root, annotation=None, label_map=None, frames_dir=None, *, release="raw"):
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    def _subject_id(self, value):
        number = as_int(value)
        if number is not None:
            return f"sub{number:02d}"
        text = as_text(value).lower()
        return text if re.fullmatch(r"sub\d+", text) else None

    def _clip_folder(self, subject, clip, record):
        return self.frames_root / subject / clip


# ----------------------------------------------------------------------------- SAMM


class SAMM(AnnotatedReader):
    """SAMM (2016): 32 subjects, 159 micro-movements, 200 fps, 960x650 grey.

    Layout (datasets.md): ``SAMM_Micro_FACS_Codes_v2.xlsx`` whose 13 rows of notes come
    first; the header is the 14th row (``header=13``; if that row lacks the column names
    the first row holding ``Subject`` and ``Filename`` is used). Columns by name:
    ``Subject, Filename, Onset Frame, Apex Frame, Offset Frame, Estimated Emotion``.
    ``Subject`` 6 -> ``006``.

    Frames: raw ``SAMM/006/006_1_2/006_05562.jpg`` (confirmed: datasets.md; root itself
    when there is no ``SAMM`` folder); cropped ``SAMM_CROP/`` or ``SAMM_cropped/`` with the
    raw folder and file names (inferred: no public description of the cropped release's
    layout; a ``reg_`` file-name prefix is accepted too). ``release`` and ``frames_dir`` as
    in :class:`CASME2`.

    Default labels are the MEGC2019 rules: Happiness -> positive, Surprise -> surprise,
    Anger/Contempt/Disgust/Fear/Sadness -> negative, Other -> ``None``.
    The known error of ``032_3_1`` (apex 1930 outside 4896..4970) is fixed to the middle
    frame and logged, like every apex outside its range (module docstring rules).
    """

    name = "samm"
    fps = 200.0
    vocabulary = ("anger", "other", "happiness", "surprise", "contempt", "disgust", "fear", "sadness")
    default_label_map = {
        "happiness": "positive",
        "surprise": "surprise",
        **{e: "negative" for e in ("anger", "contempt", "disgust", "fear", "sadness")},
    }
    annotation_patterns = ("SAMM_Micro_FACS_Codes_v2.xlsx", "SAMM_Micro_FACS_Codes*.xls*", "SAMM*.xlsx")
    header_row = 13
    frame_dirs = ("SAMM",)
    cropped_dirs = ("SAMM_CROP", "SAMM_cropped")
    frame_pattern = frame_regex(r"(?:reg_)?\d+_(\d+)\.{ext}")
    columns = {
        "subject": ("Subject",),
        "clip": ("Filename",),
        "onset": ("Onset Frame", "OnsetFrame"),
        "apex": ("Apex Frame", "ApexFrame"),
        "offset": ("Offset Frame", "OffsetFrame"),
        "emotion": ("Estimated Emotion", "Emotion"),
    }

    def __init__(self, root, annotation=None, label_map=None, frames_dir=None, *, release="raw"):
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    def _table(self):
        path = self._locate()
        raw = read_sheet(path, sheet_name=0, header=None)
        row = find_header_row(raw, ("Subject", "Filename"), preferred=self.header_row)
        if row is None:
            raise AnnotationError(f"required column 'Filename' not found in annotation file {path} (no header row)")
        table = raw.iloc[row + 1 :].reset_index(drop=True)
        table.columns = [("Unnamed: %d" % i) if pd.isna(v) else str(v) for i, v in enumerate(raw.iloc[row])]
        return select_columns(table, self.columns, path)

    def _subject_id(self, value):
        number = as_int(value)
        return None if number is None else f"{number:03d}"

    def _clip_folder(self, subject, clip, record):
        return self.frames_root / subject / clip


# ----------------------------------------------------------------------------- SMIC


SMIC_LABELS = {"negative": "negative", "ne": "negative", "positive": "positive", "po": "positive",
               "surprise": "surprise", "sur": "surprise", "su": "surprise"}
"""SMIC folder / clip-name emotion spellings (``positive``/``po``, ``surprise``/``sur``)."""


def smic_subject(text) -> str | None:
    """``s1``, ``s01``, ``1`` -> ``s01`` (the MEGC2019 list's spelling)."""
    m = re.fullmatch(r"s?0*(\d+)", as_text(text).lower())
    return None if m is None else f"s{int(m.group(1)):02d}"


def smic_clip(text) -> str:
    """``s1_ne_01`` / ``s01_ne_01`` -> ``s01_ne_01``; other names are returned unchanged."""
    m = re.fullmatch(r"s0*(\d+)_(.+)", as_text(text), re.IGNORECASE)
    return as_text(text) if m is None else f"s{int(m.group(1)):02d}_{m.group(2)}"


def _in_smic_cropped(folder: Path) -> bool:
    """Whether an HS folder candidate lies in the cropped release (``SMIC_all_cropped/HS`` or below it)."""
    return SMIC_CROPPED_DIR in folder.parts[-2:]


def _holds_smic_subjects(folder: Path) -> bool:
    return folder.is_dir() and any(smic_subject(p.name) for p in folder.iterdir() if p.is_dir())


def _apex_mapping(apex, dataset: str) -> dict[str, int]:
    """Apex frames by normalised clip id, from a mapping or a csv/xlsx with Filename + Apex columns."""
    if apex is None:
        return {}
    if isinstance(apex, Mapping):
        return {smic_clip(k): int(v) for k, v in apex.items()}
    path = Path(apex)
    table = pd.read_csv(path) if path.suffix.lower() == ".csv" else read_sheet(path, sheet_name=0)
    spec = {"clip": ("Filename", "clip"), "apex": ("ApexFrame", "Apex Frame", "Apex", "ApexF")}
    cols = select_columns(table, spec, path)
    out = {}
    for clip, value in zip(cols["clip"], cols["apex"]):
        number = as_int(value)
        if number is not None:
            out[smic_clip(clip)] = number
    return out


SMIC_RAW_DIR, SMIC_CROPPED_DIR = "SMIC_all_raw", "SMIC_all_cropped"


class SMIC(ReaderBase):
    """SMIC-HS (2013): 16 subjects, 164 clips, 100 fps; the label is the folder.

    Layout (datasets.md): ``SMIC_all_raw/HS/s1/micro/negative/s1_ne_01/image*.bmp``
    (label folders ``negative``/``positive``/``surprise``, also ``ne``/``po``/``sur``).
    ``root`` may be the folder holding ``SMIC_all_raw``, ``SMIC_all_raw`` itself or ``HS``.
    Cropped release (``release="cropped"``): ``SMIC_all_cropped/HS/s1/micro/negative/
    s1_ne_01/reg_image*.bmp`` (inferred from the raw layout and the ``reg_`` names of the
    CASME releases; ``image*`` names are accepted too); ``root`` may also be
    ``SMIC_all_cropped`` itself or its ``HS``. ``frames_dir`` names the HS folder (the one
    holding ``s1``, ``s2``, ...) directly and is taken as the requested release.
    Subjects are normalised to ``s01`` and clips to ``s01_ne_01`` (the MEGC2019 list's
    spelling) whichever of ``s1``/``s01`` the folders use; frame paths stay the real ones.
    Onset/offset are the first/last frame of the clip folder; the apex is the middle frame
    (MobileViT paper; public loaders) unless ``apex`` gives it: a mapping clip -> frame
    number or a csv/xlsx with ``Filename`` and ``Apex`` columns (either clip spelling).

    ``annotation`` is unused (SMIC-HS has no spreadsheet). Issue rules: a label folder
    outside the vocabulary -> dropped; the same clip under two label folders -> the first
    (in sorted folder order) kept; an empty clip folder -> dropped; a given apex outside
    the clip or without its frame file -> fixed (middle / nearest frame).
    """

    name = "smic"
    fps = 100.0
    vocabulary = tuple(SMIC_LABELS)
    default_label_map = SMIC_LABELS
    frame_pattern = frame_regex(r"(?:reg_)?image(\d+)\.{ext}")

    def __init__(self, root, annotation=None, label_map=None, apex=None, *, frames_dir=None, release="raw"):
        self.apex = apex
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    def _hs_dir(self) -> Path:
        """The HS folder of the requested release; sets ``frames_release`` to the release found."""
        if self.frames_dir is not None:
            folder = first_existing_dir(self.root, (), self.frames_dir)
            if not folder.is_dir():
                raise FileNotFoundError(f"smic: frames_dir {folder} is not a folder; give the HS folder that holds "
                                        "the subject folders s1, s2, ...")
            self.frames_release = self.release
            return folder
        raw = (self.root / SMIC_RAW_DIR / "HS", self.root / "HS", self.root)
        cropped = (self.root / SMIC_CROPPED_DIR / "HS",)
        if self.release == "cropped":  # root may itself be SMIC_all_cropped or its HS
            candidates = cropped + tuple(c for c in raw if _in_smic_cropped(c))
        else:  # the raw release first; a cropped one only where no raw one exists
            candidates = raw + cropped
        for candidate in candidates:
            if _holds_smic_subjects(candidate):
                self.frames_release = "cropped" if _in_smic_cropped(candidate) else "raw"
                return candidate
        if self.release == "cropped":
            raise missing_cropped_release(self.name, self.root, [f"{SMIC_CROPPED_DIR}/HS"])
        raise FileNotFoundError(f"smic: no HS subject folders (s1, s2, ...) under {self.root}")

    def _rows(self):
        apex = _apex_mapping(self.apex, self.name)
        hs = self.hs_dir = self._hs_dir()
        subjects = sorted((p for p in hs.iterdir() if p.is_dir() and smic_subject(p.name)),
                          key=lambda p: smic_subject(p.name))
        for subject_dir in subjects:
            subject = smic_subject(subject_dir.name)
            micro = subject_dir / "micro"
            if not micro.is_dir():
                self.log.add(subject, None, "no micro folder", "dropped", f"{micro} missing")
                continue
            for label_dir in sorted(p for p in micro.iterdir() if p.is_dir()):
                for clip_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
                    row = self._clip_row(subject, label_dir.name, clip_dir, apex)
                    if row is not None:
                        yield row

    def _clip_row(self, subject, emotion, clip_dir: Path, apex_map):
        clip = smic_clip(clip_dir.name)
        if not self.first_occurrence(subject, clip) or not self.known_emotion(subject, clip, emotion):
            return None
        available = list_frames(clip_dir, self.frame_pattern)
        if not available:
            return self.frames_in_range(subject, clip, available, 0, 0, 0, folder=clip_dir)
        numbers = sorted(available)
        if clip in apex_map:
            checked = self.checked_range(subject, clip, numbers[0], apex_map[clip], numbers[-1])
        else:  # SMIC's documented default, not an issue: the middle existing frame
            checked = (numbers[0], numbers[(len(numbers) - 1) // 2], numbers[-1])
        frames = self.frames_in_range(subject, clip, available, *checked, folder=clip_dir)
        return None if frames is None else self.make_row(subject, clip, emotion, *frames)


class SMICE(AnnotatedReader):
    """SMIC-E (extended SMIC-HS release): ``SMIC-HS-E/s01/s1_ne_01/image{6 digits}.jpg``.

    Annotation ``SMIC-HS-E_annotation.xlsx`` with columns (by name) ``Subject, Filename,
    OnsetF, OffsetF, Emotion``; no apex column, so the apex is the middle frame unless
    ``apex`` (mapping or file, as for :class:`SMIC`) gives it. Subject and clip ids are
    normalised as in :class:`SMIC`; the clip folder is found under either spelling.
    Frames: raw ``SMIC-HS-E/`` (datasets.md); cropped ``SMIC-HS-E_cropped/`` with the same
    folders and ``reg_image{6 digits}.jpg`` (inferred; ``image*`` names accepted too).
    ``release`` and ``frames_dir`` as in :class:`CASME2`. Issue rules: module docstring.
    """

    name = "smic"
    fps = 100.0
    vocabulary = tuple(SMIC_LABELS)
    default_label_map = SMIC_LABELS
    annotation_patterns = ("SMIC-HS-E_annotation.xlsx", "SMIC*annotation*.xls*")
    frame_dirs = ("SMIC-HS-E",)
    cropped_dirs = ("SMIC-HS-E_cropped",)
    frame_pattern = frame_regex(r"(?:reg_)?image(\d+)\.{ext}")
    columns = {
        "subject": ("Subject",),
        "clip": ("Filename",),
        "onset": ("OnsetF", "OnsetFrame", "Onset Frame"),
        "offset": ("OffsetF", "OffsetFrame", "Offset Frame"),
        "emotion": ("Emotion", "Estimated Emotion"),
    }

    def __init__(self, root, annotation=None, label_map=None, apex=None, *, frames_dir=None, release="raw"):
        self.apex_map = _apex_mapping(apex, "smic")
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    def _subject_id(self, value):
        return smic_subject(value)

    def _clip_id(self, record, subject):
        return smic_clip(record["clip"])

    def _apex_value(self, record, subject, clip, onset, offset):
        if clip in self.apex_map:
            return self.apex_map[clip]
        on, off = as_int(onset), as_int(offset)
        return None if on is None or off is None else (on + off) // 2

    def _clip_folder(self, subject, clip, record):
        number = int(subject[1:])
        raw = as_text(record["clip"])
        for sub in (subject, f"s{number}"):
            for name in (raw, clip, f"s{number}_{clip.split('_', 1)[1]}"):
                if (self.frames_root / sub / name).is_dir():
                    return self.frames_root / sub / name
        return self.frames_root / subject / raw


# ----------------------------------------------------------------------------- MMEW


class MMEW(AnnotatedReader):
    """MMEW (2021): 36 subjects, 300 micro-expression clips, 90 fps.

    Layout (datasets.md): ``MMEW_Micro_Exp.xlsx`` with columns (by name) ``Subject,
    Filename, OnsetFrame, ApexFrame, OffsetFrame, Estimated Emotion`` (``Action Units``,
    ``remarks`` ignored); frames ``Micro_Expression/{emotion}/S01-01-001/15.jpg``. The
    clip folder is looked up under the row's emotion folder, then under any emotion folder.
    Subject ids are written ``S01``. Default labels: happiness -> positive, surprise ->
    surprise, disgust/fear/sadness/anger -> negative, others -> ``None``. Issue rules:
    module docstring. MMEW has no documented cropped release: ``release="cropped"`` raises
    ``ValueError``.
    """

    name = "mmew"
    fps = 90.0
    vocabulary = ("happiness", "surprise", "disgust", "fear", "sadness", "anger", "others")
    default_label_map = broad_label_map(vocabulary)
    annotation_patterns = ("MMEW_Micro_Exp.xlsx", "MMEW*.xls*")
    frame_dirs = ("Micro_Expression",)
    frame_pattern = frame_regex(r"(\d+)\.{ext}")
    columns = CASME2.columns

    def __init__(self, root, annotation=None, label_map=None, *, release="raw"):
        if check_release(release, self.name) == "cropped":
            raise ValueError("mmew: MMEW has no documented cropped release (datasets.md gives only the raw "
                             "Micro_Expression/{emotion}/S01-01-001/15.jpg frames); read it with release='raw'")
        super().__init__(root, annotation, label_map)

    def _table(self):
        table = super()._table()
        self._folders = {}
        if self.frames_root.is_dir():
            for emotion_dir in sorted(p for p in self.frames_root.iterdir() if p.is_dir()):
                for clip_dir in emotion_dir.iterdir():
                    self._folders.setdefault(clip_dir.name, clip_dir)
        return table

    def _subject_id(self, value):
        m = re.fullmatch(r"s?0*(\d+)", as_text(value).lower())
        return None if m is None else f"S{int(m.group(1)):02d}"

    def _clip_folder(self, subject, clip, record):
        direct = self.frames_root / as_text(record["emotion"]) / clip
        return direct if direct.is_dir() else self._folders.get(clip)


# ----------------------------------------------------------------------------- CASME


class CASME(AnnotatedReader):
    """CASME (2013): 19 subjects, 189-195 clips, 60 fps.

    Layout (datasets.md): an ``.xls`` sheet ``Subject, Filename, [blank], OnsetF, ApexF1,
    ApexF2, OffsetF, [blank], Action Units, Emotion`` -- columns selected by name, the
    blank ones ignored; ``ApexF1`` is the apex (``ApexF2``, a second apex, is ignored
    unless ``ApexF1`` is blank).

    Frames: raw ``sub01/EP01_5/EP01_5-1.jpg`` under ``CASME_raw_selected/`` (or root);
    cropped ``reg_EP01_5-113.jpg`` (the file name is confirmed: datasets.md) under
    ``Cropped/``, ``CASME_cropped/`` or ``casme1_cropped/`` (the folder name of the official
    Off-TANet ``data.py``; ``Cropped`` is inferred from the CASME II release).
    ``release`` and ``frames_dir`` as in :class:`CASME2`.
    Default labels (Off-TANet rules): happiness/amusement -> positive, surprise ->
    surprise, disgust/repression/sadness/fear/contempt -> negative, tense -> ``None``.
    Issue rules: module docstring.
    """

    name = "casme"
    fps = 60.0
    vocabulary = ("happiness", "amusement", "surprise", "disgust", "repression", "sadness", "fear", "contempt", "tense")
    default_label_map = broad_label_map(vocabulary)
    annotation_patterns = ("CASME*.xls", "CASME*.xlsx", "*.xls")
    frame_dirs = ("CASME_raw_selected", "CASME_RAW_selected")
    cropped_dirs = ("Cropped", "CASME_cropped", "casme1_cropped")
    frame_pattern = frame_regex(r"(?:reg_)?.+-(\d+)\.{ext}")
    columns = {
        "subject": ("Subject",),
        "clip": ("Filename",),
        "onset": ("OnsetF", "OnsetFrame", "Onset Frame"),
        "apex": ("ApexF1", "ApexF", "ApexFrame"),
        "apex2": ("ApexF2",),
        "offset": ("OffsetF", "OffsetFrame", "Offset Frame"),
        "emotion": ("Emotion", "Estimated Emotion"),
    }

    optional_columns = ("apex2",)

    def __init__(self, root, annotation=None, label_map=None, frames_dir=None, *, release="raw"):
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    _subject_id = CASME2._subject_id

    def _apex_value(self, record, subject, clip, onset, offset):
        first = record.get("apex")
        return record.get("apex2") if as_int(first) is None and as_int(record.get("apex2")) is not None else first

    def _clip_folder(self, subject, clip, record):
        return self.frames_root / subject / clip


# ----------------------------------------------------------------------------- CAS(ME)^2


CASME_SQ_COLUMNS = ("participant", "clip name", "onset", "apex", "offset", "action units",
                    "estimated emotion", "expression type", "self-reported emotion")
"""The header-less main sheet's columns, in order (datasets.md)."""


class CASMESq(AnnotatedReader):
    """CAS(ME)^2 (2017): 22 subjects, 57 micro + 300 macro expressions, 30 fps.

    Layout (datasets.md): ``CAS(ME)^2code_final.xlsx`` without a header row. The main
    sheet (the first not named ``naming rule*``) holds, by position, participant, clip
    name (``disgust1_3``), onset, apex, offset, action units, estimated emotion
    (``positive``/``negative``/``surprise``/``others``), expression type
    (``macro-expression``/``micro-expression``), self-reported emotion. Sheet
    ``naming rule1`` maps participant -> folder (``s15``) and the video-folder prefix
    (``15``); ``naming rule2`` maps the clip's video (``disgust1``) -> 4-digit code
    (``0101``). Frames ``rawpic/s15/15_0101disgustingteeth/img1.jpg``: the folder is found
    by the ``{prefix}_{code}`` start of its name; a video folder holds several clips.
    Cropped release: ``cropped/`` or ``casme^2_cropped/`` mirroring ``rawpic/``
    (``cropped/s15/15_0101disgustingteeth/img1.jpg``; inferred from the official Off-TANet
    ``data.py`` path ``casme^2_cropped/<Subject>/<Sample>/img<n>.jpg``).
    ``release`` and ``frames_dir`` as in :class:`CASME2`.

    ``expression_type`` selects ``"micro"`` (default), ``"macro"`` or ``"all"`` rows.
    Subject ids are the folder names (``s15``). A main sheet with fewer than the 8 needed
    columns or a missing naming sheet raises ``AnnotationError`` naming column/sheet and
    file; an unknown participant or video name drops the clip (logged). Other issue
    rules: module docstring.
    """

    name = "casme_sq"
    fps = 30.0
    vocabulary = ("positive", "negative", "surprise", "others")
    default_label_map = {"positive": "positive", "negative": "negative", "surprise": "surprise"}
    annotation_patterns = ("CAS(ME)^2code_final.xlsx", "CAS(ME)*code*.xls*")
    frame_dirs = ("rawpic",)
    cropped_dirs = ("cropped", "casme^2_cropped")
    frame_pattern = frame_regex(r"(?:reg_)?img(\d+)\.{ext}")
    TYPES = {"micro": ("micro-expression",), "macro": ("macro-expression",),
             "all": ("micro-expression", "macro-expression")}

    def __init__(self, root, annotation=None, label_map=None, expression_type="micro", *, frames_dir=None,
                 release="raw"):
        if expression_type not in self.TYPES:
            raise ValueError(f"expression_type must be one of {tuple(self.TYPES)}, got {expression_type!r}")
        self.expression_type = expression_type
        self.frames_dir = frames_dir
        self.release = check_release(release, self.name)
        super().__init__(root, annotation, label_map)

    def _table(self):
        path = self._locate()
        sheets = read_sheet(path, sheet_name=None, header=None)
        by_key = {header_key(n): n for n in sheets}
        for needed in ("naming rule1", "naming rule2"):
            if header_key(needed) not in by_key:
                raise AnnotationError(f"required sheet {needed!r} not found in annotation file {path}")
        main = next(n for n in sheets if not header_key(n).startswith("namingrule"))
        self._participants = self._rule1(sheets[by_key["namingrule1"]])
        self._videos = self._rule2(sheets[by_key["namingrule2"]])
        table = self._main_sheet(sheets[main], path)
        wanted = self.TYPES[self.expression_type]
        kind = table["expression type"].map(lambda v: as_text(v).lower())
        for idx in table.index[~kind.isin(self.TYPES["all"])]:
            self.log.add(as_text(table.at[idx, "participant"]), as_text(table.at[idx, "clip name"]),
                         "unknown expression type", "dropped", repr(table.at[idx, "expression type"]))
        table = table[kind.isin(wanted)]
        return pd.DataFrame({
            "subject": table["participant"], "clip": table["clip name"], "onset": table["onset"],
            "apex": table["apex"], "offset": table["offset"], "emotion": table["estimated emotion"],
        }).reset_index(drop=True)

    def _main_sheet(self, sheet: pd.DataFrame, path) -> pd.DataFrame:
        """Name the header-less columns by position; a short sheet, or a column 8 without any
        expression type (a column is missing and the rest shifted), raises ``AnnotationError``."""
        table = sheet.dropna(how="all")
        n = min(table.shape[1], len(CASME_SQ_COLUMNS))
        types = set(self.TYPES["all"])
        if n < 8 or not table.iloc[:, 7].map(lambda v: as_text(v).lower()).isin(types).any():
            missing = CASME_SQ_COLUMNS[n] if n < 8 else "expression type"
            raise AnnotationError(
                f"required column {missing!r} (column {min(n, 7) + 1} of the header-less main sheet) "
                f"not found in annotation file {path}"
            )
        table = table.iloc[:, :n].copy()
        table.columns = list(CASME_SQ_COLUMNS[:n])
        return table

    @staticmethod
    def _rule1(sheet) -> dict[int, tuple[str, str]]:
        """participant number -> (folder ``s15``, prefix ``15``)."""
        out = {}
        for row in sheet.itertuples(index=False):
            number = as_int(row[2]) if len(row) > 2 else None
            if number is not None:
                out[number] = (as_text(row[0]), as_text(row[1]))
        return out

    @staticmethod
    def _rule2(sheet) -> dict[str, str]:
        """video name ``disgust1`` -> 4-digit code ``0101``."""
        out = {}
        for row in sheet.itertuples(index=False):
            code = as_int(row[0])
            if code is not None:
                out[as_text(row[1]).lower()] = f"{code:04d}"
        return out

    def _subject_id(self, value):
        number = as_int(value)
        if number is None or number not in self._participants:
            return None
        return self._participants[number][0]

    def _clip_folder(self, subject, clip, record):
        folder, prefix = self._participants[as_int(record["subject"])]
        code = self._videos.get(clip.rsplit("_", 1)[0].lower())
        if code is None:
            return None
        hits = sorted((self.frames_root / folder).glob(f"{prefix}_{code}*"))
        return hits[0] if hits else None

    def _row(self, record):
        clip = as_text(record.get("clip"))
        subject = self._subject_id(record.get("subject"))
        if subject is None:
            self.log.add(as_text(record.get("subject")), clip, "participant not in 'naming rule1'", "dropped",
                         f"participant={record.get('subject')!r}")
            return None
        if clip.rsplit("_", 1)[0].lower() not in self._videos:
            self.log.add(subject, clip, "video not in 'naming rule2'", "dropped", clip)
            return None
        return super()._row(record)
