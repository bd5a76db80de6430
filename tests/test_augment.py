"""Flip equivariance of flow, shifts, pixel jitter and class balancing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mer_keras.preprocess.augment import (
    Augmentation,
    apply_augmentation,
    balance_by_augmentation,
    hflip_flow,
    hflip_image,
    pixel_jitter,
    random_shift,
    shift,
)
from mer_keras.preprocess.bench import portrait_frame, synthetic_aligned_pair
from mer_keras.preprocess.face import FaceAligner
from mer_keras.preprocess.flow import TVL1Params, endpoint_error, tvl1_flow


def test_flow_of_flipped_pair_is_hflip_flow():
    frame = portrait_frame("grace_hopper")
    landmarks = FaceAligner().landmarks(frame)
    onset, apex, truth, face = synthetic_aligned_pair(frame, landmarks, 112, peak=2.0, seed=5)
    params = TVL1Params.fast()
    flow = tvl1_flow(onset, apex, params)
    flipped = tvl1_flow(hflip_image(onset), hflip_image(apex), params)
    face_f = hflip_image(face)
    expected = hflip_flow(flow)
    err = endpoint_error(flipped, expected, face_f)
    motion = float(np.hypot(truth[..., 0], truth[..., 1])[face].mean())
    # mirroring the field without negating u is wrong: it must be much worse
    naive = np.ascontiguousarray(flow[:, ::-1])
    err_naive = endpoint_error(flipped, naive, face_f)
    print(f"flip equivariance: EPE {err:.4f} px vs {err_naive:.4f} px without negating u (motion {motion:.3f} px)")
    assert err < 0.15 * motion
    assert err < 0.3 * err_naive
    # and against the mirrored ground truth
    assert endpoint_error(flipped, hflip_flow(truth), face_f) < 0.3 * motion


def test_hflip_flow_details():
    f = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    g = hflip_flow(f)
    np.testing.assert_array_equal(g[:, :, 0], -f[:, ::-1, 0])
    np.testing.assert_array_equal(g[:, :, 1:], f[:, ::-1, 1:])  # v and strain unchanged
    np.testing.assert_array_equal(hflip_flow(g), f)
    with pytest.raises(ValueError):
        hflip_flow(f.astype(np.uint8))
    np.testing.assert_array_equal(hflip_image(np.array([[1, 2, 3]])), [[3, 2, 1]])


def test_shift_and_random_shift():
    img = np.arange(25, dtype=np.uint8).reshape(5, 5)
    s = shift(img, 1, 2)  # right 1, down 2
    assert s[2, 1] == img[0, 0] and s[4, 4] == img[2, 3]
    np.testing.assert_array_equal(s[0], np.r_[img[0, 0], img[0, :4]])  # top rows = edge padding
    rng = np.random.default_rng(0)
    flow = np.random.default_rng(1).normal(size=(10, 12, 2)).astype(np.float32)
    seen = set()
    for _ in range(50):
        out, (dx, dy) = random_shift(flow, 2, rng, return_shift=True)
        assert out.shape == flow.shape and out.dtype == flow.dtype
        assert abs(dx) <= 2 and abs(dy) <= 2
        np.testing.assert_array_equal(out, shift(flow, dx, dy))
        seen.add((dx, dy))
    assert len(seen) > 10
    with pytest.raises(ValueError):
        shift(img, 5, 0)


def test_pixel_jitter():
    rng = np.random.default_rng(0)
    img = np.full((200, 200), 128, np.uint8)
    out = pixel_jitter(img, rng)
    diff = out.astype(int) - img
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(diff).max() == 20
    assert 0.27 < (diff != 0).mean() < 0.32  # 0.3 * 40/41 expected
    assert abs(diff.mean()) < 0.2
    edge = pixel_jitter(np.array([[0, 255]] * 200, np.uint8), rng, prob=1.0)
    assert edge.min() == 0 and edge.max() == 255
    colour = pixel_jitter(np.full((50, 50, 3), 100, np.uint8), rng)
    d = colour.astype(int) - 100
    assert np.all(d[..., 0] == d[..., 1])  # a pixel's channels move together
    np.testing.assert_array_equal(pixel_jitter(img, rng, prob=0.0), img)
    with pytest.raises(ValueError):
        pixel_jitter(img, rng, prob=1.5)


def test_balance_by_augmentation():
    labels = ["neg"] * 10 + ["pos"] * 6 + ["sur"] * 3
    rng = np.random.default_rng(0)
    augs = balance_by_augmentation(labels, rng, max_shift=2)
    counts = Counter(labels)
    for a in augs:
        counts[labels[a.index]] += 1
    assert set(counts.values()) == {10}
    pos = [a for a in augs if labels[a.index] == "pos"]
    assert len(pos) == 4 and all(a.flip and a.shift == (0, 0) for a in pos)  # flips only
    assert len({a.index for a in pos}) == 4  # distinct samples
    sur = [a for a in augs if labels[a.index] == "sur"]
    assert len(sur) == 7
    assert [a.flip and a.shift == (0, 0) for a in sur[:3]] == [True] * 3  # flips first
    assert all(a.shift != (0, 0) and max(map(abs, a.shift)) <= 2 for a in sur[3:])  # then shifts
    assert not any(labels[a.index] == "neg" for a in augs)
    # deterministic for a seed
    assert balance_by_augmentation(labels, np.random.default_rng(0)) == augs
    assert balance_by_augmentation(labels, rng, flip=False)[0].flip is False


def test_apply_augmentation():
    flow = np.random.default_rng(0).normal(size=(6, 6, 2)).astype(np.float32)
    aug = Augmentation(index=0, flip=True, shift=(1, 0))
    np.testing.assert_array_equal(apply_augmentation(flow, aug, "flow"), shift(hflip_flow(flow), 1, 0))
    img = np.arange(36, dtype=np.uint8).reshape(6, 6)
    np.testing.assert_array_equal(apply_augmentation(img, aug), shift(hflip_image(img), 1, 0))
