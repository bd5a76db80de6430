"""UF1, UAR and accuracy of leave-one-subject-out (LOSO) predictions, pooled or per subject.

Definitions (Off-TANet paper, ``zhang2021-off-tanet``, Eqs. 11-12; the same metrics as
MEGC2019), for a set of classes :math:`C`, with :math:`n_c` the number of samples whose
true class is :math:`c` and :math:`TP_c, FP_c, FN_c` counted one-vs-rest::

    UAR = (1/|C|) * sum_{c in C} TP_c / n_c                          (Eq. 11)
    UF1 = (1/|C|) * sum_{c in C} 2 TP_c / (2 TP_c + FP_c + FN_c)     (Eq. 12)

UAR is also called balanced accuracy (scikit-learn ``balanced_accuracy_score``), UF1 the
macro-averaged F1 score (``f1_score(average="macro")``).

Classes absent from a subset
----------------------------
A single left-out subject rarely shows all three classes, so a per-subject score must say
what happens to a class :math:`c` of ``labels`` that is absent. The rule here is: **a
class enters a mean only where its term of Eq. 11 / Eq. 12 is defined** (the denominator
is non-zero); :math:`C` in the equations is that set of classes, not ``labels``.

* UF1 (Eq. 12): the denominator is :math:`2TP_c + FP_c + FN_c = n_c + \\hat n_c`
  (true count plus predicted count). A class with **no true and no predicted sample** is
  excluded (the MEGC convention); a class that is *predicted* but has no true sample is
  kept and scores F1 = 0, so a false alarm is still penalised. This equals
  ``sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=present)`` with
  ``present`` = the classes of ``labels`` found in ``y_true`` or ``y_pred``.
* UAR (Eq. 11): the denominator is :math:`n_c`, so a class with **no true sample** is
  excluded (whether or not it was predicted; the false alarms already lower the recall
  of the true classes they were taken from). This equals
  ``sklearn.metrics.recall_score(y_true, y_pred, average="macro", labels=present_true)``
  with ``present_true`` = the classes of ``labels`` found in ``y_true``, and
  ``balanced_accuracy_score(y_true, y_pred)``.

On a complete evaluation set (every class has true samples, as in the MEGC2019 composite
and the Off-TANet combined set) both rules exclude nothing and the scores are the plain
macro averages over ``labels``.

Pooled versus per-subject
-------------------------
* :func:`pooled_scores` — MEGC2019 convention: concatenate the test predictions of all
  folds and compute UF1/UAR once (the challenge protocol; a subject with many clips
  weighs more than one with few).
* :func:`per_subject_scores` — Off-TANet/ARFNet convention: UF1/UAR of each left-out
  subject, then their unweighted mean ("each left-out subject is of the same
  importance", text after Eq. 12). Folds are ``(dataset, subject)`` pairs, because
  subject ids are only unique within a dataset.
* :func:`per_dataset_scores` — both of the above restricted to each source dataset.

A *predictions* frame is a :class:`pandas.DataFrame` with one row per test clip and the
columns :data:`PREDICTION_COLUMNS` (``clip, subject, dataset, y_true, y_pred``), optionally
``fold`` and class scores ``score_0, score_1, ...``. The scores are computed on whatever
``y_pred`` holds; the LOSO engine must fill it from a model chosen without looking at the
test subject (see :mod:`mer_keras.evaluation.report` for the separately labelled
``test_selected_*`` numbers).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from mer_keras.data.manifest import PREDICTION_COLUMNS

__all__ = [
    "DEFAULT_LABELS",
    "PREDICTION_COLUMNS",
    "SubjectScores",
    "accuracy",
    "class_scores",
    "confusion",
    "per_dataset_scores",
    "per_subject_scores",
    "pooled_scores",
    "uar",
    "uf1",
    "validate_predictions",
]

DEFAULT_LABELS: tuple[int, ...] = (0, 1, 2)
"""MEGC2019 label ids: 0 negative, 1 positive, 2 surprise."""


# --------------------------------------------------------------------------- validation
def _check_labels(labels) -> tuple:
    if labels is None:
        raise ValueError("labels must be given (e.g. (0, 1, 2)), got None")
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a sequence of class ids, got the string {labels!r}")
    labels = tuple(labels)
    if len(labels) == 0:
        raise ValueError("labels must contain at least one class")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels contain duplicates: {labels}")
    return labels


def _encode(values, labels: tuple, name: str) -> np.ndarray:
    """Map each value to its position in ``labels``; unknown values raise ``ValueError``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one label per sample), "
                         f"got shape {arr.shape}")
    index = {lab: i for i, lab in enumerate(labels)}
    out = np.empty(arr.shape[0], dtype=np.int64)
    bad = []
    for k, v in enumerate(arr.tolist()):
        i = index.get(v, -1) if _hashable(v) else -1
        if i < 0 or isinstance(v, bool):
            bad.append(v)
            if len(bad) >= 5:
                break
        else:
            out[k] = i
    if bad:
        raise ValueError(f"{name} has values outside labels={list(labels)}, e.g. {bad}")
    return out


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _prepare(y_true, y_pred, labels) -> tuple[np.ndarray, np.ndarray, tuple]:
    labels = _check_labels(labels)
    t = _encode(y_true, labels, "y_true")
    p = _encode(y_pred, labels, "y_pred")
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} != {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("y_true and y_pred are empty")
    return t, p, labels


def _confusion_codes(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


# --------------------------------------------------------------------------- clip-level metrics
def confusion(y_true, y_pred, labels: Sequence = DEFAULT_LABELS) -> np.ndarray:
    """Confusion matrix ``M[i, j]`` = number of samples of true class ``labels[i]``
    predicted as ``labels[j]`` (rows true, columns predicted; scikit-learn's layout).

    Raises ``ValueError`` if a value of ``y_true`` or ``y_pred`` is not in ``labels``.
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    return _confusion_codes(t, p, len(labels))


def _per_class(m: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(m).astype(np.int64)
    n_true = m.sum(axis=1)
    n_pred = m.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(n_true + n_pred > 0, 2.0 * tp / (n_true + n_pred), np.nan)
        recall = np.where(n_true > 0, tp / np.maximum(n_true, 1), np.nan)
    return dict(tp=tp, fp=n_pred - tp, fn=n_true - tp, n_true=n_true, n_pred=n_pred,
                f1=f1, recall=recall)


def class_scores(y_true, y_pred, labels: Sequence = DEFAULT_LABELS) -> pd.DataFrame:
    """Per-class terms of Eqs. 11-12: one row per label with ``tp, fp, fn, n_true, n_pred,
    f1, recall`` and whether the class enters UF1 (``in_uf1``) and UAR (``in_uar``).

    ``f1`` is NaN for a class with no true and no predicted sample, ``recall`` is NaN for a
    class with no true sample: those classes are the ones left out of the means (see the
    module docstring).
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    pc = _per_class(_confusion_codes(t, p, len(labels)))
    df = pd.DataFrame(pc, index=pd.Index(list(labels), name="label"))
    df["in_uf1"] = df["f1"].notna()
    df["in_uar"] = df["recall"].notna()
    return df


def uf1(y_true, y_pred, labels: Sequence = DEFAULT_LABELS) -> float:
    """Unweighted F1 (macro F1), Off-TANet Eq. 12.

    ``UF1 = mean over c of 2 TP_c / (2 TP_c + FP_c + FN_c)``, over the classes of
    ``labels`` that occur in ``y_true`` **or** ``y_pred``; a class with neither a true nor a
    predicted sample (0/0 in Eq. 12) is excluded from the mean, a class predicted but never
    true counts as F1 = 0. Equal to
    ``f1_score(y_true, y_pred, average="macro", labels=<labels present in y_true or y_pred>)``.

    Raises ``ValueError`` for empty inputs, length mismatch, or values outside ``labels``.
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    f1 = _per_class(_confusion_codes(t, p, len(labels)))["f1"]
    return float(np.nanmean(f1))  # at least one class is present since inputs are non-empty


def uar(y_true, y_pred, labels: Sequence = DEFAULT_LABELS) -> float:
    """Unweighted average recall (balanced accuracy), Off-TANet Eq. 11.

    ``UAR = mean over c of TP_c / n_c``, over the classes of ``labels`` with at least one
    true sample (``n_c > 0``); a class absent from ``y_true`` is excluded even if it was
    predicted (its recall is 0/0). Equal to
    ``recall_score(y_true, y_pred, average="macro", labels=<labels present in y_true>)``
    and to ``balanced_accuracy_score(y_true, y_pred)``.

    Raises ``ValueError`` for empty inputs, length mismatch, or values outside ``labels``.
    """
    t, p, labels = _prepare(y_true, y_pred, labels)
    recall = _per_class(_confusion_codes(t, p, len(labels)))["recall"]
    return float(np.nanmean(recall))


def accuracy(y_true, y_pred, labels: Sequence = DEFAULT_LABELS) -> float:
    """Fraction of samples whose prediction equals the truth (values validated against
    ``labels`` like :func:`uf1`). Not class-balanced: reported for reference only."""
    t, p, _ = _prepare(y_true, y_pred, labels)
    return float(np.mean(t == p))


def _scores(y_true, y_pred, labels) -> dict[str, float]:
    t, p, labels = _prepare(y_true, y_pred, labels)
    pc = _per_class(_confusion_codes(t, p, len(labels)))
    return dict(uf1=float(np.nanmean(pc["f1"])), uar=float(np.nanmean(pc["recall"])),
                accuracy=float(np.mean(t == p)), n_clips=int(t.shape[0]))


# --------------------------------------------------------------------------- predictions frames
def validate_predictions(predictions: pd.DataFrame, labels: Sequence = DEFAULT_LABELS
                         ) -> pd.DataFrame:
    """Check a LOSO predictions frame and return a normalised copy.

    Requirements: a :class:`pandas.DataFrame` with the columns :data:`PREDICTION_COLUMNS`,
    at least one row, no missing ``y_true``/``y_pred``, every ``y_true``/``y_pred`` in
    ``labels``, and no ``(dataset, subject, clip)`` triple twice (one row per test clip; clip
    names alone repeat across subjects, e.g. CASME II's ``EP02_01f``). The copy has
    ``dataset``, ``subject`` and ``clip`` as strings (so ``"006"`` and ``6`` cannot split a
    subject after a CSV round trip) and integer labels where the labels are integers.

    Raises ``TypeError`` / ``ValueError`` with a message naming the problem.
    """
    if not isinstance(predictions, pd.DataFrame):
        raise TypeError(f"predictions must be a pandas DataFrame, got {type(predictions).__name__}")
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions is missing column(s) {missing}; required columns are "
                         f"{list(PREDICTION_COLUMNS)} (one row per test clip), got "
                         f"{list(predictions.columns)}")
    if len(predictions) == 0:
        raise ValueError("predictions has no rows")
    labels = _check_labels(labels)
    df = predictions.copy()
    for col in ("dataset", "subject", "clip"):
        if df[col].isna().any():
            raise ValueError(f"predictions column {col!r} has missing values")
        df[col] = df[col].astype(str)
    for col in ("y_true", "y_pred"):
        if df[col].isna().any():
            n = int(df[col].isna().sum())
            raise ValueError(f"predictions column {col!r} has {n} missing value(s)")
        codes = _encode(df[col].to_numpy(), labels, col)
        if all(isinstance(lab, (int, np.integer)) for lab in labels):
            df[col] = np.asarray(labels, dtype=np.int64)[codes]
    key = ["dataset", "subject", "clip"]
    dup = df.duplicated(subset=key, keep=False)
    if dup.any():
        example = df.loc[dup, key].drop_duplicates().head(3).values.tolist()
        raise ValueError(f"predictions has {int(dup.sum())} rows sharing a (dataset, subject, "
                         f"clip), e.g. {example}; expected one row per test clip")
    return df


def pooled_scores(predictions: pd.DataFrame, labels: Sequence = DEFAULT_LABELS) -> dict:
    """MEGC2019 convention: UF1, UAR and accuracy of all folds' predictions pooled.

    Returns ``{"uf1", "uar", "accuracy", "n_clips"}`` computed once on the concatenated
    ``y_true``/``y_pred`` of every row (Eqs. 11-12 on the whole evaluation set).
    """
    df = validate_predictions(predictions, labels)
    return _scores(df["y_true"].to_numpy(), df["y_pred"].to_numpy(), labels)


class SubjectScores(NamedTuple):
    """Result of :func:`per_subject_scores`: the per-subject ``table`` and the unweighted
    ``mean`` over its rows (``{"uf1", "uar", "accuracy", "n_subjects"}``)."""

    table: pd.DataFrame
    mean: dict


def per_subject_scores(predictions: pd.DataFrame, labels: Sequence = DEFAULT_LABELS
                       ) -> SubjectScores:
    """Off-TANet/ARFNet convention: scores of each left-out subject and their unweighted mean.

    One row per ``(dataset, subject)`` pair (a LOSO fold), in order of first appearance,
    with columns ``dataset, subject, n_clips, uf1, uar, accuracy``; each subject's UF1/UAR
    follow the absent-class rule of the module docstring (a class with no true and no
    predicted clip of that subject is left out of its UF1; a class with no true clip is
    left out of its UAR). ``mean`` holds the plain average of the table's ``uf1``, ``uar``
    and ``accuracy`` columns — every subject weighs the same regardless of its number of
    clips ("the final UAR and UF1 is the unweighted mean of all UARs and UF1s calculated
    in the 49-fold cross-validation", Off-TANet, text after Eq. 12).
    """
    df = validate_predictions(predictions, labels)
    rows = []
    for (dataset, subject), g in df.groupby(["dataset", "subject"], sort=False):
        s = _scores(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), labels)
        rows.append(dict(dataset=dataset, subject=subject, n_clips=s["n_clips"],
                         uf1=s["uf1"], uar=s["uar"], accuracy=s["accuracy"]))
    table = pd.DataFrame(rows, columns=["dataset", "subject", "n_clips", "uf1", "uar", "accuracy"])
    mean = dict(uf1=float(table["uf1"].mean()), uar=float(table["uar"].mean()),
                accuracy=float(table["accuracy"].mean()), n_subjects=int(len(table)))
    return SubjectScores(table, mean)


def per_dataset_scores(predictions: pd.DataFrame, labels: Sequence = DEFAULT_LABELS
                       ) -> pd.DataFrame:
    """Scores restricted to each source dataset (MEGC2019 reports SMIC, CASME II, SAMM).

    One row per dataset (index ``dataset``, order of first appearance) with the pooled
    ``uf1, uar, accuracy`` of that dataset's clips, the unweighted per-subject means
    ``uf1_subject_mean, uar_subject_mean``, and ``n_clips, n_subjects``.
    """
    df = validate_predictions(predictions, labels)
    rows = []
    for dataset, g in df.groupby("dataset", sort=False):
        pooled = _scores(g["y_true"].to_numpy(), g["y_pred"].to_numpy(), labels)
        subj = per_subject_scores(g, labels)
        rows.append(dict(dataset=dataset, uf1=pooled["uf1"], uar=pooled["uar"],
                         accuracy=pooled["accuracy"], uf1_subject_mean=subj.mean["uf1"],
                         uar_subject_mean=subj.mean["uar"], n_clips=pooled["n_clips"],
                         n_subjects=subj.mean["n_subjects"]))
    return pd.DataFrame(rows).set_index("dataset")
