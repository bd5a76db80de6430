"""The Off-TANet ablation and attention scripts (experiments/05-07) and the attention-map notebook.

Each script runs once with ``--quick`` as a subprocess (the command CI and users type) and
once more in-process into the same folder, which must reuse every finished fold. The three
scripts share one synthetic data folder (``--data-dir``); the notebook reads the output of
``07_off_tanet_table5_attention.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_keras.evaluation import experiments as ex
from tests.experiment_scripts import (
    ROOT, check_markdown, fold_counts, load_script, quick_argv, read_results, run_quick)

pytestmark = [pytest.mark.xdist_group("experiments_off_tanet"), pytest.mark.slow]

PAPER = "zhang2021-off-tanet"


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One folder for the three scripts' synthetic data and outputs."""
    return tmp_path_factory.mktemp("experiments_off_tanet")


def run_script(shared: Path, key: str) -> Path:
    run_quick(shared, key)
    return shared / key


def check_table(key: str, shared: Path) -> tuple[pd.DataFrame, list[str]]:
    """Run a TableSpec script (05, 06) with --quick, check ours vs paper, rerun in-process: every fold reused."""
    out = run_script(shared, key)
    module = load_script(key)
    labels = [r.label for r in module.TABLE.rows]
    res = read_results(out)
    assert list(dict.fromkeys(res["row"])) == labels  # exactly the paper's rows, in its order
    check_markdown(out, module.TABLE, labels)
    wide = res.pivot(index="row", columns="metric", values="ours")
    quick = [r.label for r in module.TABLE.rows if r.quick]
    assert "Off-TANet(Ours)" not in quick  # the full model's quick run is 04's Off-TANet row
    assert wide.loc[quick, ["uar", "uf1"]].stack().between(0, 1).all()
    assert wide.loc[quick, ["uar", "uf1"]].notna().all().all() and wide.loc["Off-TANet(Ours)", ["uar", "uf1"]].isna().all()
    status = res.groupby("row")["status"].first()
    assert all(status[r] == "not run in --quick (rerun without --quick)" for r in labels if r not in quick)
    paper = res[res["metric"] == "uar"].set_index("row")["paper"].astype(float)
    assert paper["Off-TANet(Ours)"] == pytest.approx(0.7315)
    first = fold_counts(out)
    assert set(first) == set(quick) and all(len(t) == 1 and not r for t, r in first.values()), first

    assert ex.main(module.TABLE, quick_argv(shared, key), script=key) == 0
    again = fold_counts(out)
    assert all(not t and len(r) == 1 for t, r in again.values()), again
    pd.testing.assert_frame_equal(read_results(out).drop(columns="status"), res.drop(columns="status"))
    return res, labels, quick


# ----------------------------------------------------------------------------- 05, 06


def test_05_table3_quick_then_reuse(shared):
    res, labels, quick = check_table("05", shared)
    assert quick == labels[:-1]
    assert labels == ["Off-TANet + no optical flow features", "Off-TANet + no optical strain",
                      "Off-TANet + all residual block attention-enhanced", "Off-TANet(Ours)"]
    paper = res[res["metric"] == "uf1"].set_index("row")["paper"].astype(float)
    assert paper["Off-TANet + no optical strain"] == pytest.approx(0.7078)
    # the inputs the two input ablations trained on: grey onset/apex in [0, 1], and (u, v) without strain
    runs = json.loads((shared / "05" / "runs.json").read_text())["rows"]
    config = {label: json.loads((Path(runs[label]["run_dir"]) / "run.json").read_text())["config"]
              for label in labels[:-1]}
    frames, uv, enhanced = (config[label] for label in labels[:-1])
    assert frames["recipe"]["input"] == "onset_apex" and frames["data"]["sample_shape"] == [32, 32, 2]
    assert frames["data"]["dtype"] == "float32"
    assert uv["recipe"]["input"] == "flow_stack" and uv["data"]["sample_shape"] == [32, 32, 2]
    assert enhanced["data"]["sample_shape"] == [32, 32, 3]
    assert enhanced["recipe"]["model_kwargs"] == {"block": "triplet", "enhance_all_blocks": True}
    # the full-size recipes keep the ablations' channel counts (the runner sets only the size)
    rows = {r.label: r for r in load_script("05").TABLE.rows}
    assert ex.row_recipe(rows[labels[0]], quick=False, size=112).input_size == (112, 112, 2)
    assert ex.row_recipe(rows[labels[3]], quick=False, size=112).input_size == (112, 112, 3)
    module = load_script("05")
    from mer_keras.training import LOSODataset

    data = LOSODataset.from_arrays(np.full((2, 4, 4, 2), 255, np.uint8), np.array([0, 1]), np.array(["a", "b"]))
    assert module.onset_apex_unit_range(data).x.max() == 1.0
    assert module.flow_without_strain(LOSODataset.from_arrays(np.ones((2, 4, 4, 3), np.float32), np.array([0, 1]),
                                                              np.array(["a", "b"]))).x.shape == (2, 4, 4, 2)


def test_06_table4_quick_then_reuse(shared):
    res, labels, quick = check_table("06", shared)
    assert labels == ["No enhancement", "+ CBAM", "+ multi-head self-attention", "+ bottleneck Transformer",
                      "Off-TANet(Ours)"]
    assert quick == ["No enhancement", "+ multi-head self-attention", "+ bottleneck Transformer"]
    params = res[res["metric"] == "params"].set_index("row")
    assert params.loc[quick, "ours"].nunique() == len(quick) and (params.loc[quick, "ours"] > 0).all()
    assert params.drop(index=quick)["ours"].isna().all()  # counted for the rows that run
    assert set(params["paper"]) == {"not in text"}  # not a column of the paper's table
    paper = res[res["metric"] == "uar"].set_index("row")["paper"].astype(float)
    assert paper["+ bottleneck Transformer"] == pytest.approx(0.7045)
    runs = json.loads((shared / "06" / "runs.json").read_text())["rows"]
    blocks = [json.loads((Path(runs[label]["run_dir"]) / "run.json").read_text())["config"]["recipe"]["model_kwargs"]
              for label in quick]
    assert [b["block"] for b in blocks] == ["residual", "self_attention", "bottleneck_transformer"]
    rows = {r.label: r for r in load_script("06").TABLE.rows}
    assert [ex.row_recipe(rows[label], quick=False, size=112).model_kwargs["block"] for label in labels] == [
        "residual", "cbam", "self_attention", "bottleneck_transformer", "triplet"]


# ----------------------------------------------------------------------------- 07 and the notebook


@pytest.fixture(scope="module")
def table5_quick(shared) -> Path:
    """``experiments/07_off_tanet_table5_attention.py --quick``: fold 1's model, its attention maps, Fig. 5."""
    return run_script(shared, "07")


def test_official_fold_numbers_match_the_papers_folds():
    module = load_script("07")
    subjects = ([f"casme/sub{i:02d}" for i in (1, 2, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19)]
                + [f"casme_sq/s{i}" for i in (16, 24, 25, 27, 31, 32, 35, 37, 38)]
                + [f"casme2/sub{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 21,
                                                  22, 23, 24, 25, 26)])
    numbers = module.official_fold_numbers(reversed(subjects))
    assert len(numbers) == 49
    assert [numbers[k] for k in module.PAPER_FOLDS] == ["casme/sub01", "casme/sub06", "casme/sub08", "casme2/sub17"]


def test_07_table5_quick_then_reuse(shared, table5_quick):
    out = table5_quick
    module = load_script("07")
    res = read_results(out)
    rows = ["fold 1", "fold 4", "fold 6", "fold 41", "mean"]
    assert list(dict.fromkeys(res["row"])) == rows
    check_markdown(out, module.TABLE, rows)
    wide = res.pivot(index="row", columns="metric", values="ours")
    fold1 = wide.loc["fold 1"]
    assert fold1["test_set_size"] == 3  # the synthetic casme/sub01
    assert fold1["spatial_soft_0.01"] == 0 and 0 <= fold1["spatial_hoyer"] < fold1["self_hoyer"] <= 1
    assert 0 <= fold1["self_soft_0.01"] <= 32 * 32
    pd.testing.assert_series_equal(wide.loc["mean"], fold1, check_names=False)  # one fold under --quick
    paper = res.pivot(index="row", columns="metric", values="paper")
    assert float(paper.loc["fold 1", "self_soft_0.01"]) == 1470 and float(paper.loc["fold 41", "test_set_size"]) == 31
    assert float(paper.loc["mean", "self_hoyer"]) == pytest.approx((0.1195 + 0.1768 + 0.1196 + 0.1313) / 4)
    assert wide.loc[["fold 4", "fold 6", "fold 41"]].isna().all().all()
    status = res.groupby("row")["status"].first()
    assert status["fold 41"].startswith("not in this data") and status["fold 4"].startswith("not run in --quick")
    per_clip = pd.read_csv(out / "attention_per_clip.csv")
    assert len(per_clip) == 3 and set(per_clip["fold"]) == {"fold 1"}
    assert (out / "fig5_attention_maps.png").stat().st_size > 1000
    with np.load(out / "fig5_maps.npz") as fig5:
        assert fig5["spatial"].shape == fig5["self_map"].shape == fig5["apex"].shape == (32, 32)
        assert "EP01_5" in str(fig5["title"])  # the paper's Fig. 5 clip (the synthetic twin has it)
    weights = out / "off-tanet-ours-quick" / "folds" / "casme__sub01" / "weights.weights.h5"
    assert weights.is_file()
    first = json.loads((out / "runs.json").read_text())["run"]
    assert first["trained_folds"] == ["casme__sub01"] and first["reused_folds"] == []

    assert module.main(quick_argv(shared, "07")) == 0  # rerun: the fold model is reused, the maps recomputed
    again = json.loads((out / "runs.json").read_text())["run"]
    assert again["trained_folds"] == [] and again["reused_folds"] == ["casme__sub01"]
    pd.testing.assert_frame_equal(read_results(out).drop(columns="status"), res.drop(columns="status"))


def test_attention_notebook_runs_on_the_quick_output(table5_quick, monkeypatch):
    import nbclient
    import nbformat

    path = ROOT / "notebooks" / "attention_maps.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "07_off_tanet_table5_attention.py" in nb.cells[0].source
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert ('RESULTS = Path(os.environ.get("MER_KERAS_RESULTS", "experiments_out/07_off_tanet_table5_attention"))'
            in first_code.source)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    monkeypatch.setenv("MER_KERAS_RESULTS", str(table5_quick))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    assert sum("image/png" in out.get("data", {}) for out in outputs) >= 2  # Fig. 5 and the per-fold bars
    assert str(table5_quick) in "".join(str(out.get("data", {}).get("text/plain", "")) for out in outputs)
