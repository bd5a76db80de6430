"""The numbered experiment scripts (experiments/01-04) and their runner (mer_keras.evaluation.experiments).

Each script runs once with ``--quick`` as a subprocess (the command CI and users type) and
once more in-process through its ``main`` into the same folder, which must reuse every
finished fold. All scripts share one synthetic data folder (``--data-dir``), so each
synthetic composite is written and prepared once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mer_keras.evaluation import experiments as ex
from tests.experiment_scripts import (
    check_markdown, fold_counts, load_script, quick_argv, read_results, run_quick, script_path)
from mer_keras.evaluation import paper_results

pytestmark = pytest.mark.xdist_group("experiments")



@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One folder for every script's synthetic data and outputs."""
    return tmp_path_factory.mktemp("experiments")


def run_script(shared: Path, key: str) -> subprocess.CompletedProcess:
    return run_quick(shared, key)


def paper_value(paper: str, table: str, row: str, dataset: str, metric: str) -> float:
    value, _ = paper_results.lookup(paper_results.load(paper, table), row, dataset, metric)
    assert value is not None
    return value


def rerun_in_process(shared: Path, key: str) -> None:
    module = load_script(key)
    if key == "03":
        assert module.main(quick_argv(shared, key)) == 0
    else:
        assert ex.main(module.TABLE, quick_argv(shared, key), script=key) == 0


# ----------------------------------------------------------------------------- the four scripts


@pytest.mark.slow
def test_02_table3_quick_then_reuse(shared):
    run_script(shared, "02")
    out = shared / "02"
    res = read_results(out)
    module = load_script("02")
    expected = ["LBP-TOP", "LBP-SIP", "Bi-WOOF", "HOOF", "CapsuleNet", "CNN-LSTM", "NMER", "RCN-Best", "TSCNN",
                "MobileNetV2", "DeiT", "Proposed method"]
    assert list(dict.fromkeys(res["row"])) == expected  # the paper's order, cited rows included
    check_markdown(out, module.TABLE, expected)
    # the quick subset ran: the left-out CASME II subject has our scores; the paper's numbers beside them
    lbp = res[(res["row"] == "LBP-TOP") & (res["dataset"] == "CASME II") & (res["metric"] == "uf1")].iloc[0]
    assert 0.0 <= float(lbp["ours"]) <= 1.0 and float(lbp["paper"]) == pytest.approx(0.7026)
    assert lbp["kind"] == "cited" and lbp["status"].startswith("ran: 1 fold")
    caps = res[res["row"] == "CapsuleNet"]
    assert caps["ours"].isna().all() and set(caps["status"]) == {"in the paper only (cited)"}
    assert (res.loc[(res["row"] == "Bi-WOOF") & (res["dataset"] == "MMEW"), "paper"] == "not in text").all()
    assert set(res.loc[res["row"] == "Proposed method", "status"]) == {"not run in --quick (rerun without --quick)"}
    first = fold_counts(out)
    assert set(first) == {"LBP-TOP", "LBP-SIP", "Bi-WOOF", "HOOF"}
    assert all(len(trained) == 1 and not reused for trained, reused in first.values())

    rerun_in_process(shared, "02")
    again = fold_counts(out)
    assert all(not trained and len(reused) == 1 for trained, reused in again.values()), again
    pd.testing.assert_frame_equal(read_results(out).drop(columns="status"), res.drop(columns="status"))


@pytest.mark.slow
def test_01_table2_quick_then_reuse(shared):
    run_script(shared, "01")
    out = shared / "01"
    res = read_results(out)
    module = load_script("01")
    labels = [r.label for r in module.TABLE.rows]
    assert len(labels) == 18 and list(dict.fromkeys(res["row"])) == labels
    text = check_markdown(out, module.TABLE, labels)
    quick = res[res["row"] == "ShuffleNetV2 without pre-trained"]
    ran = quick[quick["dataset"] == "CASME II"]
    assert ran["ours"].between(0.0, 1.0).all() and ran["ours"].notna().all()
    assert float(ran.loc[ran["metric"] == "uar", "paper"].item()) == pytest.approx(0.6336)
    # DeiT rows are looked up under the paper's printed labels ("DeIT ...", "DeiT*")
    deit = res[(res["row"] == "DeiT without SVM classifier") & (res["dataset"] == "SAMM") & (res["metric"] == "uf1")]
    assert float(deit["paper"].item()) == pytest.approx(
        paper_value("liu2022-shufflenetv2-tvl1-svm", "2", "DeIT without SVM classifier*", "SAMM", "uf1"))
    # rows the paper does not print: "not in text"
    assert (res.loc[res["row"] == "ShuffleNetV2 with CBAM without pre-trained", "paper"] == "not in text").all()
    assert "not in text" in text
    assert fold_counts(out) == {"ShuffleNetV2 without pre-trained": (["casme2__sub01"], [])}

    rerun_in_process(shared, "01")
    assert fold_counts(out) == {"ShuffleNetV2 without pre-trained": ([], ["casme2__sub01"])}
    assert set(read_results(out).loc[lambda f: f["row"] == "ShuffleNetV2 without pre-trained", "status"]) == {
        "reused: 1 finished fold(s)"}


@pytest.mark.slow
def test_03_table4_quick_then_reuse(shared):
    run_script(shared, "03")
    out = shared / "03"
    res = read_results(out)
    module = load_script("03")
    labels = [label for label, _ in module.ROWS]
    assert list(dict.fromkeys(res["row"])) == labels
    check_markdown(out, module.TABLE, labels)
    wide = res.pivot(index="row", columns="metric", values="ours")
    assert (wide["network_ms"] > 0).all() and (wide["preprocess_ms"] > 0).all()
    np.testing.assert_allclose(wide["end_to_end_ms"], wide["network_ms"] + wide["preprocess_ms"])
    net = res[res["metric"] == "network_ms"].set_index("row")["paper"].astype(float)
    assert net["DeiT"] == 168.0 and net["ShuffleNetV2+ViT"] == pytest.approx(37.9)
    assert (res.loc[res["metric"] != "network_ms", "paper"] == "not in text").all()
    assert set(res["status"]) == {"measured (32 px, median of 3)"}

    rerun_in_process(shared, "03")
    again = read_results(out)
    assert set(again["status"]) == {"reused: timing.json (32 px, median of 3)"}
    pd.testing.assert_series_equal(again["ours"], res["ours"])


@pytest.mark.slow
def test_04_off_tanet_table2_quick_then_reuse(shared):
    run_script(shared, "04")
    out = shared / "04"
    res = read_results(out)
    module = load_script("04")
    labels = [r.label for r in module.TABLE.rows]
    assert list(dict.fromkeys(res["row"])) == labels
    check_markdown(out, module.TABLE, labels)
    wide = res.pivot(index="row", columns="metric", values="ours")
    # parameters do not depend on the input size for these three: exactly the paper's counts (STSTNet, printed in full)
    assert wide.loc["STSTNet(2019)", "params"] == 162051
    assert wide.loc["Off-ApexNet(2019)", "params"] == 2664475  # paper: 2.66M
    assert (wide["flops"] > 0).all() and (wide["mem_rw_mb"] > 0).all()  # also for the rows --quick does not train
    trained = ["Off-ApexNet(2019)", "STSTNet(2019)", "Off-TANet(Ours)"]
    assert wide.loc[trained, "uf1"].between(0, 1).all() and wide.loc[["MACNN(2020)"], "uf1"].isna().all()
    paper = res[(res["metric"] == "params")].set_index("row")["paper"].astype(float)
    assert paper["Off-TANet(Ours)"] == 59403 and paper["MACNN(2020)"] == 70.57e6
    assert set(fold_counts(out)) == set(trained)

    rerun_in_process(shared, "04")
    counts = fold_counts(out)
    assert set(counts) == set(trained) and all(not t and len(r) == 1 for t, r in counts.values()), counts
    # a finished run is recognised without loading data (its estimate is then skipped), for this recipe only
    row = module.TABLE.rows[0]
    recipe = ex.row_recipe(row, quick=True, size=row.data.quick_size)
    run_dir = out / f"{row.slug}-quick"
    subject = json.loads((run_dir / "report.json").read_text())["per_subject"][0]["subject"]  # "casme/sub01"
    assert ex._finished(run_dir, recipe, [subject])
    assert not ex._finished(run_dir, recipe.replace(epochs=2), [subject])
    assert not ex._finished(run_dir, recipe, [subject, "casme/unknown"])


# ----------------------------------------------------------------------------- runner pieces


def test_assemble_orders_cited_rows_after_their_paper_neighbours():
    table = load_script("02").TABLE
    values = {("HOOF", "SMIC", "uar"): 0.5, ("Proposed method", "SAMM", "uf1"): 0.25}
    res = ex.assemble(table, ["HOOF", "Proposed method", "LBP-TOP"], values, {"HOOF": "ran", "Proposed method": "ran",
                                                                               "LBP-TOP": "ran"})
    # our rows keep their order; each paper-only row follows the paper row printed before it
    assert list(dict.fromkeys(res["row"])) == ["HOOF", "CapsuleNet", "CNN-LSTM", "NMER", "RCN-Best", "TSCNN",
                                               "MobileNetV2", "DeiT", "Proposed method", "LBP-TOP", "LBP-SIP",
                                               "Bi-WOOF"]
    assert res.loc[(res["row"] == "HOOF") & (res["dataset"] == "SMIC") & (res["metric"] == "uar"), "ours"].item() == 0.5
    md = ex.to_markdown(table, res)
    line = next(t for t in md.splitlines() if t.startswith("| Proposed method |"))
    assert "| 0.2500 | 0.7428 |" in line  # SAMM UF1: ours beside the paper's


def test_row_recipe_quick_overrides_and_size():
    rows = {r.label: r for r in load_script("01").TABLE.rows}
    quick = ex.row_recipe(rows["ShuffleNetV2 without pre-trained"], quick=True, size=32)
    assert quick.pretrain is False and quick.epochs == ex.QUICK_EPOCHS and quick.input_size == (32, 32, 3)
    assert quick.model_kwargs["width_multiplier"] == 0.5 and quick.model_kwargs["l2"] == 5e-4
    full = ex.row_recipe(rows["ResNet50 without SVM classifier"], quick=False, size=224)
    assert full.model == "resnet50" and full.head == "softmax" and full.loss == "cross_entropy"
    assert full.epochs == 30 and full.pretrain_epochs == 100
    lbp = ex.row_recipe(load_script("02").TABLE.rows[0], quick=True, size=32)
    assert lbp.trainer == "handcrafted" and lbp.features == "lbp_top"


def test_pick_subjects_round_robin():
    subjects = ["samm/006", "casme2/sub01", "casme2/sub02", "samm/007", "smic/s01"]
    assert ex.pick_subjects(subjects, 4) == ["casme2/sub01", "samm/006", "smic/s01", "casme2/sub02"]
    assert ex.pick_subjects(subjects, None) is None and ex.pick_subjects(subjects, 9) is None


def test_memory_read_write_counts_layers_like_torchstat():
    import keras

    x = keras.Input((4, 4, 2))
    y = keras.layers.Conv2D(3, 3, padding="same")(x)
    y = keras.layers.Flatten()(y)  # a view: not counted
    y = keras.layers.Dense(5)(y)
    model = keras.Model(x, y)
    conv = (32 + 3 * 3 * 2 * 3 + 3) + 48  # read input + weights, write output
    dense = (48 + 48 * 5 + 5) + 5
    assert ex.memory_read_write_mb(model) == pytest.approx((conv + dense) * 4 / 2**20)


@pytest.mark.parametrize("model, kwargs, size, paper_mb", [
    ("off_tanet", {}, 112, 5.64), ("ststnet", {"variant": "off_tanet"}, 28, 0.76), ("off_apexnet", {}, 28, 10.35)])
def test_memory_estimate_close_to_off_tanet_table2(model, kwargs, size, paper_mb):
    from mer_keras.models import get

    estimate = ex.memory_read_write_mb(get(model)(classes=3, input_shape=(size, size, 3), **kwargs))
    assert estimate == pytest.approx(paper_mb, rel=0.1)


def test_estimate_measures_once_and_scales_with_epochs(tmp_path):
    from mer_keras.training import get_recipe

    recipe = get_recipe("ststnet").replace(epochs=10)
    clips = pd.DataFrame({"subject": [f"d/s{i % 4}" for i in range(40)], "label_id": [i % 3 for i in range(40)],
                          "n_frames": 5})
    cache = tmp_path / "steps.json"
    short = ex.estimate_row(recipe, clips, None, cache_file=cache)
    stored = json.loads(cache.read_text())
    long = ex.estimate_row(recipe.replace(epochs=30), clips, ["d/s0", "d/s1"], cache_file=cache)
    assert json.loads(cache.read_text()) == stored and len(stored) == 1  # the second estimate reused the timing
    step = next(iter(stored.values()))
    per_epoch = step["step_s"]  # 30 training clips per fold, batch 256: one step per epoch
    assert short.seconds == pytest.approx(4 * (step["trace_s"] + 10 * per_epoch))
    assert long.seconds == pytest.approx(2 * (step["trace_s"] + 30 * per_epoch))
    assert "4 folds" in short.detail and "10 epochs" in short.detail


def test_a_step_timing_taken_under_load_is_measured_again(tmp_path, monkeypatch):
    """Cached step times are reused only when other processes left the cores free while they were taken."""
    from mer_keras.evaluation.timing import QUIET_ENV, QUIET_OTHER_CORES
    from mer_keras.training import get_recipe

    monkeypatch.delenv(QUIET_ENV, raising=False)  # the suite's conftest reuses every timing

    recipe = get_recipe("ststnet")
    cache = tmp_path / "steps.json"
    first = ex.measure_step(recipe, 3, cache)
    assert "other_cores" in first and first["step_s"] > 0
    key = next(iter(json.loads(cache.read_text())))
    for cores, reused in ((0.0, True), (QUIET_OTHER_CORES, True), (QUIET_OTHER_CORES + 0.5, False), (None, False)):
        cache.write_text(json.dumps({key: {**first, "step_s": 123.0, "other_cores": cores}}))
        again = ex.measure_step(recipe, 3, cache)
        assert (again["step_s"] == 123.0) is reused, cores
        assert (json.loads(cache.read_text())[key]["step_s"] == 123.0) is reused
    cache.write_text(json.dumps({key: {k: v for k, v in first.items() if k != "other_cores"} | {"step_s": 123.0}}))
    assert ex.measure_step(recipe, 3, cache)["step_s"] != 123.0  # saved before loads were recorded


def test_heavy_rows_are_listed_and_skipped_without_yes(shared, tmp_path):
    """A row estimated above --max-minutes is skipped (with its estimate in the table) unless --yes."""
    cache = ex.synthetic_cache(ex.DataSpec("off_tanet", "off_tanet", 28), shared / "data", quick=True, log=lambda *_: None)
    table = ex.TableSpec(paper="zhang2021-off-tanet", table="2", title="t",
                         columns=(ex.Column("composite", "uf1"),),
                         rows=(ex.Row("Off-ApexNet(2019)", "off_tanet", ex.DataSpec("off_tanet", "off_tanet", 28),
                                      overrides=dict(model="off_apexnet", epochs=2)),
                               ex.Row("STSTNet(2019)", "off_tanet", ex.DataSpec("off_tanet", "off_tanet", 28),
                                      overrides=dict(model="ststnet", model_kwargs={"variant": "off_tanet"},
                                                     epochs=2))))
    args = ex.parse_args(["--data", str(cache), "--out", str(tmp_path / "out"), "--max-minutes", "1e-9",
                          "--rows", "STSTNet", "--no-progress"], "t", script="t")
    results, runs, _ = ex.run_table(table, args, log=lambda *_: None)
    row = runs["STSTNet(2019)"]
    assert row["status"] == "skipped (estimate)" and row["estimate_s"] > 0 and "folds" in row["estimate"]
    status = results.loc[results["row"] == "STSTNet(2019)", "status"].item()
    assert status.startswith("skipped: estimated") and "--yes" in status
    assert not (tmp_path / "out" / "ststnet-2019").exists()  # nothing trained
    # a row left out by --rows keeps its place, marked as such (not as a row of the paper only)
    assert list(dict.fromkeys(results["row"]))[:2] == ["Off-ApexNet(2019)", "STSTNet(2019)"]
    assert "Off-ApexNet(2019)" not in runs
    assert results.loc[results["row"] == "Off-ApexNet(2019)", "status"].iloc[0].startswith("not selected (--rows)")
    # other Table 2 rows come from the paper only
    assert set(results.loc[results["row"] == "Off-TANet(Ours)", "status"]) == {"in the paper only"}


def test_rows_select_by_part_or_whole_label():
    rows = load_script("01").TABLE.rows
    labels = lambda texts, **kw: [r.label for r in ex.select_rows(rows, texts, **kw)]  # noqa: E731
    assert len(labels(None)) == len(rows)
    cbam = ["ShuffleNetV2 with CBAM without pre-trained", "ShuffleNetV2 with CBAM without SVM classifier",
            "ShuffleNetV2 with CBAM"]
    assert labels(["with cbam"]) == cbam
    assert labels(["ShuffleNetV2 with CBAM"], exact=True) == cbam[2:]
    assert labels(["shufflenetv2", "MobileNetV2"], exact=True) == ["ShuffleNetV2", "MobileNetV2"]
    with pytest.raises(SystemExit, match="--exact-rows --rows .* matches no row"):
        ex.select_rows(rows, ["with CBAM"], exact=True)
    with pytest.raises(SystemExit):
        ex.parse_args(["--exact-rows"], "t", script="t")


def test_timing_rows_time_only_the_selected_networks_and_keep_the_others(tmp_path, monkeypatch):
    from mer_keras.evaluation import timing

    calls = []

    def fake_bench(names, repeats, warmup, input_sizes):
        calls.append(list(names))
        return pd.DataFrame({"model": names, "median_ms": [10.0 * len(calls)] * len(names),
                             "params": [1e6] * len(names)})

    monkeypatch.setattr(timing, "run_latency_bench", fake_bench)
    module = load_script("11")
    out = tmp_path / "11"
    run = lambda *rows: module.main(["--quick", "--out", str(out), *rows])  # noqa: E731
    network = lambda: read_results(out).query("metric == 'network_ms'").set_index("row")  # noqa: E731

    assert run("--rows", "ResNet18") == 0 and calls == [["resnet18"]]
    first = network()
    assert first.loc["ResNet18", "ours"] == 10.0 and first.loc["ResNet18", "status"].startswith("measured")
    assert first.drop(index="ResNet18")["ours"].isna().all()
    assert set(first.drop(index="ResNet18")["status"]) == {ex.NOT_SELECTED}
    assert "ms here vs 35.4 ms" not in (out / "results.md").read_text()  # MobileViT-S not timed: no comparison

    assert run("--rows", "DeiT", "MobileViT-S", "--exact-rows") == 0 and calls[-1] == ["mobilevit_s", "deit_base"]
    saved = json.loads((out / "timing.json").read_text())["network_ms"]
    assert saved == {"resnet18": 10.0, "mobilevit_s": 20.0, "deit_base": 20.0}  # the first selection is kept
    assert "MobileViT-S 20.0 ms here vs 35.4 ms" in (out / "results.md").read_text()

    assert run() == 0 and len(calls) == 3 and len(calls[-1]) == len(module.ROWS)  # all timed together
    assert run("--rows", "mobilenet") == 0 and len(calls) == 3  # every selected time is saved: reused
    reused = network()
    assert reused.loc["MobileNetV3-Small", "status"].startswith("reused: timing.json")
    assert reused.loc["MobileNetV3-Small", "ours"] == 30.0 and np.isnan(reused.loc["DeiT", "ours"])
    with pytest.raises(SystemExit, match="matches no row"):
        run("--rows", "VGG")


def test_match_cache_and_source_filter(shared):
    from mer_keras.preprocess.cache import PreparedCache
    from mer_keras.training import LOSODataset, get_recipe

    path = ex.synthetic_cache(ex.DataSpec("off_tanet", "off_tanet", 28), shared / "data", quick=True,
                              log=lambda *_: None)
    caches = [PreparedCache(path)]
    recipe = get_recipe("off_tanet")
    assert ex.match_cache(ex.DataSpec("off_tanet", "off_tanet", 28), recipe, caches) == (path, "")
    missing, reason = ex.match_cache(ex.DataSpec("off_tanet", "off_tanet", 112), recipe, caches)
    assert missing is None and "112 px" in reason and "'off_tanet' preset" in reason
    frames, reason = ex.match_cache(ex.DataSpec("shufflenet", "shufflenet", 28), get_recipe("lbp_top_svm"), caches)
    assert frames is None and "frame stacks" in reason
    filtered = ex._row_input(path, recipe, ("casme2",))
    assert isinstance(filtered, LOSODataset) and set(filtered.datasets) == {"casme2"}
    assert ex._row_input(path, recipe, None) == path


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        ex.parse_args(["--data", str(tmp_path)], "t", script="t")  # not a prepared cache
    with pytest.raises(SystemExit):
        ex.parse_args(["--max-minutes", "0"], "t", script="t")
    with pytest.raises(ValueError, match="unknown paper"):
        ex.TableSpec(paper="nope", table="2", title="t", columns=(), rows=())
    spec = ex.DataSpec("off_tanet", "off_tanet", 28)
    with pytest.raises(ValueError, match="unique"):
        ex.TableSpec(paper="zhang2021-off-tanet", table="2", title="t", columns=(),
                     rows=(ex.Row("a", "off_tanet", spec), ex.Row("a", "off_tanet", spec)))
    args = SimpleNamespace(rows=["no such row"], data=None, quick=True, out=tmp_path)
    with pytest.raises(SystemExit, match="matches no row"):
        ex.run_table(load_script("04").TABLE, args)


def test_a_failing_row_is_reported_and_the_others_still_run(shared, tmp_path):
    cache = ex.synthetic_cache(ex.DataSpec("off_tanet", "off_tanet", 28), shared / "data", quick=True, log=lambda *_: None)
    spec = ex.DataSpec("off_tanet", "off_tanet", 28, quick_size=28)
    ststnet = dict(model="ststnet", model_kwargs={"variant": "off_tanet"})
    table = ex.TableSpec(paper="zhang2021-off-tanet", table="2", title="t", columns=(ex.Column("composite", "uf1"),),
                         rows=(ex.Row("STSTNet(2019)", "off_tanet", spec, overrides=ststnet, quick=True,
                                      sources=("mmew",)),  # not in this cache
                               ex.Row("Off-ApexNet(2019)", "off_tanet", spec, quick=True,
                                      overrides=dict(model="off_apexnet", model_kwargs={}))))
    argv = ["--quick", "--data", str(cache), "--out", str(tmp_path / "out"), "--no-progress"]
    assert ex.main(table, argv, script="t") == 1
    runs = json.loads((tmp_path / "out" / "runs.json").read_text())["rows"]
    assert runs["STSTNet(2019)"]["status"] == "failed" and "mmew" in runs["STSTNet(2019)"]["error"]
    assert runs["Off-ApexNet(2019)"]["status"] == "ran"
    res = read_results(tmp_path / "out")
    assert res.loc[res["row"] == "STSTNet(2019)", "status"].item().startswith("failed: ValueError")


def test_two_stage_diagnosis_script_prints_and_records_a_probe_row(tmp_path):
    """``experiments/00f_two_stage_diagnosis.py`` as a user types it (probe only, the cheap cell)."""
    out = tmp_path / "diag"
    cmd = [sys.executable, str(script_path("00f")), "--subjects", "2", "--size", "32", "--runs", "probe",
           "--identity-variety", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| S0.15_n2_variety_seed0_32px | " in done.stdout
    (row,) = [json.loads(line) for line in (out / "diagnosis.jsonl").read_text().splitlines()]
    assert set(row) == {"data", "probe_apex", "probe_flow"}
    assert 0.0 <= row["probe_apex"] <= 1.0 and 0.0 <= row["probe_flow"] <= 1.0
    # a rerun reuses the written data and the prepared cache and appends a second, identical row
    subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    rows = [json.loads(line) for line in (out / "diagnosis.jsonl").read_text().splitlines()]
    assert rows == [row, row]
