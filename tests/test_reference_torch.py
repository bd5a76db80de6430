"""The PyTorch reference networks and LOSO loop of mer_keras.training.reference_torch."""

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mer_keras.training.reference_torch import (  # noqa: E402
    OFFICIAL_SETTINGS,
    build_reference,
    reference_loso,
    torch_available,
)

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
OFFICIAL = {"ststnet": "ststnet_official_fold006.npz", "off_tanet": "off_tanet_official_loso1.npz"}


def _reference(name: str) -> Path:
    path = REFERENCE_DIR / name
    if not path.exists():
        pytest.skip(f"reference file {name} not found in {REFERENCE_DIR} (the shared/ folder beside the repo)")
    return path


def test_torch_available():
    assert torch_available()


@pytest.mark.parametrize(("model", "expected"), [("ststnet", 1683), ("off_tanet", 59403)])
def test_parameter_counts(model, expected):
    net = build_reference(model, n_classes=3)
    assert isinstance(net, torch.nn.Module)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == expected


def test_unknown_model():
    with pytest.raises(ValueError, match="model must be one of"):
        build_reference("resnet")


@pytest.mark.parametrize("model", sorted(OFFICIAL))
def test_official_weights_reproduce_official_logits(model):
    with np.load(_reference(OFFICIAL[model])) as data:
        state = {k[len("weight/"):]: data[k] for k in data.files if k.startswith("weight/")}
        x, expected = data["input_nchw"], data["expected_logits"]
    net = build_reference(model)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == {k: v.shape for k, v in state.items()}
    # strict: every key on both sides (num_batches_tracked is filled in by BatchNorm when absent)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()  # already NCHW (STSTNet: 0..255, cv2.imread order)
    diff = float(np.abs(logits - expected).max())
    assert diff < 1e-4, diff
    assert (logits.argmax(-1) == expected.argmax(-1)).all()


def test_official_settings():
    assert set(OFFICIAL_SETTINGS) == {"ststnet", "off_tanet"}
    assert OFFICIAL_SETTINGS["ststnet"] == dict(epochs=800, batch_size=256, lr=5e-5, lr_step=None, lr_gamma=1.0,
                                                shuffle=False)
    assert OFFICIAL_SETTINGS["off_tanet"] == dict(epochs=201, batch_size=64, lr=1e-3, lr_step=60, lr_gamma=0.3,
                                                  shuffle=True)


def _tiny(n=24, n_subjects=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 28, 28, 3)).astype(np.float32)
    y = rng.integers(0, 3, size=n)
    subjects = np.array([f"s{i % n_subjects:02d}" for i in range(n)])
    return x, y, subjects


@pytest.mark.parametrize("shuffle", [True, False])
def test_reference_loso_tiny(shuffle):
    x, y, subjects = _tiny()
    out = reference_loso(x, y, subjects, model="ststnet", epochs=2, batch_size=5, lr=1e-3, lr_step=1, lr_gamma=0.5,
                         shuffle=shuffle, seed=1, threads=1)
    assert [f["subject"] for f in out["folds"]] == ["s00", "s01", "s02"]
    for fold in out["folds"]:
        test = subjects == fold["subject"]
        assert fold["n_test"] == int(test.sum()) == len(fold["y_pred"]) == len(fold["y_true"])
        assert fold["n_train"] == int((~test).sum()) == len(x) - fold["n_test"]
        assert fold["y_true"] == [int(v) for v in y[test]]  # the test subject only: never in training
        assert set(fold["y_pred"]) <= {0, 1, 2}
        assert fold["train_s"] > 0 and fold["ms_per_epoch"] == pytest.approx(1000 * fold["train_s"] / 2)
    assert out["total_s"] >= sum(f["train_s"] for f in out["folds"])
    expected_rate = sum(f["n_train"] for f in out["folds"]) * 2 / sum(f["train_s"] for f in out["folds"])
    assert out["samples_per_s"] == pytest.approx(expected_rate)
    assert out["ms_per_epoch_median"] > 0
    assert out["device"] == "cpu" and out["torch_version"] == torch.__version__ and out["threads"] == 1


def test_reference_loso_folds_limit_and_determinism():
    x, y, subjects = _tiny()
    kwargs = dict(model="ststnet", epochs=2, batch_size=8, lr=1e-3, seed=3, folds=2)
    a = reference_loso(x, y, subjects, **kwargs)
    b = reference_loso(x, y, subjects, **kwargs)
    assert len(a["folds"]) == 2
    assert [f["y_pred"] for f in a["folds"]] == [f["y_pred"] for f in b["folds"]]


def test_reference_loso_rejects_wrong_input_size():
    x, y, subjects = _tiny()
    with pytest.raises(ValueError, match="off_tanet expects"):
        reference_loso(x, y, subjects, model="off_tanet", epochs=1, batch_size=8, lr=1e-3)
