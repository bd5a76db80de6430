"""Off-TANet paper (``zhang2021-off-tanet``, PRICAI 2021), Table 5 and Fig. 5: sparseness of the spatial- and self-attention maps.

For each of the paper's cross-validation folds 1, 4, 6 and 41 the Off-TANet model of that
fold (trained on every other subject with the official recipe, weights kept) reads its
left-out subject's clips; per clip we take the spatial-attention map and the map after
the self-attention enhancement (:mod:`mer_keras.evaluation.attention`) and compute
``Soft_0.01`` (Eq. 13, entries below 0.01) and the Hoyer sparseness (Eq. 14); the table
gives their means over the fold's clips ("the mean value of these two indicators"),
the fold's test set size, and the mean over the folds, ours beside the paper's. The Fig. 5
figure shows one clip: apex frame, flow image, spatial attention and self-attention x
spatial attention (``fig5_attention_maps.png``; the arrays in ``fig5_maps.npz``, the
per-clip numbers in ``attention_per_clip.csv``, all read by
``notebooks/attention_maps.ipynb``).

Fold numbers follow the authors' code: fold ``k`` leaves out the ``k``-th (dataset,
subject) of their combined list, i.e. CASME, then CAS(ME)^2, then CASME II, subjects in
ascending order -- on the licensed data fold 1 = CASME sub01 (22 clips), 4 = CASME sub06
(13 in the paper; 14 in the released list), 6 = CASME sub08 (23), 41 = CASME II sub17
(31). Only those folds are trained (``--folds`` picks others); the training set of each
is all other subjects, nothing is chosen on the left-out subject.

Our reading of the measured maps (the released code has no Table-5 cell; its
visualisation notebook defines the Fig. 5 maps):

* spatial attention: the sigmoid map of the triplet-attention block (Eq. 5, 14 x 14 at
  112 px) resized to the input size (bilinear), values as computed -- a min-max
  normalised map would have its minimum at 0 and ``Soft_0.01 >= 1``, while the paper
  reports 0 for every fold;
* self-attention: the per-channel self-attention maps (Eq. 7) aggregated by a
  channel-wise maximum, 3 x 3 Gaussian blur, resized, min-max normalised and multiplied on
  the min-max-normalised spatial map (the Fig. 5 caption and the authors' code);
* maps are resized to the network's input size (112 x 112 in the paper, so
  ``Soft_0.01`` counts among 12,544 entries; at other sizes counts are not comparable).

Deviations from the paper:

* default data: a synthetic Off-TANet-style composite (4 subjects per source dataset:
  only folds 1, 4 and 6 exist there); ``--data`` takes a cache of the licensed datasets
  prepared with the ``off_tanet`` preset at 112 px;
* the paper's Fig. 5 shows sample EP01-5 of CASME subject 1 with the model of fold 1; we
  show that clip when it is present, otherwise the first test clip of the first fold;
* the "mean" row's paper column is the mean of the paper's four printed folds (derived,
  not printed in the paper);
* ``--quick``: fold 1 only, one epoch, 32 px, the tiny synthetic composite.

    python experiments/07_off_tanet_table5_attention.py [--quick] [--data CACHE ...] [--folds 1 4 6 41] [--yes] [--out DIR]
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mer_keras.evaluation import experiments as ex
from mer_keras.evaluation import paper_results

SCRIPT = "07_off_tanet_table5_attention"
PAPER = "zhang2021-off-tanet"
DATA = ex.DataSpec("off_tanet", "off_tanet", 112, quick_size=32)
MODEL_ROW = ex.Row("Off-TANet(Ours)", "off_tanet", DATA)
PAPER_FOLDS = (1, 4, 6, 41)
DATASET_ORDER = ("casme", "casme_sq", "casme2")
"""The authors' combined list: CASME, then CAS(ME)^2, then CASME II (``dataset/combined_3class.csv``)."""
FIG5_CLIP = ("casme/sub01", "EP01_5")
"""The clip of the paper's Fig. 5 (CASME subject 1, sample EP01-5, model of fold 1)."""
METRICS = ("test_set_size", "spatial_soft_0.01", "spatial_hoyer", "self_soft_0.01", "self_hoyer")
MEAN_ROW = "mean"
MEAN_KIND = "mean of the paper's folds"

TABLE = ex.TableSpec(
    paper=PAPER, table="5", title="Sparseness of the spatial- and self-attention maps (per fold, mean over its clips)",
    columns=(ex.Column("-", "test_set_size", label="Test set size"),
             ex.Column("-", "spatial_soft_0.01", label="Spatial Soft_0.01"),
             ex.Column("-", "spatial_hoyer", label="Spatial Hoyer"),
             ex.Column("-", "self_soft_0.01", label="Self Soft_0.01"),
             ex.Column("-", "self_hoyer", label="Self Hoyer")),
    rows=(),
    notes=("Per clip: Soft_0.01 = entries < 0.01 (Eq. 13) and Hoyer sparseness (Eq. 14) of the spatial-attention map "
           "(sigmoid values resized to the input size) and of the self-attention map (channel-wise max, 3x3 blur, "
           "min-max normalised, times the normalised spatial map, as Fig. 5); each fold: the mean over its test clips.",
           "Fold k = the k-th (dataset, subject) of the authors' list (CASME, CAS(ME)^2, CASME II; subjects "
           "ascending); each fold's model is trained on every other subject with the official recipe."),
)


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def official_fold_numbers(subjects) -> dict[int, str]:
    """``{k: subject}``: fold numbers of the authors' code (1-based; CASME, CAS(ME)^2, CASME II, subjects ascending).

    ``subjects`` are ``"dataset/subject"`` names; datasets outside the authors' three come
    after them, alphabetically.
    """
    def key(subject):
        dataset, _, name = str(subject).partition("/")
        rank = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
        return rank, dataset, _natural(name)

    return {i + 1: s for i, s in enumerate(sorted(set(map(str, subjects)), key=key))}


def add_options(parser) -> None:
    parser.add_argument("--folds", type=int, nargs="+", default=list(PAPER_FOLDS), metavar="K",
                        help=f"fold numbers of the authors' code to analyse (default the paper's {list(PAPER_FOLDS)})")


def fold_attention(run_dir: Path, recipe, data, fold_label: str, subject: str, size: int):
    """Per-clip sparseness of ``subject``'s clips under its fold model; ``(table, maps)``.

    ``maps``: ``{clip: (spatial, self_map)}`` of :func:`~mer_keras.evaluation.attention.figure5_maps`.
    """
    import keras

    from mer_keras.evaluation.attention import attention_maps, figure5_maps, sparseness
    from mer_keras.training import FoldStore, fold_name
    from mer_keras.training.loso import apply_normalisation, build_model

    store = FoldStore(run_dir)
    weights = store.weights_path(fold_name(subject))
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing (the fold was trained without save_weights); delete "
                                f"{weights.parent} and rerun")
    done = json.loads((store.fold_dir(fold_name(subject)) / "done.json").read_text())
    stats = (done.get("extra") or {}).get("normalisation")
    stats = None if stats is None else (np.asarray(stats["mean"], np.float32), np.asarray(stats["std"], np.float32))
    test = np.flatnonzero(data.subjects == subject)
    keras.backend.clear_session()
    model = build_model(recipe, data.sample_shape, data.n_classes)
    model.load_weights(weights)
    maps = attention_maps(model, apply_normalisation(data.x[test], stats))
    spatial, self_map = figure5_maps(maps, size)
    spa, sel = sparseness(spatial), sparseness(self_map)
    table = pd.DataFrame({"fold": fold_label, "subject": subject, "clip": data.clips[test],
                          "label_id": data.y[test], "spatial_soft_0.01": spa["soft"], "spatial_hoyer": spa["hoyer"],
                          "self_soft_0.01": sel["soft"], "self_hoyer": sel["hoyer"]})
    del model
    keras.backend.clear_session()
    return table, {str(c): (spatial[i], self_map[i]) for i, c in enumerate(data.clips[test])}


def save_figure(out: Path, cache: Path, subject: str, clip: str, fold_label: str, maps) -> Path:
    """Fig. 5 of one clip: ``fig5_attention_maps.png`` and its arrays ``fig5_maps.npz``."""
    from mer_keras.evaluation.attention import plot_attention_maps
    from mer_keras.preprocess.cache import PreparedCache

    prepared = PreparedCache(cache)
    table = prepared.manifest
    dataset, _, name = subject.partition("/")
    hit = table[(table["dataset"] == dataset) & (table["subject"].astype(str) == name) & (table["clip"].astype(str) == clip)]
    arrays = prepared.load(hit["key"].iloc[0])
    spatial, self_map = maps
    title = f"{fold_label} model, clip {subject}/{clip} ({hit['label'].iloc[0]})"
    fig = plot_attention_maps(arrays["apex"], arrays.get("flow_image"), spatial, self_map, title=title)
    path = out / "fig5_attention_maps.png"
    fig.savefig(path, dpi=150)
    extra = {} if arrays.get("flow_image") is None else {"flow_image": arrays["flow_image"]}
    np.savez_compressed(out / "fig5_maps.npz", apex=arrays["apex"], spatial=spatial, self_map=self_map,
                        title=np.array(title), **extra)
    return path


def paper_means() -> dict[str, float]:
    paper = paper_results.load(PAPER, "5")
    return {m: float(paper.loc[paper["metric"] == m, "value"].mean()) for m in METRICS}


def main(argv=None) -> int:
    args = ex.parse_args(argv, __doc__.split("\n\n")[0], script=SCRIPT, extra=add_options)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = bool(args.quick)
    spec = DATA.at(DATA.quick_size if quick else DATA.size)
    recipe = ex.row_recipe(MODEL_ROW, quick=quick, size=spec.size)
    labels = [f"fold {k}" for k in dict.fromkeys(args.folds)]
    status: dict[str, str] = {}
    values: dict[tuple[str, str, str], float] = {}
    rows_info: dict[str, dict] = {}
    notes: list[str] = []
    run: dict = {"recipe": recipe.name, "data": spec.key, "input_size": spec.size}

    # the data: a user cache that fits, or the synthetic composite
    cache = None
    if args.data:
        from mer_keras.preprocess.cache import PreparedCache

        cache, reason = ex.match_cache(spec, recipe, [PreparedCache(p) for p in args.data])
        if cache is None:
            status.update({label: f"skipped: {reason}" for label in labels})
        elif reason:
            notes.append(reason)
    else:
        cache = ex.synthetic_cache(spec, args.data_dir, quick=quick, seed=args.seed)
        notes.append("data: synthetic composite (not the licensed datasets); pass --data for real numbers.")

    per_clip = pd.DataFrame()
    if cache is not None:
        from mer_keras.preprocess.cache import PreparedCache
        from mer_keras.training import ConfigMismatchError, LOSODataset, run_loso

        data = LOSODataset.from_cache(cache, input=recipe.input)
        numbers = official_fold_numbers(data.subject_list())
        chosen = {}
        for k, label in zip(dict.fromkeys(args.folds), labels):
            if k in numbers:
                chosen[label] = numbers[k]
            else:
                status[label] = f"not in this data ({len(numbers)} subjects, folds 1..{len(numbers)})"
        if quick:
            for label in list(chosen)[ex.QUICK_FOLDS:]:
                status[label] = "not run in --quick (rerun without --quick)"
            chosen = dict(list(chosen.items())[:ex.QUICK_FOLDS])
        for label, subject in chosen.items():
            rows_info[label] = {"subject": subject, "n_test": int((data.subjects == subject).sum())}
        run_dir = out / ("off-tanet-ours" + ("-quick" if quick else ""))
        run["run_dir"] = str(run_dir)
        subjects = list(chosen.values())
        heavy = False
        if subjects and not quick and not ex._finished(run_dir, recipe, subjects):
            clips = ex.clip_table(PreparedCache(cache).manifest)
            estimate = ex.estimate_row(recipe, clips, subjects, cache_file=out / "step_timings.json", cache_path=cache)
            run.update(estimate_s=estimate.seconds, estimate=estimate.detail)
            print(f"[estimate] {len(subjects)} fold(s): {estimate.text} ({estimate.detail})")
            heavy = estimate.seconds is not None and estimate.seconds > 60 * args.max_minutes
            if args.dry_run or (heavy and not args.yes):
                why = ("not run (--dry-run)" if args.dry_run else
                       f"skipped: estimated {estimate.text} > {args.max_minutes:g} min on this machine (rerun with --yes)")
                status.update({label: why for label in chosen})
                subjects = []
        if subjects:
            print(f"[run] Off-TANet folds {', '.join(chosen)} ({', '.join(subjects)}): recipe {recipe.name!r}, "
                  f"{spec.size} px, weights kept, into {run_dir}")
            try:
                report = run_loso(data, recipe, run_dir, subjects=subjects, seed=args.seed, device=args.device,
                                  executor=args.executor, progress=not args.no_progress,
                                  overwrite=bool(args.overwrite), save_weights=True)
            except ConfigMismatchError as exc:
                raise SystemExit(f"{run_dir} holds a run of another config ({exc}); use another --out, delete the "
                                 "folder, or pass --overwrite") from None
            trained = report.config["run"]["trained_folds"]
            run.update(trained_folds=trained, reused_folds=report.config["run"]["reused_folds"])
            tables, figure_maps = [], {}
            from mer_keras.training import fold_name

            for label, subject in chosen.items():
                try:
                    table, maps = fold_attention(run_dir, recipe, data, label, subject, spec.size)
                except FileNotFoundError as exc:
                    status[label] = f"failed: {exc}"
                    rows_info[label]["status"] = "failed"
                    continue
                tables.append(table)
                figure_maps[label] = maps
                values[(label, "-", "test_set_size")] = float(len(table))
                for metric in METRICS[1:]:
                    values[(label, "-", metric)] = float(table[metric].mean())
                how = "trained" if fold_name(subject) in trained else "reused"
                status[label] = f"ran: {subject}, fold model {how}"
                rows_info[label]["status"] = "ran"
            if tables:
                per_clip = pd.concat(tables, ignore_index=True)
                per_clip.to_csv(out / "attention_per_clip.csv", index=False)
                fold_means = pd.DataFrame([{m: values[(label, "-", m)] for m in METRICS}
                                           for label in figure_maps])
                for metric in METRICS:
                    values[(MEAN_ROW, "-", metric)] = float(fold_means[metric].mean())
                status[MEAN_ROW] = f"mean over {len(figure_maps)} fold(s) here"
                # Fig. 5: the paper's clip when present, else the first test clip of the first fold
                pick = next(((label, FIG5_CLIP[1]) for label, s in chosen.items()
                             if s == FIG5_CLIP[0] and label in figure_maps and FIG5_CLIP[1] in figure_maps[label]), None)
                if pick is None:
                    label = next(iter(figure_maps))
                    pick = (label, next(iter(figure_maps[label])))
                    notes.append(f"Fig. 5: clip {chosen[label]}/{pick[1]} (the paper's EP01-5 of CASME sub01 is not "
                                 "in this data).")
                path = save_figure(out, cache, chosen[pick[0]], pick[1], pick[0], figure_maps[pick[0]][pick[1]])
                run["figure"] = str(path)
    if quick:
        notes.append(f"--quick: fold 1 only, {ex.QUICK_EPOCHS} epoch, {spec.size} px, tiny synthetic composite "
                     f"(maps resized to {spec.size} px: Soft_0.01 counts among {spec.size ** 2} entries, not the "
                     "paper's 12,544); the numbers only show that the pipeline runs.")

    order = labels + [MEAN_ROW]
    status.setdefault(MEAN_ROW, "no fold analysed")
    results = ex.assemble(TABLE, order, values, status, include_cited=False)
    means = paper_means()
    is_mean = results["row"] == MEAN_ROW
    results.loc[is_mean, "paper"] = results.loc[is_mean, "metric"].map(means).astype(object)
    results.loc[is_mean, "kind"] = MEAN_KIND
    runs = {"table": f"{PAPER} Table 5", "quick": quick, "run": run, "rows": rows_info,
            "wall_s": round(time.perf_counter() - start, 1)}
    ex.write_results(TABLE, results, out, notes, runs=runs)
    print(f"results: {out / 'results.csv'}, {out / 'results.md'}"
          + (f", {run['figure']}" if "figure" in run else "") + f" ({time.perf_counter() - start:.1f} s)")
    return 1 if any(v.get("status") == "failed" for v in rows_info.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
