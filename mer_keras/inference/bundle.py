"""The pipeline bundle: a trained network and every parameter that turns raw frames into its input.

A bundle is a folder::

    model.keras     the Keras model (architecture + weights; ``keras.models.load_model``)
    pipeline.json   everything else (below); written last

``pipeline.json`` (format :data:`BUNDLE_FORMAT`):

* ``format`` (``"mer-keras-pipeline"``), ``format_version``, ``mer_keras_version``,
  ``created`` (UTC, ISO 8601);
* ``preprocess``: the :class:`~mer_keras.preprocess.pipeline.PreprocessConfig` dict (crop
  size, alignment, mask geometry, TV-L1 parameters, strain, flow-image rendering, frames
  kept) and its ``fingerprint`` (the prepared cache's);
* ``recipe``: its ``name`` and full dict (optimiser, epochs, model arguments, notes);
* ``input``: the network input ``kind`` (``flow_stack``, ``flow_image``, ``apex``,
  ``onset_apex``, ``frames``), ``shape`` ``[H, W, C]`` and ``dtype``;
* ``normalisation``: ``null`` or the per-channel ``mean`` / ``std`` fitted on the training
  clips (applied before the network, as in training);
* ``class_names`` and ``output`` (``score_kind``: ``"probability"`` for a softmax head,
  ``"svm_score"`` for the SVM head's decision values; ``clip_score``: how a clip's score is
  formed from the network outputs);
* ``frame_sampling``: which frames feed the network (``onset_apex``: flow from the onset to
  the apex; ``onset_to_apex``: every frame between them; ``apex``) and the onset / apex rule
  when they are not given; ``apex_spotting``: the spotting parameters;
* ``training``: the prepared cache's fingerprint, the training subjects, clip and class
  counts, seed, epochs, what the trainer reports (e.g. the pre-training epoch chosen on an
  inner subject split), the training time.

Writing is atomic: the bundle is assembled in a temporary folder next to the target and
renamed into place (an existing bundle is replaced only with ``overwrite=True``), so a
killed ``fit-final`` never leaves a half-written bundle. :func:`read_bundle` refuses a
folder that is not a bundle, a bundle of another or newer format, and (``strict``) one whose
pre-processing fingerprint this version of the package computes differently -- its
predictions would no longer see the inputs the network was trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

FORMAT_NAME = "mer-keras-pipeline"
BUNDLE_FORMAT = 1
"""Version of the bundle layout and of ``pipeline.json``'s meaning; bumped on any change."""
MODEL_FILE = "model.keras"
META_FILE = "pipeline.json"


class BundleFormatError(ValueError):
    """A folder is not a pipeline bundle, or one this version of mer-keras cannot read."""


def frame_sampling(input_kind: str) -> dict:
    """The frame-sampling rule recorded for a network input kind."""
    rule = {"frames": "onset_to_apex", "apex": "apex"}.get(input_kind, "onset_apex")
    text = {"onset_apex": "TV-L1 flow from the onset frame to the apex frame (aligned with the onset's face)",
            "onset_to_apex": "every aligned, masked frame from the onset to the apex, each through the network",
            "apex": "the aligned, masked apex frame"}[rule]
    if input_kind == "onset_apex":
        text = "the aligned, masked onset and apex frames as two channels"
    return {"rule": rule, "description": text, "onset_when_unknown": "the first frame",
            "apex_when_unknown": "spotted: the frame of largest motion from the onset inside the face mask "
                                 "(mer_keras.inference.spotting); two frames = onset and apex"}


def pipeline_meta(model, *, preprocess, input_kind: str, class_names: Sequence[str], recipe=None,
                  normalisation=None, extra: dict | None = None) -> dict:
    """The ``pipeline.json`` dict for ``model`` (see the module docstring).

    ``preprocess``: a ``PreprocessConfig``; ``recipe``: a ``Recipe`` or ``None``;
    ``normalisation``: ``(mean, std)`` or ``None``; ``extra``: merged at the top level
    (``training``, ...).
    """
    from mer_keras import __version__
    from mer_keras.training.datasets import INPUT_KINDS

    from .spotting import SpottingConfig

    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    shape = [int(v) for v in model.input_shape[1:]]
    dtype = str(getattr(model.inputs[0], "dtype", "float32"))
    dtype = dtype.replace("<dtype: '", "").replace("'>", "")
    loss = getattr(recipe, "loss", "cross_entropy")
    meta = {
        "format": FORMAT_NAME,
        "format_version": BUNDLE_FORMAT,
        "mer_keras_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preprocess": {"config": preprocess.to_dict(), "fingerprint": preprocess.fingerprint()},
        "recipe": None if recipe is None else {"name": recipe.name, "trainer": recipe.trainer, "config": recipe.to_dict()},
        "input": {"kind": input_kind, "shape": shape, "dtype": dtype},
        "normalisation": None if normalisation is None else {
            "kind": "per_channel", "mean": np.asarray(normalisation[0], np.float64).tolist(),
            "std": np.asarray(normalisation[1], np.float64).tolist()},
        "class_names": [str(c) for c in class_names],
        "output": {"score_kind": "svm_score" if loss == "multi_margin" else "probability",
                   "clip_score": "mean of the frame scores" if input_kind == "frames" else "the network output"},
        "frame_sampling": frame_sampling(input_kind),
        "apex_spotting": SpottingConfig().to_dict(),
    }
    if len(meta["class_names"]) != shape_classes(model):
        raise ValueError(f"{len(class_names)} class names for a model with {shape_classes(model)} outputs")
    meta.update(extra or {})
    return meta


def shape_classes(model) -> int:
    return int(model.output_shape[-1])


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def write_bundle(out, model, meta: dict, *, overwrite: bool = False) -> Path:
    """Write ``model`` and ``meta`` as a bundle folder ``out``, atomically; returns the path."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --overwrite")
    if out.exists() and not (out / META_FILE).is_file():
        raise FileExistsError(f"{out} exists and is not a pipeline bundle; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        model.save(tmp / MODEL_FILE)
        text = json.dumps(meta, indent=2, default=_json_default, allow_nan=False)
        (tmp / META_FILE).write_text(text + "\n")
        if out.exists():
            old = out.with_name(f".old-{out.name}-{uuid.uuid4().hex[:8]}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_meta(path, *, strict: bool = True) -> dict:
    """The checked ``pipeline.json`` of a bundle folder (see :func:`read_bundle`)."""
    from mer_keras import __version__
    from mer_keras.preprocess.pipeline import PreprocessConfig

    path = Path(path)
    meta_path = path / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such pipeline bundle")
    if not meta_path.is_file():
        raise BundleFormatError(f"{path} is not a pipeline bundle (no {META_FILE}); write one with `mer-keras fit-final`")
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleFormatError(f"{meta_path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise BundleFormatError(f"{path} is not a mer-keras pipeline bundle (format {meta.get('format')!r} "
                                f"in {META_FILE}, expected {FORMAT_NAME!r})" if isinstance(meta, dict) else
                                f"{meta_path} does not hold a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleFormatError(f"{path}: unknown bundle format version {version!r}")
    if version > BUNDLE_FORMAT:
        raise BundleFormatError(f"{path}: bundle format {version} (written by mer-keras "
                                f"{meta.get('mer_keras_version', '?')}) is newer than the format {BUNDLE_FORMAT} this "
                                f"mer-keras {__version__} reads; upgrade mer-keras")
    missing = [k for k in ("preprocess", "input", "class_names", "output") if k not in meta]
    if missing:
        raise BundleFormatError(f"{path}: {META_FILE} lacks {missing}")
    try:
        config = PreprocessConfig.from_dict(meta["preprocess"]["config"])
    except (TypeError, ValueError, KeyError) as exc:
        raise BundleFormatError(f"{path}: its pre-processing parameters cannot be read by mer-keras {__version__} "
                                f"({exc})") from None
    stored = meta["preprocess"].get("fingerprint")
    if strict and stored != config.fingerprint():
        raise BundleFormatError(
            f"{path}: pre-processing fingerprint {stored} differs from {config.fingerprint()} computed by mer-keras "
            f"{__version__} (the pre-processing changed since the bundle was written, so new clips would not be "
            "prepared as its training clips were); refit it, or load with strict=False to accept the difference")
    if not (path / MODEL_FILE).is_file():
        raise BundleFormatError(f"{path}: {MODEL_FILE} is missing")
    return meta


def read_bundle(path, *, strict: bool = True):
    """``(model, meta)`` of a bundle folder; :class:`BundleFormatError` on a bad or unknown bundle."""
    meta = read_meta(path, strict=strict)
    import keras

    import importlib

    for module in ("layers", "heads", "flow_layers"):  # custom layers register with Keras on import
        importlib.import_module(f"mer_keras.models.{module}")

    model = keras.models.load_model(Path(path) / MODEL_FILE, compile=False)
    shape = [int(v) for v in model.input_shape[1:]]
    if shape != [int(v) for v in meta["input"]["shape"]]:
        raise BundleFormatError(f"{path}: the model reads {shape} but {META_FILE} says {meta['input']['shape']}")
    if int(model.output_shape[-1]) != len(meta["class_names"]):
        raise BundleFormatError(f"{path}: the model has {model.output_shape[-1]} outputs for "
                                f"{len(meta['class_names'])} class names")
    return model, meta


__all__ = ["BUNDLE_FORMAT", "BundleFormatError", "FORMAT_NAME", "META_FILE", "MODEL_FILE", "frame_sampling",
           "pipeline_meta", "read_bundle", "read_meta", "write_bundle"]
