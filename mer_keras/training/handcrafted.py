"""Handcrafted-feature baselines through the LOSO engine: features once, a linear SVM per fold.

Run by :func:`~mer_keras.training.loso.run_loso` for recipes with
``trainer="handcrafted"`` (:class:`~mer_keras.training.recipes.HandcraftedRecipe`:
``"lbp_top_svm"``, ``"lbp_sip_svm"``, ``"hoof_svm"``, ``"bi_woof_svm"``), with the same
folds, resumable per-fold store and report as every other recipe.

* :func:`handcrafted_inputs` reads the recipe's input (a prepared cache path, a
  :class:`LOSODataset` or in-memory arrays), computes the recipe's feature
  (:data:`mer_keras.baselines.FEATURES`) for every clip *once per run*, and hands the
  engine a dataset whose samples are the feature vectors (``N x 1 x 1 x D``; same labels,
  subjects, datasets and clips as the input), so the folds, the predictions table and the
  report are the engine's own. The run's data fingerprint covers the input arrays and the
  feature matrix.
* :func:`train_fold_handcrafted` (the fold function, ``train_fold``'s signature) fits a
  scikit-learn ``Pipeline(StandardScaler, SVC(kernel="linear"))`` on the fold's training
  subjects only (:func:`~mer_keras.training.folds.assert_subject_disjoint` checked) and
  returns the SVM's decision values for the left-out subject as its scores. With a recipe
  ``svm_c_grid``, ``C`` is chosen per fold by UF1 on an inner split of the *training*
  subjects (:func:`~mer_keras.training.folds.inner_split`), then refitted on all of them.

Nothing here is trained by gradient descent: no epochs, no test curve
(``record_test_curve`` is refused) and no weights file (``save_weights`` stores nothing;
the fit is deterministic, rerunning a fold reproduces it). The folds run under the
engine's usual runtime context (which imports TensorFlow) but use only numpy, scikit-image
and scikit-learn.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np

from .datasets import LOSODataset
from .engine import validation_uf1
from .folds import Fold, assert_subject_disjoint, inner_split
from .recipes import HandcraftedRecipe, Recipe

logger = logging.getLogger("mer_keras.training")


def _check_recipe(recipe: Recipe) -> HandcraftedRecipe:
    if not isinstance(recipe, HandcraftedRecipe):
        raise TypeError(f"recipe {recipe.name!r} (trainer {recipe.trainer!r}) is not a handcrafted recipe")
    return recipe


def load_input(data, recipe: HandcraftedRecipe, *, progress: bool = False) -> LOSODataset:
    """The recipe's input as a :class:`LOSODataset`, checked against what its feature reads.

    ``data``: a prepared-cache path (read with ``input=recipe.input``; ``"frames"`` needs
    a cache prepared with ``keep="onset_to_apex"``), a :class:`LOSODataset` or in-memory
    arrays (see :func:`~mer_keras.training.loso.run_loso`).
    """
    from .engine import as_dataset

    dataset = as_dataset(data, recipe, progress=progress)
    shape = dataset.sample_shape
    if recipe.input == "frames" and not (dataset.is_sequence and shape[-1] == 1):
        got = "frame stacks" if dataset.is_sequence else "single images"
        raise ValueError(f"recipe {recipe.name!r} ({recipe.features}) reads grey frame stacks (a sequence dataset of "
                         f"T x H x W x 1 clips, cache input 'frames'), got {got} of "
                         f"{'x'.join(map(str, shape))} pixels x channels")
    if recipe.input == "flow_stack" and (dataset.is_sequence or shape[-1] != 3
                                         or not np.issubdtype(dataset.x.dtype, np.floating)):
        got = ("a sequence dataset of frame stacks" if dataset.is_sequence
               else f"{'x'.join(map(str, shape))} {dataset.x.dtype} samples")
        image = not dataset.is_sequence and shape[-1] == 3
        hint = " (uint8 flow images do not hold the flow in pixels)" if image else ""
        raise ValueError(f"recipe {recipe.name!r} ({recipe.features}) reads float H x W x 3 (u, v, strain) samples "
                         f"(cache input 'flow_stack'), got {got}{hint}")
    return dataset


def feature_dataset(source: LOSODataset, recipe: HandcraftedRecipe, *, progress: bool = False) -> LOSODataset:
    """The recipe's feature of every clip of ``source``, as a dataset of ``1 x 1 x D`` float64 samples."""
    from mer_keras.baselines import feature_matrix

    x = feature_matrix(recipe.features, list(source.x), recipe.feature_params, progress=progress)
    return LOSODataset(x=x[:, None, None, :], y=source.y, subjects=source.subjects, datasets=source.datasets,
                       clips=source.clips, class_names=source.class_names)


def input_fingerprint(source: LOSODataset) -> dict:
    """Identity of the input arrays the features were computed from (shape, dtype, SHA-256)."""
    h = hashlib.sha256()
    for sample in source.x:  # per clip: works for image and sequence datasets alike
        a = np.ascontiguousarray(sample)
        h.update(str((a.shape, str(a.dtype))).encode())
        h.update(a.tobytes())
    return {"input_sample_shape": list(source.sample_shape), "input_sequence": bool(source.is_sequence),
            "input_sha256": h.hexdigest()[:16]}


def handcrafted_inputs(data, recipe: Recipe, *, progress: bool = False, record_test_curve: bool = False):
    """For :func:`~mer_keras.training.loso.run_loso`: ``(feature_dataset, fingerprint, fold_fn)``.

    The features of every clip are computed here, once for the run; ``fold_fn`` is
    :func:`train_fold_handcrafted`. ``fingerprint`` is the engine's
    ``dataset_fingerprint`` of the feature dataset plus the input's
    (:func:`input_fingerprint`), the feature name and its length.
    """
    from .engine import dataset_fingerprint

    recipe = _check_recipe(recipe)
    if record_test_curve:
        raise ValueError("record_test_curve is not available for handcrafted recipes (nothing is trained by epochs)")
    from mer_keras.baselines import get_feature

    get_feature(recipe.features).check_params(recipe.feature_params)  # refuse unknown parameters before loading
    source = load_input(data, recipe, progress=progress)
    start = time.perf_counter()
    features = feature_dataset(source, recipe, progress=progress)
    logger.info("%s: %d clips x %d features in %.1f s", recipe.features, len(features), features.sample_shape[-1],
                time.perf_counter() - start)
    fingerprint = {**dataset_fingerprint(features), **input_fingerprint(source), "features": recipe.features,
                   "n_features": int(features.sample_shape[-1])}
    return features, fingerprint, train_fold_handcrafted


# ----------------------------------------------------------------------------- the fold


def linear_svm(c: float, class_weight=None):
    """``Pipeline(StandardScaler(), SVC(kernel="linear", C=c))`` (one-vs-rest-shaped decision values).

    LIBSVM's exact solver: no random state, the same data give the same model.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return Pipeline([("scale", StandardScaler()),
                     ("svm", SVC(kernel="linear", C=float(c), class_weight=class_weight,
                                 decision_function_shape="ovr"))])


def fit_svm(x: np.ndarray, y: np.ndarray, c: float, class_weight=None):
    """:func:`linear_svm` fitted on ``(x, y)``; a single training class gives a constant predictor."""
    classes = np.unique(y)
    if len(classes) == 1:
        return _Constant(int(classes[0]))
    return linear_svm(c, class_weight).fit(x, y)


class _Constant:
    """The classifier of a training set with one class: that class for every sample."""

    def __init__(self, label: int):
        self.classes_ = np.asarray([label])

    def predict(self, x):
        return np.full(len(x), self.classes_[0])

    def decision_function(self, x):
        return np.zeros(len(x))


def class_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``len(x) x n_classes`` scores from ``model.decision_function``; arg-max = ``model.predict``.

    Column ``k`` is class ``k``'s one-vs-rest-shaped decision value (scikit-learn's
    ``decision_function_shape="ovr"``: one-vs-one votes plus a confidence in
    ``(-1/3, 1/3)``). Classes absent from the training clips get the row's lowest score
    minus 1 (never predicted); with two training classes the binary decision value ``d``
    is ``+d`` for the second class and ``-d`` for the first; a single training class
    scores 0 and the others -1.
    """
    if len(x) == 0:
        return np.zeros((0, n_classes))
    decision = np.asarray(model.decision_function(x), dtype=np.float64)
    classes = np.asarray(model.classes_, dtype=np.int64)
    if decision.ndim == 1:
        decision = np.stack([-decision, decision], axis=1) if len(classes) == 2 else decision[:, None]
    scores = np.empty((len(x), n_classes))
    scores[:] = (decision.min(axis=1) - 1.0)[:, None]
    scores[:, classes] = decision
    return scores


def select_c(dataset: LOSODataset, x: np.ndarray, fold: Fold, recipe: HandcraftedRecipe,
             seed: int) -> tuple[float, dict]:
    """``C`` from ``recipe.svm_c_grid`` by validation UF1 on an inner split of the fold's training subjects.

    :func:`~mer_keras.training.folds.inner_split` holds out ``val_fraction`` of the
    training subjects (whole subjects; the test subject is never involved); each ``C`` is
    fitted on the others and scored on them. Ties: the earlier value in the grid.
    Returns ``(C, record)`` with the grid, the validation UF1 per value and the subjects.
    """
    fit, val = inner_split(dataset, fold.train_index, recipe.val_fraction, seed, test_index=fold.test_index)
    y = dataset.y
    scores = []
    for c in recipe.svm_c_grid:
        model = fit_svm(x[fit], y[fit], c, recipe.svm_class_weight)
        scores.append(validation_uf1(y[val], model.predict(x[val])))
    best = int(np.argmax(scores))  # first maximum = earlier grid value on ties
    record = {"grid_c": list(recipe.svm_c_grid), "grid_val_uf1": scores,
              "grid_fit_subjects": sorted(set(dataset.subjects[fit].tolist())),
              "grid_val_subjects": sorted(set(dataset.subjects[val].tolist()))}
    return float(recipe.svm_c_grid[best]), record


def fit_handcrafted(dataset: LOSODataset, train_index, recipe: Recipe, fold_seed: int, *,
                    test_index=()) -> tuple[Any, dict, dict]:
    """Fit the linear SVM on the clips at ``train_index``: ``(model, history, info)``.

    With ``recipe.svm_c_grid``, ``C`` is chosen on an inner split of the training subjects
    (:func:`select_c`; ``test_index``, when given, is checked to share no subject with it).
    ``history``: ``svm_c`` (the ``C`` used), ``train_accuracy`` and the grid record;
    ``info``: sizes, the training classes, support vectors, fit time and seed.
    """
    recipe = _check_recipe(recipe)
    x = np.asarray(dataset.x, dtype=np.float64).reshape(len(dataset), -1)
    y = dataset.y
    train = np.asarray(train_index, dtype=np.int64)
    start = time.perf_counter()
    history: dict = {}
    c = float(recipe.svm_c)
    if recipe.svm_c_grid is not None:
        inner = Fold(name="fit", test_subject="", train_index=train, test_index=np.asarray(test_index, dtype=np.int64))
        c, record = select_c(dataset, x, inner, recipe, fold_seed)
        history.update(record)
    model = fit_svm(x[train], y[train], c, recipe.svm_class_weight)
    history.update(svm_c=c, train_accuracy=float(np.mean(model.predict(x[train]) == y[train])))
    svm = getattr(model, "named_steps", {}).get("svm")
    info = {"seed": int(fold_seed), "fit_s": round(time.perf_counter() - start, 3), "n_train": int(len(train)),
            "n_features": int(x.shape[1]), "svm_c": c, "train_classes": [int(k) for k in model.classes_],
            "n_support_vectors": None if svm is None else int(svm.n_support_.sum())}
    return model, history, info


def predict_handcrafted(model, dataset: LOSODataset, index) -> np.ndarray:
    """``len(index) x K`` decision values of the clips at ``index`` (:func:`class_scores`)."""
    x = np.asarray(dataset.x[np.asarray(index, dtype=np.int64)], dtype=np.float64).reshape(len(index), -1)
    return class_scores(model, x, dataset.n_classes)


def train_fold_handcrafted(dataset: LOSODataset, fold: Fold, recipe: Recipe, fold_seed: int, *, mixed: bool = False,
                           record_test_curve: bool = False, progress: bool = False, position: int = 1):
    """Fit the linear SVM on ``fold``'s training clips; return ``(None, test_scores, history, info)``.

    ``dataset`` is the feature dataset of :func:`handcrafted_inputs`. ``test_scores``:
    ``len(fold.test_index) x K`` decision values (:func:`class_scores`); ``history`` and
    ``info`` as :func:`fit_handcrafted` gives them (``info`` with ``n_test``). ``mixed``,
    ``progress`` and ``position`` are accepted for the engine's signature and unused.
    """
    recipe = _check_recipe(recipe)
    if record_test_curve:
        raise ValueError("record_test_curve is not available for handcrafted recipes (nothing is trained by epochs)")
    assert_subject_disjoint(dataset, fold.train_index, fold.test_index)
    model, history, info = fit_handcrafted(dataset, fold.train_index, recipe, fold_seed, test_index=fold.test_index)
    scores = predict_handcrafted(model, dataset, fold.test_index)
    return None, scores, history, {**info, "n_test": int(len(fold.test_index))}


__all__ = ["class_scores", "feature_dataset", "fit_handcrafted", "fit_svm", "handcrafted_inputs", "input_fingerprint",
           "linear_svm", "load_input", "predict_handcrafted", "select_c", "train_fold_handcrafted"]
