"""Optical-flow networks: parameter anchors, ablations, custom layers, serialisation, JAX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from mer_keras.models import registry
from mer_keras.models.arfnet import ARFNet
from mer_keras.models.flow_baselines import MACNN, DualInception, MicroAttention, OffApexNet
from mer_keras.models.flow_layers import (
    BatchNormMaxPool2D,
    ChannelMeanMax,
    ChannelSlice,
    OffTANetMHSA,
    SpatialSoftmax,
    TorchMaxPooling2D,
    sinusoidal_position_code,
    trainable_params,
)
from mer_keras.models.off_tanet import OffTANet
from mer_keras.models.ststnet import STSTNet, copy_stream_weights

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- anchors


@pytest.mark.parametrize(
    "builder, kwargs, expected",
    [
        (OffTANet, {}, 59_403),  # Off-TANet paper, abstract and Table 2
        (ARFNet, {}, 39_685),  # ARFNet paper, abstract
        (STSTNet, {}, 1_683),  # original STSTNet code
        (STSTNet, {"variant": "off_tanet"}, 162_051),  # Off-TANet Table 2
    ],
    ids=["off_tanet", "arfnet", "ststnet", "ststnet_off_tanet"],
)
def test_acceptance_param_counts(builder, kwargs, expected):
    model = builder(**kwargs)
    assert trainable_params(model) == expected
    assert model.output_shape == (None, 3)


@pytest.mark.parametrize(
    "builder, input_shape, expected, paper_millions",
    [
        (OffApexNet, (28, 28, 2), 2_664_475, 2.66),
        (DualInception, (28, 28, 2), 6_449_867, 6.45),
        (MACNN, (112, 112, 3), 70_573_923, 70.57),
        (MicroAttention, (224, 224, 3), 53_384_195, 53.38),
    ],
    ids=["off_apexnet", "dual_inception", "macnn", "micro_attention"],
)
def test_baseline_param_counts_match_table2(builder, input_shape, expected, paper_millions):
    model = builder(input_shape=input_shape)
    n = trainable_params(model)
    print(f"{model.name}: {n:,} trainable (Table 2: {paper_millions}M)")
    assert n == expected
    assert round(n / 1e6, 2) == paper_millions
    assert model.output_shape == (None, 3)


# Every ablation variant builds; counts are recorded here (and printed with -s).
ABLATIONS = {
    ("off_tanet", "block=residual"): (OffTANet, {"block": "residual"}, 50_353),
    ("off_tanet", "block=self_attention"): (OffTANet, {"block": "self_attention"}, 55_549),
    ("off_tanet", "block=cbam"): (OffTANet, {"block": "cbam"}, 56_967),
    ("off_tanet", "block=bottleneck_transformer"): (OffTANet, {"block": "bottleneck_transformer"}, 48_625),
    ("off_tanet", "enhance_all_blocks"): (OffTANet, {"enhance_all_blocks": True}, 54_193),
    ("off_tanet", "no optical strain"): (OffTANet, {"input_shape": (112, 112, 2)}, 59_011),
    ("arfnet", "self_attention=False"): (ARFNet, {"self_attention": False}, 53_053),
    ("arfnet", "position_encoding=False"): (ARFNet, {"position_encoding": False}, 39_685),
    ("arfnet", "heads=1"): (ARFNet, {"heads": 1}, 39_685),
    ("arfnet", "no optical strain"): (ARFNet, {"input_shape": (112, 112, 2)}, 39_293),
    ("ststnet", "hidden_units=400"): (STSTNet, {"hidden_units": 400}, 162_083),
}


@pytest.mark.parametrize("key", list(ABLATIONS), ids=[": ".join(k) for k in ABLATIONS])
def test_ablation_variants_build(key):
    builder, kwargs, expected = ABLATIONS[key]
    model = builder(**kwargs)
    n = trainable_params(model)
    print(f"{key[0]} [{key[1]}]: {n:,} trainable")
    assert n == expected
    out = model(np.zeros((1, *model.input_shape[1:]), "float32"))
    assert tuple(out.shape) == (1, 3)


def test_registry_resolves_flow_builders():
    assert registry.get("off_tanet") is OffTANet
    assert registry.get("arfnet") is ARFNet
    assert registry.get("ststnet") is STSTNet
    assert registry.get("micro_attention") is MicroAttention


# --------------------------------------------------------------------------- switches


def test_switches_head_top_pooling_l2():
    x = np.random.default_rng(0).normal(size=(2, 112, 112, 3)).astype("float32")
    soft = OffTANet()
    probs = np.asarray(soft(x))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    svm = OffTANet(head="svm", classes=5)
    assert svm.get_layer("predictions").activation.__name__ == "linear"
    assert svm.output_shape == (None, 5)
    assert OffTANet(include_top=False).output_shape == (None, 7, 7, 8)
    assert ARFNet(include_top=False, pooling="avg").output_shape == (None, 8)
    assert STSTNet(include_top=False, pooling="max").output_shape == (None, 16)
    assert len(OffTANet(l2=1e-3).losses) > 0 and len(OffTANet().losses) == 0
    leaky = OffTANet(activation="leaky_relu", dropout=0.0)
    assert trainable_params(leaky) == 59_403
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in leaky.layers)
    with pytest.raises(ValueError):
        OffTANet(block="nope")
    with pytest.raises(ValueError):
        ARFNet(head="hinge")


def test_weights_path_loading(tmp_path):
    model = ARFNet()
    path = tmp_path / "arfnet.weights.h5"
    model.save_weights(path)
    again = ARFNet(weights=str(path))
    x = np.random.default_rng(1).normal(size=(2, 112, 112, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(again(x)))


# --------------------------------------------------------------------------- layers vs numpy


def _mhsa_reference(x, wq, bq, wk, bk, wv, bv, position):
    """Loop-by-loop transcription of the official SelfAttention/MultiHeadSelfAttention."""
    b, h, w, _ = x.shape
    pos = sinusoidal_position_code(w)
    outs = []
    for n in range(wq.shape[0]):  # heads
        q = np.einsum("bhwi,id->bdhw", x, wq[n]) + bq[n][None, :, None, None]
        k = np.einsum("bhwi,id->bdhw", x, wk[n]) + bk[n][None, :, None, None]
        v = np.einsum("bhwi,id->bdhw", x, wv[n]) + bv[n][None, :, None, None]
        att = q @ np.swapaxes(k, 2, 3)
        if position == "query":
            att = att + q @ pos.T
        elif position == "bias":
            att = att + pos
        flat = att.reshape(b, -1, h * h)
        flat = np.exp(flat - flat.max(-1, keepdims=True))
        flat = flat / flat.sum(-1, keepdims=True)
        outs.append(flat.reshape(att.shape) * v)
    return np.transpose(np.concatenate(outs, axis=1), (0, 2, 3, 1))


@pytest.mark.parametrize("position", ["query", "bias", None])
def test_mhsa_matches_loop_reference(position):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 6, 5)).astype("float32")
    layer = OffTANetMHSA(heads=3, head_channels=2, position=position)
    layer.build(x.shape)
    # biases are zero-initialised: give them values so they are exercised
    for var in (layer.q_bias, layer.k_bias, layer.v_bias):
        var.assign(rng.normal(size=var.shape).astype("float32"))
    ws = [np.asarray(getattr(layer, f"{p}_{k}").numpy()) for p in "qkv" for k in ("kernel", "bias")]
    y = np.asarray(layer(x))
    ref = _mhsa_reference(x, *ws, position=position)
    assert y.shape == (2, 6, 6, 6)
    np.testing.assert_allclose(y, ref, atol=1e-5, rtol=1e-4)


def test_position_code_values():
    p = sinusoidal_position_code(14)
    e0, e1, e2 = np.sin(1.0), np.cos(1.0), np.sin(1 / 10000 ** (1 / 14))
    np.testing.assert_allclose(p[0, 0], 2 * e0, rtol=1e-6)
    np.testing.assert_allclose(p[1, 2], e1 + e2, rtol=1e-6)
    np.testing.assert_array_equal(p, p.T)


def test_torch_maxpool_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 30, 30, 4)).astype("float32") - 5.0  # all negative: -inf padding matters
    y = np.asarray(TorchMaxPooling2D(3, 3, 1)(x))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    ref = np.stack(
        [np.stack([padded[:, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].max((1, 2)) for j in range(10)], 1)
         for i in range(10)], 1)
    assert y.shape == (2, 10, 10, 4)
    np.testing.assert_array_equal(y, ref)
    assert TorchMaxPooling2D(3, 2, 1).compute_output_shape((None, 112, 112, 3)) == (None, 56, 56, 3)


def test_small_layers():
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 3)).astype("float32")
    mm = np.asarray(ChannelMeanMax()(x))
    np.testing.assert_allclose(mm[..., 0], x.mean(-1), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mm[..., 1], x.max(-1))
    sm = np.asarray(SpatialSoftmax()(x))
    np.testing.assert_allclose(sm.reshape(2, -1).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ChannelSlice(1, 3)(x)), x[..., 1:3])


# --------------------------------------------------------------------------- serialisation


SMALL_LAYERS = {
    "OffTANetMHSA": (lambda: OffTANetMHSA(heads=2, head_channels=3, position="query"), (6, 6, 4)),
    "TorchMaxPooling2D": (lambda: TorchMaxPooling2D(3, 3, 1), (10, 10, 2)),
    "ChannelMeanMax": (lambda: ChannelMeanMax(), (5, 5, 3)),
    "SpatialSoftmax": (lambda: SpatialSoftmax(), (5, 5, 3)),
    "ChannelSlice": (lambda: ChannelSlice(0, 1), (5, 5, 2)),
}


def _roundtrip(model, tmp_path, x):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(loaded(x)))
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    return loaded


@pytest.mark.parametrize("name", list(SMALL_LAYERS))
def test_custom_layer_roundtrip(name, tmp_path):
    make, shape = SMALL_LAYERS[name]
    inp = keras.Input(shape)
    model = keras.Model(inp, make()(inp), name=f"wrap_{name}")
    x = np.random.default_rng(5).normal(size=(2, *shape)).astype("float32")
    _roundtrip(model, tmp_path, x)


ROUNDTRIP_MODELS = {
    "off_tanet": lambda: OffTANet(),
    "off_tanet_all_variants": None,  # expanded below
    "arfnet": lambda: ARFNet(),
    "arfnet_res": lambda: ARFNet(self_attention=False),
    "ststnet": lambda: STSTNet(),
    "ststnet_off_tanet": lambda: STSTNet(variant="off_tanet"),
    "ststnet_fused": lambda: STSTNet(fuse_bn_pool=True),
    "ststnet_one_stream": lambda: STSTNet(fuse_streams=True, fuse_bn_pool=True),
    "off_apexnet": lambda: OffApexNet(),
    "dual_inception": lambda: DualInception(),
    # the 50-70M-parameter heads are plain Dense layers; round-trip the convolutional parts
    "macnn_features": lambda: MACNN(include_top=False, pooling="avg"),
    "micro_attention_features": lambda: MicroAttention(include_top=False, pooling="avg"),
}
del ROUNDTRIP_MODELS["off_tanet_all_variants"]
for _block in ("residual", "self_attention", "cbam", "bottleneck_transformer"):
    ROUNDTRIP_MODELS[f"off_tanet_{_block}"] = (lambda b=_block: OffTANet(block=b, enhance_all_blocks=True))


@pytest.mark.parametrize("name", list(ROUNDTRIP_MODELS))
def test_model_roundtrip(name, tmp_path):
    model = ROUNDTRIP_MODELS[name]()
    x = np.random.default_rng(6).normal(size=(2, *model.input_shape[1:])).astype("float32")
    _roundtrip(model, tmp_path, x)


# --------------------------------------------------------------------------- JAX backend


def _all_layers_model():
    """A small model that passes through every custom layer of ``flow_layers``."""
    inp = keras.Input((14, 14, 3))
    a = ChannelSlice(0, 2, name="slice")(inp)
    a = keras.layers.Conv2D(4, 1, name="proj")(a)
    a = OffTANetMHSA(heads=2, head_channels=2, position="query", name="mhsa")(a)
    b = ChannelMeanMax(name="mean_max")(inp)
    c = keras.layers.Multiply(name="mul")([inp, SpatialSoftmax(name="softmax")(inp)])
    x = keras.layers.Concatenate(name="cat")([a, b, c])
    x = TorchMaxPooling2D(3, 3, 1, name="pool")(x)
    x = BatchNormMaxPool2D(2, 2, 1, name="bn_pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(x), name="all_layers")


_JAX_SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "jax"
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from tests.test_models_flow import _all_layers_model
    from mer_keras.models.off_tanet import OffTANet
    from mer_keras.models.port import load_torch_state_dict
    data = np.load(os.environ["ARRAYS"])
    out = {}
    model = _all_layers_model()
    model.set_weights([data[f"w{i}"] for i in range(len(model.weights))])
    out["all_layers"] = np.asarray(model(data["x"])).tolist()
    # one training step through every custom layer
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    out["loss"] = float(model.train_on_batch(data["x"], np.array([0, 2])))
    reference = os.environ.get("OFF_TANET_REFERENCE")
    if reference:
        ref = np.load(reference)
        net = OffTANet(classifier_activation=None)
        load_torch_state_dict(net, reference)
        logits = net.predict(np.transpose(ref["input_nchw"], (0, 2, 3, 1)), verbose=0)
        out["off_tanet_max_abs_diff"] = float(np.abs(logits - ref["expected_logits"]).max())
    print("RESULT" + json.dumps(out))
    """
)


def test_layers_run_under_jax_backend(tmp_path):
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("JAX is not installed: `pip install jax` to run the KERAS_BACKEND=jax check")
    rng = np.random.default_rng(7)
    model = _all_layers_model()
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in model.weights]
    weights = [np.abs(w) + 0.1 if v.path.endswith("moving_variance") else w for w, v in zip(weights, model.weights)]
    model.set_weights(weights)
    x = rng.normal(size=(2, 14, 14, 3)).astype("float32")
    expected = np.asarray(model(x))
    path = tmp_path / "arrays.npz"
    np.savez(path, x=x, **{f"w{i}": w for i, w in enumerate(weights)})
    env = {**os.environ, "KERAS_BACKEND": "jax", "ARRAYS": str(path), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    reference = REPO.parent / "shared" / "reference" / "off_tanet_official_loso1.npz"
    if reference.exists():
        env["OFF_TANET_REFERENCE"] = str(reference)
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    result = json.loads(line[len("RESULT"):])
    np.testing.assert_allclose(np.array(result["all_layers"]), expected, rtol=1e-4, atol=1e-5)
    assert np.isfinite(result["loss"])
    if reference.exists():
        print(f"JAX backend, official Off-TANet logits max abs diff: {result['off_tanet_max_abs_diff']:.2e}")
        assert result["off_tanet_max_abs_diff"] < 1e-4


# --------------------------------------------------------------------------- fused BN + max-pool


def _ststnet_pair():
    """Unfused and fused STSTNet with the same weights; BN gammas of both signs, non-trivial moving stats."""
    keras.utils.set_random_seed(3)
    plain, fused = STSTNet(dropout=0.0), STSTNet(dropout=0.0, fuse_bn_pool=True)
    rng = np.random.default_rng(3)
    for layer in plain.layers:
        if layer.weights:
            weights = layer.get_weights()
            if layer.name.startswith("bn"):
                weights = [rng.normal(size=weights[0].shape).astype("float32"), weights[1] + 0.2,
                           weights[2] + 0.3, weights[3] * 2.0]
                layer.set_weights(weights)
            fused.get_layer(layer.name).set_weights(weights)
    assert any((plain.get_layer(f"bn{i}").gamma.numpy() < 0).any() for i in (1, 2, 3))
    return plain, fused


def test_fused_bn_max_pool_equals_bn_then_max_pool():
    """BN then max-pool, fused (pool first on the sign-flipped map, normalise the pooled map),
    gives the same outputs, gradients and moving statistics as the two layers."""
    import tensorflow as tf

    plain, fused = _ststnet_pair()
    assert [v.path for v in plain.get_layer("bn1").weights] == [v.path for v in fused.get_layer("bn1").weights]
    assert fused.get_layer("bn1").output.shape[1:] == plain.get_layer("maxpool1").output.shape[1:] == (10, 10, 3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 28, 28, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)

    def step(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))
        return tape.gradient(loss, model.trainable_variables)

    for g_plain, g_fused, v in zip(step(plain), step(fused), plain.trainable_variables):
        scale = float(np.abs(g_plain).max()) + 1e-12
        assert float(np.abs(g_plain - g_fused).max()) / scale < 1e-4, v.path
    for i in (1, 2, 3):
        for a, b in zip(plain.get_layer(f"bn{i}").get_weights(), fused.get_layer(f"bn{i}").get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # a fused model's weights load into the unfused model by layer name
    moved = STSTNet(dropout=0.0)
    for layer in fused.layers:
        if layer.weights:
            moved.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_allclose(moved(x, training=False), fused(x, training=False), atol=1e-5)


@pytest.mark.parametrize("fuse_bn_pool", [False, True])
def test_one_stream_ststnet_equals_three_streams(fuse_bn_pool):
    """The three streams as one 16-filter stream: same parameters, outputs, gradients and BN moments."""
    import tensorflow as tf

    plain, _ = _ststnet_pair()
    one = STSTNet(dropout=0.0, fuse_streams=True, fuse_bn_pool=fuse_bn_pool)
    assert one.count_params() == plain.count_params() == 1683 + 2 * 16  # + BN moving statistics
    copy_stream_weights(plain, one)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(32, 28, 28, 3)).astype("float32")
    y = rng.integers(0, 3, 32)
    np.testing.assert_allclose(one(x, training=False), plain(x, training=False), atol=1e-5)
    assert float(np.abs(one(x, training=False) - plain(x, training=False)).max()) < 1e-5

    def grads(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))
        named = dict(zip([v.path for v in model.trainable_variables], tape.gradient(loss, model.trainable_variables)))
        return named

    g_plain, g_one = grads(plain), grads(one)
    pairs = [(g_one["predictions/kernel"], g_plain["predictions/kernel"])]
    for part in ("kernel", "bias"):
        pairs.append((g_one[f"conv/{part}"], np.concatenate([g_plain[f"conv{i}/{part}"] for i in (1, 2, 3)], axis=-1)))
    for got, want in pairs:  # relative to the gradient's scale (float32 sums in another order)
        assert float(np.abs(np.asarray(got) - np.asarray(want)).max()) / (float(np.abs(want).max()) + 1e-12) < 1e-4
    # after the training-mode call both carry the same BN moving statistics; map back and compare
    back = STSTNet(dropout=0.0)
    copy_stream_weights(one, back)
    for i in (1, 2, 3):
        for a, b in zip(plain.get_layer(f"bn{i}").get_weights(), back.get_layer(f"bn{i}").get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back(x, training=False), plain(x, training=False), atol=1e-5)


def test_fused_bn_max_pool_arguments():
    with pytest.raises(ValueError, match="variant='original'"):
        STSTNet(variant="off_tanet", fuse_streams=True)
    with pytest.raises(ValueError, match="not an original-variant"):
        copy_stream_weights(STSTNet(variant="off_tanet"), STSTNet())
    with pytest.raises(ValueError, match="variant='original'"):
        STSTNet(variant="off_tanet", fuse_bn_pool=True)
    with pytest.raises(ValueError, match="channels-last"):
        BatchNormMaxPool2D(3, 3, 1, axis=1)
