"""The ARFNet and MobileViT experiment scripts (experiments/08-11) and the runner pieces they use.

Each script runs once with ``--quick`` as a subprocess (the command CI and users type); all
share one synthetic data folder (``--data-dir``). ``08`` is then rerun in-process into the
same folder and must reuse every finished fold. The MobileViT tables are images in our copy
of the paper: their paper column prints "not in text", except where the abstract has the
number (84.27 % accuracy, 35.4 ms per sample).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_keras.evaluation import experiments as ex
from tests.experiment_scripts import (
    check_markdown, fold_counts, load_script, quick_argv, read_results, run_quick)
from mer_keras.evaluation import paper_results

pytestmark = pytest.mark.xdist_group("experiments_arfnet_mobilevit")

NOT_IN_TEXT = paper_results.NOT_IN_TEXT


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One folder for every script's synthetic data and outputs."""
    return tmp_path_factory.mktemp("experiments_arfnet_mobilevit")


def run_script(shared: Path, key: str) -> pd.DataFrame:
    run_quick(shared, key)
    return read_results(shared / key)


def cell(res: pd.DataFrame, row: str, metric: str, dataset: str | None = None) -> pd.Series:
    hit = res[(res["row"] == row) & (res["metric"] == metric) & ((res["dataset"] == dataset) if dataset else True)]
    assert len(hit) == 1, (row, metric, dataset, len(hit))
    return hit.iloc[0]


def fold_history(run_dir: Path) -> dict:
    (path,) = run_dir.glob("folds/*/history.json")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------- the four scripts


@pytest.mark.slow
def test_08_arfnet_ablation_quick_then_reuse(shared):
    res = run_script(shared, "08")
    out = shared / "08"
    module = load_script("08")
    labels = [r.label for r in module.TABLE.rows]
    assert list(dict.fromkeys(res["row"])) == labels
    text = check_markdown(out, module.TABLE, labels)
    # the full row against the abstract (73.09 %, 72.25 %, 39 685), printed as in the paper
    assert float(cell(res, "ARFNet", "uar")["paper"]) == pytest.approx(0.7309)
    assert float(cell(res, "ARFNet", "uf1")["paper"]) == pytest.approx(0.7225)
    assert "| 73.09% |" in text and "| 72.25% |" in text
    params = res[res["metric"] == "params"].set_index("row")["ours"]
    assert params["ARFNet"] == float(cell(res, "ARFNet", "params")["paper"]) == 39685  # at 112 px also under --quick
    assert params["ARFNet without optical strain"] == 39685 - 8 * 7 * 7  # the stem reads (u, v) only
    assert params["ARFNet without self-attention"] == 53053 and params["ARFNet without relative position encoding"] == 39685
    ablations = res[res["row"] != "ARFNet"]
    assert set(ablations["paper"]) == {NOT_IN_TEXT} and set(ablations["kind"]) == {NOT_IN_TEXT}
    trained = ["ARFNet", "ARFNet without optical strain"]
    wide = res.pivot(index="row", columns="metric", values="ours")
    assert wide.loc[trained, ["uar", "uf1"]].stack().between(0, 1).all()
    assert wide.loc[["ARFNet without self-attention"], "uf1"].isna().all()
    assert set(fold_counts(out)) == set(trained)
    assert all(len(t) == 1 and not r for t, r in fold_counts(out).values())
    history = fold_history(out / "arfnet-without-optical-strain-quick")
    assert {"loss", "accuracy", "lr"} <= set(history) and len(history["loss"]) == ex.QUICK_EPOCHS

    # a rerun into the same folder trains nothing
    assert ex.main(module.TABLE, quick_argv(shared, "08"), script="08") == 0
    again = fold_counts(out)
    assert set(again) == set(trained) and all(not t and len(r) == 1 for t, r in again.values()), again
    rerun = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert set(rerun.loc[rerun["row"].isin(trained), "status"]) == {"reused: 1 finished fold(s)"}
    pd.testing.assert_series_equal(rerun["ours"], res["ours"])


@pytest.mark.slow
def test_09_table2_quick_transfer_with_learning_curves(shared):
    res = run_script(shared, "09")
    out = shared / "09"
    module = load_script("09")
    labels = [r.label for r in module.TABLE.rows]
    assert len(labels) == 12 and list(dict.fromkeys(res["row"])) == labels  # no placeholder row of the image table
    text = check_markdown(out, module.TABLE, labels)
    assert "(table is an image)" not in text and NOT_IN_TEXT in text
    # the only paper number: the abstract's accuracy of the full MobileViT
    acc = cell(res, "MobileViT", "accuracy")
    assert float(acc["paper"]) == pytest.approx(0.8427) and acc["kind"] == "ran" and "| 84.27% |" in text
    others = res[~((res["row"] == "MobileViT") & (res["metric"] == "accuracy"))]
    assert set(others["paper"]) == {NOT_IN_TEXT}
    ran = res[(res["row"] == "MobileViT") & res["ours"].notna()]
    assert set(ran["dataset"]) >= {"composite", "CASME II"} and ran["ours"].between(0, 1).all()
    assert fold_counts(out) == {"MobileViT": (["casme2__sub01"], [])}

    # the macro-expression set was prepared and passed; stage 1 stored with its curves
    runs = json.loads((out / "runs.json").read_text())["rows"]
    assert "mobilevit_macro-quick" in runs["MobileViT"]["macro_cache"]
    run_dir = out / "mobilevit-quick"
    (stage1,) = run_dir.glob("stage1/*/stage1.json")
    curves = json.loads(stage1.read_text())["history"]
    assert all(len(curves[k]) == ex.QUICK_EPOCHS for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_uf1"))
    # per fold: train curves of the final model, inner-validation curves of every grid trial
    history = fold_history(run_dir)
    assert set(history) == {"train", "grid", "info"}
    assert len(history["train"]["loss"]) == len(history["train"]["accuracy"]) == ex.QUICK_EPOCHS
    (trial,) = history["grid"]
    assert set(trial["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy", "val_uf1"}
    assert all(len(v) == ex.QUICK_EPOCHS for v in trial["history"].values())
    assert trial["history"]["val_uf1"][-1] == pytest.approx(trial["val_uf1"])
    assert "casme2/sub01" not in trial["fit_subjects"] + trial["val_subjects"]  # never the left-out subject
    assert history["info"]["stage1"]["source"] == "trained"


@pytest.mark.slow
def test_10_table3_quick_handcrafted_and_paper_only_rows(shared):
    res = run_script(shared, "10")
    out = shared / "10"
    module = load_script("10")
    order = list(module.TABLE.paper_order)
    assert list(dict.fromkeys(res["row"])) == order
    check_markdown(out, module.TABLE, order)
    status = res.groupby("row")["status"].first()
    for row in ("MDMO", "CNN-LSTM", "RCN", "TSCNN", "DeepViT"):
        assert status[row] == "in the paper only"
    for row in ("LBP-TOP", "LBP-SIP", "HOOF"):
        assert status[row] == "ran: 1 fold(s) trained"
        assert 0 <= float(cell(res, row, "uf1", "composite")["ours"]) <= 1
    assert status["MobileViT"].startswith("not run in --quick")
    assert float(cell(res, "MobileViT", "accuracy")["paper"]) == pytest.approx(0.8427)
    assert (res.loc[res["row"] != "MobileViT", "paper"] == NOT_IN_TEXT).all()


@pytest.mark.slow
def test_11_table4_quick_timing(shared):
    res = run_script(shared, "11")
    module = load_script("11")
    labels = [label for label, _ in module.ROWS]
    assert list(dict.fromkeys(res["row"])) == labels
    check_markdown(shared / "11", module.TABLE, labels)
    wide = res.pivot(index="row", columns="metric", values="ours")
    assert (wide["network_ms"] > 0).all() and (wide["params"] > 0).all()
    assert wide.loc["DeiT", "params"] > 80e6  # DeiT-Base ("86 M parameters")
    paper = res[res["metric"] == "network_ms"].set_index("row")["paper"]
    assert float(paper["MobileViT-S"]) == 35.4
    assert (paper.drop("MobileViT-S") == NOT_IN_TEXT).all() and (res.loc[res["metric"] == "params", "paper"] ==
                                                                  NOT_IN_TEXT).all()
    assert set(res["status"]) == {"measured (64 px, median of 3)"}


# ----------------------------------------------------------------------------- runner pieces (no training)


def test_transfer_rows_need_a_macro_cache_with_user_data(shared, tmp_path):
    """With --data, a transfer row that pre-trains is skipped without --macro (never trained on the wrong set)."""
    micro, macro = (ex.synthetic_cache(ex.DataSpec(name, "mobilevit_apex", 64), shared / "data", quick=True,
                                       log=lambda *_: None) for name in ("mobilevit_micro", "mobilevit_macro"))
    table = load_script("09").TABLE
    argv = ["--quick", "--data", str(micro), "--out", str(tmp_path / "out"), "--no-progress", "--dry-run"]
    results, runs, _ = ex.run_table(table, ex.parse_args(argv, "t", script="t"), log=lambda *_: None)
    assert results.groupby("row")["status"].first()["MobileViT"] == (
        "skipped: pre-trains on macro-expressions; pass --macro CACHE")
    assert runs["MobileViT"]["status"] == "no --macro cache"
    _, runs, _ = ex.run_table(table, ex.parse_args([*argv, "--macro", str(macro)], "t", script="t"),
                              log=lambda *_: None)
    assert runs["MobileViT"]["status"] == "dry run" and not (tmp_path / "out" / "mobilevit-quick").exists()
    with pytest.raises(SystemExit):
        ex.parse_args(["--data", str(micro), "--macro", str(tmp_path)], "t", script="t")  # not a prepared cache


def test_transfer_estimate_counts_stage1_grid_and_final_model(monkeypatch):
    from mer_keras.training import get_recipe

    step = {"trace_s": 10.0, "step_s": 0.64, "probe_batch": 8, "gflops": 4.0}
    monkeypatch.setattr(ex, "measure_step", lambda recipe, n_classes, cache_file=None: step)
    recipe = get_recipe("mobilevit_transfer")  # batch 64, 48 grid trials at 50 or 100 epochs, val_fraction 0.2
    clips = pd.DataFrame({"subject": [f"d/s{i % 5}" for i in range(50)], "label_id": [i % 3 for i in range(50)],
                          "n_frames": 1})
    macro = pd.DataFrame({"subject": "m/x", "label_id": [0] * 30 + [1] * 20 + [2] * 10, "n_frames": 1})
    per_image = 0.64 / 64
    est = ex.estimate_row(recipe, clips, ["d/s0"], macro_clips=macro)
    counts = np.bincount(clips.loc[clips["subject"] != "d/s0", "label_id"], minlength=3)
    balanced = 3 * counts.max()
    stage1 = 10.0 + 100 * 3 * 30 * 0.8 * per_image
    fold = 49 * 10.0 + 75.0 * balanced * (48 * 0.8 + 1) * per_image
    assert est.seconds == pytest.approx(stage1 + fold)
    assert "48 grid trials per fold" in est.detail and "100 pre-training" in est.detail
    no_transfer = ex.estimate_row(recipe.replace(pretrain=False, grid=None), clips, ["d/s0"], macro_clips=macro)
    assert no_transfer.seconds == pytest.approx(10.0 + 100 * balanced * per_image)


def test_image_tables_print_not_in_text_and_take_numbers_from_the_abstract():
    table = load_script("09").TABLE
    res = ex.assemble(table, ["MobileViT", "DeiT"], {("MobileViT", "composite", "accuracy"): 0.5}, {})
    assert list(dict.fromkeys(res["row"])) == ["MobileViT", "DeiT"]  # no "(table is an image)" row
    assert float(cell(res, "MobileViT", "accuracy")["paper"]) == pytest.approx(0.8427)
    assert set(res.loc[res["row"] == "DeiT", "paper"]) == {NOT_IN_TEXT}
    line = next(t for t in ex.to_markdown(table, res).splitlines() if t.startswith("| MobileViT |"))
    assert line.startswith("| MobileViT | 0.5000 | 84.27% | – | not in text |")
    plain = ex.TableSpec(paper=table.paper, table="2", title="t", columns=table.columns, rows=())
    assert set(ex.assemble(plain, ["MobileViT"], {}, {})["paper"]) == {NOT_IN_TEXT}  # without also_from
