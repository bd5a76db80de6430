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
    root = tmp_path_factory.mktemp("twin")
    roots = write_composite("shufflenet", root, counts="real")  # casme2, smic, samm, mmew
    roots.update({k: v for k, v in write_composite("off_tanet", root, counts="real").items() if k != "casme2"})
    return roots


def _table(manifest):
    return summarize(manifest)[["negative", "positive", "surprise", "total", "subjects"]]


def _expected(rows):
    return pd.DataFrame(rows, index=list(rows), columns=["negative", "positive", "surprise", "total", "subjects"]).astype(int)


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
    assert list(issues[["dataset", "clip", "action"]].itertuples(index=False, name=None)) == [("samm", "032_3_1", "fixed")]


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
