"""Backbone builders: parameter anchors (reference/architectures.md), switches, save/load."""

import keras
import numpy as np
import pytest

from mer_keras.models import registry
from mer_keras.models.summary import count_flops, count_trainable, model_summary_table


def _tc(model):
    return count_trainable(model)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("shufflenet_v2", dict(classes=1000), 2_278_604),
    ("shufflenet_v2", dict(classes=3), 1_256_679),
    ("mobilevit_s", dict(classes=1000), 5_578_632),
    ("mobilevit_xs", dict(classes=1000), 2_317_848),
    ("mobilevit_xxs", dict(classes=1000), 1_272_024),
    ("resnet18", dict(classes=1000), 11_689_512),
    ("deit_tiny", dict(classes=1000), 5_717_416),
    ("deit_small", dict(classes=1000), 22_050_664),
    ("deit_base", dict(classes=1000), 86_567_656),
    ("mobilenet_v2", dict(classes=1000), 3_504_872),
    ("resnet50", dict(classes=1000), 25_583_592),
])
def test_param_anchor(name, kwargs, expected):
    model = registry.get(name)(**kwargs)
    assert _tc(model) == expected
    keras.backend.clear_session()


@pytest.mark.parametrize("name,app", [("mobilenet_v2", "MobileNetV2"), ("resnet50", "ResNet50")])
def test_applications_equal_keras_applications(name, app):
    ours = registry.get(name)(classes=1000)
    ref = getattr(keras.applications, app)(weights=None)
    assert _tc(ours) == _tc(ref)
    assert ours.count_params() == ref.count_params()
    keras.backend.clear_session()


def test_shufflenet_vit_close_to_paper():
    n = _tc(registry.get("shufflenet_v2_vit")(classes=3))
    assert abs(n - 1_530_000) / 1_530_000 < 0.03, n
    assert n == 1_535_955


@pytest.mark.parametrize("size,patches", [(224, (2, 1)), (64, (2, 1)), (128, (2, 2))])
def test_shufflenet_vit_patch_never_leaves_one_token(size, patches):
    """2x2 patches where the map holds several (224 px: 14x14 then 7x7, odd so 1x1); a 2x2 map gets 1x1 patches."""
    model = registry.get("shufflenet_v2_vit")(classes=3, input_shape=(size, size, 3))
    got = tuple(model.get_layer(f"vit_{where}_stage4_transformer1").patch_size for where in ("before", "after"))
    assert got == patches
    n_params = model.count_params()
    keras.backend.clear_session()
    if size == 64:  # the patch only regroups tokens: no weight depends on it
        assert n_params == registry.get("shufflenet_v2_vit")(classes=3, input_shape=(224, 224, 3)).count_params()


def test_shufflenet_cbam_count():
    assert _tc(registry.get("shufflenet_v2_cbam")(classes=3)) == 1_256_679 + 27_405 + 99


@pytest.mark.parametrize("width,channels", [(0.5, 192), (1.5, 704), (2.0, 976)])
def test_shufflenet_widths(width, channels):
    model = registry.get("shufflenet_v2")(input_shape=(64, 64, 3), width_multiplier=width,
                                          include_top=False)
    assert model.get_layer("stage4_unit4_shuffle").output.shape[-1] == channels
    assert model.output.shape[-1] == (2048 if width == 2.0 else 1024)


@pytest.mark.parametrize("name,size", [
    ("shufflenet_v2_cbam", 64), ("shufflenet_v2_vit", 96), ("mobilevit_xxs", 128),
    ("shufflenet_v2", 64), ("mobilevit_xs", 64), ("mobilevit_s", 64), ("mobilenet_v2", 64),
    ("mobilenet_v3_small", 64), ("mobilenet_v3_large", 64), ("resnet18", 64), ("resnet50", 64),
    ("densenet121", 64), ("deit_tiny", 32), ("deit_small", 32),
])
def test_save_load_roundtrip(name, size, tmp_path):
    model = registry.get(name)(input_shape=(size, size, 3), classes=3, l2=1e-4, dropout=0.5,
                               head="svm")
    x = np.random.default_rng(0).random((2, size, size, 3)).astype("float32")
    y = np.asarray(model(x, training=False))
    path = tmp_path / "x.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, rtol=1e-5, atol=1e-5)
    assert len(loaded.losses) == len(model.losses) > 0


@pytest.mark.parametrize("name", ["shufflenet_v2", "mobilevit_xxs", "resnet18",
                                  "mobilenet_v2", "mobilenet_v3_small"])
def test_paper_switches(name):
    size = 64
    b = registry.get(name)
    plain = b(input_shape=(size, size, 3))
    model = b(input_shape=(size, size, 3), l2=0.2, dropout=0.5, activation="leaky_relu",
              head="svm", classes=4)
    assert model.output.shape == (None, 4)
    assert model.get_layer("predictions").activation is keras.activations.linear
    assert plain.get_layer("predictions").activation is keras.activations.softmax
    assert model.get_layer("head_dropout").rate == 0.5
    flat = [l for l in model.layers]
    for l in list(flat):
        if isinstance(l, keras.Model):
            flat += l.layers
    assert any(isinstance(l, keras.layers.LeakyReLU) for l in flat)
    kernels = [l for l in flat if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]
    assert len(model.losses) >= len(kernels) > 0
    assert not plain.losses


def test_deit_switches_and_pooling():
    b = registry.get("deit_tiny")
    model = b(input_shape=(32, 32, 3), head="svm", l2=1e-3, classes=2)
    assert model.output.shape == (None, 2) and model.losses
    assert b(input_shape=(32, 32, 3), include_top=False).output.shape == (None, 5, 192)
    assert b(input_shape=(32, 32, 3), include_top=False, pooling="avg").output.shape == (None, 192)


def test_input_tensor_and_bad_arguments():
    inp = keras.Input((96, 96, 3))
    for name in ["shufflenet_v2", "mobilenet_v2", "resnet18"]:
        model = registry.get(name)(input_tensor=inp)
        assert model.inputs[0] is inp and model.output.shape == (None, 3)
    with pytest.raises(ValueError, match="never downloads"):
        registry.get("resnet50")(weights="imagenet")
    with pytest.raises(ValueError):
        registry.get("shufflenet_v2")(head="hinge")
    with pytest.raises(ValueError):
        registry.get("shufflenet_v2")(activation="tanh")


def test_layer_names_are_stable():
    a = [l.name for l in registry.get("mobilenet_v3_small")(input_shape=(64, 64, 3)).layers]
    b = [l.name for l in registry.get("mobilenet_v3_small")(input_shape=(64, 64, 3)).layers]
    assert a == b


def test_flops_and_summary_table():
    # ResNet18 at 224: 1.814 GMACs (torchvision / published)
    assert count_flops(registry.get("resnet18")(classes=1000)) == pytest.approx(3.628e9, rel=5e-3)
    df = model_summary_table(["shufflenet_v2", "shufflenet_v2_vit"], classes=3)
    assert list(df.columns) == ["name", "input_size", "trainable_params", "macs", "flops"]
    assert df.trainable_params.tolist() == [1_256_679, 1_535_955]
    assert (df.flops == 2 * df.macs).all()
    assert df.flops[1] > df.flops[0] > 2.8e8


def test_deit_variants_advertise_deit_keywords():
    """The DeiT size builders expose DeiT's keyword arguments, so the two-stage recipe can drop
    the ``activation=`` that DeiT does not take instead of crashing."""
    import inspect

    from mer_keras.models.deit import DeiTBase, DeiTTiny
    from mer_keras.training.two_stage import _builder_kwargs

    params = inspect.signature(DeiTTiny).parameters
    assert "variant" not in params and params["name"].default == "deit_tiny" and "token_dropout" in params
    assert inspect.signature(DeiTBase).parameters["name"].default == "deit_base"
    kept, dropped = _builder_kwargs(DeiTTiny, {"activation": "leaky_relu", "l2": 0.1, "dropout": 0.5})
    assert kept == {"l2": 0.1, "dropout": 0.5} and dropped == {"activation": "leaky_relu"}
