"""Leave-one-subject-out folds, leakage checks, subject-wise validation splits and class balancing.

Protocol (datasets.md): one fold per LOSO group -- a subject, made unique across source
datasets (``"casme2/sub01"``), so that the Off-TANet folds are (dataset, subject) pairs
(49 folds) and MEGC2019 has 68. MEGC2019 scores UF1/UAR on the predictions of all folds
pooled; the Off-TANet papers average per-subject scores. Both are computed from the
per-fold predictions, so the folds here are the same for either metric.

Every split built here is checked with :func:`assert_subject_disjoint`: no subject is
ever on both sides of a train/test (or fit/validation) split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from .datasets import LOSODataset


class LeakageError(AssertionError):
    """A subject's samples are on both sides of a split (its message names the subjects)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def fold_name(subject: str) -> str:
    """File-safe fold name of a subject: ``"casme2/sub01"`` -> ``"casme2__sub01"``.

    ``/`` becomes ``__`` and any other run of characters outside ``[A-Za-z0-9_.-]``
    becomes ``-`` (the convention of the cache's clip keys).
    """
    name = _UNSAFE.sub("-", str(subject).replace("/", "__"))
    return name if name not in ("", ".", "..") else f"fold-{name}"


@dataclass(frozen=True, eq=False)
class Fold:
    """One LOSO fold: train on ``train_index``, test on ``test_index`` (positions in the dataset).

    ``name`` is file-safe (:func:`fold_name`); ``test_subject`` is the left-out subject.
    Indices are sorted int64 arrays.
    """

    name: str
    test_subject: str
    train_index: np.ndarray
    test_index: np.ndarray

    def __repr__(self) -> str:
        return (f"Fold({self.name!r}, test_subject={self.test_subject!r}, "
                f"n_train={len(self.train_index)}, n_test={len(self.test_index)})")


def _as_index(index, n: int, what: str) -> np.ndarray:
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"{what}: boolean mask has shape {idx.shape}, expected ({n},)")
        return np.flatnonzero(idx)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{what} must hold integer positions, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{what} has positions outside 0..{n - 1}")
    return idx


def assert_subject_disjoint(dataset: "LOSODataset", train_index, test_index) -> None:
    """Raise :class:`LeakageError` unless no subject has samples in both index sets.

    The message lists the shared subjects (at most ten) and how many there are.
    """
    n = len(dataset)
    train = _as_index(train_index, n, "train_index")
    test = _as_index(test_index, n, "test_index")
    shared = set(dataset.subjects[train].tolist()) & set(dataset.subjects[test].tolist())
    if shared:
        names = sorted(shared)
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        raise LeakageError(f"{len(names)} subject(s) on both sides of the split: {names[:10]}{more}")


def _resolve_subjects(dataset: "LOSODataset", subjects: Iterable[str]) -> list[str]:
    """Map requested subjects to dataset subjects: exact match, else a unique ``.../{id}`` suffix match."""
    known = dataset.subject_list()
    out = []
    for s in subjects:
        s = str(s)
        if s in known:
            out.append(s)
            continue
        hits = [k for k in known if k.split("/", 1)[-1] == s or fold_name(k) == s]
        if len(hits) != 1:
            why = "is ambiguous: " + str(hits) if hits else "is not in the dataset"
            raise KeyError(f"subject {s!r} {why}; subjects: {known[:8]}{' ...' if len(known) > 8 else ''}")
        out.append(hits[0])
    return sorted(set(out))


def loso_folds(dataset: "LOSODataset", subjects: Sequence[str] | None = None) -> list[Fold]:
    """One fold per subject, sorted by subject: test = its samples, train = every other sample.

    Guarantees: over all subjects each sample is a test sample exactly once; train and
    test never share a subject (checked with :func:`assert_subject_disjoint` for every
    fold); fold names are unique and file-safe. ``subjects`` restricts the folds to
    those left-out subjects (quick runs); training still uses all other subjects. A
    requested name may be a full subject (``"casme2/sub01"``), its fold name, or its bare
    id when that is unambiguous (``"sub01"``).
    """
    chosen = dataset.subject_list() if subjects is None else _resolve_subjects(dataset, subjects)
    names = [fold_name(s) for s in chosen]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"subjects map to the same fold name {dup}; rename them")
    folds = []
    for subject, name in zip(chosen, names):
        is_test = dataset.subjects == subject
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        assert_subject_disjoint(dataset, train, test)
        folds.append(Fold(name=name, test_subject=subject, train_index=train, test_index=test))
    return folds


def inner_split(
    dataset: "LOSODataset",
    train_index,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    test_index=None,
    n_candidates: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a fold's training samples into ``(fit_index, val_index)`` by subject.

    ``train_index`` may be a :class:`Fold` (its test indices are then checked too).
    ``round(val_fraction * n_subjects)`` training subjects (at least one, at most all but
    one) go to validation with all their samples; never part of a subject. Among
    ``n_candidates`` random subject subsets (plus the exhaustive list when it is
    smaller), the one whose validation class proportions are closest (L1) to those of
    the training samples, with every training class present if possible, and whose
    sample share is closest to ``val_fraction``, is chosen -- stratified as far as whole
    subjects allow. Deterministic for a given ``seed`` and set of subjects (input order
    does not matter). Guarantees: fit and val partition ``train_index``; fit, val and the
    test samples (``test_index`` or the fold's) are pairwise subject-disjoint
    (:class:`LeakageError` otherwise). ``val_fraction=0`` returns all of it as fit.
    """
    if isinstance(train_index, Fold):
        test_index = train_index.test_index if test_index is None else test_index
        train_index = train_index.train_index
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train = np.sort(_as_index(train_index, len(dataset), "train_index"))
    if test_index is not None:
        assert_subject_disjoint(dataset, train, test_index)
    if val_fraction == 0 or train.size == 0:
        return train, np.empty(0, np.int64)
    subj = dataset.subjects[train]
    groups = sorted(set(subj.tolist()))
    if len(groups) < 2:
        raise ValueError(f"a subject-wise validation split needs at least 2 training subjects, got {groups}")
    n_val = int(min(max(1, round(val_fraction * len(groups))), len(groups) - 1))

    k = dataset.n_classes
    per_subject = np.zeros((len(groups), k))
    pos = {g: i for i, g in enumerate(groups)}
    np.add.at(per_subject, (np.array([pos[s] for s in subj]), dataset.y[train]), 1)
    total = per_subject.sum(axis=0)
    target = total / total.sum()
    present = total > 0

    rng = np.random.default_rng(seed)
    candidates = _candidate_subsets(len(groups), n_val, n_candidates, rng)
    best, best_score = None, None
    for cand in candidates:
        counts = per_subject[list(cand)].sum(axis=0)
        share = counts.sum() / total.sum()
        missing_classes = int(np.sum(present & (counts == 0)))
        score = (missing_classes, np.abs(counts / counts.sum() - target).sum() + abs(share - val_fraction))
        if best_score is None or score < best_score:
            best, best_score = cand, score
    val_subjects = {groups[i] for i in best}
    is_val = np.array([s in val_subjects for s in subj])
    fit, val = train[~is_val], train[is_val]
    assert_subject_disjoint(dataset, fit, val)
    if test_index is not None:
        assert_subject_disjoint(dataset, val, test_index)
    return fit, val


def _candidate_subsets(n: int, k: int, n_candidates: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """All ``k``-subsets of ``range(n)`` when there are at most ``n_candidates``, else that many random ones."""
    from itertools import combinations
    from math import comb

    if comb(n, k) <= n_candidates:
        subsets = list(combinations(range(n), k))
        order = rng.permutation(len(subsets))  # ties resolved by the seed, not by position
        return [subsets[i] for i in order]
    return [tuple(sorted(rng.choice(n, size=k, replace=False).tolist())) for _ in range(n_candidates)]


def balanced_indices(y, index, rng, per_class: int | None = None) -> np.ndarray:
    """Positions (from ``index``) with the same number of samples for every class present.

    ``y`` holds the labels of the whole dataset, ``index`` the positions to draw from
    (e.g. a fold's ``train_index``); ``rng`` is a ``numpy.random.Generator`` or a seed.
    Default (ShuffleNetV2 paper's pre-training rule): every class is sampled without
    replacement down to the size of the smallest class present. With ``per_class``:
    classes with at least that many samples are sampled without replacement, smaller
    classes keep every sample once and are topped up with replacement. Classes absent
    from ``index`` are ignored. Returns a sorted int64 array (duplicates possible only
    when topping up).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    labels = np.asarray(y)
    idx = np.asarray(index, dtype=np.int64).ravel()
    if idx.size == 0:
        return idx
    classes = np.unique(labels[idx])
    members = {c: idx[labels[idx] == c] for c in classes}
    size = min(len(m) for m in members.values()) if per_class is None else int(per_class)
    if size < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    out = []
    for c in classes:
        m = members[c]
        if len(m) >= size:
            out.append(rng.choice(m, size=size, replace=False))
        else:
            out.append(np.concatenate([m, rng.choice(m, size=size - len(m), replace=True)]))
    return np.sort(np.concatenate(out)).astype(np.int64)
