"""MultiMarginLoss, swap_head, downsampling layers and weight copying."""

import keras
import numpy as np
import pytest

from mer_keras.models import heads as H
from mer_keras.models.shufflenet_v2 import ShuffleNetV2, ShuffleNetV2ViT
from mer_keras.models.mobilevit import MobileViTXXS


def _np_multi_margin(x, y, margin=1.0, p=1):
    """PyTorch nn.MultiMarginLoss (reduction='mean'), hand-written."""
    losses = []
    for xi, yi in zip(x, y):
        s = sum(max(0.0, margin - xi[yi] + xi[i]) ** p for i in range(len(xi)) if i != yi)
        losses.append(s / len(xi))
    return float(np.mean(losses))


def test_multimargin_pytorch_doc_example():
    # PyTorch documentation example: x = [[0.1, 0.2, 0.4, 0.8]], y = [3] -> 0.3250
    loss = H.MultiMarginLoss()(np.array([3]), np.array([[0.1, 0.2, 0.4, 0.8]], "float32"))
    assert float(loss) == pytest.approx(0.325, abs=1e-6)
    # by hand: (1/4) * [(1 - 0.8 + 0.1) + (1 - 0.8 + 0.2) + (1 - 0.8 + 0.4)] = 1.3 / 4


@pytest.mark.parametrize("margin,p", [(1.0, 1), (1.0, 2), (0.5, 1), (2.0, 2)])
def test_multimargin_against_reference(margin, p):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3)).astype("float32") * 2
    y = rng.integers(0, 3, 16)
    expected = _np_multi_margin(x, y, margin, p)
    fn = H.MultiMarginLoss(margin=margin, p=p)
    assert float(fn(y, x)) == pytest.approx(expected, rel=1e-5)
    assert float(fn(y.reshape(-1, 1), x)) == pytest.approx(expected, rel=1e-5)
    onehot = np.eye(3, dtype="float32")[y]
    assert float(fn(onehot, x)) == pytest.approx(expected, rel=1e-5)


def test_multimargin_differs_from_categorical_hinge():
    x = np.array([[0.1, 0.2, 0.4, 0.8], [1.0, -1.0, 0.5, 0.0]], "float32")
    y = np.array([3, 0])
    ours = float(H.MultiMarginLoss()(y, x))
    hinge = float(np.mean(keras.ops.convert_to_numpy(
        keras.losses.categorical_hinge(np.eye(4, dtype="float32")[y], x))))
    # categorical_hinge = mean(max(0, 1 + max_{i!=y} x_i - x_y)) = mean(0.6, 0.5) = 0.55
    assert hinge == pytest.approx(0.55, abs=1e-6)
    assert ours == pytest.approx(_np_multi_margin(x, y), abs=1e-6)
    assert abs(ours - hinge) > 0.1


def test_multimargin_serialises_and_trains():
    fn = H.MultiMarginLoss(margin=0.5, p=2)
    clone = keras.losses.deserialize(keras.losses.serialize(fn))
    assert isinstance(clone, H.MultiMarginLoss) and clone.margin == 0.5 and clone.p == 2
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=H.MultiMarginLoss())
    hist = model.fit(np.ones((8, 4), "float32"), np.arange(8) % 3, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def _small(builder=ShuffleNetV2, **kw):
    return builder(input_shape=(64, 64, 3), **kw)


def test_swap_head_keeps_backbone_and_makes_fresh_head():
    model = _small(classes=3, dropout=0.5)
    before = {l.name: [w.copy() for w in l.get_weights()] for l in model.layers}
    new = H.swap_head(model, classes=5, head="svm", dropout=0.3, l2=1e-3)
    assert new.output.shape == (None, 5)
    pred = new.get_layer("predictions")
    assert pred.activation is keras.activations.linear
    assert pred.kernel.shape == (1024, 5)
    assert pred is not model.get_layer("predictions")
    assert new.get_layer("head_dropout").rate == 0.3
    assert len(new.losses) == 1  # only the new head is regularised
    for layer in new.layers:
        if layer.name in ("predictions", "head_dropout"):
            continue
        for a, b in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    # same backbone features -> same avg_pool output
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
    f_old = keras.Model(model.input, model.get_layer("avg_pool").output)(x)
    f_new = keras.Model(new.input, new.get_layer("avg_pool").output)(x)
    np.testing.assert_allclose(np.asarray(f_old), np.asarray(f_new))


def test_swap_head_on_headless_model():
    base = _small(include_top=False)
    new = H.swap_head(base, classes=4)
    assert new.output.shape == (None, 4)
    assert new.get_layer("avg_pool") is not None


@pytest.mark.parametrize("builder,excluded", [
    (ShuffleNetV2ViT, ("vit_", "predictions", "conv5_act")),
    (MobileViTXXS, ("_mvit_", "conv_1x1_exp", "predictions")),
])
def test_downsampling_layer_names(builder, excluded):
    model = _small(builder)
    names = H.downsampling_layer_names(model)
    assert names
    present = {l.name for l in model.layers}
    assert set(names) <= present
    assert all(model.get_layer(n).weights for n in names)
    assert not any(e in n for n in names for e in excluded)


def test_downsampling_names_shufflenet_cover_backbone():
    model = _small(ShuffleNetV2ViT)
    names = H.downsampling_layer_names(model)
    assert "stem_conv" in names and "conv5_conv" in names
    assert any(n.startswith("stage4_unit4") for n in names)
    assert any(n.startswith("stage2_unit1_branch1") for n in names)
    mvit = H.downsampling_layer_names(_small(MobileViTXXS))
    assert "stem_conv" in mvit and "layer5_mv2_1_project_conv" in mvit


def test_copy_layer_weights():
    src = _small(ShuffleNetV2, classes=3)
    dst = _small(ShuffleNetV2ViT, classes=3, head="svm")
    copied = H.copy_layer_weights(src, dst, H.downsampling_layer_names(dst))
    assert copied == H.downsampling_layer_names(dst)
    for n in copied:
        for a, b in zip(src.get_layer(n).get_weights(), dst.get_layer(n).get_weights()):
            np.testing.assert_array_equal(a, b)
    narrow = _small(ShuffleNetV2, width_multiplier=0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        H.copy_layer_weights(narrow, dst, ["stage2_unit1_branch1_2_conv"])
    with pytest.raises(ValueError, match="missing"):
        H.copy_layer_weights(src, dst, ["vit_after_stage4_proj_in"])


def test_weights_argument(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        _small(weights="imagenet")
    model = _small(classes=3)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    again = _small(classes=3, weights=str(path))
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
