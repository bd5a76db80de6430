"""Readers of the macro-expression datasets the MobileViT paper transfers from: CK+, Oulu-CASIA, JAFFE, MUG.

Each yields one manifest row per labelled sequence (one per image for JAFFE). Default
labels use the broad mapping: happiness -> positive, surprise -> surprise, anger,
contempt, disgust, fear, sadness -> negative, neutral -> ``None``. The MobileViT
composite (:func:`mer_keras.data.composites.mobilevit_macro`) narrows this to the
paper's classes and frame choices.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

from ._common import ReaderBase, first_existing_dir, frame_regex, list_frames
from .micro import broad_label_map

CKPLUS_EMOTIONS = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy", 6: "sadness",
                   7: "surprise"}
"""CK+ emotion codes (datasets.md)."""

JAFFE_EMOTIONS = {"AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "NE": "neutral", "SA": "sadness",
                  "SU": "surprise"}
"""JAFFE file-name emotion letters (datasets.md)."""


class SequenceReader(ReaderBase):
    """Shared part of the sequence readers: frames of a folder, onset first, offset last."""

    frame_pattern: re.Pattern

    def sequence_row(self, subject, clip, emotion, folder: Path, apex=None):
        """Row for a whole-folder sequence; ``apex`` defaults to the last frame.

        Rules: an empty or missing folder drops the clip; a given apex without its frame
        file becomes the nearest frame (fixed), as for the micro readers.
        """
        available = list_frames(folder, self.frame_pattern)
        if not available:
            return self.frames_in_range(subject, clip, available, 0, 0, 0, folder=folder)
        numbers = sorted(available)
        apex = numbers[-1] if apex is None else apex
        frames = self.frames_in_range(subject, clip, available, numbers[0], apex, numbers[-1], folder=folder)
        return None if frames is None else self.make_row(subject, clip, emotion, *frames)


class CKPlus(SequenceReader):
    """CK+ (2010): 593 sequences, 327 labelled; only labelled ones are read.

    Layout (datasets.md): ``cohn-kanade-images/S005/001/S005_001_00000001.png`` and
    ``Emotion/S005/001/S005_001_00000011_emotion.txt`` holding one number (0 neutral,
    1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise). A sequence
    runs from neutral to the apex: frames = the whole sequence, onset = first frame,
    apex = offset = last frame. Subject ``S005``, clip ``S005_001``; ``fps`` 30.
    Issue rules: an emotion file with an unreadable or unknown code -> dropped; a
    labelled sequence without image folder/files -> dropped; duplicates -> first kept.
    ``annotation`` is unused.
    """

    name = "ckplus"
    fps = 30.0
    vocabulary = tuple(CKPLUS_EMOTIONS.values())
    default_label_map = broad_label_map(vocabulary)
    frame_pattern = frame_regex(r"S\d+_\d+_(\d+)\.{ext}")

    def _rows(self):
        images = first_existing_dir(self.root, ("cohn-kanade-images",))
        emotions = self.root / "Emotion"
        if not emotions.is_dir():
            raise FileNotFoundError(f"ckplus: no Emotion folder under {self.root}")
        for txt in sorted(emotions.glob("*/*/*_emotion.txt")):
            subject, sequence = txt.parent.parent.name, txt.parent.name
            clip = f"{subject}_{sequence}"
            emotion = self._emotion(txt, subject, clip)
            if emotion is None or not self.first_occurrence(subject, clip):
                continue
            row = self.sequence_row(subject, clip, emotion, images / subject / sequence)
            if row is not None:
                yield row

    def _emotion(self, txt: Path, subject, clip):
        text = txt.read_text().strip()
        try:
            value = float(text)
            code = int(value) if value == int(value) else None
        except ValueError:
            code = None
        if code not in CKPLUS_EMOTIONS:
            self.log.add(subject, clip, "unknown emotion", "dropped", f"{txt.name} holds {text!r}")
            return None
        return CKPLUS_EMOTIONS[code]


class OuluCASIA(SequenceReader):
    """Oulu-CASIA NIR&VIS (2011): 80 subjects x 6 emotions, 25 fps.

    Layout (datasets.md): ``OriginalImg/VL/Strong/P001/Happiness/000.jpeg``; ``modality``
    (``VL``/``NI``) and ``illumination`` (``Strong``/``Weak``/``Dark``) choose the part,
    ``VL``/``Strong`` by default. Emotion folders ``Anger, Disgust, Fear, Happiness,
    Sadness, Surprise``. Sequences run neutral -> apex: onset = first frame, apex =
    offset = last frame. Subject ``P001``, clip ``P001_Happiness``. Issue rules: an
    emotion folder outside the six -> dropped; an empty folder -> dropped.
    """

    name = "oulu_casia"
    fps = 25.0
    vocabulary = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    default_label_map = broad_label_map(vocabulary)
    frame_pattern = frame_regex(r"(\d+)\.{ext}")

    def __init__(self, root, annotation=None, label_map=None, modality="VL", illumination="Strong"):
        self.modality, self.illumination = modality, illumination
        super().__init__(root, annotation, label_map)

    def _rows(self):
        base = first_existing_dir(self.root, ("OriginalImg",)) / self.modality / self.illumination
        if not base.is_dir():
            raise FileNotFoundError(f"oulu_casia: {base} not found")
        for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for emotion_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                subject, emotion = subject_dir.name, emotion_dir.name
                clip = f"{subject}_{emotion}"
                if not self.first_occurrence(subject, clip) or not self.known_emotion(subject, clip, emotion):
                    continue
                row = self.sequence_row(subject, clip, emotion, emotion_dir)
                if row is not None:
                    yield row


class JAFFE(ReaderBase):
    """JAFFE (1998): 213-219 still images of 10 posers, one row per image.

    Layout (datasets.md): ``KA.AN1.39.tiff`` -- poser, emotion letters + take, image
    number (AN, DI, FE, HA, NE, SA, SU). Images are read from root (or ``jaffe/``).
    Row: subject ``KA``, clip ``KA.AN1.39``, frames = (the image,), frame number = 39 =
    onset = apex = offset; ``fps`` is NaN (stills). Issue rules: an image name that does
    not parse, or unknown emotion letters -> dropped; duplicates -> first kept.
    """

    name = "jaffe"
    fps = math.nan
    vocabulary = tuple(JAFFE_EMOTIONS.values())
    default_label_map = broad_label_map(vocabulary)
    NAME = re.compile(r"^([A-Za-z]{2})\.([A-Za-z]{2})(\d*)\.(\d+)\.tiff?$")

    def _rows(self):
        folder = first_existing_dir(self.root, ("jaffe", "jaffedbase"))
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".tif", ".tiff"):
                continue
            m = self.NAME.match(path.name)
            if m is None:
                self.log.add(None, path.name, "unparseable image name", "dropped", path.name)
                continue
            subject, code, number = m.group(1).upper(), m.group(2).upper(), int(m.group(4))
            clip = path.name.rsplit(".", 1)[0]
            if code not in JAFFE_EMOTIONS:
                self.log.add(subject, clip, "unknown emotion", "dropped", f"emotion letters {code!r}")
                continue
            if self.first_occurrence(subject, clip):
                yield self.make_row(subject, clip, JAFFE_EMOTIONS[code], (number,), (str(path),),
                                    number, number, number)


class MUG(SequenceReader):
    """MUG facial expression database (2010): 86 subjects, 19 fps.

    Layout (datasets.md): ``subjects3/001/happiness/take000/img_0000.jpg``; one row per
    take. A take starts and ends neutral with the apex in between and no apex is
    annotated, so apex = middle frame unless ``apex`` (mapping clip -> frame number)
    gives it. Subject ``001``, clip ``001_happiness_take000``. Issue rules: an emotion
    folder outside the vocabulary -> dropped; an empty take -> dropped.
    """

    name = "mug"
    fps = 19.0
    vocabulary = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
    default_label_map = broad_label_map(vocabulary)
    frame_pattern = frame_regex(r"img_(\d+)\.{ext}")

    def __init__(self, root, annotation=None, label_map=None, apex: Mapping[str, int] | None = None):
        self.apex = dict(apex or {})
        super().__init__(root, annotation, label_map)

    def _rows(self):
        base = first_existing_dir(self.root, ("subjects3",))
        for subject_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for emotion_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                for take in sorted(p for p in emotion_dir.iterdir() if p.is_dir()):
                    row = self._take_row(subject_dir.name, emotion_dir.name, take)
                    if row is not None:
                        yield row

    def _take_row(self, subject, emotion, take: Path):
        clip = f"{subject}_{emotion}_{take.name}"
        if not self.first_occurrence(subject, clip) or not self.known_emotion(subject, clip, emotion):
            return None
        numbers = sorted(list_frames(take, self.frame_pattern))
        apex = self.apex.get(clip, numbers[(len(numbers) - 1) // 2] if numbers else 0)
        return self.sequence_row(subject, clip, emotion, take, apex=apex)
