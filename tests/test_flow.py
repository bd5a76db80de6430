"""TV-L1 flow on a real portrait with known motion, optical strain (Off-TANet Eq. 4), flow images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mer_keras.preprocess.bench import portrait_frame, synthetic_aligned_pair
from mer_keras.preprocess.face import FaceAligner
from mer_keras.preprocess.flow import (
    TVL1Params,
    endpoint_error,
    flow_derivatives,
    flow_image,
    flow_stack,
    optical_strain,
    tvl1_flow,
    warp_forward,
)


@pytest.fixture(scope="module")
def scene():
    frame = portrait_frame("grace_hopper")
    landmarks = FaceAligner().landmarks(frame)
    assert landmarks is not None
    return frame, landmarks


def test_default_params_match_opencv():
    created = cv2.optflow.DualTVL1OpticalFlow_create()
    p = TVL1Params()
    assert created.getTau() == pytest.approx(p.tau)
    assert created.getLambda() == pytest.approx(p.lambda_)
    assert created.getTheta() == pytest.approx(p.theta)
    assert created.getScalesNumber() == p.nscales
    assert created.getWarpingsNumber() == p.warps
    assert created.getEpsilon() == pytest.approx(p.epsilon)
    assert created.getInnerIterations() == p.inner_iterations
    assert created.getOuterIterations() == p.outer_iterations
    assert created.getScaleStep() == pytest.approx(p.scale_step)
    assert created.getGamma() == pytest.approx(p.gamma)
    assert created.getMedianFiltering() == p.median_filtering
    assert created.getUseInitialFlow() == p.use_initial_flow


def test_params_are_passed_through():
    p = TVL1Params(tau=0.2, lambda_=0.1, theta=0.4, nscales=2, warps=4, epsilon=0.02, inner_iterations=7,
                   outer_iterations=3, scale_step=0.6, gamma=0.1, median_filtering=3)
    algo = p.create()
    got = (algo.getTau(), algo.getLambda(), algo.getTheta(), algo.getScalesNumber(), algo.getWarpingsNumber(),
           algo.getEpsilon(), algo.getInnerIterations(), algo.getOuterIterations(), algo.getScaleStep(),
           algo.getGamma(), algo.getMedianFiltering())
    np.testing.assert_allclose(got, (0.2, 0.1, 0.4, 2, 4, 0.02, 7, 3, 0.6, 0.1, 3), rtol=1e-6)
    assert TVL1Params.from_dict(p.to_dict()) == p
    fast = TVL1Params.fast()
    assert fast.nscales < TVL1Params().nscales and fast.warps < TVL1Params().warps
    with pytest.raises(ValueError):
        TVL1Params(nscales=0)
    with pytest.raises(ValueError):
        TVL1Params(scale_step=1.5)


def test_flow_does_not_depend_on_what_was_computed_before():
    """OpenCV's TV-L1 object lowers its scale count for good after an image too small for its
    pyramid; a 112-px pair after a 28-px pair must still get all five scales (a reused object
    gave differences of 0.007 px on this pair and up to 12 in prepared Off-TANet inputs)."""
    rng = np.random.default_rng(0)

    def pair(size):
        a = cv2.GaussianBlur((rng.random((size, size)) * 255).astype(np.uint8), (0, 0), 3)
        b = cv2.warpAffine(a, np.float32([[1, 0, 0.7], [0, 1, 0.3]]), (size, size), borderMode=cv2.BORDER_REFLECT)
        return a, b

    large, small = pair(112), pair(28)
    fresh = cv2.optflow.DualTVL1OpticalFlow_create().calc(*large, None)
    reused = cv2.optflow.DualTVL1OpticalFlow_create()
    reused.calc(*small, None)
    assert reused.getScalesNumber() < 5  # the OpenCV behaviour this guards against
    assert np.abs(reused.calc(*large, None) - fresh).max() > 1e-4
    first = tvl1_flow(*large)
    tvl1_flow(*small)
    np.testing.assert_array_equal(tvl1_flow(*large), first)
    np.testing.assert_array_equal(first, fresh)


@pytest.mark.parametrize("peak", [0.75, 2.5])
def test_tvl1_recovers_known_field(scene, peak):
    frame, landmarks = scene
    onset, apex, truth, face = synthetic_aligned_pair(frame, landmarks, 112, peak)
    flow = tvl1_flow(onset, apex, TVL1Params.fast())
    assert flow.shape == (112, 112, 2) and flow.dtype == np.float32
    motion = float(np.hypot(truth[..., 0], truth[..., 1])[face].mean())
    epe = endpoint_error(flow, truth, face)
    zero = endpoint_error(np.zeros_like(flow), truth, face)
    print(f"peak {peak} px: mean motion {motion:.3f} px, EPE {epe:.4f} px ({epe / motion:.1%})")
    assert epe < 0.3 * motion
    assert epe < 0.3 * zero


def test_tvl1_direction_convention():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (64, 64)).astype(np.uint8), (0, 0), 2.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    truth = np.zeros((64, 64, 2), np.float32)
    truth[..., 0], truth[..., 1] = 1.5, -0.5  # content moves right and up
    moved = warp_forward(img, truth)
    flow = tvl1_flow(img, moved)  # OpenCV defaults
    inner = flow[12:-12, 12:-12].reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(inner, [1.5, -0.5], atol=0.15)
    # float input in [0, 1] gives the same flow as uint8
    flow_f = tvl1_flow(img.astype(np.float32) / 255, moved.astype(np.float32) / 255)
    assert np.abs(flow_f - flow).mean() < 0.02


def test_tvl1_validation():
    a = np.zeros((32, 32), np.uint8)
    with pytest.raises(ValueError, match="grey"):
        tvl1_flow(np.zeros((32, 32, 3), np.uint8), a)
    with pytest.raises(ValueError, match="same shape"):
        tvl1_flow(a, np.zeros((32, 31), np.uint8))


def linear_field(ux=0.0, uy=0.0, vx=0.0, vy=0.0, c=(0.3, -0.2), n=32):
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    return np.dstack([c[0] + ux * xx + uy * yy, c[1] + vx * xx + vy * yy]).astype(np.float32)


def test_strain_of_translation_is_zero():
    flow = linear_field()
    for variant in ("paper", "official"):
        for derivative in ("sobel", "sobel_raw", "gradient"):
            assert np.abs(optical_strain(flow, variant, derivative)).max() < 1e-6


def test_strain_of_linear_fields_is_analytic():
    inner = (slice(2, -2), slice(2, -2))
    a = 0.04
    shear = linear_field(uy=a)  # u = a * y: simple shear
    np.testing.assert_allclose(optical_strain(shear, "paper")[inner], a * np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(optical_strain(shear, "official")[inner], a * np.sqrt(1.5), rtol=1e-5)
    np.testing.assert_allclose(optical_strain(shear, "paper", "sobel_raw")[inner], 8 * a * np.sqrt(0.5), rtol=1e-5)
    np.testing.assert_allclose(optical_strain(shear, "paper", "gradient"), a * np.sqrt(0.5), rtol=1e-5)
    general = linear_field(ux=0.01, uy=0.02, vx=-0.03, vy=0.05)
    paper = np.sqrt(0.01**2 + 0.05**2 + 0.5 * (0.02 - 0.03) ** 2)
    official = np.sqrt(0.01**2 + 0.02**2 + 0.5 * (-0.03 + 0.02) ** 2)
    np.testing.assert_allclose(optical_strain(general, "paper")[inner], paper, rtol=1e-4)
    np.testing.assert_allclose(optical_strain(general, "official")[inner], official, rtol=1e-4)
    # the official slip ignores v_y entirely: a pure vertical stretch has zero "official" strain
    stretch = linear_field(vy=0.05)
    np.testing.assert_allclose(optical_strain(stretch, "paper")[inner], 0.05, rtol=1e-5)
    assert np.abs(optical_strain(stretch, "official")).max() < 1e-7
    ux, uy, vx, vy = flow_derivatives(general)
    np.testing.assert_allclose([ux[5, 5], uy[5, 5], vx[5, 5], vy[5, 5]], [0.01, 0.02, -0.03, 0.05], rtol=1e-4)
    with pytest.raises(ValueError):
        optical_strain(general, "typo")


def test_flow_stack_and_image_normalisation():
    rng = np.random.default_rng(1)
    flow = cv2.GaussianBlur(rng.normal(0, 1, (40, 40, 2)).astype(np.float32), (0, 0), 3)
    stack = flow_stack(flow)
    assert stack.shape == (40, 40, 3) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack[..., :2], flow)
    np.testing.assert_allclose(stack[..., 2], optical_strain(flow))
    mm = flow_image(flow)
    assert mm.shape == (40, 40, 3) and mm.dtype == np.uint8
    assert list(mm.reshape(-1, 3).min(axis=0)) == [0, 0, 0]
    assert list(mm.reshape(-1, 3).max(axis=0)) == [255, 255, 255]
    # min-max discards amplitude; the fixed scale keeps it
    np.testing.assert_array_equal(flow_image(flow * 0.1), mm)
    small = flow_image(flow * 0.1, normalisation="clip", flow_scale=2.0)
    big = flow_image(flow, normalisation="clip", flow_scale=2.0)
    assert np.abs(small[..., :2].astype(int) - 128).mean() < np.abs(big[..., :2].astype(int) - 128).mean()
    zero = flow_image(np.zeros((8, 8, 2), np.float32), normalisation="clip")
    assert np.all(zero[..., :2] == 128) and np.all(zero[..., 2] == 0)
    sat = np.full((8, 8, 2), 5.0, np.float32)
    sat[..., 1] = -5.0
    img = flow_image(sat, third="magnitude", normalisation="clip", flow_scale=2.0)
    assert np.all(img[..., 0] == 255) and np.all(img[..., 1] == 0) and np.all(img[..., 2] == 255)
    assert np.all(flow_image(np.zeros((8, 8, 2), np.float32)) == 0)  # constant channels -> 0
    with pytest.raises(ValueError):
        flow_image(flow, normalisation="zscore")
