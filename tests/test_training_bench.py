"""The training-throughput benchmark uses the real protocol sizes and projects from measured folds."""

import numpy as np

from mer_keras.training import get_recipe
from mer_keras.training.bench import protocol_arrays, run_training_bench


def test_protocol_arrays_have_the_real_sizes():
    st = protocol_arrays(get_recipe("ststnet"))
    assert (len(st), len(st.subject_list()), st.sample_shape) == (442, 68, (28, 28, 3))
    assert np.bincount(st.y).tolist() == [250, 109, 83]
    off = protocol_arrays(get_recipe("off_tanet"))
    assert (len(off), len(off.subject_list()), off.sample_shape) == (294, 49, (112, 112, 3))
    assert np.bincount(off.y).tolist() == [194, 48, 52]


def test_bench_projects_the_full_loso_from_measured_folds():
    printed = []
    (row,) = run_training_bench(("ststnet",), epochs=2, folds=1, printer=printed.append)
    assert row.n_folds == 68 and row.folds_measured == 1 and row.epochs_measured == 2
    # 68 folds x 800 epochs at the measured per-epoch time, at least
    assert row.projected_min * 60 > 67 * 799 * row.ms_per_epoch / 1e3 * 0.95
    assert row.official_min == 63.0 and row.target_min == 20.0
    assert "official code" in printed[0] and "| ststnet | inprocess | 442/68 |" in printed[0]


def test_side_by_side_projects_both_loops_to_the_recipe_epochs(tmp_path):
    """Engine and PyTorch reference in one run, projected to all folds and the recipe's 800 epochs."""
    import pandas as pd
    import pytest

    from mer_keras.training.bench import side_by_side
    from mer_keras.training.reference_torch import torch_available

    if not torch_available():
        pytest.skip("PyTorch is not installed (dev extra)")
    printed = []
    rows = side_by_side(("ststnet",), loops=("serial", "reference"), epochs=3, serial_folds=1, reference_folds=1,
                        device="cpu", out_dir=tmp_path, runs_dir=tmp_path / "runs", printer=printed.append)
    assert [r["loop"] for r in rows] == ["serial", "reference (PyTorch)"]
    for row in rows:
        assert row["projected"] and row["folds_run"] == 1 and row["folds_total"] == 68
        assert row["epochs"] == 3 and row["full_loso_epochs"] == 800
        # the 797 epochs not run, for all 68 folds, at the measured steady epoch time
        assert row["full_loso_s"] >= 797 * row["epoch_all_folds_s"] > 0
        assert row["epoch_all_folds_s"] == pytest.approx(68 * row["ms_per_epoch"] / 1e3, rel=0.5)
    engine, reference = rows
    assert reference["speedup_vs_reference"] == 1.0
    assert engine["speedup_vs_reference"] == pytest.approx(reference["full_loso_s"] / engine["full_loso_s"], abs=0.01)
    table = pd.read_csv(tmp_path / "side_by_side.csv")
    assert list(table["full_loso_epochs"]) == [800, 800]
    assert "| ststnet | serial |" in (tmp_path / "side_by_side.md").read_text() and printed
