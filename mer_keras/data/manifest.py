"""The standard clip manifest every reader returns, and the log of what a reader fixed or dropped.

A manifest is a :class:`pandas.DataFrame` with one row per clip and the columns of
:data:`MANIFEST_COLUMNS`:

``dataset``     short dataset name (``"casme2"``, ``"samm"``, ``"smic"``, ...)
``subject``     subject id as a string, unique within a dataset (``"sub01"``, ``"006"``, ``"s01"``)
``clip``        clip id as the dataset writes it (``"EP02_01f"``, ``"006_1_2"``, ``"s01_ne_01"``)
``frames``      tuple of frame file paths, ordered by frame number, onset..offset inclusive
``frame_numbers`` tuple of the dataset's own frame numbers, parallel to ``frames``
``onset``, ``apex``, ``offset``  the dataset's frame numbers (ints)
``emotion``     the original emotion label as written in the release
``label``       3-class name (``negative`` / ``positive`` / ``surprise``) or ``None``
``label_id``    0 / 1 / 2 (MEGC2019 ids) or -1 when ``label`` is ``None``
``fps``         frame rate of the recording
``release``     which release of the dataset the frames come from: ``"raw"`` (the recorded
                frames, e.g. CASME II ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg``) or
                ``"cropped"`` (the dataset's own face crops, e.g. ``Cropped/sub01/EP02_01f/
                reg_img46.jpg``; datasets.md). The reader records the folder it actually read;
                rows built without it get ``"raw"``

Readers never drop or repair a clip silently: every decision is a row of an
:class:`IssueLog`, returned beside the manifest (``reader.issues``) and carried on the
frame as ``manifest.attrs["issues"]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd

logger = logging.getLogger("mer_keras.data")

LABELS: tuple[str, ...] = ("negative", "positive", "surprise")
"""The three MEGC2019 classes, in the order of their official ids (0, 1, 2)."""

LABEL_IDS: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

MANIFEST_COLUMNS: tuple[str, ...] = (
    "dataset",
    "subject",
    "clip",
    "frames",
    "frame_numbers",
    "onset",
    "apex",
    "offset",
    "emotion",
    "label",
    "label_id",
    "fps",
    "release",
)

RELEASES: tuple[str, ...] = ("raw", "cropped")
"""Values of the ``release`` column: the recorded frames or the dataset's cropped release."""

PREDICTION_COLUMNS: tuple[str, ...] = ("clip", "subject", "dataset", "y_true", "y_pred")
"""Leading columns of a LOSO predictions table (one row per test clip); ``score_0 ..
score_{K-1}`` follow. Written by :mod:`mer_keras.training.store`, read by
:mod:`mer_keras.evaluation.metrics`."""

ISSUE_COLUMNS: tuple[str, ...] = ("dataset", "subject", "clip", "problem", "action", "detail")
"""``action`` is one of ``"fixed"`` (the clip is kept after a documented repair) or ``"dropped"``."""

ISSUE_ACTIONS = ("fixed", "dropped")


class AnnotationError(ValueError):
    """An annotation file cannot be read as the dataset's documented format."""


@dataclass
class IssueLog:
    """Collects the per-clip decisions a reader takes; each one is also logged."""

    dataset: str
    rows: list[dict] = field(default_factory=list)

    def add(self, subject, clip, problem: str, action: str, detail: str = "") -> None:
        if action not in ISSUE_ACTIONS:
            raise ValueError(f"action must be one of {ISSUE_ACTIONS}, got {action!r}")
        row = dict(
            dataset=self.dataset,
            subject=None if subject is None else str(subject),
            clip=None if clip is None else str(clip),
            problem=problem,
            action=action,
            detail=detail,
        )
        self.rows.append(row)
        logger.warning("%s %s/%s: %s -> %s %s", self.dataset, subject, clip, problem, action, detail)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(ISSUE_COLUMNS))


def label_id(label) -> int:
    """MEGC2019 id of a 3-class name; -1 for ``None``."""
    if label is None or (isinstance(label, float) and pd.isna(label)):
        return -1
    return LABEL_IDS[label]


def check_release(release, who: str = "release") -> str:
    """``release`` if it is one of :data:`RELEASES`, else a ``ValueError`` naming the choices."""
    if not isinstance(release, str) or release not in RELEASES:
        raise ValueError(f"{who}: release must be one of {RELEASES} (the recorded frames or the dataset's "
                         f"cropped face release), got {release!r}")
    return release


def make_manifest(rows: Iterable[dict], issues: pd.DataFrame | None = None) -> pd.DataFrame:
    """Build a manifest frame from row dicts, with the standard column order and dtypes.

    A row without ``release`` (or with ``None``) gets ``"raw"``.
    """
    rows = list(rows)
    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if len(df):
        df["release"] = df["release"].where(df["release"].notna(), "raw").astype(object)
        df["label_id"] = [label_id(x) for x in df["label"]]
        for col in ("onset", "apex", "offset", "label_id"):
            df[col] = df[col].astype("int64")
        df["fps"] = df["fps"].astype("float64")
    df.attrs["issues"] = issues if issues is not None else pd.DataFrame(columns=list(ISSUE_COLUMNS))
    return df


def concat_manifests(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate manifests, keeping every part's issue table."""
    frames = list(frames)
    issues = [f.attrs.get("issues") for f in frames if f.attrs.get("issues") is not None]
    issues = [i for i in issues if len(i)]
    bare = []
    for f in frames:  # pandas compares attrs while concatenating; DataFrame-valued attrs cannot be compared
        f = f.copy(deep=False)
        f.attrs = {}
        bare.append(f)
    out = pd.concat(bare, ignore_index=True) if bare else make_manifest([])
    out.attrs = {}
    out.attrs["issues"] = (
        pd.concat(issues, ignore_index=True) if issues else pd.DataFrame(columns=list(ISSUE_COLUMNS))
    )
    return out


def validate_manifest(df: pd.DataFrame) -> pd.DataFrame:
    """Check a manifest's columns and invariants; raise ``ValueError`` naming the first breach."""
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest lacks columns {missing}")
    dup = df.duplicated(["dataset", "subject", "clip"])
    if dup.any():
        raise ValueError(f"duplicate clips: {df.loc[dup, ['dataset', 'clip']].values.tolist()[:5]}")
    for row in df.itertuples(index=False):
        if not (row.onset <= row.apex <= row.offset):
            raise ValueError(f"{row.dataset}/{row.clip}: apex {row.apex} outside {row.onset}..{row.offset}")
        if len(row.frames) != len(row.frame_numbers) or not row.frames:
            raise ValueError(f"{row.dataset}/{row.clip}: frames and frame_numbers differ or are empty")
        if row.label is not None and not (isinstance(row.label, float)) and row.label not in LABEL_IDS:
            raise ValueError(f"{row.dataset}/{row.clip}: unknown label {row.label!r}")
        if row.release not in RELEASES:
            raise ValueError(f"{row.dataset}/{row.clip}: release {row.release!r} is not one of {RELEASES}")
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Clips per dataset and class plus subject counts: the tables of datasets.md."""
    counts = pd.crosstab(df["dataset"], df["label"].fillna("unlabelled"))
    for name in LABELS:
        if name not in counts.columns:
            counts[name] = 0
    counts = counts[[*LABELS, *[c for c in counts.columns if c not in LABELS]]]
    counts["total"] = counts.sum(axis=1)
    counts["subjects"] = df.groupby("dataset")["subject"].nunique()
    total = counts.sum(numeric_only=True)
    total["subjects"] = df[["dataset", "subject"]].drop_duplicates().shape[0]
    counts.loc["all"] = total
    return counts.astype(int)
