"""The prepared-clip cache written by ``mer-keras prepare`` and read by training.

Layout of a cache folder::

    cache.json        the PreprocessConfig used, its fingerprint, package version
    clips/<key>.npz   one file per clip: the arrays of ``preprocess_clip`` + ``_source`` metadata
    manifest.csv      one row per clip prepared (manifest columns + ``key`` + ``file``)
    skipped.csv       clips that could not be prepared, with the reason (among them clips
                      with an incomplete frame file or frames of different sizes or channel
                      counts: :mod:`mer_keras.preprocess.frames`, the checks ``predict`` runs)
    issues.csv        what the dataset readers fixed or dropped before preparation

A cache prepared with ``compute_flow=False`` (preset ``"mobilevit_apex"``) holds apex-only
clips: aligned, masked frames without ``flow``, ``strain`` or ``flow_image``; single-image
clips (onset = apex, e.g. JAFFE) are prepared instead of being skipped.

Resuming: every clip file is written atomically (temporary file + ``os.replace``) and
carries a ``_source`` hash of the preprocessing fingerprint, the clip's frame files and
its onset/apex indices. A rerun reuses every clip whose hash matches and recomputes the
rest, so a killed run picks up where it stopped, and a changed parameter (or changed
frames) invalidates exactly the clips it affects.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mer_keras import __version__
from mer_keras.data.manifest import ISSUE_COLUMNS, MANIFEST_COLUMNS, validate_manifest
from mer_keras.preprocess.frames import check_clip_frames
from mer_keras.preprocess.pipeline import PreprocessConfig, preprocess_clip

logger = logging.getLogger("mer_keras.prepare")

CACHE_FORMAT = 1
_SCALAR_COLUMNS = [c for c in MANIFEST_COLUMNS if c not in ("frames", "frame_numbers")]


def clip_key(row) -> str:
    """File-safe unique key of a manifest row: ``dataset__subject__clip``."""
    raw = f"{row['dataset']}__{row['subject']}__{row['clip']}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)


def clip_frames(row) -> tuple[list[str], int, int]:
    """The frame paths a clip's preprocessing reads (onset..apex) and the onset/apex indices in them."""
    numbers = list(row["frame_numbers"])
    try:
        onset_i, apex_i = numbers.index(int(row["onset"])), numbers.index(int(row["apex"]))
    except ValueError:
        raise ValueError(f"onset {row['onset']} or apex {row['apex']} is not among the clip's frame numbers") from None
    frames = list(row["frames"])[onset_i : apex_i + 1]
    return frames, 0, apex_i - onset_i


def source_hash(row, fingerprint: str) -> str:
    """Hash of what a clip's cached arrays depend on: config, frame files (path, size, mtime), indices."""
    frames, onset_i, apex_i = clip_frames(row)
    h = hashlib.sha256(f"{fingerprint}|{onset_i}|{apex_i}".encode())
    for path in frames:
        st = os.stat(path)
        h.update(f"|{path}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _write_npz_atomic(path: Path, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cached_source(path: Path) -> str | None:
    """The ``_source`` hash stored in a clip file, or None if the file is absent or unreadable."""
    try:
        with np.load(path) as z:
            return str(z["_source"])
    except (OSError, KeyError, ValueError, EOFError):
        return None


def _prepare_one(task: tuple) -> tuple[str, str, str, int]:
    """Worker: check the clip's frame files, preprocess it and write its file.

    Returns (key, status, detail, fallback frames). Every frame of the clip is checked
    (:func:`~mer_keras.preprocess.frames.check_clip_frames`: complete files, one size and
    channel count), as ``predict`` checks a folder, not only the frames the preprocessing reads.
    """
    key, frames, onset_i, apex_i, config_dict, path, source, all_frames = task
    import cv2

    cv2.setNumThreads(1)  # one clip per process already uses every core
    try:
        check_clip_frames(all_frames)
        features = preprocess_clip(frames, onset_i, apex_i, PreprocessConfig.from_dict(config_dict))
    except Exception as exc:  # reported per clip; the run goes on
        return key, "skipped", f"{type(exc).__name__}: {exc}", 0
    arrays = features.to_arrays()
    arrays["_source"] = np.asarray(source)
    _write_npz_atomic(Path(path), arrays)
    return key, "done", "", int(features.n_fallback_frames)


@dataclass
class PrepareResult:
    """What a ``prepare`` run did; ``summary()`` is the table the CLI prints."""

    out_dir: Path
    n_clips: int
    n_computed: int
    n_reused: int
    skipped: pd.DataFrame
    issues: pd.DataFrame
    seconds: float
    n_stale: int = 0
    n_fallback_frames: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"prepared {self.n_clips - len(self.skipped)} of {self.n_clips} clips into {self.out_dir}",
            f"  computed {self.n_computed}, reused {self.n_reused} from an earlier run"
            + (f" ({self.n_stale} stale clips recomputed)" if self.n_stale else ""),
            f"  skipped {len(self.skipped)}, reader fixes/drops {len(self.issues)}, {self.seconds:.1f} s",
        ]
        if self.n_fallback_frames:
            lines.append(f"    {self.n_fallback_frames} frames had no face and were aligned with their clip's onset transform")
        for reason, n in self.skipped["reason"].str.split(":").str[0].value_counts().items():
            lines.append(f"    skipped {n}: {reason}")
        for (problem, action), n in self.issues.groupby(["problem", "action"]).size().items():
            lines.append(f"    reader {action} {n}: {problem}")
        return "\n".join(lines + self.notes)


def prepare(
    manifest: pd.DataFrame,
    out_dir,
    config: PreprocessConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Preprocess every clip of ``manifest`` into a cache folder, in parallel and resumably.

    Args:
        manifest: a reader or composite manifest (see :mod:`mer_keras.data.manifest`).
        out_dir: cache folder (created if needed): new, empty, or an earlier cache to
            resume; any other existing folder or file is refused (:func:`check_output_folder`).
        config: preprocessing parameters; default ``PreprocessConfig()``.
        workers: processes; default all cores. ``1`` runs in this process.
        progress: show a progress bar.
    """
    start = time.perf_counter()
    config = config or PreprocessConfig()
    validate_manifest(manifest)
    check_source(manifest, config)
    out = Path(out_dir)
    check_output_folder(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_lock_cache(out))
        return _prepare_locked(manifest, out, config, workers, progress, stack, start)


def check_source(manifest: pd.DataFrame, config: PreprocessConfig) -> None:
    """Refuse raw frames for the cropped route: it takes each frame as a face crop, without detection.

    The cropped route (``source="cropped"``) resizes whole frames, so a raw 640x480 frame
    would become a network input with the background in it: a wrong result, not an error.
    The aligned route accepts both releases (a crop holds a face to detect).
    """
    if config.source != "cropped" or not len(manifest):
        return
    raw = manifest[manifest["release"] != "cropped"]
    if len(raw):
        sources = ", ".join(sorted(map(str, raw["dataset"].unique())))
        raise ValueError(
            f"the preprocessing source is 'cropped' (the datasets' own face crops, taken as they are), but {len(raw)} "
            f"of {len(manifest)} clips ({sources}) come from raw frames: read the cropped release "
            "(load_dataset/composite release='cropped'; `mer-keras prepare` does this for a cropped preset), or use "
            "the aligned route for data without one (source='aligned', presets off_tanet_aligned / ststnet_aligned)")


class OutputFolderError(FileExistsError, ValueError):
    """``prepare --out`` names a file, or a folder that holds files but is not a prepared cache."""


def check_output_folder(out) -> None:
    """Refuse an output that ``prepare`` would damage: a file, or a non-empty folder without ``cache.json``.

    Allowed: a new path, an empty folder, a prepared cache (``cache.json``: resumed), and
    what a ``prepare`` stopped before writing ``cache.json`` leaves (``.lock``, ``clips/``
    with nothing but ``.tmp-*`` files) or the command line's write probe
    (``.mer-keras-write-test-*``) left by a killed command. Anything else would have its
    ``manifest.csv``, ``skipped.csv``, ``issues.csv`` or ``clips/`` overwritten.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} is a file, not a folder; pick an empty or new folder for the prepared cache")
    if not out.is_dir() or (out / "cache.json").is_file():
        return
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith(".mer-keras-write-test-"))
    clips = out / "clips"
    leftovers = set(entries) <= {".lock", "clips"} and (
        not clips.exists() or (clips.is_dir() and all(p.name.startswith(".tmp-") for p in clips.iterdir())))
    if entries and not leftovers:
        shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
        raise OutputFolderError(
            f"{out} is not empty ({shown}) and is not a prepared cache (no cache.json); preparing into it would "
            "overwrite its manifest.csv, skipped.csv, issues.csv and clips/: pick an empty or new folder")


def _prepare_locked(manifest, out: Path, config, workers, progress, stack, start) -> PrepareResult:
    from tqdm.auto import tqdm

    fingerprint = config.fingerprint()
    notes = []
    for leftover in (out / "clips").glob(".tmp-*"):
        leftover.unlink(missing_ok=True)  # a killed run's half-written file; never read

    meta_path = out / "cache.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != fingerprint:
            notes.append("  preprocessing parameters changed since the last run: cached clips are stale")
            logger.warning("cache %s: parameters changed (%s -> %s)", out, old.get("fingerprint"), fingerprint)
    meta = {
        "format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "mer_keras_version": __version__,
        "complete": False,
    }
    _write_text_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True))

    keys = [clip_key(r) for _, r in manifest.iterrows()]
    if len(set(keys)) != len(keys):
        raise ValueError("two manifest rows map to the same cache key (dataset, subject, clip)")

    tasks, skipped, n_reused, n_stale = [], [], 0, 0
    config_dict = config.to_dict()
    for key, (_, row) in zip(keys, manifest.iterrows()):
        path = out / "clips" / f"{key}.npz"
        try:
            frames, onset_i, apex_i = clip_frames(row)
            source = source_hash(row, fingerprint)
        except (OSError, ValueError) as exc:
            skipped.append((key, f"{type(exc).__name__}: {exc}"))
            continue
        cached = _cached_source(path)
        if cached == source:
            try:  # the frames outside onset..apex are not in the hash, and an older run may not have checked them
                check_clip_frames(row["frames"])
            except (OSError, ValueError) as exc:
                skipped.append((key, f"{type(exc).__name__}: {exc}"))
                continue
            n_reused += 1
            continue
        n_stale += cached is not None
        tasks.append((key, frames, onset_i, apex_i, config_dict, str(path), source, list(row["frames"])))

    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    bar = stack.enter_context(tqdm(total=len(tasks), desc="prepare", unit="clip", disable=not progress))
    if workers == 1:
        results = map(_prepare_one, tasks)
    else:
        others = set(multiprocessing.active_children())
        pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=exit_with_parent, initargs=(os.getpid(),))
        stack.push(_pool_closer(pool, others))
        results = (f.result() for f in cf.as_completed([pool.submit(_prepare_one, t) for t in tasks]))
    n_done = n_fallback = 0
    for key, status, detail, fallbacks in results:
        bar.update(1)
        if status == "done":
            n_done += 1
            n_fallback += fallbacks
        else:
            skipped.append((key, detail))
            logger.warning("skipped %s: %s", key, detail)

    skipped_df = pd.DataFrame(skipped, columns=["key", "reason"])
    skipped_keys = set(skipped_df["key"])
    rows = manifest.assign(key=keys)
    rows = rows[~rows["key"].isin(skipped_keys)]
    table = rows[["key", *_SCALAR_COLUMNS]].copy()
    table["file"] = [f"clips/{k}.npz" for k in table["key"]]
    table["n_frames"] = [len(f) for f in rows["frames"]]
    _write_text_atomic(out / "manifest.csv", table.to_csv(index=False))
    _write_text_atomic(out / "skipped.csv", skipped_df.to_csv(index=False))
    issues = manifest.attrs.get("issues")
    issues = issues if issues is not None else pd.DataFrame(columns=list(ISSUE_COLUMNS))
    _write_text_atomic(out / "issues.csv", issues.to_csv(index=False))
    _write_text_atomic(meta_path, json.dumps({**meta, "complete": True}, indent=2, sort_keys=True))

    return PrepareResult(
        out_dir=out,
        n_clips=len(manifest),
        n_computed=n_done,
        n_reused=n_reused,
        skipped=skipped_df,
        issues=issues,
        seconds=time.perf_counter() - start,
        n_stale=n_stale,
        n_fallback_frames=n_fallback,
        notes=notes,
    )


def exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Worker initializer: end this process when the process that started it is gone.

    A ``spawn`` worker blocks on its task queue forever if its parent is killed with
    SIGKILL (no shutdown message ever comes); a daemon thread polls the parent id and
    exits the worker once the parent has died (re-parented: another parent id).
    """
    import threading

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _pool_closer(pool, others: set):
    """Exit callback of the worker pool: wait for a finished run; on an error or Ctrl-C stop at once.

    ``ProcessPoolExecutor``'s own exit waits for every submitted clip; an interrupted
    ``prepare`` instead drops the clips not started and terminates its workers (``others``:
    the processes that existed before the pool, left alone). Clip files are written
    atomically, so the finished ones are on disk and a rerun resumes.
    """

    def close(exc_type, exc, tb):
        if exc_type is None:
            pool.shutdown(wait=True)
            return False
        pool.shutdown(wait=False, cancel_futures=True)
        for child in set(multiprocessing.active_children()) - others:
            child.terminate()
        return False

    return close


def _lock_cache(out: Path):
    """An open, exclusively locked ``.lock`` file in the cache folder (the OS releases it if the process dies)."""
    handle = open(out / ".lock", "w")
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run one prepare per cache at a time
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise RuntimeError(f"another `prepare` is writing {out}; wait for it or use another --out") from None
    return handle


class PreparedCache:
    """Read access to a cache folder written by :func:`prepare`.

    ``manifest`` lists the prepared clips (same columns as a reader manifest, without the
    frame lists, plus ``key`` and ``file``); ``load(key)`` returns one clip's arrays and
    ``stack(name)`` stacks one array over clips, in manifest order.
    """

    def __init__(self, path):
        self.path = Path(path)
        meta_path = self.path / "cache.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a prepared cache (no cache.json); run `mer-keras prepare`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{self.path}: cache format {self.meta.get('format')} is not {CACHE_FORMAT}")
        if not self.meta.get("complete"):
            raise ValueError(f"{self.path}: the last `prepare` into this cache did not finish; rerun it to resume")
        self.config = PreprocessConfig.from_dict(self.meta["config"])
        self.manifest = pd.read_csv(self.path / "manifest.csv", dtype={"subject": str, "clip": str})
        self.skipped = pd.read_csv(self.path / "skipped.csv")
        self.issues = pd.read_csv(self.path / "issues.csv")

    def __len__(self) -> int:
        return len(self.manifest)

    def load(self, key: str) -> dict[str, np.ndarray]:
        row = self.manifest.loc[self.manifest["key"] == key]
        if row.empty:
            raise KeyError(f"no clip {key!r} in {self.path}")
        with np.load(self.path / row["file"].iloc[0]) as z:
            return {k: z[k] for k in z.files if not k.startswith("_")}

    def stack(self, name: str, keys=None) -> np.ndarray:
        if name in ("flow", "strain", "flow_image") and not self.config.compute_flow:
            raise KeyError(f"{self.path} holds apex-only clips (prepared with compute_flow=False): no {name!r}")
        keys = list(self.manifest["key"] if keys is None else keys)
        return np.stack([self.load(k)[name] for k in keys])
