"""The papers' composite datasets, built from the per-dataset readers (``datasets.md``).

Every composite takes one root per source dataset; a root of ``None`` omits that source
(the result then holds only the others — useful when a licence covers only some sets).
Each returns a manifest (:mod:`mer_keras.data.manifest`) of the clips with a 3-class
label, whose ``attrs["issues"]`` holds the issue rows of every source reader. Clips whose
emotion the protocol does not map are left out (they are protocol choices, not input
problems, so they are not issue rows).

Leave-one-subject-out folds are the distinct ``(dataset, subject)`` pairs
(:func:`fold_groups`): 68 for MEGC2019, 49 for the Off-TANet set.

Extra reader arguments go through ``**overrides`` as ``{source}_{argument}``, e.g.
``megc2019(..., casme2_annotation="CASME2-coding-20190701.xlsx", smic_apex=apex_map)``.

``release`` (``"raw"`` or ``"cropped"``) is forwarded to every micro-expression reader:
``"cropped"`` reads each dataset's own face crops, the input of the official Off-TANet
``data.py`` (preprocessing.md). A per-source ``{source}_release=`` wins, e.g.
``shufflenet_composite(..., release="cropped", mmew_release="raw")`` (MMEW has no
cropped release). The manifest's ``release`` column says what each clip was read from.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from .manifest import ISSUE_COLUMNS, check_release, concat_manifests, make_manifest
from .readers import get_reader

# ----------------------------------------------------------------------------- label maps

SMIC_FOLDER_LABELS = {"negative": "negative", "positive": "positive", "surprise": "surprise",
                      "ne": "negative", "po": "positive", "sur": "surprise", "su": "surprise"}

MEGC2019_MAPS: dict[str, dict[str, str]] = {
    "casme2": {"happiness": "positive", "surprise": "surprise", "disgust": "negative", "repression": "negative"},
    "samm": {"happiness": "positive", "surprise": "surprise",
             **{e: "negative" for e in ("anger", "contempt", "disgust", "fear", "sadness")}},
    "smic": SMIC_FOLDER_LABELS,
}
"""MEGC2019 rules (datasets.md): everything not listed is dropped."""

MEGC2019_EXCLUDED = (("casme2", "sub04", "EP12_01f"), ("casme2", "sub05", "EP09_05f"))
"""The two CASME II disgust clips the MEGC2019 ground-truth list leaves out (-> 145 clips)."""

OFF_TANET_MAPS: dict[str, dict[str, str]] = {
    "casme": {"happiness": "positive", "amusement": "positive", "surprise": "surprise",
              **{e: "negative" for e in ("disgust", "repression", "sadness", "fear", "contempt")}},
    "casme2": MEGC2019_MAPS["casme2"],
    "casme_sq": {"positive": "positive", "negative": "negative", "surprise": "surprise"},
}
"""Off-TANet / ARFNet rules (datasets.md): tense, others and macro-expressions dropped;
CASME II exactly as MEGC2019 (the same 145 clips)."""

SHUFFLENET_NEGATIVE = ("disgust", "sadness", "fear", "anger", "contempt")
SHUFFLENET_MAP = {"happiness": "positive", "happy": "positive", "surprise": "surprise",
                  **{e: "negative" for e in SHUFFLENET_NEGATIVE}}
"""ShuffleNetV2 paper: happy -> positive; disgust, sadness, fear, anger, contempt -> negative;
surprise -> surprise. Other emotions (CASME II repression, others) are dropped."""

MOBILEVIT_MAP = {"happiness": "positive", "happy": "positive", "surprise": "surprise",
                 **{e: "negative" for e in ("anger", "disgust", "sadness")}}
"""MobileViT paper: "positive emotions included only happiness, and negative emotions
contained anger, disgust, and sadness"; surprise separate. Others are dropped."""


# ----------------------------------------------------------------------------- helpers


def fold_groups(manifest: pd.DataFrame) -> pd.Series:
    """Leave-one-subject-out group of each row: ``"{dataset}/{subject}"``."""
    return manifest["dataset"].astype(str) + "/" + manifest["subject"].astype(str)


def _split_overrides(sources, overrides: Mapping) -> dict[str, dict]:
    """``{"casme2_annotation": p}`` -> ``{"casme2": {"annotation": p}}``; unknown keys raise."""
    out: dict[str, dict] = {s: {} for s in sources}
    for key, value in overrides.items():
        source = next((s for s in sorted(sources, key=len, reverse=True) if key.startswith(s + "_")), None)
        if source is None:
            raise TypeError(f"unexpected argument {key!r}; use '{{source}}_{{argument}}' with a source in "
                            f"{list(sources)}")
        out[source][key[len(source) + 1 :]] = value
    return out


def _read(source: str, root, label_map, options: dict) -> pd.DataFrame:
    """One source's manifest with the protocol's label map, unmapped clips left out."""
    manifest = get_reader(source)(root, label_map=label_map, **options).manifest
    issues = manifest.attrs.get("issues")
    kept = manifest[manifest["label"].notna()].reset_index(drop=True)
    kept.attrs = {"issues": issues}
    return kept


def _combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return make_manifest([], pd.DataFrame(columns=list(ISSUE_COLUMNS)))
    return concat_manifests(parts)


def _build(roots: Mapping[str, object], maps: Mapping[str, Mapping], overrides: Mapping,
           release: str | None = None) -> list[pd.DataFrame]:
    """Every given source's manifest; ``release`` goes to each reader unless ``{source}_release`` is given."""
    options = _split_overrides(tuple(roots), overrides)
    if release is not None:
        for source in roots:
            options[source].setdefault("release", release)
    return [_read(s, root, maps[s], options[s]) for s, root in roots.items() if root is not None]


def _without(manifest: pd.DataFrame, excluded) -> pd.DataFrame:
    keys = set(excluded)
    mask = [(d, s, c) not in keys for d, s, c in zip(manifest["dataset"], manifest["subject"], manifest["clip"])]
    out = manifest[mask].reset_index(drop=True)
    out.attrs = dict(manifest.attrs)
    return out


def _trim(row: dict, keep: slice) -> dict:
    """Keep ``frames[keep]``; onset/offset follow the kept frames, apex is clamped into them."""
    numbers, frames = tuple(row["frame_numbers"])[keep], tuple(row["frames"])[keep]
    row = dict(row, frames=frames, frame_numbers=numbers, onset=numbers[0], offset=numbers[-1])
    row["apex"] = min(max(row["apex"], numbers[0]), numbers[-1])
    return row


def _trim_rows(manifest: pd.DataFrame, choose) -> pd.DataFrame:
    """Apply ``choose(row) -> slice`` to every row's frames."""
    issues = manifest.attrs.get("issues")
    rows = [_trim(r, choose(r)) for r in manifest.to_dict("records")]
    return make_manifest(rows, issues)


def _apex_only(row) -> slice:
    i = list(row["frame_numbers"]).index(row["apex"])
    return slice(i, i + 1)


# ----------------------------------------------------------------------------- composites


def megc2019(casme2=None, samm=None, smic=None, *, release: str = "raw", **overrides) -> pd.DataFrame:
    """MEGC2019 composite: CASME II + SAMM + SMIC-HS, 3 classes, 442 clips / 68 subjects.

    Rules (datasets.md, verified against the official 442-row list): CASME II
    happiness -> positive, surprise -> surprise, disgust/repression -> negative, the rest
    dropped, and ``sub04/EP12_01f``, ``sub05/EP09_05f`` dropped (-> 145 over 24 subjects);
    SAMM Happiness -> positive, Surprise -> surprise, Anger/Contempt/Disgust/Fear/Sadness
    -> negative, Other dropped (-> 133 over 28); SMIC-HS all 164 clips with their folder
    label. Label ids 0 negative, 1 positive, 2 surprise; folds = subjects.
    ``release``: ``"raw"`` or ``"cropped"`` frames (module docstring).
    """
    release = check_release(release, "megc2019")
    parts = _build({"casme2": casme2, "samm": samm, "smic": smic}, MEGC2019_MAPS, overrides, release)
    return _without(_combine(parts), MEGC2019_EXCLUDED)


def off_tanet_composite(casme=None, casme2=None, casme_sq=None, *, release: str = "raw",
                        **overrides) -> pd.DataFrame:
    """Off-TANet / ARFNet set: CASME + CASME II + CAS(ME)^2 micro-expressions, 294 clips / 49 subjects.

    CASME II uses the MEGC2019 rules (the same 145 clips); CASME and CAS(ME)^2 map
    happiness/``positive`` -> positive, surprise -> surprise, the negative categories ->
    negative, and drop tense, others and macro-expressions (datasets.md table:
    CASME 114/16, CASME II 145/24, CAS(ME)^2 35/9). Folds are (dataset, subject) pairs
    (:func:`fold_groups`); the papers average per-subject scores. The official code reads
    the three datasets' cropped releases: pass ``release="cropped"`` for that input.
    """
    release = check_release(release, "off_tanet_composite")
    overrides = dict(overrides)
    overrides.setdefault("casme_sq_expression_type", "micro")
    parts = _build({"casme": casme, "casme2": casme2, "casme_sq": casme_sq}, OFF_TANET_MAPS, overrides, release)
    return _without(_combine(parts), MEGC2019_EXCLUDED)


def shufflenet_composite(casme2=None, smic=None, samm=None, mmew=None, *, release: str = "raw",
                         **overrides) -> pd.DataFrame:
    """ShuffleNetV2 paper (2022): CASME II + SMIC + SAMM (LOSO), MMEW optional.

    Mapping (the paper): happy -> positive; disgust, sadness, fear, anger, contempt ->
    negative; surprise -> surprise; anything else (CASME II repression and others, SAMM
    Other, MMEW others) dropped; SMIC keeps its folder labels. The paper reports MMEW as a
    fourth column, so it is omitted unless a root is given. No clip is excluded by name.
    ``release="cropped"`` with an MMEW root raises ``ValueError`` (MMEW has no documented
    cropped release); omit MMEW or pass ``mmew_release="raw"``.
    """
    release = check_release(release, "shufflenet_composite")
    roots = {"casme2": casme2, "smic": smic, "samm": samm, "mmew": mmew}
    maps = {"casme2": SHUFFLENET_MAP, "samm": SHUFFLENET_MAP, "mmew": SHUFFLENET_MAP, "smic": SMIC_FOLDER_LABELS}
    return _combine(_build(roots, maps, overrides, release))


def mobilevit_micro(casme2=None, samm=None, smic=None, apex_only: bool = False, *, release: str = "raw",
                    **overrides) -> pd.DataFrame:
    """MobileViT paper's micro-expression set: CASME II + SAMM + SMIC.

    Labels by the paper's wording (:data:`MOBILEVIT_MAP`: happiness; anger, disgust,
    sadness; surprise); SMIC keeps its folder labels and its apex is the middle frame.
    The paper uses apex frames only: ``apex_only=True`` keeps just the apex frame in
    ``frames`` (onset = apex = offset); by default the whole clip is kept. ``release``:
    ``"raw"`` or ``"cropped"`` frames (module docstring).
    """
    release = check_release(release, "mobilevit_micro")
    maps = {"casme2": MOBILEVIT_MAP, "samm": MOBILEVIT_MAP, "smic": SMIC_FOLDER_LABELS}
    out = _combine(_build({"casme2": casme2, "samm": samm, "smic": smic}, maps, overrides, release))
    return _trim_rows(out, _apex_only) if apex_only and len(out) else out


def mobilevit_macro(ckplus=None, oulu_casia=None, jaffe=None, mug=None, *, last_frames: int = 3,
                    mug_frames: int = 6, **overrides) -> pd.DataFrame:
    """MobileViT paper's macro-expression transfer set: CK+, Oulu-CASIA (VL/Strong), JAFFE, MUG.

    Labels by :data:`MOBILEVIT_MAP`. Frames as in the paper: the last ``last_frames``
    (3) frames of each CK+ and Oulu-CASIA sequence (they end at the apex), the one JAFFE
    image, and ``mug_frames`` (6; the paper takes six to ten) frames centred on a MUG
    take's apex. Kept frames set onset/offset; the apex stays the sequence's apex.
    """
    roots = {"ckplus": ckplus, "oulu_casia": oulu_casia, "jaffe": jaffe, "mug": mug}
    parts = _build(roots, {s: MOBILEVIT_MAP for s in roots}, overrides)
    trimmed = []
    for part in parts:
        if not len(part):
            trimmed.append(part)
            continue
        source = part["dataset"].iloc[0]
        if source in ("ckplus", "oulu_casia"):
            part = _trim_rows(part, lambda r: slice(-last_frames, None))
        elif source == "mug":
            part = _trim_rows(part, lambda r: _window(r, mug_frames))
        trimmed.append(part)
    return _combine(trimmed)


def _window(row, n: int) -> slice:
    """``n`` consecutive frames centred on the apex, shifted to stay inside the clip."""
    numbers = list(row["frame_numbers"])
    i = numbers.index(row["apex"])
    start = max(0, min(i - n // 2, len(numbers) - n))
    return slice(start, start + n)


COMPOSITES = {
    "megc2019": megc2019,
    "off_tanet": off_tanet_composite,
    "shufflenet": shufflenet_composite,
    "mobilevit_micro": mobilevit_micro,
    "mobilevit_macro": mobilevit_macro,
}
"""Composite name (as in :func:`mer_keras.data.synthetic.write_composite`) -> builder."""


MACRO_COMPOSITES = ("mobilevit_macro",)
"""Composites of macro-expression datasets: they have no cropped release and take no ``release``."""


def load_composite(name: str, *, release: str = "raw", **roots) -> pd.DataFrame:
    """Build composite ``name`` from keyword roots (``load_composite("megc2019", **write_composite(...))``).

    ``release`` goes to the micro-expression composites; a macro-expression composite
    (:data:`MACRO_COMPOSITES`) accepts only ``"raw"``.
    """
    if name not in COMPOSITES:
        raise KeyError(f"unknown composite {name!r}; known: {sorted(COMPOSITES)}")
    release = check_release(release, name)
    if name in MACRO_COMPOSITES:
        if release != "raw":
            raise ValueError(f"{name}: the macro-expression datasets have no cropped release; use release='raw'")
        return COMPOSITES[name](**roots)
    return COMPOSITES[name](release=release, **roots)
