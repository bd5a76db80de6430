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
