"""Synthetic layout writers: real sheet structures, file names, ground truth, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mer_keras.data.readers import READERS
from mer_keras.data.readers._common import read_sheet
from mer_keras.data.synthetic import FAULTS, load_ground_truth, write_composite, write_dataset
from mer_keras.data.synthetic.cropped import CROP_COLUMNS, crop_box
from mer_keras.data.synthetic.layouts import CROPPED_RELEASES

logging.getLogger("mer_keras.data").setLevel(logging.ERROR)

SMALL = dict(n_subjects=1, clips_per_subject=3, frame_size=(320, 240), n_frames=8)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("twins")
    names = ("casme", "casme2", "samm", "smic", "smic_e", "mmew", "casme_sq", "ckplus", "oulu_casia", "jaffe")
    return {n: write_dataset(n, root / n, counts="real") for n in names}


@pytest.fixture(scope="module")
def rendered_casme2(tmp_path_factory):
    return write_dataset("casme2", tmp_path_factory.mktemp("r") / "casme2", seed=3, **SMALL)


def test_twin_sizes(twins):
    sizes = {n: info["n_clips"] for n, info in twins.items()}
    assert sizes == {"casme": 189, "casme2": 255, "samm": 159, "smic": 164, "smic_e": 164, "mmew": 300,
                     "casme_sq": 357, "ckplus": 593, "oulu_casia": 480, "jaffe": 213}


def test_casme2_sheet_and_emotion_counts(twins):
    info = twins["casme2"]
    assert info["annotation"].endswith("CASME2-coding-20140508.xlsx")
    sheet = pd.read_excel(info["annotation"])
    assert list(sheet.columns) == ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame",
                                   "Action Units", "Estimated Emotion"]
    assert sheet["Estimated Emotion"].value_counts().to_dict() == {
        "others": 99, "disgust": 63, "happiness": 32, "repression": 27, "surprise": 25, "sadness": 7, "fear": 2}
    assert sheet["Subject"].nunique() == 26
    rows = sheet.set_index("Filename")
    assert rows.loc["EP12_01f", "Subject"] == 4 and rows.loc["EP12_01f", "Estimated Emotion"] == "disgust"
    assert rows.loc["EP09_05f", "Subject"] == 5 and rows.loc["EP09_05f", "Estimated Emotion"] == "disgust"


def test_casme2_later_version_has_blank_columns(tmp_path):
    info = write_dataset("casme2", tmp_path, counts="real", version="20190701")
    sheet = pd.read_excel(info["annotation"])
    assert info["annotation"].endswith("CASME2-coding-20190701.xlsx")
    assert {"Unnamed: 2", "Unnamed: 6", "Objective Class"} <= set(sheet.columns)


def test_samm_header_is_fourteenth_row(twins):
    sheet = pd.read_excel(twins["samm"]["annotation"], header=13)
    assert list(sheet.columns[:6]) == ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame",
                                       "Offset Frame"]
    assert "Estimated Emotion" in sheet.columns and len(sheet) == 159
    bad = sheet.set_index("Filename").loc["032_3_1"]
    assert (bad["Onset Frame"], bad["Apex Frame"], bad["Offset Frame"]) == (4896, 1930, 4970)
    assert sheet["Estimated Emotion"].value_counts()["Anger"] == 57
    assert (twins["samm"]["clips"].query("clip == '032_3_1'")["n_frames"] == 75).all()


def test_casme_xls_has_blank_columns(twins):
    sheet = read_sheet(twins["casme"]["annotation"])
    assert twins["casme"]["annotation"].endswith(".xls")
    assert [c for c in sheet.columns if not c.startswith("Unnamed")] == [
        "Subject", "Filename", "OnsetF", "ApexF1", "ApexF2", "OffsetF", "Action Units", "Emotion"]
    assert {"Unnamed: 2", "Unnamed: 7"} <= set(sheet.columns)


def test_casme_sq_sheets_without_header(twins):
    sheets = pd.read_excel(twins["casme_sq"]["annotation"], sheet_name=None, header=None)
    assert list(sheets) == ["CASFEcode_final", "naming rule1", "naming rule2"]
    main = sheets["CASFEcode_final"]
    assert main.shape == (357, 9) and isinstance(main.iloc[0, 2], (int, np.integer))
    assert main[7].value_counts().to_dict() == {"macro-expression": 300, "micro-expression": 57}
    assert sheets["naming rule1"].shape == (22, 3)


def test_frame_file_names(twins):
    root = twins["casme2"]["root"]
    from pathlib import Path

    assert sorted(p.name for p in (Path(root) / "CASME2_RAW_selected" / "sub04" / "EP12_01f").iterdir()) == [
        "img40.jpg", "img41.jpg", "img42.jpg"]
    samm = Path(twins["samm"]["root"]) / "SAMM" / "032" / "032_3_1"
    assert (samm / "032_04896.jpg").is_file() and (samm / "032_04970.jpg").is_file()
    smic = Path(twins["smic"]["root"]) / "SMIC_all_raw" / "HS" / "s1" / "micro" / "negative" / "s1_ne_01"
    assert sorted(p.name for p in smic.iterdir())[0] == "image020000.bmp"
    assert (Path(twins["ckplus"]["root"]) / "Emotion" / "S005" / "001" / "S005_001_00000003_emotion.txt").is_file()
    assert (Path(twins["jaffe"]["root"]) / "KA.AN1.1.tiff").is_file()
    rawpic = Path(twins["casme_sq"]["root"]) / "rawpic" / "s15"
    assert any(p.name.startswith("15_0101") for p in rawpic.iterdir())


def test_rendered_ground_truth(rendered_casme2):
    info = rendered_casme2
    gt = load_ground_truth(info["root"], flows=True)
    assert len(gt) == 3 and set(gt["motion_label"]) == {"negative", "positive", "surprise"}
    assert gt["apex_flow"].iloc[0].shape == (240, 320, 2)
    assert (gt["onset"] <= gt["apex"]).all() and (gt["apex"] <= gt["offset"]).all()
    npz = np.load(f"{info['root']}/.synthetic/{gt['ground_truth'].iloc[0]}")
    assert {"apex_flow", "label", "blink", "onset_index", "apex_index", "frame_numbers"} <= set(npz.files)
    # frames exist one before the onset and one after the offset (padding of the raw folder)
    sheet = pd.read_excel(info["annotation"])
    assert len(sheet) == 3


def test_rendered_is_deterministic(rendered_casme2, tmp_path):
    again = write_dataset("casme2", tmp_path / "again", seed=3, **SMALL)
    a, b = rendered_casme2["clips"], again["clips"]
    pd.testing.assert_frame_equal(a.drop(columns="ground_truth"), b.drop(columns="ground_truth"))
    first = load_ground_truth(rendered_casme2["root"], flows=True)["apex_flow"].iloc[1]
    second = load_ground_truth(again["root"], flows=True)["apex_flow"].iloc[1]
    np.testing.assert_array_equal(first, second)


def test_fault_validation(tmp_path):
    with pytest.raises(ValueError, match="unknown fault"):
        write_dataset("casme2", tmp_path / "a", counts="real", faults=("bogus",))
    with pytest.raises(ValueError, match="do not apply"):
        write_dataset("smic", tmp_path / "b", counts="real", faults=("blank_apex",))
    info = write_dataset("samm", tmp_path / "c", counts="real", faults=FAULTS[:4] + ("blank_apex",))
    assert sum(len(v) for v in info["faults"].values()) == 1 + 3 + 1 + 1 + 2
    assert set(info["clips"]["fault"].dropna()) >= {"apex_outside", "missing_frames", "blank_apex"}


def test_write_composite_roots(tmp_path):
    roots = write_composite("off_tanet", tmp_path, counts="real")
    assert list(roots) == ["casme", "casme2", "casme_sq"]
    with pytest.raises(KeyError):
        write_composite("nope", tmp_path)


# ----------------------------------------------------------------------------- cropped releases


def test_cropped_twin_layouts_and_file_names(tmp_path):
    from pathlib import Path

    both = Path(write_dataset("casme2", tmp_path / "casme2", counts="real", release="both")["root"])
    assert sorted(p.name for p in (both / "Cropped" / "sub04" / "EP12_01f").iterdir()) == [
        "reg_img40.jpg", "reg_img41.jpg", "reg_img42.jpg"]  # datasets.md: Cropped/sub01/EP02_01f/reg_img46.jpg
    assert (both / "CASME2_RAW_selected" / "sub04" / "EP12_01f" / "img40.jpg").is_file()
    only = write_dataset("casme", tmp_path / "casme", counts="real", release="cropped")
    root = Path(only["root"])
    assert not (root / "CASME_raw_selected").exists() and only["release"] == "cropped"
    names = {p.name for p in (root / "Cropped" / "sub01").glob("*/*.jpg")}
    assert names and all(n.startswith("reg_EP") for n in names)  # datasets.md: reg_EP01_5-113.jpg
    assert only["clips"][list(CROP_COLUMNS)].isna().all().all()  # the twin's tiny frames are not crops
    for name, path in (("samm", "SAMM_CROP/032/032_3_1/032_04896.jpg"),
                       ("smic", "SMIC_all_cropped/HS/s1/micro/negative/s1_ne_01/reg_image020000.bmp"),
                       ("casme_sq", "cropped/s15"), ("smic_e", "SMIC-HS-E_cropped/s01")):
        root = Path(write_dataset(name, tmp_path / name, counts="real", release="cropped")["root"])
        assert (root / path).exists(), path
    assert sorted(CROPPED_RELEASES) == ["casme", "casme2", "casme_sq", "samm", "smic", "smic_e"]


def test_release_validation(tmp_path):
    with pytest.raises(ValueError, match=r"release must be one of \('raw', 'cropped', 'both'\)"):
        write_dataset("casme2", tmp_path / "a", counts="real", release="crop")
    for name, release in (("mmew", "cropped"), ("ckplus", "both"), ("jaffe", "cropped")):
        with pytest.raises(ValueError, match=f"{name}: the dataset has no documented cropped release"):
            write_dataset(name, tmp_path / name, counts="real", release=release)
    roots = write_composite("shufflenet", tmp_path / "composite", counts="real", release="both")
    from pathlib import Path

    assert (Path(roots["casme2"]) / "Cropped").is_dir() and (Path(roots["samm"]) / "SAMM_CROP").is_dir()
    assert sorted(p.name for p in Path(roots["mmew"]).iterdir() if not p.name.startswith(".")) == [
        "MMEW_Micro_Exp.xlsx", "Micro_Expression"]  # MMEW: raw only, as the docstring says
    with pytest.raises(ValueError, match="release must be one of"):
        write_composite("off_tanet", tmp_path / "x", counts="real", release="all")


def test_crop_box_is_the_widened_landmark_box_at_native_resolution():
    from mer_keras.data.synthetic.faces import make_subjects

    for subject in make_subjects(3, frame_size=(640, 480), seed=5):
        x0, y0, x1, y1 = crop_box(subject.landmarks, (640, 480))
        (lx0, ly0), (lx1, ly1) = subject.landmarks.min(0), subject.landmarks.max(0)
        assert 150 <= y1 - y0 <= 300 and 120 <= x1 - x0 <= 300  # like the released crops (about 150-250 px)
        assert x0 <= lx0 - 0.05 * (lx1 - lx0) and x1 >= lx1 + 0.05 * (lx1 - lx0)
        assert ly0 - 0.25 * (ly1 - ly0) - 1 < y0 <= ly0 - 0.25 * (ly1 - ly0)  # brows and a little forehead
        assert ly1 < y1 <= ly1 + 2  # down to the chin
    # clipped to the frame
    points = np.array([[2.0, 10.0], [310.0, 10.0], [150.0, 239.5]])
    assert crop_box(points, (320, 240)) == (0, 0, 320, 240)
    assert crop_box(points * 0.5 + 40, (320, 240)) == (33, 16, 204, 161)  # x 41..195, y 45..159.75
    with pytest.raises(ValueError, match="landmarks must be"):
        crop_box(np.zeros(5), (320, 240))


def test_rendered_crop_boxes_are_the_subjects_boxes_and_frames_do_not_depend_on_release(tmp_path, rendered_casme2):
    from pathlib import Path

    from mer_keras.data.synthetic.faces import make_subjects

    info = write_dataset("samm", tmp_path / "samm", n_subjects=2, clips_per_subject=2, frame_size=(320, 240),
                         n_frames=5, seed=4, release="cropped")
    root = Path(info["root"])
    assert not (root / "SAMM").exists() and (root / "SAMM_CROP").is_dir()
    subjects = make_subjects(2, frame_size=(320, 240), grey=True, seed=4)
    gt = load_ground_truth(root)
    for row in gt.itertuples():
        expected = crop_box(subjects[int(row.subject) - 6].landmarks, (320, 240))
        assert (row.crop_x0, row.crop_y0, row.crop_x1, row.crop_y1) == expected
    assert rendered_casme2["clips"][list(CROP_COLUMNS)].isna().all().all()  # raw-only write: empty
    both = write_dataset("casme2", tmp_path / "casme2", seed=3, release="both", **SMALL)
    for a, b in zip(sorted(Path(rendered_casme2["root"], "CASME2_RAW_selected").rglob("*.jpg")),
                    sorted(Path(both["root"], "CASME2_RAW_selected").rglob("*.jpg"))):
        assert a.read_bytes() == b.read_bytes()


def test_file_faults_hit_every_release_written(tmp_path):
    info = write_dataset("casme2", tmp_path / "casme2", counts="real", release="both", faults=("missing_frames",))
    raw, cropped = (READERS["casme2"](info["root"], release=r) for r in ("raw", "cropped"))
    columns = ["subject", "clip", "problem", "action"]
    assert len(raw.issues) == 4  # the clip gone, its onset frame, a missing frame inside, its apex frame
    pd.testing.assert_frame_equal(raw.issues[columns], cropped.issues[columns])
    faults = ("missing_frames", "unknown_emotion", "duplicate_clip")
    smic = write_dataset("smic", tmp_path / "smic", counts="real", release="both", faults=faults)
    raw, cropped = (READERS["smic"](smic["root"], release=r) for r in ("raw", "cropped"))
    assert len(raw.manifest) == len(cropped.manifest) == 164 - 2
    pd.testing.assert_frame_equal(raw.issues[columns], cropped.issues[columns])
