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


def test_models_table_lists_params_and_macs():
    proc = run_cli("models", "off_tanet", "ststnet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["name", "input_size", "trainable_params", "macs", "flops"]
    assert "59,403" in proc.stdout and "1,683" in proc.stdout and "112x112x3" in proc.stdout
