"""Off-TANet attention-map analysis (mer_keras.evaluation.attention): paper Eqs. 13-14, Fig. 5 maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mer_keras.evaluation.attention import (
    AttentionMaps,
    attention_maps,
    figure5_maps,
    hoyer_sparseness,
    plot_attention_maps,
    soft_count,
    sparseness,
)

# ----------------------------------------------------------------------------- Soft_t (Eq. 13)


def test_soft_count_counts_entries_below_the_threshold():
    x = np.array([[0.0, 0.005, 0.01], [0.02, -1.0, 0.0099]])
    assert soft_count(x) == 4  # 0, 0.005, -1, 0.0099; 0.01 itself is not below 0.01
    assert soft_count(x, threshold=0.015) == 5  # and 0.01 now counts; 0.02 does not
    assert soft_count(x, threshold=-2.0) == 0
    assert soft_count(np.full((3, 3), 0.5)) == 0  # a sigmoid-like map: nothing below 0.01


def test_soft_count_of_a_batch_is_per_map():
    batch = np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.array([[0.0, 1.0], [1.0, 0.001]])])
    np.testing.assert_array_equal(soft_count(batch), [4, 0, 2])
    assert isinstance(soft_count(np.zeros((2, 2))), int)


# ----------------------------------------------------------------------------- Hoyer (Eq. 14)


def test_hoyer_of_uniform_and_one_hot_maps():
    assert hoyer_sparseness(np.full((14, 14), 0.3)) == pytest.approx(0.0, abs=1e-12)
    one_hot = np.zeros((14, 14))
    one_hot[3, 5] = 0.7
    assert hoyer_sparseness(one_hot) == pytest.approx(1.0)
    assert hoyer_sparseness(-one_hot) == pytest.approx(1.0)  # |x_i| in Eq. 14


def test_hoyer_hand_computed_value_and_batch():
    # n = 4, sum|x| = 2, sqrt(sum x^2) = sqrt(2): (2 - sqrt(2)) / (2 - 1)
    expected = 2.0 - math.sqrt(2.0)
    assert hoyer_sparseness(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(expected)
    batch = np.stack([np.array([[1.0, 1.0], [0.0, 0.0]]), np.ones((2, 2)), np.zeros((2, 2))])
    values = hoyer_sparseness(batch)
    assert values.shape == (3,)
    assert values[0] == pytest.approx(expected) and values[1] == pytest.approx(0.0)
    assert np.isnan(values[2])  # an all-zero map: 0/0, undefined
    both = sparseness(batch[:2])
    np.testing.assert_array_equal(both["soft"], [2, 0])
    np.testing.assert_allclose(both["hoyer"], values[:2])


@pytest.mark.parametrize("bad, error", [
    (np.array([]), ValueError),                       # empty
    (np.array(0.5), ValueError),                      # a scalar
    (np.array([[0.1, np.nan]]), ValueError),          # NaN
    (np.array([[0.1, np.inf]]), ValueError),          # inf
    (np.array([["a", "b"]]), TypeError),              # not numeric
])
def test_bad_maps_are_refused(bad, error):
    with pytest.raises(error):
        soft_count(bad)
    with pytest.raises(error):
        hoyer_sparseness(bad)


def test_hoyer_needs_two_entries_and_soft_a_finite_threshold():
    with pytest.raises(ValueError, match="at least 2"):
        hoyer_sparseness(np.array([[0.4]]))
    with pytest.raises(ValueError, match="threshold"):
        soft_count(np.zeros((2, 2)), threshold=float("nan"))
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        sparseness(np.zeros((2, 2)))


# ----------------------------------------------------------------------------- maps of a model


@pytest.fixture(scope="module")
def model():
    from mer_keras.models.off_tanet import OffTANet

    return OffTANet(input_shape=(32, 32, 3))


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)


def test_attention_maps_shapes_and_ranges(model, batch):
    maps = attention_maps(model, batch, batch_size=2)  # two batches
    assert isinstance(maps, AttentionMaps)
    assert maps.spatial.shape == (3, 4, 4) and maps.self_attention.shape == (3, 4, 4, 28)  # 32 px / 8, 28 channels
    assert ((maps.spatial > 0) & (maps.spatial < 1)).all()  # sigmoid (Eq. 5)
    assert (maps.self_attention >= 0).all()
    np.testing.assert_allclose(maps.self_attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)  # one softmax per channel (Eq. 7)


def test_self_attention_maps_are_the_layers_weights(model, batch):
    """The MHSA layer's output is exactly maps * v (Eq. 7): the recomputed maps are the ones the model used."""
    import keras

    layer = model.get_layer("eres_sa")
    probe = keras.Model(model.input, [layer.input, layer.output])
    features, output = (keras.ops.convert_to_numpy(t) for t in probe(batch))
    v = np.einsum("bhwi,nid->bhwnd", features, keras.ops.convert_to_numpy(layer.v_kernel))
    v = (v + keras.ops.convert_to_numpy(layer.v_bias)).reshape(*features.shape[:3], -1)
    maps = attention_maps(model, batch)
    np.testing.assert_allclose(maps.self_attention * v, output, atol=1e-5)
    spatial = keras.Model(model.input, model.get_layer("eres_spa_sigmoid").output)(batch)
    np.testing.assert_allclose(maps.spatial, keras.ops.convert_to_numpy(spatial)[..., 0], rtol=1e-6)


def test_attention_maps_refuse_other_models_and_inputs(model, batch):
    from mer_keras.models.off_tanet import OffTANet

    with pytest.raises(ValueError, match="triplet-attention"):
        attention_maps(OffTANet(input_shape=(32, 32, 3), block="cbam"), batch)
    with pytest.raises(ValueError, match="batch shaped"):
        attention_maps(model, batch[..., :2])
    with pytest.raises(ValueError, match="NaN"):
        attention_maps(model, np.full((1, 32, 32, 3), np.nan, np.float32))


def test_figure5_maps_and_plot(model, batch, tmp_path):
    maps = attention_maps(model, batch)
    spatial, self_map = figure5_maps(maps, 32)
    assert spatial.shape == self_map.shape == (3, 32, 32)
    assert ((spatial > 0) & (spatial < 1)).all() and soft_count(spatial[0]) == 0
    assert self_map.min() >= 0 and self_map.max() <= 1 + 1e-6
    for m in self_map:  # the product of two min-max maps reaches 0 where either is minimal
        assert m.min() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same clips"):
        figure5_maps(AttentionMaps(maps.spatial, maps.self_attention[:2]), 32)

    apex = (np.random.default_rng(1).random((32, 32)) * 255).astype(np.uint8)
    flow = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    fig = plot_attention_maps(apex, flow, spatial[0], self_map[0], title="clip")
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    fig.savefig(tmp_path / "fig5.png")
    assert (tmp_path / "fig5.png").stat().st_size > 1000
    assert len(plot_attention_maps(None, flow, spatial[0], self_map[0]).axes) >= 3
    with pytest.raises(ValueError, match="one shape"):
        plot_attention_maps(apex, flow, spatial[0], self_map[0][:8])
