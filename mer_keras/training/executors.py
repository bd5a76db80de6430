"""Executors: where the LOSO folds of :func:`~mer_keras.training.loso.run_loso` train.

* ``"inprocess"`` (default): one fold after the other in this process.
* ``"ray"`` (``pip install mer-keras[ray]``): every pending fold is a Ray task with its own
  CPU/GPU resources, on a local Ray instance started here or on a cluster
  (``ray_address``). The dataset is put into Ray's object store once; each task builds its
  fold's model from the same seed, trains under the same runtime settings
  (:func:`~mer_keras.training.runtime.fold_runtime`: device, precision, op determinism)
  and returns scores, history, timings and, on request, the weights. The driver writes
  every fold through the same :class:`~mer_keras.training.store.FoldStore` as soon as it
  finishes, so a killed Ray run resumes like an in-process one and both give the same
  artefacts and numbers (tested).

Both executors yield :class:`FoldResult` objects in completion order; the caller stores
them. A failing fold stops the run after the folds already finished are stored, naming the
fold.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .runtime import fold_runtime

EXECUTORS = ("inprocess", "ray")


@dataclass
class SavedWeights:
    """A fold's final weights as the bytes of a Keras ``.weights.h5`` file (what a Ray task returns).

    Has ``save_weights(path)``, so :meth:`FoldStore.save_fold` stores it like a model.
    """

    data: bytes

    @classmethod
    def from_model(cls, model) -> "SavedWeights":
        with tempfile.TemporaryDirectory(prefix="mer-keras-weights-") as tmp:
            path = Path(tmp) / "fold.weights.h5"
            model.save_weights(path)
            return cls(path.read_bytes())

    def save_weights(self, path) -> None:
        Path(path).write_bytes(self.data)


@dataclass
class FoldResult:
    """One trained fold: test scores, history, timing/info, optional weights, runtime settings."""

    fold: Any
    scores: Any
    history: dict
    info: dict
    model: Any = None
    runtime: dict = field(default_factory=dict)


def _train_one(data, fold, recipe, seed: int, fold_fn: Callable, *, record_test_curve: bool, progress: bool,
               keep_model: bool, mixed: bool) -> tuple[Any, Any, dict, dict]:
    model, scores, history, info = fold_fn(data, fold, recipe, seed, mixed=mixed,
                                           record_test_curve=record_test_curve, progress=progress)
    return (model if keep_model else None), scores, history, info


def _inprocess(data, folds, recipe, seeds, fold_fn, *, device, deterministic, record_test_curve, save_weights,
               progress) -> Iterator[FoldResult]:
    with fold_runtime(device, mixed_precision=recipe.mixed_precision, deterministic=deterministic) as runtime:
        for fold in folds:
            model, scores, history, info = _train_one(
                data, fold, recipe, seeds[fold.name], fold_fn, record_test_curve=record_test_curve,
                progress=progress, keep_model=save_weights, mixed=runtime["precision"] == "mixed_float16")
            yield FoldResult(fold, scores, history, info, model, dict(runtime))


def _ray_task(data, fold, recipe, seed, fold_fn, device, deterministic, record_test_curve, save_weights):
    """Body of a Ray task: train one fold inside the worker under the run's runtime settings."""
    with fold_runtime(device, mixed_precision=recipe.mixed_precision, deterministic=deterministic) as runtime:
        model, scores, history, info = _train_one(
            data, fold, recipe, seed, fold_fn, record_test_curve=record_test_curve, progress=False,
            keep_model=save_weights, mixed=runtime["precision"] == "mixed_float16")
    weights = SavedWeights.from_model(model) if model is not None else None
    info = {**info, "worker_pid": os.getpid()}
    return scores, history, info, weights, runtime


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("executor 'ray' needs Ray: pip install 'mer-keras[ray]'") from exc
    return ray


def _ray(data, folds, recipe, seeds, fold_fn, *, device, deterministic, record_test_curve, save_weights,
         ray_address, cpus_per_fold, gpus_per_fold) -> Iterator[FoldResult]:
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 configure_logging=False)
        started = True
    try:
        if gpus_per_fold is None:
            gpus_per_fold = 1 if device == "gpu" or (device == "auto" and ray.cluster_resources().get("GPU", 0) >= 1) else 0
        if device == "cpu":
            gpus_per_fold = 0
        cpus = 1 if cpus_per_fold is None else cpus_per_fold
        task = ray.remote(_ray_task).options(num_cpus=cpus, num_gpus=gpus_per_fold, max_retries=0)
        data_ref, fold_fn_ref = ray.put(data), ray.put(fold_fn)
        pending = {task.remote(data_ref, fold, recipe, seeds[fold.name], fold_fn_ref, device, deterministic,
                               record_test_curve, save_weights): fold for fold in folds}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            fold = pending.pop(done[0])
            try:
                scores, history, info, weights, runtime = ray.get(done[0])
            except Exception as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise RuntimeError(f"fold {fold.name} failed in a Ray worker: {exc}") from exc
            yield FoldResult(fold, scores, history, info, weights, runtime)
    finally:
        if started:
            ray.shutdown()


def execute_folds(data, folds: Sequence, recipe, seeds: dict, fold_fn: Callable, *, executor: str = "inprocess",
                  device: str = "auto", deterministic: bool | None = None, record_test_curve: bool = False,
                  save_weights: bool = False, progress: bool = False, ray_address: str | None = None,
                  cpus_per_fold: float | None = None, gpus_per_fold: float | None = None) -> Iterator[FoldResult]:
    """Train ``folds`` with ``fold_fn`` on ``executor``; yield a :class:`FoldResult` per finished fold.

    ``fold_fn`` has the signature of :func:`~mer_keras.training.loso.train_fold` and returns
    ``(model, scores, history, info)``. Ray options: ``ray_address`` (default: start a local
    instance, shut down afterwards), ``cpus_per_fold`` (default 1), ``gpus_per_fold``
    (default 1 when training on a GPU, else 0). ``progress`` shows per-epoch bars in-process
    only (Ray tasks train silently; the caller's bar over folds advances as they finish).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "inprocess":
        if ray_address is not None or cpus_per_fold is not None or gpus_per_fold is not None:
            raise ValueError("ray_address, cpus_per_fold and gpus_per_fold apply to executor='ray' only")
        return _inprocess(data, folds, recipe, seeds, fold_fn, device=device, deterministic=deterministic,
                          record_test_curve=record_test_curve, save_weights=save_weights, progress=progress)
    return _ray(data, folds, recipe, seeds, fold_fn, device=device, deterministic=deterministic,
                record_test_curve=record_test_curve, save_weights=save_weights, ray_address=ray_address,
                cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold)


__all__ = ["EXECUTORS", "FoldResult", "SavedWeights", "execute_folds"]
