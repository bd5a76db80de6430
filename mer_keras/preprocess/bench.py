"""Timing and accuracy benchmark of the pre-processing (``mer-keras bench preprocess``).

Measures, on a real portrait that ships with the dependencies, placed in a 640 x 480
grey frame:

* dlib face detection (HOG, no upsampling) and 68-landmark prediction, ms per frame;
* TV-L1 time (ms) and accuracy at the aligned sizes 112 and 224, for OpenCV's default
  parameters and for the tuned preset (:meth:`TVL1Params.fast`). Accuracy is the mean
  end-point error (EPE, px) inside the face hull against exact ground truth: the raw
  frame is warped by a known smooth displacement field (Gaussian bumps on the brows,
  nose and mouth corners; peak 0.5, 1, 2 and 3 px *in aligned coordinates*), both frames
  are aligned with the same transform, and the field is mapped into aligned
  coordinates with :meth:`AlignmentTransform.transform_flow`.

Times are the median of ``repeats`` runs after one warm-up, in this process (OpenCV's
own thread pool as configured); on a loaded machine they are noisy, the ratios less so.

Measured numbers: docs/benchmarks.md, section "Pre-processing: TV-L1 settings" (``mer-keras bench preprocess``).

They chose ``TVL1Params.fast()`` (nscales 3, warps 3): no loss of accuracy at a lower time.
A variant with ``epsilon=0.02`` was faster still but lost accuracy on the smallest (0.5 and
1 px) motions at 224 px, and was rejected.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import cv2
import numpy as np

from ..resources import face_photo_paths
from .face import FaceAligner, align_frame, estimate_alignment, inter_ocular_distance
from .flow import TVL1Params, endpoint_error, smooth_displacement_field, tvl1_flow, warp_forward
from .masks import MaskConfig, build_mask


def portrait_frame(name: str = "grace_hopper", frame_size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A bundled portrait as a grey uint8 frame of ``frame_size`` = (width, height).

    The photo is scaled to the frame's height (area interpolation) and centred; the
    sides are filled by repeating the edge columns (cropped if the photo is wider).
    """
    photos = face_photo_paths()
    if name not in photos:
        raise ValueError(f"unknown portrait {name!r}; choose from {sorted(photos)}")
    grey = cv2.imread(str(photos[name]), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"could not read {photos[name]}")
    w, h = (int(v) for v in frame_size)
    scale = h / grey.shape[0]
    new_w = max(1, int(round(grey.shape[1] * scale)))
    resized = cv2.resize(grey, (new_w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if new_w >= w:
        x0 = (new_w - w) // 2
        return np.ascontiguousarray(resized[:, x0 : x0 + w])
    left = (w - new_w) // 2
    return cv2.copyMakeBorder(resized, 0, 0, left, w - new_w - left, cv2.BORDER_REPLICATE)


def face_field(frame_shape: tuple[int, int], landmarks: np.ndarray, seed: int = 0) -> np.ndarray:
    """Unit-peak smooth raw-frame field: bumps at the brows (19, 24), nose tip (30), mouth corners (48, 54)."""
    iod = inter_ocular_distance(landmarks)
    centres = np.asarray(landmarks)[[19, 24, 30, 48, 54]]
    return smooth_displacement_field(frame_shape, 1.0, centres=centres, sigma=0.6 * iod, rng=np.random.default_rng(seed))


def synthetic_aligned_pair(
    frame: np.ndarray, landmarks: np.ndarray, size: int, peak: float, seed: int = 0, margin: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(onset, apex, truth, face_mask)`` in aligned ``size`` coordinates.

    ``apex`` is the raw ``frame`` warped by a smooth field (``face_field``) scaled so
    that its largest magnitude *after mapping into aligned coordinates* is ``peak`` px;
    ``truth`` is that field in aligned coordinates (forward, onset -> apex);
    ``face_mask`` is the face hull (eyes kept).
    """
    tf = estimate_alignment(landmarks, size, margin=margin)
    unit = face_field(frame.shape[:2], landmarks, seed=seed)
    unit_out = tf.transform_flow(unit)
    top = float(np.hypot(unit_out[..., 0], unit_out[..., 1]).max())
    raw = unit * (peak / top)
    apex = warp_forward(frame, raw)
    truth = tf.transform_flow(raw)
    keep = build_mask(tf.transform_points(landmarks), size, MaskConfig(mask_eyes=False))
    return align_frame(frame, tf), align_frame(apex, tf), truth, keep


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (lazy model loading, algorithm creation)
    times = []
    for _ in range(max(1, int(repeats))):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return float(statistics.median(times))


def run_preprocess_bench(
    photo: str = "grace_hopper",
    sizes: tuple[int, ...] = (112, 224),
    peaks: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0),
    repeats: int = 3,
    tuned: TVL1Params | None = None,
    print_fn: Callable[[str], None] | None = print,
    workers: int | None = None,
) -> dict:
    """Run the benchmark, print a table (unless ``print_fn`` is None) and return the numbers.

    Returned dict: ``detect_ms``, ``landmarks_ms`` (640 x 480 frame), ``tuned_params``
    (dict), and ``tvl1[size]`` with ``default_ms``, ``tuned_ms``, ``time_ratio`` (tuned /
    default), ``default_epe``, ``tuned_epe`` (px, mean over ``peaks``), ``epe_ratio``,
    ``mean_motion_px`` (mean true magnitude in the face, over ``peaks``) and
    ``per_peak`` (list of per-peak dicts), ``threads`` (OpenCV threads used).

    ``workers``: OpenCV threads for the run (``cv2.setNumThreads``; restored afterwards);
    ``None`` keeps OpenCV's current setting. Use 1 to measure the per-clip cost of
    ``mer-keras prepare``, whose worker processes each run one OpenCV thread.
    """
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    previous = cv2.getNumThreads()
    if workers is not None:
        cv2.setNumThreads(int(workers))
    try:
        return _run(photo, sizes, peaks, repeats, tuned, print_fn)
    finally:
        cv2.setNumThreads(previous)


def _run(photo, sizes, peaks, repeats, tuned, print_fn) -> dict:
    tuned = tuned or TVL1Params.fast()
    default = TVL1Params()
    frame = portrait_frame(photo)
    aligner = FaceAligner(upsample=0, fallback_upsample=None)
    box = aligner.detect(frame)
    if box is None:
        raise RuntimeError(f"no face detected in the bundled portrait {photo!r}")
    detect_ms = _median_ms(lambda: aligner.detect(frame), repeats)
    landmarks_ms = _median_ms(lambda: aligner.landmarks_in_box(frame, box), repeats)
    landmarks = aligner.landmarks_in_box(frame, box)

    results: dict = {
        "photo": photo,
        "frame_size": (frame.shape[1], frame.shape[0]),
        "threads": cv2.getNumThreads(),
        "detect_ms": detect_ms,
        "landmarks_ms": landmarks_ms,
        "default_params": default.to_dict(),
        "tuned_params": tuned.to_dict(),
        "tvl1": {},
    }
    for size in sizes:
        rows = []
        for i, peak in enumerate(peaks):
            onset, apex, truth, keep = synthetic_aligned_pair(frame, landmarks, size, peak, seed=i)
            row = {"peak_px": float(peak), "mean_motion_px": float(np.hypot(truth[..., 0], truth[..., 1])[keep].mean())}
            for label, params in (("default", default), ("tuned", tuned)):
                row[f"{label}_ms"] = _median_ms(lambda p=params: tvl1_flow(onset, apex, p), repeats)
                row[f"{label}_epe"] = endpoint_error(tvl1_flow(onset, apex, params), truth, keep)
            rows.append(row)
        summary = {k: float(np.mean([r[k] for r in rows])) for k in ("default_ms", "tuned_ms", "default_epe", "tuned_epe", "mean_motion_px")}
        summary["time_ratio"] = summary["tuned_ms"] / summary["default_ms"]
        summary["epe_ratio"] = summary["tuned_epe"] / summary["default_epe"]
        summary["per_peak"] = rows
        results["tvl1"][size] = summary

    if print_fn is not None:
        print_fn(format_bench_table(results))
    return results


def format_bench_table(results: dict) -> str:
    """Plain-text table of :func:`run_preprocess_bench` results."""
    w, h = results["frame_size"]
    lines = [
        f"pre-processing benchmark ({results['photo']}, {w}x{h} frame; median ms; {results['threads']} OpenCV threads)",
        f"  dlib face detection (HOG, upsample 0): {results['detect_ms']:8.1f} ms",
        f"  dlib 68-landmark prediction:           {results['landmarks_ms']:8.1f} ms",
        "  tuned TV-L1: " + ", ".join(f"{k}={v}" for k, v in results["tuned_params"].items() if results["default_params"][k] != v),
        "",
        f"  {'size':>4} {'peak px':>7} {'motion px':>9} {'def ms':>8} {'tuned ms':>8} {'ratio':>6} {'def EPE':>8} {'tuned EPE':>9} {'EPE ratio':>9}",
    ]
    for size, s in results["tvl1"].items():
        for r in s["per_peak"]:
            lines.append(
                f"  {size:>4} {r['peak_px']:>7.2f} {r['mean_motion_px']:>9.3f} {r['default_ms']:>8.1f} {r['tuned_ms']:>8.1f} "
                f"{r['tuned_ms'] / r['default_ms']:>6.2f} {r['default_epe']:>8.4f} {r['tuned_epe']:>9.4f} {r['tuned_epe'] / r['default_epe']:>9.2f}"
            )
        lines.append(
            f"  {size:>4} {'mean':>7} {s['mean_motion_px']:>9.3f} {s['default_ms']:>8.1f} {s['tuned_ms']:>8.1f} "
            f"{s['time_ratio']:>6.2f} {s['default_epe']:>8.4f} {s['tuned_epe']:>9.4f} {s['epe_ratio']:>9.2f}"
        )
    return "\n".join(lines)


ROUTES = ("off_tanet", "off_tanet_aligned")
"""The two pre-processing routes measured side by side: the datasets' cropped releases as they
are (official Off-TANet ``data.py``) and landmark alignment of the raw frames (dlib)."""


def run_prepare_throughput(
    processes: tuple[int, ...] = (1, 2),
    *,
    subjects_per_dataset: int = 4,
    clips_per_subject: int = 6,
    presets: tuple[str, ...] = ROUTES,
    workdir=None,
    print_fn: Callable[[str], None] | None = print,
) -> dict:
    """Whole-dataset ``prepare`` throughput (clips/s) per preset and process count, same data, same run.

    Writes a synthetic MEGC2019-style composite once with both releases (raw frames and the
    cropped twin), then prepares it from scratch into a fresh cache per preset and process
    count; each preset reads the release its route takes (``PreprocessConfig.release``).
    Returns ``{"n_clips", "rows": [{preset, source, processes, seconds, clips_per_s, speedup,
    vs_first}]}``: ``speedup`` against the preset's first process count, ``vs_first`` the
    time of the first preset divided by this one's at the same process count.
    """
    import tempfile
    from pathlib import Path

    from ..data import megc2019
    from ..data.synthetic import write_composite
    from .cache import prepare
    from .pipeline import PreprocessConfig

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        roots = write_composite(
            "megc2019", Path(tmp) / "data", subjects_per_dataset=subjects_per_dataset,
            clips_per_subject=clips_per_subject, seed=0, release="both",
        )
        n_clips = 0
        for preset in presets:
            config = PreprocessConfig.preset(preset)
            manifest = megc2019(**roots, release=config.release)
            n_clips = len(manifest)
            for n in processes:
                result = prepare(manifest, Path(tmp) / f"cache_{preset}_{n}", config, workers=n, progress=False)
                if len(result.skipped):
                    raise RuntimeError(f"benchmark clips were skipped: {result.skipped['reason'].tolist()}")
                rows.append({"preset": preset, "source": config.source, "processes": n, "seconds": result.seconds,
                             "clips_per_s": len(manifest) / result.seconds})
    for row in rows:
        first = next(r for r in rows if r["preset"] == row["preset"])
        same_n = next(r for r in rows if r["processes"] == row["processes"])
        row["speedup"] = row["clips_per_s"] / first["clips_per_s"]
        row["vs_first"] = same_n["seconds"] / row["seconds"]
    out = {"n_clips": n_clips, "rows": rows}
    if print_fn is not None:
        print_fn(f"prepare throughput ({n_clips} synthetic clips per route, includes process start-up; "
                 f"'vs {presets[0]}' = its seconds / this row's)")
        print_fn(f"  {'preset':<18} {'source':<8} {'processes':>9} {'seconds':>8} {'clips/s':>8} {'speedup':>8} "
                 f"{'vs ' + presets[0]:>14}")
        for r in rows:
            print_fn(f"  {r['preset']:<18} {r['source']:<8} {r['processes']:>9} {r['seconds']:>8.1f} "
                     f"{r['clips_per_s']:>8.2f} {r['speedup']:>8.2f} {r['vs_first']:>14.2f}")
    return out


if __name__ == "__main__":  # pragma: no cover
    run_preprocess_bench()
