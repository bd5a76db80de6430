"""Executors: where the LOSO folds of :func:`~mer_keras.training.loso.run_loso` train.

* ``"inprocess"`` (default): one fold after the other in this process.
* ``"processes"``: ``workers`` spawned processes (default: one per core), each limited to
  ``threads_per_worker`` threads (default 1) for the backend's kernels, train whole folds
  side by side; on a small CPU, two one-thread folds at once use the cores better than one
  fold on two threads (``mer-keras bench train`` measures it). Single-stage recipes (their
  fold function is picklable); results are stored by the driver as they arrive;
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

EXECUTORS = ("inprocess", "processes", "ray")


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


def _limit_threads(threads: int) -> None:
    """Before the backend starts: its kernels use at most ``threads`` threads in this process."""
    value = str(int(threads))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                 "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = value
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={value}".strip()


_WORKER: dict = {}


def _worker_start(data, fold_fn, recipe, device, deterministic, threads, backend) -> None:
    """Pool initializer: thread limits, the backend, and the run's data kept for every fold of this worker."""
    _limit_threads(threads)
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    from . import backends

    if backends.name() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    elif backends.name() == "torch":
        import torch

        torch.set_num_threads(int(threads))
    _WORKER.update(data=data, fold_fn=fold_fn, recipe=recipe, device=device, deterministic=deterministic)


def _worker_fold(job):
    fold, seed, record_test_curve, save_weights = job
    w = _WORKER
    with fold_runtime(w["device"], mixed_precision=w["recipe"].mixed_precision,
                      deterministic=w["deterministic"]) as runtime:
        model, scores, history, info = _train_one(
            w["data"], fold, w["recipe"], seed, w["fold_fn"], record_test_curve=record_test_curve, progress=False,
            keep_model=save_weights, mixed=runtime["precision"] == "mixed_float16")
    weights = SavedWeights.from_model(model) if model is not None else None
    return fold, scores, history, {**info, "worker_pid": os.getpid()}, weights, dict(runtime)


def _processes(data, folds, recipe, seeds, fold_fn, *, device, deterministic, record_test_curve, save_weights,
               workers, threads_per_worker) -> Iterator[FoldResult]:
    import multiprocessing
    import pickle

    try:
        pickle.dumps(fold_fn)
    except Exception as exc:  # noqa: BLE001 - closures of the multi-stage kinds
        raise ValueError(f"executor 'processes' runs single-stage recipes; recipe {recipe.name!r} (kind "
                         f"{recipe.trainer!r}) trains with executor 'inprocess' or 'ray'") from exc
    if device == "gpu":
        raise ValueError("executor 'processes' trains on the CPU; on a GPU use vectorise_folds (JAX) or 'inprocess'")
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(folds)))
    backend = os.environ.get("KERAS_BACKEND")
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start,
                             initargs=(data, fold_fn, recipe, "cpu", deterministic, int(threads_per_worker),
                                       backend)) as pool:
        pending = {pool.submit(_worker_fold, (fold, seeds[fold.name], record_test_curve, save_weights)): fold
                   for fold in folds}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    fold = pending.pop(future)
                    fold, scores, history, info, weights, runtime = future.result()
                    yield FoldResult(fold, scores, history, info, weights, runtime)
        except BrokenProcessPool as exc:
            raise RuntimeError("a fold worker process died (out of memory, or a script that starts training without "
                               "an `if __name__ == \"__main__\":` guard, which spawned workers re-run); the folds "
                               "finished so far are stored") from exc
        finally:
            for future in pending:
                future.cancel()


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
                  cpus_per_fold: float | None = None, gpus_per_fold: float | None = None, workers: int | None = None,
                  threads_per_worker: int = 1) -> Iterator[FoldResult]:
    """Train ``folds`` with ``fold_fn`` on ``executor``; yield a :class:`FoldResult` per finished fold.

    ``fold_fn`` has the signature of :func:`~mer_keras.training.loso.train_fold` and returns
    ``(model, scores, history, info)``. Ray options: ``ray_address`` (default: start a local
    instance, shut down afterwards), ``cpus_per_fold`` (default 1), ``gpus_per_fold``
    (default 1 when training on a GPU, else 0). Process options: ``workers`` (default one per
    core), ``threads_per_worker`` (default 1). ``progress`` shows per-epoch bars in-process
    only (other executors train silently; the caller's bar over folds advances as they finish).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    ray_given = ray_address is not None or cpus_per_fold is not None or gpus_per_fold is not None
    if executor != "ray" and ray_given:
        raise ValueError("ray_address, cpus_per_fold and gpus_per_fold apply to executor='ray' only")
    if executor != "processes" and (workers is not None or threads_per_worker != 1):
        raise ValueError("workers and threads_per_worker apply to executor='processes' only")
    if workers is not None and int(workers) < 1 or int(threads_per_worker) < 1:
        raise ValueError(f"workers and threads_per_worker must be >= 1, got {workers} and {threads_per_worker}")
    if executor == "processes":
        return _processes(data, folds, recipe, seeds, fold_fn, device=device, deterministic=deterministic,
                          record_test_curve=record_test_curve, save_weights=save_weights, workers=workers,
                          threads_per_worker=threads_per_worker)
    if executor == "inprocess":
        return _inprocess(data, folds, recipe, seeds, fold_fn, device=device, deterministic=deterministic,
                          record_test_curve=record_test_curve, save_weights=save_weights, progress=progress)
    return _ray(data, folds, recipe, seeds, fold_fn, device=device, deterministic=deterministic,
                record_test_curve=record_test_curve, save_weights=save_weights, ray_address=ray_address,
                cpus_per_fold=cpus_per_fold, gpus_per_fold=gpus_per_fold)


__all__ = ["EXECUTORS", "FoldResult", "SavedWeights", "execute_folds"]
