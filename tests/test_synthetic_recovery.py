"""The whole chain on the renderer's own ground truth: synthetic clip -> alignment -> TV-L1.

These tests tie the synthetic writer and the preprocessing together: the flow that
``preprocess_clip`` computes on aligned crops must recover the rendered displacement
(mapped into aligned coordinates), and the default eye mask must cover the blink motion.
The expression's shading (creases, :mod:`mer_keras.data.synthetic.appearance`) is not
motion and violates brightness constancy, so recovery is checked on the motion-only
rendering (strict bound) and on the default shaded rendering (looser, measured bound).
"""

import cv2
import numpy as np
import pytest

from mer_keras.data.synthetic.appearance import APPEARANCE_STRENGTH
from mer_keras.data.synthetic.faces import make_subjects
from mer_keras.data.synthetic.motion import blink_field
from mer_keras.data.synthetic.render import render_clip
from mer_keras.preprocess.face import FaceAligner, align_clip
from mer_keras.preprocess.flow import TVL1Params, endpoint_error, tvl1_flow
from mer_keras.preprocess.masks import MaskConfig, build_mask


@pytest.fixture(scope="module")
def subject():
    return make_subjects(1, frame_size=(640, 480), seed=11)[0]


def _grey(frame):
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame


@pytest.mark.parametrize("label", ["negative", "positive", "surprise"])
@pytest.mark.parametrize("size", [112, 224])
def test_tvl1_on_aligned_crops_recovers_rendered_motion(subject, label, size):
    # Both renderings share motion, jitter and noise (the shading draws from a child generator).
    # Measured EPE / motion (both TV-L1 settings): motion only 0.06-0.25 (sensor noise sigma 1.5
    # included); with the default shading 0.22-0.42 (negative at 112 px is the largest: its
    # 0.34 px mean motion is the smallest, and the glabella furrows sit on textured brows).
    for appearance, bound in ((0.0, 0.35), (APPEARANCE_STRENGTH, 0.5)):
        clip = render_clip(subject, label, n_frames=9, amplitude=2.5, rng=np.random.default_rng(7), blink_prob=0.0,
                           appearance_strength=appearance)
        frames = [_grey(clip.frames[clip.onset]), _grey(clip.frames[clip.apex])]
        aligned = align_clip(frames, size, aligner=FaceAligner())
        truth = aligned.transform.transform_flow(clip.apex_flow)
        face = build_mask(aligned.landmarks, size, MaskConfig(mask_eyes=False))
        face &= cv2.erode(np.ones((size, size), np.uint8), np.ones((7, 7), np.uint8)).astype(bool)  # no border pixels
        motion = np.linalg.norm(truth, axis=-1)[face].mean()
        for params in (TVL1Params(), TVL1Params.fast()):
            flow = tvl1_flow(aligned.frames[0], aligned.frames[1], params)
            epe = endpoint_error(flow, truth, face)
            print(f"{label} {size}px {params.nscales}x{params.warps} shading {appearance}: "
                  f"motion {motion:.3f} px, EPE {epe:.3f} px ({epe / motion:.2f})")
            assert epe < bound * motion, f"EPE {epe:.3f} px is too large for {motion:.3f} px of motion"


def test_default_eye_mask_covers_blink_motion(subject):
    size = 224
    aligned = align_clip([_grey(subject.image)], size, aligner=FaceAligner())
    blink = aligned.transform.transform_flow(blink_field(subject.landmarks, subject.image.shape[:2], closure=1.0))
    energy = np.linalg.norm(blink, axis=-1)
    assert energy.max() > 0.3, "the blink should move the lids by a visible amount"
    keep = build_mask(aligned.landmarks, size, MaskConfig())
    removed = energy[~keep].sum() / energy.sum()
    assert removed > 0.9, f"the eye mask removes only {removed:.0%} of the blink motion"
    assert keep.mean() > 0.2, "the mask should keep most of the face"
