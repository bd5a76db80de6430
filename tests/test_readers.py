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
from mer_keras.data.manifest import make_manifest
from mer_keras.data.readers import CASME2, SAMM, SMIC, smic_clip, smic_subject
from mer_keras.data.readers._common import list_frames
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
    assert set(m["release"]) == {"raw"}  # a raw-only write; the macro readers always read raw frames
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
    assert set(READERS) >= {"casme", "casme2", "samm", "smic", "mmew", "casme_sq", "ckplus", "oulu_casia", "jaffe",
                            "mug"}
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
    assert _issue(issues, gone, "dropped")["problem"] in ("clip folder missing or empty",
                                                          "no frame file inside onset..offset")
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
    info = write_dataset("smic", tmp_path / "smic", counts="real",
                         faults=("missing_frames", "unknown_emotion", "duplicate_clip"))
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


# ----------------------------------------------------------------------------- releases

CROPPED = ("casme", "casme2", "casme_sq", "samm", "smic", "smic_e")
RAW_DIRS = {"casme": "CASME_raw_selected", "casme2": "CASME2_RAW_selected", "casme_sq": "rawpic", "samm": "SAMM",
            "smic": "SMIC_all_raw/HS", "smic_e": "SMIC-HS-E"}
CROPPED_DIRS = {"casme": "Cropped", "casme2": "Cropped", "casme_sq": "cropped", "samm": "SAMM_CROP",
                "smic": "SMIC_all_cropped/HS", "smic_e": "SMIC-HS-E_cropped"}
CROPPED_NAMES = {"casme": r"reg_EP\d\d_\d-\d+\.jpg", "casme2": r"reg_img\d+\.jpg", "casme_sq": r"img\d+\.jpg",
                 "samm": r"\d{3}_\d{5}\.jpg", "smic": r"reg_image\d{6}\.bmp", "smic_e": r"reg_image\d{6}\.jpg"}
"""The cropped layouts the writer twins (datasets.md: CASME II ``Cropped/.../reg_img46.jpg``, CASME
``reg_EP01_5-113.jpg``; the others inferred, see the readers' docstrings)."""
BOTH = dict(n_subjects=2, clips_per_subject=3, n_frames=5, frame_size=(320, 240), release="both")
CLIP_COLUMNS = ["subject", "clip", "emotion", "label", "label_id", "onset", "apex", "offset", "frame_numbers"]


@pytest.fixture(scope="module", params=CROPPED)
def both_releases(request, tmp_path_factory):
    """A small rendered set written with its raw frames and its cropped release."""
    name = request.param
    return name, write_dataset(name, tmp_path_factory.mktemp(f"both_{name}") / name, **BOTH)


def _by_clip(manifest):
    return manifest.sort_values(["subject", "clip"]).reset_index(drop=True)


def test_cropped_release_reads_the_same_clips_from_the_cropped_folders(both_releases):
    name, info = both_releases
    root = Path(info["root"])
    raw, cropped = (_by_clip(READERS[name](root, release=r).manifest) for r in ("raw", "cropped"))
    validate_manifest(raw), validate_manifest(cropped)
    assert len(raw) == info["n_clips"] == 6
    pd.testing.assert_frame_equal(raw[CLIP_COLUMNS], cropped[CLIP_COLUMNS])
    gt = info["clips"].sort_values(["subject", "clip"]).reset_index(drop=True)
    assert list(cropped["onset"]) == list(gt["onset"]) and list(cropped["offset"]) == list(gt["offset"])
    if name not in ("smic", "smic_e"):  # SMIC annotates no apex: the middle frame is taken
        assert list(cropped["apex"]) == list(gt["apex"])
    assert set(raw["release"]) == {"raw"} and set(cropped["release"]) == {"cropped"}
    for raw_frames, cropped_frames in zip(raw["frames"], cropped["frames"]):
        assert all(Path(f).is_relative_to(root / RAW_DIRS[name]) for f in raw_frames)
        assert all(Path(f).is_relative_to(root / CROPPED_DIRS[name]) for f in cropped_frames)
        assert all(re.fullmatch(CROPPED_NAMES[name], Path(f).name) for f in cropped_frames)


def test_cropped_frames_are_the_raw_frames_cut_by_the_stored_box(both_releases):
    import cv2

    name, info = both_releases
    root = Path(info["root"])
    raw, cropped = (_by_clip(READERS[name](root, release=r).manifest) for r in ("raw", "cropped"))
    gt = load_ground_truth(root).set_index(["subject", "clip"])
    boxes = gt[["crop_x0", "crop_y0", "crop_x1", "crop_y1"]]
    assert boxes.notna().all().all()
    per_subject = boxes.groupby(level="subject").nunique()
    assert (per_subject == 1).all().all(), "one fixed box per subject"
    assert len(boxes.drop_duplicates()) == 2, "the two subjects' faces get their own boxes"
    pattern = READERS[name].frame_pattern
    for r, c in zip(raw.itertuples(), cropped.itertuples()):
        x0, y0, x1, y1 = (int(v) for v in boxes.loc[(r.subject, r.clip)])
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
        for raw_path, crop_path in zip(r.frames, c.frames):
            full = cv2.imread(raw_path, cv2.IMREAD_GRAYSCALE).astype(np.int16)
            face = cv2.imread(crop_path, cv2.IMREAD_GRAYSCALE).astype(np.int16)
            assert face.shape == (y1 - y0, x1 - x0)
            assert np.abs(full[y0:y1, x0:x1] - face).mean() < 3  # JPEG noise only (BMP: exact)
            assert np.abs(full[y0 + 1:y1 + 1, x0 + 1:x1 + 1] - face).mean() > 6  # one pixel off is not a match
        # every written frame, the padding frames included, has its crop at the same number
        raw_numbers = set(list_frames(Path(r.frames[0]).parent, pattern))
        assert raw_numbers == set(list_frames(Path(c.frames[0]).parent, pattern))
        assert raw_numbers > set(r.frame_numbers) or name == "smic"  # SMIC clips are written unpadded


@pytest.mark.parametrize("name", CROPPED)
def test_cropped_release_missing_names_the_folders_and_the_fix(twin_root, name):
    with pytest.raises(FileNotFoundError) as err:
        READERS[name](twin_root / name, release="cropped")
    message = str(err.value)
    assert CROPPED_DIRS[name] in message and str(twin_root / name) in message
    assert "release='raw'" in message and "frames_dir=" in message


def test_release_values_are_checked_and_mmew_has_no_cropped_release(twin_root):
    with pytest.raises(ValueError, match=r"release must be one of \('raw', 'cropped'\).*'crop'"):
        CASME2(twin_root / "casme2", release="crop")
    with pytest.raises(ValueError, match="no documented cropped release.*release='raw'"):
        READERS["mmew"](twin_root / "mmew", release="cropped")
    assert set(READERS["mmew"](twin_root / "mmew", release="raw").manifest["release"]) == {"raw"}


@pytest.mark.parametrize("name", CROPPED)
def test_raw_falls_back_to_a_lone_cropped_release(tmp_path, name):
    info = write_dataset(name, tmp_path / name, counts="real", release="cropped")
    root = Path(info["root"])
    assert not (root / RAW_DIRS[name]).exists() and (root / CROPPED_DIRS[name]).is_dir()
    fallback = READERS[name](root).manifest
    cropped = READERS[name](root, release="cropped").manifest
    assert set(fallback["release"]) == {"cropped"} and len(fallback) == len(cropped) > 0
    assert list(fallback["frames"]) == list(cropped["frames"])
    assert Path(fallback["frames"].iloc[0][0]).is_relative_to(root / CROPPED_DIRS[name])


def test_frames_dir_override_is_taken_as_the_requested_release(tmp_path):
    info = write_dataset("casme2", tmp_path / "casme2", counts="real", release="both")
    root = Path(info["root"])
    crops = CASME2(root, frames_dir=root / "Cropped", release="cropped").manifest
    assert set(crops["release"]) == {"cropped"} and "/Cropped/" in crops["frames"].iloc[0][0]
    raw = CASME2(root, frames_dir="CASME2_RAW_selected").manifest
    assert set(raw["release"]) == {"raw"} and len(raw) == len(crops) == 255
    smic = write_dataset("smic", tmp_path / "smic", counts="real", release="both")["root"]
    hs = SMIC(smic, frames_dir=Path(smic) / "SMIC_all_cropped" / "HS", release="cropped").manifest
    assert set(hs["release"]) == {"cropped"} and len(hs) == 164
    inside = SMIC(Path(smic) / "SMIC_all_cropped", release="cropped").manifest  # root = the release itself
    assert list(inside["frames"]) == list(hs["frames"])


def test_manifest_release_column_defaults_to_raw_and_is_validated():
    row = dict(dataset="d", subject="s", clip="c", frames=("a.jpg",), frame_numbers=(1,), onset=1, apex=1, offset=1,
               emotion="happiness", label="positive", fps=30.0)
    m = make_manifest([row])
    assert list(m.columns) == list(MANIFEST_COLUMNS) and m["release"].tolist() == ["raw"]
    assert make_manifest([dict(row, release="cropped")])["release"].tolist() == ["cropped"]
    validate_manifest(m)
    with pytest.raises(ValueError, match="release 'crop' is not one of"):
        validate_manifest(make_manifest([dict(row, release="crop")]))
