"""Shuffled labels score at chance, true labels far above it: the synthetic data are learnable
and the LOSO engine does not leak.

With the labels permuted across clips, the only way a model can score above chance on a
left-out subject is to have seen that subject's clips (with their permuted labels) in
training, or anything else fitted on them; the same run with the true labels shows that
the data carry a learnable signal, so a chance score is not just a model that learns nothing.

Data: a synthetic MEGC2019-style composite (2 subjects per dataset x 14 clips, 320 x 240
frames, 7 frames per clip; 66 labelled clips after the composite's rules, 6 LOSO folds),
prepared with the aligned Off-TANet preset (``off_tanet_aligned``) at 56 px (float
``(u, v, strain)``) and mean-pooled 2 x 2 in memory to 28 x 28 x 3 for the STSTNet network
(1,683 parameters, the cheapest model to train). TV-L1 computed directly at 28 px is noisier
(pooled UF1 about 0.6 in this setting, measured while writing this test), hence the pooling.
Recipe: ``ststnet`` reading the float input with per-channel normalisation (fitted on the
training subjects only), Adam 5e-3, 15 epochs: a short test setting, not the paper's.

Chance threshold: the null distribution of pooled UF1 for predictions that carry no
information but have the right class counts, i.e. a random permutation of the true labels
used as predictions (20,000 draws). The shuffled run must score below its 99th percentile,
the true run above it by at least ``MARGIN``. Everything is seeded, so the outcome is
deterministic; measured when writing the test: true UF1 0.91, shuffled 0.32, 99th
percentile about 0.47.
"""

import numpy as np
import pytest

from mer_keras.evaluation.metrics import uf1
from mer_keras.training import LOSODataset, get_recipe, run_loso

MARGIN = 0.2
N_NULL = 20_000
RECIPE = get_recipe("ststnet").replace(
    name="ststnet-chance-test", input="flow_stack", input_size=(28, 28, 3), normalisation="per_channel",
    lr=5e-3, epochs=15)


def null_uf1(y: np.ndarray, n: int = N_NULL, seed: int = 0, n_classes: int = 3) -> np.ndarray:
    """Pooled UF1 of ``n`` random permutations of ``y`` used as predictions of ``y``.

    UF1 as :func:`mer_keras.evaluation.metrics.uf1` (mean F1 over the classes present in the
    truth or the predictions; a permutation has the same classes as ``y``).
    """
    y = np.asarray(y)
    preds = np.random.default_rng(seed).permuted(np.tile(y, (n, 1)), axis=1)
    f1 = []
    for c in range(n_classes):
        true, pred = (y == c)[None], preds == c
        tp, fp, fn = (true & pred).sum(1), (~true & pred).sum(1), (true & ~pred).sum(1)
        denom = 2 * tp + fp + fn
        f1.append(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan))
    return np.nanmean(np.stack(f1), axis=0)


def test_null_matches_the_package_uf1():
    y = np.array([0] * 7 + [1] * 4 + [2] * 5)
    values = null_uf1(y, n=50, seed=1)
    rng = np.random.default_rng(1)
    preds = rng.permuted(np.tile(y, (50, 1)), axis=1)
    assert np.allclose(values, [uf1(y, p, labels=(0, 1, 2)) for p in preds])
    assert 0.25 < np.median(null_uf1(y, n=2000)) < 0.45  # around 1/3 for three classes


@pytest.fixture(scope="module")
def flow_28(tmp_path_factory):
    """The composite described in the module docstring as an in-memory 28 x 28 x 3 float dataset."""
    from mer_keras.data import megc2019
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    root = tmp_path_factory.mktemp("chance")
    roots = write_composite("megc2019", root / "data", subjects_per_dataset=2, clips_per_subject=14,
                            frame_size=(320, 240), n_frames=7, seed=5)
    manifest = megc2019(**roots)
    manifest = manifest[manifest["label_id"] >= 0]
    prepare(manifest, root / "cache", PreprocessConfig.preset("off_tanet_aligned", size=56), workers=1, progress=False)
    ds = LOSODataset.from_cache(root / "cache", input="flow_stack")
    n, h, w, c = ds.x.shape
    x = ds.x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(np.float32)
    return LOSODataset(x=x, y=ds.y, subjects=ds.subjects, datasets=ds.datasets, clips=ds.clips)


def test_shuffled_labels_score_at_chance_true_labels_far_above(flow_28, tmp_path):
    data = flow_28
    assert len(data) >= 60 and len(data.subject_list()) == 6 and np.bincount(data.y).min() >= 10
    q99 = float(np.percentile(null_uf1(data.y), 99))

    shuffled_y = np.random.default_rng(0).permutation(data.y)  # same class counts, so the same null
    assert np.mean(shuffled_y == data.y) < 0.7
    shuffled = LOSODataset(x=data.x, y=shuffled_y, subjects=data.subjects, datasets=data.datasets, clips=data.clips)

    true_report = run_loso(data, RECIPE, tmp_path / "true", progress=False)
    shuffled_report = run_loso(shuffled, RECIPE, tmp_path / "shuffled", progress=False)
    print(f"pooled UF1: true labels {true_report['uf1']:.4f}, shuffled {shuffled_report['uf1']:.4f}; "
          f"null 99th percentile {q99:.4f} ({len(data)} clips)")
    assert true_report["n_clips"] == shuffled_report["n_clips"] == len(data)
    assert shuffled_report["uf1"] < q99
    assert true_report["uf1"] > q99 + MARGIN
