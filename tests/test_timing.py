"""Latency benchmark plumbing (mer_keras.evaluation.timing). Numbers are printed by the
benchmark, never asserted here: these tests only check shapes, bookkeeping and paper data."""

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from mer_keras.evaluation import timing
from mer_keras.evaluation.timing import (
    PAPER_TIMES, REFERENCE, TABLE4_ROWS, measure_latency, run_latency_bench)


def _tiny_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.mark.parametrize("mode", ["compiled", "predict_on_batch", "frozen", "eager"])
def test_measure_latency_tiny_model(mode):
    res = measure_latency(_tiny_model(), repeats=4, warmup=1, mode=mode)
    assert res["repeats"] == 4 and len(res["times_ms"]) == 4
    assert res["mode"] == mode and res["batch_size"] == 1 and res["input_shape"] == (16, 16, 3)
    for key in ("median_ms", "p10_ms", "p90_ms", "mean_ms", "min_ms"):
        assert math.isfinite(res[key]) and res[key] > 0
    assert res["min_ms"] <= res["p10_ms"] <= res["median_ms"] <= res["p90_ms"]


def test_measure_latency_batch_and_errors():
    model = _tiny_model()
    assert measure_latency(model, batch_size=3, repeats=2, warmup=0)["batch_size"] == 3
    with pytest.raises(ValueError):
        measure_latency(model, mode="nope")
    with pytest.raises(ValueError):
        measure_latency(model, repeats=0)


def test_run_latency_bench_subset_adds_reference():
    lines = []
    df = run_latency_bench(["off_tanet"], repeats=2, warmup=1,
                           input_sizes={"mobilenet_v2": 96}, print_fn=lines.append)
    assert list(df["model"]) == [REFERENCE, "off_tanet"]
    for col in ("model", "input", "params", "gflops", "median_ms", "p10_ms", "p90_ms",
                "ratio", "paper_ms", "paper_ratio", "paper_source"):
        assert col in df.columns
    ref = df.set_index("model").loc[REFERENCE]
    assert ref["ratio"] == 1.0 and ref["paper_ratio"] == 1.0 and ref["paper_ms"] == 24.0
    assert ref["input"] == "96x96x3"
    off = df.set_index("model").loc["off_tanet"]
    assert off["params"] == 59_403 and off["input"] == "112x112x3"
    assert off["ratio"] > 0 and np.isnan(off["paper_ms"])
    assert (df["median_ms"] > 0).all()
    text = "\n".join(lines)
    assert "off_tanet" in text and "Table 4" in text and "intra-op" in text


def test_paper_table_data():
    from mer_keras.models import available

    assert set(TABLE4_ROWS) <= set(PAPER_TIMES) and REFERENCE in TABLE4_ROWS
    assert set(TABLE4_ROWS) <= set(available())
    table4 = {"resnet50": 105.9, "deit_base": 168.0, "mobilenet_v2": 24.0,
              "shufflenet_v2_cbam": 28.5, "shufflenet_v2_vit": 37.9}
    for name, ms in table4.items():
        paper = PAPER_TIMES[name]
        assert paper.ms == ms and "liu2022-shufflenetv2-tvl1-svm" in paper.source
        assert "Table 4" in paper.source
        assert paper.paper_ratio == pytest.approx(ms / 24.0)
    mvit = PAPER_TIMES["mobilevit_s"]
    assert mvit.ms == 35.4 and "liu2022-mobilevit-macro-transfer" in mvit.source
    assert mvit.paper_ratio is None and mvit.cross_paper_ratio == pytest.approx(35.4 / 24.0)
    off = PAPER_TIMES["off_tanet"]
    assert off.ms is None and "zhang2021-off-tanet" in off.source
    for name in TABLE4_ROWS:
        assert timing.INPUT_SIZES[name] in (112, 224, 256)
    assert timing.INPUT_SIZES["mobilevit_s"] == 256 and timing.INPUT_SIZES["off_tanet"] == 112


def test_module_entry_point_parses(monkeypatch):
    seen = {}
    monkeypatch.setattr(timing, "run_latency_bench",
                        lambda names, **kw: seen.update(names=names, **kw))
    assert timing.main(["--repeats", "3", "--models", "off_tanet"]) == 0
    assert seen["names"] == ["off_tanet"] and seen["repeats"] == 3


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="other processes' CPU time is read from /proc/stat")
def test_other_load_counts_a_busy_process_beside_it(monkeypatch):
    import subprocess
    import sys
    import time

    from mer_keras.evaluation.timing import QUIET_ENV, OtherLoad, load_note, measured_quietly

    monkeypatch.delenv(QUIET_ENV, raising=False)

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with OtherLoad() as busy:
            time.sleep(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy.cores >= 0.6  # one core spinning (other test workers can only add to it)
    assert "1." in load_note(1.2) and load_note(0.0) == "" and "unknown" in load_note(None)
    assert measured_quietly({"other_cores": 0.1}) and not measured_quietly({"other_cores": 1.0})
    assert not measured_quietly({})
    monkeypatch.setenv(QUIET_ENV, "inf")
    assert measured_quietly({"other_cores": 1.0}) and measured_quietly({}) and load_note(1.0) == ""
    monkeypatch.setenv(QUIET_ENV, "lots")
    with pytest.raises(ValueError, match=QUIET_ENV):
        measured_quietly({})
