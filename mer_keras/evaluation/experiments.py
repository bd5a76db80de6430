"""Shared machinery of the numbered experiment scripts (``experiments/NN_*.py``).

A script declares one paper table as a :class:`TableSpec`: its columns (``(dataset,
metric)`` pairs, e.g. ``("CASME II", "uf1")``) and its :class:`Row` s. A row is the row
label as printed in the paper, a recipe name (:func:`mer_keras.training.get_recipe`) with
overrides, the prepared input it reads (:class:`DataSpec`: composite, pre-processing preset,
input size) and an optional source-dataset filter. :func:`main` then does the rest:

1. the common command line (:func:`parse_args`): ``--data`` prepared cache(s) of your
   licensed data (each row takes the cache of its size and contents, :func:`match_cache`;
   under ``--quick`` that is the rows' quick size); default: a synthetic composite written
   and prepared on the fly under ``--data-dir``, reused when present), ``--quick`` (what CI
   runs: the table's quick subset of rows, one left-out subject, one epoch, tiny inputs), ``--executor``,
   ``--device``, ``--out``, ``--yes``, ``--max-minutes``, ``--rows`` (``--exact-rows``), ``--dry-run``,
   ``--seed``;
2. a time estimate per row before anything trains (:func:`estimate_row`): a short
   measured timing of the row's model on its input -- one compiled training step (the
   LOSO engine's TensorFlow :func:`~mer_keras.training.backends.tensorflow.epoch_steps`) at the row's batch size
   (a smaller probe batch, scaled linearly, when a step would cost more than
   :data:`PROBE_FLOPS`), the first call giving the per-fold tracing cost -- times steps x
   epochs x folds (both stages of a two-stage recipe); handcrafted recipes time their
   feature on two clips. Measurements are kept in ``OUT/step_timings.json`` with the CPU
   other processes used meanwhile; one taken under load is measured again next run (a
   loaded machine had made estimates several times too long). Rows above
   ``--max-minutes`` (default :data:`MAX_MINUTES`) are listed with their estimate and
   skipped unless ``--yes``; rows whose run is already finished are not estimated;
   ``--dry-run`` stops after the estimates.
   ``--quick`` runs are tiny by construction and not estimated;
3. each row runs with :func:`mer_keras.training.run_loso` into ``OUT/<row-slug>/`` (with
   ``-quick`` appended under ``--quick``), so finished runs and folds are reused; the run's
   report (``report.json``, ``confusion_matrix.png``) is named after the row; a transfer
   row that pre-trains (MobileViT paper) also gets its macro-expression set (``Row.macro``:
   synthetic by default, the ``--macro`` cache with ``--data``);
4. ``OUT/results.csv`` (``row, dataset, metric, ours, paper, kind, status``),
   ``OUT/results.md`` (our number and the paper's side by side per column; "not in text"
   where the paper has none; rows the paper only quotes appear as ``cited``, from
   :mod:`mer_keras.evaluation.paper_results`) and ``OUT/runs.json`` (per row: status,
   estimate, trained and reused folds, wall time); the markdown is printed.

Scripts whose numbers are not LOSO runs (timing tables) use :func:`parse_args`,
:func:`timing_rows` (their ``--rows``), :func:`batch1_timing`, :func:`assemble` and
:func:`write_results` directly.

Nothing here selects an epoch or a hyperparameter on a left-out subject: every run
evaluates the model after its recipe's last epoch (the engine's rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mer_keras.evaluation import paper_results
from mer_keras.evaluation.timing import OtherLoad, load_note, measured_quietly

MAX_MINUTES = 30.0
"""Default ``--max-minutes``: rows estimated above it are skipped unless ``--yes``."""
PROBE_FLOPS = 1e11
"""Largest training-step cost (3 x forward FLOPs x batch) measured at full batch; above it
the probe uses a smaller batch and scales the step time linearly."""
QUICK_EPOCHS = 1
QUICK_FOLDS = 1
SYNTHETIC = dict(subjects_per_dataset=4, clips_per_subject=6, frame_size=None, n_frames=15)
"""The default synthetic composite (as ``mer-keras demo``): 4 subjects per source dataset, 6 clips each,
the datasets' real frame sizes, 15 frames per clip."""
SYNTHETIC_QUICK = dict(subjects_per_dataset=2, clips_per_subject=3, frame_size=(320, 240), n_frames=6)
"""The ``--quick`` synthetic composite: 2 subjects per source dataset, 3 clips each, 320x240, 6 frames."""
RESULT_COLUMNS = ("row", "dataset", "metric", "ours", "paper", "kind", "status")


# ----------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class DataSpec:
    """A prepared input: composite (synthetic default), pre-processing preset and input size.

    ``options``: extra :class:`~mer_keras.preprocess.pipeline.PreprocessConfig` fields
    (e.g. ``(("keep", "onset_to_apex"),)``). ``quick_size``: the size under ``--quick``.
    """

    composite: str
    preset: str
    size: int
    quick_size: int = 32
    options: tuple = ()

    def at(self, size: int) -> "DataSpec":
        return dataclasses.replace(self, size=int(size))

    @property
    def key(self) -> str:
        extra = "".join(f"_{k}-{v}" for k, v in self.options)
        return f"{self.composite}_{self.preset}_{self.size}{extra}"

    def config(self):
        from mer_keras.preprocess.pipeline import PreprocessConfig

        return PreprocessConfig.preset(self.preset, size=self.size, **dict(self.options))


@dataclass(frozen=True)
class Row:
    """One row of a paper table, as we run it.

    ``label``: the row label as printed in the paper (also the key into the paper's
    numbers, unless ``paper_row`` names another). ``recipe`` + ``overrides``: the recipe
    and the fields changed (``model_kwargs`` given here *replaces* the recipe's).
    ``quick_overrides``: changed on top under ``--quick`` (``model_kwargs`` here is
    *merged*). ``data``: the prepared input. ``sources``: only these source datasets
    (``None``: all). ``quick``: part of the ``--quick`` subset. ``note``: a deviation from
    the paper, printed under the table. ``folder``: the run folder's name (default a slug
    of the label); two scripts that run the same row under the same ``--out`` share it.
    ``transform``: ``LOSODataset -> LOSODataset`` applied to the row's input before training
    (an input ablation, e.g. keeping the ``(u, v)`` channels of a flow stack); a recipe whose
    ``input_size`` override has another channel count keeps it at every size.
    ``macro``: the macro-expression pre-training set of a transfer recipe
    (``trainer="transfer"`` with ``pretrain``; MobileViT paper), prepared like ``data`` at
    the row's size; with ``--data`` the ``--macro`` cache is used instead.
    """

    label: str
    recipe: str
    data: DataSpec
    overrides: Mapping[str, Any] = field(default_factory=dict)
    quick_overrides: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] | None = None
    quick: bool = False
    paper_row: str | None = None
    note: str = ""
    folder: str | None = None
    transform: Callable[[Any], Any] | None = None
    macro: DataSpec | None = None

    @property
    def slug(self) -> str:
        if self.folder:
            return self.folder
        return re.sub(r"[^a-z0-9]+", "-", self.label.lower().replace("+", " plus ")).strip("-") or "row"


@dataclass(frozen=True)
class Column:
    """A ``(dataset, metric)`` column; ``paper_metric`` is the paper's metric name for it
    (default ``metric``; ``""``: the paper has no such column)."""

    dataset: str
    metric: str
    paper_metric: str | None = None
    label: str | None = None

    @property
    def title(self) -> str:
        if self.label:
            return self.label
        name = {"uar": "UAR", "uf1": "UF1", "accuracy": "Acc", "params": "params", "flops": "FLOPs",
                "mem_rw_mb": "MemR+W MB", "time_ms": "ms"}.get(self.metric, self.metric)
        return name if self.dataset in ("-", "composite") else f"{self.dataset} {name}"


def per_dataset_scores(report, metrics: Sequence[str] = ("uar", "uf1")) -> dict[tuple[str, str], float]:
    """Pooled scores of each source dataset (MEGC2019 convention), keyed by the papers' dataset names."""
    out = {}
    for dataset, line in report.per_dataset.iterrows():
        name = paper_results.DATASET_NAMES.get(str(dataset), str(dataset))
        for m in metrics:
            out[(name, m)] = float(line[m])
    return out


def subject_mean_scores(report, metrics: Sequence[str] = ("uar", "uf1")) -> dict[tuple[str, str], float]:
    """Unweighted means of per-subject scores over the whole run (Off-TANet / ARFNet convention)."""
    return {("composite", m): float(report.metrics[f"{m}_subject_mean"]) for m in metrics}


@dataclass(frozen=True)
class TableSpec:
    """A paper table: where its numbers are (``paper``, ``table``), its columns and rows.

    ``scores(report) -> {(dataset, metric): value}`` turns a LOSO report into our numbers
    (default :func:`per_dataset_scores`); ``row_stats(row, recipe, out) -> {...}`` adds numbers
    that need no training (parameters, FLOPs), also for skipped rows (``out``: the output
    folder, for caching them). ``resizable``: the
    rows share one input size that ``--size`` may change (a CPU variant, not a paper
    setting). ``notes``: printed under the table. ``also_from``: other tables of the same
    paper (e.g. ``"abstract"``) whose numbers fill the paper column where this table has
    none (a table that is an image in our copy of the paper). ``paper_order``: the paper
    table's row labels in print order, rows we do not run included: those appear with no
    value and status "in the paper only" (paper column "not in text" unless the package
    data has their numbers).
    """

    paper: str
    table: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    scores: Callable = per_dataset_scores
    row_stats: Callable | None = None
    resizable: bool = False
    notes: tuple[str, ...] = ()
    also_from: tuple[str, ...] = ()
    paper_order: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.paper not in paper_results.PAPERS:
            raise ValueError(f"unknown paper {self.paper!r}; known: {sorted(paper_results.PAPERS)}")
        labels = [r.label for r in self.rows]
        if len(set(labels)) != len(labels):
            raise ValueError(f"row labels must be unique, got duplicates {sorted({x for x in labels if labels.count(x) > 1})}")
        slugs = [r.slug for r in self.rows]
        if len(set(slugs)) != len(slugs):
            raise ValueError("row labels map to the same folder name; rename them")


# ----------------------------------------------------------------------------- command line


def build_parser(description: str, *, resizable: bool = False) -> argparse.ArgumentParser:
    """The common command line of every experiment script (see the module docstring)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", metavar="CACHE",
                   help="prepared cache(s) of your licensed datasets (`mer-keras prepare`); each row uses the cache "
                        "whose size and contents fit it. Default: a synthetic composite written and prepared under "
                        "--data-dir")
    p.add_argument("--macro", metavar="CACHE",
                   help="with --data: the prepared macro-expression cache (CK+, Oulu-CASIA, JAFFE, MUG; preset "
                        "'mobilevit_apex') of the rows that pre-train on it (MobileViT paper); without it those rows "
                        "are skipped. Default without --data: a synthetic macro composite")
    p.add_argument("--data-dir", type=Path, help="where the synthetic composite and its caches live (default OUT/synthetic); "
                                                "reused when present")
    p.add_argument("--out", type=Path, help="output folder (default experiments_out/<script name>)")
    p.add_argument("--quick", action="store_true",
                   help="CI run: the table's quick subset of rows, one left-out subject, one epoch, tiny inputs")
    p.add_argument("--executor", default="inprocess", choices=("inprocess", "ray"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    p.add_argument("--yes", action="store_true", help="also run rows estimated above --max-minutes")
    p.add_argument("--max-minutes", type=float, default=MAX_MINUTES,
                   help=f"rows estimated above this are skipped unless --yes (default {MAX_MINUTES:g})")
    p.add_argument("--rows", nargs="+", metavar="TEXT", help="only rows whose label contains one of these texts")
    p.add_argument("--exact-rows", action="store_true",
                   help="--rows texts are whole row labels (e.g. 'ShuffleNetV2 with CBAM' without its "
                        "'without ...' variants)")
    p.add_argument("--dry-run", action="store_true", help="print the time estimates and stop (nothing trains)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="discard run folders of another config instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if resizable:
        p.add_argument("--size", type=int, help="input size of every row (a CPU variant, not the paper's 224)")
    return p


def parse_args(argv: Sequence[str] | None, description: str, *, script: str, resizable: bool = False,
               extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """Parse the common options (plus the script's own via ``extra(parser)``); fills defaults of ``out``/``data_dir``."""
    parser = build_parser(description, resizable=resizable)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("experiments_out") / script
    args.out = Path(args.out)
    if args.data_dir is None:
        args.data_dir = args.out / "synthetic"
    if args.exact_rows and not args.rows:
        parser.error("--exact-rows needs --rows")
    if args.max_minutes <= 0:
        parser.error(f"--max-minutes must be > 0, got {args.max_minutes}")
    if getattr(args, "size", None) is not None and not 16 <= args.size <= 1024:
        parser.error(f"--size must be in [16, 1024], got {args.size}")
    if args.data:
        for path in args.data:
            if not (Path(path) / "cache.json").is_file():
                parser.error(f"--data {path}: not a prepared cache (no cache.json); run `mer-keras prepare` first")
    if getattr(args, "macro", None) and not (Path(args.macro) / "cache.json").is_file():
        parser.error(f"--macro {args.macro}: not a prepared cache (no cache.json); run `mer-keras prepare` first")
    return args


# ----------------------------------------------------------------------------- data


def synthetic_roots(composite: str, data_dir: Path, *, quick: bool, seed: int = 0, log=print) -> dict[str, str]:
    """Roots of the synthetic ``composite`` under ``data_dir`` (written once; reused when complete).

    Both releases are written (raw frames and the cropped twins), as the real downloads ship
    them: each preset reads the one its route takes.
    """
    from mer_keras.data.synthetic import COMPOSITES, write_composite

    if composite not in COMPOSITES:
        raise ValueError(f"unknown composite {composite!r}; known: {sorted(COMPOSITES)}")
    params = dict(SYNTHETIC_QUICK if quick else SYNTHETIC, seed=int(seed), release="both")
    root = Path(data_dir) / (f"{composite}-quick" if quick else composite)
    marker = root / "written.json"
    wanted = json.loads(json.dumps({"composite": composite, **params}))
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return {name: str(root / "raw" / name) for name in COMPOSITES[composite]}
    start = time.perf_counter()
    roots = write_composite(composite, root / "raw", **params)
    marker.write_text(json.dumps(wanted, indent=2) + "\n")
    log(f"synthetic {composite!r} composite written to {root / 'raw'} in {time.perf_counter() - start:.1f} s")
    return roots


def synthetic_manifest(composite: str, data_dir: Path, *, quick: bool, seed: int = 0, log=print,
                       release: str = "raw") -> pd.DataFrame:
    """The synthetic ``composite``'s manifest, read from its ``release`` (``"raw"`` or ``"cropped"``) frames."""
    from mer_keras.data.composites import load_composite

    roots = synthetic_roots(composite, data_dir, quick=quick, seed=seed, log=log)
    return load_composite(composite, **roots, **({"release": release} if release != "raw" else {}))


def synthetic_cache(spec: DataSpec, data_dir: Path, *, quick: bool, seed: int = 0, log=print) -> Path:
    """The synthetic composite of ``spec`` prepared with its preset (resumes / reuses an earlier prepare)."""
    from mer_keras.preprocess.cache import prepare

    config = spec.config()
    manifest = synthetic_manifest(spec.composite, data_dir, quick=quick, seed=seed, log=log, release=config.release)
    out = Path(data_dir) / (f"{spec.composite}-quick" if quick else spec.composite) / f"cache_{spec.preset}_{spec.size}"
    result = prepare(manifest, out, config, workers=1, progress=False)
    if result.n_computed:
        log(result.summary())
    if len(result.skipped):
        raise RuntimeError(f"{len(result.skipped)} synthetic clips could not be prepared into {out}: "
                           f"{result.skipped.to_dict('records')[:3]}")
    return out


def _needs(recipe) -> tuple[bool, bool]:
    """(needs frame stacks, needs flow) of a recipe's input."""
    if recipe.trainer == "two_stage":
        return True, True
    return recipe.input in ("frames", "frame_changes"), recipe.input in ("flow_stack", "flow_image")


def match_cache(spec: DataSpec, recipe, caches: Sequence) -> tuple[Path | None, str]:
    """The user cache (``PreparedCache``) that fits ``spec`` and ``recipe``: ``(path, note)`` or ``(None, reason)``.

    A cache fits when its size is the spec's, it holds frame stacks if the recipe reads
    them and flow if it reads flow; one prepared with exactly the spec's preset wins,
    otherwise the first that fits is used and the note says so.
    """
    frames, flow = _needs(recipe)
    wanted = spec.config()
    fits = [c for c in caches if c.config.size == spec.size and (not frames or c.config.keep == "onset_to_apex")
            and (not flow or c.config.compute_flow)]
    if not fits:
        what = " with frame stacks (keep='onset_to_apex')" if frames else ""
        return None, (f"no --data cache at {spec.size} px{what}; prepare one with the {spec.preset!r} preset at "
                      f"size {spec.size}")
    exact = [c for c in fits if c.config.fingerprint() == wanted.fingerprint()]
    if exact:
        return exact[0].path, ""
    return fits[0].path, f"--data cache {fits[0].path} differs from the {spec.preset!r} preset at {spec.size} px"


# ----------------------------------------------------------------------------- recipes and subjects


def row_recipe(row: Row, *, quick: bool, size: int | None):
    """The :class:`~mer_keras.training.Recipe` a row runs (quick variant and input size applied)."""
    from mer_keras.training import get_recipe

    recipe = get_recipe(row.recipe)
    if quick:
        recipe = recipe.quick(QUICK_EPOCHS)
    changes = dict(row.overrides)
    if quick and row.quick_overrides:
        extra = dict(row.quick_overrides)
        if "model_kwargs" in extra:
            extra["model_kwargs"] = {**changes.get("model_kwargs", recipe.model_kwargs), **extra["model_kwargs"]}
        changes.update(extra)
    if size is not None and recipe.trainer != "handcrafted":
        base = changes.get("input_size", recipe.input_size)
        channels = 3 if isinstance(base, (int, float)) else int(tuple(base)[-1])
        changes["input_size"] = (int(size), int(size), channels)
    return recipe.replace(**changes) if changes else recipe


def pick_subjects(subjects: Iterable[str], n: int | None) -> list[str] | None:
    """The first ``n`` LOSO subjects taken round-robin over source datasets (``None``: all)."""
    subjects = sorted(set(subjects))
    if n is None or n >= len(subjects):
        return None
    by_dataset: dict[str, list[str]] = {}
    for s in subjects:
        by_dataset.setdefault(s.split("/", 1)[0], []).append(s)
    order = [group[i] for i in range(max(map(len, by_dataset.values()))) for group in by_dataset.values() if i < len(group)]
    return order[: max(1, int(n))]


def clip_table(manifest: pd.DataFrame, sources: Sequence[str] | None = None) -> pd.DataFrame:
    """Labelled clips of a reader or cache manifest: ``subject`` (``dataset/subject``), ``label_id``, ``n_frames``."""
    table = manifest[manifest["label_id"] >= 0]
    if sources is not None:
        table = table[table["dataset"].isin(list(sources))]
    frames = (pd.to_numeric(table["apex"], errors="coerce") - pd.to_numeric(table["onset"], errors="coerce") + 1)
    return pd.DataFrame({"subject": table["dataset"].astype(str) + "/" + table["subject"].astype(str),
                         "label_id": table["label_id"].astype(int).to_numpy(),
                         "n_frames": frames.fillna(2).clip(lower=2).astype(int).to_numpy()})


# ----------------------------------------------------------------------------- time estimates


@dataclass
class Estimate:
    seconds: float | None
    detail: str

    @property
    def text(self) -> str:
        return "not estimated" if self.seconds is None else format_duration(self.seconds)


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _probe_model(recipe, n_classes: int):
    import inspect

    from mer_keras.models import get

    builder = get(recipe.model)
    kwargs = dict(recipe.model_kwargs)
    if recipe.loss == "multi_margin":
        kwargs["head"] = "svm"
    params = inspect.signature(builder).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    while True:  # builders that forward **kwargs (the DeiT variants) name a refused argument only when called
        try:
            return builder(classes=n_classes, input_shape=tuple(recipe.input_size), **kwargs)
        except TypeError as exc:
            refused = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if refused is None or refused.group(1) not in kwargs:
                raise
            kwargs.pop(refused.group(1))


def _backend_version() -> dict:
    """The Keras backend and its framework's version (part of a step timing's cache key)."""
    import importlib

    import keras

    backend = keras.backend.backend()
    return {"backend": backend, "version": getattr(importlib.import_module(backend), "__version__", "")}


def measure_step(recipe, n_classes: int, cache_file: Path | None = None) -> dict:
    """Tracing cost and time of one training step of ``recipe``'s model on random inputs of its size.

    Returns ``{"trace_s", "step_s" (at the recipe's batch size), "probe_batch", "gflops",
    "other_cores"}``, cached in ``cache_file`` (JSON) under a key of model, arguments, input,
    batch, machine, backend and its version (not the loss: an SVM or softmax head costs the
    same here), timed with the current Keras backend's compiled epoch
    (:func:`mer_keras.training.backends.fold_trainer`). ``other_cores``: the CPU other processes used meanwhile
    (:class:`~mer_keras.evaluation.timing.OtherLoad`); a cached timing taken under load is
    measured again (:func:`~mer_keras.evaluation.timing.measured_quietly`).
    """
    import keras

    from mer_keras.models.summary import count_flops
    from mer_keras.training import backends

    key = json.dumps({"model": recipe.model, "model_kwargs": dict(recipe.model_kwargs), "input": list(recipe.input_size),
                      "batch": int(recipe.batch_size), "classes": int(n_classes),
                      "host": platform.node(), **_backend_version()}, sort_keys=True, default=str)
    store = {}
    if cache_file is not None and Path(cache_file).is_file():
        store = json.loads(Path(cache_file).read_text())
        if key in store and measured_quietly(store[key]):
            return store[key]
    keras.backend.clear_session()
    model = _probe_model(recipe, n_classes)
    flops = float(count_flops(model))
    batch = int(recipe.batch_size)
    probe = max(1, min(batch, int(PROBE_FLOPS // max(1.0, 3.0 * flops))))
    rng = np.random.default_rng(0)
    x = rng.random((probe, *recipe.input_size), dtype=np.float32)
    y = rng.integers(0, n_classes, probe).astype(np.int32)
    if recipe.loss == "multi_margin":
        from mer_keras.models.heads import MultiMarginLoss

        loss = MultiMarginLoss()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    # the engine's compiled epoch on the current backend, over one batch
    trainer = backends.fold_trainer(model, keras.optimizers.Adam(1e-4), loss, x, y, probe)
    perm = np.arange(probe)
    with OtherLoad() as load:
        start = time.perf_counter()
        trainer.train_epoch(perm, 1e-4)
        first = time.perf_counter() - start
        times = []
        for _ in range(2):
            start = time.perf_counter()
            trainer.train_epoch(perm, 1e-4)
            times.append(time.perf_counter() - start)
    step = float(np.median(times))
    result = {"trace_s": max(0.0, first - step), "step_s": step * batch / probe, "probe_batch": probe,
              "gflops": flops / 1e9, "other_cores": load.cores}
    keras.backend.clear_session()
    if cache_file is not None:
        store[key] = result
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        Path(cache_file).write_text(json.dumps(store, indent=1, sort_keys=True) + "\n")
    return result


def estimate_row(recipe, clips: pd.DataFrame, subjects: Sequence[str] | None, *, cache_file: Path | None = None,
                 cache_path: Path | None = None, macro_clips: pd.DataFrame | None = None) -> Estimate:
    """Estimated wall time of a LOSO run of ``recipe`` on ``clips`` (see :func:`clip_table`).

    ``subjects``: the left-out subjects (``None``: all). Network recipes: per fold the
    tracing cost plus epochs x steps x step time (:func:`measure_step`; a two-stage recipe
    adds its pre-training stage on class-balanced flow images and counts the onset..apex
    frames, with the mirrored copies of ``flip_classes``, as stage-2 samples; a transfer
    recipe counts class-balanced apex images: its macro-expression pre-training on
    ``macro_clips`` once, then per fold every grid trial on the inner fit split and the
    final model, at the mean of the grid's epochs). Handcrafted
    recipes: the feature of two clips of ``cache_path`` timed and scaled to every clip.
    """
    folds = sorted(set(clips["subject"])) if subjects is None else list(subjects)
    n_classes = int(clips["label_id"].max()) + 1
    if recipe.trainer == "handcrafted":
        return _estimate_handcrafted(recipe, clips, len(folds), cache_path)
    if recipe.trainer not in ("single", "two_stage", "transfer"):
        return Estimate(None, f"no estimate for trainer {recipe.trainer!r}")
    step = measure_step(recipe, n_classes, cache_file)
    total = 0.0
    grid = dict(recipe.grid or {}) if recipe.trainer == "transfer" else {}
    trials = int(np.prod([len(v) for v in grid.values()])) if grid else 0
    if recipe.trainer == "transfer" and recipe.pretrain and macro_clips is not None:  # stage 1, shared by the folds
        macro = np.bincount(macro_clips["label_id"], minlength=n_classes)
        total += step["trace_s"] + (recipe.pretrain_epochs * n_classes * int(macro.max()) * (1.0 - recipe.val_fraction)
                                    * step["step_s"] / recipe.batch_size)
    for subject in folds:
        train = clips[clips["subject"] != subject]
        counts = np.bincount(train["label_id"], minlength=n_classes)
        if recipe.trainer == "single":
            n = len(train) if recipe.class_balancing is None else n_classes * int(counts.max())
            total += step["trace_s"] + recipe.epochs * math.ceil(n / recipe.batch_size) * step["step_s"]
        elif recipe.trainer == "transfer":
            epochs = float(np.mean(grid.get("epochs", (recipe.epochs,))))
            images = epochs * n_classes * int(counts.max()) * (trials * (1.0 - recipe.val_fraction) + 1.0)
            total += (trials + 1) * step["trace_s"] + images * step["step_s"] / recipe.batch_size
        else:
            fit = (1.0 - recipe.val_fraction) if recipe.pretrain else 0.0
            n1 = n_classes * int(counts[counts > 0].min()) * fit
            per_sample = step["step_s"] / recipe.batch_size
            stage1 = recipe.pretrain_epochs * math.ceil(n1 / recipe.pretrain_batch_size) * recipe.pretrain_batch_size * per_sample
            flip_ids = [i for i, name in enumerate(("negative", "positive", "surprise")) if name in recipe.flip_classes]
            frames = train["n_frames"].to_numpy()
            n2 = frames.sum() + frames[train["label_id"].isin(flip_ids).to_numpy()].sum()
            stage2 = recipe.epochs * math.ceil(n2 / recipe.batch_size) * step["step_s"]
            total += (2 if recipe.pretrain else 1) * step["trace_s"] + stage1 + stage2
    detail = (f"{len(folds)} folds; {recipe.epochs} epochs"
              + (f" + {recipe.pretrain_epochs} pre-training" if recipe.trainer != "single" and recipe.pretrain else "")
              + (f"; {trials} grid trials per fold" if trials else "")
              + f"; step {step['step_s'] * 1e3:.0f} ms at batch {recipe.batch_size}"
              + (f" (probe batch {step['probe_batch']})" if step["probe_batch"] < recipe.batch_size else "")
              + f", tracing {step['trace_s']:.0f} s per fold and stage"
              + load_note(step.get("other_cores")))
    return Estimate(total, detail)


def _estimate_handcrafted(recipe, clips: pd.DataFrame, n_folds: int, cache_path: Path | None) -> Estimate:
    from mer_keras.baselines import get_feature
    from mer_keras.preprocess.cache import PreparedCache

    if cache_path is None:
        return Estimate(None, "no cache to time the feature on")
    cache = PreparedCache(cache_path)
    feature = get_feature(recipe.features)
    keys = cache.manifest.loc[cache.manifest["label_id"] >= 0, "key"].tolist()[:2]
    times = []
    for key in keys:
        arrays = cache.load(key)
        if recipe.input == "frames":
            sample = arrays["frames"][..., None]
        else:
            sample = np.concatenate([arrays["flow"], arrays["strain"][..., None]], axis=-1).astype(np.float32)
        start = time.perf_counter()
        feature(sample, **recipe.feature_params)
        times.append(time.perf_counter() - start)
    seconds = float(np.mean(times)) * len(clips) + 0.05 * n_folds
    return Estimate(seconds, f"{recipe.features} features of {len(clips)} clips ({np.mean(times) * 1e3:.0f} ms each) "
                             f"+ a linear SVM per fold ({n_folds} folds)")


# ----------------------------------------------------------------------------- model statistics

#: Keras layer types counted by :func:`memory_read_write_mb` (the PyTorch modules torchstat measures).
MEMORY_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "BatchNormalization", "Activation", "ReLU",
                 "LeakyReLU", "MaxPooling2D", "AveragePooling2D", "TorchMaxPooling2D", "GlobalAveragePooling2D")


def memory_read_write_mb(model) -> float:
    """Estimated memory read + write of one forward pass, in MB of 2^20 bytes (float32).

    An estimate from the model graph in the manner of torchstat (the tool behind the
    Off-TANet paper's "MemR+W" column): for every layer of a type that corresponds to a
    PyTorch module torchstat measures (:data:`MEMORY_LAYERS`: convolutions, dense, batch
    normalisation, activations, pooling), read = input activations + weights, write =
    output activations, 4 bytes per value; element-wise merges, concatenations,
    reshapes, padding and custom layers (attention products) are left out, as torchstat
    does not see PyTorch's functional operations. Nested models are walked. Measured
    against the paper's Table 2 at its input sizes: Off-ApexNet 10.36 (paper 10.35),
    STSTNet 0.77 (0.76), Dual-Inception 26.31 (25.67), Micro-Attention 238.26 (237.97),
    Off-TANet 5.41 (5.64), MACNN 298.5 (paper 1140.00).
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += int(round(memory_read_write_mb(layer) * 2**20 / 4))
            continue
        if type(layer).__name__ not in MEMORY_LAYERS:
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        total += sum(int(np.prod(t.shape[1:])) for t in inputs) + sum(int(np.prod(w.shape)) for w in layer.weights)
        total += sum(int(np.prod(t.shape[1:])) for t in outputs)
    return total * 4 / 2**20


def model_stats(recipe, n_classes: int = 3, cache_file: Path | None = None) -> dict[tuple[str, str], float]:
    """``params`` (trainable), ``flops`` (multiply-accumulates, the unit of torchstat's "Flops"
    column) and ``mem_rw_mb`` (:func:`memory_read_write_mb`) of ``recipe``'s model at its input size.

    ``cache_file``: a JSON file keeping the numbers per model, arguments and input size (a
    rerun does not build the models again).
    """
    import keras

    from mer_keras.models.summary import count_flops, count_trainable

    key = json.dumps({"model": recipe.model, "model_kwargs": dict(recipe.model_kwargs), "input": list(recipe.input_size),
                      "loss": recipe.loss, "classes": int(n_classes)}, sort_keys=True, default=str)
    store = json.loads(Path(cache_file).read_text()) if cache_file is not None and Path(cache_file).is_file() else {}
    if key not in store:
        keras.backend.clear_session()
        model = _probe_model(recipe, n_classes)
        store[key] = {"params": float(count_trainable(model)), "flops": float(count_flops(model) // 2),
                      "mem_rw_mb": memory_read_write_mb(model)}
        del model
        keras.backend.clear_session()
        if cache_file is not None:
            Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
            Path(cache_file).write_text(json.dumps(store, indent=1, sort_keys=True) + "\n")
    return {("-", name): value for name, value in store[key].items()}


# ----------------------------------------------------------------------------- results


def format_value(metric: str, value) -> str:
    """A number as the tables print it (``–`` for none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    if metric in ("params", "test_set_size") or metric.endswith("soft_0.01"):
        return f"{value:,.0f}"
    if metric == "flops":
        for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{unit}"
        return f"{value:.0f}"
    if metric == "mem_rw_mb":
        return f"{value:.2f}"
    if metric.endswith("_ms"):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.4f}"


def assemble(table: TableSpec, rows: Sequence[str], values: Mapping[tuple[str, str, str], float],
             status: Mapping[str, str], paper_rows: Mapping[str, str] | None = None,
             include_cited: bool = True) -> pd.DataFrame:
    """The long results table: one line per (row, column) with our value and the paper's.

    ``rows``: our row labels in order; ``values[(row, dataset, metric)]``: our numbers;
    ``status[row]``: what happened to the row; ``paper_rows[row]``: the paper's label when
    it differs. Rows of the paper's table that we do not have are added (``include_cited``)
    with no value and status "in the paper only" (``cited`` when the paper quotes them),
    each after the paper row it follows (not the placeholder line of a table whose numbers
    are not in the text). Cells the table lacks are looked up in ``table.also_from``.
    """
    paper = paper_results.load(table.paper, table.table)
    fallbacks = [paper_results.load(table.paper, t) for t in table.also_from]
    paper_rows = dict(paper_rows or {})
    order = list(rows)
    if include_cited:
        listed = list(dict.fromkeys(paper.loc[paper["kind"] != "not_in_text", "row"]))
        placed = {paper_rows.get(r, r): r for r in order}  # paper label -> our label
        for i, name in enumerate(listed):
            if name in placed:
                continue
            anchor = next((placed[p] for p in reversed(listed[:i]) if p in placed), None)
            order.insert(order.index(anchor) + 1 if anchor is not None else 0, name)
            placed[name] = name
    lines = []
    for row in order:
        paper_row = paper_rows.get(row, row)
        row_kinds = set(paper.loc[paper["row"] == paper_row, "kind"])
        only = "in the paper only (cited)" if "cited" in row_kinds else "in the paper only"
        for col in table.columns:
            ours = values.get((row, col.dataset, col.metric))
            pv, kind = (None, None)
            if col.paper_metric != "":
                pv, kind = paper_results.lookup(paper, paper_row, col.dataset, col.paper_metric or col.metric)
                for other in fallbacks:
                    if pv is None:
                        pv, kind = paper_results.lookup(other, paper_row, col.dataset, col.paper_metric or col.metric)
            state = status.get(row, only)
            lines.append({"row": row, "dataset": col.dataset, "metric": col.metric,
                          "ours": np.nan if ours is None else float(ours),
                          "paper": paper_results.NOT_IN_TEXT if pv is None else pv,
                          "kind": kind or paper_results.NOT_IN_TEXT, "status": state})
    frame = pd.DataFrame(lines, columns=list(RESULT_COLUMNS))
    frame.attrs["paper_rows"] = paper_rows
    return frame


def to_markdown(table: TableSpec, results: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """Markdown: one line per row, each column as "ours" and "paper" side by side, then kind and status."""
    head = f"### {table.paper} Table {table.table}: {table.title}" if table.table != "abstract" else \
        f"### {table.paper} (abstract): {table.title}"
    header = ["row"]
    for col in table.columns:
        header += [f"{col.title} ours", f"{col.title} paper"]
    header += ["paper kind", "status"]
    out = [head, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    paper_rows = results.attrs.get("paper_rows", {})
    printed = {(line["row"], line["dataset"], line["metric"]): paper_results.printed(line)
               for t in (*table.also_from, table.table)  # the table's own numbers win
               for _, line in paper_results.load(table.paper, t).iterrows() if line["kind"] != "not_in_text"}
    for row, group in results.groupby("row", sort=False):
        cells = [str(row).replace("|", "\\|")]
        kinds = set()
        for col in table.columns:
            hit = group[(group["dataset"] == col.dataset) & (group["metric"] == col.metric)]
            if hit.empty:
                cells += ["–", "–"]
                continue
            line = hit.iloc[0]
            cells.append(format_value(col.metric, None if pd.isna(line["ours"]) else float(line["ours"])))
            paper = line["paper"]
            if not isinstance(paper, str):  # as printed in the paper when that differs from the stored value (2.66M)
                metric = col.paper_metric or col.metric
                shown = printed.get((paper_rows.get(row, row), col.dataset, metric))
                paper = shown if shown and not shown.replace(".", "").isdigit() else format_value(metric, float(paper))
            cells.append(paper)
            if line["kind"] != paper_results.NOT_IN_TEXT:
                kinds.add(line["kind"])
        cells.append(", ".join(sorted(kinds)) or paper_results.NOT_IN_TEXT)
        cells.append(str(group["status"].iloc[0]).replace("|", "\\|"))
        out.append("| " + " | ".join(cells) + " |")
    all_notes = [*table.notes, *notes]
    if all_notes:
        out.append("")
        out += [f"- {n}" for n in all_notes]
    return "\n".join(out) + "\n"


def timing_rows(rows: Sequence[tuple[str, str]], args) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The ``(label, registry model)`` rows of a timing table that ``--rows`` (``--exact-rows``) selects,
    and the status of the others (:data:`NOT_SELECTED`)."""
    chosen = select_labels([label for label, _ in rows], args.rows, exact=getattr(args, "exact_rows", False))
    return ([(label, name) for label, name in rows if label in chosen],
            {label: NOT_SELECTED for label, _ in rows if label not in chosen})


def batch1_timing(args, names: Sequence[str], *, size: int, quick_size: int,
                  extra: Callable[[int, int], Mapping[str, Any]] | None = None) -> dict:
    """Batch-1 network times of the registry models ``names`` for a timing table, kept in ``OUT/timing.json``.

    Medians of ``--repeats`` runs (default 30, 3 under ``--quick``, at ``quick_size`` px)
    after warm-up (:func:`mer_keras.evaluation.timing.run_latency_bench`) on ``--device``,
    the models of one call timed together (repetitions interleaved). A saved measurement
    with the same settings (size, repeats, warm-up, host) that holds every model of
    ``names`` is reused unless ``--remeasure`` or it was taken while other processes loaded
    the machine (:func:`~mer_keras.evaluation.timing.measured_quietly`); the status names
    that load. A new measurement keeps the saved times of the models it does not time
    (another ``--rows`` selection) when their settings match and they were measured
    quietly, so selecting rows never discards earlier work.
    ``extra(size, repeats)``: further measurements stored with them (e.g. pre-processing
    time). Returns ``{"settings", "network_ms", "params", ..., "status"}``.
    """
    from mer_keras.evaluation.timing import run_latency_bench
    from mer_keras.training import atomic_write_text
    from mer_keras.training.runtime import device_scope

    size = quick_size if args.quick else size
    repeats = args.repeats or (3 if args.quick else 30)
    settings = {"size": size, "repeats": repeats, "warmup": 1 if args.quick else 5, "host": platform.node()}
    path = args.out / "timing.json"
    saved = json.loads(path.read_text()) if path.is_file() else None
    if saved is not None and not (saved.get("settings") == settings and measured_quietly(saved)):
        saved = None
    if saved is not None and not args.remeasure and set(names) <= set(saved["network_ms"]):
        return {**saved, "status": f"reused: {path.name}"}
    with device_scope(args.device), OtherLoad() as load:
        bench = run_latency_bench(list(names), repeats, warmup=settings["warmup"],
                                  input_sizes={n: size for n in names})
        result = {"settings": settings, "network_ms": dict(zip(bench["model"], bench["median_ms"].astype(float))),
                  "params": dict(zip(bench["model"], bench["params"].astype(float))),
                  **(extra(size, repeats) if extra else {})}
    result["other_cores"] = load.cores
    if saved is not None:  # keep the other models' times; the file's load is the larger of the two runs'
        for key in ("network_ms", "params"):
            result[key] = {**saved[key], **result[key]}
        cores = (load.cores, saved.get("other_cores"))
        result["other_cores"] = None if None in cores else max(cores)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return {**result, "status": "measured" + load_note(load.cores)}


def write_results(table: TableSpec, results: pd.DataFrame, out: Path, notes: Sequence[str] = (),
                  runs: Mapping | None = None, printer=print) -> str:
    """Write ``results.csv``, ``results.md`` (and ``runs.json``) into ``out``; print and return the markdown."""
    from mer_keras.training import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", results.to_csv(index=False))
    text = to_markdown(table, results, notes)
    atomic_write_text(out / "results.md", text)
    if runs is not None:
        atomic_write_text(out / "runs.json", json.dumps(runs, indent=2, default=str) + "\n")
    printer(text)
    return text


# ----------------------------------------------------------------------------- running a table


def _finished(run_dir: Path, recipe, subjects: Sequence[str]) -> bool:
    """``run_dir`` holds every wanted fold of a run of exactly ``recipe`` (no data needs loading)."""
    from mer_keras.training import FoldStore, fold_name

    if not (run_dir / "run.json").is_file():
        return False
    try:
        store = FoldStore(run_dir)
        recorded = json.loads((run_dir / "run.json").read_text())["config"]["recipe"]
    except (ValueError, KeyError, OSError):
        return False
    if json.loads(json.dumps(recorded)) != json.loads(json.dumps(recipe.config_dict())):
        return False
    return {fold_name(s) for s in subjects} <= set(store.completed())


def _row_input(cache: Path, recipe, sources, transform=None):
    """What :func:`run_loso` gets: the cache path, or the filtered (and ``transform``-ed) datasets."""
    if sources is None and transform is None:
        return cache
    from mer_keras.training import LOSODataset

    if recipe.trainer == "two_stage":
        pair = (LOSODataset.from_cache(cache, input="flow_image", sources=sources),
                LOSODataset.from_cache(cache, input=recipe.input, sources=sources))
        return pair if transform is None else tuple(transform(d) for d in pair)
    data = LOSODataset.from_cache(cache, input=recipe.input, sources=sources)
    return data if transform is None else transform(data)


NOT_SELECTED = "not selected (--rows); rerun without --rows to include it"
"""Status of a table row that ``--rows`` left out (it stays in the table, without numbers)."""


def select_labels(labels: Sequence[str], texts: Sequence[str] | None, *, exact: bool = False) -> list[str]:
    """The row labels that ``--rows`` selects: every label without texts; else those that contain one
    of the texts, or (``exact``) equal one of them, case-insensitively, in the table's order.

    Raises ``SystemExit`` naming the labels when the texts select nothing.
    """
    if not texts:
        return list(labels)
    wanted = [t.lower() for t in texts]
    chosen = [x for x in labels if any(t == x.lower() if exact else t in x.lower() for t in wanted)]
    if not chosen:
        how = "--exact-rows " if exact else ""
        raise SystemExit(f"{how}--rows {list(texts)} matches no row; rows: {list(labels)}")
    return chosen


def select_rows(rows: Sequence[Row], texts: Sequence[str] | None, *, exact: bool = False) -> list[Row]:
    """The :class:`Row` s that ``--rows`` selects (:func:`select_labels`), in the table's order."""
    chosen = set(select_labels([r.label for r in rows], texts, exact=exact))
    return [r for r in rows if r.label in chosen]


def run_table(table: TableSpec, args, log=print) -> tuple[pd.DataFrame, dict, list[str]]:
    """Estimate, run (or skip) every selected row of ``table``; returns ``(results, runs, notes)``."""
    from mer_keras.training import ConfigMismatchError, run_loso

    quick = bool(args.quick)
    rows = select_rows(table.rows, args.rows, exact=getattr(args, "exact_rows", False))
    user_caches = None
    if args.data:
        from mer_keras.preprocess.cache import PreparedCache

        user_caches = [PreparedCache(p) for p in args.data]
    size_override = getattr(args, "size", None) if not quick else None

    values: dict[tuple[str, str, str], float] = {}
    status: dict[str, str] = {}
    runs: dict[str, dict] = {}
    notes: list[str] = []
    plan = []
    clip_cache: dict[tuple, pd.DataFrame] = {}
    macros: dict[str, Any] = {}  # row -> its macro-expression set (a DataSpec, or the --macro cache)

    for row in rows:
        spec = row.data.at(row.data.quick_size if quick else (size_override or row.data.size))
        recipe = row_recipe(row, quick=quick, size=spec.size)
        entry = {"row": row.label, "slug": row.slug + ("-quick" if quick else ""), "recipe": recipe.name,
                 "data": spec.key, "input_size": spec.size}
        runs[row.label] = entry
        if table.row_stats is not None:
            for (dataset, metric), v in table.row_stats(row, recipe, Path(args.out)).items():
                values[(row.label, dataset, metric)] = v
        if quick and not row.quick:
            status[row.label] = "not run in --quick (rerun without --quick)"
            entry["status"] = "not in quick subset"
            continue
        if recipe.trainer == "transfer" and recipe.pretrain:  # pre-trains on a macro-expression set
            if user_caches is not None and not getattr(args, "macro", None):
                status[row.label] = "skipped: pre-trains on macro-expressions; pass --macro CACHE"
                entry["status"] = "no --macro cache"
                continue
            if user_caches is None and row.macro is None:
                raise ValueError(f"row {row.label!r}: a transfer recipe with pre-training needs Row(macro=DataSpec)")
            macros[row.label] = Path(args.macro) if user_caches is not None else row.macro.at(spec.size)
        # the clips (for subjects and estimates): the user's cache or the synthetic reader manifest
        if user_caches is not None:
            cache, reason = match_cache(spec, recipe, user_caches)
            if cache is None:
                status[row.label] = f"skipped: {reason}"
                entry["status"] = "no matching --data cache"
                continue
            if reason:
                notes.append(f"{row.label}: {reason}")
            from mer_keras.preprocess.cache import PreparedCache

            manifest = PreparedCache(cache).manifest
        else:
            cache = None
            manifest = synthetic_manifest(spec.composite, args.data_dir, quick=quick, seed=args.seed, log=log)
        key = (id(manifest) if user_caches is None else str(cache), row.sources)
        if key not in clip_cache:
            clip_cache[key] = clip_table(manifest, row.sources)
        clips = clip_cache[key]
        subjects = pick_subjects(clips["subject"], QUICK_FOLDS if quick else None)
        wanted = subjects if subjects is not None else sorted(set(clips["subject"]))
        run_dir = Path(args.out) / entry["slug"]
        entry.update(run_dir=str(run_dir), n_folds=len(wanted))
        if _finished(run_dir, recipe, wanted):
            estimate = Estimate(0.0, "finished earlier: folds reused")
        elif quick:
            estimate = Estimate(None, f"not estimated under --quick ({len(wanted)} fold, {QUICK_EPOCHS} epoch, {spec.size} px)")
        else:
            if cache is None and recipe.trainer == "handcrafted":
                cache = synthetic_cache(spec, args.data_dir, quick=quick, seed=args.seed, log=log)
            macro_clips = None
            if row.label in macros:
                from mer_keras.preprocess.cache import PreparedCache

                macro = macros[row.label]
                macro_clips = clip_table(PreparedCache(macro).manifest if isinstance(macro, Path) else synthetic_manifest(
                    macro.composite, args.data_dir, quick=quick, seed=args.seed, log=log))
            estimate = estimate_row(recipe, clips, subjects, cache_file=Path(args.out) / "step_timings.json",
                                    cache_path=cache, macro_clips=macro_clips)
        entry.update(estimate_s=estimate.seconds, estimate=estimate.detail)
        plan.append((row, spec, recipe, cache, subjects, estimate, entry))
        log(f"[estimate] {row.label}: {estimate.text} ({estimate.detail})")

    for row, spec, recipe, cache, subjects, estimate, entry in plan:
        heavy = estimate.seconds is not None and estimate.seconds > 60 * args.max_minutes
        if getattr(args, "dry_run", False):
            status[row.label] = f"not run (--dry-run): estimated {estimate.text}" + (
                f" > {args.max_minutes:g} min, would be skipped without --yes" if heavy else "")
            entry["status"] = "dry run"
            continue
        if heavy and not args.yes:
            status[row.label] = (f"skipped: estimated {estimate.text} > {args.max_minutes:g} min on this machine "
                                 "(rerun with --yes)")
            entry["status"] = "skipped (estimate)"
            continue
        if cache is None:
            cache = synthetic_cache(spec, args.data_dir, quick=quick, seed=args.seed, log=log)
        entry["cache"] = str(cache)
        log(f"[run] {row.label}: recipe {recipe.name!r}, {spec.size} px, into {entry['run_dir']}")
        start = time.perf_counter()
        try:
            data = _row_input(cache, recipe, row.sources, row.transform)
            if row.label in macros:  # transfer: {"micro": ..., "macro": ...} (mer_keras.training.transfer)
                macro = macros[row.label]
                if isinstance(macro, DataSpec):
                    macro = synthetic_cache(macro, args.data_dir, quick=quick, seed=args.seed, log=log)
                entry["macro_cache"] = str(macro)
                data = {"micro": data, "macro": macro}
            report = run_loso(data, recipe, entry["run_dir"],
                              subjects=subjects,
                              seed=args.seed, device=args.device, executor=args.executor,
                              progress=not args.no_progress, overwrite=bool(args.overwrite))
        except ConfigMismatchError as exc:
            raise SystemExit(f"{entry['run_dir']} holds a run of another config ({exc}); use another --out, "
                             "delete the folder, or pass --overwrite") from None
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            status[row.label] = f"failed: {type(exc).__name__}: {exc}"
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            log(f"[failed] {row.label}: {type(exc).__name__}: {exc}")
            continue
        report.name = f"{row.label} ({recipe.name})"  # the engine names a report after its recipe only
        report.save(entry["run_dir"])
        run = report.config["run"]
        trained, reused = len(run["trained_folds"]), len(run["reused_folds"])
        entry.update(status="ran", trained_folds=run["trained_folds"], reused_folds=run["reused_folds"],
                     wall_s=round(time.perf_counter() - start, 2))
        status[row.label] = (f"ran: {trained} fold(s) trained" + (f", {reused} reused" if reused else "")
                             if trained else f"reused: {reused} finished fold(s)")
        for (dataset, metric), v in table.scores(report).items():
            values[(row.label, dataset, metric)] = v
        if row.note:
            notes.append(f"{row.label}: {row.note}")
    if quick:
        notes.append(f"--quick: {QUICK_FOLDS} left-out subject, {QUICK_EPOCHS} epoch, tiny inputs, tiny synthetic "
                     "composite; the numbers only show that the pipeline runs.")
    if user_caches is None:
        notes.append("data: synthetic composite (not the licensed datasets); pass --data for real numbers.")
    labels = [r.label for r in rows]
    if args.rows:  # the table's other rows stay in place, marked: their earlier runs are not read here
        for r in table.rows:
            status.setdefault(r.label, NOT_SELECTED)
        labels = [r.label for r in table.rows]
    if table.paper_order and not args.rows:  # the paper's order, with the rows we do not run
        ours = {r.label for r in table.rows}
        labels = [x for x in table.paper_order if x in labels or x not in ours] + [
            x for x in labels if x not in table.paper_order]
    results = assemble(table, labels, values, status, {r.label: r.paper_row for r in table.rows if r.paper_row})
    return results, runs, notes


def main(table: TableSpec, argv: Sequence[str] | None = None, *, script: str, description: str | None = None) -> int:
    """Parse the command line, run the table, write and print the results; the exit code (1 if a row failed)."""
    args = parse_args(argv, description or table.title, script=script, resizable=table.resizable)
    start = time.perf_counter()
    results, runs, notes = run_table(table, args)
    write_results(table, results, args.out, notes, runs={"table": f"{table.paper} Table {table.table}",
                                                         "quick": bool(args.quick), "rows": runs,
                                                         "wall_s": round(time.perf_counter() - start, 1)})
    print(f"results: {Path(args.out) / 'results.csv'}, {Path(args.out) / 'results.md'} "
          f"({time.perf_counter() - start:.1f} s)")
    return 1 if any(r.get("status") == "failed" for r in runs.values()) else 0


def script_name(path: str) -> str:
    """``experiments/04_off_tanet_table2.py`` -> ``04_off_tanet_table2``."""
    return Path(path).stem


__all__ = ["Column", "DataSpec", "Estimate", "MAX_MINUTES", "MEMORY_LAYERS", "PROBE_FLOPS", "QUICK_EPOCHS",
           "QUICK_FOLDS", "RESULT_COLUMNS", "Row", "SYNTHETIC", "SYNTHETIC_QUICK", "TableSpec", "assemble",
           "build_parser", "clip_table", "estimate_row", "format_duration", "format_value", "main", "match_cache",
           "measure_step", "memory_read_write_mb", "model_stats", "parse_args", "per_dataset_scores",
           "pick_subjects", "row_recipe", "run_table", "script_name", "subject_mean_scores", "synthetic_cache",
           "synthetic_manifest", "synthetic_roots", "to_markdown", "write_results"]
