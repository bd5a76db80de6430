"""What the tests of the numbered experiment scripts (``experiments/NN_*.py``) share.

A script is found by its number; ``--quick`` runs go to ``SHARED/<number>`` with one
synthetic data folder, ``SHARED/data``, per test module (each composite written and
prepared once).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from mer_keras.evaluation import experiments as ex

ROOT = Path(__file__).resolve().parents[1]


def script_path(key: str) -> Path:
    """``experiments/<key>_*.py`` (exactly one)."""
    found = sorted((ROOT / "experiments").glob(f"{key}_*.py"))
    assert len(found) == 1, (key, found)
    return found[0]


def load_script(key: str):
    """The script's module (its ``TABLE`` and ``main``), imported without running it."""
    spec = importlib.util.spec_from_file_location(f"experiment_{key}", script_path(key))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_argv(shared: Path, key: str) -> list[str]:
    return ["--quick", "--out", str(shared / key), "--data-dir", str(shared / "data"), "--no-progress"]


def run_quick(shared: Path, key: str) -> subprocess.CompletedProcess:
    """``python experiments/<key>_*.py --quick ...`` as a user types it; fails the test on a non-zero exit."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(script_path(key)), *quick_argv(shared, key)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def read_results(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert tuple(frame.columns) == ex.RESULT_COLUMNS
    return frame


def check_markdown(out: Path, table, rows) -> str:
    """results.md: an "ours" and a "paper" column per table column, a line per row."""
    text = (out / "results.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| row |"))
    for col in table.columns:
        assert f"| {col.title} ours | {col.title} paper |" in header
    for row in rows:
        assert f"| {row} |" in text, row
    return text


def fold_counts(out: Path) -> dict[str, tuple[list, list]]:
    """Per row that ran: (trained folds, reused folds) from ``runs.json``."""
    runs = json.loads((out / "runs.json").read_text())["rows"]
    return {label: (r["trained_folds"], r["reused_folds"]) for label, r in runs.items() if r.get("status") == "ran"}
