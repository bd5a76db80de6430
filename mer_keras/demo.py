"""The demo behind ``make demo`` / ``mer-keras demo``: the whole data path on synthetic data.

1. write a synthetic MEGC2019-style composite (CASME II, SAMM, SMIC-HS twins) in the real
   on-disk layouts, from the face photos that ship inside the dependencies;
2. read it back with the real readers and the MEGC2019 composite rules;
3. prepare it (alignment, masks, TV-L1 flow and strain at the Off-TANet size) into a
   resumable cache, and print what was prepared, fixed and skipped;
4. run leave-one-subject-out with the Off-TANet recipe (fewer epochs than the paper's
   201, for a CPU) and print the report: pooled UF1/UAR, per-subject means, per source
   dataset, and the confusion-matrix figure's path.
"""

from __future__ import annotations

import time
from pathlib import Path


def run_demo(
    out="demo_out",
    *,
    subjects_per_dataset: int = 4,
    clips_per_subject: int = 6,
    workers=None,
    seed: int = 0,
    epochs: int = 40,
):
    from mer_keras.data import megc2019
    from mer_keras.data.manifest import summarize
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import PreparedCache, prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    out = Path(out)
    t0 = time.perf_counter()
    roots = write_composite(
        "megc2019", out / "data", subjects_per_dataset=subjects_per_dataset, clips_per_subject=clips_per_subject, seed=seed
    )
    t_synth = time.perf_counter() - t0
    print(f"[1/4] synthetic MEGC2019-style composite written to {out / 'data'} in {t_synth:.1f} s")

    manifest = megc2019(**{name: roots[name] for name in ("casme2", "samm", "smic")})
    print(f"[2/4] read back by the real readers: {len(manifest)} clips")
    print(summarize(manifest).to_string())

    config = PreprocessConfig.preset("off_tanet")
    result = prepare(manifest, out / "cache", config, workers=workers)
    print("[3/4] " + result.summary())

    cache = PreparedCache(out / "cache")
    flows = cache.stack("flow")
    magnitude = (flows**2).sum(-1) ** 0.5
    per_class = cache.manifest.assign(mean_flow_px=magnitude.mean(axis=(1, 2)))
    print("mean TV-L1 flow magnitude at the apex (px, 112x112 crops), by class:")
    print(per_class.groupby("label")["mean_flow_px"].describe()[["count", "mean", "std"]].round(3).to_string())

    from mer_keras.training import run_loso

    print(f"[4/4] leave-one-subject-out, Off-TANet recipe, {epochs} epochs per fold ({cache.manifest['subject'].nunique()} folds)")
    report = run_loso(out / "cache", recipe="off_tanet", out_dir=out / "loso_off_tanet", epochs=epochs, seed=seed)
    m = report.metrics
    print(f"pooled: UF1 {m['uf1']:.4f}  UAR {m['uar']:.4f}  accuracy {m['accuracy']:.4f}; "
          f"per-subject mean: UF1 {m['uf1_subject_mean']:.4f}  UAR {m['uar_subject_mean']:.4f}")
    print(report.per_dataset.round(4).to_string())
    print(f"confusion matrix: {out / 'loso_off_tanet' / 'confusion_matrix.png'}")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return report
