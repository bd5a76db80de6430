"""Final training on every subject of a prepared cache, saved as a pipeline bundle (``mer-keras fit-final``).

After a recipe has been evaluated by leave-one-subject-out (``mer-keras loso``), the model to
apply to new footage is trained once more on *all* subjects. :func:`fit_final` does that
with the engine's own per-fold training -- the same function a LOSO fold runs
(the registered trainer of the recipe's kind: single-stage, the two-stage fold of
:mod:`mer_keras.training.two_stage`, the transfer fold of :mod:`mer_keras.training.transfer`),
under the same runtime settings (device, precision, op determinism) -- so nothing about
training differs from the evaluated protocol except that no subject is left out:

* the recipe's number of epochs (or ``epochs=``), its optimiser, schedule, balancing;
* everything fitted on training data (normalisation statistics, class balancing) is
  fitted on all subjects and saved in the bundle;
* recipes that select an epoch on a validation split of training subjects (two-stage
  pre-training; the transfer recipe's grid search) do so on an inner split of all
  subjects (:func:`~mer_keras.training.folds.inner_split`), as in every fold.

Every recipe kind fits through the trainer protocol
(:func:`~mer_keras.training.trainers.get_trainer`: ``prepare`` once, then ``fit`` on every
subject's clips); no test clip is scored. ``tests/test_inference.py`` checks that the saved
normalisation equals the statistics of all training clips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class FitResult:
    """What :func:`fit_final` did: the bundle ``path``, its ``meta`` (``pipeline.json``),
    the trained ``model``, the training ``history`` and ``info`` of the fold function."""

    path: Path
    meta: dict
    model: Any
    history: dict
    info: dict

    def summary(self) -> str:
        t = self.meta["training"]
        return (f"bundle {self.path}: recipe {self.meta['recipe']['name']!r}, {t['n_clips']} clips of "
                f"{t['n_subjects']} subjects, {t['epochs']} epochs, input {self.meta['input']['kind']} "
                f"{'x'.join(map(str, self.meta['input']['shape']))}, classes {', '.join(self.meta['class_names'])}, "
                f"{t['train_s']:.1f} s")


def _resolve(recipe, epochs, overrides):
    from mer_keras.training.engine import resolve_recipe

    changes = dict(overrides)
    if epochs is not None:
        if int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        changes["epochs"] = int(epochs)
    return resolve_recipe(recipe, None, changes)


def fit_final(
    data,
    recipe="off_tanet",
    out=None,
    *,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "auto",
    macro=None,
    progress: bool = True,
    overwrite: bool = False,
    deterministic: bool | None = None,
    **recipe_overrides: Any,
) -> FitResult:
    """Train ``recipe`` on every subject of the prepared cache ``data`` and save a bundle at ``out``.

    Args:
        data: a prepared cache folder (``mer-keras prepare``): its pre-processing parameters
            go into the bundle. Two-stage recipes need a cache with frame stacks (preset
            ``shufflenet``); ``mobilevit_transfer`` an apex cache (``mobilevit_apex``).
        recipe: a recipe name (:func:`~mer_keras.training.recipes.available_recipes`) or a
            ``Recipe``; handcrafted baselines are not networks and are refused.
        out: the bundle folder to write (atomically).
        epochs: override the recipe's (stage-2) epochs.
        seed: base seed; the training seed is ``seed_for(seed, "all-subjects")``.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        macro: the macro-expression cache of a transfer recipe with ``pretrain=True``.
        overwrite: replace an existing bundle at ``out``.
        **recipe_overrides: other recipe fields (``input_size=64``, ``model_kwargs=...``).

    Returns a :class:`FitResult` (the bundle path, its metadata, the model).
    """
    from mer_keras.preprocess.cache import PreparedCache
    from mer_keras.training.datasets import LOSODataset
    from mer_keras.training.engine import seed_for
    from mer_keras.training.runtime import fold_runtime
    from mer_keras.training.trainers import get_trainer

    from .bundle import pipeline_meta, write_bundle

    if out is None:
        raise ValueError("fit_final needs out= (the bundle folder to write)")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
    recipe = _resolve(recipe, epochs, recipe_overrides)
    if recipe.trainer == "handcrafted":
        raise ValueError(f"recipe {recipe.name!r} is a handcrafted baseline (features + SVM), not a network; "
                         "fit-final saves network pipelines")
    path = Path(data) if not isinstance(data, PreparedCache) else data.path
    if not (path / "cache.json").is_file():
        raise ValueError(f"{path} is not a prepared cache (no cache.json): fit-final needs one, because the bundle "
                         "records the pre-processing that made the training data (`mer-keras prepare`)")
    cache = data if isinstance(data, PreparedCache) else PreparedCache(path)

    if recipe.trainer == "two_stage":
        source, input_kind = cache, recipe.input
    elif recipe.trainer == "transfer":
        source, input_kind = ({"micro": cache, "macro": macro} if macro is not None else cache), recipe.input
    else:
        source, input_kind = LOSODataset.from_cache(cache, input=recipe.input, progress=progress), recipe.input

    fold_seed = seed_for(seed, "all-subjects")
    recipe = recipe.replace(seed=int(seed))
    trainer = get_trainer(recipe, progress=progress)
    prepared = trainer.prepare(source)
    real = prepared.data  # the clip list every kind indexes (flow images for two-stage, the micro set for transfer)
    n = len(real)
    start = time.perf_counter()
    with fold_runtime(device, mixed_precision=recipe.mixed_precision, deterministic=deterministic) as runtime:
        mixed = runtime["precision"] == "mixed_float16"
        fitted = trainer.fit(prepared, np.arange(n, dtype=np.int64), fold_seed, mixed=mixed, name="all-subjects")
        model, history, info = fitted.model, fitted.history, fitted.info
    train_s = time.perf_counter() - start

    norm = None
    if isinstance(info, dict) and info.get("normalisation"):
        norm = (np.asarray(info["normalisation"]["mean"], np.float32), np.asarray(info["normalisation"]["std"], np.float32))
    subjects = real.subject_list()
    counts = {c: int(k) for c, k in zip(real.class_names, np.bincount(real.y, minlength=real.n_classes))}
    training = {
        "cache": {"fingerprint": cache.meta.get("fingerprint"), "n_prepared_clips": len(cache)},
        "subjects": subjects, "n_subjects": len(subjects), "n_clips": n, "class_counts": counts,
        "datasets": sorted(set(real.datasets.tolist())),
        "seed": int(seed), "fold_seed": int(fold_seed), "epochs": int(recipe.epochs), "train_s": round(train_s, 3),
        "runtime": dict(runtime), "info": _jsonable(info),
        "final_epoch": _final_epoch(history),
        "rule": "all subjects, no test subject (fit-final); epoch selection, when the recipe has one, on an inner "
                "split of the training subjects",
    }
    meta = pipeline_meta(model, preprocess=cache.config, input_kind=input_kind, class_names=real.class_names,
                         recipe=recipe, normalisation=norm, extra={"training": training})
    if meta["preprocess"]["fingerprint"] != cache.meta.get("fingerprint"):
        raise ValueError(f"{cache.path}: cache fingerprint {cache.meta.get('fingerprint')} does not match its "
                         f"parameters ({meta['preprocess']['fingerprint']}); re-run `mer-keras prepare`")
    write_bundle(out, model, meta, overwrite=overwrite)
    return FitResult(path=out, meta=meta, model=model, history=history, info=info)


def _final_epoch(history) -> dict:
    """Loss / accuracy of the last training epoch, whatever the trainer's history layout."""
    h = history.get("train", history) if isinstance(history, dict) else {}
    out = {}
    for key in ("loss", "accuracy", "lr"):
        values = h.get(key) if isinstance(h, dict) else None
        if values:
            out[key] = float(values[-1])
    return out


def _jsonable(value):
    """``value`` with numpy scalars/arrays turned into plain Python (for ``pipeline.json``)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


__all__ = ["FitResult", "fit_final"]
