"""MobileViT macro-to-micro transfer recipe (``trainer="transfer"``, :mod:`mer_keras.training.transfer`).

Synthetic data: the MobileViT micro composite (apex frames, 6 subjects, 18 clips) and macro
composite (CK+, Oulu-CASIA, JAFFE single images, MUG; 8 subjects, 16 clips), prepared once
per session with the ``mobilevit_apex`` preset at 64 px (shared by the xdist workers), and
MobileViT-XXS with one or two epochs: CPU-sized, not paper settings.
"""

import dataclasses
import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

from mer_keras.training import LeakageError, LOSODataset, Recipe, fold_name, get_recipe, run_loso
from mer_keras.training import transfer as T
from mer_keras.training.engine import resolve_recipe as _resolve_recipe
from mer_keras.training.recipes import (GRID_KEYS, ORDER_FIELDS, QUICK_GRID_WEIGHT_DECAY, TRANSFER_FIELDS,
                                       TWO_STAGE_FIELDS)

SIZE = 64  # MobileViT needs a multiple of 64
SHAPE = (SIZE, SIZE, 1)

# MobileViT's last transformer attends over one patch position at 64 px (warning is expected there)
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis -1")


def small(epochs=1, **changes):
    """CPU-sized variant: MobileViT-XXS at 64 px, ``epochs`` epochs in both stages, a two-trial grid."""
    return get_recipe("mobilevit_transfer").quick(epochs).replace(**{"backbone": "mobilevit_xxs", "input_size": SIZE,
                                                                      **changes})


@pytest.fixture(scope="session")
def caches(tmp_path_factory):
    """``(micro_cache, macro_cache)`` written once per session (xdist workers share them under a lock)."""
    from mer_keras.data import mobilevit_macro, mobilevit_micro
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "transfer_caches"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "complete").is_file():
            config = PreprocessConfig.preset("mobilevit_apex", size=SIZE)
            small_frames = dict(subjects_per_dataset=2, n_frames=5, frame_size=(320, 240))
            micro = write_composite("mobilevit_micro", root / "micro", clips_per_subject=3, seed=11, **small_frames)
            macro = write_composite("mobilevit_macro", root / "macro", clips_per_subject=2, seed=12, **small_frames)
            m = mobilevit_micro(**micro, apex_only=True)
            M = mobilevit_macro(**macro)
            assert prepare(m[m["label_id"] >= 0], root / "micro_cache", config, workers=1, progress=False).skipped.empty
            assert prepare(M[M["label_id"] >= 0], root / "macro_cache", config, workers=1, progress=False).skipped.empty
            (root / "complete").write_text("ok")
    return root / "micro_cache", root / "macro_cache"


@pytest.fixture(scope="module")
def micro(caches):
    return LOSODataset.from_cache(caches[0], input="apex")


# ----------------------------------------------------------------------------- run_loso (first: the longest test)


def test_run_loso_end_to_end_then_resume_reuses_stage1(caches, micro, tmp_path, monkeypatch):
    """The whole recipe through run_loso, then a resumed run after a kill that left stage 1 stored.

    Backbone ResNet18 (a Table 2 ablation backbone; about half the CPU time of MobileViT-XXS
    here): the MobileViT-specific reload and freezing are tested below on the model itself.
    """
    data = {"micro": caches[0], "macro": caches[1]}
    recipe = small(epochs=1, backbone="resnet18")
    first = micro.subject_list()[0]
    out = tmp_path / "run"
    report = run_loso(data, recipe, out, subjects=[first], progress=False)
    assert 0.0 <= report["uf1"] <= 1.0 and report["n_folds"] == 1
    assert report["n_clips"] == int((micro.subjects == first).sum())
    fold_dir = out / "folds" / fold_name(first)
    extra = json.loads((fold_dir / "done.json").read_text())["extra"]
    assert extra["stage1"]["source"] == "trained"
    key = extra["stage1"]["key"]
    assert (out / "stage1" / key / "stage1.json").is_file() and (out / "stage1" / key / "weights.weights.h5").is_file()
    assert report.config["data"]["macro"]["n_samples"] == 16 and report.config["recipe"]["trainer"] == "transfer"
    assert len(extra["reloaded_layers"]) > 20 and len(extra["unfreeze_groups"]) == 5

    # the grid search: every trial trained and was scored on training subjects only, whole subjects each side
    trials = json.loads((fold_dir / "history.json").read_text())["grid"]
    assert sorted(t["values"]["weight_decay"] for t in trials) == list(QUICK_GRID_WEIGHT_DECAY)
    others = set(micro.subject_list()) - {first}
    for t in trials:
        assert first not in t["fit_subjects"] + t["val_subjects"]
        assert set(t["fit_subjects"]) | set(t["val_subjects"]) == others
        assert not set(t["fit_subjects"]) & set(t["val_subjects"]) and t["val_subjects"]
    assert extra["grid_best"] in [t["values"] for t in trials]
    assert extra["values"]["weight_decay"] == extra["grid_best"]["weight_decay"]
    assert not list(out.rglob("trial.json")) and not (Path.cwd() / "grid").exists()  # tuner files were temporary
    predictions = (fold_dir / "predictions.csv").read_text()

    # a run killed after stage 1 was stored: the fold is redone, stage 1 is loaded, never retrained
    (fold_dir / "done.json").unlink()

    def no_retraining(*args, **kwargs):
        raise AssertionError("stage 1 was retrained")

    monkeypatch.setattr(T, "pretrain_macro", no_retraining)
    again = run_loso(data, recipe, out, subjects=[first], progress=False)
    assert again.config["run"]["trained_folds"] == [fold_name(first)]
    extra2 = json.loads((fold_dir / "done.json").read_text())["extra"]
    assert extra2["stage1"]["source"] == "disk" and extra2["stage1"]["key"] == key
    assert (fold_dir / "predictions.csv").read_text() == predictions  # the resumed fold ends with the same numbers
    assert again["uf1"] == report["uf1"]


# ----------------------------------------------------------------------------- recipe


def test_recipe_holds_the_paper_values_and_switches():
    from mer_keras import models

    r = get_recipe("mobilevit_transfer")
    assert "mobilevit_s" in models.available()
    assert (r.trainer, r.model, r.backbone, r.head, r.loss, r.input, r.input_size) == (
        "transfer", "mobilevit_s", "mobilevit_s", "svm", "multi_margin", "apex", (256, 256, 3))
    assert (r.optimizer, r.lr, r.batch_size) == ("adam", 0.007, 64)
    assert (r.pretrain, r.pretrain_optimizer, r.pretrain_optimizer_kwargs, r.pretrain_lr, r.pretrain_batch_size,
            r.pretrain_epochs) == (True, "sgd", {"momentum": 0.9}, 0.01, 32, 100)
    assert r.model_kwargs == {"l2": 0.01, "dropout": 0.5} and (r.jitter_prob, r.jitter_max) == (0.3, 20)
    assert set(r.grid) == set(GRID_KEYS) and min(r.grid["weight_decay"]) == 1e-4 and max(r.grid["weight_decay"]) == 0.1
    assert 64 in r.grid["batch_size"] and 0.007 in r.grid["lr"] and 0.01 in r.grid["weight_decay"]
    assert any("Open choices (gradual unfreezing" in n for n in r.notes)
    # ablation switches (Table 2) keep the paired fields consistent
    assert (r.replace(head="softmax").head, r.replace(head="softmax").loss) == ("softmax", "cross_entropy")
    for backbone in ("mobilenet_v2", "resnet18", "deit_tiny"):
        assert backbone in models.available() and r.replace(backbone=backbone).model == backbone
    assert r.replace(pretrain=False).pretrain is False and r.replace(grid=None).grid is None
    quick = r.quick(2)
    assert (quick.epochs, quick.pretrain_epochs, quick.name) == (2, 2, "mobilevit_transfer-quick")
    assert quick.grid == {"batch_size": (64,), "lr": (0.007,), "epochs": (2,), "weight_decay": QUICK_GRID_WEIGHT_DECAY}
    assert r.replace(grid=None).quick(2).grid is None
    for bad in (dict(loss="cross_entropy"), dict(model="resnet18"), dict(input="flow_image"),
                dict(grid={"momentum": (0.9,)}), dict(grid={"lr": (0.01, 0.01)}), dict(unfreeze_fraction=1.5)):
        with pytest.raises(ValueError):
            r.replace(**bad)
    assert json.dumps(r.to_dict()) and r.to_dict()["grid"]["batch_size"] == [32, 64]


def test_transfer_fields_stay_out_of_other_recipes_configs():
    """Other trainers' to_dict() (hence run-config hashes and override checks) ignore the transfer fields."""
    all_fields = {f.name for f in dataclasses.fields(Recipe)}
    for name in ("ststnet", "off_tanet", "shufflenet_svm"):
        r = get_recipe(name)
        expected = all_fields - set(TRANSFER_FIELDS) - (set() if r.trainer == "two_stage" else set(TWO_STAGE_FIELDS))
        expected -= {k for k, default in ORDER_FIELDS.items() if getattr(r, k) == default}
        assert set(r.to_dict()) == expected
        assert r.replace(jitter_prob=0.0, max_shift=9, grid={"lr": (0.1,)}).to_dict() == r.to_dict()
        with pytest.raises(TypeError, match="unknown recipe field"):
            _resolve_recipe(name, None, {"jitter_prob": 0.0})
    transfer = get_recipe("mobilevit_transfer").to_dict()
    assert set(TRANSFER_FIELDS) <= set(transfer) and "plateau_patience" not in transfer and "flip_classes" not in transfer
    assert _resolve_recipe("mobilevit_transfer", 3, {"grid": None, "jitter_prob": 0.0}).grid is None


# ----------------------------------------------------------------------------- pieces


def test_unfreeze_schedule_and_groups():
    assert T.unfreeze_epochs(100, 5, 0.5) == [10, 20, 30, 40, 50]
    assert T.unfreeze_epochs(2, 5, 0.5) == [1] * 5 and T.unfreeze_epochs(10, 5, 0.0) == [0] * 5
    names = ["stem_conv", "stem_bn", "layer1_mv2_1_expand_conv", "layer2_mv2_1_dw", "layer2_mv2_2_dw",
             "layer3_mv2_1_dw", "layer4_mv2_1_dw", "layer5_mv2_1_dw", "layer5_mv2_1_bn"]
    assert T.unfreeze_groups(names) == [["layer5_mv2_1_dw", "layer5_mv2_1_bn"], ["layer4_mv2_1_dw"], ["layer3_mv2_1_dw"],
                                        ["layer2_mv2_1_dw", "layer2_mv2_2_dw"],
                                        ["stem_conv", "stem_bn", "layer1_mv2_1_expand_conv"]]
    generic = [f"conv{i}" for i in range(12)]
    groups = T.unfreeze_groups(generic)
    assert len(groups) == 5 and groups[0][-1] == "conv11" and groups[-1][0] == "conv0"
    assert sorted(sum(groups, [])) == sorted(generic)


def test_nested_backbones_are_unfrozen_in_parts():
    """keras.applications backbones (e.g. MobileNetV2) are one nested layer: expanded into their layers."""
    import keras

    inp = keras.Input((8, 8, 3))
    inner_in = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="inner_conv")(inner_in)
    h = keras.layers.BatchNormalization(name="inner_bn")(h)
    backbone = keras.Model(inner_in, keras.layers.Conv2D(4, 1, name="inner_out")(h), name="backbone")
    out = keras.layers.Dense(3, name="predictions")(keras.layers.GlobalAveragePooling2D(name="avg_pool")(backbone(inp)))
    model = keras.Model(inp, out)
    assert T.expand_nested(model, ["backbone"]) == ["inner_conv", "inner_bn", "inner_out"]
    assert T.expand_nested(model, ["predictions"]) == ["predictions"]


def test_grid_search_walks_the_whole_grid_with_keras_tuner(tmp_path):
    import keras_tuner as kt

    seen = []

    def evaluate(values):
        seen.append(values)
        uf1 = 0.5 if values["weight_decay"] > 1e-3 else 0.25  # two trials tie on UF1; the lower loss wins
        return {"val_uf1": uf1, "val_loss": 1.0 / values["batch_size"]}

    grid = {"batch_size": (16, 32), "weight_decay": (1e-3, 1e-2)}
    best, trials = T.grid_search(evaluate, grid, tmp_path / "tuner")
    assert sorted((v["batch_size"], v["weight_decay"]) for v in seen) == [(16, 1e-3), (16, 1e-2), (32, 1e-3), (32, 1e-2)]
    assert best == {"batch_size": 32, "weight_decay": 1e-2} and len(trials) == 4
    assert (tmp_path / "tuner" / "grid").is_dir()  # KerasTuner's files go where they are told

    def failing(values):
        raise RuntimeError("out of memory")

    with pytest.raises(kt.errors.FatalError, match="out of memory"):
        T.grid_search(failing, grid, tmp_path / "tuner2")


def test_load_transfer_data_forms_and_checks(caches, micro):
    micro_path, macro_path = caches
    r = small()
    m, M = T.load_transfer_data({"micro": micro_path, "macro": macro_path}, r)
    assert m.x.shape == (18, SIZE, SIZE, 1) and m.x.dtype == np.uint8 and M.sample_shape == SHAPE
    assert set(M.datasets) == {"ckplus", "oulu_casia", "jaffe", "mug"} and "jaffe" in set(M.datasets)  # single images kept
    assert not set(M.subjects) & set(m.subjects)
    m2, M2 = T.load_transfer_data((micro_path, macro_path), r)
    assert np.array_equal(m2.x, m.x) and np.array_equal(M2.x, M.x)
    assert T.load_transfer_data(micro_path, r.replace(pretrain=False))[1] is None
    with pytest.raises(ValueError, match="macro"):
        T.load_transfer_data(micro_path, r)
    with pytest.raises(ValueError, match="128x128"):
        T.load_transfer_data((micro_path, macro_path), r.replace(input_size=128))
    with pytest.raises(ValueError, match="share subjects"):
        T.load_transfer_data((micro_path, micro), r)  # stage 1 must never see a micro subject
    # macro frame stacks (a cache prepared with keep="onset_to_apex"): one sample per kept frame
    stacks = [np.full((k, SIZE, SIZE, 1), k, np.uint8) for k in (3, 1, 2)]
    seq = LOSODataset.from_arrays(stacks, [1, 2, 0], ["ckplus/S005", "jaffe/KA", "mug/001"], clips=["a", "b", "c"])
    _, frames = T.load_transfer_data((micro_path, seq), r)
    assert list(frames.clips) == ["a#0", "a#1", "a#2", "b#0", "c#0", "c#1"] and list(frames.y) == [1, 1, 1, 2, 0, 0]
    assert list(frames.subjects[:3]) == ["ckplus/S005"] * 3 and frames.x.shape == (6, SIZE, SIZE, 1)


# ----------------------------------------------------------------------------- models and freezing


def _stage1_like(recipe, seed=1):
    """A stage-1 model (softmax head) with its own initial weights; no training needed to test copying."""
    return T.build_transfer_model(T._stage1_recipe(recipe), SHAPE, 3, head="softmax", seed=seed)


def test_stage2_reloads_the_mv2_blocks_and_keeps_a_fresh_head():
    r = small()
    stage1 = _stage1_like(r)
    model, reloaded = T.build_stage2(r, SHAPE, 3, seed=7, pretrained=stage1)
    fresh, _ = T.build_stage2(r, SHAPE, 3, seed=7)
    weighted = [layer.name for layer in model.layers if layer.weights]
    expected = [n for n in weighted if n.startswith("stem_") or "_mv2_" in n]
    assert reloaded == expected and len(reloaded) >= 40  # stem + every MobileNetV2 block, nothing else
    for name in reloaded:
        for a, b in zip(model.get_layer(name).get_weights(), stage1.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("predictions", "layer3_mvit_local_conv", "conv_1x1_exp_conv"):  # fresh (seed 7), not stage 1's
        for a, b in zip(model.get_layer(name).get_weights(), fresh.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)
        kernel, stage1_kernel = model.get_layer(name).get_weights()[0], stage1.get_layer(name).get_weights()[0]
        assert kernel.shape == stage1_kernel.shape and not np.array_equal(kernel, stage1_kernel), name
    assert model.get_layer("predictions").activation.__name__ == "linear"  # SVM head
    assert stage1.get_layer("predictions").activation.__name__ == "softmax"


def test_frozen_blocks_do_not_change_until_unfrozen(micro):
    r = small(epochs=2)  # unfreeze_fraction 0.5 of 2 epochs: epoch 0 frozen, every block unfrozen at epoch 1
    model, reloaded = T.build_stage2(r, SHAPE, 3, seed=7, pretrained=_stage1_like(r))
    groups = T.unfreeze_groups(reloaded)
    watched = [*reloaded, "predictions", "layer3_mvit_fusion_conv"]
    snap = lambda: {n: [np.array(w) for w in model.get_layer(n).get_weights()] for n in watched}  # noqa: E731
    snapshots = [snap()]
    history = T.fine_tune(model, r, micro.x, micro.y, 3, seed=3, groups=groups,
                          on_epoch_end=lambda epoch, m: snapshots.append(snap()))
    assert history["frozen_groups"] == [5, 0] and history["unfreeze_at"] == [1] * 5
    initial, after_frozen, after_unfrozen = snapshots
    bn = [n for n in reloaded if n.endswith("_bn")]
    for name in reloaded:  # kernels, BatchNorm gamma/beta AND moving statistics untouched while frozen
        for a, b in zip(initial[name], after_frozen[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    for name in ("predictions", "layer3_mvit_fusion_conv"):  # the fresh layers trained from the start
        assert not np.array_equal(initial[name][0], after_frozen[name][0]), name
    changed = [n for n in reloaded if not all(np.array_equal(a, b) for a, b in zip(after_frozen[n], after_unfrozen[n]))]
    assert set(changed) == set(reloaded), sorted(set(reloaded) - set(changed))
    moving = [n for n in bn if not np.array_equal(after_frozen[n][2], after_unfrozen[n][2])]
    assert len(moving) == len(bn)  # moving means update once unfrozen


def test_fold_guards_leakage_and_inputs(caches, micro):
    from mer_keras.training import Fold

    bad = Fold("x", micro.subjects[0], np.arange(len(micro)), np.arange(3))  # test clips also in training
    with pytest.raises(LeakageError):
        T.train_fold_transfer(micro, bad, small(), 0)
    with pytest.raises(ValueError, match="record_test_curve"):
        T.transfer_inputs({"micro": caches[0], "macro": caches[1]}, small(), record_test_curve=True)


def test_cli_loso_macro_argument_is_checked(tmp_path, capsys):
    from mer_keras.cli import main

    for argv, message in ((["--recipe", "mobilevit_transfer"], "--macro DIR"),
                          (["--recipe", "ststnet", "--macro", str(tmp_path)], "transfer recipes")):
        with pytest.raises(SystemExit) as exc:
            main(["loso", "--data", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err
