"""Recognising new clips with a saved pipeline: :class:`Pipeline` and :func:`load_pipeline`.

A :class:`Pipeline` is a trained network plus everything that turns raw frames into its
input, restored from a bundle written by :func:`mer_keras.inference.fit.fit_final`
(:mod:`mer_keras.inference.bundle`). ``predict_clip`` runs, stage by stage and timed:

1. **read** the clip (:func:`~mer_keras.inference.clips.read_clip`: video, folder of frames,
   two images, or arrays) as grey frames;
2. **detection** (dlib HOG) and **landmarks** (68 points) on the reference frame: the onset,
   or, when the onset has no detectable face, the first of the apex and a few evenly
   spaced frames that has one (the camera and head are still during a micro-expression;
   the whole clip is aligned with one transform, as ``prepare`` does);
3. **spotting** when no apex is given (:mod:`~mer_keras.inference.spotting`: the frame of
   largest motion from the onset inside the face mask; a two-frame clip is onset + apex);
4. **alignment** (one similarity warp per frame to the bundle's size), **masks**;
   A bundle trained on a dataset's cropped release (``source="cropped"``) skips steps 2 and
   4: the frames are taken as face crops and resized (spotting then uses the whole crop);
5. **tvl1** (onset -> apex, with its strain; at the bundle's ``flow_size`` when it has one,
   as :func:`~mer_keras.preprocess.pipeline.flow_and_strain` does for ``prepare``) and
   **strain_flow_image** (masking and the flow image) for flow inputs;
6. **network** (batch-1 compiled ``tf.function``; for frame-sequence pipelines the frames
   onset..apex are one batch and the clip score is the mean of the frame scores, as in
   training).

With the default :class:`InferenceOptions` (``exact``) steps 2-5 compute exactly what
:func:`mer_keras.preprocess.pipeline.preprocess_clip` computes for the bundle's
:class:`~mer_keras.preprocess.pipeline.PreprocessConfig` (the arrays are compared in
``tests/test_inference.py``), i.e. the inputs the network was trained on.
``InferenceOptions.realtime()`` trades that identity for speed: detection on a frame
downscaled by 2 (landmarks still on the full frame) and a cheaper TV-L1
(:data:`REALTIME_TVL1`); what it costs in flow accuracy and what it gains in time is
measured by ``mer-keras bench e2e`` (:mod:`mer_keras.inference.latency`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mer_keras.preprocess.changes import frame_changes
from mer_keras.preprocess.flow import TVL1Params

from .clips import ClipError, ClipSource, RawClip, describe, read_clip
from .spotting import SpottingConfig, spot_apex

logger = logging.getLogger("mer_keras.inference")

STAGES = ("read", "detection", "landmarks", "spotting", "alignment", "masks", "tvl1", "strain_flow_image", "network")
"""Timed stages of :meth:`Pipeline.predict_clip` (``Prediction.timings_ms`` keys, plus ``total``)."""

FLOW_KINDS = ("flow_stack", "flow_image")
FRAME_KINDS = ("frames", "frame_changes")
"""Input kinds that read every aligned, masked frame from the onset to the apex."""
SINGLE_IMAGE_KINDS = ("apex",)

REALTIME_TVL1 = TVL1Params(nscales=3, warps=1, inner_iterations=20, outer_iterations=3)
"""TV-L1 of :meth:`InferenceOptions.realtime`: 3 pyramid levels, 1 warp, 20 inner and 3
outer iterations (OpenCV defaults otherwise), chosen from grids over levels, warps, inner and
outer iterations and scale steps against the synthetic ground truths of
:func:`mer_keras.inference.latency.tvl1_accuracy`; its time and end-point error beside
OpenCV's defaults are measured by ``mer-keras bench e2e`` (``docs/benchmarks.md``)."""


@dataclass(frozen=True)
class InferenceOptions:
    """How raw frames are pre-processed at prediction time.

    ``detect_scale``: the face detector runs on the reference frame resized by this factor
    (area interpolation; the box is scaled back and the landmarks are predicted on the
    full frame); when nothing is found there, detection is repeated on the full frame.
    ``1.0`` = exactly as ``prepare``. ``tvl1``: TV-L1 parameters, ``None`` = the bundle's
    (as ``prepare``). ``spotting``: apex spotting parameters. ``reference_tries``: how many
    evenly spaced frames are searched for a face when the onset has none.
    """

    detect_scale: float = 1.0
    tvl1: TVL1Params | None = None
    spotting: SpottingConfig = field(default_factory=SpottingConfig)
    reference_tries: int = 8

    def __post_init__(self) -> None:
        if not (0.1 <= float(self.detect_scale) <= 1.0):
            raise ValueError(f"detect_scale must be in [0.1, 1], got {self.detect_scale}")
        if self.tvl1 is not None and not isinstance(self.tvl1, TVL1Params):
            raise TypeError(f"tvl1 must be a TVL1Params or None, got {type(self.tvl1).__name__}")
        if int(self.reference_tries) < 0:
            raise ValueError(f"reference_tries must be >= 0, got {self.reference_tries}")

    @classmethod
    def exact(cls) -> "InferenceOptions":
        """The bundle's pre-processing, exactly as ``prepare`` ran it for training (the default)."""
        return cls()

    @classmethod
    def realtime(cls) -> "InferenceOptions":
        """Half-resolution detection and :data:`REALTIME_TVL1` (see ``mer-keras bench e2e``)."""
        return cls(detect_scale=0.5, tvl1=REALTIME_TVL1)

    @classmethod
    def preset(cls, name: str) -> "InferenceOptions":
        presets = {"exact": cls.exact, "realtime": cls.realtime}
        if name not in presets:
            raise ValueError(f"unknown inference preset {name!r}; choose from {sorted(presets)}")
        return presets[name]()


@dataclass
class Prediction:
    """The result of :meth:`Pipeline.predict_clip`.

    ``label`` / ``label_id``: the predicted class; ``scores``: one value per class name --
    softmax probabilities (``score_kind="probability"``) or SVM decision values
    (``"svm_score"``, larger = more likely; not probabilities); ``onset`` / ``apex``: frame
    indices used (0-based, in the clip's frame order); ``apex_spotted``: True when the apex
    was found by :mod:`~mer_keras.inference.spotting` rather than given; ``reference_frame``:
    the frame whose face set the alignment; ``timings_ms``: per stage (:data:`STAGES`) and
    ``total``; ``cpu_ms``: the same as process CPU time (all threads of the process: on a
    loaded machine this is the work done, while the wall time also counts waiting);
    ``motion_curve``: the spotting scores per frame (when spotted).
    """

    source: str
    label: str
    label_id: int
    scores: dict
    score_kind: str
    onset: int
    apex: int
    apex_spotted: bool
    n_frames: int
    reference_frame: int
    timings_ms: dict
    motion_curve: list | None = None
    cpu_ms: dict | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "status": "ok", "label": self.label, "label_id": self.label_id,
                "score_kind": self.score_kind, "scores": dict(self.scores), "onset": self.onset, "apex": self.apex,
                "apex_spotted": self.apex_spotted, "n_frames": self.n_frames, "reference_frame": self.reference_frame,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "cpu_ms": None if self.cpu_ms is None else {k: round(v, 3) for k, v in self.cpu_ms.items()},
                "motion_curve": None if self.motion_curve is None else [round(v, 4) for v in self.motion_curve]}

    def summary(self) -> str:
        what = "p" if self.score_kind == "probability" else "SVM score"
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.scores.items())
        how = "spotted" if self.apex_spotted else "given"
        return (f"{self.source}: {self.label} ({what}: {scores}); onset {self.onset}, apex {self.apex} ({how}), "
                f"{self.n_frames} frames, {self.timings_ms.get('total', 0.0):.0f} ms")


@dataclass
class ClipFailure:
    """A clip of a batch that could not be recognised, and why."""

    source: str
    error: str

    def to_dict(self) -> dict:
        return {"source": self.source, "status": "failed", "error": self.error}


@dataclass
class BatchResult:
    """:meth:`Pipeline.predict_many`: the predictions and the failures, in input order."""

    predictions: list
    failures: list

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {"predictions": [p.to_dict() for p in self.predictions],
                "failures": [f.to_dict() for f in self.failures],
                "n_clips": len(self.predictions) + len(self.failures), "n_failed": len(self.failures)}


class _Timer:
    """Wall and process-CPU milliseconds per stage (``add`` closes the stage started at the last mark)."""

    def __init__(self):
        self.ms: dict[str, float] = {}
        self.cpu_ms: dict[str, float] = {}
        self._cpu = time.process_time()

    def add(self, stage: str, start: float) -> float:
        now, cpu = time.perf_counter(), time.process_time()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1e3 * (now - start)
        self.cpu_ms[stage] = self.cpu_ms.get(stage, 0.0) + 1e3 * (cpu - self._cpu)
        self._cpu = cpu
        return now


# ----------------------------------------------------------------------------- pre-processing


def detect_box(aligner, small_aligner, grey: np.ndarray, scale: float):
    """Largest face box in ``grey``; on a downscaled copy first when ``scale < 1``."""
    if scale < 1.0:
        import cv2

        small = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        box = small_aligner.detect(small)
        if box is not None:
            return tuple(v / scale for v in box)
    return aligner.detect(grey)


def _reference_candidates(n: int, onset: int, apex: int | None, tries: int) -> list[int]:
    order = [onset] + ([apex] if apex is not None else [])
    order += [int(round(v)) for v in np.linspace(0, n - 1, min(tries, n))] if tries else []
    seen: list[int] = []
    for i in order:
        if i not in seen:
            seen.append(i)
    return seen


def clip_features(greys: Sequence[np.ndarray], onset: int | None, apex: int | None, config, *, input_kind: str,
                  options: InferenceOptions | None = None, aligner=None, small_aligner=None, source: str = "the clip"):
    """Staged, timed pre-processing of one clip: ``(ClipFeatures, info, timings_ms)``.

    ``greys``: grey uint8 frames; ``onset`` / ``apex``: indices or ``None`` (onset: the first
    frame; apex: spotted). ``config``: the bundle's ``PreprocessConfig``; ``input_kind``: the
    network input (:data:`mer_keras.training.datasets.INPUT_KINDS`), which decides which
    stages run (no TV-L1 for frame or apex inputs; all frames onset..apex aligned for
    ``"frames"``). ``info``: ``onset``, ``apex``, ``apex_spotted``, ``reference_frame``,
    ``motion_curve``. Raises :class:`ClipError` for too few frames, bad indices or no face.
    """
    from mer_keras.preprocess.face import FaceAligner, align_clip, align_frame, estimate_alignment
    from mer_keras.preprocess.masks import apply_mask, build_mask
    from mer_keras.preprocess.pipeline import INTERPOLATIONS, ClipFeatures, flow_and_strain

    options = options or InferenceOptions()
    aligner = aligner or FaceAligner(upsample=config.upsample, fallback_upsample=config.upsample + 1)
    small_aligner = small_aligner or FaceAligner(upsample=config.upsample, fallback_upsample=None)
    timer = _Timer()
    n = len(greys)
    single_ok = input_kind in SINGLE_IMAGE_KINDS
    if n < 1 or (n < 2 and not single_ok):
        raise ClipError(f"{source}: {n} frame(s); a clip needs at least 2 (an onset and an apex)")
    for name, value in (("onset", onset), ("apex", apex)):
        if value is not None and not (0 <= int(value) < n):
            raise ClipError(f"{source}: {name} {value} is outside the clip's frames 0..{n - 1}")
    onset = 0 if onset is None else int(onset)
    if apex is not None and (int(apex) < onset or (int(apex) == onset and not single_ok)):
        raise ClipError(f"{source}: the apex ({apex}) must come after the onset ({onset})")
    spotted = False
    if apex is None and n - onset < 2:
        if not single_ok:
            raise ClipError(f"{source}: no frame after the onset ({onset}) of {n} frames to take as the apex")
        apex = onset
    elif apex is None and n - onset == 2:
        apex = onset + 1  # onset + apex: nothing to spot
    if config.source == "cropped":
        return _cropped_clip_features(greys, onset, apex, config, input_kind, options, timer, source)

    # -- reference face: the onset, else the first frame with a face
    t = time.perf_counter()
    box, reference = None, onset
    checked = []
    for i in _reference_candidates(n, onset, apex, options.reference_tries):
        checked.append(i)
        box = detect_box(aligner, small_aligner, greys[i], float(options.detect_scale))
        if box is not None:
            reference = i
            break
    t = timer.add("detection", t)
    if box is None:
        raise ClipError(f"{source}: no face detected in any of the {len(checked)} frame(s) checked "
                        f"({', '.join(map(str, checked))}; the onset first)")
    points = aligner.landmarks_in_box(greys[reference], box)
    t = timer.add("landmarks", t)

    curve = None
    if apex is None:
        apex, curve = spot_apex(greys, points, onset, options.spotting, margin=config.crop_margin)
        spotted = True
        t = timer.add("spotting", t)
    apex = int(apex)

    selected = list(range(onset, apex + 1)) if input_kind in FRAME_KINDS else [onset, apex]
    interpolation = INTERPOLATIONS[config.interpolation]
    if config.align_mode == "reuse":
        transform = estimate_alignment(points, config.size, margin=config.crop_margin)
        aligned = np.stack([align_frame(greys[i], transform, interpolation=interpolation) for i in selected])
        landmarks_out = transform.transform_points(points)
        n_fallback, transforms = 0, (transform, transform)
    else:  # per-frame alignment (no preset uses it): the library's own routine, reference = onset
        from mer_keras.preprocess.face import NoFaceError

        try:
            clip = align_clip([greys[i] for i in selected], config.size, reference=0, mode=config.align_mode,
                              margin=config.crop_margin, aligner=aligner, interpolation=interpolation)
        except NoFaceError as exc:
            raise ClipError(f"{source}: {exc}") from None
        aligned, landmarks_out, n_fallback = clip.frames, clip.landmarks, clip.n_fallback
        transforms = (clip.transforms[0], clip.transforms[-1])
    t = timer.add("alignment", t)

    mask = build_mask(landmarks_out, config.size, config.mask)
    onset_m, apex_m = apply_mask(aligned[0], mask), apply_mask(aligned[-1], mask)
    frames_m = apply_mask(aligned, mask) if input_kind in FRAME_KINDS else None
    t = timer.add("masks", t)

    flow_m = strain_m = image = None
    if input_kind in FLOW_KINDS:
        _check_flow_request(config, input_kind, onset, apex, source)
        ends = (greys[selected[0]], greys[selected[-1]])
        flow, strain = flow_and_strain(
            lambda size: (aligned[0], aligned[-1]) if size == config.size else tuple(
                align_frame(grey, tf.resized(size), interpolation=interpolation)
                for grey, tf in zip(ends, (transforms[0], transforms[-1]))),
            config, options.tvl1)
        t = timer.add("tvl1", t)
        flow_m, strain_m = apply_mask(flow, mask), apply_mask(strain, mask)
        image = config.flow_image.render(flow_m, strain_m)
        t = timer.add("strain_flow_image", t)
    features = ClipFeatures(onset=onset_m, apex=apex_m, flow=flow_m, strain=strain_m, flow_image=image, mask=mask,
                            landmarks=np.asarray(landmarks_out, dtype=np.float32), n_fallback_frames=int(n_fallback),
                            frames=frames_m)
    info = {"onset": onset, "apex": apex, "apex_spotted": spotted, "reference_frame": reference,
            "motion_curve": None if curve is None else [float(v) for v in curve]}
    info["cpu_ms"] = timer.cpu_ms
    return features, info, timer.ms


def _check_flow_request(config, input_kind: str, onset: int, apex: int, source) -> None:
    """:class:`ClipError` unless the bundle computes flow and the clip has two different frames for it."""
    if not config.compute_flow:
        raise ClipError(f"{source}: the bundle's pre-processing computes no flow, but its network reads {input_kind!r}")
    if onset == apex:
        raise ClipError(f"{source}: optical flow needs two different frames (onset {onset} = apex {apex})")


def _cropped_clip_features(greys, onset: int, apex: int | None, config, input_kind: str, options, timer, source):
    """``clip_features`` of a cropped-release bundle: the frames are face crops, taken as they are.

    No detection, landmarks, alignment or mask (the bundle was trained on a dataset's own
    crops, ``PreprocessConfig.source == "cropped"``); an apex that is not given is spotted
    over the whole crop. The arrays are those of
    :func:`~mer_keras.preprocess.pipeline.preprocess_cropped` on the same grey frames.
    """
    from mer_keras.preprocess.pipeline import preprocess_cropped

    t = time.perf_counter()
    curve, spotted = None, False
    if apex is None:
        apex, curve = spot_apex(greys, None, onset, options.spotting)
        spotted = True
        t = timer.add("spotting", t)
    apex = int(apex)
    flow = input_kind in FLOW_KINDS
    if flow:
        _check_flow_request(config, input_kind, onset, apex, source)
    selected = range(onset, apex + 1) if input_kind in FRAME_KINDS else (onset, apex)
    run = config.replace(keep="onset_to_apex" if input_kind in FRAME_KINDS else "onset_apex", compute_flow=flow)
    features = preprocess_cropped([greys[i] for i in selected], run, params=options.tvl1)
    timer.add("tvl1" if flow else "alignment", t)
    info = {"onset": onset, "apex": apex, "apex_spotted": spotted, "reference_frame": onset,
            "motion_curve": None if curve is None else [float(v) for v in curve], "cpu_ms": timer.cpu_ms}
    return features, info, timer.ms


def network_input(features, input_kind: str) -> np.ndarray:
    """The network's input batch for one clip's features, as training reads the cache.

    Mirrors :func:`mer_keras.training.datasets._input_from_arrays`: ``flow_stack`` ``1 x S x S
    x 3`` float32 ``(u, v, strain)``; ``flow_image`` ``1 x S x S x 3`` uint8; ``apex`` ``1 x
    S x S x 1``; ``onset_apex`` ``1 x S x S x 2``; ``frames`` ``T x S x S x 1`` (onset..apex);
    ``frame_changes`` the same stack as changes since the onset.
    """
    if input_kind == "flow_stack":
        x = np.concatenate([features.flow.astype(np.float32), features.strain.astype(np.float32)[..., None]], axis=-1)
    elif input_kind == "flow_image":
        x = np.asarray(features.flow_image)
    elif input_kind == "apex":
        x = np.asarray(features.apex)[..., None]
    elif input_kind == "onset_apex":
        x = np.stack([features.onset, features.apex], axis=-1)
    elif input_kind == "frames":
        return np.asarray(features.frames)[..., None]
    elif input_kind == "frame_changes":
        return frame_changes(np.asarray(features.frames))[..., None]
    else:
        raise ValueError(f"unknown input kind {input_kind!r}")
    return x[None]


# ----------------------------------------------------------------------------- the pipeline


class Pipeline:
    """A trained network with its pre-processing; see the module docstring.

    Build it with :func:`load_pipeline` (from a bundle) or :meth:`from_model` (in memory).
    Attributes: ``model`` (Keras), ``meta`` (the bundle's ``pipeline.json`` dict),
    ``config`` (:class:`~mer_keras.preprocess.pipeline.PreprocessConfig`), ``input_kind``,
    ``input_shape``, ``class_names``, ``score_kind``, ``normalisation`` (``(mean, std)`` or
    ``None``), ``options`` (:class:`InferenceOptions`), ``path`` (the bundle, if loaded).
    """

    def __init__(self, model, meta: dict, *, options: InferenceOptions | None = None, path=None):
        from mer_keras.preprocess.face import FaceAligner
        from mer_keras.preprocess.pipeline import PreprocessConfig

        self.model = model
        self.meta = meta
        self.path = None if path is None else Path(path)
        self.config = PreprocessConfig.from_dict(meta["preprocess"]["config"])
        self.input_kind = meta["input"]["kind"]
        self.input_shape = tuple(int(v) for v in meta["input"]["shape"])
        self.input_dtype = str(meta["input"]["dtype"])
        self.class_names = tuple(meta["class_names"])
        self.score_kind = meta["output"]["score_kind"]
        norm = meta.get("normalisation")
        self.normalisation = None if norm is None else (np.asarray(norm["mean"], np.float32),
                                                        np.asarray(norm["std"], np.float32))
        self.options = options or InferenceOptions()
        if self.input_shape[:2] != (self.config.size, self.config.size):
            raise ValueError(f"the network reads {self.input_shape} but the pre-processing makes "
                             f"{self.config.size} x {self.config.size} crops")
        self._aligner = FaceAligner(upsample=self.config.upsample, fallback_upsample=self.config.upsample + 1)
        self._small_aligner = FaceAligner(upsample=self.config.upsample, fallback_upsample=None)
        self._net: dict = {"fn": None}  # the compiled network, shared with with_options() copies

    @classmethod
    def from_model(cls, model, *, preprocess, input_kind: str, class_names: Sequence[str], recipe=None,
                   normalisation=None, options: InferenceOptions | None = None, extra: dict | None = None) -> "Pipeline":
        """A pipeline from an in-memory model (nothing saved); see :func:`~mer_keras.inference.bundle.pipeline_meta`."""
        from .bundle import pipeline_meta

        meta = pipeline_meta(model, preprocess=preprocess, input_kind=input_kind, class_names=class_names,
                             recipe=recipe, normalisation=normalisation, extra=extra)
        return cls(model, meta, options=options)

    def with_options(self, options: InferenceOptions | str) -> "Pipeline":
        """The same network and bundle with other :class:`InferenceOptions` (shares the model)."""
        options = InferenceOptions.preset(options) if isinstance(options, str) else options
        other = Pipeline(self.model, self.meta, options=options, path=self.path)
        other._net = self._net
        return other

    def __repr__(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return (f"Pipeline({(self.meta.get('recipe') or {}).get('name')!r}, input={self.input_kind} "
                f"{'x'.join(map(str, self.input_shape))}, classes={list(self.class_names)}{where})")

    # -- network
    def _network(self):
        if self._net["fn"] is None:
            import tensorflow as tf

            spec = tf.TensorSpec((None, *self.input_shape), tf.as_dtype(self.input_dtype))
            model = self.model

            def forward(x):
                return tf.cast(model(x, training=False), tf.float32)

            # one trace for any batch size; no AutoGraph conversion needed (no Python control flow)
            self._net["fn"] = tf.function(forward, input_signature=[spec], autograph=False)
        return self._net["fn"]

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        """Scores (``N x K`` float64) of prepared network inputs (cache arrays), normalised as in training."""
        from mer_keras.training.loso import apply_normalisation

        x = np.asarray(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"inputs are {x.shape[1:]}, the network reads {self.input_shape}")
        if self.normalisation is not None:
            x = apply_normalisation(x, self.normalisation)
        x = x.astype(self.input_dtype, copy=False)
        fn = self._network()
        out = [fn(x[i: i + 256]).numpy() for i in range(0, len(x), 256)]
        return np.concatenate(out).astype(np.float64)

    # -- clips
    def predict_clip(self, clip: ClipSource | RawClip, onset: int | None = None, apex: int | None = None,
                     *, source: str | None = None) -> Prediction:
        """Recognise one clip (a path, frames or a :class:`RawClip`); raises :class:`ClipError` on bad input.

        ``onset`` / ``apex``: 0-based frame indices; ``None`` = the first frame / spotted.
        """
        start, cpu_start = time.perf_counter(), time.process_time()
        given = isinstance(clip, RawClip)
        raw = clip if given else read_clip(clip)
        name = source or raw.source
        features, info, timings = clip_features(
            raw.frames, onset, apex, self.config, input_kind=self.input_kind, options=self.options,
            aligner=self._aligner, small_aligner=self._small_aligner, source=name)
        t, cpu = time.perf_counter(), time.process_time()
        outputs = self.predict_arrays(network_input(features, self.input_kind))
        scores = outputs.mean(axis=0)  # one row, or the mean of the frame scores (training's clip score)
        timings = {"read": 0.0 if given else raw.read_ms, **timings, "network": 1e3 * (time.perf_counter() - t)}
        timings["total"] = 1e3 * (time.perf_counter() - start)  # wall time of this call (reading included if done here)
        cpu_ms = {**info["cpu_ms"], "network": 1e3 * (time.process_time() - cpu),
                  "total": 1e3 * (time.process_time() - cpu_start)}
        label_id = int(np.argmax(scores))
        return Prediction(source=name, label=self.class_names[label_id], label_id=label_id,
                          scores={c: float(s) for c, s in zip(self.class_names, scores)}, score_kind=self.score_kind,
                          onset=info["onset"], apex=info["apex"], apex_spotted=info["apex_spotted"],
                          n_frames=len(raw.frames), reference_frame=info["reference_frame"],
                          timings_ms={k: timings.get(k, 0.0) for k in (*STAGES, "total")},
                          motion_curve=info["motion_curve"], cpu_ms={k: cpu_ms.get(k, 0.0) for k in (*STAGES[1:], "total")})

    def predict_many(self, clips: Iterable, onset: int | None = None, apex: int | None = None, *,
                     progress: bool = False) -> BatchResult:
        """Recognise every clip; a clip that fails is logged, counted and listed, and the batch goes on."""
        from tqdm.auto import tqdm

        clips = list(clips)
        predictions, failures = [], []
        for clip in tqdm(clips, desc="predict", unit="clip", disable=not progress or len(clips) < 2):
            name = describe(clip)
            try:
                predictions.append(self.predict_clip(clip, onset, apex, source=name))
            except (ClipError, OSError) as exc:  # bad input: counted, logged, listed; the batch goes on
                message = str(exc) if isinstance(exc, ClipError) else f"{name}: {type(exc).__name__}: {exc}"
                logger.warning("skipped %s", message)
                failures.append(ClipFailure(name, message))
        return BatchResult(predictions, failures)


def load_pipeline(path, options: InferenceOptions | str | None = None, *, strict: bool = True) -> Pipeline:
    """Restore a :class:`Pipeline` from a bundle folder written by ``mer-keras fit-final``.

    ``options``: :class:`InferenceOptions`, ``"exact"`` (default) or ``"realtime"``.
    Raises :class:`~mer_keras.inference.bundle.BundleFormatError` for a folder that is not a
    bundle, a bundle of an unknown or newer format, or (with ``strict``) one whose
    pre-processing fingerprint this version computes differently.
    """
    from .bundle import read_bundle

    options = InferenceOptions.preset(options) if isinstance(options, str) else options
    model, meta = read_bundle(path, strict=strict)
    return Pipeline(model, meta, options=options, path=path)


__all__ = ["BatchResult", "ClipFailure", "FLOW_KINDS", "InferenceOptions", "Pipeline", "Prediction", "REALTIME_TVL1",
           "STAGES", "clip_features", "load_pipeline", "network_input"]
