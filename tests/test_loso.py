"""LOSO engine: recipes, run_loso end to end, resume after a kill, leakage guard, training-only
normalisation, the three dataset forms and the ``mer-keras loso`` command."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mer_keras.training import Fold, LeakageError, LOSODataset, Recipe, available_recipes, get_recipe, run_loso

QUICK = get_recipe("ststnet").quick()  # 4 epochs


@pytest.fixture(scope="module")
def ststnet_cache(megc_tiny_cropped, tmp_path_factory):
    """The tiny MEGC composite prepared with the 28x28 STSTNet preset (6 subjects, 12 clips)."""
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    out = tmp_path_factory.mktemp("ststnet_cache")
    manifest = megc_tiny_cropped[megc_tiny_cropped["label_id"] >= 0]
    prepare(manifest, out, PreprocessConfig.preset("ststnet"), workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def full_run(ststnet_cache, tmp_path_factory):
    """An uninterrupted quick STSTNet run over every subject of the cache."""
    out = tmp_path_factory.mktemp("full_run")
    return out, run_loso(ststnet_cache, QUICK, out, progress=False)


def random_arrays(n_subjects=4, per_subject=3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    x = rng.integers(0, 256, (n, 28, 28, 3)).astype(np.uint8)
    y = np.arange(n) % 3
    subjects = [f"set{s % 2}/s{s}" for s in range(n_subjects) for _ in range(per_subject)]
    return x, y, subjects


# ----------------------------------------------------------------------------- recipes


def test_recipes_hold_the_paper_values():
    assert available_recipes() == ["arfnet", "bi_woof_svm", "hoof_svm", "lbp_sip_svm", "lbp_top_svm", "mobilevit_transfer",
                                   "off_tanet", "shufflenet_cbam_svm", "shufflenet_svm", "shufflenet_svm_changes",
                                   "shufflenet_svm_corrected", "shufflenet_vit_svm", "ststnet"]
    st = get_recipe("ststnet")
    assert isinstance(st, Recipe) and st.input == "flow_image"
    assert st.model_kwargs == {"variant": "original", "fuse_streams": True, "fuse_bn_pool": True}
    assert (st.input_size, st.optimizer, st.lr, st.batch_size, st.epochs, st.loss, st.lr_step) == (
        (28, 28, 3), "adam", 5e-5, 256, 800, "cross_entropy", None)
    assert st.normalisation is None and st.class_balancing is None and st.label_smoothing == 0.0
    for name in ("off_tanet", "arfnet"):
        r = get_recipe(name)
        assert (r.input, r.input_size, r.lr, r.batch_size, r.epochs, r.loss) == (
            "flow_stack", (112, 112, 3), 1e-3, 64, 201, "cross_entropy")
        assert [r.lr_at(e) for e in (0, 59, 60, 119, 120, 200)] == pytest.approx([1e-3, 1e-3, 3e-4, 3e-4, 9e-5, 2.7e-5])
        assert r.notes and r.model == name
    quick = get_recipe("off_tanet").quick(5)
    assert quick.name == "off_tanet-quick" and quick.epochs == 5 and quick.lr_step == 1 and quick.lr == 1e-3
    assert get_recipe("ststnet-quick") == QUICK and get_recipe(QUICK) is QUICK
    assert st.replace(lr=1e-4).lr == 1e-4 and st.lr == 5e-5
    with pytest.raises(ValueError, match="loss must be"):
        st.replace(loss="mse")
    with pytest.raises(KeyError, match="available: arfnet, bi_woof_svm, .*, mobilevit_transfer, off_tanet, shufflenet_cbam_svm, .*, ststnet"):
        get_recipe("nope")
    assert json.dumps(st.to_dict())


# ----------------------------------------------------------------------------- end to end + resume


def test_run_loso_end_to_end(full_run, ststnet_cache):
    out, report = full_run
    subjects = LOSODataset.from_cache(ststnet_cache, input="flow_image").subject_list()
    assert len(subjects) == 6
    for key in ("uf1", "uar"):
        assert 0.0 <= report[key] <= 1.0 and report.metrics[key] == report[key]
    assert report["n_clips"] == 12 and report["n_folds"] == 6
    for subject in subjects:
        fold = out / "folds" / subject.replace("/", "__")
        table = pd.read_csv(fold / "predictions.csv")
        assert len(table) and {"score_0", "score_1", "score_2"} <= set(table.columns)
        assert np.allclose(table[["score_0", "score_1", "score_2"]].sum(axis=1), 1.0, atol=1e-5)  # softmax scores
        history = json.loads((fold / "history.json").read_text())
        assert len(history["loss"]) == QUICK.epochs and not any(k.startswith("test_curve") for k in history)
        assert (fold / "done.json").is_file()
    assert (out / "report.json").is_file() and (out / "confusion_matrix.png").stat().st_size > 0
    saved = json.loads((out / "report.json").read_text())
    assert saved["config"]["recipe"]["name"] == "ststnet-quick" and saved["config"]["run"]["op_determinism"]
    assert set(saved["seeds"]["folds"]) == {s.replace("/", "__") for s in subjects}
    assert saved["versions"]["tensorflow"] and saved["runtime_s"] > 0
    assert report.markdown_row().startswith("| ststnet-quick |")


def test_resume_after_kill_equals_uninterrupted(full_run, ststnet_cache, tmp_path):
    _, reference = full_run
    out = tmp_path / "resumed"
    script = textwrap.dedent(f"""
        from mer_keras.training import get_recipe, run_loso
        run_loso({str(ststnet_cache)!r}, get_recipe("ststnet").quick(), {str(out)!r}, progress=False)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("folds/*/done.json")):
            assert proc.poll() is None, "the run ended before finishing a fold"
            assert time.monotonic() < deadline, "no fold finished within 120 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    finished = sorted(p.parent.name for p in out.glob("folds/*/done.json"))
    assert 1 <= len(finished) < 6

    resumed = run_loso(ststnet_cache, QUICK, out, progress=False)
    run = resumed.config["run"]
    assert run["reused_folds"] == finished and len(run["trained_folds"]) == 6 - len(finished)
    assert resumed.metrics == reference.metrics
    cols = ["subject", "clip", "y_true", "y_pred"]
    pd.testing.assert_frame_equal(resumed.predictions[cols], reference.predictions[cols])
    scores = [f"score_{k}" for k in range(3)]
    np.testing.assert_allclose(resumed.predictions[scores], reference.predictions[scores], atol=1e-6)


# ----------------------------------------------------------------------------- guards


def test_leaky_fold_raises_inside_the_engine(monkeypatch, tmp_path):
    import mer_keras.training.loso as loso

    x, y, subjects = random_arrays()
    ds = LOSODataset.from_arrays(x, y, subjects)
    test = np.flatnonzero(ds.subjects == "set0/s0")
    bad = Fold("set0__s0", "set0/s0", train_index=np.arange(len(ds)), test_index=test)  # train holds s0 too
    monkeypatch.setattr(loso, "loso_folds", lambda dataset, subjects=None: [bad])
    with pytest.raises(LeakageError, match="set0/s0"):
        run_loso(ds, QUICK, tmp_path, progress=False)
    assert not list(tmp_path.glob("folds/*/done.json"))


def test_normalisation_is_fitted_on_training_subjects_only(tmp_path):
    x, y, subjects = random_arrays()
    x = x.astype(np.float32)
    offset = np.asarray(subjects) == "set1/s3"
    x[offset] += 1e6  # the left-out subject: must not move the fitted statistics
    report = run_loso((x, y, subjects), QUICK, tmp_path, subjects=["set1/s3"], normalisation="per_channel",
                      epochs=1, progress=False)
    stats = json.loads((tmp_path / "folds/set1__s3/done.json").read_text())["extra"]["normalisation"]
    train = x[~offset]
    np.testing.assert_allclose(stats["mean"], train.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], train.std(axis=(0, 1, 2)), rtol=1e-4)
    assert max(stats["mean"]) < 300 and report["n_clips"] == 3


def test_wrong_input_shape_names_both(tmp_path):
    x, y, subjects = random_arrays()
    with pytest.raises(ValueError, match=r"samples are 28x28x3 but recipe 'off_tanet'.*expects 112x112x3.*'ststnet'"):
        run_loso((x, y, subjects), "off_tanet", tmp_path, progress=False)


# ----------------------------------------------------------------------------- dataset forms


def write_megc_folders(root: Path, seed=0) -> None:
    """MEGC2019 exchange layout: one subject per source, 2 clips each; u_train = the others' clips."""
    rng = np.random.default_rng(seed)
    clips = {s: [(f"{s}_{k}", k % 3, rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for k in range(2)]
             for s in ("sub01", "s01", "006")}
    for subject in clips:
        for owner, items in clips.items():
            split = "u_test" if owner == subject else "u_train"
            for name, label, image in items:
                folder = root / subject / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{name}.png"), image)


def test_megc_folder_and_in_memory_forms(tmp_path):
    write_megc_folders(tmp_path / "megc")
    report = run_loso(tmp_path / "megc", "ststnet", tmp_path / "run_megc", epochs=2, progress=False)
    assert report["n_folds"] == 3 and set(report.per_dataset.index) == {"casme2", "smic", "samm"}

    x, y, subjects = random_arrays()
    data = {"x": x, "y": y, "subjects": subjects}
    report = run_loso(data, "ststnet", tmp_path / "run_dict", subjects=["s1"], epochs=2, record_test_curve=True,
                      progress=False)
    assert report["n_clips"] == 3 and report.config["run"]["subjects"] == ["set1/s1"]
    history = json.loads((tmp_path / "run_dict/folds/set1__s1/history.json").read_text())
    assert len(history["test_curve_accuracy"]) == 2 and len(history["test_curve_y_pred"][0]) == 3


# ----------------------------------------------------------------------------- CLI


def test_cli_loso(ststnet_cache, tmp_path, capsys):
    from mer_keras.cli import main

    subject = LOSODataset.from_cache(ststnet_cache, input="flow_image").subject_list()[0]
    rc = main(["loso", "--data", str(ststnet_cache), "--recipe", "ststnet", "--quick", "--epochs", "2",
               "--out", str(tmp_path / "run"), "--subjects", subject, "--device", "cpu", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0 and "UF1" in printed and "UAR" in printed and "| ststnet-quick |" in printed
    assert (tmp_path / "run/report.json").is_file()

    with pytest.raises(SystemExit) as exc:
        main(["loso", "--data", str(ststnet_cache), "--recipe", "nope", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and err.count("\n") == 1 and err.startswith("mer-keras: error: unknown recipe 'nope'")
