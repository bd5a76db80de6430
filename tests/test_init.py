"""PyTorch's default initialisation for recipes that reproduce official PyTorch code, and the
official batch order (shuffled or not)."""

import numpy as np
import pytest

from mer_keras.models import get
from mer_keras.models.init import pytorch_default_init, torch_fan_in
from mer_keras.training.engine import build_model, epoch_order
from mer_keras.training.recipes import get_recipe

BUILDS = {
    "ststnet": dict(input_shape=(28, 28, 3), variant="original"),
    "off_tanet": dict(input_shape=(112, 112, 3), block="triplet"),
    "arfnet": dict(input_shape=(112, 112, 3)),
}


def _keras(name, seed=0):
    model = get(name)(classes=3, **BUILDS[name])
    return model, pytorch_default_init(model, seed=seed)


def _layers(model, names):
    return [layer for layer in model._flatten_layers() if layer.name in names]


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_weight_inside_the_pytorch_bound(name):
    model, report = _keras(name)
    assert report["kept"] == []  # every trainable layer of these networks is one PyTorch initialises
    assert report["reinitialised"]
    for layer in _layers(model, report["reinitialised"]):
        bound = 1.0 / np.sqrt(torch_fan_in(layer))
        for weight in layer.trainable_weights:
            values = np.asarray(weight)
            assert np.abs(values).max() <= bound + 1e-7, weight.path
            if values.size >= 400:  # uniform on [-b, b]: std b / sqrt(3), spread over the whole range
                assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.15), weight.path
                assert np.abs(values).max() > 0.9 * bound, weight.path
            if "bias" in weight.path:
                assert np.any(values != 0), weight.path  # Keras' builders start biases at zero


def test_seeded_and_different_from_keras_defaults():
    a, _ = _keras("ststnet", seed=3)
    b, _ = _keras("ststnet", seed=3)
    c, _ = _keras("ststnet", seed=4)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
        if wa.path.endswith("kernel"):
            assert not np.array_equal(np.asarray(wa), np.asarray(wc))
    plain = get("ststnet")(classes=3, **BUILDS["ststnet"])
    kernel = {w.path: np.asarray(w) for w in plain.weights}["predictions/kernel"]
    assert np.abs(kernel).max() > 1.0 / np.sqrt(400)  # glorot's bound (0.12) is wider than PyTorch's (0.05)


@pytest.mark.parametrize("name", ["ststnet", "off_tanet"])
def test_same_bounds_as_the_pytorch_reference_network(name):
    torch = pytest.importorskip("torch")
    from mer_keras.training.reference_torch import build_reference

    torch.manual_seed(0)
    net = build_reference(name, n_classes=3)
    expected = {}  # bound -> parameters drawn with it (the Keras layer packs the official per-head convs)
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            bound = 1.0 / np.sqrt(module.weight[0].numel())
            for param in (module.weight, module.bias):
                if param is not None:
                    expected[round(bound, 6)] = expected.get(round(bound, 6), 0) + param.numel()
                    assert float(param.detach().abs().max()) <= bound + 1e-7
    model, report = _keras(name)
    got = {}
    for layer in _layers(model, report["reinitialised"]):
        bound = round(1.0 / np.sqrt(torch_fan_in(layer)), 6)
        got[bound] = got.get(bound, 0) + sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert got == expected


def test_recipes_state_the_official_loop():
    ststnet = get_recipe("ststnet")
    assert (ststnet.init, ststnet.shuffle) == ("pytorch", False)
    for name in ("off_tanet", "arfnet"):
        recipe = get_recipe(name)
        assert (recipe.init, recipe.shuffle) == ("pytorch", True)
        assert recipe.to_dict()["init"] == "pytorch" and "shuffle" not in recipe.to_dict()
    for name in ("shufflenet_svm", "mobilevit_transfer", "hoof_svm"):
        config = get_recipe(name).config_dict()  # defaults stay out of the hash of unchanged recipes
        assert "init" not in config and "shuffle" not in config
    with pytest.raises(ValueError, match="init must be one of"):
        ststnet.replace(init="he")
    with pytest.raises(ValueError, match="shuffle must be True or False"):
        ststnet.replace(shuffle="no")


def test_build_model_applies_the_recipe_init():
    import random

    recipe = get_recipe("ststnet")
    random.seed(5)
    a = build_model(recipe, (28, 28, 3), 3)
    random.seed(5)
    b = build_model(recipe, (28, 28, 3), 3)
    bias = {w.path: np.asarray(w) for w in a.weights}["conv/bias"]
    assert np.any(bias != 0) and np.abs(bias).max() <= 1 / np.sqrt(27)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    keras_init = build_model(recipe.replace(init="keras"), (28, 28, 3), 3)
    assert not np.any({w.path: np.asarray(w) for w in keras_init.weights}["conv/bias"])


def test_epoch_order():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(epoch_order(rng, 5, shuffle=False), np.arange(5))
    state = rng.bit_generator.state
    epoch_order(rng, 5, shuffle=False)
    assert rng.bit_generator.state == state  # no draw: the fold's other random streams are unchanged
    first, second = epoch_order(rng, 50), epoch_order(rng, 50)
    assert sorted(first) == list(range(50)) and not np.array_equal(first, second)
