"""The four papers' published numbers, as package data (``paper_results.csv``).

Every number of the result tables the experiment scripts compare with, transcribed from
the papers' texts, one value per line:

* ``liu2022-shufflenetv2-tvl1-svm`` (ShuffleNetV2 with TV-L1 pre-training and an SVM
  head, Scientific Reports 2022): Table 2 (ablation: 14 rows x UAR/UF1 x MMEW, CASME II,
  SMIC, SAMM), Table 3 (comparison; rows quoted with a reference are ``cited``), Table 4
  (time per sample, ms);
* ``zhang2021-off-tanet`` (Off-TANet, PRICAI 2021): Table 2 (UAR, UF1, params, FLOPs,
  memory read + write), Tables 3-4 (ablations), Table 5 (attention-map sparseness);
* ``zhang2022-arfnet-bottleneck-transformer`` (ARFNet, 2022): the abstract's UAR 73.09 %,
  UF1 72.25 % and 39,685 parameters (table ``"abstract"``);
* ``liu2022-mobilevit-macro-transfer`` (MobileViT with macro-expression transfer, Frontiers
  in Neurorobotics 2022): the abstract's accuracy 84.27 % and 35.4 ms per sample. Its
  Tables 2-4 are images in our copy: one ``not_in_text`` line per table records that, and
  the scripts print "not in text" in the paper column.

Columns (:data:`COLUMNS`): ``paper`` (id above), ``table`` (``"2"``, ``"3"``, ``"4"``,
``"5"`` or ``"abstract"``), ``row`` (the paper's row label without reference numbers;
spelling and asterisks as printed), ``dataset`` (``"MMEW"``, ``"CASME II"``, ``"SMIC"``,
``"SAMM"``; ``"composite"`` for a score over the paper's whole evaluation set; ``"-"`` for
numbers that belong to no dataset: parameters, FLOPs, memory, times, per-fold counts),
``metric`` (:data:`METRICS`), ``value`` (float; UAR/UF1/accuracy as fractions, params and
FLOPs as counts, ``mem_rw_mb`` in the paper's MB, ``time_ms`` in ms; empty only for
``not_in_text`` lines), ``kind`` (:data:`KINDS`: ``ran`` = the paper's own run,
``cited`` = a method the paper quotes with a reference, ``not_in_text``) and ``note``
(``printed: <text>`` whenever the printed form differs from ``value``, e.g. ``2.66M``,
``73.09%``, ``162,051``; any ambiguity of the text and how it was read).

Transcription choices (also in the notes):

* ShuffleNetV2 paper Table 3: every row printed with a reference number is ``cited``
  (the handcrafted baselines too: the text does not say the authors ran them); only
  "Proposed method" is ``ran``. Its values differ from Table 2's "ShuffleNetV2 with
  improved ViT" in six of eight cells, and its MobileNetV2 and DeiT rows differ from the
  Table 2 rows of the same networks; both are kept as printed. "-" cells are left out.
  NMER's SAMM UAR is printed ``04,894`` and read as 0.4894.
* Off-TANet Table 2 "Flops" is torchstat's Flops column, which counts multiply-accumulates;
  "MemR+W" is torchstat's total memory read + write, in its MB (2^20 bytes).
"""

from __future__ import annotations

import importlib.resources
import math
from functools import lru_cache

import pandas as pd

COLUMNS = ("paper", "table", "row", "dataset", "metric", "value", "kind", "note")
KINDS = ("ran", "cited", "not_in_text")
PAPERS: dict[str, str] = {
    "liu2022-shufflenetv2-tvl1-svm": "ShuffleNetV2 with TV-L1 flow pre-training and an SVM head (Scientific Reports 2022)",
    "zhang2021-off-tanet": "Off-TANet, triplet-attention optical-flow network (PRICAI 2021)",
    "zhang2022-arfnet-bottleneck-transformer": "ARFNet, bottleneck-Transformer flow network (2022)",
    "liu2022-mobilevit-macro-transfer": "MobileViT with macro-expression transfer (Frontiers in Neurorobotics 2022)",
}
METRICS: dict[str, tuple[float, float]] = {
    "uar": (0.0, 1.0), "uf1": (0.0, 1.0), "accuracy": (0.0, 1.0),
    "params": (1.0, 1e9), "flops": (1.0, 1e12), "mem_rw_mb": (0.0, 1e5), "time_ms": (0.0, 1e5),
    "test_set_size": (1.0, 1e4), "spatial_soft_0.01": (0.0, 1e7), "self_soft_0.01": (0.0, 1e7),
    "spatial_hoyer": (0.0, 1.0), "self_hoyer": (0.0, 1.0), "-": (math.nan, math.nan),
}
"""Metric name -> the closed range its values must lie in (``"-"``: ``not_in_text`` lines, no value)."""
DATASET_NAMES: dict[str, str] = {
    "casme2": "CASME II", "smic": "SMIC", "samm": "SAMM", "mmew": "MMEW", "casme": "CASME", "casme_sq": "CAS(ME)^2",
}
"""Dataset key of this package's readers -> the papers' column name."""
NOT_IN_TEXT = "not in text"
"""What the scripts print in the paper column when the paper's text has no such number."""

_FILE = "paper_results.csv"


@lru_cache(maxsize=1)
def _read() -> pd.DataFrame:
    source = importlib.resources.files("mer_keras.evaluation") / _FILE
    with importlib.resources.as_file(source) as path:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != COLUMNS:
        raise ValueError(f"{_FILE}: columns {list(frame.columns)}, expected {list(COLUMNS)}")
    frame["value"] = pd.to_numeric(frame["value"].replace("", math.nan), errors="raise").astype(float)
    return frame


def _table_key(table) -> str:
    text = str(table).strip()
    return text[len("table"):].strip() if text.lower().startswith("table") else text


def load(paper: str | None = None, table=None) -> pd.DataFrame:
    """The published numbers as a pandas DataFrame with :data:`COLUMNS` (a copy).

    ``paper``: a key of :data:`PAPERS` (``None``: all papers). ``table``: ``2``, ``"2"``,
    ``"Table 2"`` or ``"abstract"`` (``None``: all tables of the selection). An unknown
    paper or a table the selection does not have raises ``ValueError`` listing the known
    ones. ``value`` is a float (NaN only on ``not_in_text`` lines); every other column a string.
    """
    frame = _read()
    if paper is not None:
        if paper not in PAPERS:
            raise ValueError(f"unknown paper {paper!r}; known papers: {', '.join(sorted(PAPERS))}")
        frame = frame[frame["paper"] == paper]
    if table is not None:
        key = _table_key(table)
        known = sorted(set(frame["table"]))
        if key not in known:
            where = f"paper {paper!r}" if paper is not None else "the papers"
            raise ValueError(f"unknown table {table!r} for {where}; known tables: {', '.join(known)}")
        frame = frame[frame["table"] == key]
    return frame.reset_index(drop=True).copy()


def printed(line) -> str:
    """How ``line``'s value is printed in the paper: the note's ``printed: ...`` text, else the value as stored.

    ``line`` is a row of the *raw* CSV (value as text) or of :func:`load` (value as float;
    then the shortest decimal form is returned, which may drop trailing zeros).
    """
    note = str(line["note"])
    for part in note.split(";"):
        part = part.strip()
        if part.startswith("printed:"):
            return part[len("printed:"):].strip().split(" (")[0]
    value = line["value"]
    return value if isinstance(value, str) else f"{value:g}"


def lookup(frame: pd.DataFrame, row: str, dataset: str, metric: str) -> tuple[float | None, str | None]:
    """``(value, kind)`` of one number of ``frame`` (a :func:`load` result); ``(None, None)`` when absent."""
    hit = frame[(frame["row"] == row) & (frame["dataset"] == dataset) & (frame["metric"] == metric)]
    if hit.empty:
        return None, None
    value = hit["value"].iloc[0]
    return (None if pd.isna(value) else float(value)), str(hit["kind"].iloc[0])


__all__ = ["COLUMNS", "DATASET_NAMES", "KINDS", "METRICS", "NOT_IN_TEXT", "PAPERS", "load", "lookup", "printed"]
