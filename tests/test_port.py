"""PyTorch -> Keras weight porting: official checkpoints reproduce the official logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mer_keras.models.arfnet import ARFNet
from mer_keras.models.off_tanet import TORCH_UNUSED, OffTANet
from mer_keras.models.port import PortReport, load_torch_state_dict, read_state_dict, to_torch_state_dict
from mer_keras.models.ststnet import STSTNet

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def _reference(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference file {name} not found in {REFERENCE_DIR} (the shared/ folder beside the repo)")
    return path


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize(
    "filename, builder",
    [
        ("off_tanet_official_loso1.npz", lambda: OffTANet(classifier_activation=None)),
        ("ststnet_official_fold006.npz", lambda: STSTNet(classifier_activation=None)),
    ],
    ids=["off_tanet", "ststnet"],
)
def test_official_weights_reproduce_official_logits(filename, builder):
    path = _reference(filename)
    data = np.load(path)
    model = builder()
    report = load_torch_state_dict(model, path)
    assert isinstance(report, PortReport) and report.complete
    logits = np.asarray(model(_nhwc(data["input_nchw"]), training=False))
    diff = float(np.abs(logits - data["expected_logits"]).max())
    print(f"{filename}: max |keras - official| = {diff:.2e}")
    assert diff < 1e-4
    assert (logits.argmax(-1) == data["expected_logits"].argmax(-1)).all()


def test_off_tanet_report_and_mapping_input():
    path = _reference("off_tanet_official_loso1.npz")
    state = read_state_dict(path)
    assert "conv1.0.weight" in state and "input_nchw" not in state
    model = OffTANet()
    report = load_torch_state_dict(model, dict(state))
    assert report.name_map == "off_tanet"
    assert len(report.assigned) == len(model.weights)  # every variable, incl. BN moving stats
    assert not report.unused and not report.missing
    # heads are stacked in order: head 2's query projection sits at index 2
    w = state["eres.sa.sa_blocks.2.w_q.weight"][:, :, 0, 0].T
    np.testing.assert_array_equal(np.asarray(model.get_layer("eres_sa").q_kernel.numpy())[2], w)
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("conv1_0").kernel.numpy()), np.transpose(state["conv1.0.weight"], (2, 3, 1, 0))
    )


class _FakeTensor:
    """Duck-typed stand-in for a torch.Tensor (torch is not a dependency)."""

    def __init__(self, array):
        self._array = array

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._array


def test_torch_tensor_like_values_and_num_batches_tracked():
    path = _reference("ststnet_official_fold006.npz")
    state = {k: _FakeTensor(v) for k, v in read_state_dict(path).items()}
    state["bn1.num_batches_tracked"] = _FakeTensor(np.array(7))
    model = STSTNet(classifier_activation=None)
    report = load_torch_state_dict(model, state)
    assert report.skipped == ["bn1.num_batches_tracked"]
    data = np.load(path)
    logits = np.asarray(model(_nhwc(data["input_nchw"]), training=False))
    assert np.abs(logits - data["expected_logits"]).max() < 1e-4


def _ststnet_state():
    return read_state_dict(_reference("ststnet_official_fold006.npz"))


def test_strict_missing_tensor_raises_keyerror_and_leaves_weights():
    state = _ststnet_state()
    del state["bn2.running_var"]
    model = STSTNet()
    before = [np.asarray(w.numpy()).copy() for w in model.weights]
    with pytest.raises(KeyError, match=r"bn2\.running_var"):
        load_torch_state_dict(model, state)
    for b, w in zip(before, model.weights):
        np.testing.assert_array_equal(b, np.asarray(w.numpy()))
    report = load_torch_state_dict(model, state, strict=False)
    assert len(report.missing) == 1 and "bn2" in report.missing[0]
    np.testing.assert_array_equal(np.asarray(model.get_layer("bn2").gamma.numpy()), state["bn2.weight"])


def test_strict_unused_tensor_raises_keyerror():
    state = _ststnet_state()
    state["extra.weight"] = np.zeros((3,), "float32")
    with pytest.raises(KeyError, match=r"extra\.weight"):
        load_torch_state_dict(STSTNet(), state)
    report = load_torch_state_dict(STSTNet(), state, strict=False)
    assert report.unused == ["extra.weight"]
    assert load_torch_state_dict(STSTNet(), state, ignore=("extra.",)).skipped == ["extra.weight"]


def test_shape_mismatch_names_both_sides():
    state = _ststnet_state()
    with pytest.raises(ValueError, match=r"conv3.*\(3, 3, 3, 8\).*conv3\.weight.*\(3, 3, 3, 5\)"):
        load_torch_state_dict(STSTNet(), {**state, "conv3.weight": state["conv2.weight"]})
    # a model of a different width than the checkpoint
    with pytest.raises(ValueError, match="predictions"):
        load_torch_state_dict(STSTNet(classes=5), state)


def test_include_top_false_needs_strict_false():
    path = _reference("off_tanet_official_loso1.npz")
    model = OffTANet(include_top=False)
    with pytest.raises(KeyError, match=r"dense\.0\.weight"):
        load_torch_state_dict(model, path)
    report = load_torch_state_dict(model, path, strict=False)
    assert sorted(report.unused) == sorted(f"dense.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias"))


@pytest.mark.parametrize(
    "builder",
    [
        lambda: ARFNet(classifier_activation=None),
        lambda: ARFNet(self_attention=False, classifier_activation=None),
        lambda: OffTANet(block="bottleneck_transformer", classifier_activation=None),
        lambda: OffTANet(block="cbam", classifier_activation=None),
        lambda: OffTANet(block="residual", classifier_activation=None),
        lambda: STSTNet(variant="off_tanet", classifier_activation=None),
    ],
    ids=["arfnet", "arfnet_res", "off_tanet_bot", "off_tanet_cbam", "off_tanet_res", "ststnet_off_tanet"],
)
def test_export_then_load_roundtrip(builder):
    """Name tables without an official checkpoint here: export in PyTorch layout, reload."""
    rng = np.random.default_rng(0)
    source = builder()
    source.set_weights([rng.uniform(0.5, 1.5, size=w.shape).astype("float32") if "variance" in w.path
                        else rng.normal(scale=0.3, size=w.shape).astype("float32") for w in source.weights])
    state = to_torch_state_dict(source)
    assert all(v.ndim in (1, 2, 4) for v in state.values())
    target = builder()
    report = load_torch_state_dict(target, state)
    assert report.complete
    x = rng.normal(size=(2, *source.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(np.asarray(target(x)), np.asarray(source(x)), rtol=1e-6, atol=1e-6)


def test_arfnet_official_key_layout():
    state = to_torch_state_dict(ARFNet())
    expected = {"sa.sa.0.sa_blocks.3.w_v.weight": (2, 28, 1, 1), "sa.sa.1.sa_blocks.0.w_q.weight": (2, 8, 1, 1),
                "res1.conv.3.weight": (8, 8, 3, 3), "res1.botneck.weight": (18, 8, 1, 1),
                "sa.botneck.weight": (8, 28, 1, 1), "dense.6.weight": (3, 64)}
    for key, shape in expected.items():
        assert state[key].shape == shape


def test_self_attention_variant_ignores_unused_conv2():
    """The official 'sa' variant builds eres.conv2 but never uses it: port with ``ignore``."""
    source = OffTANet(block="self_attention")
    state = to_torch_state_dict(source)
    state["eres.conv2.0.weight"] = np.zeros((8, 28, 3, 3), "float32")
    state["eres.conv2.0.bias"] = np.zeros((8,), "float32")
    with pytest.raises(KeyError, match="eres.conv2"):
        load_torch_state_dict(OffTANet(block="self_attention"), state)
    report = load_torch_state_dict(OffTANet(block="self_attention"), state, ignore=TORCH_UNUSED["self_attention"])
    assert sorted(report.skipped) == ["eres.conv2.0.bias", "eres.conv2.0.weight"]
