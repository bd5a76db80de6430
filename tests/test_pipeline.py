"""PreprocessConfig (presets, serialisation, fingerprint) and preprocess_clip outputs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from mer_keras.preprocess.bench import face_field, portrait_frame
from mer_keras.preprocess.face import FaceAligner, NoFaceError
from mer_keras.preprocess.flow import TVL1Params, warp_forward
from mer_keras.preprocess.masks import MaskConfig
from mer_keras.preprocess.pipeline import (
    ClipFeatures,
    FlowImageOptions,
    PRESETS,
    PreprocessConfig,
    preprocess_clip,
)

ALTERNATIVES = {
    "align_mode": "per_frame",
    "interpolation": "linear",
    "strain_variant": "official",
    "strain_derivative": "gradient",
    "keep": "onset_to_apex",
    "third": "magnitude",
    "normalisation": "clip",
    "source": "cropped",
}


def leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def altered(path, value):
    if isinstance(value, bool):
        return not value
    if value is None:
        return 56 if path[-1] == "flow_size" else 1.0
    if isinstance(value, int):
        return value + 2  # +2 keeps odd kernel sizes odd
    if isinstance(value, float):
        return value * 0.7 + 0.013
    if isinstance(value, str):
        alt = ALTERNATIVES[path[-1]]
        return alt if alt != value else {"official": "paper", "clip": "minmax"}.get(value, value)
    raise TypeError(path)


def test_fingerprint_changes_with_every_parameter():
    base = PreprocessConfig.preset("off_tanet_aligned")  # unmasked, so that source='cropped' is a valid change
    d = base.to_dict()
    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == base
    assert PreprocessConfig.from_dict(d).fingerprint() == base.fingerprint()
    assert PreprocessConfig.preset("off_tanet_aligned").fingerprint() == base.fingerprint()
    seen = {base.fingerprint(), PreprocessConfig.preset("off_tanet").fingerprint()}
    n = 0
    for path, value in leaves(d):
        changed = copy.deepcopy(d)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = altered(path, value)
        fp = PreprocessConfig.from_dict(changed).fingerprint()
        assert fp not in seen, path
        seen.add(fp)
        n += 1
    assert n >= 25  # every leaf of the nested config was exercised


def test_fingerprint_is_stable_across_processes():
    cfg = PreprocessConfig.preset("shufflenet")
    code = "from mer_keras.preprocess.pipeline import PreprocessConfig as C; print(C.preset('shufflenet').fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == cfg.fingerprint()
    assert len({PreprocessConfig.preset(p).fingerprint() for p in PRESETS}) == len(PRESETS)


def test_config_validation():
    with pytest.raises(ValueError):
        PreprocessConfig(size=4)
    with pytest.raises(ValueError):
        PreprocessConfig(keep="everything")
    with pytest.raises(ValueError):
        PreprocessConfig.preset("resnet")
    with pytest.raises(ValueError):
        PreprocessConfig.from_dict({"size": 112, "colour": True})
    with pytest.raises(TypeError):
        PreprocessConfig(mask={"mask_eyes": True})
    with pytest.raises(ValueError):
        FlowImageOptions(third="angle")
    assert PreprocessConfig.preset("ststnet", size=32).size == 32


@pytest.fixture(scope="module")
def raw_clip():
    """Five 640x480 grey frames: a portrait whose face moves smoothly by up to 4 raw px at the apex (index 3)."""
    frame = portrait_frame("grace_hopper")
    landmarks = FaceAligner().landmarks(frame)
    unit = face_field(frame.shape, landmarks, seed=2)
    return [warp_forward(frame, unit * a) for a in (0.0, 1.5, 3.0, 4.0, 2.0)]


EXPECTED = {"shufflenet": 224, "mobilevit": 256, "off_tanet": 112, "ststnet": 28, "off_tanet_aligned": 112,
            "ststnet_aligned": 28}


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_preprocess_clip_shapes_per_preset(raw_clip, preset):
    cfg = PreprocessConfig.preset(preset)
    s = EXPECTED[preset]
    assert cfg.size == s
    feats = preprocess_clip(raw_clip, 0, 3, cfg)
    assert feats.onset.shape == feats.apex.shape == (s, s) and feats.onset.dtype == np.uint8
    assert feats.flow.shape == (s, s, 2) and feats.flow.dtype == np.float32
    assert feats.strain.shape == (s, s) and feats.strain.dtype == np.float32
    assert feats.flow_image.shape == (s, s, 3) and feats.flow_image.dtype == np.uint8
    assert feats.mask.shape == (s, s) and feats.mask.dtype == bool
    assert feats.landmarks.shape == (68, 2)
    assert feats.n_fallback_frames == 0
    if cfg.keep == "onset_to_apex":
        assert feats.frames.shape == (4, s, s) and feats.frames.dtype == np.uint8
        np.testing.assert_array_equal(feats.frames[0], feats.onset)
        np.testing.assert_array_equal(feats.frames[-1], feats.apex)
    else:
        assert feats.frames is None
    # masked pixels are zero everywhere; flow is non-trivial where kept
    assert np.all(feats.flow[~feats.mask] == 0) and np.all(feats.strain[~feats.mask] == 0)
    assert np.all(feats.onset[~feats.mask] == 0)
    assert np.hypot(feats.flow[..., 0], feats.flow[..., 1])[feats.mask].mean() > 0.05 * s / 112
    if preset == "shufflenet":
        assert not feats.mask.all() and feats.mask.mean() > 0.3
    if preset.startswith(("off_tanet", "ststnet")):
        assert feats.mask.all()
    if cfg.source == "cropped":  # the frame taken as the crop: no landmarks
        assert np.isnan(feats.landmarks).all()
    arrays = feats.to_arrays()
    back = ClipFeatures.from_arrays(arrays)
    np.testing.assert_array_equal(back.flow, feats.flow)
    assert back.n_fallback_frames == feats.n_fallback_frames


def test_preprocess_clip_per_frame_fallback_and_errors(raw_clip):
    blank = np.full_like(raw_clip[0], 100)
    clip = [raw_clip[0], blank, raw_clip[3]]
    cfg = PreprocessConfig.preset("ststnet_aligned", align_mode="per_frame", keep="onset_to_apex")
    feats = preprocess_clip(clip, 0, 2, cfg)
    assert feats.n_fallback_frames == 1 and feats.frames.shape == (3, 28, 28)
    with pytest.raises(ValueError):
        preprocess_clip(clip, 2, 1, cfg)
    with pytest.raises(ValueError):
        preprocess_clip(clip, 0, 3, cfg)
    with pytest.raises(NoFaceError):
        preprocess_clip([blank, raw_clip[3]], 0, 1, cfg)


def test_flow_is_computed_before_masking(raw_clip):
    """Masking the frames before the flow would create edges at the mask boundary; not done."""
    masked = PreprocessConfig.preset("off_tanet_aligned", mask=MaskConfig())
    plain = PreprocessConfig.preset("off_tanet_aligned")
    a = preprocess_clip(raw_clip, 0, 3, masked)
    b = preprocess_clip(raw_clip, 0, 3, plain)
    np.testing.assert_allclose(a.flow[a.mask], b.flow[a.mask], atol=1e-6)


# ----------------------------------------------------------------------------- apex-only clips (no flow)


def test_compute_flow_enters_the_fingerprint_only_when_off():
    import hashlib

    from mer_keras.preprocess.pipeline import SCHEMA_VERSION

    for name in ("shufflenet", "mobilevit", "off_tanet", "ststnet", "off_tanet_aligned", "ststnet_aligned"):
        cfg = PreprocessConfig.preset(name)
        assert cfg.compute_flow is True
        # a cache.json written before the fields (flow_size: None, the default, is not hashed either)
        legacy = {k: v for k, v in cfg.to_dict().items() if k not in ("compute_flow", "flow_size", "source")}
        text = json.dumps({"schema": SCHEMA_VERSION, "config": legacy}, sort_keys=True, separators=(",", ":"))
        if cfg.flow_size is None and cfg.source == "aligned":  # existing caches stay valid
            # (the ststnet and off_tanet presets' new sources and flow sizes changed their inputs: stale caches)
            assert cfg.fingerprint() == hashlib.sha256(text.encode()).hexdigest()[:16], name
            assert PreprocessConfig.from_dict(legacy) == cfg
        else:
            assert cfg.fingerprint() != hashlib.sha256(text.encode()).hexdigest()[:16], name
        assert cfg.replace(compute_flow=False).fingerprint() != cfg.fingerprint()
    apex = PreprocessConfig.preset("mobilevit_apex")
    assert (apex.size, apex.compute_flow, apex.mask) == (256, False, PreprocessConfig.preset("mobilevit").mask)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(apex.to_dict()))) == apex
    with pytest.raises(TypeError):
        PreprocessConfig(compute_flow="no")


def test_apex_only_clip_has_no_flow_and_accepts_a_single_image(raw_clip):
    with_flow = PreprocessConfig.preset("mobilevit", size=64)
    apex_only = PreprocessConfig.preset("mobilevit_apex", size=64)
    a = preprocess_clip(raw_clip, 0, 3, apex_only)
    b = preprocess_clip(raw_clip, 0, 3, with_flow)
    np.testing.assert_array_equal(a.apex, b.apex)  # same alignment and mask, only the flow is left out
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.flow is None and a.strain is None and a.flow_image is None
    arrays = a.to_arrays()
    assert not {"flow", "strain", "flow_image"} & set(arrays)
    back = ClipFeatures.from_arrays(arrays)
    assert back.flow is None and np.array_equal(back.apex, a.apex)
    single = preprocess_clip(raw_clip, 3, 3, apex_only)  # onset == apex: one image (JAFFE)
    assert single.apex.shape == (64, 64) and single.apex.dtype == np.uint8 and single.apex[single.mask].std() > 5
    np.testing.assert_array_equal(single.onset, single.apex)
    frames = preprocess_clip(raw_clip, 3, 3, apex_only.replace(keep="onset_to_apex"))
    assert frames.frames.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="two frames"):
        preprocess_clip(raw_clip, 3, 3, with_flow)  # flow still needs two frames
    with pytest.raises(ValueError):
        preprocess_clip(raw_clip, 3, 2, apex_only)
