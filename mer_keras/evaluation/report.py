"""One LOSO run's results as a report: headline metrics, tables, confusion figure, provenance.

:class:`LOSOReport` is built from the predictions frame the LOSO engine writes (one row
per test clip: ``clip, subject, dataset, y_true, y_pred``; see
:mod:`mer_keras.evaluation.metrics`) and the run's metadata. Its headline numbers follow
the MEGC2019 protocol (all folds pooled); the Off-TANet/ARFNet convention (unweighted mean
of per-subject scores) sits beside them as ``uf1_subject_mean`` / ``uar_subject_mean``,
since those papers' published UF1/UAR are of that kind and the two conventions can differ
by several points on the same predictions.

``save(out_dir)`` writes, each file atomically (temporary file + :func:`os.replace`, with
``report.json`` last so its presence means the set is complete; other files already in
``out_dir`` are left alone):

``report.json``          metrics, per-class, per-dataset and per-subject scores, confusion
                         matrix, config, seeds, runtime, package versions
``confusion_matrix.png`` raw counts and row-normalised panels (scikit-learn
                         ``ConfusionMatrixDisplay``, rendered with the Agg canvas)
``per_subject.csv``, ``per_dataset.csv``
``table_row.md``         a markdown header + this run's row (the last line stacks with
                         other runs' rows; :func:`markdown_table` builds the whole table)
``report_predictions.csv`` the validated predictions, so the report can be recomputed

Test-selected numbers
---------------------
Some public MER code keeps, for each left-out subject, the epoch that scored best *on that
subject's test clips*. That uses the test labels for model selection, so the number is an
optimistic bound, not an estimate of performance on unseen subjects (one public log shows
final-epoch UF1 0.23 against "best epoch" 0.67 on the same folds). When such predictions
are supplied — a ``selected_on_test`` column of predicted labels in the predictions frame,
or ``test_selected=<predictions frame>`` — the report computes them for comparison only:
they live in :attr:`LOSOReport.test_selected` under keys ``test_selected_*``, are stored
under ``"test_selected"`` in ``report.json`` with a note, and never enter
:attr:`LOSOReport.metrics`, ``report[...]``, or the default markdown columns (a caller
must ask for a ``test_selected_*`` column by name, and its header then says "leaky").

Reading results folders
-----------------------
What ``notebooks/`` use: :func:`run_folders` (the run folders of an ``experiments/`` script's
``--out`` folder), :func:`load_run_report` (a run's report with its predictions, also of a run
stopped before its last fold), :func:`plot_confusion` (one panel of ``confusion_matrix.png``),
:func:`history_stages` and :func:`training_curves` (the per-epoch curves in the folds'
``history.json``, per training stage).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mer_keras.evaluation.metrics import (
    class_scores,
    confusion as _confusion,
    per_dataset_scores,
    per_subject_scores,
    pooled_scores,
    validate_predictions,
)

__all__ = ["LOSOReport", "TEST_SELECTED_NOTE", "markdown_header", "markdown_table",
           "package_versions"]

DEFAULT_CLASS_NAMES: tuple[str, ...] = ("negative", "positive", "surprise")

TEST_SELECTED_NOTE = (
    "Scores of predictions whose epoch/model was chosen by its score on the left-out test "
    "subject. This uses the test labels for model selection (leakage), so they are an "
    "optimistic bound, not an estimate of performance on unseen subjects; they are kept "
    "out of the headline metrics on purpose."
)

FORMAT_VERSION = 1

# distribution names tried for each reported package (first one installed wins)
_VERSION_DISTS: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    "scikit-learn": ("scikit-learn",),
    "keras": ("keras",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly"),
    "opencv": ("opencv-contrib-python-headless", "opencv-python-headless",
               "opencv-contrib-python", "opencv-python"),
    "matplotlib": ("matplotlib",),
    "mer-keras": ("mer-keras", "mer_keras"),
}

_HEADLINE_LABELS = {
    "name": "run",
    "uf1": "UF1",
    "uar": "UAR",
    "accuracy": "Acc",
    "uf1_subject_mean": "UF1 (subject mean)",
    "uar_subject_mean": "UAR (subject mean)",
    "accuracy_subject_mean": "Acc (subject mean)",
    "n_clips": "clips",
    "n_subjects": "subjects",
    "n_folds": "folds",
    "n_datasets": "datasets",
    "runtime_s": "runtime (s)",
}


def package_versions() -> dict[str, str | None]:
    """Installed versions (``importlib.metadata``) of the packages a result depends on;
    ``None`` for a package that is not installed."""
    out: dict[str, str | None] = {}
    for key, dists in _VERSION_DISTS.items():
        out[key] = None
        for dist in dists:
            try:
                out[key] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def _jsonable(obj):
    """Convert ``obj`` to plain JSON types (non-finite floats -> None, unknown -> str)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return _jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(float(v)) else f"{float(v):.4f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _column_label(col: str) -> str:
    if col.startswith("test_selected_"):
        base = _HEADLINE_LABELS.get(col[len("test_selected_"):], col[len("test_selected_"):])
        return f"{base} selected on test (leaky)"
    if "/" in col:
        dataset, metric = col.split("/", 1)
        return f"{dataset} {_HEADLINE_LABELS.get(metric, metric)}"
    return _HEADLINE_LABELS.get(col, col)


def markdown_header(columns: Sequence[str]) -> str:
    """The two header lines (titles and ``|---|`` separator) of a markdown table whose rows
    are :meth:`LOSOReport.markdown_row` with the same ``columns``."""
    columns = list(columns)
    titles = "| " + " | ".join(_column_label(c) for c in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    return titles + "\n" + sep


def _default_columns(datasets: Iterable[str]) -> list[str]:
    cols = ["name", "uf1", "uar"]
    for d in datasets:
        cols += [f"{d}/uf1", f"{d}/uar"]
    return cols


def markdown_table(reports: Sequence["LOSOReport"], columns: Sequence[str] | None = None) -> str:
    """Stack several runs into one markdown table (header + one row per report).

    Default columns: run name, pooled UF1, UAR, then UF1/UAR of every dataset seen in any
    report (in order of first appearance); a run without that dataset shows ``–``.
    """
    if columns is None:
        seen: list[str] = []
        for r in reports:
            seen += [d for d in r.per_dataset.index if d not in seen]
        columns = _default_columns(seen)
    return "\n".join([markdown_header(columns)] + [r.markdown_row(columns) for r in reports])


class LOSOReport:
    """Results of one leave-one-subject-out run.

    Attributes
    ----------
    metrics : dict
        Headline numbers. ``uf1``, ``uar``, ``accuracy``: all folds pooled (MEGC2019
        protocol, Off-TANet Eqs. 11-12 on the whole evaluation set). ``uf1_subject_mean``,
        ``uar_subject_mean``, ``accuracy_subject_mean``: unweighted mean over left-out
        subjects (the Off-TANet/ARFNet convention). ``n_clips``, ``n_subjects`` (distinct
        ``(dataset, subject)`` pairs), ``n_folds`` (distinct ``fold`` values if the
        predictions have that column, else ``n_subjects``), ``n_datasets``.
        ``report[key]`` is ``report.metrics[key]``.
    per_dataset : DataFrame
        Index ``dataset``; pooled ``uf1, uar, accuracy``, ``uf1_subject_mean,
        uar_subject_mean``, ``n_clips, n_subjects`` of each source dataset.
    per_subject : DataFrame
        ``dataset, subject, n_clips, uf1, uar, accuracy`` of each left-out subject.
    per_class : DataFrame
        Pooled per-class terms (index: class names): ``n_true, n_pred, tp, f1, recall``.
    confusion : DataFrame
        Pooled confusion counts, index = true class names, columns = predicted class names.
    test_selected : dict
        ``test_selected_*`` scores of predictions selected on the test subject (empty if
        none were given). Never part of :attr:`metrics`; see the module docstring.
    predictions : DataFrame or None
        The validated predictions (``None`` if a loaded report had no predictions file).
    config, seeds, runtime_s, versions, name, class_names, labels, created_utc
        Provenance stored with the report.
    """

    def __init__(self, *, name, metrics, per_dataset, per_subject, per_class, confusion,
                 class_names, labels, config=None, seeds=None, runtime_s=None, versions=None,
                 test_selected=None, predictions=None, created_utc=None):
        self.name = name
        self.metrics = dict(metrics)
        self.per_dataset = per_dataset
        self.per_subject = per_subject
        self.per_class = per_class
        self.confusion = confusion
        self.class_names = tuple(class_names)
        self.labels = tuple(labels)
        self.config = config
        self.seeds = seeds
        self.runtime_s = runtime_s
        self.versions = dict(versions) if versions is not None else package_versions()
        self.test_selected = dict(test_selected or {})
        self.predictions = predictions
        self.created_utc = created_utc or _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds")
        leaked = [k for k in self.metrics if k.startswith("test_selected")]
        if leaked:
            raise ValueError(f"test-selected scores {leaked} must not be headline metrics")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_predictions(cls, predictions: pd.DataFrame, config=None, seeds=None,
                         runtime_s: float | None = None, name: str | None = None,
                         class_names: Sequence[str] = DEFAULT_CLASS_NAMES, *,
                         labels: Sequence | None = None,
                         test_selected: pd.DataFrame | None = None) -> "LOSOReport":
        """Build a report from a LOSO predictions frame and run metadata.

        ``predictions``: one row per test clip with ``clip, subject, dataset, y_true,
        y_pred`` (optional ``fold``, ``score_0..``, ``selected_on_test``); validated by
        :func:`~mer_keras.evaluation.metrics.validate_predictions`. ``labels`` defaults to
        ``0 .. len(class_names) - 1`` (MEGC2019 ids: 0 negative, 1 positive, 2 surprise).
        ``config`` (any JSON-convertible object), ``seeds`` and ``runtime_s`` are stored
        as given. ``test_selected`` (or a ``selected_on_test`` column of predicted labels)
        gives predictions chosen on the test subject; they are scored under
        ``test_selected_*`` keys only (see the module docstring).
        """
        class_names = tuple(class_names)
        labels = tuple(range(len(class_names))) if labels is None else tuple(labels)
        if len(labels) != len(class_names):
            raise ValueError(f"{len(class_names)} class_names for {len(labels)} labels")
        preds = validate_predictions(predictions, labels)

        ts_frame = None
        if "selected_on_test" in preds.columns:
            if test_selected is not None:
                raise ValueError("give test-selected predictions either as the "
                                 "'selected_on_test' column or as test_selected=, not both")
            col = preds["selected_on_test"]
            if pd.api.types.is_bool_dtype(col):
                raise TypeError("'selected_on_test' must hold the predicted label of the epoch "
                                "chosen on the test subject (one label per clip), not a flag")
            ts_frame = preds.assign(y_pred=col)
        elif test_selected is not None:
            ts_frame = test_selected
        ts_metrics = cls._test_selected_scores(ts_frame, preds, labels) if ts_frame is not None else {}

        pooled = pooled_scores(preds, labels)
        subj = per_subject_scores(preds, labels)
        n_subjects = subj.mean["n_subjects"]
        metrics = dict(
            uf1=pooled["uf1"], uar=pooled["uar"], accuracy=pooled["accuracy"],
            uf1_subject_mean=subj.mean["uf1"], uar_subject_mean=subj.mean["uar"],
            accuracy_subject_mean=subj.mean["accuracy"],
            n_clips=pooled["n_clips"], n_subjects=n_subjects,
            n_folds=int(preds["fold"].nunique()) if "fold" in preds.columns else n_subjects,
            n_datasets=int(preds["dataset"].nunique()),
        )
        y_t, y_p = preds["y_true"].to_numpy(), preds["y_pred"].to_numpy()
        cm = pd.DataFrame(_confusion(y_t, y_p, labels),
                          index=pd.Index(class_names, name="true"),
                          columns=pd.Index(class_names, name="predicted"))
        pc = class_scores(y_t, y_p, labels)[["n_true", "n_pred", "tp", "f1", "recall"]]
        pc.index = pd.Index(class_names, name="class")
        return cls(name=name, metrics=metrics, per_dataset=per_dataset_scores(preds, labels),
                   per_subject=subj.table, per_class=pc, confusion=cm, class_names=class_names,
                   labels=labels, config=config, seeds=seeds,
                   runtime_s=None if runtime_s is None else float(runtime_s),
                   test_selected=ts_metrics, predictions=preds)

    @staticmethod
    def _test_selected_scores(ts: pd.DataFrame, preds: pd.DataFrame, labels) -> dict:
        ts = validate_predictions(ts, labels)
        key = ["dataset", "subject", "clip"]
        merged = preds[key + ["y_true"]].merge(ts[key + ["y_true"]], on=key, how="outer",
                                                 indicator=True, suffixes=("", "_ts"))
        if (merged["_merge"] != "both").any() or len(ts) != len(preds):
            raise ValueError("test-selected predictions must cover exactly the clips of the "
                             "predictions frame")
        if (merged["y_true"] != merged["y_true_ts"]).any():
            raise ValueError("test-selected predictions disagree with predictions on y_true")
        pooled = pooled_scores(ts, labels)
        subj = per_subject_scores(ts, labels).mean
        return {"test_selected_uf1": pooled["uf1"], "test_selected_uar": pooled["uar"],
                "test_selected_accuracy": pooled["accuracy"],
                "test_selected_uf1_subject_mean": subj["uf1"],
                "test_selected_uar_subject_mean": subj["uar"]}

    # ------------------------------------------------------------------ access
    def __getitem__(self, key: str):
        """``report["uf1"]`` is ``report.metrics["uf1"]`` (headline metrics only)."""
        return self.metrics[key]

    def __repr__(self) -> str:
        m = self.metrics
        return (f"LOSOReport(name={self.name!r}, uf1={m['uf1']:.4f}, uar={m['uar']:.4f}, "
                f"uf1_subject_mean={m['uf1_subject_mean']:.4f}, "
                f"uar_subject_mean={m['uar_subject_mean']:.4f}, n_clips={m['n_clips']}, "
                f"n_subjects={m['n_subjects']})")

    def _value(self, col: str):
        if col == "name":
            return self.name if self.name is not None else "(unnamed)"
        if col == "runtime_s":
            return self.runtime_s
        if col in self.metrics:
            return self.metrics[col]
        if col.startswith("test_selected_"):
            return self.test_selected.get(col)
        if "/" in col:
            dataset, metric = col.split("/", 1)
            if metric not in self.per_dataset.columns:
                raise ValueError(f"unknown per-dataset metric {metric!r} in column {col!r}; "
                                 f"known: {list(self.per_dataset.columns)}")
            if dataset not in self.per_dataset.index:
                return None
            return self.per_dataset.loc[dataset, metric]
        raise ValueError(f"unknown markdown column {col!r}; use 'name', a key of .metrics "
                         f"({list(self.metrics)}), '<dataset>/<metric>', or a test_selected_* key")

    def default_columns(self) -> list[str]:
        """``name, uf1, uar`` then ``<dataset>/uf1, <dataset>/uar`` for each dataset."""
        return _default_columns(self.per_dataset.index)

    def markdown_header(self, columns: Sequence[str] | None = None) -> str:
        """Header lines matching :meth:`markdown_row` with the same ``columns``."""
        return markdown_header(self.default_columns() if columns is None else columns)

    def markdown_row(self, columns: Sequence[str] | None = None) -> str:
        """One markdown table row: ``| name | UF1 | UAR | <dataset> UF1 | <dataset> UAR ... |``.

        ``columns`` are ``"name"``, keys of :attr:`metrics`, ``"runtime_s"``,
        ``"<dataset>/<per-dataset column>"`` (``–`` if the run lacks that dataset), or an
        explicitly requested ``test_selected_*`` key (never part of the defaults).
        Numbers have four decimals.
        """
        columns = self.default_columns() if columns is None else list(columns)
        return "| " + " | ".join(_fmt(self._value(c)) for c in columns) + " |"

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """The content of ``report.json`` (plain JSON types)."""
        return _jsonable({
            "format": "mer-keras LOSO report",
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created_utc": self.created_utc,
            "metrics": self.metrics,
            "conventions": {
                "uf1/uar/accuracy": "all folds pooled (MEGC2019)",
                "*_subject_mean": "unweighted mean of per-subject scores (Off-TANet/ARFNet)",
                "absent classes": "a class with no true and no predicted clip is left out of "
                                  "UF1; a class with no true clip is left out of UAR",
            },
            "labels": list(self.labels),
            "class_names": list(self.class_names),
            "per_class": self.per_class.reset_index(),
            "per_dataset": self.per_dataset.reset_index(),
            "per_subject": self.per_subject,
            "confusion": {"rows": "true", "columns": "predicted",
                          "matrix": self.confusion.to_numpy()},
            "test_selected": ({"note": TEST_SELECTED_NOTE, "metrics": self.test_selected}
                              if self.test_selected else None),
            "config": self.config,
            "seeds": self.seeds,
            "runtime_s": self.runtime_s,
            "versions": self.versions,
        })

    def save(self, out_dir) -> Path:
        """Write the report files (see the module docstring) into ``out_dir``; returns it."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / "per_subject.csv",
                      lambda p: self.per_subject.to_csv(p, index=False))
        _atomic_write(out / "per_dataset.csv", lambda p: self.per_dataset.to_csv(p))
        if self.predictions is not None:
            _atomic_write(out / "report_predictions.csv",
                          lambda p: self.predictions.to_csv(p, index=False))
        _atomic_write(out / "confusion_matrix.png",
                      lambda p: self.confusion_figure().savefig(p, format="png"))
        _write_text(out / "table_row.md",
                    self.markdown_header() + "\n" + self.markdown_row() + "\n")
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        _write_text(out / "report.json", text + "\n")
        return out

    def confusion_figure(self):
        """The pooled confusion matrix as a matplotlib Figure: counts beside the
        row-normalised matrix (recall per true class), the run name and headline metrics
        above. Built without pyplot (safe under Agg)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        counts = self.confusion.to_numpy()
        fig = Figure(figsize=(11, 4.8), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax_counts, ax_norm = fig.subplots(1, 2)
        plot_confusion(ax_counts, counts, self.class_names)
        plot_confusion(ax_norm, counts, self.class_names, normalise=True)
        m = self.metrics
        title = (f"UF1 {m['uf1']:.4f}  UAR {m['uar']:.4f}  (all folds pooled, "
                 f"{m['n_clips']} clips, {m['n_subjects']} subjects)")
        if self.name:  # own line: a long row name would push the metrics off the canvas
            title = f"{self.name}\n{title}"
        fig.suptitle(title)
        return fig

    @classmethod
    def load(cls, out_dir) -> "LOSOReport":
        """Read a report written by :meth:`save` (metrics and tables from ``report.json``,
        predictions from ``report_predictions.csv`` if present)."""
        out = Path(out_dir)
        d = json.loads((out / "report.json").read_text(encoding="utf-8"))
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{out / 'report.json'}: unsupported format_version "
                             f"{d.get('format_version')!r}")
        class_names = tuple(d["class_names"])
        per_subject = pd.DataFrame(
            d["per_subject"], columns=["dataset", "subject", "n_clips", "uf1", "uar", "accuracy"])
        per_subject[["dataset", "subject"]] = per_subject[["dataset", "subject"]].astype(str)
        per_dataset = pd.DataFrame(d["per_dataset"]).set_index("dataset")
        per_class = pd.DataFrame(d["per_class"]).set_index("class")
        cm = pd.DataFrame(np.asarray(d["confusion"]["matrix"], dtype=np.int64),
                          index=pd.Index(class_names, name="true"),
                          columns=pd.Index(class_names, name="predicted"))
        preds = None
        pred_path = out / "report_predictions.csv"
        if pred_path.exists():
            preds = pd.read_csv(pred_path, dtype={"dataset": str, "subject": str, "clip": str},
                                keep_default_na=False)
        ts = d.get("test_selected") or {}
        return cls(name=d.get("name"), metrics=d["metrics"], per_dataset=per_dataset,
                   per_subject=per_subject, per_class=per_class, confusion=cm,
                   class_names=class_names, labels=tuple(d["labels"]), config=d.get("config"),
                   seeds=d.get("seeds"), runtime_s=d.get("runtime_s"),
                   versions=d.get("versions") or {}, test_selected=ts.get("metrics"),
                   predictions=preds, created_utc=d.get("created_utc"))


# ----------------------------------------------------------------------------- results folders (notebooks)


def row_normalise(counts) -> np.ndarray:
    """Confusion counts divided by their row sums (recall per true class); all-zero rows stay 0."""
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)


def plot_confusion(ax, counts, class_names: Sequence[str], *, normalise: bool = False,
                   title: str | None = None, colorbar: bool = True):
    """Draw confusion ``counts`` (rows true, columns predicted) on ``ax`` with scikit-learn's
    ``ConfusionMatrixDisplay``: raw counts, or row-normalised (0..1 colour scale) with
    ``normalise``; the panels of ``confusion_matrix.png``. Returns the display."""
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(counts)
    names = list(class_names)
    if normalise:
        display = ConfusionMatrixDisplay(row_normalise(counts), display_labels=names).plot(
            ax=ax, values_format=".2f", cmap="Blues", colorbar=colorbar, im_kw={"vmin": 0.0, "vmax": 1.0})
    else:
        display = ConfusionMatrixDisplay(counts.astype(np.int64), display_labels=names).plot(
            ax=ax, values_format="d", cmap="Blues", colorbar=colorbar)
    ax.set_title(title if title is not None else
                 ("row-normalised (recall per true class)" if normalise else "counts"))
    return display


def _is_run_folder(path: Path) -> bool:
    return (path / "report.json").is_file() or (path / "run.json").is_file()


def run_folders(results) -> list[Path]:
    """The LOSO run folders (holding ``report.json`` or ``run.json``) of a results folder.

    ``results`` is an ``experiments/`` script's ``--out`` folder (its run folders are the
    sub-folders, in the table's row order when ``runs.json`` is there, else by name) or
    one run folder itself. Raises ``FileNotFoundError`` when ``results`` does not exist and
    ``ValueError`` when it holds no run folder, both naming the folder.
    """
    results = Path(results)
    if not results.exists():
        where = "" if results.is_absolute() else f" (from {Path.cwd()})"
        raise FileNotFoundError(
            f"results folder {str(results)!r} does not exist{where}; run an experiments/ script with --out "
            "pointing there, or set MER_KERAS_RESULTS to a folder such a script wrote")
    if not results.is_dir():
        raise ValueError(f"results folder {str(results)!r} is not a folder")
    if _is_run_folder(results):
        return [results]
    found = {p.name: p for p in results.iterdir() if p.is_dir() and _is_run_folder(p)}
    if not found:
        raise ValueError(
            f"results folder {str(results)!r} holds no LOSO run folder (a sub-folder with report.json or "
            "run.json); point MER_KERAS_RESULTS at the --out folder of an experiments/ script that has run")
    order: list[str] = []
    runs_file = results / "runs.json"
    if runs_file.is_file():
        try:
            rows = json.loads(runs_file.read_text(encoding="utf-8")).get("rows", {})
            order = [r.get("slug") for r in rows.values() if isinstance(r, Mapping)]
        except (ValueError, AttributeError):
            order = []
    first = [found.pop(name) for name in order if name in found]
    return first + [found[name] for name in sorted(found)]


def load_run_report(run_dir) -> LOSOReport:
    """The :class:`LOSOReport` of a run folder, predictions included.

    A finished run is read from its ``report.json`` and ``report_predictions.csv``; a run
    without ``report.json`` (stopped before its last fold) is rebuilt from its finished
    folds' predictions, named ``"<folder> (unfinished)"`` with the default class names
    (``class <k>`` when the scores do not have three columns). ``ValueError`` when neither
    predictions nor finished folds are there.
    """
    run_dir = Path(run_dir)
    if (run_dir / "report.json").is_file():
        report = LOSOReport.load(run_dir)
        if report.predictions is None:
            raise ValueError(f"{run_dir} has report.json but no report_predictions.csv")
        return report
    from mer_keras.training.store import FoldStore

    predictions = FoldStore(run_dir).load_predictions()
    if predictions.empty:
        raise ValueError(f"{run_dir} holds no report.json and no finished fold")
    n_classes = sum(1 for c in predictions.columns if str(c).startswith("score_"))
    names = DEFAULT_CLASS_NAMES if n_classes == len(DEFAULT_CLASS_NAMES) else \
        tuple(f"class {k}" for k in range(n_classes))
    return LOSOReport.from_predictions(predictions, name=f"{run_dir.name} (unfinished)", class_names=names)


def _series(value) -> bool:
    """A per-epoch series: a non-empty list of plain numbers."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def history_stages(history: Mapping) -> dict[str, dict[str, list[float]]]:
    """The per-epoch curves of one ``history.json``, by training stage.

    A stage is a mapping whose ``loss`` or ``accuracy`` is a list of numbers; its curves
    are its lists of numbers of that length (``loss``, ``accuracy``, ``val_*``,
    ``test_curve_loss``/``test_curve_accuracy``, ``lr``, ``reg_loss``, ``frozen_groups``,
    ...). A single-stage history (``{"loss": [...], "accuracy": [...], "lr": [...]}``) is
    the stage ``"train"``; nested stages keep their key (two-stage recipes:
    ``"pretrain"``, ``"train"``; transfer recipes: ``"train"``), deeper ones are named
    ``"outer/inner"``. Empty stages (no pre-training) and histories without epochs
    (handcrafted recipes: ``svm_c``, ``train_accuracy``) give nothing.
    """
    def curves(stage: Mapping) -> dict[str, list[float]] | None:
        n = next((len(stage[k]) for k in ("loss", "accuracy") if _series(stage.get(k))), None)
        if n is None:
            return None
        return {str(k): [float(x) for x in v] for k, v in stage.items() if _series(v) and len(v) == n}

    out: dict[str, dict[str, list[float]]] = {}

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                name = f"{prefix}{key}"
                found = curves(value)
                if found:
                    out[name] = found
                else:
                    walk(value, f"{name}/")

    top = curves(history) if isinstance(history, Mapping) else None
    if top:
        out["train"] = top
    elif isinstance(history, Mapping):
        walk(history, "")
    return out


def training_curves(run_dir) -> dict[str, dict[str, pd.DataFrame]]:
    """Per-epoch curves of a run folder: ``{stage: {curve: frame}}``.

    Each frame has one column per finished fold (``folds/<fold>/history.json`` of the run's
    config; stale and unfinished folds are left out) and the epoch (from 1) as index; folds
    with fewer epochs are NaN-padded, so ``frame.mean(axis=1)`` averages the folds that
    reached each epoch. Stages and curves as :func:`history_stages`. A transfer run's
    shared stage 1 (``stage1/<key>/stage1.json``, trained once per run) comes first as
    ``"stage1"``, with one column per stored stage-1 model. Empty when nothing has epochs.
    """
    from mer_keras.training.store import FoldStore

    run_dir = Path(run_dir)
    collected: dict[str, dict[str, dict[str, list[float]]]] = {}

    def add(column: str, stages: Mapping[str, Mapping[str, list[float]]]) -> None:
        for stage, curves in stages.items():
            for key, values in curves.items():
                collected.setdefault(stage, {}).setdefault(key, {})[column] = values

    for path in sorted((run_dir / "stage1").glob("*/stage1.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        add(path.parent.name, {"stage1": history_stages(record.get("history") or {}).get("train", {})})
    if (run_dir / "run.json").is_file():
        store = FoldStore(run_dir)
        for fold in store.completed():
            path = store.fold_dir(fold) / "history.json"
            if path.is_file():
                add(fold, history_stages(json.loads(path.read_text(encoding="utf-8"))))
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for stage, curves in collected.items():
        frames = {}
        for key, columns in curves.items():
            frame = pd.DataFrame({c: pd.Series(v, dtype=float) for c, v in columns.items()})
            frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
            frames[key] = frame
        if frames:
            out[stage] = frames
    return out


__all__ += ["history_stages", "load_run_report", "plot_confusion", "row_normalise", "run_folders",
            "training_curves"]
