"""The leave-one-subject-out (LOSO) engine: :func:`run_loso`.

For every left-out subject (:func:`~mer_keras.training.folds.loso_folds` order) the engine
seeds everything from ``(seed, fold name)``, builds a *fresh* model from the recipe
(:mod:`mer_keras.training.recipes`), fits whatever is fitted (normalisation statistics,
class balancing) on the fold's training subjects only, checks subject-disjointness
(:func:`~mer_keras.training.folds.assert_subject_disjoint`), trains for the recipe's
epochs and predicts the left-out subject with the model *after the last epoch* (as the
original STSTNet code does; never an epoch chosen on the test subject). Each finished fold is written atomically by
:class:`~mer_keras.training.store.FoldStore` under ``out_dir/folds/<fold>/``; a rerun
skips finished folds, so a killed run resumes and ends with the same numbers. The pooled
predictions become a :class:`mer_keras.evaluation.report.LOSOReport` (MEGC2019 pooled
UF1/UAR, Off-TANet per-subject means, per dataset, confusion matrix, JSON summary).

An optional per-epoch test curve (``record_test_curve=True``) is stored in the fold's
history under ``test_curve_*`` keys for analysis only; it never selects an epoch.

Training loop (measured)
------------------------
Data stay in memory as tensors; one compiled ``tf.function`` runs one epoch (a ``tf.range``
loop over the mini-batches of a per-epoch permutation drawn from the fold's seeded numpy
generator; last partial batch kept, as PyTorch's ``drop_last=False``). The learning rate
is set between epochs (step decay). Measured: STSTNet (original, 1,683 parameters), 370
training samples of 28x28x3, batch 256 (2 steps/epoch), 2 shared CPU cores, 60 timed
epochs after a warm-up, TensorFlow 2.21 / Keras 3.15; two runs (op determinism off / on):

==============================================================  =================
loop                                                             ms / epoch
==============================================================  =================
``model.fit(..., shuffle=True)`` + LR callback, steps_per_exec 1   214 / 182
``model.fit``, ``steps_per_execution=2``                           281 / 204
``model.fit``, ``steps_per_execution=8``                           162 / 207
compiled epoch function, 1 epoch per call                          102 / 109
compiled epoch function, 20 epochs per call                        103 / 96
this engine (``train_fold``, incl. loss/accuracy bookkeeping)      -- / 115-122
==============================================================  =================

(An earlier run under heavier load from other processes: ``fit`` 269-336, compiled loop
152-195 ms/epoch.) The compiled loop is about 1.6-2x faster than ``fit``, whose per-epoch
iterator and callback overhead dominates such small steps, and ``steps_per_execution``
does not help when an epoch has two steps. One epoch per call costs nothing measurable over
several and keeps the per-epoch learning rate, progress bar and test curve simple. The
first epoch of a fold also traces the step (about 1.5-2 s; ``first_epoch_s`` in the
fold's ``done.json``). A full STSTNet fold (800 epochs) therefore takes about 1.5 min on CPU.

Determinism: on CPU the engine enables ``tf.config.experimental.enable_op_determinism()``
for the duration of the run (the previous state is restored afterwards). Its measured cost is within the noise above (102 vs 109 and 103 vs 96
ms/epoch), so it stays on: the same fold gives bit-identical scores whether it runs in a
full run, alone, or after a resume. On GPU it is left off unless ``deterministic=True``
(some GPU kernels have no deterministic version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .datasets import LOSODataset
from .folds import Fold, assert_subject_disjoint, balanced_indices, loso_folds
from .executors import execute_folds
from .recipes import Recipe, get_recipe
from .runtime import DEVICES, device_scope, fold_runtime, op_determinism, precision_policy
from .store import FoldStore, prediction_frame

logger = logging.getLogger("mer_keras.training")

ENGINE_VERSION = 1
"""Bumped whenever the engine's computation changes (part of the run's config hash)."""


# ----------------------------------------------------------------------------- inputs


def seed_for(seed: int, fold_name: str) -> int:
    """Deterministic per-fold seed in ``[0, 2**31)`` from the base ``seed`` and the fold name."""
    digest = hashlib.sha256(f"{int(seed)}:{fold_name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def as_dataset(data, recipe: Recipe, *, progress: bool = False) -> LOSODataset:
    """A :class:`LOSODataset` from any accepted form (see :func:`run_loso`)."""
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


# ----------------------------------------------------------------------------- per-fold pieces


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
    x = np.asarray(x, dtype=np.float32)
    if stats is None:
        return x
    mean, std = stats
    return (x - mean) / std


def oversample(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, flip_u: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top up the minority classes of training samples to the largest class with mirrored copies.

    Copies are drawn with replacement (:func:`balanced_indices`) and flipped left-right;
    for a float flow input (``flip_u``) the horizontal flow ``u`` (channel 0) changes sign,
    as a mirrored face moves the other way.
    """
    counts = np.bincount(y)
    chosen = balanced_indices(y, np.arange(len(y)), rng, per_class=int(counts.max()))
    seen: set[int] = set()
    extra = []
    for i in chosen.tolist():
        if i in seen:
            extra.append(i)
        seen.add(i)
    if not extra:
        return x, y
    copies = x[extra][:, :, ::-1, :].copy()
    if flip_u:
        copies[..., 0] = -copies[..., 0]
    return np.concatenate([x, copies]), np.concatenate([y, y[extra]])


def build_model(recipe: Recipe, input_shape, n_classes: int):
    """A fresh model from the recipe (``head="svm"`` for the multi-margin loss)."""
    from mer_keras.models import get

    kwargs = dict(recipe.model_kwargs)
    if recipe.loss == "multi_margin":
        kwargs.setdefault("head", "svm")
    return get(recipe.model)(classes=n_classes, input_shape=tuple(input_shape), **kwargs)


def _optimizer(recipe: Recipe, mixed: bool):
    """The recipe's optimiser (loss-scaled with ``mixed``), without the one-replica gradient all-reduce.

    Without a ``tf.distribute`` strategy that all-reduce is a sum over one replica, the
    identity, but Keras' TensorFlow optimiser runs it through ``tf.custom_gradient``, which
    in a traced function registers a gradient function in TensorFlow's process-wide
    gradient registry and never removes it. That function holds the traced epoch graph, so
    every fold's graph (model, gradients, optimiser update) stayed alive: measured +0.24 GB
    per two-stage fold at 64 px and 2 ``FuncGraph`` objects per fold surviving
    ``gc.collect()`` and ``clear_session()``. Every training loop of the engine (this
    module's trainer, the transfer recipe's freezable loop) takes its optimiser from here.
    """
    import keras
    import tensorflow as tf

    cls = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[recipe.optimizer]
    opt = cls(learning_rate=recipe.lr, **recipe.optimizer_kwargs)
    if mixed:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    if not tf.distribute.has_strategy():
        for each in {opt, getattr(opt, "inner_optimizer", opt)}:
            each._all_reduce_sum_gradients = list  # (grads, variables) pairs unchanged
    return opt


def _loss(recipe: Recipe, n_classes: int):
    import keras

    if recipe.loss == "multi_margin":
        from mer_keras.models.heads import MultiMarginLoss

        return MultiMarginLoss()
    if recipe.label_smoothing:
        cce = keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing)
        return lambda y, p: cce(keras.ops.one_hot(y, n_classes), p)
    return keras.losses.SparseCategoricalCrossentropy()


def epoch_steps(model, optimizer, loss_fn, x, y, perm, batch_size: int, *, mixed: bool = False,
                transform_gradients=None):
    """One epoch of mini-batch steps (traced inside a ``tf.function``); returns ``(mean loss, accuracy)``.

    Batches follow ``perm`` (last partial batch kept, as PyTorch's ``drop_last=False``);
    the loss includes the model's regularisation losses, is scaled for a
    ``LossScaleOptimizer`` when ``mixed``, and ``transform_gradients(grads)`` (e.g. a
    freeze mask) is applied before the optimiser step.
    """
    import tensorflow as tf

    variables = model.trainable_variables
    n = tf.shape(perm)[0]
    bs = int(batch_size)
    steps = (n + bs - 1) // bs
    total, correct = tf.constant(0.0), tf.constant(0)
    for s in tf.range(steps):
        idx = perm[s * bs: tf.minimum((s + 1) * bs, n)]
        xb, yb = tf.gather(x, idx), tf.gather(y, idx)
        with tf.GradientTape() as tape:
            out = tf.cast(model(xb, training=True), tf.float32)
            loss = loss_fn(yb, out)
            if model.losses:
                loss = loss + tf.add_n([tf.cast(term, tf.float32) for term in model.losses])
            scaled = optimizer.scale_loss(loss) if mixed else loss
        grads = tape.gradient(scaled, variables)
        if transform_gradients is not None:
            grads = transform_gradients(grads)
        optimizer.apply(grads, variables)
        total += loss * tf.cast(tf.shape(idx)[0], tf.float32)
        correct += tf.reduce_sum(tf.cast(tf.equal(tf.cast(tf.argmax(out, -1), tf.int32), yb), tf.int32))
    return total / tf.cast(n, tf.float32), tf.cast(correct, tf.float32) / tf.cast(n, tf.float32)


class _Trainer:
    """Compiled per-epoch training and inference of one fold's model (in-memory tensors).

    ``x_train`` reaches TensorFlow through :func:`~mer_keras.training.datasets.to_tensor`:
    without a copy for a 64-byte-aligned buffer (the two-stage frames), else copied. The
    compiled functions close over the model, optimiser and tensors, not over the trainer,
    so a dropped trainer frees its tensors at once (no reference cycle waiting for the
    garbage collector).

    The optimiser comes from :func:`_optimizer`, without the one-replica all-reduce that
    kept every fold's traced graph alive.
    """

    def __init__(self, model, recipe: Recipe, x_train, y_train, n_classes: int, mixed: bool):
        import tensorflow as tf

        from .datasets import to_tensor

        self.model, self.recipe, self.mixed = model, recipe, mixed
        self.optimizer = optimizer = _optimizer(recipe, mixed)
        optimizer.build(model.trainable_variables)
        self.loss_fn = loss_fn = _loss(recipe, n_classes)
        self.x = x = to_tensor(x_train)
        self.y = y = tf.constant(np.asarray(y_train).astype(np.int32))
        batch_size = recipe.batch_size

        def epoch(perm):
            return epoch_steps(model, optimizer, loss_fn, x, y, perm, batch_size, mixed=mixed)

        def infer(batch):
            return tf.cast(model(batch, training=False), tf.float32)

        self._epoch = tf.function(epoch, reduce_retracing=True)
        self._infer = tf.function(infer, reduce_retracing=True)

    def train_epoch(self, epoch: int, perm: np.ndarray) -> tuple[float, float, float]:
        lr = self.recipe.lr_at(epoch)
        self.optimizer.learning_rate.assign(lr)
        loss, acc = self._epoch(perm.astype(np.int32))
        return float(loss), float(acc), lr

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        out = [self._infer(x[i: i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(np.float64)


def _test_curve_point(scores: np.ndarray, y: np.ndarray, recipe: Recipe) -> dict:
    """Loss, accuracy and predicted labels of the test subject after one epoch (analysis only)."""
    if recipe.loss == "cross_entropy":
        loss = float(-np.mean(np.log(np.clip(scores[np.arange(len(y)), y], 1e-12, None))))
    else:
        margin = np.maximum(0.0, 1.0 - scores[np.arange(len(y)), y][:, None] + scores)
        margin[np.arange(len(y)), y] = 0.0
        loss = float(margin.sum(axis=1).mean() / scores.shape[1])
    pred = scores.argmax(axis=1)
    return {"loss": loss, "accuracy": float(np.mean(pred == y)), "y_pred": pred.tolist()}


def train_fold(dataset: LOSODataset, fold: Fold, recipe: Recipe, fold_seed: int, *, mixed: bool = False,
               record_test_curve: bool = False, progress: bool = False, position: int = 1):
    """Train a fresh model on ``fold``'s training subjects; return ``(model, test_scores, history, info)``.

    Everything fitted here (normalisation, class balancing) uses the training indices only;
    the test subject is predicted once, with the model after the last epoch.
    """
    import keras
    from tqdm.auto import tqdm

    assert_subject_disjoint(dataset, fold.train_index, fold.test_index)
    keras.backend.clear_session()
    keras.utils.set_random_seed(fold_seed)
    rng = np.random.default_rng(fold_seed)

    x_train = np.asarray(dataset.x[fold.train_index], dtype=np.float32)
    y_train = dataset.y[fold.train_index]
    stats = fit_normalisation(x_train, recipe.normalisation)
    x_train = apply_normalisation(x_train, stats)
    x_test = apply_normalisation(dataset.x[fold.test_index], stats)
    y_test = dataset.y[fold.test_index]
    if recipe.class_balancing == "oversample":
        x_train, y_train = oversample(x_train, y_train, rng, flip_u=recipe.input == "flow_stack")

    model = build_model(recipe, dataset.sample_shape, dataset.n_classes)
    trainer = _Trainer(model, recipe, x_train, y_train, dataset.n_classes, mixed)
    history: dict[str, list] = {"loss": [], "accuracy": [], "lr": []}
    if record_test_curve:
        history.update(test_curve_loss=[], test_curve_accuracy=[], test_curve_y_pred=[])
    start = first_done = time.perf_counter()
    bar = tqdm(range(recipe.epochs), desc=f"  {fold.name}", unit="epoch", leave=False, position=position,
               disable=not progress)
    for epoch in bar:
        loss, acc, lr = trainer.train_epoch(epoch, rng.permutation(len(y_train)))
        history["loss"].append(loss)
        history["accuracy"].append(acc)
        history["lr"].append(lr)
        if record_test_curve:
            point = _test_curve_point(trainer.predict(x_test), y_test, recipe)
            for key, value in point.items():
                history[f"test_curve_{key}"].append(value)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if epoch == 0:
            first_done = time.perf_counter()  # the first epoch includes tracing the compiled step
    bar.close()
    end = time.perf_counter()
    train_s = end - start
    steady = (end - first_done) / (recipe.epochs - 1) if recipe.epochs > 1 else train_s
    scores = trainer.predict(x_test)
    info = {"train_s": round(train_s, 3), "first_epoch_s": round(first_done - start, 3),
            "ms_per_epoch": round(1e3 * steady, 3),
            "n_train": int(len(fold.train_index)), "n_train_balanced": int(len(y_train)),
            "n_test": int(len(fold.test_index)), "seed": int(fold_seed),
            "normalisation": None if stats is None else {"mean": stats[0].tolist(), "std": stats[1].tolist()}}
    return model, scores, history, info


# ----------------------------------------------------------------------------- engine


def _resolve_recipe(recipe, seed, overrides: dict) -> Recipe:
    recipe = get_recipe(recipe)
    if seed is not None:
        overrides = {**overrides, "seed": int(seed)}
    if overrides:
        unknown = set(overrides) - set(recipe.to_dict())
        if unknown:
            raise TypeError(f"unknown recipe field(s) {sorted(unknown)}; fields: {sorted(recipe.to_dict())}")
        recipe = recipe.replace(**overrides)
    return recipe


def run_loso(
    dataset,
    recipe="ststnet",
    out_dir=None,
    *,
    subjects=None,
    seed: int | None = None,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    record_test_curve: bool = False,
    save_weights: bool = False,
    deterministic: bool | None = None,
    executor: str = "inprocess",
    executor_options: Mapping[str, Any] | None = None,
    **recipe_overrides: Any,
):
    """Leave-one-subject-out training and evaluation; returns the run's ``LOSOReport``.

    Args:
        dataset: a :class:`LOSODataset`; a path to a prepared cache (a folder with
            ``cache.json``, read with the recipe's ``input``); a path to a MEGC2019 folder
            tree (``{subject}/u_train/{label}/*.png``, 28x28x3 images for ``"ststnet"``);
            or in-memory arrays as a tuple ``(x, y, subjects[, datasets])`` or a dict with
            those keys (plus optional ``clips``). Two-stage recipes (``trainer="two_stage"``,
            :mod:`~mer_keras.training.two_stage`) take a cache with frame stacks or a
            ``(flow_ds, frame_ds)`` pair.
        recipe: a recipe name (:func:`~mer_keras.training.recipes.available_recipes`,
            ``"<name>-quick"``) or a :class:`Recipe`.
        out_dir: run folder (per-fold artefacts, ``run.json``, the report files); default a
            new temporary folder. Rerunning with the same folder resumes.
        subjects: only these left-out subjects (quick runs); training still uses all others.
        seed: base seed (default the recipe's, 0); fold ``f`` uses :func:`seed_for(seed, f)`.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"`` (see
            :func:`~mer_keras.training.runtime.device_scope`); mixed
            precision only on a GPU and only when the recipe asks for it.
        progress: bars over folds and epochs; ``False`` prints nothing.
        overwrite: discard the folds of a different config found in ``out_dir``
            (otherwise :class:`~mer_keras.training.store.ConfigMismatchError`).
        record_test_curve: store the per-epoch test loss/accuracy/labels in each fold's
            history as ``test_curve_*`` (analysis only; the last epoch is always evaluated).
        save_weights: also store each fold's final weights.
        deterministic: op determinism; default on for CPU training, off on GPU.
        executor: ``"inprocess"`` (one fold after the other here) or ``"ray"`` (folds as
            Ray tasks; :mod:`~mer_keras.training.executors`): same artefacts and numbers.
        executor_options: Ray settings (``ray_address``, ``cpus_per_fold``,
            ``gpus_per_fold``; see :func:`~mer_keras.training.executors.execute_folds`).
        **recipe_overrides: recipe fields to change (``epochs=3``, ``lr=1e-4``, ...).

    Returns:
        :class:`mer_keras.evaluation.report.LOSOReport` (``report["uf1"]``,
        ``report.metrics["uar"]``, ...), also saved to ``out_dir``. Its ``config`` holds the
        recipe and the run settings (with the folds trained and reused by this call).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    executor_options = dict(executor_options or {})
    recipe = _resolve_recipe(recipe, seed, recipe_overrides)
    if recipe.trainer == "two_stage":  # flow pre-training + frames (mer_keras.training.two_stage)
        from .two_stage import two_stage_inputs

        data, fingerprint, fold_fn = two_stage_inputs(dataset, recipe, progress=progress,
                                                      record_test_curve=record_test_curve)
    elif recipe.trainer == "transfer":  # macro transfer + micro apex fine-tuning (mer_keras.training.transfer)
        from .transfer import transfer_inputs

        data, fingerprint, fold_fn = transfer_inputs(dataset, recipe, out_dir=out_dir, progress=progress,
                                                     record_test_curve=record_test_curve)
    elif recipe.trainer == "handcrafted":  # features + linear SVM (mer_keras.training.handcrafted)
        from .handcrafted import handcrafted_inputs

        data, fingerprint, fold_fn = handcrafted_inputs(dataset, recipe, progress=progress,
                                                        record_test_curve=record_test_curve)
    else:
        data = as_dataset(dataset, recipe, progress=progress)
        check_input_shape(data, recipe)
        fingerprint, fold_fn = dataset_fingerprint(data), train_fold
    folds = loso_folds(data, subjects)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mer-keras-loso-"))
    config = {"recipe": recipe.to_dict(), "data": fingerprint, "record_test_curve": bool(record_test_curve),
              "engine_version": ENGINE_VERSION}
    store = FoldStore(out, config, overwrite=overwrite)
    seeds = {f.name: seed_for(recipe.seed, f.name) for f in folds}
    pending = store.pending(folds)
    trained: list[str] = []

    bar = tqdm(total=len(folds), initial=len(folds) - len(pending), desc=f"LOSO {recipe.name}", unit="fold",
               disable=not progress, position=0)
    runtime: dict = {}
    results = execute_folds(data, pending, recipe, seeds, fold_fn, executor=executor, device=device,
                            deterministic=deterministic, record_test_curve=record_test_curve,
                            save_weights=save_weights, progress=progress and executor == "inprocess", **executor_options)
    for result in results:
        fold = result.fold
        frame = prediction_frame(data, fold.test_index, result.scores)
        store.save_fold(fold, frame, result.history, model=result.model if save_weights else None,
                        extra=result.info)
        trained.append(fold.name)
        runtime = runtime or result.runtime
        bar.set_postfix(fold=fold.name, refresh=False)
        bar.update(1)
    bar.close()
    if not runtime:  # every fold reused: record the settings this call would have trained with
        with fold_runtime(device, mixed_precision=recipe.mixed_precision, deterministic=deterministic) as runtime:
            pass

    wanted = {f.name for f in folds}
    predictions = store.load_predictions()
    predictions = predictions[predictions["fold"].isin(wanted)].reset_index(drop=True)
    run = {"out_dir": str(out), "subjects": None if subjects is None else [f.test_subject for f in folds],
           "n_folds": len(folds), "trained_folds": trained, "reused_folds": sorted(wanted - set(trained)),
           "device": runtime["device"], "precision": runtime["precision"],
           "op_determinism": runtime["op_determinism"], "executor": executor,
           "record_test_curve": bool(record_test_curve), "config_hash": store.config_hash}
    # The evaluation layer formats the engine's output: the one place the training layer
    # imports mer_keras.evaluation, inside the function so the module stays independent of it.
    from mer_keras.evaluation.report import LOSOReport

    report = LOSOReport.from_predictions(
        predictions, config={**config, "run": run}, seeds={"base": recipe.seed, "folds": seeds},
        runtime_s=time.perf_counter() - start, name=recipe.name, class_names=data.class_names)
    report.save(out)
    return report


def load_run_config(out_dir) -> dict:
    """The config recorded in a run folder's ``run.json``."""
    return json.loads((Path(out_dir) / "run.json").read_text())["config"]


__all__ = ["DEVICES", "ENGINE_VERSION", "as_dataset", "epoch_steps", "check_input_shape", "dataset_fingerprint", "device_scope",
           "fit_normalisation", "apply_normalisation", "oversample", "build_model", "train_fold", "run_loso", "seed_for",
           "load_run_config", "op_determinism", "precision_policy"]
