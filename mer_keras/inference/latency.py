"""End-to-end latency: two raw frames -> label, stage by stage (``mer-keras bench e2e``).

What is timed: :meth:`~mer_keras.inference.predict.Pipeline.predict_clip` on an onset and an
apex frame already in memory (640 x 480 grey, rendered by the synthetic writer with a known
flow), onset and apex given: dlib detection and landmarks on the onset, alignment of both
frames, masks, TV-L1 onset -> apex, strain and flow image (flow pipelines), and the network
(batch-1 compiled ``tf.function``; frame pipelines run the two frames as one batch and
average). Reading files is not included. Each configuration is warmed up (model tracing,
dlib model loading, TV-L1 object creation), then the repetitions are interleaved round-robin
over the configurations so that load changes on a shared machine hit all alike; every stage
and the total are medians over the repetitions. Networks have random weights (latency does
not depend on them).

Configurations: the Off-TANet pipeline on raw frames (preset ``off_tanet_aligned``, 112 px,
``flow_stack``; the ``off_tanet`` preset takes a dataset's face crops and runs no detection) and
the ShuffleNetV2-SVM pipeline (preset ``shufflenet``, 224 px, ShuffleNetV2 1.0x with the SVM
head on the aligned, masked frames -- no flow at inference, the flow only pre-trains it),
each with :meth:`InferenceOptions.exact` (the bundle's pre-processing, as ``prepare``:
full-resolution detection, ``TVL1Params.fast()``) and :meth:`InferenceOptions.realtime`
(detection on the frame downscaled by 2, :data:`REALTIME_TVL1`), the latter also with one
OpenCV thread.

Flow accuracy (:func:`tvl1_accuracy`): mean end-point error inside the face against exact
ground truth at 112 px, for OpenCV's default TV-L1, the ``fast`` preset and
:data:`REALTIME_TVL1`, on three synthetic sets (:data:`FLOW_SETS`): six rendered clips as
the writer renders them (``tests/test_synthetic_recovery.py`` measures EPE the same way;
0.5-3 px raw amplitude, no blink), the same six clips without the expression's shading
(pure geometric motion), and the portrait warped by known smooth fields of 0.5, 1, 2 and 3
px peak (``mer_keras.preprocess.bench``). The realtime setting must be no worse than
OpenCV's default on all three.

Measured numbers: docs/benchmarks.md, section "Inference latency" (``mer-keras bench e2e``).

Why the realtime options: with the bundle's pre-processing, TV-L1 (``fast`` preset) and
dlib detection on the full 640 x 480 frame take most of the Off-TANet pipeline's time.
Detecting on the frame downscaled by 2 is much cheaper, and the landmarks, still predicted
on the full frame from the scaled-back box, hardly move (:func:`landmark_shift` measures
how much). :data:`REALTIME_TVL1` was chosen from grids of TV-L1 settings as a cheap one
that is no worse than OpenCV's default on all three sets; the shaded set depends on the
synthetic renderer's appearance model, which was being retuned while the settings were
compared, and the chosen setting was no worse than the default on every version seen,
the cheaper candidates were not. The ShuffleNetV2 pipeline needs no flow at inference
(its flow only pre-trains the backbone). On a machine shared with other jobs the wall
times grow: a shared CPU, not the pipeline, decides whether the target holds there.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import numpy as np

TARGET_MS = 150.0
"""The issue's end-to-end target for two raw frames -> label on this CPU."""


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def rendered_pair(seed: int = 7, frame_size: tuple[int, int] = (640, 480), label: str = "positive",
                  amplitude: float = 2.0):
    """``(onset, apex, raw truth flow)``: grey frames of a rendered synthetic clip and its onset -> apex flow."""
    import cv2

    from mer_keras.data.synthetic.faces import make_subjects
    from mer_keras.data.synthetic.render import render_clip

    subject = make_subjects(1, frame_size=frame_size, seed=11)[0]
    clip = render_clip(subject, label, n_frames=9, amplitude=amplitude, rng=np.random.default_rng(seed), blink_prob=0.0)
    grey = (lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f)
    return grey(clip.frames[clip.onset]), grey(clip.frames[clip.apex]), clip.apex_flow


FLOW_SETS = ("rendered", "motion_only", "portrait")
"""The synthetic ground truths of :func:`tvl1_accuracy`: rendered clips as the writer renders
them (motion plus the expression's shading, which TV-L1 does not model), the same clips
rendered without shading (``appearance_strength=0``: pure geometric motion), and the
portrait warped by known fields (``mer_keras.preprocess.bench``)."""


def tvl1_accuracy(size: int = 112, params: dict | None = None, repeats: int = 3) -> dict:
    """EPE (px) and time of TV-L1 settings on the synthetic ground truths :data:`FLOW_SETS`.

    ``params``: ``{name: TVL1Params}``, default OpenCV's defaults, ``fast`` and ``realtime``.
    Returns ``{name: {"epe": {set: px}, "epe_ratio": {set: ratio}, "ms", "time_ratio",
    "no_worse": bool}}``; ratios are to the first setting, ``no_worse`` = every EPE ratio
    <= 1. Six clips per rendered set (0.5-3 px raw amplitude, no blink), four portrait
    peaks (0.5, 1, 2, 3 px in aligned coordinates); EPE inside the face, 3 px from the border.
    """
    import cv2

    from mer_keras.data.synthetic.faces import make_subjects
    from mer_keras.data.synthetic.render import render_clip
    from mer_keras.preprocess.bench import portrait_frame, synthetic_aligned_pair
    from mer_keras.preprocess.face import FaceAligner, align_frame, estimate_alignment
    from mer_keras.preprocess.flow import TVL1Params, endpoint_error, tvl1_flow
    from mer_keras.preprocess.masks import MaskConfig, build_mask

    from .predict import REALTIME_TVL1

    params = params or {"opencv default": TVL1Params(), "fast": TVL1Params.fast(), "realtime": REALTIME_TVL1}
    aligner = FaceAligner()
    subjects = make_subjects(3, frame_size=(640, 480), seed=11)
    border = cv2.erode(np.ones((size, size), np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    cases = [("positive", 0.7), ("negative", 1.5), ("surprise", 2.5), ("negative", 3.0), ("positive", 1.0),
             ("surprise", 0.5)]
    sets: dict = {"rendered": [], "motion_only": []}
    for key, shading in (("rendered", {}), ("motion_only", {"appearance_strength": 0.0})):
        for i, (label, amplitude) in enumerate(cases):
            clip = render_clip(subjects[i % 3], label, n_frames=9, amplitude=amplitude, rng=np.random.default_rng(i),
                               blink_prob=0.0, **shading)
            grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f
                    for f in (clip.frames[clip.onset], clip.frames[clip.apex])]
            points = aligner.landmarks(grey[0])
            tf = estimate_alignment(points, size)
            face = build_mask(tf.transform_points(points), size, MaskConfig(mask_eyes=False)) & border
            sets[key].append((align_frame(grey[0], tf), align_frame(grey[1], tf), tf.transform_flow(clip.apex_flow), face))
    frame = portrait_frame()
    points = aligner.landmarks(frame)
    sets["portrait"] = [synthetic_aligned_pair(frame, points, size, peak, seed=i)
                        for i, peak in enumerate((0.5, 1.0, 2.0, 3.0))]
    out: dict = {}
    for name, p in params.items():
        out[name] = {"epe": {k: float(np.mean([endpoint_error(tvl1_flow(a, b, p), t, m) for a, b, t, m in v]))
                             for k, v in sets.items()}, "params": p.to_dict(), "times": []}
    names = list(params)
    for r in range(max(1, int(repeats))):
        for name in names[r % len(names):] + names[: r % len(names)]:
            a, b, _, _ = sets["rendered"][r % len(cases)]
            t = time.perf_counter()
            tvl1_flow(a, b, params[name])
            out[name]["times"].append(1e3 * (time.perf_counter() - t))
    for name in names:
        out[name]["ms"] = float(statistics.median(out[name].pop("times")))
    first = out[names[0]]
    for name in names:
        row = out[name]
        row["time_ratio"] = row["ms"] / first["ms"]
        row["epe_ratio"] = {k: row["epe"][k] / first["epe"][k] for k in FLOW_SETS}
        row["no_worse"] = all(v <= 1.0 for v in row["epe_ratio"].values())
    return out


def landmark_shift(scale: float = 0.5, size: int = 112) -> dict:
    """How much detecting on a frame downscaled by ``scale`` moves the landmarks (aligned px at ``size``)."""
    from mer_keras.preprocess.face import FaceAligner, estimate_alignment

    from .predict import detect_box

    onset, _, _ = rendered_pair()
    aligner = FaceAligner(fallback_upsample=None)
    full = aligner.landmarks_in_box(onset, detect_box(aligner, aligner, onset, 1.0))
    half = aligner.landmarks_in_box(onset, detect_box(aligner, aligner, onset, scale))
    tf = estimate_alignment(full, size)
    d = np.hypot(*(tf.transform_points(full) - tf.transform_points(half)).T)
    return {"mean_px": float(d.mean()), "max_px": float(d.max()), "size": size, "scale": scale}


def _pipelines(include_shufflenet: bool = True):
    """``{name: Pipeline}`` of the benchmarked configurations (random weights)."""
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.training.loso import build_model
    from mer_keras.training.recipes import get_recipe

    from .predict import Pipeline

    recipe = get_recipe("off_tanet")
    off = Pipeline.from_model(build_model(recipe, (112, 112, 3), 3),
                              preprocess=PreprocessConfig.preset("off_tanet_aligned"),
                              input_kind="flow_stack", class_names=("negative", "positive", "surprise"), recipe=recipe)
    rows = {"off_tanet exact": (off, 0), "off_tanet realtime": (off.with_options("realtime"), 0),
            "off_tanet realtime 1 thread": (off.with_options("realtime"), 1)}
    if include_shufflenet:
        from mer_keras.training.two_stage import build_two_stage_model

        sn_recipe = get_recipe("shufflenet_svm_corrected")
        model = build_two_stage_model(sn_recipe, (224, 224, 1), 3, head="svm", dtype="uint8", seed=0)
        sn = Pipeline.from_model(model, preprocess=PreprocessConfig.preset("shufflenet"), input_kind="frames",
                                 class_names=("negative", "positive", "surprise"), recipe=sn_recipe)
        rows.update({"shufflenet exact": (sn, 0), "shufflenet realtime": (sn.with_options("realtime"), 0),
                     "shufflenet realtime 1 thread": (sn.with_options("realtime"), 1)})
    return rows


def run_e2e_bench(repeats: int = 15, *, warmup: int = 2, include_shufflenet: bool = True, flow_repeats: int = 5,
                  print_fn: Callable[[str], None] | None = print) -> dict:
    """Run the benchmark (see the module docstring); print the tables unless ``print_fn`` is None.

    Returns ``{"rows": {config: {stage: median wall ms, ..., "total", "ratio_to_target", "cpu": {stage:
    median process-CPU ms, ..., "total"}, "cpu_ratio_to_target"}},
    "flow": tvl1_accuracy(...), "landmark_shift": ..., "load_before", "load_after",
    "opencv_threads", "repeats"}``.
    """
    import cv2

    from .clips import RawClip
    from .predict import STAGES

    load_before = _load()
    onset, apex, _ = rendered_pair()
    clip = RawClip([onset, apex], ["onset", "apex"], "bench pair", "arrays")
    rows = _pipelines(include_shufflenet)
    default_threads = cv2.getNumThreads()
    samples: dict = {name: [] for name in rows}

    def run(name):
        pipeline, threads = rows[name]
        cv2.setNumThreads(threads or default_threads)
        try:
            return pipeline.predict_clip(clip, onset=0, apex=1)
        finally:
            cv2.setNumThreads(default_threads)

    labels = {}
    for name in rows:
        for _ in range(max(1, int(warmup))):
            labels[name] = run(name).label
    names = list(rows)
    for r in range(max(1, int(repeats))):
        for name in names[r % len(names):] + names[: r % len(names)]:
            prediction = run(name)
            samples[name].append((prediction.timings_ms, prediction.cpu_ms))
    table = {}
    for name, timings in samples.items():
        row = {stage: float(statistics.median(t[stage] for t, _ in timings)) for stage in (*STAGES, "total")}
        row["cpu"] = {stage: float(statistics.median(c[stage] for _, c in timings)) for stage in (*STAGES[1:], "total")}
        row["ratio_to_target"] = row["total"] / TARGET_MS
        row["cpu_ratio_to_target"] = row["cpu"]["total"] / TARGET_MS
        table[name] = row
    flow = tvl1_accuracy(112, repeats=flow_repeats)
    shift = landmark_shift()
    result = {"rows": table, "flow": flow, "landmark_shift": shift, "load_before": load_before, "load_after": _load(),
              "opencv_threads": default_threads, "repeats": int(repeats), "target_ms": TARGET_MS}
    if print_fn is not None:
        print_fn(format_e2e(result))
    return result


def format_e2e(result: dict) -> str:
    """Plain-text tables of :func:`run_e2e_bench`."""
    from .predict import STAGES

    rows = result["rows"]
    names = list(rows)
    width = max(12, *(len(n) for n in names))
    lines = [f"end-to-end latency: two raw 640x480 grey frames -> label, median of {result['repeats']} interleaved runs "
             f"after warm-up, ms ({result['opencv_threads']} OpenCV threads by default; {result['load_before']} before, "
             f"{result['load_after']} after, on {os.cpu_count()} cores)",
             "  " + "stage".ljust(18) + "".join(n.rjust(width + 2) for n in names)]
    stages = [s for s in STAGES if s not in ("read", "spotting")]
    for stage in (*stages, "total", "ratio_to_target"):
        label = {"total": "total", "ratio_to_target": f"ratio to {result['target_ms']:.0f} ms"}.get(stage, stage)
        fmt = "{:.2f}" if stage == "ratio_to_target" else "{:.1f}"
        lines.append("  " + label.ljust(18) + "".join(fmt.format(rows[n][stage]).rjust(width + 2) for n in names))
    lines.append("  process CPU time (ms, all threads; the work done, without the waiting a loaded machine adds)")
    for stage in (*stages, "total"):
        lines.append("  " + f"cpu {stage}".ljust(18) + "".join(f"{rows[n]['cpu'][stage]:.1f}".rjust(width + 2) for n in names))
    lines.append("  " + f"cpu ratio to {result['target_ms']:.0f}".ljust(18)
                 + "".join(f"{rows[n]['cpu_ratio_to_target']:.2f}".rjust(width + 2) for n in names))
    lines += ["", "TV-L1 at 112 px: mean end-point error (px) inside the face vs exact synthetic ground truth "
                  "(ratio to OpenCV's default), median ms",
              f"  {'setting':16} {'ms':>8} {'time ratio':>10} " + " ".join(f"{k:>22}" for k in FLOW_SETS)
              + "  no worse than default"]
    for name, f in result["flow"].items():
        cells = " ".join(f"{f['epe'][k]:.4f} ({f['epe_ratio'][k]:.3f})".rjust(22) for k in FLOW_SETS)
        lines.append(f"  {name:16} {f['ms']:8.1f} {f['time_ratio']:10.2f} {cells}  {'yes' if f['no_worse'] else 'NO'}")
    s = result["landmark_shift"]
    lines.append(f"detection on the frame downscaled by {1 / s['scale']:.0f}: landmarks move by {s['mean_px']:.3f} px on "
                 f"average (max {s['max_px']:.3f} px) in {s['size']} px aligned coordinates")
    return "\n".join(lines)


__all__ = ["FLOW_SETS", "TARGET_MS", "format_e2e", "landmark_shift", "rendered_pair", "run_e2e_bench", "tvl1_accuracy"]
