"""Resumable per-fold results of a LOSO run.

Layout of a run folder::

    run.json                       the run's config, its hash, package version
    folds/<fold>/predictions.csv   clip, subject, dataset, y_true, y_pred, score_0 .. score_{K-1}
    folds/<fold>/history.json      training curves (e.g. ``keras.callbacks.History.history``)
    folds/<fold>/weights.weights.h5  optional model weights
    folds/<fold>/done.json         written LAST: config hash, sample count, file checksums

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so a killed run leaves each file either whole or absent, and a fold
counts as finished only once its ``done.json`` exists. A fold finished under another
config hash is *stale*: it is redone, never reused, and never loaded with this run's
predictions. A run folder belongs to one config: opening it with a different config
raises :class:`ConfigMismatchError` unless ``overwrite=True`` (which discards the old
folds). Several processes may fill different folds of the same run concurrently.

The metrics (MEGC2019: UF1/UAR over all folds' predictions pooled; Off-TANet: the mean
of per-subject scores) are computed from :meth:`FoldStore.load_predictions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from mer_keras import __version__

from mer_keras.data.manifest import PREDICTION_COLUMNS

from .folds import Fold

logger = logging.getLogger("mer_keras.training")


STATUS = ("done", "stale", "pending")


class ConfigMismatchError(ValueError):
    """A run folder already holds results of a different config."""


# ----------------------------------------------------------------------------- helpers


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable; pass plain values in the config")


def canonical_json(obj) -> str:
    """Compact JSON with sorted keys (numpy scalars, paths, sets, dataclasses converted)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable, allow_nan=False)


def config_hash(config, length: int = 16) -> str:
    """Hex SHA-256 (first ``length`` characters) of the canonical JSON of ``config``.

    Equal for equal configs whatever the key order; differs when any value differs.
    """
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[: int(length)]


def safe_name(name: str) -> str:
    """Folder name of a fold: the name itself when file-safe, else a sanitised name plus a short hash.

    File-safe means ``[A-Za-z0-9_.-]+`` and not ``.``/``..``; the hash keeps distinct
    unsafe names distinct (``"a/b"`` and ``"a?b"`` get different folders).
    """
    name = str(name)
    if re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name not in (".", ".."):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip(".") or "fold"
    return f"{cleaned}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_weights(model, target) -> str:
    """``model.save_weights`` into ``target`` atomically (temporary file + rename); returns its sha256.

    ``model`` is anything with Keras' ``save_weights(path)``.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".weights.h5")
    os.close(fd)
    try:
        Path(tmp).unlink()  # Keras writes the file itself
        model.save_weights(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(target)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prediction_frame(dataset, index, scores, y_pred=None) -> pd.DataFrame:
    """The ``predictions.csv`` table of the samples at ``index`` of a :class:`LOSODataset`.

    ``scores`` is ``len(index) x K`` (probabilities, logits or decision values);
    ``y_pred`` defaults to the arg-max of each row.
    """
    idx = np.asarray(index, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(idx):
        raise ValueError(f"scores must be {len(idx)} x K (one row per sample), got shape {scores.shape}")
    pred = scores.argmax(axis=1) if y_pred is None else np.asarray(y_pred, dtype=np.int64)
    frame = pd.DataFrame({"clip": dataset.clips[idx], "subject": dataset.subjects[idx],
                          "dataset": dataset.datasets[idx], "y_true": dataset.y[idx], "y_pred": pred})
    for k in range(scores.shape[1]):
        frame[f"score_{k}"] = scores[:, k]
    return frame


def _check_predictions(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    scores = sorted((c for c in frame.columns if re.fullmatch(r"score_\d+", c)), key=lambda c: int(c[6:]))
    if missing or not scores:
        raise ValueError(f"predictions need columns {list(PREDICTION_COLUMNS)} and score_0.. ; missing "
                         f"{missing or ['score_0']}")
    if [int(c[6:]) for c in scores] != list(range(len(scores))):
        raise ValueError(f"score columns must be score_0..score_{len(scores) - 1}, got {scores}")
    if frame.empty:
        raise ValueError("predictions are empty")
    for col in ("y_true", "y_pred"):
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.isna().any() or (values != values.round()).any() or (values < 0).any():
            raise ValueError(f"{col} must hold label ids >= 0")
    if not np.isfinite(frame[scores].to_numpy(np.float64)).all():
        raise ValueError("scores hold NaN or infinite values")
    if frame.duplicated(["subject", "clip"]).any():
        raise ValueError("predictions list a (subject, clip) more than once")
    out = frame[[*PREDICTION_COLUMNS, *scores]].copy()
    out[["y_true", "y_pred"]] = out[["y_true", "y_pred"]].astype("int64")
    for col in ("clip", "subject", "dataset"):
        out[col] = out[col].astype(str)
    return out


# ----------------------------------------------------------------------------- store


class FoldStore:
    """Per-fold artefacts of one LOSO run under ``out_dir`` (layout in the module docstring).

    ``config`` is the run's configuration (JSON-serialisable: recipe, model, data,
    seeds...); its :func:`config_hash` identifies results. With a config the store
    writes ``run.json`` (refusing a folder that holds another config unless
    ``overwrite=True``, which deletes the old folds); without one it reopens an existing
    run under the config recorded in its ``run.json``.
    """

    def __init__(self, out_dir, config=None, *, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.folds_dir = self.out_dir / "folds"
        run_path = self.out_dir / "run.json"
        previous = json.loads(run_path.read_text()) if run_path.is_file() else None
        if config is None:
            if previous is None:
                raise FileNotFoundError(f"{self.out_dir} holds no run.json; pass the run's config to start one")
            self.config, self.config_hash = previous["config"], previous["config_hash"]
            return
        self.config = json.loads(canonical_json(config))
        self.config_hash = config_hash(config)
        if previous is not None and previous.get("config_hash") != self.config_hash:
            if not overwrite:
                changed = _changed_keys(previous.get("config"), self.config)
                raise ConfigMismatchError(
                    f"{self.out_dir} holds a run with config {previous.get('config_hash')}, not {self.config_hash}"
                    f" (differs in {changed}); use another output folder or overwrite=True to discard it")
            logger.warning("%s: discarding the folds of config %s", self.out_dir, previous.get("config_hash"))
            shutil.rmtree(self.folds_dir, ignore_errors=True)
        if previous is None or previous.get("config_hash") != self.config_hash:
            record = {"config": self.config, "config_hash": self.config_hash, "mer_keras_version": __version__,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_text(run_path, json.dumps(record, indent=2, sort_keys=True))
        self.folds_dir.mkdir(parents=True, exist_ok=True)

    # -- paths

    def fold_dir(self, fold) -> Path:
        """Folder of a fold (a :class:`Fold` or its name), made file-safe with :func:`safe_name`."""
        return self.folds_dir / safe_name(_name(fold))

    def weights_path(self, fold) -> Path:
        return self.fold_dir(fold) / "weights.weights.h5"

    # -- status

    def _done_record(self, fold) -> dict | None:
        path = self.fold_dir(fold) / "done.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def status(self, fold, config_hash: str | None = None) -> str:
        """``"done"`` (finished under ``config_hash``, default the store's), ``"stale"``
        (finished under another config) or ``"pending"`` (not finished)."""
        record = self._done_record(fold)
        if record is None or not (self.fold_dir(fold) / "predictions.csv").is_file():
            return "pending"
        return "done" if record.get("config_hash") == (config_hash or self.config_hash) else "stale"

    def is_done(self, fold, config_hash: str | None = None) -> bool:
        """True only when the fold finished under ``config_hash`` (default the store's); stale folds are logged."""
        status = self.status(fold, config_hash)
        if status == "stale":
            logger.warning("fold %s was finished under another config; it will be redone", _name(fold))
        return status == "done"

    def pending(self, folds: Iterable, config_hash: str | None = None) -> list:
        """The folds (in the given order) that are not done under ``config_hash``: missing, unfinished or stale."""
        return [f for f in folds if not self.is_done(f, config_hash)]

    def completed(self, config_hash: str | None = None) -> list[str]:
        """Names of the folds done under ``config_hash`` (default the store's), sorted."""
        if not self.folds_dir.is_dir():
            return []
        names = []
        for d in sorted(p for p in self.folds_dir.iterdir() if p.is_dir()):
            record = self._done_record(d.name)
            if record is not None and self.status(d.name, config_hash) == "done":
                names.append(record.get("fold", d.name))
        return sorted(names)

    # -- writing

    def save_fold(self, fold, predictions: pd.DataFrame, history: dict | None = None, *, model=None,
                  extra: dict | None = None) -> Path:
        """Write a finished fold: predictions, history, optional weights, then ``done.json``.

        ``predictions`` has the columns of :data:`PREDICTION_COLUMNS` plus
        ``score_0..`` (see :func:`prediction_frame`); when ``fold`` is a :class:`Fold`
        its test subject must be the only subject in them. ``model`` (anything with
        Keras' ``save_weights``) stores ``weights.weights.h5``. ``extra`` is kept in
        ``done.json`` (e.g. timings). An earlier ``done.json`` is removed first, so an
        interrupted rewrite leaves the fold pending, never half old and half new.
        Returns the fold's folder.
        """
        table = _check_predictions(pd.DataFrame(predictions))
        if isinstance(fold, Fold):
            others = sorted(set(table["subject"]) - {fold.test_subject})
            if others:
                raise ValueError(f"fold {fold.name}: predictions hold subjects other than {fold.test_subject!r}: {others[:5]}")
        folder = self.fold_dir(fold)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "done.json").unlink(missing_ok=True)
        files = {}
        atomic_write_text(folder / "predictions.csv", table.to_csv(index=False, float_format="%.9g"))
        files["predictions.csv"] = sha256_file(folder / "predictions.csv")
        atomic_write_text(folder / "history.json", json.dumps(history or {}, indent=1, sort_keys=True, default=_jsonable))
        files["history.json"] = sha256_file(folder / "history.json")
        if model is not None:
            files["weights.weights.h5"] = atomic_save_weights(model, folder / "weights.weights.h5")
        record = {"fold": _name(fold), "config_hash": self.config_hash, "n_test": int(len(table)),
                  "subjects": sorted(set(table["subject"])), "files": files,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "extra": extra or {}}
        atomic_write_text(folder / "done.json", json.dumps(record, indent=2, sort_keys=True, default=_jsonable))
        return folder

    # -- reading

    def load_fold(self, fold) -> pd.DataFrame:
        """Predictions of one finished fold (any config); ``FileNotFoundError`` if it is not finished."""
        if self._done_record(fold) is None:
            raise FileNotFoundError(f"fold {_name(fold)} is not finished in {self.out_dir}")
        return pd.read_csv(self.fold_dir(fold) / "predictions.csv", dtype={"clip": str, "subject": str, "dataset": str})

    def load_history(self, fold) -> dict:
        return json.loads((self.fold_dir(fold) / "history.json").read_text())

    def load_predictions(self, config_hash: str | None = None, *, verify: bool = True) -> pd.DataFrame:
        """Predictions of every fold done under ``config_hash`` (default the store's), concatenated.

        Sorted by ``(subject, clip)`` whatever order folds finished in, with a ``fold``
        column; stale and unfinished folds are left out (stale ones with a warning).
        With ``verify`` each ``predictions.csv`` must match the checksum in its
        ``done.json`` (``ValueError`` otherwise). Empty table when nothing is done.
        """
        frames = []
        wanted = config_hash or self.config_hash
        if self.folds_dir.is_dir():
            for d in sorted(p for p in self.folds_dir.iterdir() if p.is_dir()):
                record = self._done_record(d.name)
                status = self.status(d.name, wanted)
                if status == "stale":
                    logger.warning("fold %s is stale (config %s, not %s): left out", d.name, record.get("config_hash"), wanted)
                if status != "done":
                    continue
                path = d / "predictions.csv"
                if verify and record.get("files", {}).get("predictions.csv") not in (None, sha256_file(path)):
                    raise ValueError(f"{path} does not match the checksum in its done.json (modified after the fold finished)")
                frame = pd.read_csv(path, dtype={"clip": str, "subject": str, "dataset": str})
                frames.append(frame.assign(fold=record.get("fold", d.name)))
        if not frames:
            return pd.DataFrame(columns=[*PREDICTION_COLUMNS, "fold"])
        out = pd.concat(frames, ignore_index=True)
        dup = out.duplicated(["subject", "clip"])
        if dup.any():
            raise ValueError(f"clips predicted by more than one fold: {out.loc[dup, ['subject', 'clip']].values.tolist()[:5]}")
        return out.sort_values(["subject", "clip"], kind="stable").reset_index(drop=True)


def _name(fold) -> str:
    return fold.name if isinstance(fold, Fold) else str(fold)


def _changed_keys(old, new) -> list[str]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ["<config>"]
    keys = sorted(set(old) | set(new))
    return [k for k in keys if canonical_json(old.get(k)) != canonical_json(new.get(k))] or ["<config>"]
