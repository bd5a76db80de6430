"""Apex spotting for clips whose onset and apex are not annotated.

Rule (the issue's "frame of largest motion from the first frame ... by flow magnitude"):

* the **onset** is the first frame of the clip (or the given onset);
* every frame is aligned with the reference face's transform at a low resolution
  (``size`` px, default 64; linear interpolation);
* dense Farneback flow (``cv2.calcOpticalFlowFarneback``: pyramid scale 0.5, 2 levels,
  window 9, 3 iterations, polynomial 5 / 1.1) from the onset to every frame;
* the median flow vector over the face is subtracted (head drift: a global translation
  moves every pixel alike), and the motion score of frame ``t`` is the mean remaining flow
  magnitude inside the **face mask** -- the landmark mask with the eyes masked (blinks are
  motion, not expression) and everything outside the face masked
  (:class:`~mer_keras.preprocess.masks.MaskConfig` defaults, the ShuffleNetV2-SVM mask);
* the curve is smoothed with a ``[1, 2, 1] / 4`` kernel over time (edges replicated) and
  the **apex** is the frame after the onset with the largest smoothed score (the first one
  on ties).

Measured accuracy and time: docs/benchmarks.md, section "Apex spotting" (:func:`spot_apex`).

Rejected alternatives (their numbers are in the same section): the mean absolute grey
difference from the onset inside the same mask (its worst misses were late frames, after
the head had drifted), the same after removing a phase-correlation translation (OpenCV
5.0's ``cv2.phaseCorrelate`` was not used: it returned different, non-zero shifts for two
identical images on repeated calls), Farneback at 96 px (no more hits, slower) or 48 px
(less accurate). TV-L1 per frame would cost more than the recognition itself. The method
assumes a still camera and head (as the whole pipeline does: one alignment transform for
every frame) and an onset at the first frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SpottingConfig:
    """Parameters of :func:`spot_apex` (recorded in every pipeline bundle)."""

    size: int = 64
    farneback: tuple = (0.5, 2, 9, 3, 5, 1.1)
    smoothing: tuple = (1.0, 2.0, 1.0)
    method: str = "farneback_magnitude_minus_median_in_face_mask"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["smoothing"] = list(self.smoothing)
        out["farneback"] = dict(zip(("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma"),
                                    self.farneback))
        from mer_keras.preprocess.masks import MaskConfig

        out["mask"] = MaskConfig().to_dict()
        return out


def motion_curve(greys, landmarks: np.ndarray | None, onset: int, config: SpottingConfig | None = None,
                 margin: float = 0.1) -> np.ndarray:
    """Motion score of every frame against frame ``onset`` (see the module docstring).

    ``greys``: the clip's grey uint8 frames (raw size); ``landmarks``: the 68 raw-frame
    landmarks of the reference face, or ``None`` for face crops (a cropped-release
    pipeline): each frame is then resized to ``size`` and every pixel counts. Returns a
    float64 array with one score per frame (``0`` at the onset; mean flow magnitude in
    pixels at ``size``), unsmoothed.
    """
    import cv2

    from mer_keras.preprocess.face import estimate_alignment
    from mer_keras.preprocess.masks import MaskConfig, build_mask

    config = config or SpottingConfig()
    s = config.size
    if landmarks is None:  # face crops: the whole frame is the face
        keep = np.ones((s, s), dtype=bool)

        def small(frame):
            return cv2.resize(frame, (s, s), interpolation=cv2.INTER_LINEAR)
    else:
        tf = estimate_alignment(landmarks, config.size, margin=margin)
        keep = build_mask(tf.transform_points(landmarks), config.size, MaskConfig())
        if not keep.any():
            keep = np.ones_like(keep)

        def small(frame):
            return cv2.warpAffine(frame, tf.matrix, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    reference = small(greys[onset])
    scores = []
    for i, frame in enumerate(greys):
        if i == onset:
            scores.append(0.0)
            continue
        flow = cv2.calcOpticalFlowFarneback(reference, small(frame), None, *config.farneback, 0)
        flow = flow - np.median(flow[keep], axis=0)
        scores.append(float(np.hypot(flow[..., 0], flow[..., 1])[keep].mean()))
    return np.asarray(scores, dtype=np.float64)


def pick_apex(curve: np.ndarray, onset: int, config: SpottingConfig | None = None) -> int:
    """The frame after ``onset`` with the largest smoothed score of ``curve``."""
    config = config or SpottingConfig()
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) - onset < 2:
        raise ValueError(f"need at least one frame after the onset {onset} to spot an apex, got {len(curve)} frames")
    kernel = np.asarray(config.smoothing, dtype=np.float64)
    kernel = kernel / kernel.sum()
    pad = len(kernel) // 2
    padded = np.concatenate([np.repeat(curve[:1], pad), curve, np.repeat(curve[-1:], pad)])
    smooth = np.convolve(padded, kernel, mode="valid")
    return int(onset + 1 + np.argmax(smooth[onset + 1:]))


def spot_apex(greys, landmarks: np.ndarray | None, onset: int = 0, config: SpottingConfig | None = None,
              margin: float = 0.1) -> tuple[int, np.ndarray]:
    """``(apex index, motion curve)`` of a clip (see the module docstring)."""
    curve = motion_curve(greys, landmarks, onset, config, margin=margin)
    return pick_apex(curve, onset, config), curve


__all__ = ["SpottingConfig", "motion_curve", "pick_apex", "spot_apex"]
