"""Two-stage diagnosis: one row of the table in docs/benchmarks.md ("Two-stage diagnosis") per command.

Writes a synthetic MEGC2019-style composite with the given shading, subject count and
identity variety, prepares it with the ``shufflenet`` preset (onset..apex frames kept;
masked unless ``--no-mask``) at ``--size``, and measures pooled LOSO UF1 of:

* ``probe``: linear probes on single apex frames and on flow images, all folds
  (:func:`mer_keras.demo.frame_vs_flow_probe`);
* ``frames``: the two-stage recipe ``shufflenet_svm_corrected`` on the paper's frames;
* ``scratch``: the same with no pre-training (``pretrain=False``), stage 2 from scratch;
* ``changes``: ``shufflenet_svm_changes`` (each frame's change since the onset).

Networks: width 0.5x, 5 + 5 epochs (the demo's settings) on ``--folds`` left-out subjects
taken round-robin over the datasets (default 3: ``casme2/sub01``, ``samm/006``,
``smic/s01``); each fold trains on every other subject. Data, caches and runs are kept
under ``--out`` and reused (a rerun resumes); the row is printed as markdown and appended
to ``--out/diagnosis.jsonl``.

    python experiments/00f_two_stage_diagnosis.py --strength 0.15 --subjects 4 --size 64
    python experiments/00f_two_stage_diagnosis.py --strength 0.15 --subjects 4 --identity-variety
    python experiments/00f_two_stage_diagnosis.py --strength 0.5 --subjects 4 --size 112 --runs probe changes
"""

import argparse
import json
import time
from pathlib import Path

RUNS = {"frames": "shufflenet_svm_corrected", "scratch": "shufflenet_svm_corrected", "changes": "shufflenet_svm_changes"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=0.15, help="appearance strength of the expressions")
    parser.add_argument("--subjects", type=int, default=4, help="subjects per dataset (x3 in all)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--no-mask", action="store_true")
    parser.add_argument("--identity-variety", action="store_true")
    parser.add_argument("--runs", nargs="+", choices=["probe", *RUNS], default=["probe", "frames", "changes"])
    parser.add_argument("--folds", type=int, default=3, help="left-out subjects of the network runs (0: all)")
    parser.add_argument("--out", default="diagnosis_out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mer_keras.data import megc2019
    from mer_keras.data.synthetic import write_composite
    from mer_keras.demo import frame_vs_flow_probe
    from mer_keras.evaluation.experiments import pick_subjects
    from mer_keras.preprocess.masks import MaskConfig
    from mer_keras.preprocess.cache import PreparedCache, prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.training import get_recipe, run_loso

    out = Path(args.out)
    data_tag = f"S{args.strength}_n{args.subjects}{'_variety' if args.identity_variety else ''}_seed{args.seed}"
    tag = f"{data_tag}_{args.size}px{'_unmasked' if args.no_mask else ''}"
    data_dir = out / "data" / data_tag
    if not (data_dir / ".complete").is_file():
        roots = write_composite("megc2019", data_dir, subjects_per_dataset=args.subjects, clips_per_subject=6,
                                n_frames=15, seed=args.seed, appearance_strength=args.strength,
                                identity_variety=args.identity_variety)
        (data_dir / ".complete").write_text("\n".join(f"{k}={v}" for k, v in roots.items()))
    roots = dict(line.split("=", 1) for line in (data_dir / ".complete").read_text().splitlines())
    config = PreprocessConfig.preset("shufflenet", size=args.size, keep="onset_to_apex",
                                     **({"mask": MaskConfig.none()} if args.no_mask else {}))
    cache_dir = out / "cache" / tag
    prepare(megc2019(**roots), cache_dir, config, progress=False)

    row = {"data": tag}
    if "probe" in args.runs:
        probe = frame_vs_flow_probe(cache_dir)
        row.update(probe_apex=round(probe["apex"], 3), probe_flow=round(probe["flow_image"], 3))
    subjects = sorted({f"{d}/{s}" for d, s in PreparedCache(cache_dir).manifest[["dataset", "subject"]].values})
    chosen = pick_subjects(subjects, args.folds or None)
    for run in [r for r in args.runs if r in RUNS]:
        recipe = RUNS[run]
        started = time.perf_counter()
        report = run_loso(cache_dir, recipe=recipe, out_dir=out / "runs" / f"{tag}_{run}", subjects=chosen,
                          seed=args.seed, progress=False, input_size=args.size, epochs=5, pretrain_epochs=5,
                          model_kwargs={**get_recipe(recipe).model_kwargs, "width_multiplier": 0.5},
                          **({"pretrain": False} if run == "scratch" else {}))
        row[run] = round(report.metrics["uf1"], 3)
        row[f"{run}_s"] = round(time.perf_counter() - started)
    if any(r in RUNS for r in args.runs):
        row["folds"] = len(chosen) if chosen else len(subjects)
    print("| " + " | ".join(row) + " |\n|" + "---|" * len(row) + "\n| " + " | ".join(map(str, row.values())) + " |")
    with (out / "diagnosis.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
