"""The engine's building blocks, shared by every trainer kind (public names only).

Everything a fold needs before and after its epochs, written once: per-fold seeds, the
accepted dataset forms, the input-shape check, the data fingerprint of a run's config,
normalisation and class balancing fitted on training samples only, the model, loss and
optimiser a recipe names, and the analysis-only test-curve point. The trainer kinds
(:mod:`mer_keras.training.trainers`), the backends (:mod:`mer_keras.training.backends`) and
the multi-stage recipes import these names from here; this module imports no other module
of the engine except the dataset, fold and recipe definitions, so there is no import
circle.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np

from .datasets import LOSODataset
from .folds import balanced_indices
from .recipes import Recipe, get_recipe

ENGINE_VERSION = 2
"""Bumped whenever the engine's computation or run config changes (part of the run's config hash).

2: the trainer protocol and backends; recipe notes left out of the hash.
"""


def seed_for(seed: int, fold_name: str) -> int:
    """Deterministic per-fold seed in ``[0, 2**31)`` from the base ``seed`` and the fold name."""
    digest = hashlib.sha256(f"{int(seed)}:{fold_name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def resolve_recipe(recipe, seed=None, overrides: Mapping | None = None) -> Recipe:
    """``recipe`` (a name or :class:`Recipe`) with ``seed`` and field ``overrides`` applied.

    Unknown fields raise ``TypeError`` naming the recipe's fields.
    """
    recipe = get_recipe(recipe)
    overrides = dict(overrides or {})
    if seed is not None:
        overrides["seed"] = int(seed)
    if overrides:
        fields = recipe.settable_fields()
        unknown = set(overrides) - fields
        if unknown:
            raise TypeError(f"unknown recipe field(s) {sorted(unknown)}; fields: {sorted(fields)}")
        recipe = recipe.replace(**overrides)
    return recipe


def as_dataset(data, recipe: Recipe, *, progress: bool = False) -> LOSODataset:
    """A :class:`LOSODataset` from any accepted form (see :func:`~mer_keras.training.loso.run_loso`)."""
    if isinstance(data, LOSODataset):
        return data
    if isinstance(data, Mapping):
        keys = {"x", "y", "subjects", "datasets", "clips", "class_names"}
        unknown = set(data) - keys
        if unknown or not {"x", "y", "subjects"} <= set(data):
            raise ValueError(f"an in-memory dataset dict needs keys x, y, subjects (optional datasets, clips, "
                             f"class_names); got {sorted(data)}")
        return LOSODataset.from_arrays(**data)
    if isinstance(data, (tuple, list)):
        if len(data) not in (3, 4):
            raise ValueError(f"an in-memory dataset tuple is (x, y, subjects[, datasets]); got {len(data)} items")
        return LOSODataset.from_arrays(*data)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        if (path / "cache.json").is_file():
            return LOSODataset.from_cache(path, input=recipe.input, progress=progress)
        if path.is_dir() and any(path.glob("*/u_train")):
            return LOSODataset.from_megc_folders(path)
        raise ValueError(f"{path} is neither a prepared cache (no cache.json; run `mer-keras prepare`) nor a "
                         "MEGC2019 folder tree ({subject}/u_train/{label}/*.png)")
    raise TypeError(f"dataset must be a LOSODataset, a path, a (x, y, subjects[, datasets]) tuple or a dict; "
                    f"got {type(data).__name__}")


def check_input_shape(dataset: LOSODataset, recipe: Recipe) -> None:
    """``ValueError`` naming both shapes when the samples do not fit the recipe's model input."""
    if dataset.is_sequence:
        raise ValueError(f"recipe {recipe.name!r} trains on single images, got a frame-sequence dataset")
    if tuple(dataset.sample_shape) != tuple(recipe.input_size):
        hint = (" (28x28x3 samples such as the MEGC2019 folders fit the 'ststnet' recipe)"
                if tuple(dataset.sample_shape) == (28, 28, 3) else "")
        raise ValueError(f"samples are {'x'.join(map(str, dataset.sample_shape))} but recipe {recipe.name!r} "
                         f"(model {recipe.model!r}) expects {'x'.join(map(str, recipe.input_size))}{hint}; "
                         "prepare the data at the recipe's size or pick another recipe")


def dataset_fingerprint(dataset: LOSODataset) -> dict:
    """Identity of the data a run trains on (part of the config hash, so other data never reuse folds)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(dataset.x).tobytes())
    h.update(str((dataset.x.shape, str(dataset.x.dtype))).encode())
    h.update(np.ascontiguousarray(dataset.y).tobytes())
    for column in (dataset.subjects, dataset.datasets, dataset.clips):
        h.update("\x1f".join(column.tolist()).encode("utf-8"))
    return {"n_samples": len(dataset), "sample_shape": list(dataset.sample_shape), "dtype": str(dataset.x.dtype),
            "n_subjects": len(dataset.subject_list()), "sha256": h.hexdigest()[:16]}


def fit_normalisation(x_train: np.ndarray, kind: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(mean, std)`` of the TRAINING samples (``None`` when ``kind`` is None).

    ``std`` below 1e-6 is replaced by 1 so constant channels pass through centred.
    """
    if kind is None:
        return None
    if kind != "per_channel":
        raise ValueError(f"unknown normalisation {kind!r}")
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def apply_normalisation(x: np.ndarray, stats) -> np.ndarray:
    """``(x - mean) / std`` with the training statistics of :func:`fit_normalisation` (float32)."""
    x = np.asarray(x, dtype=np.float32)
    if stats is None:
        return x
    mean, std = stats
    return (x - mean) / std


def oversample_extra(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions (into ``y``) of the mirrored copies that top every class up to the largest one.

    Copies are drawn with replacement (:func:`balanced_indices`); a position is listed once
    per copy. Used by :func:`oversample` and by the backends that gather copies from a
    shared pool instead of materialising them.
    """
    counts = np.bincount(y)
    chosen = balanced_indices(y, np.arange(len(y)), rng, per_class=int(counts.max()))
    seen: set[int] = set()
    extra = []
    for i in chosen.tolist():
        if i in seen:
            extra.append(i)
        seen.add(i)
    return np.asarray(extra, dtype=np.int64)


def flip_copies(x: np.ndarray, flip_u: bool) -> np.ndarray:
    """Left-right mirrored copies of ``x`` (N, H, W, C); with ``flip_u`` channel 0 (the flow ``u``) changes sign."""
    copies = np.asarray(x)[:, :, ::-1, :].copy()
    if flip_u:
        copies[..., 0] = -copies[..., 0]
    return copies


def oversample(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, flip_u: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top up the minority classes of training samples to the largest class with mirrored copies.

    Copies are drawn with replacement (:func:`balanced_indices`) and flipped left-right;
    for a float flow input (``flip_u``) the horizontal flow ``u`` (channel 0) changes sign,
    as a mirrored face moves the other way.
    """
    extra = oversample_extra(y, rng)
    if not len(extra):
        return x, y
    return np.concatenate([x, flip_copies(x[extra], flip_u)]), np.concatenate([y, y[extra]])


def build_model(recipe: Recipe, input_shape, n_classes: int):
    """A fresh model from the recipe (``head="svm"`` for the multi-margin loss; PyTorch's default
    initialisation when ``recipe.init == "pytorch"``)."""
    from mer_keras.models import get

    kwargs = dict(recipe.model_kwargs)
    if recipe.loss == "multi_margin":
        kwargs.setdefault("head", "svm")
    model = get(recipe.model)(classes=n_classes, input_shape=tuple(input_shape), **kwargs)
    if recipe.init == "pytorch":
        from mer_keras.models.init import pytorch_default_init

        pytorch_default_init(model)  # seeded through Python's random, which the fold's seed sets
    return model


def epoch_order(rng: np.random.Generator, n: int, shuffle: bool = True) -> np.ndarray:
    """The order of one epoch's ``n`` training samples: a fresh permutation from ``rng`` when
    ``shuffle`` (PyTorch ``DataLoader(shuffle=True)``), else ``0..n-1`` every epoch (no draw)."""
    return rng.permutation(n) if shuffle else np.arange(n)


def make_loss(recipe: Recipe, n_classes: int, *, per_sample: bool = False):
    """The recipe's loss as a Keras loss; ``per_sample=True`` returns one value per sample (no reduction)."""
    import keras

    reduction = None if per_sample else "sum_over_batch_size"
    if recipe.loss == "multi_margin":
        from mer_keras.models.heads import MultiMarginLoss

        return MultiMarginLoss(reduction=reduction)
    if recipe.label_smoothing:
        cce = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing, reduction=reduction)
        return lambda y, p: cce(keras.ops.one_hot(y, n_classes), p)
    return keras.losses.SparseCategoricalCrossentropy(reduction=reduction)


def make_optimizer(recipe: Recipe, *, lr: float | None = None, name: str | None = None, kwargs=None):
    """A fresh Keras optimiser of the recipe (``name``/``lr``/``kwargs`` override the recipe's stage-2 values).

    Backend-specific adjustments (loss scaling, the TensorFlow one-replica all-reduce skip)
    are applied by the backend's trainer (:mod:`mer_keras.training.backends`).
    """
    import keras

    name = name or recipe.optimizer
    cls = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[name]
    options = dict(recipe.optimizer_kwargs if kwargs is None else kwargs)
    return cls(learning_rate=recipe.lr if lr is None else lr, **options)


def validation_uf1(y_true, y_pred) -> float:
    """Unweighted (macro) F1 over the classes present in ``y_true`` or ``y_pred``.

    The score every inner-split selection of the engine uses (pre-training epoch, grid
    trial, SVM ``C``); the run's reported metrics come from :mod:`mer_keras.evaluation.metrics`.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    f1 = []
    for c in np.union1d(y_true, y_pred):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1)) if f1 else 0.0


def test_curve_point(scores: np.ndarray, y: np.ndarray, loss: str) -> dict:
    """Loss, accuracy and predicted labels of the test subject after one epoch (analysis only).

    ``loss`` is the recipe's loss name: cross-entropy of the softmax scores, or the
    multi-margin hinge (Eq. 17 of the ShuffleNetV2-SVM paper) of the SVM scores.
    """
    if loss == "cross_entropy":
        value = float(-np.mean(np.log(np.clip(scores[np.arange(len(y)), y], 1e-12, None))))
    else:
        margin = np.maximum(0.0, 1.0 - scores[np.arange(len(y)), y][:, None] + scores)
        margin[np.arange(len(y)), y] = 0.0
        value = float(margin.sum(axis=1).mean() / scores.shape[1])
    pred = scores.argmax(axis=1)
    return {"loss": value, "accuracy": float(np.mean(pred == y)), "y_pred": pred.tolist()}


__all__ = ["ENGINE_VERSION", "apply_normalisation", "as_dataset", "build_model", "check_input_shape", "dataset_fingerprint",
           "fit_normalisation", "flip_copies", "make_loss", "make_optimizer", "oversample", "oversample_extra",
           "resolve_recipe", "seed_for", "test_curve_point", "validation_uf1"]
