"""Memory and throughput of one ShuffleNetV2-SVM LOSO fold at 224 x 224 (``mer-keras bench fold``).

What is measured. One fold of the two-stage recipe (default ``"shufflenet_svm_corrected"``;
the L2 scale changes neither time nor memory) runs through the public engine
(:func:`~mer_keras.training.loso.run_loso` with ``subjects=[one subject]``: the whole
composite is loaded, as in a full run, and one left-out subject is trained) in a *child
process* started with ``multiprocessing``'s ``spawn`` method, so its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is that of the fold alone, not of this
process or of the ``prepare`` workers. The child reports:

* training samples/s of stage 1 (class-balanced flow images, pre-training) and stage 2
  (onset..apex frames plus the mirrored positive/surprise frames), per epoch of the
  engine's compiled loop: every epoch is timed by an epoch-loop hook (the stage-1
  validation predictions and the per-fold model building are outside it). The first epoch
  of each stage also traces and instantiates the compiled loop, so the steady rate is taken
  over the later epochs (with one epoch only, the first-epoch rate is reported and marked);
* the peak RSS after loading the data (flow images and frame stacks of every clip), at the
  end of stage 1 and at the end of the fold, against the 4 GB target;
* with ``folds=N`` (``experiments/00b_fold_memory_bench.py --folds N``), N folds train one
  after the other in the same child, as in a full run, and the current RSS
  (``/proc/self/status`` ``VmRSS``) is read as each fold returns: the growth across folds.

The fold left out is the subject with the fewest clips (the largest training set, so the
largest stage-2 tensor); with ``folds=N`` the N such subjects, trained in the engine's
(name) order. The fold's run folder is deleted first (the engine would otherwise reuse
finished folds of the same config and measure nothing). If the child dies (e.g. killed by
the kernel's out-of-memory killer) the exit code is reported instead of numbers.

Data. A synthetic cache of MEGC2019 size (442 clips, 68 subjects, the real class counts per
dataset and subject) at 224 px, prepared by :func:`~mer_keras.preprocess.cache.prepare`
with the ``shufflenet`` preset: the clip list (subjects, clip ids, labels) is the
structural twin (``write_composite("megc2019", ..., counts="real")``, whose own frames are
three 8 x 8 images and cannot be prepared), and each clip's frames are those of a rendered
synthetic clip of the same class (a pool of ``pool_subjects`` subjects per dataset x
``pool_clips`` clips, reused round-robin per class), with the apex set so that every clip
has ``frames_per_clip`` frames from onset to apex. The real onset-to-apex lengths are not
part of the twin; ``frames_per_clip=30`` (150 ms at 200 fps) is an assumption of this
benchmark, and the frame memory scales with it (442 x 30 x 224 x 224 bytes = 665 MB of
uint8 frames). ``clips=`` keeps whole subjects of the twin, in order, until at least that
many clips, and at least 3 subjects (a smaller, faster run). Preparing the 442 clips takes minutes (TV-L1 at 224 px
per clip); pass ``workdir=`` to keep the cache and reuse it on the next run.

The printed table also lists, as a reference line only, the throughput measured for the
official Off-TANet PyTorch code on this CPU (:data:`REFERENCE_LINE`): a different model
and input, for scale.

Measured numbers (memory before and after the engine's memory changes, growth across
folds) are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

RSS_TARGET_BYTES = 4 * 1024**3
"""The issue's target: the fold's peak RSS within 4 GB (GiB)."""

REFERENCE_LINE = "Off-TANet official PyTorch code: 262 samples/s on this CPU"
"""Reference printed beside the measured rates (a different model; listed for scale only)."""

FRAMES_PER_CLIP = 30
"""Default onset..apex frames per clip (an assumption: about 150 ms at 200 fps)."""

__all__ = ["FRAMES_PER_CLIP", "REFERENCE_LINE", "RSS_TARGET_BYTES", "format_fold_bench", "megc_sized_manifest",
           "prepare_megc_sized_cache", "run_fold_bench"]


# ----------------------------------------------------------------------------- data


def megc_sized_manifest(workdir, *, frames_per_clip: int = FRAMES_PER_CLIP, clips: int | None = None,
                        pool_subjects: int = 2, pool_clips: int = 6, seed: int = 0):
    """The MEGC2019-sized manifest described in the module docstring (labelled clips only).

    Writes the structural twin under ``workdir/twin`` and the rendered pool under
    ``workdir/pool`` (read back unchanged when an earlier call wrote them, so an interrupted
    ``prepare`` of the same sources resumes). Each row keeps the twin's dataset, subject, clip, emotion and label;
    its ``frames``/``frame_numbers`` are a pool clip's (same label, round-robin), with
    ``apex`` moved so that ``frames_per_clip`` frames run from onset to apex (fewer if the
    pool clip is shorter).
    """
    import pandas as pd

    from mer_keras.data import megc2019
    from mer_keras.data.synthetic import write_composite

    if frames_per_clip < 2:
        raise ValueError(f"frames_per_clip must be >= 2, got {frames_per_clip}")
    workdir = Path(workdir)
    marker = workdir / "sources_written.json"
    written = marker.is_file()  # a complete earlier write: read it back (unchanged files, so prepare resumes)
    parts = ("casme2", "samm", "smic")
    twin_roots = ({p: str(workdir / "twin" / p) for p in parts} if written
                  else write_composite("megc2019", workdir / "twin", counts="real"))
    twin = megc2019(**twin_roots)
    twin = twin[twin["label_id"] >= 0].reset_index(drop=True)
    if clips is not None:
        if clips < 1:
            raise ValueError(f"clips must be >= 1, got {clips}")
        groups = twin["dataset"] + "/" + twin["subject"]
        counts = groups.value_counts()
        kept, total = [], 0
        for group in pd.unique(groups):  # whole subjects, in the twin's order; at least 3 (a validation split)
            if total >= clips and len(kept) >= 3:
                break
            kept.append(group)
            total += int(counts[group])
        twin = twin[groups.isin(kept)].reset_index(drop=True)
    pool_args = dict(subjects_per_dataset=pool_subjects, clips_per_subject=pool_clips,
                     n_frames=max(int(frames_per_clip), 3), seed=seed)
    if written and json.loads(marker.read_text()) != pool_args:
        raise ValueError(f"{workdir} holds sources written with {marker.read_text()}; use another folder")
    pool_roots = ({p: str(workdir / "pool" / p) for p in parts} if written
                  else write_composite("megc2019", workdir / "pool", **pool_args))
    marker.write_text(json.dumps(pool_args))
    pool = megc2019(**pool_roots)
    pool = pool[pool["label_id"] >= 0].reset_index(drop=True)
    by_label = {label: group.to_dict("records") for label, group in pool.groupby("label")}
    missing = sorted(set(twin["label"]) - set(by_label))
    if missing:
        raise RuntimeError(f"the rendered pool has no clip of class(es) {missing}; raise pool_clips")
    used: dict[str, int] = defaultdict(int)
    rows = []
    for row in twin.to_dict("records"):
        candidates = by_label[row["label"]]
        source = candidates[used[row["label"]] % len(candidates)]
        used[row["label"]] += 1
        numbers = [int(n) for n in source["frame_numbers"]]
        start = numbers.index(int(source["onset"]))
        apex_i = min(start + int(frames_per_clip) - 1, len(numbers) - 1)
        rows.append({**row, "frames": tuple(source["frames"]), "frame_numbers": tuple(numbers),
                     "onset": numbers[start], "apex": numbers[apex_i], "offset": numbers[-1]})
    manifest = pd.DataFrame(rows, columns=list(twin.columns))
    manifest.attrs["issues"] = twin.attrs.get("issues")
    return manifest


def prepare_megc_sized_cache(workdir, *, size: int = 224, frames_per_clip: int = FRAMES_PER_CLIP,
                             clips: int | None = None, seed: int = 0, workers: int | None = None,
                             progress: bool = True) -> dict:
    """Build (or reuse) the benchmark's cache under ``workdir/cache_{size}_{frames}_{clips}``.

    A complete cache from an earlier run with the same arguments is reused as it is (the
    synthetic sources are not rewritten, so nothing is recomputed). Returns ``{"cache",
    "n_clips", "n_subjects", "seconds", "reused"}``.
    """
    from mer_keras.preprocess.cache import PreparedCache, prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    workdir = Path(workdir)
    tag = f"{size}px_{frames_per_clip}f_{'all' if clips is None else clips}"
    cache_dir = workdir / f"cache_{tag}"
    config = PreprocessConfig.preset("shufflenet", size=size)
    start = time.perf_counter()
    try:
        cache = PreparedCache(cache_dir)
        reused = cache.config == config
    except (FileNotFoundError, ValueError):
        reused = False
    if not reused:
        manifest = megc_sized_manifest(workdir / f"sources_{tag}", frames_per_clip=frames_per_clip, clips=clips,
                                       seed=seed)
        result = prepare(manifest, cache_dir, config, workers=workers, progress=progress)
        if len(result.skipped):
            raise RuntimeError(f"benchmark clips were skipped: {result.skipped['reason'].tolist()[:3]}")
        cache = PreparedCache(cache_dir)
    table = cache.manifest[cache.manifest["label_id"] >= 0]
    return {"cache": str(cache_dir), "n_clips": int(len(table)),
            "n_subjects": int(table[["dataset", "subject"]].drop_duplicates().shape[0]),
            "seconds": time.perf_counter() - start, "reused": bool(reused)}


# ----------------------------------------------------------------------------- child process


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # Linux reports KiB, macOS bytes


def _rss_bytes() -> int | None:
    """The current resident set size (Linux ``/proc/self/status``; ``None`` elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _fold_child(cache: str, recipe, subjects: list[str], out_dir: str, result_path: str) -> None:
    """Runs in the spawned child: the folds through the trainer protocol, timings and RSS to ``result_path``.

    The engine's own pieces, no patching: the recipe's trainer (:func:`~mer_keras.training.get_trainer`)
    prepares the data once (timed, RSS read after it), an :class:`~mer_keras.training.loop.EpochTimer`
    hook times every epoch of both stages, and each fold is the trainer's ``fit_predict``
    under the run's runtime, with the RSS read as it returns.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from mer_keras.training import get_trainer, loso_folds, seed_for
    from mer_keras.training.loop import EpochTimer
    from mer_keras.training.runtime import fold_runtime

    measured: dict = {"peak_rss_start": _peak_rss_bytes(), "epochs": [], "per_fold": []}
    timer = EpochTimer(probe=lambda: {"peak_rss": _peak_rss_bytes()})
    trainer = get_trainer(recipe, hooks=[timer])
    t = time.perf_counter()
    prepared = trainer.prepare(cache)
    flow = prepared.data
    frames = prepared.extras.get("frames")
    measured.update(load_s=time.perf_counter() - t, peak_rss_after_load=_peak_rss_bytes(),
                    flow_bytes=int(flow.x.nbytes))
    if frames is not None:  # the stage-2 frame pool (mirrored frames included)
        measured.update(n_frames=int((~frames["flipped"]).sum()), frame_bytes=int(frames["x"].nbytes),
                        frame_dtype=str(frames["x"].dtype))
    folds = [f for f in loso_folds(flow, subjects)]
    t = time.perf_counter()
    info = {}
    with fold_runtime("auto", mixed_precision=recipe.mixed_precision) as runtime:
        for i, fold in enumerate(folds):
            before = len(timer.records)
            _, _, _, fold_info = trainer.fit_predict(prepared, fold, seed_for(recipe.seed, fold.name),
                                                     mixed=runtime["precision"] == "mixed_float16")
            for record in timer.records[before:]:
                stage = 0 if record["label"] == "pretrain" else int(bool(recipe.pretrain))
                measured["epochs"].append({"fold": i, "trainer": stage,
                                           "n": record["n"], "s": record["s"], "peak_rss": record["peak_rss"]})
            measured["per_fold"].append({"fold": fold.name, "rss": _rss_bytes(), "peak_rss": _peak_rss_bytes()})
            info = info or fold_info
    measured["fold_s"] = time.perf_counter() - t
    measured["peak_rss_end"] = _peak_rss_bytes()
    measured["info"] = json.loads(json.dumps(info, default=str))
    Path(result_path).write_text(json.dumps(measured))


# ----------------------------------------------------------------------------- driver


def _pick_subjects(cache: str, n: int = 1) -> list[tuple[str, int]]:
    """The ``n`` LOSO groups with the fewest labelled clips (ties: by name), by name: the largest training sets."""
    from mer_keras.data.composites import fold_groups
    from mer_keras.preprocess.cache import PreparedCache

    table = PreparedCache(cache).manifest
    counts = fold_groups(table[table["label_id"] >= 0]).value_counts()
    ranked = sorted(counts.items(), key=lambda item: (item[1], item[0]))[:n]
    return sorted((str(subject), int(count)) for subject, count in ranked)  # the engine's fold order


def _stage_rates(epochs: list[dict], stage: int) -> dict:
    rows = [e for e in epochs if e["trainer"] == stage and e.get("fold", 0) == 0]  # the first fold
    if not rows:
        return {}
    steady = rows[1:] or rows
    return {"epochs": len(rows), "samples_per_epoch": int(np.median([r["n"] for r in rows])),
            "first_epoch_s": rows[0]["s"], "s_per_epoch": float(np.mean([r["s"] for r in steady])),
            "samples_per_s": sum(r["n"] for r in steady) / sum(r["s"] for r in steady),
            "includes_tracing": len(rows) == 1, "peak_rss": max(r["peak_rss"] for r in rows)}


def run_fold_bench(
    workdir=None,
    *,
    size: int = 224,
    frames_per_clip: int = FRAMES_PER_CLIP,
    clips: int | None = None,
    epochs: int = 2,
    pretrain_epochs: int | None = None,
    recipe: str = "shufflenet_svm_corrected",
    width: float = 1.0,
    folds: int = 1,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    print_fn: Callable[[str], None] | None = print,
) -> dict:
    """Prepare (or reuse) the MEGC-sized cache, run one fold in a spawned child, print and return the numbers.

    ``epochs`` / ``pretrain_epochs`` (default ``epochs``): epochs of stage 2 / stage 1
    (at least 2 each for a steady rate; the numbers are throughput, not accuracy).
    ``width``: ShuffleNetV2 width multiplier. ``folds``: folds trained one after the other
    in the same child (the ``folds`` subjects with the fewest clips, in name order); the RSS
    after each is in ``rss["per_fold"]`` (growth across folds), the rates are the first
    fold's. ``workdir``: where the synthetic sources, the cache and the fold's run folder go
    (kept; default a temporary folder, deleted).

    Returns ``{"data": {...}, "fold": {...}, "stage1": {...}, "stage2": {...}, "rss": {...},
    "reference": REFERENCE_LINE}`` (``"error"`` instead of the measurements if the child died).
    """
    from mer_keras.training import get_recipe

    if epochs < 1 or (pretrain_epochs is not None and pretrain_epochs < 1) or folds < 1:
        raise ValueError("epochs, pretrain_epochs and folds must be >= 1")
    base = get_recipe(recipe)
    if base.trainer != "two_stage":
        raise ValueError(f"recipe {recipe!r} is not a two-stage recipe")
    fold_recipe = base.replace(
        name=f"{base.name}-bench", epochs=int(epochs), pretrain_epochs=int(pretrain_epochs or epochs),
        input_size=int(size), model_kwargs={**base.model_kwargs, "width_multiplier": float(width)},
        notes=(*base.notes, "fold benchmark: throughput and memory only, few epochs (not a paper setting)"))

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mer-keras-bench-fold-")
        workdir = tmp.name
    workdir = Path(workdir)
    try:
        data = prepare_megc_sized_cache(workdir, size=size, frames_per_clip=frames_per_clip, clips=clips, seed=seed,
                                        workers=workers, progress=progress)
        picked = _pick_subjects(data["cache"], folds)
        subject, n_test = picked[0]
        run_dir = workdir / "fold_run"
        shutil.rmtree(run_dir, ignore_errors=True)  # the engine would reuse finished folds of the same config
        result_path = workdir / "fold_result.json"
        result_path.unlink(missing_ok=True)
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=_fold_child, args=(data["cache"], fold_recipe, [s for s, _ in picked], str(run_dir),
                                                      str(result_path)), name="mer-keras-bench-fold")
        start = time.perf_counter()
        child.start()
        child.join()
        wall = time.perf_counter() - start
        out: dict = {"data": {**data, "size": size, "frames_per_clip": frames_per_clip},
                     "fold": {"subject": subject, "n_test": n_test, "recipe": fold_recipe.name, "width": width,
                              "epochs": fold_recipe.epochs, "pretrain_epochs": fold_recipe.pretrain_epochs,
                              "n_folds": len(picked), "child_wall_s": wall, "cpu_count": os.cpu_count()},
                     "reference": REFERENCE_LINE, "rss_target_bytes": RSS_TARGET_BYTES}
        if child.exitcode != 0 or not result_path.is_file():
            reason = ("killed by signal 9 (SIGKILL; on Linux usually the out-of-memory killer)"
                      if child.exitcode == -9 else f"exit code {child.exitcode}")
            out["error"] = f"the fold's child process failed: {reason}"
        else:
            measured = json.loads(result_path.read_text())
            info = measured.get("info", {})
            out["fold"].update(fold_s=measured.get("fold_s"), load_s=measured.get("load_s"),
                               n_train_frames=info.get("n_train_frames"), n_flipped_frames=info.get("n_flipped_frames"),
                               pretrain_s=info.get("pretrain_s"), train_s=info.get("train_s"))
            out["data"].update(n_frames=measured.get("n_frames"), frame_bytes=measured.get("frame_bytes"),
                               flow_bytes=measured.get("flow_bytes"), frame_dtype=measured.get("frame_dtype"))
            epochs_measured = measured.get("epochs", [])
            out["stage1"] = _stage_rates(epochs_measured, 0) if fold_recipe.pretrain else {}
            out["stage2"] = _stage_rates(epochs_measured, 1 if fold_recipe.pretrain else 0)
            if not out["stage2"] and info.get("ms_per_epoch"):  # the epoch hook is gone: the engine's own numbers
                n = (info.get("n_train_frames") or 0) + (info.get("n_flipped_frames") or 0)
                out["stage2"] = {"epochs": fold_recipe.epochs, "samples_per_epoch": n,
                                 "s_per_epoch": info["ms_per_epoch"] / 1e3,
                                 "samples_per_s": n / (info["ms_per_epoch"] / 1e3), "includes_tracing": False}
            peak = measured["peak_rss_end"]
            out["rss"] = {"start": measured.get("peak_rss_start"), "after_load": measured.get("peak_rss_after_load"),
                          "after_stage1": out["stage1"].get("peak_rss"), "peak": peak,
                          "ratio_to_target": peak / RSS_TARGET_BYTES, "per_fold": measured.get("per_fold", [])}
    finally:
        if tmp is not None:
            tmp.cleanup()
    if print_fn is not None:
        print_fn(format_fold_bench(out))
    return out


def _gb(n) -> str:
    return "-" if n is None else f"{n / 1024**3:.2f} GB"


def format_fold_bench(results: dict) -> str:
    """Plain-text table of :func:`run_fold_bench` results."""
    d, f = results["data"], results["fold"]
    frames = d.get("n_frames")
    lines = [
        f"ShuffleNetV2-SVM fold benchmark ({f['recipe']}, width {f['width']}x, {d['size']}x{d['size']}, "
        f"{f['cpu_count']} CPU cores, one child process)",
        f"  data: {d['n_clips']} clips / {d['n_subjects']} subjects (synthetic, MEGC2019 clip list), "
        f"{d['frames_per_clip']} frames per clip onset..apex"
        + (f", {frames:,} frames = {_gb(d.get('frame_bytes'))} {d.get('frame_dtype')}" if frames else "")
        + (f"; cache {'reused' if d['reused'] else 'prepared'} in {d['seconds']:.0f} s"),
        f"  fold: left-out {f['subject']} ({f['n_test']} clips), {f['pretrain_epochs']} pre-training + "
        f"{f['epochs']} training epochs"
        + (f"; {f['n_folds']} folds in one process" if f.get("n_folds", 1) > 1 else "")
        + f"; child wall time {f['child_wall_s']:.0f} s",
    ]
    if "error" in results:
        return "\n".join(lines + [f"  ERROR: {results['error']}"])
    if f.get("n_train_frames") is not None:
        loaded = f"; data loaded in {f['load_s']:.0f} s" if f.get("load_s") is not None else ""
        lines.append(f"  stage-2 training frames: {f['n_train_frames']:,} + {f['n_flipped_frames']:,} mirrored{loaded}")
    lines += ["", f"  {'stage':<32} {'samples/epoch':>13} {'epochs':>6} {'1st epoch s':>11} {'s/epoch':>8} "
                  f"{'samples/s':>9}"]
    for key, label in (("stage1", "1 pre-training (flow images)"), ("stage2", "2 training (frames)")):
        s = results.get(key) or {}
        if not s:
            lines.append(f"  {label:<32} {'-':>13}")
            continue
        mark = " (incl. tracing)" if s.get("includes_tracing") else ""
        first = f"{s['first_epoch_s']:>11.1f}" if "first_epoch_s" in s else f"{'-':>11}"
        lines.append(f"  {label:<32} {s['samples_per_epoch']:>13,} {s['epochs']:>6} {first} "
                     f"{s['s_per_epoch']:>8.1f} {s['samples_per_s']:>9.1f}{mark}")
    lines.append(f"  {'reference':<32} {REFERENCE_LINE}")
    r = results["rss"]
    lines += ["", f"  peak RSS of the fold's process: after imports {_gb(r['start'])}, after loading the data "
                  f"{_gb(r['after_load'])}, after stage 1 {_gb(r['after_stage1'])}, end {_gb(r['peak'])}",
              f"  peak / 4 GB target: {r['ratio_to_target']:.2f} "
              f"({'within' if r['ratio_to_target'] <= 1 else 'ABOVE'} the target)"]
    per_fold = r.get("per_fold") or []
    if len(per_fold) > 1:
        lines += ["", f"  {'fold':>4} {'left out':<16} {'RSS after':>10} {'peak so far':>11}"]
        lines += [f"  {i:>4} {p['fold']:<16} {_gb(p['rss']):>10} {_gb(p['peak_rss']):>11}"
                  for i, p in enumerate(per_fold, 1)]
    return "\n".join(lines)
