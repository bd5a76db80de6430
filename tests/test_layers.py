"""Custom layers: numerics against numpy references, serialisation, JAX backend."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from mer_keras.models import layers as L

RNG = np.random.default_rng(0)


def _rand(*shape):
    return RNG.standard_normal(shape).astype("float32")


def test_channel_shuffle_matches_torchvision_order():
    x = _rand(2, 3, 3, 12)
    y = keras.ops.convert_to_numpy(L.ChannelShuffle(2)(x))
    # torchvision: view(g, C/g) -> transpose -> flatten  => new[c] = old[(c % g) * C/g + c // g]
    idx = [(c % 2) * 6 + c // 2 for c in range(12)]
    np.testing.assert_array_equal(y, x[..., idx])


def test_channel_split():
    x = _rand(2, 4, 4, 8)
    a, b = L.ChannelSplit(2)(x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), x[..., :4])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), x[..., 4:])


def test_unfold_fold_reference_and_inverse():
    x = _rand(2, 6, 4, 5)
    u = keras.ops.convert_to_numpy(L.Unfold(2)(x))
    assert u.shape == (2, 4, 6, 5)
    ref = np.empty_like(u)
    for i in range(2):
        for j in range(2):
            for a in range(3):
                for b in range(2):
                    ref[:, i * 2 + j, a * 2 + b] = x[:, a * 2 + i, b * 2 + j]
    np.testing.assert_array_equal(u, ref)
    back = keras.ops.convert_to_numpy(L.Fold(6, 4, 2)(u))
    np.testing.assert_array_equal(back, x)


def test_channel_attention_reference():
    x = _rand(2, 5, 5, 32)
    layer = L.ChannelAttention(ratio=8)
    y = keras.ops.convert_to_numpy(layer(x))
    w0, b0 = layer.mlp_hidden.get_weights()
    w1, b1 = layer.mlp_out.get_weights()

    def mlp(v):
        return np.maximum(v @ w0 + b0, 0) @ w1 + b1

    att = 1 / (1 + np.exp(-(mlp(x.mean((1, 2))) + mlp(x.max((1, 2))))))
    np.testing.assert_allclose(y, x * att[:, None, None], rtol=1e-5, atol=1e-5)
    assert w0.shape == (32, 4)


def test_spatial_attention_shape_and_range():
    x = np.abs(_rand(2, 6, 6, 4))
    y = keras.ops.convert_to_numpy(L.SpatialAttention(7)(x))
    assert y.shape == x.shape
    assert np.all(y <= x + 1e-6) and np.all(y >= 0)


def test_ghost_module_channels_and_params():
    layer = L.GhostModule(10, ratio=2, dw_size=3)
    y = layer(_rand(2, 4, 4, 6))
    assert tuple(y.shape) == (2, 4, 4, 10)
    # primary 1x1 6->5 (30) + BN(5: 10 trainable) + dw 3x3 on 5 (45) + BN(10)
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == 30 + 10 + 45 + 10


def test_shared_qkv_attention_reference():
    x = _rand(2, 4, 4, 8)
    layer = L.SharedQKVAttention(8, num_heads=2, patch_size=2)
    y = keras.ops.convert_to_numpy(layer(x))
    v = keras.ops.convert_to_numpy(layer.v_proj(x))
    out = np.empty_like(v)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                tok = v[b, i::2, j::2].reshape(-1, 8)  # N=4 patches for this pixel position
                res = []
                for h in range(2):
                    t = tok[:, h * 4:(h + 1) * 4]
                    logits = t @ t.T / np.sqrt(4)
                    a = np.exp(logits - logits.max(-1, keepdims=True))
                    a /= a.sum(-1, keepdims=True)
                    res.append(a @ t)
                out[b, i::2, j::2] = np.concatenate(res, -1).reshape(2, 2, 8)
    ref = keras.ops.convert_to_numpy(layer.out_proj(out))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_transformer_encoder_leading_axes_independent():
    layer = L.TransformerEncoder(16, 4, 32, activation="swish")
    x = _rand(2, 3, 5, 16)
    y = keras.ops.convert_to_numpy(layer(x))
    for p in range(3):
        yp = keras.ops.convert_to_numpy(layer(x[:, p]))
        np.testing.assert_allclose(y[:, p], yp, rtol=1e-4, atol=1e-5)
    # 4 d^2 + 4 d + 2 d f + f + d + 4 d
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == (
        4 * 256 + 64 + 2 * 16 * 32 + 32 + 16 + 64)


LAYER_CASES = [
    (lambda: L.ChannelShuffle(4), (4, 4, 8)),
    (lambda: L.ChannelAttention(4, kernel_regularizer="l2"), (4, 4, 8)),
    (lambda: L.SpatialAttention(3), (4, 4, 8)),
    (lambda: L.GhostModule(6, activation="relu"), (4, 4, 8)),
    (lambda: L.SharedQKVAttention(8, num_heads=2), (4, 4, 8)),
    (lambda: L.GhostTransformerEncoder(8, 16, num_heads=2, patch_size=1), (3, 3, 8)),
    (lambda: L.TransformerEncoder(8, 2, 16, activation="gelu"), (5, 8)),
    (lambda: L.ClassToken(), (5, 8)),
    (lambda: L.AddPositionEmbedding(), (5, 8)),
    (lambda: L.TakeToken(1), (5, 8)),
]


@pytest.mark.parametrize("case", range(len(LAYER_CASES)))
def test_layer_save_load_roundtrip(case, tmp_path):
    make, shape = LAYER_CASES[case]
    inp = keras.Input(shape)
    out = make()(inp)
    model = keras.Model(inp, out)
    x = _rand(2, *shape)
    y = keras.ops.convert_to_numpy(model(x))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), y, rtol=1e-6, atol=1e-6)
    cfg = model.layers[1].get_config()
    assert type(model.layers[1]).from_config(cfg).get_config() == cfg


def test_split_unfold_fold_roundtrip(tmp_path):
    inp = keras.Input((4, 4, 6))
    a, b = L.ChannelSplit(2)(inp)
    u = L.Unfold(2)(b)
    f = L.Fold(4, 4, 2)(u)
    model = keras.Model(inp, keras.layers.Concatenate()([f, a]))
    x = _rand(2, 4, 4, 6)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(model(x)))


JAX_SCRIPT = textwrap.dedent("""
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    import keras, numpy as np
    assert keras.backend.backend() == "jax"
    from mer_keras.models import layers as L
    from mer_keras.models.heads import MultiMarginLoss
    from mer_keras.models.shufflenet_v2 import ShuffleNetV2ViT
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 8)).astype("float32")
    for layer in [L.ChannelShuffle(2), L.ChannelAttention(4), L.SpatialAttention(7),
                  L.GhostModule(6), L.SharedQKVAttention(8, 2),
                  L.GhostTransformerEncoder(8, 16, 2), L.Unfold(2)]:
        y = layer(x)
        assert np.all(np.isfinite(np.asarray(y))), layer.name
    a, b = L.ChannelSplit(2)(x)
    assert L.Fold(4, 4, 2)(L.Unfold(2)(x)).shape == x.shape
    t = L.TransformerEncoder(8, 2, 16)(x.reshape(2, 2, 8, 8))
    t = L.TakeToken(0)(L.AddPositionEmbedding()(L.ClassToken()(x.reshape(2, 16, 8))))
    assert t.shape == (2, 8)
    # one full model (Ghost/shared-QKV ViT units + ShuffleNetV2 pieces), jit-compiled predict
    img = np.random.default_rng(1).random((2, 96, 96, 3)).astype("float32")
    m = ShuffleNetV2ViT(input_shape=(96, 96, 3), head="svm")
    out = m.predict(img, verbose=0)
    assert out.shape == (2, 3) and np.all(np.isfinite(out)), m.name
    loss = MultiMarginLoss()(np.array([3]), np.array([[0.1, 0.2, 0.4, 0.8]], "float32"))
    assert abs(float(loss) - 0.325) < 1e-6
    print("JAX_OK")
""")


def test_layers_and_models_under_jax_backend():
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("jax is not installed (pip install jax) — JAX backend test skipped")
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0 and "JAX_OK" in res.stdout, res.stderr[-3000:]
