"""The `mer-keras` command line: help on every subcommand, one-line errors, synth -> prepare."""

import subprocess
import sys

import pytest

from mer_keras.cli import build_parser, main

SUBCOMMANDS = ["synth", "prepare", "bench", "demo", "models", "datasets"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mer_keras.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help_on_every_subcommand(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--help"])
    assert exc.value.code == 0
    assert "usage: mer-keras " + sub in capsys.readouterr().out


def test_parser_lists_all_subcommands():
    text = build_parser().format_help()
    assert all(sub in text for sub in SUBCOMMANDS)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["prepare", "--out", "x"], "exactly one of --dataset"),
        (["prepare", "--composite", "megc2019", "--root", "casme2", "--out", "x"], "NAME=PATH"),
        (["prepare", "--composite", "megc2019", "--root", "casme2=/nonexistent/dir", "--out", "x"], "does not exist"),
        (["prepare", "--dataset", "casme2", "--out", "x"], "no root for casme2"),
        (["synth", "megc2019"], "--out"),
        (["nonsense"], "invalid choice"),
        (["models", "no_such_net"], "unknown model"),
    ],
)
def test_bad_arguments_exit_nonzero_with_one_line_reason(args, fragment):
    proc = run_cli(*args)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mer-keras") and fragment in last, proc.stderr


def test_unknown_part_of_composite_is_named(tmp_path):
    proc = run_cli("prepare", "--composite", "megc2019", "--root", f"casme={tmp_path}", "--out", str(tmp_path / "c"))
    assert proc.returncode == 2 and "has no part ['casme']" in proc.stderr


def test_synth_then_prepare_end_to_end(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    proc = run_cli("synth", "megc2019", "--out", str(data), "--subjects", "1", "--clips", "2", "--frames", "7")
    assert proc.returncode == 0, proc.stderr
    assert "mer-keras prepare --composite megc2019" in proc.stdout
    proc = run_cli("prepare", "--composite", "megc2019", "--data-dir", str(data), "--preset", "ststnet",
                   "--workers", "1", "--no-progress", "--out", str(cache))
    assert proc.returncode == 0, proc.stderr
    assert "prepared 6 of 6 clips" in proc.stdout
    assert (cache / "manifest.csv").is_file() and (cache / "cache.json").is_file()
    # one dataset, as the README's first command on licensed data does (--dataset NAME --root NAME=DIR)
    proc = run_cli("prepare", "--dataset", "casme2", "--root", f"casme2={data / 'casme2'}", "--preset", "ststnet",
                   "--workers", "1", "--no-progress", "--out", str(tmp_path / "casme2"))
    assert proc.returncode == 0, proc.stderr
    assert "prepared 2 of 2 clips" in proc.stdout and (tmp_path / "casme2" / "cache.json").is_file()


def test_models_table_lists_params_and_macs():
    proc = run_cli("models", "off_tanet", "ststnet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["name", "input_size", "trainable_params", "macs", "flops"]
    assert "59,403" in proc.stdout and "1,683" in proc.stdout and "112x112x3" in proc.stdout


def test_synth_passes_identity_variety_and_bench_preprocess_its_sizes(monkeypatch, tmp_path):
    from mer_keras.data import synthetic
    from mer_keras.preprocess import bench

    calls = {}
    monkeypatch.setattr(synthetic, "write_composite", lambda name, out, **kw: calls.update(synth=kw) or {})
    assert main(["synth", "megc2019", "--out", str(tmp_path / "d"), "--identity-variety"]) == 0
    assert calls["synth"]["identity_variety"] is True and calls["synth"]["release"] == "both"
    assert main(["synth", "megc2019", "--out", str(tmp_path / "e")]) == 0
    assert "identity_variety" not in calls["synth"]  # the default leaves the writer's default
    monkeypatch.setattr(bench, "run_preprocess_bench", lambda **kw: calls.update(frames=kw))
    monkeypatch.setattr(bench, "run_prepare_throughput", lambda processes, **kw: calls.update(prepare=(processes, kw)))
    assert main(["bench", "preprocess", "--processes", "2", "--subjects", "23", "--clips-per-subject", "6"]) == 0
    assert calls["prepare"] == ((2,), {"subjects_per_dataset": 23, "clips_per_subject": 6})


# ----------------------------------------------------------------------------- bench fold


def test_bench_fold_passes_its_options(monkeypatch):
    import mer_keras.training.bench_fold as bench_fold

    calls = {}
    monkeypatch.setattr(bench_fold, "run_fold_bench", lambda workdir, **kwargs: calls.update(workdir=workdir, **kwargs))
    assert main(["bench", "fold", "--clips", "20", "--frames", "4", "--size", "48", "--epochs", "1",
                 "--width", "0.5", "--workdir", "w", "--workers", "1"]) == 0
    assert calls == dict(workdir="w", size=48, frames_per_clip=4, clips=20, epochs=1, pretrain_epochs=None,
                         recipe="shufflenet_svm_corrected", width=0.5, workers=1)
    calls.clear()
    assert main(["bench", "fold"]) == 0
    assert calls["size"] == 224 and calls["frames_per_clip"] == 30 and calls["clips"] is None and calls["epochs"] == 2


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--pretrain-epochs", "0"], ["--clips", "0"]])
def test_bench_fold_rejects_bad_counts(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "fold", *args])
    assert exc.value.code == 2 and "mer-keras: error:" in capsys.readouterr().err


def test_fold_bench_table_lists_rates_reference_and_rss_ratio():
    from mer_keras.training.bench_fold import REFERENCE_LINE, format_fold_bench

    gb = 1024**3
    results = {
        "data": {"n_clips": 442, "n_subjects": 68, "size": 224, "frames_per_clip": 30, "n_frames": 13260,
                 "frame_bytes": 665 * 1024**2, "frame_dtype": "uint8", "reused": True, "seconds": 1.0},
        "fold": {"recipe": "shufflenet_svm_corrected-bench", "width": 1.0, "cpu_count": 2, "subject": "samm/020",
                 "n_test": 1, "epochs": 2, "pretrain_epochs": 2, "child_wall_s": 600.0, "n_train_frames": 13000,
                 "n_flipped_frames": 6500, "load_s": 30.0},
        "stage1": {"epochs": 2, "samples_per_epoch": 200, "first_epoch_s": 30.0, "s_per_epoch": 8.0,
                   "samples_per_s": 25.0, "includes_tracing": False},
        "stage2": {"epochs": 1, "samples_per_epoch": 19500, "first_epoch_s": 700.0, "s_per_epoch": 700.0,
                   "samples_per_s": 27.9, "includes_tracing": True},
        "rss": {"start": 0.3 * gb, "after_load": 1.0 * gb, "after_stage1": 2.0 * gb, "peak": 3.0 * gb,
                "ratio_to_target": 0.75},
    }
    text = format_fold_bench(results)
    assert REFERENCE_LINE in text and "262 samples/s" in text
    assert "25.0" in text and "27.9 (incl. tracing)" in text and "19,500" in text
    assert "peak / 4 GB target: 0.75 (within the target)" in text and "end 3.00 GB" in text
    died = {"data": results["data"], "fold": results["fold"], "error": "the fold's child process failed: exit code -9"}
    assert "ERROR: the fold's child process failed" in format_fold_bench(died)


@pytest.mark.slow
def test_fold_bench_runs_one_tiny_fold_in_a_child_process(tmp_path):
    from mer_keras.training.bench_fold import prepare_megc_sized_cache, run_fold_bench

    r = run_fold_bench(tmp_path, size=48, frames_per_clip=3, clips=15, epochs=2, pretrain_epochs=1, width=0.5,
                       workers=1, progress=False, print_fn=None)
    assert "error" not in r, r.get("error")
    assert r["data"]["n_subjects"] >= 3 and r["data"]["n_clips"] >= 15 and r["data"]["frame_dtype"] == "uint8"
    assert r["fold"]["load_s"] > 0 and r["fold"]["fold_s"] > 0  # timed through the protocol and an epoch hook
    assert r["stage1"]["epochs"] == 1 and r["stage1"]["includes_tracing"]
    assert r["stage2"]["epochs"] == 2 and not r["stage2"]["includes_tracing"]
    assert r["stage2"]["samples_per_epoch"] == r["fold"]["n_train_frames"] + r["fold"]["n_flipped_frames"]
    assert r["stage1"]["samples_per_s"] > 0 and r["stage2"]["samples_per_s"] > 0
    assert 0 < r["rss"]["start"] <= r["rss"]["after_load"] <= r["rss"]["after_stage1"] <= r["rss"]["peak"]
    assert r["rss"]["ratio_to_target"] == pytest.approx(r["rss"]["peak"] / 4 / 1024**3)
    again = prepare_megc_sized_cache(tmp_path, size=48, frames_per_clip=3, clips=15, workers=1, progress=False)
    assert again["reused"] and again["n_clips"] == r["data"]["n_clips"] and not r["data"]["reused"]


# ----------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_wiring_runs_both_recipes_and_prints_both_reports(tmp_path, capsys):
    """Tiny sizes, one epoch per stage, one ShuffleNetV2-SVM fold: the wiring, not the numbers."""
    from mer_keras.demo import CHANGES_RECIPE, SHUFFLENET_RECIPE, run_demo

    reports = run_demo(tmp_path, subjects_per_dataset=1, clips_per_subject=3, workers=1, epochs=1,
                       shufflenet_size=48, shufflenet_pretrain_epochs=1, shufflenet_epochs=1, shufflenet_folds=1,
                       frame_size=(320, 240), n_frames=5, progress=False)
    text = capsys.readouterr().out
    assert set(reports) == {"off_tanet", SHUFFLENET_RECIPE, CHANGES_RECIPE}
    ot, sn = reports["off_tanet"], reports[SHUFFLENET_RECIPE]
    assert ot.metrics["n_folds"] == 3 and sn.metrics["n_folds"] == 1
    assert sn.config["recipe"]["model_kwargs"]["width_multiplier"] == 0.5
    assert sn.config["recipe"]["input_size"] == [48, 48, 3] and sn.config["recipe"]["model_kwargs"]["l2"] < 0.2
    assert reports[CHANGES_RECIPE].config["recipe"]["input"] == "frame_changes"
    for run in ("loso_off_tanet", "loso_shufflenet_svm", "loso_shufflenet_svm_changes"):
        assert (tmp_path / run / "report.json").is_file()
        assert str(tmp_path / run / "confusion_matrix.png") in text
        assert (tmp_path / run / "confusion_matrix.png").stat().st_size > 0
    for fragment in ("Off-TANet: pooled UF1", "ShuffleNetV2-SVM: pooled UF1", "linear LOSO probe", "L2 5e-4",
                     "| run | UF1 | UAR | Acc |", "| off_tanet |", f"| {SHUFFLENET_RECIPE} |", "same 1 left-out subjects"):
        assert fragment in text, fragment


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--shufflenet-epochs", "0"], ["--shufflenet-folds", "-1"]])
def test_demo_rejects_bad_counts(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *args])
    assert exc.value.code == 2 and "mer-keras: error:" in capsys.readouterr().err
