"""Training-throughput benchmark: full-LOSO wall time of the flow-network recipes on this machine.

``mer-keras bench train`` / ``python experiments/00c_training_throughput.py``. For each
recipe the data have the real protocol's shape: the subjects, clips and labels of the
structural twins (``counts="real"``) of the recipe's composite -- MEGC2019 (442 clips, 68
subjects) for ``"ststnet"``, the Off-TANet composite (294 clips, 49 subjects) for
``"off_tanet"`` / ``"arfnet"`` -- with flow-like arrays of the recipe's input size (a
class-dependent shift, so the training is not degenerate; speed does not depend on the
values). A few folds are trained through the engine's own fold function
(:func:`~mer_keras.training.loso.train_fold`: fresh seeded model, training-only
normalisation, the compiled epoch loop) for ``epochs`` epochs, in-process and, with
``executors=("inprocess", "ray")``, as concurrent Ray tasks (one CPU each). The steady
per-epoch time and the first-epoch (tracing) time give the projected full LOSO:

    sum over folds of ( first_epoch_s + (recipe epochs - 1) * epoch_s * n_train(fold) / n_train(measured) )

divided by the number of folds the executor trains at once (measured wall-clock speed-up
of the concurrent run), printed beside figures of the official PyTorch code on a 2-core
CPU (:data:`OFFICIAL`).

Measured numbers (and the CPU floor analysis of the earlier targets) are in
``docs/benchmarks.md``; :func:`side_by_side` is the benchmark of ``mer-keras bench train``
and ``experiments/00e_gpu_training.py`` (the engine beside a PyTorch reference loop).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Official PyTorch code on the same 2-core CPU (the issue's measurements).
OFFICIAL = {
    "ststnet": {"what": "69 ms/epoch (374 samples, batch 256)", "full_loso_min": 63.0,
                "samples_per_s": 374 / 0.069},
    "off_tanet": {"what": "262 samples/s", "full_loso_min": 180.0, "samples_per_s": 262.0},
}
#: The issue's targets: a full LOSO at least 3x faster than the official code.
TARGET_MIN = {"ststnet": 20.0, "off_tanet": 60.0, "arfnet": 60.0}
COMPOSITE = {"ststnet": "megc2019", "off_tanet": "off_tanet", "arfnet": "off_tanet"}


def protocol_arrays(recipe, root=None, seed: int = 0):
    """``LOSODataset`` with the real protocol's subjects/labels and synthetic arrays of the recipe's size."""
    from mer_keras.data import composites
    from mer_keras.data.synthetic import write_composite

    from .datasets import LOSODataset

    name = COMPOSITE.get(recipe.name.split("-")[0], "megc2019")
    with tempfile.TemporaryDirectory(prefix="mer-keras-bench-") as tmp:
        roots = write_composite(name, Path(root or tmp) / name, counts="real", seed=seed)
        manifest = composites.load_composite(name, **roots)
    manifest = manifest[manifest["label_id"] >= 0].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    y = manifest["label_id"].to_numpy()
    h, w, c = recipe.input_size
    x = rng.normal(0.0, 1.0, (len(y), h, w, c)).astype(np.float32)
    x[..., 0] += (y[:, None, None] - 1).astype(np.float32)
    if recipe.input == "flow_image":  # 0..255 pixels, as the original code reads its images
        x = np.clip(127.5 + 40.0 * x, 0, 255).astype(np.float32)
    subjects = composites.fold_groups(manifest).to_numpy()
    return LOSODataset.from_arrays(x, y, subjects, datasets=manifest["dataset"].to_numpy(),
                                   clips=manifest["clip"].astype(str).to_numpy())


@dataclass
class ThroughputRow:
    recipe: str
    executor: str
    n_clips: int
    n_folds: int
    epochs_measured: int
    folds_measured: int
    first_epoch_s: float
    ms_per_epoch: float
    samples_per_s: float
    concurrency: float
    projected_min: float
    official_min: float | None
    target_min: float

    @property
    def ratio_vs_official(self) -> float | None:
        return None if self.official_min is None else self.official_min / self.projected_min


def _measure(data, folds, recipe, executor: str, seeds: dict) -> tuple[list, float]:
    from .executors import execute_folds
    from .loso import train_fold

    options = {"cpus_per_fold": 1} if executor == "ray" else {}
    start = time.perf_counter()
    results = list(execute_folds(data, folds, recipe, seeds, train_fold, executor=executor, device="cpu", **options))
    return results, time.perf_counter() - start


def run_training_bench(recipes=("ststnet", "off_tanet"), *, epochs: int | None = None, folds: int = 2,
                       executors=("inprocess",), seed: int = 0, printer=print) -> list[ThroughputRow]:
    """Measure, project and print the full-LOSO wall time of ``recipes`` (see the module docstring)."""
    from .folds import loso_folds
    from .loso import seed_for
    from .recipes import get_recipe

    rows = []
    for name in recipes:
        recipe = get_recipe(name)
        n_epochs = epochs or {"ststnet": 60}.get(name, 6)
        short = recipe.replace(epochs=n_epochs, lr_step=None if recipe.lr_step is None else max(1, n_epochs))
        data = protocol_arrays(recipe, seed=seed)
        all_folds = loso_folds(data)
        pick = all_folds[:: max(1, len(all_folds) // folds)][:folds]
        seeds = {f.name: seed_for(seed, f.name) for f in all_folds}
        for executor in executors:
            results, wall = _measure(data, pick, short, executor, seeds)
            first = float(np.mean([r.info["first_epoch_s"] for r in results]))
            per_epoch = float(np.mean([r.info["ms_per_epoch"] for r in results])) / 1e3
            n_measured = float(np.mean([r.info["n_train_balanced"] for r in results]))
            serial = sum(r.info["train_s"] for r in results)
            concurrency = max(1.0, serial / wall) if executor == "ray" else 1.0
            total = sum(first + (recipe.epochs - 1) * per_epoch * len(f.train_index) / n_measured for f in all_folds)
            projected = total / concurrency / 60.0
            official = OFFICIAL.get(name, OFFICIAL["off_tanet"] if name == "arfnet" else None)
            rows.append(ThroughputRow(name, executor, len(data), len(all_folds), n_epochs, len(pick), first,
                                      1e3 * per_epoch, n_measured / per_epoch * concurrency, concurrency, projected,
                                      None if official is None else official["full_loso_min"], TARGET_MIN[name]))
    printer(format_rows(rows))
    return rows


def format_rows(rows) -> str:
    lines = ["| recipe | executor | clips/folds | measured | first epoch s | ms/epoch/fold | samples/s | "
             "folds at once | projected full LOSO min | official code min | speed-up vs official | target min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r.ratio_vs_official
        lines.append(f"| {r.recipe} | {r.executor} | {r.n_clips}/{r.n_folds} | {r.folds_measured} folds x "
                     f"{r.epochs_measured} ep | {r.first_epoch_s:.2f} | {r.ms_per_epoch:.1f} | {r.samples_per_s:.0f} | "
                     f"{r.concurrency:.2f} | {r.projected_min:.1f} | "
                     f"{'-' if r.official_min is None else f'{r.official_min:.0f}'} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {r.target_min:.0f} |")
    lines.append("official code (PyTorch, same CPU): " + "; ".join(f"{k}: {v['what']}" for k, v in OFFICIAL.items()))
    return "\n".join(lines)





# ----------------------------------------------------------------------------- side by side with the reference loop

SIDE_BY_SIDE_COLUMNS = ("recipe", "loop", "backend", "device", "folds_run", "folds_total", "folds_per_step", "epochs",
                        "wall_s", "train_loop_s", "first_epoch_s", "ms_per_epoch", "epoch_all_folds_s",
                        "full_loso_epochs", "full_loso_s", "projected", "uf1", "uar", "speedup_vs_reference", "note")


def _engine_row(data, recipe, *, loop: str, folds, vectorise, device: str, out_dir, executor: str = "inprocess",
                executor_options=None) -> dict:
    """One engine run (serial or vectorised) over ``folds`` (fold names), timed end to end."""
    from . import backends
    from .folds import loso_folds
    from .loso import run_loso
    from .store import FoldStore

    every = loso_folds(data)
    subjects = None if len(folds) == len(every) else [f.test_subject for f in every if f.name in set(folds)]
    start = time.perf_counter()
    report = run_loso(data, recipe, out_dir=out_dir, subjects=subjects, progress=False, device=device,
                      vectorise_folds=vectorise, overwrite=True, executor=executor, executor_options=executor_options)
    wall = time.perf_counter() - start
    store = FoldStore(out_dir)
    infos = [json.loads((store.fold_dir(name) / "done.json").read_text()).get("extra", {}) for name in folds]
    per_step = int(infos[0].get("vectorised_folds", 1))
    at_once = len(set(i.get("worker_pid", 0) for i in infos)) if executor == "processes" else 1
    loop_s = sum(float(i["train_s"]) / int(i.get("vectorised_folds", 1)) for i in infos) / at_once
    # the epoch loops scale with the number of folds; start-up (workers, compilation of a shared step), storing
    # and the report are paid once
    full = wall + loop_s * (len(every) / len(folds) - 1)
    # one steady epoch of every fold: each measured fold's epoch (a vectorised step's share), folds side by side
    epoch_all = float(np.mean([float(i["ms_per_epoch"]) / 1e3 / int(i.get("vectorised_folds", 1)) for i in infos]))
    epoch_all *= len(every) / at_once
    return {"recipe": recipe.name, "loop": loop, "backend": backends.name(), "device": report.config["run"]["device"],
            "folds_run": len(folds), "folds_total": len(every), "folds_per_step": per_step * at_once,
            "epochs": recipe.epochs,
            "wall_s": round(wall, 2), "train_loop_s": round(loop_s, 2),
            "first_epoch_s": float(np.median([i["first_epoch_s"] for i in infos])),
            "ms_per_epoch": float(np.median([i["ms_per_epoch"] for i in infos])),
            "epoch_all_folds_s": round(epoch_all, 3), "full_loso_epochs": recipe.epochs,
            "full_loso_s": round(full, 2), "projected": len(folds) < len(every),
            "uf1": round(float(report["uf1"]), 4), "uar": round(float(report["uar"]), 4),
            "note": "build, compile, train, predict, store"}


def _reference_row(data, recipe, *, folds: int, device: str) -> dict:
    """The PyTorch reference loop (:mod:`.reference_torch`) on the first ``folds`` folds, same data."""
    from .reference_torch import OFFICIAL_SETTINGS, reference_loso

    settings = dict(OFFICIAL_SETTINGS[recipe.model])
    settings["epochs"] = recipe.epochs
    torch_device = "cuda" if device == "gpu" else "cpu"
    n_folds = len(data.subject_list())
    out = reference_loso(np.asarray(data.x, np.float32), data.y, data.subjects, model=recipe.model,
                         device=torch_device, folds=folds, **settings)
    per_fold = out["total_s"] / len(out["folds"])
    y_true = np.concatenate([f["y_true"] for f in out["folds"]])
    y_pred = np.concatenate([f["y_pred"] for f in out["folds"]])
    from .engine import validation_uf1

    return {"recipe": recipe.name, "loop": "reference (PyTorch)", "backend": f"torch {out['torch_version']}",
            "device": out["device"], "folds_run": len(out["folds"]), "folds_total": n_folds, "folds_per_step": 1,
            "epochs": recipe.epochs, "wall_s": round(out["total_s"], 2),
            "train_loop_s": round(sum(f["train_s"] for f in out["folds"]), 2), "first_epoch_s": None,
            "ms_per_epoch": float(out["ms_per_epoch_median"]),
            "epoch_all_folds_s": round(float(out["ms_per_epoch_median"]) / 1e3 * n_folds, 3),
            "full_loso_epochs": recipe.epochs, "full_loso_s": round(per_fold * n_folds, 2),
            "projected": len(out["folds"]) < n_folds, "uf1": round(validation_uf1(y_true, y_pred), 4), "uar": None,
            "note": "official settings; UF1 over the folds run"}


def side_by_side(recipes=("ststnet", "off_tanet"), *, loops=("serial", "vectorised", "reference"),
                 epochs: int | None = None, serial_folds: int | None = None, vectorised_folds: int | None = None,
                 reference_folds: int = 2, vectorise="auto", device: str = "auto", seed: int = 0,
                 out_dir=None, runs_dir=None, workers: int | None = None, project_epochs: bool = True,
                 printer=print) -> list[dict]:
    """Full-LOSO time of the engine's loops beside the PyTorch reference loop, in one run, on one device.

    Data: :func:`protocol_arrays` (the real protocol's subjects, clips and labels; 442 / 68
    for STSTNet, 294 / 49 for Off-TANet). ``serial``: one fold after the other;
    ``vectorised``: ``vectorise`` folds per compiled step (JAX); ``processes``: one-thread
    fold processes side by side (``workers``, default one per core; CPU; the serial folds'
    count); ``epochs``: one count for
    every recipe, a ``{recipe: count}`` dict, or None (the recipe's); ``reference``: the PyTorch
    loop of :mod:`.reference_torch` (skipped, and said so, without PyTorch). A loop run on
    fewer folds than the protocol has (``*_folds``) is projected to all folds (its epoch
    loops scaled by the number of folds, its start-up counted once) and marked
    ``projected``. With ``epochs`` shorter than the recipe's and ``project_epochs``, every
    row's full LOSO is also extended to the recipe's own epoch count (``full_loso_epochs``):
    the missing epochs at the row's steady all-folds epoch time (``epoch_all_folds_s``), so
    a per-fold start-up (tracing) weighs what it weighs in the real run. Each row's
    ``speedup_vs_reference`` is the reference's full-LOSO time over the row's. Writes ``side_by_side.csv`` and ``side_by_side.md`` into
    ``out_dir`` when given; the engine's run folders go to ``runs_dir`` (default a
    temporary folder).
    """
    from .folds import loso_folds
    from .recipes import get_recipe
    from .reference_torch import OFFICIAL_SETTINGS, torch_available

    rows = []
    runs = Path(runs_dir) if runs_dir is not None else Path(tempfile.mkdtemp(prefix="mer-keras-side-"))
    for name in recipes:
        recipe = get_recipe(name)
        recipe_epochs = recipe.epochs
        wanted = epochs.get(name) if isinstance(epochs, dict) else epochs
        if wanted:
            recipe = recipe.replace(epochs=int(wanted))
        data = protocol_arrays(recipe, seed=seed)
        names = [f.name for f in loso_folds(data)]
        recipe_rows = []
        for loop in loops:
            if loop == "reference":
                if not torch_available():
                    printer(f"{name}: PyTorch is not importable; only the engine's side was measured")
                    continue
                if recipe.model not in OFFICIAL_SETTINGS:
                    printer(f"{name}: no reference loop of model {recipe.model!r}; only the engine's side was measured")
                    continue
                recipe_rows.append(_reference_row(data, recipe, folds=reference_folds, device=_device_name(device)))
                printer(f"  {name} {loop}: {recipe_rows[-1]['wall_s']} s for {recipe_rows[-1]['folds_run']} folds")
                continue
            limit = vectorised_folds if loop == "vectorised" else serial_folds
            chosen = names[: limit] if limit else names
            vectorise_k = vectorise if loop == "vectorised" else None
            executor = "processes" if loop == "processes" else "inprocess"
            options = {"workers": workers} if loop == "processes" and workers else None
            recipe_rows.append(_engine_row(data, recipe, loop=loop, folds=chosen, vectorise=vectorise_k,
                                           device=device, out_dir=runs / f"{name}_{loop}", executor=executor,
                                           executor_options=options))
            printer(f"  {name} {loop}: {recipe_rows[-1]['wall_s']} s for {recipe_rows[-1]['folds_run']} folds, "
                    f"UF1 {recipe_rows[-1]['uf1']}")
        if project_epochs and recipe_epochs > recipe.epochs:
            for row in recipe_rows:
                row["full_loso_s"] = round(row["full_loso_s"] + (recipe_epochs - recipe.epochs) * row["epoch_all_folds_s"],
                                           2)
                row["full_loso_epochs"], row["projected"] = recipe_epochs, True
        reference = next((r for r in recipe_rows if r["loop"].startswith("reference")), None)
        for row in recipe_rows:
            row["speedup_vs_reference"] = (round(reference["full_loso_s"] / row["full_loso_s"], 2)
                                           if reference is not None else None)
        rows.extend(recipe_rows)
    table = format_side_by_side(rows)
    printer(table)
    if out_dir is not None:
        import pandas as pd

        base = Path(out_dir)
        base.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=list(SIDE_BY_SIDE_COLUMNS)).to_csv(base / "side_by_side.csv", index=False)
        (base / "side_by_side.md").write_text(table + "\n")
    return rows


def _device_name(device: str) -> str:
    from . import backends

    if device != "auto":
        return device
    with backends.runtime("auto") as runtime:
        return runtime["device"]


def format_side_by_side(rows) -> str:
    lines = ["| recipe | loop | backend | device | folds run / total | folds per step | epochs | wall s | "
             "training loop s | first epoch s | ms per epoch | full LOSO epochs | full LOSO s | UF1 | "
             "speed-up vs reference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        full = f"{r['full_loso_s']:.1f}" + (" (projected)" if r["projected"] else "")
        speed = "-" if r.get("speedup_vs_reference") is None else f"{r['speedup_vs_reference']:.2f}x"
        uf1 = "-" if r["uf1"] is None else f"{r['uf1']:.3f}"
        first = "-" if r.get("first_epoch_s") is None else f"{r['first_epoch_s']:.2f}"
        lines.append(f"| {r['recipe']} | {r['loop']} | {r['backend']} | {r['device']} | {r['folds_run']} / "
                     f"{r['folds_total']} | {r['folds_per_step']} | {r['epochs']} | {r['wall_s']:.1f} | "
                     f"{r['train_loop_s']:.1f} | {first} | {r['ms_per_epoch']:.1f} | {r.get('full_loso_epochs', r['epochs'])} | "
                     f"{full} | {uf1} | {speed} |")
    return "\n".join(lines)
__all__ = ["OFFICIAL", "TARGET_MIN", "ThroughputRow", "format_rows", "format_side_by_side", "protocol_arrays",
           "run_training_bench", "side_by_side"]
