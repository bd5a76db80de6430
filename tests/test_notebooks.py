"""The notebooks (notebooks/*.ipynb) executed on small results folders, as CI runs them.

``confusion_matrices.ipynb`` reads the ``--quick`` output of ``experiments/04_off_tanet_table2.py``
(run as a subprocess, the command users type); ``training_curves.ipynb`` reads a folder holding one
run of each kind of fold history: single-stage (a run folder of that output), two-stage
(ShuffleNetV2-SVM recipe, flow pre-training + frames) and transfer (MobileViT recipe, shared
stage 1), the latter two tiny ``run_loso`` calls (STSTNet backbone, 32 / 64 px, two epochs per
stage, one and two folds): CPU-sized, not paper settings. Each notebook runs in a ``python3`` kernel with
``MER_KERAS_RESULTS`` pointing at the folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

pytestmark = [pytest.mark.xdist_group("notebooks"),
              # MobileViT-style models attend over few patch positions at tiny sizes
              pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
RESULTS_LINE = 'RESULTS = Path(os.environ.get("MER_KERAS_RESULTS", "experiments_out/{}"))'
DEFAULTS = {"confusion_matrices.ipynb": "04_off_tanet_table2",
            "training_curves.ipynb": "09_mobilevit_table2_transfer"}


def read(name: str):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def execute(name: str, results: Path, cwd: Path, monkeypatch):
    """Run every cell of notebook ``name`` with ``MER_KERAS_RESULTS=results`` (the kernel inherits it)."""
    monkeypatch.setenv("MER_KERAS_RESULTS", str(results))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = read(name)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def images(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def check_ran(nb, results: Path) -> None:
    """No error output anywhere; the kernel read ``results`` (not the notebook's default)."""
    for cell in code_cells(nb):
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert not errors, f"{cell.source[:200]}\n{errors}"
    printed = "".join(out.get("text", "") for cell in code_cells(nb) for out in cell.outputs
                      if out.output_type == "stream")
    assert f"run folder(s) in {results}" in printed, printed


# ----------------------------------------------------------------------------- results folders


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def table2_quick(work) -> Path:
    """``experiments/04_off_tanet_table2.py --quick``: three single-stage runs, one fold each."""
    out = work / "04"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "04_off_tanet_table2.py"), "--quick",
                           "--out", str(out), "--data-dir", str(work / "data"), "--no-progress"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


def _two_stage_run(work: Path, out: Path) -> None:
    from mer_keras.data import megc2019
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.training import run_loso

    roots = write_composite("megc2019", work / "megc", subjects_per_dataset=2, clips_per_subject=2, n_frames=6,
                            frame_size=(320, 240), seed=3)
    manifest = megc2019(casme2=roots["casme2"], samm=roots["samm"], smic=roots["smic"])
    cache = work / "shufflenet_32"
    prepare(manifest[manifest["label_id"] >= 0], cache, PreprocessConfig.preset("shufflenet", size=32), workers=1,
            progress=False)
    run_loso(cache, "shufflenet_svm_corrected", out, subjects=["casme2/sub01"], progress=False,
             input_size=32, epochs=2, pretrain_epochs=2, backbone="ststnet")


def _transfer_run(work: Path, out: Path) -> None:
    from mer_keras.data import mobilevit_macro, mobilevit_micro
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.training import LOSODataset, get_recipe, run_loso

    config = PreprocessConfig.preset("mobilevit_apex", size=64)
    frames = dict(subjects_per_dataset=2, n_frames=5, frame_size=(320, 240))
    micro = write_composite("mobilevit_micro", work / "micro", clips_per_subject=2, seed=11, **frames)
    macro = write_composite("mobilevit_macro", work / "macro", clips_per_subject=2, seed=12,
                            **{**frames, "subjects_per_dataset": 1})
    m, M = mobilevit_micro(**micro, apex_only=True), mobilevit_macro(**macro)
    prepare(m[m["label_id"] >= 0], work / "micro_64", config, workers=1, progress=False)
    prepare(M[M["label_id"] >= 0], work / "macro_64", config, workers=1, progress=False)
    subjects = LOSODataset.from_cache(work / "micro_64", input="apex").subject_list()[:2]
    recipe = get_recipe("mobilevit_transfer").quick(2).replace(backbone="ststnet", input_size=64, grid=None)
    run_loso({"micro": work / "micro_64", "macro": work / "macro_64"}, recipe, out, subjects=subjects,
             progress=False)


@pytest.fixture(scope="module")
def curves_results(work, table2_quick) -> Path:
    """One single-stage, one two-stage and one transfer run folder."""
    out = work / "curves"
    out.mkdir()
    shutil.copytree(table2_quick / "off-tanet-ours-quick", out / "off-tanet-ours-quick")
    _two_stage_run(work, out / "shufflenet-v2-quick")
    _transfer_run(work, out / "mobilevit-quick")
    return out


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_notebooks_are_stored_without_outputs_and_name_their_input(name):
    nb = read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first_md = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert f"experiments/{DEFAULTS[name]}.py" in first_md and "MER_KERAS_RESULTS" in first_md
    first_code = code_cells(nb)[0].source
    assert RESULTS_LINE.format(DEFAULTS[name]) in first_code
    for cell in code_cells(nb):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_python3_kernel_runs_this_interpreter():
    """The ``python3`` kernel the tests ask for starts this interpreter (the venv's ipykernel spec,
    or ipykernel's built-in one), not a Python found elsewhere."""
    from jupyter_client.manager import KernelManager

    cmd = KernelManager(kernel_name="python3").format_kernel_cmd()
    assert cmd[0] == sys.executable or Path(cmd[0]).resolve() == Path(sys.executable).resolve(), (
        f"kernel 'python3' runs {cmd[0]}, not {sys.executable}: a user-level kernelspec shadows this "
        "environment's one (set JUPYTER_PREFER_ENV_PATH=1 or remove it)")


def test_confusion_matrices_notebook(table2_quick, tmp_path, monkeypatch):
    runs = json.loads((table2_quick / "runs.json").read_text())["rows"]
    ran = [r["slug"] for r in runs.values() if r.get("status") == "ran"]
    assert len(ran) == 3
    nb = execute("confusion_matrices.ipynb", table2_quick, tmp_path, monkeypatch)
    check_ran(nb, table2_quick)
    cells = code_cells(nb)
    per_run = next(c for c in cells if "for run, report in REPORTS.items():" in c.source)
    assert images(per_run) == len(ran)  # one figure per run folder (pooled + per dataset)
    assert sum(images(c) for c in cells) == len(ran) + 1  # + the models x datasets overview
    summary = next(out for c in cells for out in c.outputs if "text/html" in out.get("data", {}))
    assert all(slug in summary["data"]["text/html"] for slug in ran)


def test_load_run_report_of_an_unfinished_run(table2_quick, tmp_path):
    """A run folder without report.json (stopped before its last fold) is read from its finished folds."""
    from mer_keras.evaluation.report import load_run_report

    finished = load_run_report(table2_quick / "ststnet-2019-quick")
    partial = shutil.copytree(table2_quick / "ststnet-2019-quick", tmp_path / "ststnet-2019-quick")
    (partial / "report.json").unlink()
    (partial / "report_predictions.csv").unlink()
    again = load_run_report(partial)
    assert again.name == "ststnet-2019-quick (unfinished)" and again.class_names == finished.class_names
    assert again.confusion.equals(finished.confusion)
    for fold in (partial / "folds").iterdir():
        (fold / "done.json").unlink()
    with pytest.raises(ValueError, match="no finished fold"):
        load_run_report(partial)


def test_training_curves_notebook(curves_results, tmp_path, monkeypatch):
    from mer_keras.evaluation.report import training_curves

    stages = {run.name: training_curves(run) for run in curves_results.iterdir()}
    assert list(stages["off-tanet-ours-quick"]) == ["train"]
    assert list(stages["shufflenet-v2-quick"]) == ["pretrain", "train"]
    assert {"val_loss", "val_accuracy", "val_uf1"} <= set(stages["shufflenet-v2-quick"]["pretrain"])
    assert list(stages["mobilevit-quick"]) == ["stage1", "train"]
    assert stages["mobilevit-quick"]["train"]["loss"].shape == (2, 2)  # 2 epochs x 2 folds

    nb = execute("training_curves.ipynb", curves_results, tmp_path, monkeypatch)
    check_ran(nb, curves_results)
    per_run = next(c for c in code_cells(nb) if "plt.subplots(len(stages)" in c.source)
    assert images(per_run) == 3  # one figure per run, one row of panels per stage


@pytest.mark.parametrize("name, kind, error", [("confusion_matrices.ipynb", "missing", "FileNotFoundError"),
                                               ("training_curves.ipynb", "empty", "ValueError")])
def test_notebook_without_results_fails_clearly(name, kind, error, tmp_path, monkeypatch):
    results = tmp_path / f"{kind}-results"
    if kind == "empty":
        results.mkdir()
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        execute(name, results, tmp_path, monkeypatch)
    assert info.value.ename == error
    assert str(results) in info.value.evalue


# ----------------------------------------------------------------------------- the helpers behind them


def test_history_stages_reads_each_kind_of_history():
    from mer_keras.evaluation.report import history_stages

    single = {"loss": [1.0, 0.5], "accuracy": [0.3, 0.6], "lr": [1e-3, 1e-3],
              "test_curve_loss": [1.1, 1.0], "test_curve_accuracy": [0.2, 0.4], "test_curve_y_pred": [[0, 1], [1, 1]]}
    assert history_stages(single) == {"train": {k: v for k, v in single.items() if k != "test_curve_y_pred"}}
    two_stage = {"info": {"reloaded_layers": ["conv1"], "pretrain_best_epoch": 1},
                 "pretrain": {"loss": [2.0, 1.5, 1.0], "accuracy": [0.1, 0.2, 0.3], "val_uf1": [0.0, 0.1, 0.2],
                              "class_counts": [[1, 1, 1]] * 3},
                 "train": {"loss": [0.9], "accuracy": [0.5], "reg_loss": [0.01]}}
    stages = history_stages(two_stage)
    assert list(stages) == ["pretrain", "train"] and set(stages["pretrain"]) == {"loss", "accuracy", "val_uf1"}
    assert history_stages({**two_stage, "pretrain": {}}).keys() == {"train"}  # no pre-training
    transfer = {"grid": [{"val_uf1": 0.4, "values": {"lr": 0.007}}], "info": {"unfreeze_at": [1, 2]},
                "train": {"loss": [3.0, 2.0], "accuracy": [0.4, 0.5], "frozen_groups": [5, 0], "unfreeze_at": [1, 2, 3],
                          "n_train": 15, "compiled": False}}
    assert history_stages(transfer) == {"train": {"loss": [3.0, 2.0], "accuracy": [0.4, 0.5],
                                                  "frozen_groups": [5.0, 0.0]}}
    assert history_stages({"svm_c": 1.0, "train_accuracy": 0.8}) == {}  # handcrafted: no epochs
    assert history_stages({}) == {}


def test_run_folders_order_and_errors(tmp_path):
    from mer_keras.evaluation.report import run_folders

    with pytest.raises(FileNotFoundError, match="missing"):
        run_folders(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no LOSO run folder"):
        run_folders(tmp_path)
    for name in ("a-row", "b-row", "c-row"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
    (tmp_path / "synthetic").mkdir()  # the runner's data folder is no run
    (tmp_path / "runs.json").write_text(json.dumps({"rows": {"C": {"slug": "c-row"}, "A": {"slug": "a-row"}}}))
    assert [p.name for p in run_folders(tmp_path)] == ["c-row", "a-row", "b-row"]  # table order, then by name
    assert run_folders(tmp_path / "b-row") == [tmp_path / "b-row"]  # one run folder itself
