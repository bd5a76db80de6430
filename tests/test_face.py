"""Face alignment (ShuffleNetV2-SVM Eq. 1) and landmark masks, on real bundled portraits."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from mer_keras.preprocess.bench import portrait_frame
from mer_keras.preprocess.face import (
    AlignmentTransform,
    FaceAligner,
    NoFaceError,
    align_clip,
    align_frame,
    estimate_alignment,
    eye_centres,
    rotation_angle,
)
from mer_keras.preprocess.masks import MaskConfig, apply_mask, build_mask


@pytest.fixture(scope="module")
def aligner():
    return FaceAligner()


@pytest.fixture
def tmp_dir():
    # a private temporary directory (pytest's shared tmp_path base is cleaned up concurrently
    # by other test sessions on the same machine, which can stall teardown)
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module")
def frame():
    return portrait_frame("grace_hopper")


def rotate(image, angle_deg):
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def synthetic_landmarks(angle_deg=0.0, centre=(300.0, 200.0), iod=60.0):
    """68 points of a schematic face, rotated by angle_deg about the eyes' midpoint."""
    rng = np.random.default_rng(3)
    pts = np.zeros((68, 2))
    pts[0:17] = np.column_stack([np.linspace(-60, 60, 17), 40 + 60 * np.sin(np.linspace(0, np.pi, 17))])
    pts[17:27] = np.column_stack([np.r_[np.linspace(-50, -10, 5), np.linspace(10, 50, 5)], -25 + rng.normal(0, 1, 10)])
    pts[27:36] = np.column_stack([np.r_[np.zeros(4), np.linspace(-10, 10, 5)], np.r_[np.linspace(0, 30, 4), np.full(5, 35)]])
    ring = np.column_stack([10 * np.cos(np.linspace(0, 2 * np.pi, 7)[:-1]), 4 * np.sin(np.linspace(0, 2 * np.pi, 7)[:-1])])
    pts[36:42] = ring + [-iod / 2, 0]
    pts[42:48] = ring + [iod / 2, 0]
    pts[48:68] = np.column_stack([20 * np.cos(np.linspace(0, 2 * np.pi, 21)[:-1]), 60 + 8 * np.sin(np.linspace(0, 2 * np.pi, 21)[:-1])])
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return pts @ rot.T + centre


def test_rotation_angle_is_eq1():
    pts = synthetic_landmarks(angle_deg=12.0)
    a, b = eye_centres(pts)
    c = (a + b) / 2
    assert rotation_angle(pts) == pytest.approx(np.degrees(np.arctan((c[1] - a[1]) / (c[0] - a[0]))))
    assert rotation_angle(pts) == pytest.approx(12.0, abs=1e-9)
    with pytest.raises(ValueError):
        rotation_angle(np.zeros((5, 2)))


@pytest.mark.parametrize("size", [28, 112, 224, 256])
def test_estimate_alignment_levels_and_crops(size):
    pts = synthetic_landmarks(angle_deg=-17.0)
    tf = estimate_alignment(pts, size, margin=0.1)
    out = tf.transform_points(pts)
    a, b = eye_centres(out)
    assert abs(a[1] - b[1]) < 1e-9 and b[0] > a[0]  # eye line horizontal, orientation kept
    lo, hi = out.min(axis=0), out.max(axis=0)
    extent = (hi - lo).max()
    assert extent == pytest.approx(size / 1.2, rel=1e-9)  # landmarks' extent + 10 % each side
    assert np.all(lo >= -0.5) and np.all(hi <= size - 0.5)
    assert (lo + hi)[np.argmax(hi - lo)] / 2 == pytest.approx((size - 1) / 2)  # centred
    np.testing.assert_allclose(tf.inverse_points(out), pts, atol=1e-9)
    # A raw flow field maps by A (rotation x scale): a uniform 1 px right shift
    flow = np.zeros((400, 600, 2), np.float32)
    flow[..., 0] = 1.0
    mapped = tf.transform_flow(flow)
    assert mapped.shape == (size, size, 2)
    np.testing.assert_allclose(mapped[size // 2, size // 2], tf.linear @ [1.0, 0.0], atol=1e-5)
    assert np.hypot(*mapped[0, 0]) == pytest.approx(tf.scale, rel=1e-5)


@pytest.mark.parametrize("angle", [10.0, -10.0])
def test_alignment_makes_eye_line_horizontal(aligner, frame, angle):
    rotated = rotate(frame, angle)
    raw_pts = aligner.landmarks(rotated)
    assert raw_pts is not None
    assert abs(rotation_angle(raw_pts)) > 5.0  # the input really is tilted
    size = 224
    tf = estimate_alignment(raw_pts, size)
    out = align_frame(rotated, tf)
    assert out.shape == (size, size) and out.dtype == np.uint8
    # landmarks detected afresh on the aligned output (detector + predictor on the output)
    out_pts = aligner.landmarks(out)
    assert out_pts is not None
    angle_out = rotation_angle(out_pts)
    print(f"tilt {rotation_angle(raw_pts):+.2f} deg -> aligned {angle_out:+.2f} deg")
    assert abs(angle_out) < 1.0


def test_align_frame_accepts_bgr_grey_and_paths(aligner, frame, tmp_dir):
    bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    pts = aligner.landmarks(frame)
    tf = estimate_alignment(pts, 112)
    path = tmp_dir / "f.png"
    cv2.imwrite(str(path), bgr)
    a, b, c = align_frame(frame, tf), align_frame(bgr, tf), align_frame(path, tf)
    assert a.shape == b.shape == c.shape == (112, 112)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(a, c)


def test_no_face_error(aligner, tmp_dir):
    blank = np.full((240, 320), 127, np.uint8)
    with pytest.raises(NoFaceError):
        aligner.alignment(blank, 112)
    path = tmp_dir / "blank_onset.png"
    cv2.imwrite(str(path), blank)
    with pytest.raises(NoFaceError, match="blank_onset.png"):
        align_clip([path, path], 112, aligner=aligner)


def test_align_clip_reuse_and_per_frame_fallback(aligner, frame):
    shifted = np.roll(frame, 3, axis=1)
    blank = np.full_like(frame, 90)
    clip = [frame, shifted, blank, frame]
    reuse = align_clip(clip, 56, aligner=aligner)
    assert reuse.frames.shape == (4, 56, 56) and reuse.frames.dtype == np.uint8
    assert reuse.n_fallback == 0
    assert all(t is reuse.transform for t in reuse.transforms)
    assert reuse.landmarks.shape == (68, 2)
    per = align_clip(np.stack(clip), 56, mode="per_frame", aligner=aligner)
    assert per.n_fallback == 1 and per.fallback_indices == [2]
    assert per.transforms[2] is per.transform
    assert per.transforms[1] is not per.transform
    assert np.array_equal(per.frames[0], reuse.frames[0])
    with pytest.raises(ValueError):
        align_clip(clip, 56, mode="sometimes", aligner=aligner)


def test_transform_validation():
    with pytest.raises(ValueError):
        AlignmentTransform(np.zeros((2, 3)), 10)
    with pytest.raises(ValueError):
        estimate_alignment(synthetic_landmarks(), 4)


def test_mask_removes_eyes_and_keeps_face():
    pts = synthetic_landmarks(centre=(112.0, 100.0))
    tf = estimate_alignment(pts, 224)
    out = tf.transform_points(pts)
    mask = build_mask(out, 224, MaskConfig())
    assert mask.shape == (224, 224) and mask.dtype == bool
    for eye in (range(36, 42), range(42, 48)):
        cx, cy = np.round(out[list(eye)].mean(axis=0)).astype(int)
        assert not mask[cy, cx]
        assert not mask[cy - 1 : cy + 2, cx - 1 : cx + 2].any()
    for idx in (30, 33, 51, 57, 31, 35):  # nose and mouth: kept
        x, y = np.round(out[idx]).astype(int)
        assert mask[y, x], idx
    assert not mask[2, 2] and not mask[-3, -3]  # corners are outside the face hull
    # eyes-only keeps the corners; none keeps everything
    eyes = build_mask(out, 224, MaskConfig.eyes_only())
    assert eyes[2, 2] and eyes.sum() > mask.sum()
    assert build_mask(out, 224, MaskConfig.none()).all()
    # larger eye margin removes more
    assert build_mask(out, 224, MaskConfig(eye_margin=0.4)).sum() < mask.sum()
    # the nose option
    x, y = np.round(out[30]).astype(int)
    assert not build_mask(out, 224, MaskConfig(mask_nose=True))[y, x]


def test_apply_mask_shapes():
    mask = np.ones((8, 8), bool)
    mask[2:4, 2:4] = False
    img = np.full((8, 8), 200, np.uint8)
    flow = np.ones((8, 8, 2), np.float32)
    clip = np.full((5, 8, 8), 7, np.uint8)
    assert apply_mask(img, mask)[2, 2] == 0 and apply_mask(img, mask)[0, 0] == 200
    assert np.all(apply_mask(flow, mask)[3, 3] == 0) and apply_mask(flow, mask).dtype == np.float32
    assert np.all(apply_mask(clip, mask)[:, 2, 3] == 0) and np.all(apply_mask(clip, mask)[:, 5, 5] == 7)
    with pytest.raises(ValueError):
        apply_mask(img, mask.astype(np.uint8))
    with pytest.raises(ValueError):
        apply_mask(np.zeros((9, 9)), mask)
    with pytest.raises(ValueError):
        MaskConfig(eye_margin=-1)
