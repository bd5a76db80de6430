"""The command line's one error boundary (issue 22, part 2): a user-caused error is one line.

Every case checks the exit code, that the last stderr line starts with ``mer-keras: error:``
and names the file or argument, and that no traceback is printed; ``--debug`` shows it.
Each class of failure of the issue has a test: a truncated ``.xlsx`` annotation, an output
that cannot be written (read-only folder, a path under a regular file, a full disk) for
``prepare``, ``loso``, ``fit-final`` and ``export``, a subject on both sides of a MEGC2019
split, meaningless numeric options, an apex-only cache given to a flow recipe and a
truncated ``model.keras``. Data: a tiny synthetic CASME II set (2 subjects x 2 clips,
3 frames, 320 x 240); nothing here trains.
"""

import errno
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from mer_keras import cli
from mer_keras.cli import main
from mer_keras.quiet import MARKER, QUIET_ENV

from .test_cli import run_cli


def failure(argv, capsys):
    """``(exit code, last stderr line)`` of an in-process ``main(argv)`` that must fail with one line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mer-keras: error:"), err
    assert exc.value.code not in (0, None)
    return exc.value.code, last


@pytest.fixture(scope="module")
def casme2(tmp_path_factory):
    """A synthetic CASME II-layout dataset with its ``.xlsx`` annotation."""
    from mer_keras.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("casme2")
    info = write_dataset("casme2", root, n_subjects=2, clips_per_subject=2, n_frames=3, frame_size=(320, 240), seed=1)
    return root, info


@pytest.fixture
def blocked(tmp_path):
    """A regular file: paths under it cannot be created."""
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


def source_args(casme2):
    root, _ = casme2
    return ["--dataset", "casme2", "--root", f"casme2={root}"]


# ----------------------------------------------------------------------------- annotation files


def test_truncated_xlsx_annotation_is_named(casme2, tmp_path):
    import shutil

    root, info = casme2
    copy = tmp_path / "casme2"
    shutil.copytree(root, copy)
    xlsx = copy / os.path.basename(info["annotation"])
    data = xlsx.read_bytes()
    xlsx.write_bytes(data[: len(data) // 2])
    proc = run_cli("prepare", "--dataset", "casme2", "--root", f"casme2={copy}", "--workers", "1", "--no-progress",
                   "--out", str(tmp_path / "cache"))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert last.startswith("mer-keras: error: cannot read annotation file") and str(xlsx) in last
    assert "BadZipFile" in last and "copy it again" in last
    assert not (tmp_path / "cache").exists()


# ----------------------------------------------------------------------------- outputs that cannot be written


def command(name, casme2, tmp_path, out):
    """argv of ``name`` writing to ``out``; every other argument valid."""
    if name == "prepare":
        return ["prepare", *source_args(casme2), "--workers", "1", "--no-progress", "--out", str(out)]
    if name == "loso":
        return ["loso", "--data", str(tmp_path), "--recipe", "ststnet", "--out", str(out), "--no-progress"]
    if name == "fit-final":
        return ["fit-final", "--data", str(tmp_path), "--recipe", "ststnet", "--out", str(out), "--no-progress"]
    return ["export", "--pipeline", str(tmp_path), "--out", str(out) + ".tflite"]


@pytest.fixture
def no_work(monkeypatch):
    """The work functions of the four writing commands, replaced by a recorder: the check must come first."""
    import mer_keras.inference.export as export
    import mer_keras.inference.fit as fit
    import mer_keras.preprocess.cache as cache
    import mer_keras.training as training

    calls = []
    for module, name in ((cache, "prepare"), (training, "run_loso"), (fit, "fit_final"), (export, "export_tflite")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: calls.append(_name))
    return calls


WRITERS = ["prepare", "loso", "fit-final", "export"]


@pytest.mark.parametrize("name", WRITERS)
def test_output_under_a_regular_file(name, casme2, tmp_path, blocked, no_work, capsys):
    code, last = failure(command(name, casme2, tmp_path, blocked / "out"), capsys)
    assert code == 2 and "--out" in last and str(blocked) in last and "is a file, not a folder" in last
    assert no_work == []


@pytest.mark.parametrize("name", WRITERS)
def test_output_in_a_read_only_folder(name, casme2, tmp_path, no_work, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write into a 0o500 folder (root); the fake-errno test covers the message")
        code, last = failure(command(name, casme2, tmp_path, locked / "out"), capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "--out" in last and str(locked) in last and "permission denied" in last
    assert "choose a writable folder" in last and no_work == []


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("code_name, reason", [("EROFS", "read-only"), ("ENOSPC", "disk is full"),
                                               ("EACCES", "permission denied")])
def test_output_probe_fails_before_the_work(name, code_name, reason, casme2, tmp_path, no_work, monkeypatch, capsys):
    """A read-only file system or a full disk, simulated: the probe file cannot be written."""

    def unwritable(*args, **kwargs):
        raise OSError(getattr(errno, code_name), os.strerror(getattr(errno, code_name)), kwargs.get("dir"))

    monkeypatch.setattr(cli, "tempfile", types.SimpleNamespace(NamedTemporaryFile=unwritable))
    code, last = failure(command(name, casme2, tmp_path, tmp_path / "out"), capsys)
    assert code == 2 and "--out" in last and str(tmp_path / "out") in last and reason in last
    assert no_work == []


@pytest.mark.parametrize("filename", [None, "clips/sub01__EP02_01f.npz"])
def test_disk_full_during_the_work(filename, casme2, tmp_path, monkeypatch, capsys):
    import mer_keras.preprocess.cache as cache

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([filename] if filename else []))

    monkeypatch.setattr(cache, "prepare", full)
    code, last = failure(command("prepare", casme2, tmp_path, tmp_path / "cache"), capsys)
    assert code == 1 and "disk is full" in last and "free some space" in last
    assert (filename in last) if filename else (f"--out {tmp_path / 'cache'}" in last)


# ----------------------------------------------------------------------------- leakage


@pytest.fixture
def leaky_megc_tree(tmp_path):
    """A MEGC2019 folder tree whose sub01/u_train holds sub01's own u_test image."""
    import cv2

    root = tmp_path / "megc"
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for s in ("sub01", "sub02")}
    labels = {"sub01": "0", "sub02": "1"}
    for subject in images:
        places = [("u_test", subject)] + [("u_train", other) for other in images if other != subject]
        if subject == "sub01":
            places.append(("u_train", "sub01"))  # the leak
        for split, owner in places:
            folder = root / subject / split / labels[owner]
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{owner}_a.png"), images[owner])
    return root


def test_subject_on_both_sides_is_one_line(leaky_megc_tree, tmp_path):
    proc = run_cli("loso", "--data", str(leaky_megc_tree), "--recipe", "ststnet", "--quick", "--no-progress",
                   "--out", str(tmp_path / "run"))
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert last.startswith(f"mer-keras: error: --data {leaky_megc_tree}: subject 'sub01'") and "fix the folders" in last
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(leaky_megc_tree, tmp_path):
    proc = run_cli("--debug", "loso", "--data", str(leaky_megc_tree), "--recipe", "ststnet", "--quick",
                   "--no-progress", "--out", str(tmp_path / "run"))
    assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr
    assert "LeakageError: subject 'sub01'" in proc.stderr and "mer-keras: error:" not in proc.stderr


# ----------------------------------------------------------------------------- numeric options


@pytest.mark.parametrize("argv, option", [
    (["synth", "casme2", "--out", "x", "--subjects", "0"], "--subjects"),
    (["synth", "casme2", "--out", "x", "--clips", "-1"], "--clips"),
    (["synth", "casme2", "--out", "x", "--frames", "2"], "--frames"),
    (["synth", "casme2", "--out", "x", "--seed", "-1"], "--seed"),
    (["prepare", "--dataset", "casme2", "--out", "x", "--size", "0"], "--size"),  # 0 used to mean the preset's size
    (["prepare", "--dataset", "casme2", "--out", "x", "--workers", "0"], "--workers"),
    (["bench", "preprocess", "--repeats", "0"], "--repeats"),
    (["bench", "preprocess", "--threads", "0"], "--threads"),
    (["bench", "preprocess", "--processes", "1", "0"], "--processes"),
    (["bench", "train", "--folds", "0"], "--folds"),
    (["bench", "fold", "--size", "4"], "--size"),
    (["bench", "fold", "--frames", "1"], "--frames"),
    (["bench", "fold", "--width", "0"], "--width"),
    (["bench", "fold", "--workers", "0"], "--workers"),
    (["demo", "--shufflenet-size", "0"], "--shufflenet-size"),
    (["demo", "--shufflenet-width", "-0.5"], "--shufflenet-width"),
    (["demo", "--shufflenet-pretrain-epochs", "0"], "--shufflenet-pretrain-epochs"),
    (["demo", "--appearance-strength", "2"], "--appearance-strength"),
    (["demo", "--workers", "0"], "--workers"),
    (["models", "--classes", "1"], "--classes"),
    (["loso", "--data", "d", "--out", "o", "--epochs", "0"], "--epochs"),
    (["loso", "--data", "d", "--out", "o", "--workers", "0"], "--workers"),
    (["loso", "--data", "d", "--out", "o", "--cpus-per-fold", "0"], "--cpus-per-fold"),
    (["loso", "--data", "d", "--out", "o", "--gpus-per-fold", "-1"], "--gpus-per-fold"),
    (["loso", "--data", "d", "--out", "o", "--vectorise-folds", "0"], "--vectorise-folds"),
    (["fit-final", "--data", "d", "--out", "o", "--epochs", "-3"], "--epochs"),
    (["fit-final", "--data", "d", "--out", "o", "--seed", "x"], "--seed"),
    (["predict", "c", "--pipeline", "p", "--onset", "-1"], "--onset"),
    (["predict", "c", "--pipeline", "p", "--apex", "1.5"], "--apex"),
    (["export", "--pipeline", "p", "--out", "o", "--check", "-1"], "--check"),
])
def test_meaningless_numbers_are_refused_at_the_boundary(argv, option, capsys):
    code, last = failure(argv, capsys)
    assert code == 2 and f"argument {option}: takes " in last and "got " in last
    assert f"see `mer-keras {argv[0]} --help`" in last


def test_numeric_options_keep_their_values():
    parser = cli.build_parser()
    args = parser.parse_args(["loso", "--data", "d", "--out", "o", "--vectorise-folds", "auto", "--gpus-per-fold", "0"])
    assert args.vectorise_folds == "auto" and args.gpus_per_fold == 0.0
    assert parser.parse_args(["loso", "--data", "d", "--out", "o", "--vectorise-folds", "3"]).vectorise_folds == 3
    assert parser.parse_args(["demo", "--shufflenet-folds", "0", "--appearance-strength", "0"]).shufflenet_folds == 0
    assert parser.parse_args(["prepare", "--dataset", "casme2", "--out", "x", "--size", "48"]).size == 48


# ----------------------------------------------------------------------------- caches and bundles


def test_apex_only_cache_with_a_flow_recipe_names_the_presets(casme2, tmp_path, capsys):
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.data import load_dataset

    root, _ = casme2
    cache = tmp_path / "apex"
    prepare(load_dataset("casme2", root), cache, PreprocessConfig.preset("mobilevit_apex", size=48), workers=1,
            progress=False)
    code, last = failure(["loso", "--data", str(cache), "--recipe", "off_tanet", "--quick", "--no-progress",
                          "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and str(cache) in last and "apex frames only" in last and "'off_tanet'" in last
    assert "not a file in the archive" not in last


def test_truncated_model_file_is_named(tmp_path, monkeypatch, capsys):
    import keras

    import mer_keras.inference.bundle as bundle

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    (tmp_path / "b").mkdir()
    model.save(tmp_path / "b" / bundle.MODEL_FILE)
    data = (tmp_path / "b" / bundle.MODEL_FILE).read_bytes()
    (tmp_path / "b" / bundle.MODEL_FILE).write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(bundle, "read_meta", lambda path, strict=True: {})  # only the model file is under test
    code, last = failure(["predict", "clip", "--pipeline", str(tmp_path / "b"), "--no-progress"], capsys)
    assert code == 1 and str(tmp_path / "b" / bundle.MODEL_FILE) in last and "truncated" in last
    assert "File not found" not in last


# ----------------------------------------------------------------------------- smaller items


def test_synth_prints_a_summary_not_a_table(tmp_path, capsys):
    assert main(["synth", "casme2", "--out", str(tmp_path / "d"), "--subjects", "1", "--clips", "2",
                 "--frames", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"casme2: 2 clips of 1 subject in {tmp_path / 'd'}, annotation CASME2-coding-20140508.xlsx"
    assert lines[1].startswith("next: mer-keras prepare --dataset casme2") and len(lines) == 2


def test_tensorflow_start_up_is_quiet():
    env = {k: v for k, v in os.environ.items() if k not in QUIET_ENV and k != MARKER}
    code = ("from mer_keras.quiet import quiet_tensorflow; quiet_tensorflow(); import subprocess, sys; "
            "import tensorflow as tf; tf.zeros(1) + 1; "  # a spawned worker inherits the quiet import:
            "subprocess.run([sys.executable, '-c', 'import mer_keras, tensorflow'], check=True)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    env["TF_CPP_MIN_LOG_LEVEL"] = "1"  # the user's choice is kept
    code = ("import os; from mer_keras.quiet import quiet_tensorflow; quiet_tensorflow(); "
            "print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'GRPC_VERBOSITY' in os.environ)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["1", "False"], proc.stderr
