"""Final training on every subject of a prepared cache, saved as a pipeline bundle (``mer-keras fit-final``).

After a recipe has been evaluated by leave-one-subject-out (``mer-keras loso``), the model to
apply to new footage is trained once more on *all* subjects. :func:`fit_final` does that
with the engine's own per-fold training -- the same function a LOSO fold runs
(:func:`mer_keras.training.loso.train_fold` for single-stage recipes, the two-stage fold of
:mod:`mer_keras.training.two_stage`, the transfer fold of :mod:`mer_keras.training.transfer`),
under the same runtime settings (device, precision, op determinism) -- so nothing about
training differs from the evaluated protocol except that no subject is left out:

* the recipe's number of epochs (or ``epochs=``), its optimiser, schedule, balancing;
* everything fitted on training data (normalisation statistics, class balancing) is
  fitted on all subjects and saved in the bundle;
* recipes that select an epoch on a validation split of training subjects (two-stage
  pre-training; the transfer recipe's grid search) do so on an inner split of all
  subjects (:func:`~mer_keras.training.folds.inner_split`), as in every fold.

The per-fold functions always score a left-out subject at the end. Here that subject is a
single placeholder clip (all-zero input, subject ``"(no test subject)"``) appended to the
data; the engine fits nothing on test indices (checked by
:func:`~mer_keras.training.folds.assert_subject_disjoint` in every fold function), so the
placeholder only receives a score, which is discarded. ``tests/test_inference.py`` checks
that the saved normalisation equals the statistics of all training clips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PLACEHOLDER_SUBJECT = "(no test subject)"


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


def _with_placeholder(ds):
    """``ds`` plus one all-zero placeholder clip of its own subject (the engine's test slot)."""
    from mer_keras.training.datasets import LOSODataset

    if ds.is_sequence:
        x = np.empty(len(ds) + 1, dtype=object)
        x[:-1] = list(ds.x)
        x[-1] = np.zeros((1, *ds.sample_shape), dtype=ds.x[0].dtype)
    else:
        x = np.concatenate([ds.x, np.zeros((1, *ds.sample_shape), dtype=ds.x.dtype)])
    return LOSODataset(x=x, y=np.concatenate([ds.y, [0]]), subjects=np.append(ds.subjects, PLACEHOLDER_SUBJECT),
                       datasets=np.append(ds.datasets, PLACEHOLDER_SUBJECT), clips=np.append(ds.clips, "placeholder"),
                       class_names=ds.class_names)


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
    from mer_keras.training.folds import Fold
    from mer_keras.training.engine import check_input_shape, seed_for
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
        from mer_keras.training.two_stage import load_two_stage_data, two_stage_inputs

        flow, frames = load_two_stage_data(cache, recipe, progress=progress)
        real = flow
        train_data, _, fold_fn = two_stage_inputs((_with_placeholder(flow), _with_placeholder(frames)), recipe)
        input_kind = "frames"
    elif recipe.trainer == "transfer":
        from mer_keras.training.transfer import load_transfer_data, transfer_inputs

        micro, macro_ds = load_transfer_data({"micro": cache, "macro": macro} if macro is not None else cache, recipe,
                                             progress=progress)
        real = micro
        pair = (_with_placeholder(micro), macro_ds) if macro_ds is not None else _with_placeholder(micro)
        train_data, _, fold_fn = transfer_inputs(pair, recipe)
        input_kind = recipe.input
    else:
        real = LOSODataset.from_cache(cache, input=recipe.input, progress=progress)
        check_input_shape(real, recipe)
        train_data = fold_fn = None  # fitted through the trainer protocol on every subject, no test subject
        input_kind = recipe.input

    n = len(real)
    fold = Fold(name="all-subjects", test_subject=PLACEHOLDER_SUBJECT, train_index=np.arange(n, dtype=np.int64),
                test_index=np.array([n], dtype=np.int64))
    fold_seed = seed_for(seed, "all-subjects")
    recipe = recipe.replace(seed=int(seed))
    start = time.perf_counter()
    with fold_runtime(device, mixed_precision=recipe.mixed_precision, deterministic=deterministic) as runtime:
        mixed = runtime["precision"] == "mixed_float16"
        if fold_fn is None:
            trainer = get_trainer(recipe, progress=progress)
            fitted = trainer.fit(trainer.prepare(real), fold.train_index, fold_seed, mixed=mixed, name=fold.name)
            model, history, info = fitted.model, fitted.history, fitted.info
        else:
            model, _, history, info = fold_fn(train_data, fold, recipe, fold_seed, mixed=mixed, progress=progress)
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


__all__ = ["FitResult", "PLACEHOLDER_SUBJECT", "fit_final"]
