"""Evaluation utilities: inference latency of the papers' timing tables (:mod:`.timing`) and the
Off-TANet attention-map analysis (:mod:`.attention`, paper Table 5 and Fig. 5).

The names are re-exported lazily so that ``python -m mer_keras.evaluation.timing`` does not
import the module twice.
"""

from __future__ import annotations

import importlib

_TIMING = ("INPUT_SIZES", "PAPER_TIMES", "REFERENCE", "TABLE4_ROWS", "PaperTime",
           "measure_latency", "run_latency_bench")

_ATTENTION = ("AttentionMaps", "attention_maps", "figure5_maps", "hoyer_sparseness", "plot_attention_maps",
              "soft_count", "sparseness")

__all__ = list(_TIMING) + list(_ATTENTION)


def __getattr__(name):
    if name in _TIMING:
        return getattr(importlib.import_module("mer_keras.evaluation.timing"), name)
    if name in _ATTENTION:
        return getattr(importlib.import_module("mer_keras.evaluation.attention"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_TIMING) + list(_ATTENTION))


# LOSO metrics (UF1/UAR, pooled and per subject) and run reports: :mod:`.metrics`, :mod:`.report`
from mer_keras.evaluation.metrics import (  # noqa: E402
    DEFAULT_LABELS, PREDICTION_COLUMNS, SubjectScores, accuracy, class_scores, confusion,
    per_dataset_scores, per_subject_scores, pooled_scores, uar, uf1, validate_predictions)
from mer_keras.evaluation.report import (  # noqa: E402
    LOSOReport, markdown_header, markdown_table, package_versions)

__all__ += ["DEFAULT_LABELS", "PREDICTION_COLUMNS", "SubjectScores", "accuracy", "class_scores",
            "confusion", "per_dataset_scores", "per_subject_scores", "pooled_scores", "uar", "uf1",
            "validate_predictions", "LOSOReport", "markdown_header", "markdown_table",
            "package_versions"]
