"""Recognising new clips: final training, saved pipelines, prediction, export, end-to-end latency.

* :mod:`.fit` -- :func:`fit_final`: train a recipe on every subject of a prepared cache and
  save a pipeline bundle (``mer-keras fit-final``);
* :mod:`.bundle` -- the bundle format (``model.keras`` + ``pipeline.json``), written
  atomically, checked on load (:class:`BundleFormatError`);
* :mod:`.predict` -- :func:`load_pipeline` / :class:`Pipeline`: raw frames -> label, stage by
  stage and timed (``mer-keras predict``); :class:`InferenceOptions` (``exact``, ``realtime``);
* :mod:`.clips` -- reading a video, a folder of frames or two images (:class:`ClipError`);
* :mod:`.spotting` -- apex spotting when onset and apex are not annotated;
* :mod:`.export` -- TensorFlow Lite export with a Keras-vs-TFLite check (``mer-keras export``);
* :mod:`.latency` -- the end-to-end latency benchmark (``mer-keras bench e2e``).

This package imports the data, pre-processing, model and training layers; nothing below it
imports it. Importing it does not import TensorFlow (the functions do, when called).
"""

from .bundle import BUNDLE_FORMAT, BundleFormatError, read_bundle, read_meta, write_bundle
from .clips import ClipError, RawClip, read_clip
from .export import check_tflite, export_tflite
from .fit import FitResult, fit_final
from .predict import (
    REALTIME_TVL1,
    STAGES,
    BatchResult,
    ClipFailure,
    InferenceOptions,
    Pipeline,
    Prediction,
    clip_features,
    load_pipeline,
)
from .spotting import SpottingConfig, spot_apex

__all__ = [
    "BUNDLE_FORMAT", "BatchResult", "BundleFormatError", "ClipError", "ClipFailure", "FitResult", "InferenceOptions",
    "Pipeline", "Prediction", "REALTIME_TVL1", "RawClip", "STAGES", "SpottingConfig", "check_tflite", "clip_features",
    "export_tflite", "fit_final", "load_pipeline", "read_bundle", "read_clip", "read_meta", "spot_apex",
    "write_bundle",
]
