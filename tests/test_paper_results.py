"""The papers' numbers shipped as package data (mer_keras/evaluation/paper_results.csv).

The schema, range and duplicate checks always run. The transcription check reads the
papers' markdown texts when they sit beside the repository (``../shared/papers``) and is
skipped otherwise.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from mer_keras.evaluation import paper_results as pr

PAPERS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "papers"
KEY = ["paper", "table", "row", "dataset", "metric"]


def raw() -> pd.DataFrame:
    """The CSV as text, exactly as stored."""
    return pd.read_csv(Path(pr.__file__).with_name("paper_results.csv"), dtype=str, keep_default_na=False)


def test_schema_and_kinds():
    frame = raw()
    assert tuple(frame.columns) == pr.COLUMNS
    assert set(frame["paper"]) == set(pr.PAPERS)
    assert set(frame["kind"]) <= set(pr.KINDS)
    assert set(frame["metric"]) <= set(pr.METRICS)
    for column in ("paper", "table", "row", "dataset", "metric", "kind"):
        assert (frame[column].str.strip() == frame[column]).all() and (frame[column] != "").all(), column


def test_no_duplicate_keys():
    frame = raw()
    dup = frame[frame.duplicated(KEY, keep=False)]
    assert dup.empty, dup[KEY].to_string()


def test_values_in_range():
    frame = pr.load()
    for _, line in frame.iterrows():
        if line["kind"] == "not_in_text":
            assert math.isnan(line["value"]) and line["metric"] == "-", line.to_dict()
            continue
        low, high = pr.METRICS[line["metric"]]
        assert low <= line["value"] <= high, line.to_dict()


def test_row_counts_per_table():
    counts = pr.load().groupby(["paper", "table"]).size().to_dict()
    assert counts == {
        ("liu2022-shufflenetv2-tvl1-svm", "2"): 14 * 8,  # 14 rows x (UAR, UF1) x 4 datasets
        ("liu2022-shufflenetv2-tvl1-svm", "3"): 12 * 8 - 12,  # 12 "-" cells left out
        ("liu2022-shufflenetv2-tvl1-svm", "4"): 5,
        ("zhang2021-off-tanet", "2"): 6 * 5,
        ("zhang2021-off-tanet", "3"): 4 * 2,
        ("zhang2021-off-tanet", "4"): 5 * 2,
        ("zhang2021-off-tanet", "5"): 4 * 5,
        ("zhang2022-arfnet-bottleneck-transformer", "abstract"): 3,
        ("liu2022-mobilevit-macro-transfer", "abstract"): 2,
        ("liu2022-mobilevit-macro-transfer", "2"): 1,
        ("liu2022-mobilevit-macro-transfer", "3"): 1,
        ("liu2022-mobilevit-macro-transfer", "4"): 1,
    }


@pytest.mark.parametrize("paper, table, row, dataset, metric, value", [
    ("liu2022-shufflenetv2-tvl1-svm", "2", "ShuffleNetV2", "SMIC", "uf1", 0.6451),
    ("liu2022-shufflenetv2-tvl1-svm", "2", "ResNet50 without SVM classifier", "MMEW", "uar", 0.6438),
    ("liu2022-shufflenetv2-tvl1-svm", "3", "Proposed method", "SAMM", "uf1", 0.7428),
    ("liu2022-shufflenetv2-tvl1-svm", "3", "NMER", "SAMM", "uar", 0.4894),
    ("liu2022-shufflenetv2-tvl1-svm", "4", "DeiT", "-", "time_ms", 168.0),
    ("zhang2021-off-tanet", "2", "Off-TANet(Ours)", "-", "params", 59403),
    ("zhang2021-off-tanet", "2", "STSTNet(2019)", "-", "flops", 526980),
    ("zhang2021-off-tanet", "2", "MACNN(2020)", "-", "mem_rw_mb", 1140.0),
    ("zhang2021-off-tanet", "4", "+ bottleneck Transformer", "composite", "uar", 0.7045),
    ("zhang2021-off-tanet", "5", "fold 41", "-", "self_soft_0.01", 1036),
    ("zhang2022-arfnet-bottleneck-transformer", "abstract", "ARFNet", "composite", "uf1", 0.7225),
    ("zhang2022-arfnet-bottleneck-transformer", "abstract", "ARFNet", "-", "params", 39685),
    ("liu2022-mobilevit-macro-transfer", "abstract", "MobileViT", "composite", "accuracy", 0.8427),
])
def test_spot_values(paper, table, row, dataset, metric, value):
    got, kind = pr.lookup(pr.load(paper, table), row, dataset, metric)
    assert got == pytest.approx(value)
    assert kind in ("ran", "cited")


def test_kinds_of_table3_rows():
    frame = pr.load("liu2022-shufflenetv2-tvl1-svm", 3)
    kinds = frame.groupby("row")["kind"].agg(set).to_dict()
    assert kinds["Proposed method"] == {"ran"}
    for cited in ("CapsuleNet", "RCN-Best", "TSCNN", "LBP-TOP", "MobileNetV2", "DeiT"):
        assert kinds[cited] == {"cited"}, cited
    # Bi-WOOF has one printed value on MMEW/SMIC/SAMM at most: the "-" cells are absent
    biwoof = frame[frame["row"] == "Bi-WOOF"]
    assert set(zip(biwoof["dataset"], biwoof["metric"])) == {
        ("CASME II", "uar"), ("CASME II", "uf1"), ("SMIC", "uf1"), ("SAMM", "uf1")}


def test_mobilevit_tables_are_marked_not_in_text():
    frame = pr.load("liu2022-mobilevit-macro-transfer")
    missing = frame[frame["kind"] == "not_in_text"]
    assert sorted(missing["table"]) == ["2", "3", "4"]
    assert frame.loc[frame["metric"] == "time_ms", "value"].item() == pytest.approx(35.4)


def test_load_selects_and_validates():
    t2 = pr.load("zhang2021-off-tanet", "Table 2")
    assert set(t2["table"]) == {"2"} and len(t2) == 30
    assert pr.load(table="abstract")["paper"].nunique() == 2
    with pytest.raises(ValueError, match="known papers: .*zhang2021-off-tanet"):
        pr.load("off-tanet")
    with pytest.raises(ValueError, match="known tables: 2, 3, 4, 5"):
        pr.load("zhang2021-off-tanet", 7)
    # a copy: editing the result does not change the next load
    t2.loc[0, "value"] = -1.0
    assert pr.load("zhang2021-off-tanet", 2)["value"].iloc[0] != -1.0


def test_printed_form():
    frame = raw().set_index(KEY)
    line = frame.loc[("zhang2021-off-tanet", "2", "Off-ApexNet(2019)", "-", "params")]
    assert pr.printed(line) == "2.66M" and float(line["value"]) == 2.66e6
    line = frame.loc[("liu2022-shufflenetv2-tvl1-svm", "3", "NMER", "SAMM", "uar")]
    assert pr.printed(line) == "04,894"
    line = frame.loc[("liu2022-shufflenetv2-tvl1-svm", "2", "ShuffleNetV2", "MMEW", "uar")]
    assert pr.printed(line) == "0.6524"


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="paper texts not beside the repository (../shared/papers)")
def test_every_value_is_printed_in_its_paper():
    """Each value's printed form occurs in its paper; a table value on a line with its row label."""
    frame = raw()
    texts = {paper: (PAPERS_DIR / f"{paper}.md").read_text(encoding="utf-8") for paper in pr.PAPERS}
    problems = []
    for _, line in frame[frame["kind"] != "not_in_text"].iterrows():
        text, shown = texts[line["paper"]], pr.printed(line)
        if shown not in text:
            problems.append(f"{line['paper']} {line['row']} {line['metric']}: {shown!r} not in the text")
            continue
        if line["table"] == "abstract":
            continue
        if line["row"].startswith("fold "):  # Off-TANet Table 5: the line starts with the fold number
            label_ok = lambda t: t.startswith(line["row"].split()[1] + "\t")  # noqa: E731
        else:
            label_ok = lambda t: line["row"] in t  # noqa: E731
        if not any(label_ok(t) and shown in t.split("\t") + [c.replace("<b>", "").replace("</b>", "") for c in t.split("\t")]
                   for t in text.splitlines()):
            problems.append(f"{line['paper']} Table {line['table']} {line['row']!r}: {shown!r} not on the row's line")
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="paper texts not beside the repository (../shared/papers)")
def test_shufflenet_tables_cells_in_column_order():
    """Tables 2-3 of the ShuffleNetV2 paper: each value sits in its row's line, in its dataset/metric column."""
    text = (PAPERS_DIR / "liu2022-shufflenetv2-tvl1-svm.md").read_text(encoding="utf-8").splitlines()
    datasets = ["MMEW", "CASME II", "SMIC", "SAMM"]

    def table_lines(number: str) -> dict[str, list[str]]:
        end = next(i for i, t in enumerate(text) if t.startswith(f"**Table {number}.**"))
        start = max(i for i in range(end) if text[i].startswith("Approach\tUAR"))
        out = {}
        for t in text[start + 1:end]:
            if "\t" not in t:
                continue
            cells = t.split("\t")
            label = re.sub(r"\s*<sup>.*?</sup>", "", cells[0]).strip()
            out[{"MobileNetV242": "MobileNetV2"}.get(label, label)] = [c.strip() for c in cells]
        return out

    frame = raw()
    frame = frame[(frame["paper"] == "liu2022-shufflenetv2-tvl1-svm") & frame["table"].isin(["2", "3"])]
    tables = {n: table_lines(n) for n in ("2", "3")}
    for n in ("2", "3"):  # every printed row is transcribed
        assert set(tables[n]) == set(frame.loc[frame["table"] == n, "row"]), n
    for _, line in frame.iterrows():
        cells = tables[line["table"]][line["row"]]
        col = 1 + 2 * datasets.index(line["dataset"]) + (line["metric"] == "uf1")
        assert cells[col] == pr.printed(line), line.to_dict()
    # and every printed number of those tables is in the CSV ("-" cells are not)
    n_printed = sum(c != "-" for rows in tables.values() for cells in rows.values() for c in cells[1:9])
    assert n_printed == len(frame) == 112 + 84
