"""Synthetic layout writers: real sheet structures, file names, ground truth, determinism."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from mer_keras.data.readers._common import read_sheet
from mer_keras.data.synthetic import FAULTS, load_ground_truth, write_composite, write_dataset

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
    assert list(sheet.columns[:6]) == ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame"]
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
