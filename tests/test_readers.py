"""Dataset readers on their synthetic twins: schema, frames, labels and every bad-input rule."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_keras.data import (
    ISSUE_COLUMNS,
    MANIFEST_COLUMNS,
    READERS,
    AnnotationError,
    load_dataset,
    validate_manifest,
)
from mer_keras.data.readers import CASME2, SAMM, SMIC, smic_clip, smic_subject
from mer_keras.data.synthetic import load_ground_truth, write_dataset

logging.getLogger("mer_keras.data").setLevel(logging.ERROR)

TWINS = ("casme", "casme2", "samm", "smic", "smic_e", "mmew", "casme_sq", "ckplus", "oulu_casia", "jaffe")
FPS = {"casme": 60, "casme2": 200, "samm": 200, "smic": 100, "smic_e": 100, "mmew": 90, "casme_sq": 30,
       "ckplus": 30, "oulu_casia": 25, "jaffe": np.nan, "mug": 19}
SHEET_FAULTS = ("apex_outside", "missing_frames", "unknown_emotion", "duplicate_clip", "blank_apex")
SMALL = dict(n_subjects=1, clips_per_subject=3, frame_size=(320, 240), n_frames=8)


@pytest.fixture(scope="module")
def twin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    for name in TWINS:
        write_dataset(name, root / name, counts="real")
    return root


def _issue(issues, key, action):
    """The first issue row of ``key`` = (subject, clip) with ``action``."""
    subject, clip = key
    rows = issues[(issues["subject"] == subject) & (issues["clip"] == clip) & (issues["action"] == action)]
    assert len(rows), f"no {action!r} issue for {key}:\n{issues}"
    return rows.iloc[0]


def _problems(issues, key, action):
    """Every problem logged for ``key`` = (subject, clip) with ``action``."""
    subject, clip = key
    rows = issues[(issues["subject"] == subject) & (issues["clip"] == clip) & (issues["action"] == action)]
    return set(rows["problem"])


@pytest.mark.parametrize("name", TWINS)
def test_reader_on_twin(twin_root, name):
    reader = READERS[name](twin_root / name)
    m = reader.manifest
    validate_manifest(m)
    assert list(m.columns) == list(MANIFEST_COLUMNS)
    assert list(reader.issues.columns) == list(ISSUE_COLUMNS)
    assert m["subject"].map(type).eq(str).all() and (m["dataset"] == reader.name).all()
    np.testing.assert_array_equal(m["fps"].unique(), [FPS[name]])
    for row in m.head(20).itertuples():
        assert list(row.frame_numbers) == sorted(row.frame_numbers)
        assert row.frame_numbers[0] == row.onset and row.frame_numbers[-1] == row.offset
        assert all(Path(p).is_file() for p in row.frames)
    gt = load_ground_truth(twin_root / name).set_index(["subject", "clip"])
    joined = m.merge(gt.reset_index(), on=["subject", "clip"], how="left", suffixes=("", "_gt"))
    assert joined["emotion_gt"].notna().all(), "manifest ids must match the sidecar ids"
    labelled = joined[joined["label"].notna()]
    assert (labelled["label"] == labelled["motion_label"]).all()


def test_casme2_ids_and_default_labels(twin_root):
    m = load_dataset("casme2", twin_root / "casme2")
    assert m["subject"].str.fullmatch(r"sub\d\d").all() and m["subject"].nunique() == 26
    assert m["label"].value_counts().to_dict() == {"negative": 90, "positive": 32, "surprise": 25}
    assert m.loc[m["emotion"] == "others", "label_id"].eq(-1).all()
    custom = load_dataset("casme2", twin_root / "casme2", label_map={"Others": "negative"})
    assert custom["label"].value_counts().to_dict() == {"negative": 99}


def test_samm_bad_apex_fixed_to_middle(twin_root):
    reader = SAMM(twin_root / "samm")
    row = reader.manifest.set_index("clip").loc["032_3_1"]
    assert row["subject"] == "032" and (row["onset"], row["apex"], row["offset"]) == (4896, 4933, 4970)
    issue = _issue(reader.issues, ("032", "032_3_1"), "fixed")
    assert "1930" in issue["detail"] and issue["problem"] == "apex outside onset..offset"


def test_casme_sq_expression_types(twin_root):
    root = twin_root / "casme_sq"
    assert len(load_dataset("casme_sq", root)) == 57
    assert len(load_dataset("casme_sq", root, expression_type="macro")) == 300
    m = load_dataset("casme_sq", root, expression_type="all")
    assert len(m) == 357 and m["subject"].str.fullmatch(r"s\d+").all()
    assert m["clip"].str.fullmatch(r"[a-z]+\d_\d+").all()


def test_smic_spellings_and_apex(twin_root, tmp_path):
    assert smic_subject("s1") == smic_subject("s01") == smic_subject("1") == "s01"
    assert smic_clip("s1_ne_01") == smic_clip("s01_ne_01") == "s01_ne_01"
    base = SMIC(twin_root / "smic").manifest
    assert base["subject"].nunique() == 16 and base["clip"].str.fullmatch(r"s\d\d_(ne|po|sur)_\d\d").all()
    # the same data with MEGC-style folder names reads to the same ids; paths stay the real ones
    renamed = tmp_path / "HS"
    shutil.copytree(twin_root / "smic" / "SMIC_all_raw" / "HS", renamed)
    for clip in sorted(renamed.glob("s*/micro/*/*"), reverse=True):
        clip.rename(clip.with_name(smic_clip(clip.name)))
    for subject in renamed.iterdir():
        subject.rename(subject.with_name(smic_subject(subject.name)))
    other = SMIC(tmp_path).manifest
    assert other[["subject", "clip", "label"]].equals(base[["subject", "clip", "label"]])
    assert "/s01/micro/" in other["frames"].iloc[0][0] and "/s1/micro/" in base["frames"].iloc[0][0]
    # the apex: middle frame by default, else the given mapping (either spelling)
    first = base.iloc[0]
    assert first["apex"] == first["frame_numbers"][1]
    given = SMIC(twin_root / "smic", apex={"s1_ne_01": first["offset"]}).manifest.iloc[0]
    assert given["apex"] == first["offset"]


def test_smic_e_layout(twin_root):
    m = load_dataset("smic_e", twin_root / "smic_e")
    assert len(m) == 164 and m["clip"].iloc[0] == "s01_ne_01" and "/s01/s1_ne_01/" in m["frames"].iloc[0][0]


def test_macro_readers(twin_root):
    ck = load_dataset("ckplus", twin_root / "ckplus")
    assert len(ck) == 327 and ck["subject"].nunique() == 123
    assert (ck["apex"] == ck["offset"]).all() and ck.loc[ck["emotion"] == "happy", "label"].eq("positive").all()
    jaffe = load_dataset("jaffe", twin_root / "jaffe")
    assert jaffe["frames"].map(len).eq(1).all() and set(jaffe["subject"]) >= {"KA", "YM"}
    oulu = load_dataset("oulu_casia", twin_root / "oulu_casia")
    assert oulu["clip"].iloc[0].startswith("P001_")


def test_load_dataset_registry():
    assert set(READERS) >= {"casme", "casme2", "samm", "smic", "mmew", "casme_sq", "ckplus", "oulu_casia", "jaffe", "mug"}
    with pytest.raises(KeyError, match="unknown dataset"):
        load_dataset("nope", ".")


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ["casme", "casme2", "samm", "mmew", "casme_sq"])
def test_sheet_faults(tmp_path, name):
    info = write_dataset(name, tmp_path / name, counts="real", faults=SHEET_FAULTS)
    reader = READERS[name](info["root"])
    issues, m = reader.issues, reader.manifest
    validate_manifest(m)
    hit = info["faults"]
    assert _issue(issues, hit["apex_outside"][0], "fixed")["problem"] == "apex outside onset..offset"
    gone, no_onset, no_apex = hit["missing_frames"]
    assert _issue(issues, gone, "dropped")["problem"] in ("clip folder missing or empty", "no frame file inside onset..offset")
    assert _problems(issues, no_onset, "fixed") == {"onset/offset frame file missing"}
    assert _problems(issues, no_apex, "fixed") == {"frame files missing inside the clip", "apex frame file missing"}
    assert "confusion" in _issue(issues, hit["unknown_emotion"][0], "dropped")["detail"]
    assert _issue(issues, hit["duplicate_clip"][0], "dropped")["problem"] == "duplicate clip row"
    for clip in hit["blank_apex"]:
        assert _issue(issues, clip, "fixed")["problem"] == "apex blank or not a number"
    kept = m.set_index(["subject", "clip"])
    assert gone not in kept.index and hit["unknown_emotion"][0] not in kept.index
    row = kept.loc[hit["blank_apex"][0]]
    assert row["apex"] == (row["onset"] + row["offset"]) // 2
    assert len(m) == info["n_clips"] - 2 - (name == "casme_sq") * 300


@pytest.mark.parametrize("name,column", [("casme", "ApexF1"), ("casme2", "ApexFrame"), ("samm", "Apex Frame"),
                                         ("mmew", "ApexFrame"), ("casme_sq", "expression type"), ("smic_e", "OnsetF")])
def test_missing_column_names_column_and_file(tmp_path, name, column):
    info = write_dataset(name, tmp_path / name, counts="real", faults=("missing_column",))
    with pytest.raises(AnnotationError) as err:
        load_dataset(name, info["root"])
    message = str(err.value)
    assert repr(column) in message and Path(info["annotation"]).name in message


def test_folder_label_faults(tmp_path):
    info = write_dataset("smic", tmp_path / "smic", counts="real", faults=("missing_frames", "unknown_emotion", "duplicate_clip"))
    reader = SMIC(info["root"])
    hit = info["faults"]
    assert _issue(reader.issues, hit["missing_frames"][0], "dropped")["problem"] == "clip folder missing or empty"
    assert "others" in _issue(reader.issues, hit["unknown_emotion"][0], "dropped")["detail"]
    assert _issue(reader.issues, hit["duplicate_clip"][0], "dropped")["problem"] == "duplicate clip row"
    assert len(reader.manifest) == 164 - 2
    for name, faults in (("ckplus", ("missing_frames", "unknown_emotion")), ("oulu_casia", ("unknown_emotion",)),
                         ("jaffe", ("unknown_emotion",))):
        info = write_dataset(name, tmp_path / name, counts="real", faults=faults)
        issues = READERS[name](info["root"]).issues
        assert (issues["problem"] == "unknown emotion").sum() == 1 and (issues["action"] == "dropped").all()


def test_casme2_blank_unnamed_columns_and_extra_header_spaces(tmp_path):
    info = write_dataset("casme2", tmp_path, counts="real", version="20190701")
    path = Path(info["annotation"])
    sheet = pd.read_excel(path)
    sheet = sheet.rename(columns={"OnsetFrame": "  onsetframe ", "Estimated Emotion": "ESTIMATED EMOTION"})
    sheet.insert(3, "Extra", "x")
    sheet.to_excel(path, index=False)
    assert len(CASME2(tmp_path).manifest) == 255


def test_rendered_reader_matches_ground_truth(tmp_path):
    info = write_dataset("samm", tmp_path / "samm", **SMALL)
    m = SAMM(info["root"]).manifest.set_index("clip")
    gt = info["clips"].set_index("clip")
    assert (m.loc[gt.index, "apex"] == gt["apex"]).all() and (m.loc[gt.index, "onset"] == gt["onset"]).all()
    assert re.fullmatch(r"006_\d{5}\.jpg", Path(m["frames"].iloc[0][0]).name)
    from PIL import Image

    image = Image.open(m["frames"].iloc[0][0])
    assert image.size == (320, 240) and image.mode == "L"


def test_mug_rendered(tmp_path):
    info = write_dataset("mug", tmp_path / "mug", n_subjects=1, clips_per_subject=2, frame_size=(256, 256), n_frames=7,
                         faults=("missing_frames",))
    reader = READERS["mug"](info["root"])
    m = reader.manifest
    assert len(m) == 1 and m["clip"].iloc[0].count("_take") == 1 and len(m["frames"].iloc[0]) == 7
    assert m["apex"].iloc[0] == m["frame_numbers"].iloc[0][3]  # no apex annotated: the middle frame
    assert list(reader.issues["problem"]) == ["clip folder missing or empty"]
