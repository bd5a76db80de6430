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
import zipfile
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


INPUT_CHANNELS = {"flow_stack": 3, "flow_image": 3, "apex": 1, "onset_apex": 2, "frames": 1, "frame_changes": 1}
"""Channels of the network input per input kind, as :func:`mer_keras.inference.predict.network_input` builds it."""
SCORE_KINDS = ("probability", "svm_score")
INPUT_DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8", "int32", "int64")
"""Input dtypes a bundle may declare (what Keras models of this package take, and their obvious kin)."""


def clip_score_rule(input_kind: str) -> str:
    """The ``output.clip_score`` text for an input kind (how :class:`~mer_keras.inference.predict.Pipeline` scores)."""
    return "mean of the frame scores" if input_kind in ("frames", "frame_changes") else "the network output"


def model_input_dtype(model) -> str:
    """The dtype name of ``model``'s first input, as ``pipeline.json`` records it."""
    dtype = str(getattr(model.inputs[0], "dtype", "float32"))
    return dtype.replace("<dtype: '", "").replace("'>", "")


def frame_sampling(input_kind: str) -> dict:
    """The frame-sampling rule recorded for a network input kind."""
    rule = {"frames": "onset_to_apex", "frame_changes": "onset_to_apex", "apex": "apex"}.get(input_kind, "onset_apex")
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
    dtype = model_input_dtype(model)
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
                   "clip_score": clip_score_rule(input_kind)},
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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite_numbers(value) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value))


def check_meta(meta: dict, config, meta_path, *, strict: bool = True) -> None:
    """Check every field of ``pipeline.json`` that decides what a prediction means; :class:`BundleFormatError` if not.

    ``config``: the bundle's ``PreprocessConfig`` (already read). Checked, each refusal
    naming the field and ``meta_path``: ``preprocess.fingerprint`` (a string; equal to the
    config's in ``read_meta``), ``input.kind`` (one of the input kinds), ``input.shape``
    (``[size, size, C]`` with the pre-processing's ``size`` and the kind's ``C``:
    :data:`INPUT_CHANNELS`), ``input.dtype`` (:data:`INPUT_DTYPES`), a flow input needing a
    flow pre-processing, ``class_names`` (two or more distinct non-empty strings),
    ``output.score_kind`` (:data:`SCORE_KINDS`; ``svm_score`` exactly when the recipe's loss
    is ``multi_margin``, as :func:`pipeline_meta` sets it), ``output.clip_score`` (the rule
    the pipeline applies), ``normalisation`` (``null`` or per-channel finite ``mean`` and
    positive ``std``, one per input channel), ``frame_sampling.rule`` (the kind's rule) and,
    with ``strict``, ``apex_spotting`` (the spotting this version runs), ``recipe`` (``null``
    or an object). Informational fields (``created``, ``mer_keras_version``, ``training``)
    are not checked. The model-dependent checks (shape, dtype, outputs) are in
    :func:`read_bundle`.
    """
    from mer_keras.training.datasets import INPUT_KINDS

    from .spotting import SpottingConfig

    def refuse(name: str, problem: str) -> BundleFormatError:
        return BundleFormatError(f"{meta_path}: field {name!r} {problem}; the bundle cannot be used as it is "
                                 "(write it again with `mer-keras fit-final`)")

    def section(name: str) -> dict:
        value = meta.get(name)
        if not isinstance(value, dict):
            raise refuse(name, f"must be an object, got {type(value).__name__}")
        return value

    if not isinstance(section("preprocess").get("fingerprint"), str):
        raise refuse("preprocess.fingerprint", f"must be a string, got {meta['preprocess'].get('fingerprint')!r}")
    inputs = section("input")
    kind = inputs.get("kind")
    if kind not in INPUT_KINDS:
        raise refuse("input.kind", f"is {kind!r}; expected one of {list(INPUT_KINDS)}")
    shape = inputs.get("shape")
    want = [config.size, config.size, INPUT_CHANNELS[kind]]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) for v in shape)):
        raise refuse("input.shape", f"is {shape!r}; expected three integers [height, width, channels]")
    if list(shape) != want:
        raise refuse("input.shape", f"is {shape}, but the pre-processing makes {config.size} x {config.size} crops and "
                                    f"a {kind!r} input has {INPUT_CHANNELS[kind]} channel(s): expected {want}")
    if inputs.get("dtype") not in INPUT_DTYPES:
        raise refuse("input.dtype", f"is {inputs.get('dtype')!r}; expected one of {list(INPUT_DTYPES)}")
    if kind in ("flow_stack", "flow_image") and not config.compute_flow:
        raise refuse("input.kind", f"is {kind!r}, a flow input, but 'preprocess.config.compute_flow' is false")

    names = meta.get("class_names")
    if not (isinstance(names, list) and all(isinstance(c, str) and c.strip() for c in names)):
        raise refuse("class_names", f"must be a list of non-empty strings, got {names!r}")
    if len(names) < 2 or len(set(names)) != len(names):
        raise refuse("class_names", f"is {names}; expected two or more distinct class names")

    output = section("output")
    if output.get("score_kind") not in SCORE_KINDS:
        raise refuse("output.score_kind", f"is {output.get('score_kind')!r}; expected one of {list(SCORE_KINDS)}")
    recipe = meta.get("recipe")
    if recipe is not None and not (isinstance(recipe, dict) and isinstance(recipe.get("name", ""), str)):
        raise refuse("recipe", f"must be null or an object with a string 'name', got {recipe!r}")
    recipe_config = recipe.get("config") if isinstance(recipe, dict) else None
    loss = recipe_config.get("loss") if isinstance(recipe_config, dict) else None
    if loss is not None:
        expected = "svm_score" if loss == "multi_margin" else "probability"
        if output["score_kind"] != expected:
            raise refuse("output.score_kind", f"is {output['score_kind']!r}, but the recipe's loss {loss!r} gives "
                                              f"{expected!r} scores")
    if output.get("clip_score") != clip_score_rule(kind):
        raise refuse("output.clip_score", f"is {output.get('clip_score')!r}; a {kind!r} pipeline scores a clip by "
                                          f"{clip_score_rule(kind)!r}")

    norm = meta.get("normalisation")
    if norm is not None:
        if not isinstance(norm, dict) or norm.get("kind") != "per_channel":
            raise refuse("normalisation", f"must be null or a 'per_channel' object, got {norm!r}")
        for key in ("mean", "std"):
            values = norm.get(key)
            if not _finite_numbers(values) or len(values) != INPUT_CHANNELS[kind]:
                raise refuse(f"normalisation.{key}", f"is {values!r}; expected {INPUT_CHANNELS[kind]} finite numbers "
                                                     "(one per input channel)")
        if min(norm["std"]) <= 0:
            raise refuse("normalisation.std", f"is {norm['std']}; every value must be > 0")

    sampling = meta.get("frame_sampling")
    if sampling is not None:
        rule = frame_sampling(kind)["rule"]
        if not isinstance(sampling, dict) or sampling.get("rule") != rule:
            got = sampling.get("rule") if isinstance(sampling, dict) else sampling
            raise refuse("frame_sampling.rule", f"is {got!r}; a {kind!r} pipeline samples {rule!r}")
    spotting = meta.get("apex_spotting")
    if spotting is not None:
        current = json.loads(json.dumps(SpottingConfig().to_dict(), default=_json_default))
        if not isinstance(spotting, dict) or set(spotting) != set(current):
            raise refuse("apex_spotting", f"must be an object with the fields {sorted(current)}")
        if strict and spotting != current:
            changed = sorted(k for k in current if spotting.get(k) != current[k])
            raise refuse("apex_spotting", f"differs from the apex spotting this mer-keras runs (in {changed}), so "
                                          "clips without an apex would be spotted otherwise than recorded; load with "
                                          "strict=False to accept the difference")


def read_meta(path, *, strict: bool = True) -> dict:
    """The checked ``pipeline.json`` of a bundle folder (see :func:`read_bundle` and :func:`check_meta`)."""
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
    if not _is_int(version) or version < 1:
        raise BundleFormatError(f"{meta_path}: field 'format_version': unknown bundle format version {version!r}")
    if version > BUNDLE_FORMAT:
        raise BundleFormatError(f"{path}: bundle format {version} (written by mer-keras "
                                f"{meta.get('mer_keras_version', '?')}) is newer than the format {BUNDLE_FORMAT} this "
                                f"mer-keras {__version__} reads; upgrade mer-keras")
    missing = [k for k in ("preprocess", "input", "class_names", "output") if k not in meta]
    if missing:
        raise BundleFormatError(f"{path}: {META_FILE} lacks {missing}")
    try:
        config = PreprocessConfig.from_dict(meta["preprocess"]["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BundleFormatError(f"{meta_path}: field 'preprocess.config' cannot be read by mer-keras {__version__} "
                                f"({exc})") from None
    stored = meta["preprocess"].get("fingerprint")
    if strict and stored != config.fingerprint():
        raise BundleFormatError(
            f"{meta_path}: field 'preprocess.fingerprint' {stored} differs from {config.fingerprint()} computed by "
            f"mer-keras "
            f"{__version__} (the pre-processing changed since the bundle was written, so new clips would not be "
            "prepared as its training clips were); refit it, or load with strict=False to accept the difference")
    check_meta(meta, config, meta_path, strict=strict)
    if not (path / MODEL_FILE).is_file():
        raise BundleFormatError(f"{path}: {MODEL_FILE} is missing")
    return meta


def read_bundle(path, *, strict: bool = True):
    """``(model, meta)`` of a bundle folder; :class:`BundleFormatError` on a bad or unknown bundle.

    Besides :func:`read_meta`'s checks, ``pipeline.json`` must describe the saved model:
    its input shape (``input.shape``) and dtype (``input.dtype``), and one class name per
    output (``class_names``).
    """
    meta = read_meta(path, strict=strict)
    import keras

    import importlib

    for module in ("layers", "heads", "flow_layers"):  # custom layers register with Keras on import
        importlib.import_module(f"mer_keras.models.{module}")

    meta_path = Path(path) / META_FILE
    model_path = Path(path) / MODEL_FILE
    if not zipfile.is_zipfile(model_path):  # Keras would report a damaged archive as "File not found"
        raise BundleFormatError(f"{model_path} is damaged or truncated (not a complete .keras zip archive); copy "
                                "the bundle again or refit it with `mer-keras fit-final`")
    model = keras.models.load_model(model_path, compile=False)
    shape = [int(v) for v in model.input_shape[1:]]
    if shape != [int(v) for v in meta["input"]["shape"]]:
        raise BundleFormatError(f"{meta_path}: field 'input.shape' is {meta['input']['shape']} but the model reads "
                                f"{shape}")
    if model_input_dtype(model) != meta["input"]["dtype"]:
        raise BundleFormatError(f"{meta_path}: field 'input.dtype' is {meta['input']['dtype']!r} but the model reads "
                                f"{model_input_dtype(model)!r}")
    if int(model.output_shape[-1]) != len(meta["class_names"]):
        raise BundleFormatError(f"{meta_path}: field 'class_names' has {len(meta['class_names'])} names for a model "
                                f"with {model.output_shape[-1]} outputs")
    return model, meta


__all__ = ["BUNDLE_FORMAT", "BundleFormatError", "FORMAT_NAME", "INPUT_CHANNELS", "INPUT_DTYPES", "META_FILE",
           "MODEL_FILE", "SCORE_KINDS", "check_meta", "clip_score_rule", "frame_sampling", "model_input_dtype",
           "pipeline_meta", "read_bundle", "read_meta", "write_bundle"]
