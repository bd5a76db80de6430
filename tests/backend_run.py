"""Run tiny LOSO trainings of each recipe kind on one Keras backend; print a JSON summary (see test_backends.py).

    python tests/backend_run.py BACKEND OUT_DIR [TWO_STAGE_CACHE] [--vectorised]

Run as a subprocess: the backend is fixed when Keras is first imported.
"""

import json
import os
import sys
from pathlib import Path


def _arrays(size: int = 28, subjects=("s1", "s2", "s3"), per_subject: int = 8, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(subjects) * per_subject
    y = np.tile(np.arange(3), n // 3 + 1)[:n]
    x = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    x[..., 0] += (y[:, None, None] - 1).astype(np.float32)
    return x, y, np.repeat(np.asarray(subjects), per_subject)


def _form(out: Path, report) -> dict:
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "weights" not in p.name)
    folds = sorted({p.parts[1] for p in (Path(f) for f in files) if p.parts[0] == "folds"})
    fold_files = sorted({"/".join(Path(f).parts[2:]) for f in files if f.startswith("folds/")})
    run = report.config["run"]
    return {"top_files": sorted(f for f in files if not f.startswith("folds/")), "fold_files": fold_files,
            "folds": folds, "report_keys": sorted(json.loads((out / "report.json").read_text())),
            "backend": run["backend"], "uf1": float(report["uf1"])}


def main():
    backend, out = sys.argv[1], Path(sys.argv[2])
    cache = sys.argv[3] if len(sys.argv) > 3 and not sys.argv[3].startswith("--") else None
    os.environ["KERAS_BACKEND"] = backend
    import numpy as np

    from mer_keras.training import get_recipe, get_trainer, loso_folds, run_loso, seed_for

    summary: dict = {}
    x, y, subjects = _arrays()
    report = run_loso((x, y, subjects), "ststnet", out / "single", epochs=2, batch_size=8, lr=1e-3, progress=False)
    summary["single"] = _form(out / "single", report)
    flow_x, flow_y, flow_subjects = _arrays(size=32, seed=1)
    report = run_loso((flow_x, flow_y, flow_subjects), "hoof_svm", out / "handcrafted", progress=False)
    summary["handcrafted"] = _form(out / "handcrafted", report)
    if cache is not None:
        report = run_loso(cache, "shufflenet_svm_corrected", out / "two_stage", progress=False, input_size=48,
                          epochs=1, pretrain_epochs=1, batch_size=16, pretrain_batch_size=16,
                          model_kwargs={"activation": "leaky_relu", "l2": 5e-4, "dropout": 0.5,
                                        "width_multiplier": 0.5},
                          subjects=[loso_folds_of(cache)[0]])
        summary["two_stage"] = _form(out / "two_stage", report)
    if "--vectorised" in sys.argv:
        recipes = {"plain": get_recipe("ststnet").replace(epochs=3, batch_size=8, lr=1e-2),
                   "normalised_oversampled": get_recipe("ststnet").replace(
                       epochs=3, batch_size=8, lr=1e-2, normalisation="per_channel", class_balancing="oversample",
                       input="flow_stack")}
        ragged = _arrays(subjects=("a", "b", "c", "d"), per_subject=6, seed=2)
        keep = np.r_[0:2, 6:24]  # subject a has 2 samples: the folds have different numbers of batches
        data = tuple(v[keep] for v in ragged)
        summary["vectorised"] = {}
        for name, recipe in recipes.items():
            serial_trainer, vector_trainer = get_trainer(recipe), get_trainer(recipe)
            prepared, prepared_v = serial_trainer.prepare(data), vector_trainer.prepare(data)
            folds = loso_folds(prepared.data)
            seeds = {f.name: seed_for(0, f.name) for f in folds}
            serial = {f.name: serial_trainer.fit_predict(prepared, f, seeds[f.name]) for f in folds}
            together = {f.name: (m, s, h, i) for f, m, s, h, i in vector_trainer.fit_predict_many(prepared_v, folds,
                                                                                                     seeds)}
            summary["vectorised"][name] = {
                "max_abs_diff": max(float(np.abs(serial[k][1] - together[k][1]).max()) for k in serial),
                "loss_diff": max(float(np.abs(np.subtract(serial[k][2]["loss"], together[k][2]["loss"])).max())
                                 for k in serial),
                "n_folds": len(folds), "folds_per_step": together[folds[0].name][3]["vectorised_folds"],
                "n_train_balanced": [together[f.name][3]["n_train_balanced"] for f in folds]}
    summary["modules"] = {name: name in sys.modules for name in ("tensorflow", "dlib")}
    print("SUMMARY " + json.dumps(summary))


def loso_folds_of(cache):
    from mer_keras.preprocess.cache import PreparedCache

    manifest = PreparedCache(cache).manifest
    from mer_keras.data.composites import fold_groups

    return sorted(fold_groups(manifest[manifest["label_id"] >= 0]).unique().tolist())


if __name__ == "__main__":
    main()
