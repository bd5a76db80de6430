"""LOSO foundations: LOSODataset constructors, folds and leakage checks, FoldStore resume/staleness."""

import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from mer_keras.data.composites import fold_groups
from mer_keras.preprocess.cache import PreparedCache, prepare
from mer_keras.preprocess.pipeline import PreprocessConfig
from mer_keras.training import (
    ConfigMismatchError,
    Fold,
    FolderLayoutError,
    FoldStore,
    LeakageError,
    LOSODataset,
    assert_subject_disjoint,
    balanced_indices,
    clip_scores,
    config_hash,
    inner_split,
    loso_folds,
    prediction_frame,
    safe_name,
)


def toy(n_per_subject=(3, 2, 4, 3, 2), datasets=("casme", "casme", "casme2", "casme2", "samm"), seed=0):
    """Subjects whose bare ids repeat across datasets (casme/sub01 vs casme2/sub01)."""
    rng = np.random.default_rng(seed)
    subjects, clips = [], []
    for i, (n, d) in enumerate(zip(n_per_subject, datasets)):
        subjects += [f"{d}/sub{i % 2 + 1:02d}"] * n
        clips += [f"c{i}_{j}" for j in range(n)]
    n = len(subjects)
    return LOSODataset.from_arrays(rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 3, n), subjects, clips=clips)


# ----------------------------------------------------------------------------- LOSODataset


def test_from_arrays_defaults_and_validation():
    ds = toy()
    assert len(ds) == 14 and ds.x.dtype == np.float32 and ds.sample_shape == (8, 8, 3)
    assert set(ds.datasets) == {"casme", "casme2", "samm"}
    assert ds.subject_list() == ["casme/sub01", "casme/sub02", "casme2/sub01", "casme2/sub02", "samm/sub01"]
    assert ds.class_counts().sum() == 14 and list(ds.class_counts().index) == ["negative", "positive", "surprise"]
    table = ds.summary()
    assert table.loc["all", "total"] == 14 and table.loc["all", "subjects"] == 5 and table.loc["casme2", "subjects"] == 2
    listed = LOSODataset.from_arrays([np.zeros((4, 4, 3), np.uint8)] * 2, [0, 1], ["a", "b"])
    assert not listed.is_sequence and listed.x.shape == (2, 4, 4, 3) and listed.x.dtype == np.uint8
    grey = LOSODataset.from_arrays(np.zeros((2, 5, 5), np.float64), [0.0, 2.0], ["a", "b"])
    assert grey.x.shape == (2, 5, 5, 1) and grey.x.dtype == np.float32 and grey.y.dtype == np.int64

    x = np.zeros((3, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="y has shape"):
        LOSODataset.from_arrays(x, [0, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="subjects has 2 entries"):
        LOSODataset.from_arrays(x, [0, 1, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2.*\[3\]"):
        LOSODataset.from_arrays(x, [0, 3, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="labels must be in"):
        LOSODataset.from_arrays(x, [0, -1, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="integer label"):
        LOSODataset.from_arrays(x, [0, 1.5, 1], ["a", "b", "c"])
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        LOSODataset.from_arrays(bad, [0, 1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="N x H x W x C"):
        LOSODataset.from_arrays(np.zeros((3, 4)), [0, 1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="subject 'sub01' appears in datasets"):
        LOSODataset.from_arrays(x, [0, 1, 2], ["sub01", "sub01", "sub02"], datasets=["casme", "casme2", "casme"])
    with pytest.raises(ValueError, match="duplicate sample"):
        LOSODataset.from_arrays(x, [0, 1, 2], ["a", "a", "b"], clips=["c1", "c1", "c2"])


def test_subset_and_sequences():
    ds = toy()
    sub = ds.subset([5, 0])
    assert list(sub.clips) == [ds.clips[5], ds.clips[0]] and sub.y.tolist() == [ds.y[5], ds.y[0]]
    assert len(ds.subset(ds.y == 0)) == int((ds.y == 0).sum())

    stacks = [np.full((t, 4, 4, 1), i, np.uint8) for i, t in enumerate((3, 1, 2))]
    seq = LOSODataset.from_arrays(stacks, [0, 1, 2], ["a", "b", "c"])
    assert seq.is_sequence and seq.sample_shape == (4, 4, 1)
    frames, owner = seq.expand_frames([2, 0])
    assert frames.shape == (5, 4, 4, 1) and owner.tolist() == [2, 2, 0, 0, 0]
    assert (frames[:, 0, 0, 0] == owner).all()  # each frame came from its clip
    scores = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 3], [0, 0, 6], [0, 0, 9.0]])
    clips, mean = clip_scores(scores, owner)
    assert clips.tolist() == [0, 2] and np.allclose(mean, [[0, 0, 6], [0.5, 0.5, 0]])
    with pytest.raises(ValueError, match="frame shape"):
        LOSODataset.from_arrays([np.zeros((2, 4, 4, 1)), np.zeros((2, 5, 4, 1))], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="sequence dataset"):
        ds.expand_frames()


@pytest.fixture(scope="module")
def frames_cache(megc_tiny_cropped, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    config = PreprocessConfig.preset("ststnet", keep="onset_to_apex")  # 28 px; frame stacks too
    prepare(megc_tiny_cropped, out, config, workers=1, progress=False)
    return PreparedCache(out)


def test_from_cache_inputs(frames_cache, megc_tiny_cropped):
    cache = frames_cache
    n = len(cache)
    assert n == len(megc_tiny_cropped)
    stack = LOSODataset.from_cache(cache, "flow_stack")
    assert stack.x.shape == (n, 28, 28, 3) and stack.x.dtype == np.float32
    assert np.array_equal(stack.x[..., :2], cache.stack("flow")) and np.array_equal(stack.x[..., 2], cache.stack("strain"))
    assert list(stack.subjects) == list(fold_groups(cache.manifest)) and stack.subjects[0].startswith("casme2/")
    assert stack.y.tolist() == cache.manifest["label_id"].tolist() and list(stack.clips) == list(cache.manifest["clip"])
    image = LOSODataset.from_cache(cache.path, "flow_image", progress=False)
    assert image.x.dtype == np.uint8 and np.array_equal(image.x, cache.stack("flow_image"))
    apex = LOSODataset.from_cache(cache, "apex")
    assert apex.x.shape == (n, 28, 28, 1) and np.array_equal(apex.x[..., 0], cache.stack("apex"))
    pair = LOSODataset.from_cache(cache, "onset_apex")
    assert pair.x.shape == (n, 28, 28, 2) and np.array_equal(pair.x[..., 0], cache.stack("onset"))
    samm = LOSODataset.from_cache(cache, "apex", sources=["samm"])
    assert set(samm.datasets) == {"samm"} and len(samm) == (cache.manifest["dataset"] == "samm").sum()

    seq = LOSODataset.from_cache(cache, "frames")
    assert seq.is_sequence and seq.sample_shape == (28, 28, 1)
    lengths = [len(s) for s in seq.x]
    expected = [1 + list(r.frame_numbers).index(r.apex) - list(r.frame_numbers).index(r.onset)
                for r in megc_tiny_cropped.itertuples()]
    assert lengths == expected and min(lengths) > 2
    frames, owner = seq.expand_frames()
    assert len(frames) == sum(lengths) and np.array_equal(np.bincount(owner), lengths)
    assert np.array_equal(frames[owner == 0][-1, ..., 0], apex.x[0, ..., 0])  # a clip's stack ends on its apex
    with pytest.raises(ValueError, match="input must be one of"):
        LOSODataset.from_cache(cache, "u_v")


def test_from_cache_skips_unlabelled_and_needs_frame_stacks(frames_cache, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(frames_cache.path, copy)
    table = pd.read_csv(copy / "manifest.csv", dtype={"subject": str, "clip": str})
    table.loc[0, ["label", "label_id"]] = [None, -1]
    table.to_csv(copy / "manifest.csv", index=False)
    ds = LOSODataset.from_cache(copy, "apex")
    assert len(ds) == len(table) - 1 and table.loc[0, "clip"] not in set(ds.clips)
    meta = json.loads((copy / "cache.json").read_text())
    meta["config"]["keep"] = "onset_apex"
    (copy / "cache.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="keep='onset_to_apex'"):
        LOSODataset.from_cache(copy, "frames")


# ----------------------------------------------------------------------------- MEGC folders


def write_megc_folders(root, seed=0):
    """Three subjects (one per MEGC2019 source), u_test = own clips, u_train = everyone else's."""
    rng = np.random.default_rng(seed)
    clips = {"sub01": [("EP01", 0), ("EP02", 2)], "s01": [("s01_po_01", 1)], "006": [("006_1_2", 0), ("006_3_1", 1), ("006_5_5", 2)]}
    images = {}
    for subject, items in clips.items():
        for clip, label in items:
            images[(subject, clip)] = (label, rng.integers(0, 256, (28, 28, 3), dtype=np.uint8))  # RGB
    for subject in clips:
        for (owner, clip), (label, rgb) in images.items():
            split = "u_test" if owner == subject else "u_train"
            folder = root / subject / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{clip}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return images


def test_from_megc_folders_union_labels_subjects(tmp_path):
    images = write_megc_folders(tmp_path)
    ds, files = LOSODataset.from_megc_folders(tmp_path, return_files=True)
    assert len(ds) == len(images) == 6
    assert ds.subject_list() == ["006", "s01", "sub01"]
    assert dict(zip(ds.subjects, ds.datasets)) == {"006": "samm", "s01": "smic", "sub01": "casme2"}
    assert ds.x.shape == (6, 28, 28, 3) and ds.x.dtype == np.uint8
    for i in range(len(ds)):
        label, rgb = images[(ds.subjects[i], ds.clips[i])]
        assert ds.y[i] == label
        assert np.array_equal(ds.x[i], rgb)  # channel order RGB, pixels exact (PNG is lossless)
    assert (files["split"] == "u_train").sum() == 6 * 2  # each clip copied into the 2 other subjects' u_train
    bgr = LOSODataset.from_megc_folders(tmp_path, channel_order="bgr")
    assert np.array_equal(bgr.x, ds.x[..., ::-1])


def test_from_megc_folders_detects_leak_and_missing(tmp_path):
    write_megc_folders(tmp_path / "leak")
    shutil.copy(tmp_path / "leak/s01/u_test/1/s01_po_01.png", tmp_path / "leak/s01/u_train/1/copy.png")
    with pytest.raises(LeakageError, match="subject 's01'.*same subject"):
        LOSODataset.from_megc_folders(tmp_path / "leak")
    assert len(LOSODataset.from_megc_folders(tmp_path / "leak", verify=False)) == 6

    write_megc_folders(tmp_path / "missing")
    (tmp_path / "missing/006/u_train/2/EP02.png").unlink()
    with pytest.raises(FolderLayoutError, match="subject '006': u_train misses 1.*EP02.png of subject 'sub01'"):
        LOSODataset.from_megc_folders(tmp_path / "missing")

    write_megc_folders(tmp_path / "relabel")
    shutil.move(tmp_path / "relabel/sub01/u_train/1/s01_po_01.png", tmp_path / "relabel/sub01/u_train/0/s01_po_01.png")
    with pytest.raises(FolderLayoutError, match="subject 'sub01'.*under label 0 here"):
        LOSODataset.from_megc_folders(tmp_path / "relabel")

    write_megc_folders(tmp_path / "label")
    (tmp_path / "label/006/u_test/3").mkdir()
    with pytest.raises(FolderLayoutError, match="label folder"):
        LOSODataset.from_megc_folders(tmp_path / "label")


# ----------------------------------------------------------------------------- folds


def test_loso_folds_cover_each_sample_once_and_never_share_subjects(monkeypatch):
    import mer_keras.training.folds as folds_module

    ds = toy()
    checked = []
    real_check = folds_module.assert_subject_disjoint
    monkeypatch.setattr(folds_module, "assert_subject_disjoint", lambda *a: checked.append(a) or real_check(*a))
    folds = loso_folds(ds)
    assert len(checked) == len(folds) == 5  # every fold construction is checked for leakage
    assert [f.test_subject for f in folds] == ds.subject_list()  # casme/sub01 and casme2/sub01 are two folds
    assert [f.name for f in folds] == ["casme__sub01", "casme__sub02", "casme2__sub01", "casme2__sub02", "samm__sub01"]
    counts = np.bincount(np.concatenate([f.test_index for f in folds]), minlength=len(ds))
    assert (counts == 1).all()
    for f in folds:
        assert set(ds.subjects[f.test_index]) == {f.test_subject}
        assert f.test_subject not in set(ds.subjects[f.train_index])
        assert len(f.train_index) + len(f.test_index) == len(ds)
    quick = loso_folds(ds, subjects=["samm/sub01", "casme2__sub02"])
    assert [f.test_subject for f in quick] == ["casme2/sub02", "samm/sub01"]
    with pytest.raises(KeyError, match="ambiguous"):
        loso_folds(ds, subjects=["sub01"])
    with pytest.raises(KeyError, match="not in the dataset"):
        loso_folds(ds, subjects=["smic/s01"])


def test_leakage_error_names_shared_subjects():
    ds = toy()
    fold = loso_folds(ds)[2]
    leaky_train = np.append(fold.train_index, fold.test_index[0])
    with pytest.raises(LeakageError, match=r"1 subject\(s\) on both sides.*casme2/sub01") as info:
        assert_subject_disjoint(ds, leaky_train, fold.test_index)
    assert isinstance(info.value, AssertionError)
    assert_subject_disjoint(ds, fold.train_index, fold.test_index)  # the real fold passes


def strat_dataset():
    """10 subjects; class 2 only in subjects 0 and 1 (a random 2-subject pick usually misses it)."""
    subjects, y = [], []
    for s in range(10):
        labels = [2, 0, 1] if s < 2 else [0, 0, 1, 1, 0]
        subjects += [f"d/s{s}"] * len(labels)
        y += labels
    return LOSODataset.from_arrays(np.zeros((len(y), 2, 2, 1), np.float32), y, subjects)


def test_inner_split_by_subject_stratified_deterministic():
    ds = strat_dataset()
    fold = loso_folds(ds, subjects=["d/s9"])[0]
    fit, val = inner_split(ds, fold, val_fraction=0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([fit, val])), fold.train_index)
    assert not set(ds.subjects[fit]) & set(ds.subjects[val])
    assert "d/s9" not in set(ds.subjects[fit]) | set(ds.subjects[val])
    assert len(set(ds.subjects[val])) == 2  # round(0.2 * 9 training subjects)
    for seed in range(6):
        f, v = inner_split(ds, fold.train_index, seed=seed, test_index=fold.test_index)
        assert set(ds.y[v]) == {0, 1, 2}, seed  # every class reaches validation
        again = inner_split(ds, fold.train_index[::-1], seed=seed)  # input order does not matter
        assert np.array_equal(v, again[1]) and np.array_equal(f, again[0])
    picks = {tuple(sorted(set(ds.subjects[inner_split(ds, fold, seed=s)[1]]))) for s in range(6)}
    assert len(picks) > 1  # the seed matters
    with pytest.raises(LeakageError):
        inner_split(ds, np.arange(len(ds)), test_index=fold.test_index)
    fit0, val0 = inner_split(ds, fold, val_fraction=0.0)
    assert len(val0) == 0 and np.array_equal(fit0, fold.train_index)


def test_balanced_indices():
    y = np.array([0] * 10 + [1] * 4 + [2] * 6)
    index = np.arange(2, 20)  # class 0 has 8 here
    rng = np.random.default_rng(0)
    down = balanced_indices(y, index, rng)
    assert np.bincount(y[down]).tolist() == [4, 4, 4] and set(down) <= set(index) and len(set(down)) == 12
    up = balanced_indices(y, index, rng, per_class=7)
    assert np.bincount(y[up]).tolist() == [7, 7, 7] and set(np.flatnonzero(y == 1)) <= set(up)
    assert np.array_equal(balanced_indices(y, index, 3), balanced_indices(y, index, 3))


# ----------------------------------------------------------------------------- FoldStore


CONFIG = {"recipe": "ststnet", "epochs": 3, "seed": np.int64(0), "lr": 5e-5}


def fold_predictions(ds, fold, offset=0.0):
    scores = np.random.default_rng(len(fold.name)).random((len(fold.test_index), 3)) + offset
    return prediction_frame(ds, fold.test_index, scores)


class FakeModel:
    def save_weights(self, path):
        assert str(path).endswith(".weights.h5")  # Keras 3 insists on this suffix
        with open(path, "wb") as fh:
            fh.write(b"weights")


def no_temp_files(root):
    return not [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_fold_store_resume_and_order(tmp_path):
    ds = toy()
    folds = loso_folds(ds)
    store = FoldStore(tmp_path, CONFIG)
    assert json.loads((tmp_path / "run.json").read_text())["config_hash"] == store.config_hash == config_hash(CONFIG)
    assert store.pending(folds) == folds
    for f in reversed(folds[2:]):  # finish out of order
        store.save_fold(f, fold_predictions(ds, f), {"loss": [np.float32(1.0), 0.5]}, model=FakeModel())
    d = tmp_path / "folds" / folds[3].name
    assert {p.name for p in d.iterdir()} == {"predictions.csv", "history.json", "weights.weights.h5", "done.json"}
    assert no_temp_files(tmp_path)
    assert json.loads((d / "done.json").read_text())["config_hash"] == store.config_hash
    assert store.load_history(folds[3]) == {"loss": [1.0, 0.5]}

    reopened = FoldStore(tmp_path, dict(reversed(list(CONFIG.items()))))  # same config, other key order: resume
    assert [f.name for f in reopened.pending(folds)] == [folds[0].name, folds[1].name]
    for f in folds[:2]:
        reopened.save_fold(f, fold_predictions(ds, f))
    assert reopened.pending(folds) == [] and reopened.completed() == sorted(f.name for f in folds)
    preds = FoldStore(tmp_path).load_predictions()  # reopened from run.json alone
    assert len(preds) == len(ds)
    assert list(zip(preds["subject"], preds["clip"])) == sorted(zip(ds.subjects, ds.clips))
    merged = preds.merge(pd.DataFrame({"subject": ds.subjects, "clip": ds.clips, "y": ds.y}), on=["subject", "clip"])
    assert (merged["y_true"] == merged["y"]).all()
    assert (preds["y_pred"] == preds[["score_0", "score_1", "score_2"]].to_numpy().argmax(axis=1)).all()
    with pytest.raises(ValueError, match="other than"):
        reopened.save_fold(folds[0], fold_predictions(ds, folds[1]))


def test_fold_store_stale_mixing_and_atomicity(tmp_path):
    ds = toy()
    folds = loso_folds(ds)
    store = FoldStore(tmp_path, CONFIG)
    for f in folds[:3]:
        store.save_fold(f, fold_predictions(ds, f))
    other = config_hash({**CONFIG, "epochs": 4})
    assert store.is_done(folds[0]) and not store.is_done(folds[0].name, other)
    assert store.status(folds[0], other) == "stale" and store.status(folds[4]) == "pending"
    assert store.pending(folds, other) == folds

    # a fold finished under another config (e.g. by an older version of this run) is not loaded
    done = tmp_path / "folds" / folds[1].name / "done.json"
    record = json.loads(done.read_text())
    done.write_text(json.dumps({**record, "config_hash": other}))
    assert store.status(folds[1]) == "stale" and folds[1] in store.pending(folds)
    assert set(store.load_predictions()["fold"]) == {folds[0].name, folds[2].name}

    with pytest.raises(ConfigMismatchError, match="epochs"):
        FoldStore(tmp_path, {**CONFIG, "epochs": 4})
    assert store.is_done(folds[0])  # refusing touched nothing

    # an interrupted rewrite leaves the fold pending, never half old, half new
    with pytest.raises(TypeError):
        store.save_fold(folds[0], fold_predictions(ds, folds[0], offset=1.0), {"bad": object()})
    assert store.status(folds[0]) == "pending" and no_temp_files(tmp_path)

    # predictions edited after the fold finished are refused
    path = tmp_path / "folds" / folds[2].name / "predictions.csv"
    path.write_text(path.read_text() + "\n")
    with pytest.raises(ValueError, match="checksum"):
        store.load_predictions()

    fresh = FoldStore(tmp_path, {**CONFIG, "epochs": 4}, overwrite=True)
    assert fresh.load_predictions().empty and fresh.pending(folds) == folds
    assert json.loads((tmp_path / "run.json").read_text())["config"]["epochs"] == 4


def test_fold_names_are_file_safe():
    assert safe_name("casme2__sub01") == "casme2__sub01"
    names = {safe_name(n) for n in ("a/b", "a?b", "..", "a b")}
    assert len(names) == 4 and all("/" not in n and n not in (".", "..") for n in names)
    ds = LOSODataset.from_arrays(np.zeros((2, 2, 2, 1)), [0, 1], ["x y/1", "x y/2"])
    assert [f.name for f in loso_folds(ds)] == ["x-y__1", "x-y__2"]
    assert isinstance(loso_folds(ds)[0], Fold)
