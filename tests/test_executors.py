"""Executors: the Ray executor trains the same folds to the same artefacts and numbers as the
in-process one, stores each fold as it finishes, and resumes."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mer_keras.training import get_recipe, run_loso
from mer_keras.training.executors import SavedWeights, execute_folds

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray instance for the module

QUICK = get_recipe("ststnet").quick(epochs=3)


def arrays(n_subjects=4, per_subject=4, seed=0):
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    y = np.arange(n) % 3
    x = rng.normal(0, 20, (n, 28, 28, 3)).astype(np.float32)
    x[..., 0] += 40.0 * (y[:, None, None] - 1)  # learnable: class shifts channel 0
    subjects = [f"set{s % 2}/s{s}" for s in range(n_subjects) for _ in range(per_subject)]
    return x, y, subjects


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_run_equals_inprocess_run(local_ray, tmp_path):
    data = arrays()
    local = run_loso(data, QUICK, tmp_path / "local", progress=False, save_weights=True)
    remote = run_loso(data, QUICK, tmp_path / "ray", progress=False, save_weights=True, executor="ray")

    folds_local = sorted(p.name for p in (tmp_path / "local" / "folds").iterdir())
    folds_ray = sorted(p.name for p in (tmp_path / "ray" / "folds").iterdir())
    assert folds_local == folds_ray and len(folds_ray) == 4
    for name in folds_ray:
        pl = pd.read_csv(tmp_path / "local" / "folds" / name / "predictions.csv")
        pr = pd.read_csv(tmp_path / "ray" / "folds" / name / "predictions.csv")
        assert list(pl["y_pred"]) == list(pr["y_pred"])
        scores = [c for c in pl.columns if c.startswith("score_")]
        np.testing.assert_allclose(pl[scores].to_numpy(), pr[scores].to_numpy(), atol=1e-5)
        assert (tmp_path / "ray" / "folds" / name / "weights.weights.h5").stat().st_size > 0
        done = json.loads((tmp_path / "ray" / "folds" / name / "done.json").read_text())
        assert "worker_pid" in done["extra"]
    assert remote.metrics["uf1"] == pytest.approx(local.metrics["uf1"])
    assert remote.metrics["uar"] == pytest.approx(local.metrics["uar"])
    run = json.loads((tmp_path / "ray" / "report.json").read_text())["config"]["run"]
    assert run["executor"] == "ray" and run["device"] == "cpu" and run["op_determinism"] is True
    # the training happened in worker processes, not here
    pids = {json.loads((tmp_path / "ray" / "folds" / n / "done.json").read_text())["extra"]["worker_pid"]
            for n in folds_ray}
    assert os.getpid() not in pids


def test_ray_run_resumes_finished_folds(local_ray, tmp_path):
    data = arrays(seed=1)
    first = run_loso(data, QUICK, tmp_path / "run", progress=False, executor="ray", subjects=["set0/s0", "set1/s1"])
    assert len(first.config["run"]["trained_folds"]) == 2
    second = run_loso(data, QUICK, tmp_path / "run", progress=False, executor="ray")
    run = second.config["run"]
    assert len(run["trained_folds"]) == 2 and len(run["reused_folds"]) == 2


def test_failing_fold_names_itself_and_keeps_finished_ones(local_ray, tmp_path):
    from mer_keras.training.folds import loso_folds
    from mer_keras.training.loso import as_dataset

    data = as_dataset(arrays(), QUICK)
    folds = loso_folds(data)
    bad = folds[-1].name

    def fold_fn(data, fold, recipe, seed, **kwargs):
        if fold.name == bad:
            raise ValueError("broken fold")
        return None, np.zeros((len(fold.test_index), 3)), {}, {}

    seen = []
    with pytest.raises(RuntimeError, match=bad.replace("/", ".")):
        for result in execute_folds(data, folds, QUICK, {f.name: 0 for f in folds}, fold_fn, executor="ray"):
            seen.append(result.fold.name)
    assert bad not in seen


def test_executor_arguments_are_checked():
    with pytest.raises(ValueError, match="executor must be one of"):
        execute_folds(None, [], QUICK, {}, None, executor="dask")
    with pytest.raises(ValueError, match="executor='ray' only"):
        execute_folds(None, [], QUICK, {}, None, cpus_per_fold=1)


def test_saved_weights_round_trip(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    saved = SavedWeights.from_model(model)
    saved.save_weights(tmp_path / "w.weights.h5")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_cli_ray_options_need_the_ray_executor(tmp_path, capsys):
    from mer_keras.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["loso", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--cpus-per-fold", "1"])
    assert exc.value.code == 2 and "--executor ray" in capsys.readouterr().err
