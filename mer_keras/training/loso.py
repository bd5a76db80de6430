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

Every recipe kind trains through the trainer protocol (:mod:`mer_keras.training.trainers`:
``prepare`` once, then ``fit``/``predict`` per fold) on the Keras backend in use
(``KERAS_BACKEND``; :mod:`mer_keras.training.backends`). ``vectorise_folds`` trains K
pending folds in one compiled step where the backend can (JAX), with the same batches,
seeds and predictions as the serial run. Timings live in the benchmarks
(``mer-keras bench train``, ``experiments/00e_gpu_training.py``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from . import backends
from .engine import (ENGINE_VERSION, apply_normalisation, as_dataset, build_model, check_input_shape,
                     dataset_fingerprint, fit_normalisation, oversample, resolve_recipe, seed_for)
from .executors import FoldResult, execute_folds
from .folds import loso_folds
from .runtime import DEVICES, fold_runtime, precision_policy
from .store import FoldStore, prediction_frame
from .trainers import get_trainer

logger = logging.getLogger("mer_keras.training")


def train_fold(dataset, fold, recipe, fold_seed: int, *, mixed: bool = False, record_test_curve: bool = False,
               progress: bool = False, position: int = 1):
    """One single-stage fold through the protocol: ``(model, test_scores, history, info)``."""
    trainer = get_trainer(resolve_recipe(recipe), record_test_curve=record_test_curve, progress=progress)
    return trainer.fit_predict(trainer.prepare(dataset), fold, fold_seed, mixed=mixed, position=position)


# ----------------------------------------------------------------------------- engine


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
    vectorise_folds: int | str | None = None,
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
        executor: ``"inprocess"`` (one fold after the other here), ``"processes"``
            (one-thread fold processes side by side; CPU, single-stage recipes; call it
            under ``if __name__ == "__main__":`` in a script) or ``"ray"`` (folds as Ray
            tasks; :mod:`~mer_keras.training.executors`): same artefacts and predictions.
        executor_options: Ray settings (``ray_address``, ``cpus_per_fold``,
            ``gpus_per_fold``) or process settings (``workers``, ``threads_per_worker``);
            see :func:`~mer_keras.training.executors.execute_folds`.
        vectorise_folds: train this many pending folds in one compiled step (``"auto"``: as
            many as fit in half the device's free memory); JAX backend and single-stage
            recipes only. Same batches, seeds and predictions as the serial run; pays on a
            GPU, not on XLA's CPU backend.
        **recipe_overrides: recipe fields to change (``epochs=3``, ``lr=1e-4``, ...).

    Returns:
        :class:`mer_keras.evaluation.report.LOSOReport` (``report["uf1"]``,
        ``report.metrics["uar"]``, ...), also saved to ``out_dir``. Its ``config`` holds the
        recipe and the run settings (with the folds trained and reused by this call).
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    executor_options = dict(executor_options or {})
    recipe = resolve_recipe(recipe, seed, recipe_overrides)
    trainer = get_trainer(recipe, record_test_curve=record_test_curve, progress=progress, out_dir=out_dir)
    if vectorise_folds is not None:
        if executor != "inprocess":
            raise ValueError("vectorise_folds trains folds together in this process; use executor='inprocess'")
        if not trainer.supports_vectorised:
            raise ValueError(f"vectorise_folds needs the JAX backend and a single-stage recipe (backend "
                             f"{backends.name()!r}, recipe kind {recipe.trainer!r}); set KERAS_BACKEND=jax")
        if vectorise_folds != "auto" and (int(vectorise_folds) != vectorise_folds or int(vectorise_folds) < 1):
            raise ValueError(f"vectorise_folds must be an integer >= 1 or 'auto', got {vectorise_folds!r}")
    prepared = trainer.prepare(dataset)
    data, fingerprint = prepared.data, prepared.fingerprint
    folds = loso_folds(data, subjects)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="mer-keras-loso-"))
    config = {"recipe": recipe.config_dict(), "data": fingerprint, "record_test_curve": bool(record_test_curve),
              "engine_version": ENGINE_VERSION}
    store = FoldStore(out, config, overwrite=overwrite)
    seeds = {f.name: seed_for(recipe.seed, f.name) for f in folds}
    pending = store.pending(folds)
    trained: list[str] = []

    bar = tqdm(total=len(folds), initial=len(folds) - len(pending), desc=f"LOSO {recipe.name}", unit="fold",
               disable=not progress, position=0)
    runtime: dict = {}
    if vectorise_folds is not None and pending:
        results = _vectorised(trainer, prepared, pending, seeds, vectorise_folds, device=device,
                              deterministic=deterministic)
    else:
        results = execute_folds(data, pending, recipe, seeds, trainer.fold_function(prepared), executor=executor,
                                device=device, deterministic=deterministic, record_test_curve=record_test_curve,
                                save_weights=save_weights, progress=progress and executor == "inprocess",
                                **executor_options)
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
           "backend": runtime.get("backend", backends.name()), "device": runtime["device"],
           "precision": runtime["precision"], "vectorise_folds": vectorise_folds,
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


def _vectorised(trainer, prepared, folds, seeds, requested, *, device, deterministic):
    """Groups of K folds trained in one vectorised step; yields :class:`FoldResult` per fold."""
    with fold_runtime(device, mixed_precision=False, deterministic=deterministic) as runtime:
        k = trainer.vectorised_group_size(prepared, folds, requested)
        steps = trainer.vectorised_steps(prepared, folds)
        for start in range(0, len(folds), k):
            group = folds[start: start + k]
            for fold, model, scores, history, info in trainer.fit_predict_many(prepared, group, seeds, steps=steps):
                yield FoldResult(fold, scores, history, info, model, dict(runtime))


def load_run_config(out_dir) -> dict:
    """The config recorded in a run folder's ``run.json``."""
    return json.loads((Path(out_dir) / "run.json").read_text())["config"]


__all__ = ["DEVICES", "ENGINE_VERSION", "apply_normalisation", "as_dataset", "build_model", "check_input_shape",
           "dataset_fingerprint", "fit_normalisation", "load_run_config", "oversample", "precision_policy", "run_loso",
           "seed_for", "train_fold"]
