"""Flow at a working resolution, resized to the network's input (issue 21, item 2).

The proof on synthetic motion: rendered clips (pure geometric motion, ground-truth flow
known), aligned to 28 px; TV-L1 on the 28-px frames against TV-L1 on the same crop at
112 px resized to 28 (area-averaged, vectors scaled): the second has the lower end-point
error against the ground truth in every clip.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mer_keras.preprocess.flow import TVL1Params, endpoint_error, resize_flow, resize_map, tvl1_flow
from mer_keras.preprocess.pipeline import PreprocessConfig, preprocess_clip

CASES = [("positive", 0.7), ("negative", 1.5), ("surprise", 2.5), ("negative", 3.0)]


def test_resize_flow_scales_the_vectors_with_the_field():
    flow = np.zeros((112, 112, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    np.testing.assert_allclose(resize_flow(flow, 28)[..., 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(resize_flow(flow, 28)[..., 1], -0.25, atol=1e-6)
    tall = resize_flow(flow, (56, 28))  # (height, width): u by 28/112, v by 56/112
    assert tall.shape == (56, 28, 2)
    np.testing.assert_allclose(tall[..., 0], 0.5, atol=1e-6)
    np.testing.assert_allclose(tall[..., 1], -0.5, atol=1e-6)
    np.testing.assert_allclose(resize_flow(flow[:28, :28], 56)[..., 0], 4.0, atol=1e-6)
    same = resize_flow(flow, 112)
    assert same is not flow and np.array_equal(same, flow)
    # area averaging: a 4x4 block's mean, not one of its samples
    ramp = np.zeros((8, 8, 2), np.float32)
    ramp[..., 0] = np.arange(8, dtype=np.float32)[None, :]
    np.testing.assert_allclose(resize_flow(ramp, 2)[..., 0], [[0.375, 1.375]] * 2, atol=1e-6)
    with pytest.raises(ValueError):
        resize_flow(flow[..., 0], 28)


def test_resize_map_keeps_a_strain_value():
    strain = np.full((112, 112), 0.3, np.float32)
    np.testing.assert_allclose(resize_map(strain, 28), 0.3, atol=1e-6)
    assert resize_map(strain, 28).shape == (28, 28)


def test_flow_size_is_validated_and_fingerprinted_only_when_set():
    assert PreprocessConfig.preset("ststnet_aligned").flow_size == 112  # the flow on 112-px aligned crops
    assert PreprocessConfig.preset("ststnet").flow_size == "crop"  # at the released crop's own resolution
    with pytest.raises(ValueError, match="needs source='cropped'"):
        PreprocessConfig.preset("ststnet_aligned", flow_size="crop")
    base = PreprocessConfig.preset("ststnet_aligned", flow_size=None)
    assert PreprocessConfig.preset("off_tanet").flow_size is None
    assert base.fingerprint() == PreprocessConfig.from_dict({k: v for k, v in base.to_dict().items()
                                                              if k != "flow_size"}).fingerprint()
    working = base.replace(flow_size=112)
    assert working.fingerprint() != base.fingerprint()
    assert PreprocessConfig.from_dict(working.to_dict()) == working
    for bad in (4, 5000, 27.5, "112", True):
        with pytest.raises(ValueError, match="flow_size"):
            base.replace(flow_size=bad)


@pytest.fixture(scope="module")
def rendered():
    """Motion-only rendered clips: (raw onset, raw apex, raw ground-truth flow, landmarks)."""
    from mer_keras.data.synthetic.faces import make_subjects
    from mer_keras.data.synthetic.render import render_clip
    from mer_keras.preprocess.face import FaceAligner

    aligner = FaceAligner()
    subjects = make_subjects(2, frame_size=(640, 480), seed=11)
    out = []
    for i, (label, amplitude) in enumerate(CASES):
        clip = render_clip(subjects[i % 2], label, n_frames=9, amplitude=amplitude, rng=np.random.default_rng(i),
                           blink_prob=0.0, appearance_strength=0.0)
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) if f.ndim == 3 else f
                for f in (clip.frames[clip.onset], clip.frames[clip.apex])]
        out.append((grey[0], grey[1], clip.apex_flow, aligner.landmarks(grey[0])))
    return out


def test_resized_transform_is_the_same_crop(rendered):
    from mer_keras.preprocess.face import estimate_alignment

    points = rendered[0][3]
    for size in (56, 112, 224):
        np.testing.assert_allclose(estimate_alignment(points, 28).resized(size).matrix,
                                   estimate_alignment(points, size).matrix, atol=1e-9)


def test_flow_at_a_working_resolution_has_the_lower_end_point_error(rendered):
    from mer_keras.preprocess.face import align_frame, estimate_alignment
    from mer_keras.preprocess.masks import MaskConfig, build_mask

    params = TVL1Params.fast()
    errors = []
    for onset, apex, truth, points in rendered:
        tf = estimate_alignment(points, 28)
        face = build_mask(tf.transform_points(points), 28, MaskConfig(mask_eyes=False))
        gt = tf.transform_flow(truth)
        at_28 = tvl1_flow(align_frame(onset, tf), align_frame(apex, tf), params)
        work = tf.resized(112)
        at_112 = resize_flow(tvl1_flow(align_frame(onset, work), align_frame(apex, work), params), 28)
        errors.append((endpoint_error(at_28, gt, face), endpoint_error(at_112, gt, face)))
    print("EPE at 28 px (TV-L1 on 28-px frames, on 112-px frames resized):", np.round(errors, 4).tolist())
    assert all(resized < small for small, resized in errors)
    assert np.mean([r for _, r in errors]) < 0.5 * np.mean([s for s, _ in errors])


def test_preprocess_clip_computes_the_flow_at_flow_size(rendered):
    """The ``ststnet_aligned`` preset's flow (``flow_size=112``) is nearer the truth than flow on 28-px frames."""
    from mer_keras.preprocess.face import estimate_alignment
    from mer_keras.preprocess.masks import MaskConfig, build_mask

    onset, apex, truth, points = rendered[2]
    frames = [onset, apex]
    small = preprocess_clip(frames, 0, 1, PreprocessConfig.preset("ststnet_aligned", flow_size=None))
    working = preprocess_clip(frames, 0, 1, PreprocessConfig.preset("ststnet_aligned"))  # flow_size=112
    assert working.flow.shape == small.flow.shape == (28, 28, 2) and working.strain.shape == (28, 28)
    np.testing.assert_array_equal(working.onset, small.onset)  # the frames stay the 28-px crops
    tf = estimate_alignment(points, 28)
    face = build_mask(tf.transform_points(points), 28, MaskConfig(mask_eyes=False))
    gt = tf.transform_flow(truth)
    assert endpoint_error(working.flow, gt, face) < endpoint_error(small.flow, gt, face)


def test_cropped_route_computes_the_flow_at_the_crops_resolution(rendered):
    """The ``ststnet`` preset on a released-style crop: flow at the crop's own resolution, resized to 28 px, is
    nearer the truth than flow on the crop resized to 28 px (the community's STSTNet inputs, preprocessing.md)."""
    from mer_keras.data.synthetic.cropped import crop, crop_box

    errors = []
    for onset, apex, truth, points in rendered:
        box = crop_box(points, (onset.shape[1], onset.shape[0]))
        crops = [crop(onset, box), crop(apex, box)]
        gt = resize_flow(crop(truth, box), 28)
        native = preprocess_clip(crops, 0, 1, PreprocessConfig.preset("ststnet"))  # flow_size="crop"
        small = preprocess_clip(crops, 0, 1, PreprocessConfig.preset("ststnet", flow_size=None))
        assert native.flow.shape == small.flow.shape == (28, 28, 2)
        np.testing.assert_array_equal(native.onset, small.onset)
        face = np.ones((28, 28), bool)
        errors.append((endpoint_error(small.flow, gt, face), endpoint_error(native.flow, gt, face)))
    print("EPE at 28 px, cropped route (TV-L1 on 28-px crops, at the crop's resolution resized):",
          np.round(errors, 4).tolist())
    assert all(native < small for small, native in errors)
