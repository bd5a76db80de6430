"""LOSOReport: headline metrics, save/load round trip, figure, markdown rows, test-selected."""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from mer_keras.evaluation import metrics as M
from mer_keras.evaluation.report import LOSOReport, markdown_header, markdown_table, package_versions


def _cells(line):
    return [c.strip() for c in line.strip()[1:-1].split(" | ")]


def _predictions(seed=0, datasets=(("smic", 3), ("casme2", 4), ("samm", 3))):
    rng = np.random.default_rng(seed)
    rows = []
    for ds, n_subj in datasets:
        for s in range(n_subj):
            for c in range(int(rng.integers(2, 7))):
                yt = int(rng.integers(0, 3))
                yp = yt if rng.random() < 0.6 else int(rng.integers(0, 3))
                p = rng.dirichlet(np.ones(3))
                rows.append(dict(clip=f"{ds}_{s}_{c}", subject=f"{s + 6:03d}", dataset=ds,
                                 y_true=yt, y_pred=yp, score_0=p[0], score_1=p[1], score_2=p[2]))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def preds():
    return _predictions()


@pytest.fixture(scope="module")
def report(preds):
    return LOSOReport.from_predictions(
        preds, config={"model": "off_tanet", "lr": np.float32(5e-4), "out": Path("runs/x"),
                       "nan": float("nan")},
        seeds=[0, 1], runtime_s=12.5, name="off_tanet | seed 0")


def test_headline_metrics(report, preds):
    m = report.metrics
    for key in ("uf1", "uar", "accuracy", "uf1_subject_mean", "uar_subject_mean",
                "n_clips", "n_subjects", "n_folds"):
        assert key in m
    pooled = M.pooled_scores(preds)
    subj = M.per_subject_scores(preds)
    assert m["uf1"] == pooled["uf1"] and m["uar"] == pooled["uar"]
    assert m["accuracy"] == pooled["accuracy"]
    assert m["uf1_subject_mean"] == subj.mean["uf1"]
    assert m["uar_subject_mean"] == subj.mean["uar"]
    assert m["n_clips"] == len(preds) and m["n_subjects"] == 10 and m["n_folds"] == 10
    assert report["uf1"] == report.metrics["uf1"]
    assert report["uar_subject_mean"] == report.metrics["uar_subject_mean"]
    assert list(report.per_dataset.index) == ["smic", "casme2", "samm"]
    assert len(report.per_subject) == 10
    assert report.confusion.to_numpy().sum() == len(preds)
    assert list(report.confusion.index) == ["negative", "positive", "surprise"]
    np.testing.assert_array_equal(report.confusion.to_numpy(),
                                  M.confusion(preds["y_true"], preds["y_pred"]))


def test_n_folds_from_fold_column(preds):
    df = preds.assign(fold=preds["dataset"])  # e.g. a coarser split
    assert LOSOReport.from_predictions(df).metrics["n_folds"] == 3


def test_save_load_round_trip(report, tmp_path):
    (tmp_path / "weights.keras").write_text("not mine")  # files of others stay untouched
    report.save(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"report.json", "confusion_matrix.png", "per_subject.csv", "per_dataset.csv",
            "table_row.md", "weights.keras"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / "weights.keras").read_text() == "not mine"

    loaded = LOSOReport.load(tmp_path)
    assert loaded.metrics == report.metrics
    assert loaded["uf1"] == report["uf1"]
    assert loaded.name == report.name and loaded.seeds == [0, 1] and loaded.runtime_s == 12.5
    pd.testing.assert_frame_equal(loaded.per_dataset, report.per_dataset, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.per_subject, report.per_subject, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.confusion, report.confusion)
    assert loaded.per_subject["subject"].iloc[0] == "006"  # zero padding survives
    # the saved predictions recompute the same report
    again = LOSOReport.from_predictions(loaded.predictions)
    assert again.metrics == report.metrics

    d = json.loads((tmp_path / "report.json").read_text())
    assert d["config"] == {"model": "off_tanet", "lr": pytest.approx(5e-4), "out": "runs/x",
                           "nan": None}
    assert set(d["versions"]) >= {"numpy", "pandas", "scikit-learn", "keras", "tensorflow",
                                  "opencv", "mer-keras"}
    assert d["versions"]["numpy"] == np.__version__
    assert d["test_selected"] is None
    assert len(d["per_subject"]) == 10 and len(d["per_dataset"]) == 3
    assert np.asarray(d["confusion"]["matrix"]).shape == (3, 3)
    per_subject_csv = pd.read_csv(tmp_path / "per_subject.csv", dtype={"subject": str})
    assert len(per_subject_csv) == 10 and per_subject_csv["subject"].iloc[0] == "006"


def test_missing_package_version_is_null(monkeypatch):
    from mer_keras.evaluation import report as R
    monkeypatch.setitem(R._VERSION_DISTS, "not-installed", ("surely-not-an-installed-dist-xyz",))
    v = package_versions()
    assert v["not-installed"] is None and v["pandas"] == pd.__version__


def test_confusion_png_is_valid_image(report, tmp_path):
    report.save(tmp_path)
    img = matplotlib.image.imread(tmp_path / "confusion_matrix.png")
    h, w = img.shape[:2]
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert 300 <= h <= 2000 and 600 <= w <= 3000 and w > h  # two panels side by side
    assert float(img[..., :3].std()) > 0.05  # not a blank canvas


def test_confusion_figure_keeps_long_row_name_on_canvas(preds):
    name = "ShuffleNetV2 with improved ViT without SVM classifier (shufflenet_svm_corrected)"
    fig = LOSOReport.from_predictions(preds, name=name).confusion_figure()
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    [title] = fig.texts  # the suptitle, the figure's only text
    box = title.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert title.get_text().startswith(name + "\n")
    assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height


def test_markdown_row_and_header(report, tmp_path):
    row = report.markdown_row()
    header = report.markdown_header()
    n_cells = 3 + 2 * 3  # name, UF1, UAR, then UF1/UAR of 3 datasets
    cells = _cells(row)
    assert len(cells) == n_cells
    titles, sep = header.splitlines()
    assert len(_cells(titles)) == n_cells
    assert sep.count("---") == n_cells
    assert cells[0] == "off_tanet \\| seed 0"  # the pipe in the name is escaped
    assert cells[1] == f"{report['uf1']:.4f}" and cells[2] == f"{report['uar']:.4f}"
    assert cells[3] == f"{report.per_dataset.loc['smic', 'uf1']:.4f}"
    assert titles.startswith("| run | UF1 | UAR | smic UF1 | smic UAR |")
    custom = ["name", "uf1_subject_mean", "n_clips", "casme2/accuracy", "mmew/uf1"]
    cells = _cells(report.markdown_row(custom))
    assert cells[1:] == [f"{report['uf1_subject_mean']:.4f}", str(report["n_clips"]),
                         f"{report.per_dataset.loc['casme2', 'accuracy']:.4f}", "–"]
    with pytest.raises(ValueError, match="unknown markdown column"):
        report.markdown_row(["name", "f2"])
    report.save(tmp_path)
    lines = (tmp_path / "table_row.md").read_text().splitlines()
    assert lines == [*header.splitlines(), row]


def test_markdown_table_stacks_runs(report):
    other = LOSOReport.from_predictions(_predictions(1, (("casme2", 3), ("mmew", 2))), name="b")
    table = markdown_table([report, other]).splitlines()
    assert len(table) == 4
    widths = {len(_cells(line)) for line in table if "---" not in line}
    assert widths == {3 + 2 * 4}  # smic, casme2, samm, mmew
    assert table[2].endswith("| – | – |")  # first run has no mmew
    assert markdown_header(["name", "uf1"]).splitlines()[0] == "| run | UF1 |"


def test_test_selected_never_in_headline(preds, tmp_path):
    leaky = preds.assign(selected_on_test=preds["y_true"])  # a perfect "best epoch on test"
    r = LOSOReport.from_predictions(leaky, name="leaky")
    honest = LOSOReport.from_predictions(preds, name="leaky")
    assert r.test_selected["test_selected_uf1"] == 1.0
    assert r.test_selected["test_selected_uar"] == 1.0
    assert r.metrics == honest.metrics  # headline computed from y_pred only
    assert r["uf1"] < 1.0
    assert not any(k.startswith("test_selected") for k in r.metrics)
    with pytest.raises(KeyError):
        r["test_selected_uf1"]
    assert r.markdown_row() == honest.markdown_row()
    assert "1.0000" not in r.markdown_row()
    explicit = r.markdown_row(["name", "uf1", "test_selected_uf1"])
    assert explicit.endswith("| 1.0000 |")
    assert "selected on test (leaky)" in r.markdown_header(["name", "uf1", "test_selected_uf1"])

    r.save(tmp_path)
    d = json.loads((tmp_path / "report.json").read_text())
    assert not any(k.startswith("test_selected") for k in d["metrics"])
    assert d["test_selected"]["metrics"]["test_selected_uf1"] == 1.0
    assert "leak" in d["test_selected"]["note"]
    assert "1.0000" not in (tmp_path / "table_row.md").read_text()
    loaded = LOSOReport.load(tmp_path)
    assert loaded.test_selected == r.test_selected and loaded.metrics == r.metrics

    # the same numbers when given as a separate frame
    r2 = LOSOReport.from_predictions(preds, test_selected=preds.assign(y_pred=preds["y_true"]))
    assert r2.test_selected == r.test_selected and r2.metrics == honest.metrics


def test_test_selected_validation(preds):
    with pytest.raises(ValueError, match="not both"):
        LOSOReport.from_predictions(preds.assign(selected_on_test=preds["y_pred"]),
                                    test_selected=preds)
    with pytest.raises(ValueError, match="cover exactly"):
        LOSOReport.from_predictions(preds, test_selected=preds.iloc[:-1])
    with pytest.raises(TypeError, match="not a flag"):
        LOSOReport.from_predictions(preds.assign(selected_on_test=True))
    with pytest.raises(ValueError, match="must not be headline"):
        r = LOSOReport.from_predictions(preds)
        LOSOReport(**{**_init_kwargs(r), "metrics": {**r.metrics, "test_selected_uf1": 1.0}})


def _init_kwargs(r):
    return dict(name=r.name, metrics=r.metrics, per_dataset=r.per_dataset,
                per_subject=r.per_subject, per_class=r.per_class, confusion=r.confusion,
                class_names=r.class_names, labels=r.labels)


def test_report_validation(preds):
    with pytest.raises(ValueError, match="missing column"):
        LOSOReport.from_predictions(preds.drop(columns=["dataset"]))
    with pytest.raises(ValueError, match="class_names"):
        LOSOReport.from_predictions(preds, class_names=("a", "b"), labels=(0, 1, 2))
    bad = preds.copy()
    bad.loc[0, "y_pred"] = 3
    with pytest.raises(ValueError, match="outside labels"):
        LOSOReport.from_predictions(bad)
