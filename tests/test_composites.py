"""Protocol composites: exact counts of datasets.md on the structural twins, options, issues."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from mer_keras.data import summarize, validate_manifest
from mer_keras.data.composites import (
    fold_groups,
    load_composite,
    megc2019,
    mobilevit_macro,
    mobilevit_micro,
    off_tanet_composite,
    shufflenet_composite,
)
from mer_keras.data.synthetic import load_ground_truth, write_composite, write_dataset

logging.getLogger("mer_keras.data").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """The structural twins of every micro composite, each with its raw frames and (but MMEW) its cropped release."""
    root = tmp_path_factory.mktemp("twin")
    roots = write_composite("shufflenet", root, counts="real", release="both")  # casme2, smic, samm, mmew (raw)
    roots.update({k: v for k, v in write_composite("off_tanet", root, counts="real", release="both").items()
                  if k != "casme2"})
    return roots


def _table(manifest):
    return summarize(manifest)[["negative", "positive", "surprise", "total", "subjects"]]


def _expected(rows):
    columns = ["negative", "positive", "surprise", "total", "subjects"]
    return pd.DataFrame(rows, index=list(rows), columns=columns).astype(int)


def test_megc2019_exact_counts(twin):
    m = megc2019(casme2=twin["casme2"], samm=twin["samm"], smic=twin["smic"])
    validate_manifest(m)
    expected = pd.DataFrame(
        [[70, 51, 43, 164, 16], [88, 32, 25, 145, 24], [92, 26, 15, 133, 28], [250, 109, 83, 442, 68]],
        index=["smic", "casme2", "samm", "all"], columns=["negative", "positive", "surprise", "total", "subjects"])
    got = _table(m).loc[expected.index]
    pd.testing.assert_frame_equal(got, expected, check_names=False, check_dtype=False)
    assert fold_groups(m).nunique() == 68
    assert m["label_id"].value_counts().to_dict() == {0: 250, 1: 109, 2: 83}
    keys = set(zip(m["subject"], m["clip"]))
    assert ("sub04", "EP12_01f") not in keys and ("sub05", "EP09_05f") not in keys
    issues = m.attrs["issues"]
    rows = list(issues[["dataset", "clip", "action"]].itertuples(index=False, name=None))
    assert rows == [("samm", "032_3_1", "fixed")]


def test_off_tanet_exact_counts(twin):
    m = off_tanet_composite(casme=twin["casme"], casme2=twin["casme2"], casme_sq=twin["casme_sq"])
    validate_manifest(m)
    expected = pd.DataFrame(
        [[85, 10, 19, 114, 16], [88, 32, 25, 145, 24], [21, 6, 8, 35, 9], [194, 48, 52, 294, 49]],
        index=["casme", "casme2", "casme_sq", "all"], columns=["negative", "positive", "surprise", "total", "subjects"])
    pd.testing.assert_frame_equal(_table(m).loc[expected.index], expected, check_names=False, check_dtype=False)
    assert fold_groups(m).nunique() == 49


def test_none_root_omits_source_and_overrides(twin):
    only = megc2019(casme2=twin["casme2"])
    assert set(only["dataset"]) == {"casme2"} and len(only) == 145
    assert len(megc2019()) == 0
    same = megc2019(casme2=twin["casme2"], casme2_annotation="CASME2-coding-20140508.xlsx")
    assert len(same) == 145
    with pytest.raises(TypeError, match="unexpected argument"):
        megc2019(casme2=twin["casme2"], bogus_annotation="x")


def test_shufflenet_mapping(twin):
    m = shufflenet_composite(casme2=twin["casme2"], smic=twin["smic"], samm=twin["samm"])
    counts = _table(m)
    assert counts.loc["casme2", "total"] == 32 + 25 + 63 + 7 + 2  # repression and others dropped
    assert counts.loc["samm", "total"] == 133 and "mmew" not in counts.index
    with_mmew = shufflenet_composite(**{k: twin[k] for k in ("casme2", "smic", "samm", "mmew")})
    assert _table(with_mmew).loc["mmew", "total"] == 300 - 66


def test_mobilevit_micro_apex_only(twin):
    m = mobilevit_micro(casme2=twin["casme2"], samm=twin["samm"], smic=twin["smic"], apex_only=True)
    validate_manifest(m)
    assert m["frames"].map(len).eq(1).all() and (m["onset"] == m["apex"]).all()
    assert set(m.loc[m["dataset"] == "casme2", "emotion"]) == {"happiness", "surprise", "disgust", "sadness"}


def test_rendered_composites_and_issues(tmp_path):
    small = dict(subjects_per_dataset=1, clips_per_subject=3, frame_size=(320, 240), n_frames=10)
    macro = write_composite("mobilevit_macro", tmp_path / "macro", **small)
    m = mobilevit_macro(**macro)
    validate_manifest(m)
    lengths = m.groupby("dataset")["frames"].apply(lambda s: set(s.map(len)))
    assert lengths["ckplus"] == {3} and lengths["oulu_casia"] == {3} and lengths["jaffe"] == {1}
    assert lengths["mug"] == {6}
    assert set(m["label"]) <= {"negative", "positive", "surprise"}

    roots = {"casme2": str(tmp_path / "casme2"), "samm": str(tmp_path / "samm"), "smic": str(tmp_path / "smic")}
    write_dataset("casme2", roots["casme2"], n_subjects=1, clips_per_subject=4, frame_size=(320, 240), n_frames=10,
                  faults=("blank_apex",))
    write_dataset("samm", roots["samm"], n_subjects=1, clips_per_subject=3, frame_size=(320, 240), n_frames=10,
                  faults=("apex_outside",))
    write_dataset("smic", roots["smic"], n_subjects=1, clips_per_subject=3, frame_size=(320, 240), n_frames=10)
    mm = load_composite("megc2019", **roots)
    assert set(mm.attrs["issues"]["dataset"]) == {"casme2", "samm"}
    gt = pd.concat([load_ground_truth(r) for r in roots.values()]).set_index(["dataset", "subject", "clip"])
    joined = mm.merge(gt.reset_index(), on=["dataset", "subject", "clip"], suffixes=("", "_gt"))
    assert len(joined) == len(mm)
    assert (joined["label"] == joined["motion_label"]).all()


# ----------------------------------------------------------------------------- releases

CLIP_COLUMNS = ["dataset", "subject", "clip", "label", "label_id", "onset", "apex", "offset", "frame_numbers"]


def _clips(manifest):
    return manifest.sort_values(["dataset", "subject", "clip"]).reset_index(drop=True)[CLIP_COLUMNS]


def test_off_tanet_composite_reads_the_cropped_releases(twin):
    roots = {k: twin[k] for k in ("casme", "casme2", "casme_sq")}
    raw = off_tanet_composite(**roots)
    cropped = off_tanet_composite(**roots, release="cropped")
    validate_manifest(cropped)
    assert len(cropped) == 294 and fold_groups(cropped).nunique() == 49  # datasets.md's table, from the crops
    pd.testing.assert_frame_equal(_clips(raw), _clips(cropped))
    assert set(raw["release"]) == {"raw"} and set(cropped["release"]) == {"cropped"}
    assert all("/Cropped/" in f[0] or "/cropped/" in f[0] for f in cropped["frames"])
    same = load_composite("off_tanet", release="cropped", **roots)
    pd.testing.assert_frame_equal(_clips(same), _clips(cropped))
    mixed = off_tanet_composite(**roots, release="cropped", casme2_release="raw")  # a per-source override wins
    assert mixed.groupby("dataset")["release"].agg(set).to_dict() == {
        "casme": {"cropped"}, "casme2": {"raw"}, "casme_sq": {"cropped"}}


def test_megc2019_and_mobilevit_read_the_cropped_releases(twin):
    roots = {k: twin[k] for k in ("casme2", "samm", "smic")}
    for build in (megc2019, mobilevit_micro):
        raw, cropped = build(**roots), build(**roots, release="cropped")
        pd.testing.assert_frame_equal(_clips(raw), _clips(cropped))
        assert set(cropped["release"]) == {"cropped"}
    assert len(megc2019(**roots, release="cropped")) == 442
    with pytest.raises(ValueError, match="release must be one of"):
        megc2019(release="crops")  # checked at the boundary, even without roots


def test_shufflenet_cropped_release_and_mmew(twin):
    roots = {k: twin[k] for k in ("casme2", "smic", "samm", "mmew")}
    with pytest.raises(ValueError, match="mmew: MMEW has no documented cropped release"):
        shufflenet_composite(**roots, release="cropped")
    without = shufflenet_composite(**{k: v for k, v in roots.items() if k != "mmew"}, release="cropped")
    assert set(without["release"]) == {"cropped"} and "mmew" not in set(without["dataset"])
    mixed = shufflenet_composite(**roots, release="cropped", mmew_release="raw")
    pd.testing.assert_frame_equal(_clips(mixed), _clips(shufflenet_composite(**roots)))
    assert mixed.groupby("dataset")["release"].agg(set).to_dict() == {
        "casme2": {"cropped"}, "samm": {"cropped"}, "smic": {"cropped"}, "mmew": {"raw"}}
    with pytest.raises(ValueError, match="macro-expression datasets have no cropped release"):
        load_composite("mobilevit_macro", release="cropped")


def test_rendered_off_tanet_composite_in_both_releases(tmp_path):
    roots = write_composite("off_tanet", tmp_path, subjects_per_dataset=2, clips_per_subject=3, n_frames=5,
                            frame_size=(320, 240), release="both")
    raw, cropped = off_tanet_composite(**roots), off_tanet_composite(**roots, release="cropped")
    assert len(raw) > 0
    pd.testing.assert_frame_equal(_clips(raw), _clips(cropped))
    gt = pd.concat([load_ground_truth(r) for r in roots.values()]).set_index(["dataset", "subject", "clip"])
    joined = cropped.merge(gt.reset_index(), on=["dataset", "subject", "clip"], suffixes=("", "_gt"))
    assert len(joined) == len(cropped)
    assert joined["crop_x0"].notna().all() and (joined["label"] == joined["motion_label"]).all()
