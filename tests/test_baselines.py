"""Handcrafted MER baselines: LBP-TOP, LBP-SIP, HOOF, Bi-WOOF and their linear-SVM LOSO recipes.

Feature checks use small synthetic stacks and flow fields whose answer is known; the end-to-end
checks run the recipes through ``run_loso`` on the tiny synthetic MEGC composite prepared with the
``shufflenet`` preset at 48 px (onset..apex frame stacks, flow and strain; 6 subjects, 12 clips).
"""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from mer_keras.baselines import (FEATURES, bi_woof, block_ids, feature_matrix, hoof, lbp_bins, lbp_sip, lbp_top,
                                 orientation_bin, plane_codes, resample_frames)
from mer_keras.training import LeakageError, LOSODataset, Recipe, fold_name, get_recipe, loso_folds, run_loso
from mer_keras.training.handcrafted import class_scores, handcrafted_inputs, train_fold_handcrafted
from mer_keras.training.engine import resolve_recipe as _resolve_recipe
from mer_keras.training.recipes import HANDCRAFTED_CONFIG, HANDCRAFTED_FIELDS, HandcraftedRecipe

SIZE = 48
HANDCRAFTED = ("bi_woof_svm", "hoof_svm", "lbp_sip_svm", "lbp_top_svm")


def texture(h=40, w=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w)).astype(np.uint8)


def ramp(t, h=40, w=50):
    """A linear grey ramp moving to the left by one pixel per frame: frame t = ramp(0) + 2 t."""
    yy, xx = np.mgrid[0:h, 0:w]
    return (2 * (xx + t) + yy).astype(np.int64)


# ----------------------------------------------------------------------------- LBP-TOP


def test_lbp_top_static_and_moving_clips_differ_in_time_planes_only():
    static = np.stack([ramp(0)] * 10)
    moving = np.stack([ramp(t) for t in range(10)])
    a, b = lbp_top(static).reshape(25, 3, 59), lbp_top(moving).reshape(25, 3, 59)
    # every frame of the moving ramp is the static frame plus a constant: same spatial texture
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    # over time the moving ramp brightens, the static one does not: XT and YT codes change in every block
    assert np.all(np.abs(a[:, 1] - b[:, 1]).sum(axis=1) > 1.0)
    assert np.all(np.abs(a[:, 2] - b[:, 2]).sum(axis=1) > 1.0)
    # a random texture translating 1 px per frame: the temporal planes change far more than XY
    tex = texture()
    still = lbp_top(np.stack([tex] * 10)).reshape(25, 3, 59)
    slide = lbp_top(np.stack([np.roll(tex, t, axis=1) for t in range(10)])).reshape(25, 3, 59)
    d = np.abs(still - slide).sum(axis=2).mean(axis=0)
    assert d[1] > 3 * d[0] and d[2] > 3 * d[0]


def test_lbp_top_layout_normalisation_and_options():
    frames = np.stack([texture(seed=s) for s in range(9)])
    f = lbp_top(frames)
    assert f.shape == (5 * 5 * 3 * 59,) and f.dtype == np.float64
    np.testing.assert_allclose(f.reshape(25, 3, 59).sum(axis=2), 1.0)
    assert lbp_bins(8, "nri_uniform") == 59 and lbp_bins(8, "uniform") == 10 and lbp_bins(4, "default") == 16
    g = lbp_top(frames, blocks=(2, 3), radii=(1, 1, 2), points=(8, 4, 4), method="uniform")
    assert g.shape == (6 * (10 + 6 + 6),)
    np.testing.assert_allclose(g.reshape(6, 22)[:, :10].sum(axis=1), 1.0)
    np.testing.assert_allclose(g.reshape(6, 22)[:, 10:16].sum(axis=1), 1.0)
    # a constant stack codes every voxel as all-ones (neighbour >= centre), on every plane
    flat = lbp_top(np.full((9, 20, 20), 7, np.uint8), blocks=1, method="default").reshape(3, 256)
    assert np.all(flat[:, 255] == 1.0)


def test_lbp_top_samples_the_elliptical_neighbourhood_exactly():
    """The up-sampled circle of ``plane_codes`` equals direct bilinear sampling of the ellipse."""

    def reference(img, rr, rc, p):
        img = img.astype(np.float64)
        a, b = img.shape
        mr, mc = int(np.ceil(rr)), int(np.ceil(rc))
        out = np.zeros((a - 2 * mr, b - 2 * mc))
        for i in range(mr, a - mr):
            for j in range(mc, b - mc):
                code = 0
                for k in range(p):
                    r, c = round(i - rr * np.sin(2 * np.pi * k / p), 5), round(j + rc * np.cos(2 * np.pi * k / p), 5)
                    r0, c0 = int(np.floor(r)), int(np.floor(c))
                    dr, dc = r - r0, c - c0
                    r1, c1 = min(r0 + 1, a - 1), min(c0 + 1, b - 1)
                    val = ((1 - dr) * (1 - dc) * img[r0, c0] + (1 - dr) * dc * img[r0, c1]
                           + dr * (1 - dc) * img[r1, c0] + dr * dc * img[r1, c1])
                    code += int(val >= img[i, j]) << k
                out[i - mr, j - mc] = code
        return out

    s = np.random.default_rng(1).integers(0, 256, (2, 11, 13)).astype(np.uint8)
    for rr, rc in ((4, 1), (1, 4), (1, 1), (3, 1)):
        mr, mc = int(np.ceil(rr)), int(np.ceil(rc))
        got = plane_codes(s, rr, rc, 8, "default")
        for k in range(len(s)):
            np.testing.assert_array_equal(got[k, mr: 11 - mr, mc: 13 - mc], reference(s[k], rr, rc, 8))
    with pytest.raises(ValueError, match="integer multiples"):
        plane_codes(s, 1.5, 1, 8, "default")


def test_short_stacks_need_resampling():
    short = np.stack([texture(seed=s) for s in range(5)])
    with pytest.raises(ValueError, match="at least 9 frames.*n_frames"):
        lbp_top(short)
    assert lbp_top(short, n_frames=10).shape == (4425,)
    r = resample_frames(short, 9)
    assert r.shape == (9, 40, 50) and r.dtype == np.uint8
    np.testing.assert_array_equal(r[0], short[0])
    np.testing.assert_array_equal(r[-1], short[-1])
    np.testing.assert_array_equal(r[2], short[1])  # frame 2 of 9 samples time 1 of 5 exactly
    mid = np.rint((short[0].astype(float) + short[1]) / 2).astype(np.uint8)
    np.testing.assert_array_equal(r[1], mid)


# ----------------------------------------------------------------------------- LBP-SIP


def test_lbp_sip_codes_space_and_time_separately():
    tex = texture()
    static = np.stack([tex.astype(np.int64)] * 6)
    brighter = np.stack([tex.astype(np.int64) + 3 * t for t in range(6)])
    a, b = lbp_sip(static).reshape(25, 20), lbp_sip(brighter).reshape(25, 20)
    assert lbp_sip(static).shape == (500,)
    np.testing.assert_allclose(a[:, :16].sum(axis=1), 1.0)
    np.testing.assert_allclose(a[:, 16:].sum(axis=1), 1.0)
    np.testing.assert_array_equal(a[:, :16], b[:, :16])  # same spatial texture in every frame
    assert np.all(a[:, 16:] == [0, 0, 0, 1])  # static: previous >= centre and next >= centre
    assert np.all(b[:, 16:] == [0, 0, 1, 0])  # brightening: previous darker, next brighter (bit 1 only)
    # the 4-bit spatial code: bit 0 right, 1 up, 2 left, 3 down. A 5 with a brighter right neighbour (9) codes 1,
    # the 9 itself (only darker neighbours) 0, and the seven zero pixels of the 3 x 3 interior 15 (neighbours >= 0)
    one = np.zeros((3, 5, 5), np.uint8)
    one[:, 2, 2], one[:, 2, 3] = 5, 9
    expected = np.zeros(20)
    expected[[0, 1, 15]] = [1 / 9, 1 / 9, 7 / 9]
    expected[16 + 3] = 1.0
    np.testing.assert_allclose(lbp_sip(one, blocks=1), expected)
    with pytest.raises(ValueError, match="at least 3 frames"):
        lbp_sip(static[:2])


# ----------------------------------------------------------------------------- HOOF / Bi-WOOF


@pytest.mark.parametrize("u, v, bin_", [(1.0, 0.0, 0), (0.0, 1.0, 2), (-1.0, 0.0, 4), (0.0, -1.0, 6),
                                         (1.0, 1.0, 1), (1.0, -0.1, 0), (1.0, 0.1, 0)])
def test_hoof_of_a_uniform_flow_points_the_right_way(u, v, bin_):
    """Image coordinates: v > 0 is down, angles clockwise on screen; bin j centred on 2 pi j / 8."""
    h = hoof(np.full((30, 40), u), np.full((30, 40), v)).reshape(25, 8)
    expected = np.zeros(8)
    expected[bin_] = 1.0
    np.testing.assert_array_equal(h, np.tile(expected, (25, 1)))


def test_hoof_weights_masks_and_empty_blocks():
    u, v = np.zeros((20, 20)), np.zeros((20, 20))
    u[:, :10] = 3.0   # left half: 3 px to the right
    v[:, 10:] = 1.0   # right half: 1 px down
    weighted = hoof(u, v, blocks=1, bins=4)
    counted = hoof(u, v, blocks=1, bins=4, magnitude_weighted=False)
    np.testing.assert_allclose(weighted, [0.75, 0.25, 0, 0])
    np.testing.assert_allclose(counted, [0.5, 0.5, 0, 0])
    mask = np.zeros((20, 20), bool)
    mask[:, 10:] = True
    np.testing.assert_allclose(hoof(u, v, mask=mask, blocks=1, bins=4), [0, 1, 0, 0])
    blocks = hoof(u, v, blocks=(1, 2), bins=4, min_magnitude=2.0).reshape(2, 4)
    np.testing.assert_allclose(blocks, [[1, 0, 0, 0], [0, 0, 0, 0]])  # slow block: no vote, all zero
    assert orientation_bin(np.pi / 2, 8) == 2 and orientation_bin(2 * np.pi - 1e-9, 8) == 0
    np.testing.assert_array_equal(block_ids((4, 6), (2, 3)), np.repeat(np.repeat([[0, 1, 2], [3, 4, 5]], 2, 0), 2, 1))


def test_bi_woof_weights_blocks_by_their_mean_strain():
    u, v = np.full((20, 20), 2.0), np.zeros((20, 20))
    v[10:, :] = 2.0  # bottom half moves down-right
    u[10:, :] = 2.0
    strain = np.zeros((20, 20))
    strain[:10, :10] = 0.5          # top-left block strained, top-right not
    strain[10:, 10:] = -0.2         # sign ignored (magnitude)
    f = bi_woof(u, v, strain, blocks=(2, 2), bins=8).reshape(4, 8)
    np.testing.assert_allclose(f[0], [0.5, 0, 0, 0, 0, 0, 0, 0])      # right, times 0.5
    np.testing.assert_array_equal(f[1], np.zeros(8))                  # zero strain -> zero weight
    np.testing.assert_array_equal(f[2], np.zeros(8))
    np.testing.assert_allclose(f[3], [0, 0.2, 0, 0, 0, 0, 0, 0])      # down-right = bin 1, times 0.2
    # the local weight is HOOF's magnitude-weighted histogram
    np.testing.assert_allclose(bi_woof(u, v, np.ones((20, 20)), blocks=2), hoof(u, v, blocks=2))


@pytest.mark.parametrize("call, match", [
    (lambda: hoof(np.zeros((4, 4)), np.zeros((4, 5))), "v has shape"),
    (lambda: hoof(np.zeros((4, 4, 2)), np.zeros((4, 4, 2))), "u must be an H x W"),
    (lambda: hoof(np.array([[np.nan, 0], [0, 0]]), np.zeros((2, 2)), blocks=1), "NaN"),
    (lambda: hoof(np.zeros((4, 4)), np.zeros((4, 4)), bins=1), "bins must be"),
    (lambda: hoof(np.zeros((4, 4)), np.zeros((4, 4)), blocks=(5, 5)), "block grid needs"),
    (lambda: hoof(np.zeros((4, 4)), np.zeros((4, 4)), blocks=(0, 2)), "blocks must be"),
    (lambda: hoof(np.zeros((4, 4)), np.zeros((4, 4)), mask=np.ones((3, 4), bool), blocks=1), "mask has shape"),
    (lambda: bi_woof(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 3)), blocks=1), "strain has shape"),
    (lambda: bi_woof(np.zeros((4, 4)), np.zeros((4, 4)), np.full((4, 4), np.inf), blocks=1), "infinite"),
    (lambda: lbp_top(np.zeros((9, 20)), blocks=1), "T x H x W"),
    (lambda: lbp_top(np.full((9, 8, 8), np.nan), blocks=1), "NaN"),
    (lambda: lbp_top(np.zeros((9, 20, 20), np.uint8), radii=(1, 1, 0)), "radii must be"),
    (lambda: lbp_top(np.zeros((9, 20, 20), np.uint8), method="ror"), "method must be"),
    (lambda: lbp_top(np.zeros((9, 12, 12), np.uint8), blocks=(12, 12)), "hold no interior pixel"),
    (lambda: lbp_sip(np.zeros((5, 20, 20), np.uint8), temporal_radius=1.5), "temporal_radius"),
    (lambda: resample_frames(np.zeros((5, 8, 8), np.uint8), 0), "n_frames"),
])
def test_invalid_inputs_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- registry and recipes


def test_feature_registry_and_matrix():
    assert sorted(FEATURES) == ["bi_woof", "hoof", "lbp_sip", "lbp_top"]
    assert {n: f.input for n, f in FEATURES.items()} == {"bi_woof": "flow_stack", "hoof": "flow_stack",
                                                         "lbp_sip": "frames", "lbp_top": "frames"}
    assert "blocks" in FEATURES["hoof"].parameters and "u" not in FEATURES["hoof"].parameters
    flows = [np.random.default_rng(i).normal(size=(20, 20, 3)).astype(np.float32) for i in range(3)]
    x = feature_matrix("hoof", flows, {"blocks": 2, "bins": 4})
    assert x.shape == (3, 16)
    np.testing.assert_array_equal(x[1], hoof(flows[1][..., 0], flows[1][..., 1], blocks=2, bins=4))
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['radius'\]"):
        feature_matrix("hoof", flows, {"radius": 1})
    with pytest.raises(ValueError, match="sample 0: feature 'lbp_top' reads grey frame stacks"):
        feature_matrix("lbp_top", [np.zeros((9, 20, 20, 3))])
    with pytest.raises(KeyError, match="unknown feature"):
        feature_matrix("sift", flows)


def test_handcrafted_recipes_and_unchanged_configs_of_the_others():
    for name in HANDCRAFTED:
        r = get_recipe(name)
        assert isinstance(r, HandcraftedRecipe) and r.trainer == "handcrafted" and r.model == "linear_svm"
        assert r.input == FEATURES[r.features].input and r.svm_c == 1.0 and r.svm_c_grid is None
        assert set(r.to_dict()) == set(HANDCRAFTED_CONFIG) and json.dumps(r.to_dict())
        assert get_recipe(f"{name}-quick").to_dict()["feature_params"] == r.to_dict()["feature_params"]
    top = get_recipe("lbp_top_svm").feature_params
    assert (top["blocks"], top["radii"], top["points"], top["method"]) == ((5, 5), (1, 1, 4), (8, 8, 8), "nri_uniform")
    # Recipe itself has none of the handcrafted fields: other recipes' dicts (and run-config hashes) are untouched
    assert not set(HANDCRAFTED_FIELDS) & {f.name for f in dataclasses.fields(Recipe)}
    for name in ("ststnet", "off_tanet", "shufflenet_svm", "mobilevit_transfer"):
        assert not set(HANDCRAFTED_FIELDS) & set(get_recipe(name).to_dict())
    with pytest.raises(ValueError, match="trainer 'handcrafted'"):
        get_recipe("ststnet").replace(trainer="handcrafted")
    hoof_r = get_recipe("hoof_svm")
    assert hoof_r.replace(features="lbp_sip").input == "frames"
    for bad, match in ((dict(input="frames"), "reads input 'flow_stack'"), (dict(features="sift"), "features must be"),
                       (dict(svm_c=0), "svm_c must be"), (dict(svm_c_grid=(1.0, 1.0)), "svm_c_grid"),
                       (dict(svm_class_weight="auto"), "svm_class_weight"), (dict(model="ststnet"), "model must be")):
        with pytest.raises(ValueError, match=match):
            hoof_r.replace(**bad)
    r = _resolve_recipe("hoof_svm", 3, {"svm_c": 0.1, "feature_params": {"bins": 4}})
    assert (r.seed, r.svm_c, r.feature_params) == (3, 0.1, {"bins": 4})
    with pytest.raises(TypeError, match="unknown recipe field"):
        _resolve_recipe("hoof_svm", None, {"epochs": 3})


def test_class_scores_cover_missing_classes_and_match_predict():
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    y3 = np.repeat([0, 1, 2], 10)
    x[y3 == 1, 0] += 4
    x[y3 == 2, 1] += 4
    m3 = SVC(kernel="linear", decision_function_shape="ovr").fit(x, y3)
    np.testing.assert_array_equal(class_scores(m3, x, 3).argmax(1), m3.predict(x))
    y2 = np.where(y3 == 1, 2, 0)  # classes 0 and 2 only
    m2 = SVC(kernel="linear").fit(x, y2)
    s = class_scores(m2, x, 3)
    np.testing.assert_array_equal(s.argmax(1), m2.predict(x))
    assert np.all(s[:, 1] < s[:, [0, 2]].min(axis=1))  # absent class never predicted


# ----------------------------------------------------------------------------- LOSO end to end


@pytest.fixture(scope="module")
def cache(shufflenet_cache_48):
    assert SIZE == 48
    return shufflenet_cache_48


@pytest.mark.parametrize("name", ["hoof_svm", "lbp_top_svm"])
def test_run_loso_handcrafted_end_to_end_and_resume(cache, tmp_path, name):
    run = tmp_path / "run"
    report = run_loso(cache, name, run, progress=False)
    assert 0.0 <= report["uf1"] <= 1.0 and 0.0 <= report.metrics["uar"] <= 1.0
    assert report.metrics["n_folds"] == 6 and report.metrics["n_clips"] == 12
    cfg = json.loads((run / "run.json").read_text())["config"]
    expected = 5 * 5 * 3 * 59 if name == "lbp_top_svm" else 5 * 5 * 8
    assert cfg["recipe"]["trainer"] == "handcrafted" and cfg["data"]["n_features"] == expected
    for folder in sorted((run / "folds").iterdir()):  # every fold predicts its own subject only
        preds = pd.read_csv(folder / "predictions.csv", dtype={"subject": str})
        assert {fold_name(s) for s in preds["subject"]} == {folder.name} and len(preds) == 2
        history = json.loads((folder / "history.json").read_text())
        assert history["svm_c"] == 1.0 and 0.0 <= history["train_accuracy"] <= 1.0
    again = run_loso(cache, name, run, progress=False)
    assert again.config["run"]["trained_folds"] == [] and again["uf1"] == report["uf1"]
    other = run_loso(cache, name, tmp_path / "other", progress=False, svm_c=0.01)
    assert other.config["run"]["config_hash"] != again.config["run"]["config_hash"]  # C is part of the config


def test_fold_uses_training_subjects_only_and_checks_disjointness(cache):
    recipe = get_recipe("hoof_svm")
    data, fingerprint, fold_fn = handcrafted_inputs(cache, recipe)
    assert fold_fn is train_fold_handcrafted and fingerprint["features"] == "hoof" and data.sample_shape == (1, 1, 200)
    fold = next(f for f in loso_folds(data) if len(f.test_index) >= 2)
    _, scores, history, info = train_fold_handcrafted(data, fold, recipe, 0)
    assert scores.shape == (len(fold.test_index), 3) and info["n_train"] == len(fold.train_index)
    # changing one test clip (features and label) leaves the other test clip's scores unchanged
    x, y = data.x.copy(), data.y.copy()
    i, j = fold.test_index[:2]
    x[j] = x[j] * 100 + 5
    y[j] = (y[j] + 1) % 3
    changed = LOSODataset(x=x, y=y, subjects=data.subjects, datasets=data.datasets, clips=data.clips)
    _, scores2, _, _ = train_fold_handcrafted(changed, fold, recipe, 0)
    np.testing.assert_array_equal(scores2[0], scores[0])
    leaky = dataclasses.replace(fold, train_index=np.sort(np.concatenate([fold.train_index, fold.test_index[:1]])))
    with pytest.raises(LeakageError):
        train_fold_handcrafted(data, leaky, recipe, 0)
    # a grid over C is searched on an inner split of the training subjects only
    grid = recipe.replace(svm_c_grid=(0.01, 1.0))
    _, _, h, info = train_fold_handcrafted(data, fold, grid, 0)
    assert h["svm_c"] in (0.01, 1.0) and len(h["grid_val_uf1"]) == 2
    assert fold.test_subject not in h["grid_val_subjects"] + h["grid_fit_subjects"]
    assert not set(h["grid_val_subjects"]) & set(h["grid_fit_subjects"])
    with pytest.raises(ValueError, match="record_test_curve"):
        handcrafted_inputs(cache, recipe, record_test_curve=True)


def test_protocol_fit_then_predict_equals_the_fold(cache):
    from mer_keras.training import get_trainer

    recipe = get_recipe("hoof_svm").replace(svm_c_grid=(0.01, 1.0))
    trainer = get_trainer(recipe)
    prepared = trainer.prepare(cache)
    fold = next(f for f in loso_folds(prepared.data) if len(f.test_index) >= 2)
    fitted = trainer.fit(prepared, fold.train_index, seed=0)
    scores = trainer.predict(fitted, prepared, fold.test_index)
    _, expected, history, _ = train_fold_handcrafted(prepared.data, fold, recipe, 0)
    np.testing.assert_array_equal(scores, expected)
    assert fitted.history["svm_c"] == history["svm_c"] and fitted.info["n_train"] == len(fold.train_index)


def test_inputs_are_checked_against_the_feature(cache):
    flow = LOSODataset.from_cache(cache, input="flow_stack")
    with pytest.raises(ValueError, match="reads grey frame stacks"):
        handcrafted_inputs(flow, get_recipe("lbp_top_svm"))
    frames = LOSODataset.from_cache(cache, input="frames")
    with pytest.raises(ValueError, match=r"reads float H x W x 3 \(u, v, strain\).*got a sequence"):
        handcrafted_inputs(frames, get_recipe("bi_woof_svm"))
    with pytest.raises(ValueError, match="uint8 flow images do not hold the flow"):
        handcrafted_inputs(LOSODataset.from_cache(cache, input="flow_image"), get_recipe("hoof_svm"))
    with pytest.raises(ValueError, match="no parameter"):
        handcrafted_inputs(flow, get_recipe("hoof_svm").replace(feature_params={"radius": 2}))
    data, _, _ = handcrafted_inputs(frames, get_recipe("lbp_sip_svm"))
    assert data.sample_shape == (1, 1, 500) and list(data.clips) == list(frames.clips)
