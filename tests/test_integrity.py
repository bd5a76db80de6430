"""Silent wrong results refused: damaged frames, a non-cache ``prepare --out``, a tampered bundle.

* A truncated JPEG (OpenCV decodes it partly, with grey bottom rows) and a clip whose
  frames differ in size: ``prepare`` counts a skip with the reason and does not list the
  clip; ``predict`` refuses the same folder with the same text
  (:mod:`mer_keras.preprocess.frames`, shared by both).
* ``prepare`` into an existing folder that is not a cache is refused, its files untouched;
  an empty folder and an earlier cache (resume) stay allowed.
* Every field of a bundle's ``pipeline.json`` that changes what a prediction means,
  tampered, is refused at read time with a message naming the field and the file.

Data: a synthetic CASME II-layout set (1 subject x 3 clips, 7 frames, 320 x 240), prepared
at the STSTNet preset (28 px); the bundle is an untrained two-layer network (only reading
and refusing are tested here).
"""

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from mer_keras.preprocess.frames import FrameError, check_clip_frames, inspect_frame

CLASSES = ["negative", "positive", "surprise"]


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """The dataset with clip 0's apex frame truncated and clip 1's last frame written at another size, prepared."""
    from mer_keras.data import load_dataset
    from mer_keras.data.synthetic import write_dataset
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    root = tmp_path_factory.mktemp("integrity")
    write_dataset("casme2", root / "data", n_subjects=1, clips_per_subject=3, n_frames=7, frame_size=(320, 240),
                  seed=7, release="cropped")  # the ststnet preset's input: the cropped release
    manifest = load_dataset("casme2", root / "data", release="cropped")
    manifest = manifest[manifest["label_id"] >= 0].reset_index(drop=True)
    assert len(manifest) == 3
    rows = manifest.to_dict("records")
    truncated = Path(rows[0]["frames"][list(rows[0]["frame_numbers"]).index(rows[0]["apex"])])
    _truncate(truncated)
    resized = Path(rows[1]["frames"][-1])
    cv2.imwrite(str(resized), cv2.resize(cv2.imread(str(resized)), (160, 120)))
    result = prepare(manifest, root / "cache", PreprocessConfig.preset("ststnet"), workers=1, progress=False)
    return dict(root=root, manifest=manifest, rows=rows, truncated=truncated, resized=resized, result=result,
                cache=root / "cache")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """An untrained STSTNet-shaped bundle (28 x 28 x 3 flow image, three classes) written by ``write_bundle``."""
    import keras

    from mer_keras.inference.bundle import pipeline_meta, write_bundle
    from mer_keras.preprocess.pipeline import PreprocessConfig
    from mer_keras.training.recipes import get_recipe

    model = keras.Sequential([keras.Input((28, 28, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    meta = pipeline_meta(model, preprocess=PreprocessConfig.preset("ststnet"), input_kind="flow_image",
                         class_names=CLASSES, recipe=get_recipe("ststnet"))
    return write_bundle(tmp_path_factory.mktemp("bundle") / "ststnet", model, meta)


def _reason(result, key):
    skipped = result.skipped.set_index("key")["reason"]
    assert key in skipped.index, result.skipped
    return skipped[key]


def _key(row):
    from mer_keras.preprocess.cache import clip_key

    return clip_key(row)


# ----------------------------------------------------------------------------- 1. frames


def test_truncated_jpeg_is_a_counted_skip_in_prepare_and_refused_by_predict(damaged, bundle):
    from mer_keras.inference import load_pipeline
    from mer_keras.preprocess.cache import PreparedCache

    grey = cv2.imread(str(damaged["truncated"]), cv2.IMREAD_GRAYSCALE)
    assert grey is not None  # what made it silent: OpenCV decodes the truncated file
    result, key = damaged["result"], _key(damaged["rows"][0])
    reason = _reason(result, key)
    assert reason.startswith("FrameError: ") and "truncated JPEG" in reason and str(damaged["truncated"]) in reason
    cache = PreparedCache(damaged["cache"])
    assert key not in set(cache.manifest["key"]) and len(cache.manifest) == 1
    assert "prepared 1 of 3 clips" in result.summary() and "skipped 2: FrameError" in result.summary()

    folder = damaged["truncated"].parent
    batch = load_pipeline(bundle).predict_many([folder])
    assert not batch.predictions and len(batch.failures) == 1
    assert batch.failures[0].error == reason.removeprefix("FrameError: ")  # same reason, same words


def test_mixed_frame_sizes_are_refused_by_prepare_and_predict_alike(damaged, bundle, tmp_path):
    from mer_keras.inference import ClipError, load_pipeline, read_clip

    reason = _reason(damaged["result"], _key(damaged["rows"][1]))
    assert reason.startswith("FrameError: ") and "frames differ in size or channels" in reason
    assert re.search(rf"the first frame is \d+x\d+, 3 channels, but {damaged['resized'].name} is 160x120, 3 channels",
                     reason), reason
    folder = damaged["resized"].parent
    batch = load_pipeline(bundle).predict_many([folder])
    assert [f.error for f in batch.failures] == [reason.removeprefix("FrameError: ")]

    # channel counts too: one grey JPEG among colour ones, refused by the shared check and by predict
    clip = tmp_path / "clip"
    shutil.copytree(Path(damaged["rows"][2]["frames"][0]).parent, clip)
    last = sorted(clip.iterdir())[-1]
    cv2.imwrite(str(last), cv2.imread(str(last), cv2.IMREAD_GRAYSCALE))
    width, height = inspect_frame(last).width, inspect_frame(last).height
    with pytest.raises(FrameError, match=f"is {width}x{height}, 3 channels, but {last.name} is {width}x{height}, "
                                         "1 channel;"):
        check_clip_frames(sorted(clip.iterdir()))
    with pytest.raises(ClipError, match="frames differ in size or channels"):
        read_clip(clip)


def test_frame_inspection_finds_every_truncation_and_accepts_trailers(tmp_path):
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur((rng.random((60, 80, 3)) * 255).astype(np.uint8), (5, 5), 2)
    for name, params in [("a.jpg", []), ("p.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ("a.png", []), ("a.bmp", []),
                         ("a.tif", [])]:
        path = tmp_path / name
        cv2.imwrite(str(path), image, params)
        data = path.read_bytes()
        assert (inspect_frame(path).width, inspect_frame(path).height) == (80, 60)
        path.write_bytes(data + b"\0" * 64)  # bytes after the end marker (camera trailers) are ignored, as decoders do
        inspect_frame(path)
        for cut in np.linspace(1, len(data) - 1, 12).astype(int):
            path.write_bytes(data[:cut])
            with pytest.raises(FrameError, match="truncated|not an image"):
                inspect_frame(path)


# ----------------------------------------------------------------------------- 2. --out


def test_prepare_refuses_a_folder_that_is_not_a_cache(damaged, tmp_path):
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    config = PreprocessConfig.preset("ststnet")
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "manifest.csv").write_text("my,own\n1,2\n")
    (mine / "skipped.csv").write_text("precious\n")
    with pytest.raises(ValueError, match="pick an empty or new folder") as exc:
        prepare(damaged["manifest"], mine, config, workers=1, progress=False)
    assert isinstance(exc.value, FileExistsError) and str(mine) in str(exc.value) and "no cache.json" in str(exc.value)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.csv", "skipped.csv"]
    assert (mine / "manifest.csv").read_text() == "my,own\n1,2\n" and (mine / "skipped.csv").read_text() == "precious\n"
    with pytest.raises(FileExistsError, match="is a file"):
        prepare(damaged["manifest"], mine / "manifest.csv", config, workers=1, progress=False)

    # allowed: an empty existing folder, and an earlier cache (resumed: nothing recomputed)
    empty = tmp_path / "empty"
    empty.mkdir()
    ok = damaged["manifest"].iloc[[2]]
    assert prepare(ok, empty, config, workers=1, progress=False).n_computed == 1
    again = prepare(damaged["manifest"], damaged["cache"], config, workers=1, progress=False)
    assert (again.n_reused, again.n_computed, len(again.skipped)) == (1, 0, 2)


# ----------------------------------------------------------------------------- 3. bundle fields


def _set(meta, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        meta = meta[p]
    if value is _DELETE:
        del meta[last]
    else:
        meta[last] = value


_DELETE = object()

TAMPERED = [
    ("format_version", "1", "format_version"),
    ("preprocess.fingerprint", 12, "preprocess.fingerprint"),
    ("preprocess.config.size", -5, "preprocess.config"),
    ("preprocess.config.interpolation", "bilinear", "preprocess.config"),
    ("input.kind", "optical_flow", "input.kind"),
    ("input.kind", "apex", "input.shape"),
    ("input.shape", [28, 28], "input.shape"),
    ("input.shape", [32, 32, 3], "input.shape"),
    ("input.shape", [28.5, 28, 3], "input.shape"),
    ("input.dtype", "complex128", "input.dtype"),
    ("input.dtype", "float16", "input.dtype"),
    ("class_names", ["negative", "positive"], "class_names"),
    ("class_names", ["negative", "positive", "positive"], "class_names"),
    ("class_names", "negative,positive,surprise", "class_names"),
    ("output.score_kind", "logit", "output.score_kind"),
    ("output.score_kind", "svm_score", "output.score_kind"),
    ("output.clip_score", "max of the frame scores", "output.clip_score"),
    ("normalisation", {"kind": "per_channel", "mean": [0, 0], "std": [1, 1]}, "normalisation.mean"),
    ("normalisation", {"kind": "per_channel", "mean": [0, 0, 0], "std": [1, 0, 1]}, "normalisation.std"),
    ("normalisation", {"kind": "min_max"}, "normalisation"),
    ("frame_sampling.rule", "apex", "frame_sampling.rule"),
    ("apex_spotting.size", 32, "apex_spotting"),
    ("recipe", "ststnet", "recipe"),
]


@pytest.mark.parametrize("field,value,named", TAMPERED, ids=[f"{f}={v!r}"[:40] for f, v, _ in TAMPERED])
def test_every_prediction_field_of_pipeline_json_is_checked(bundle, tmp_path, field, value, named):
    from mer_keras.inference.bundle import META_FILE, BundleFormatError, read_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    read_bundle(copy)  # the untouched bundle is accepted
    meta = json.loads((copy / META_FILE).read_text())
    _set(meta, field, value)
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleFormatError) as exc:
        read_bundle(copy)
    message = str(exc.value)
    assert f"'{named}'" in message and str(copy / META_FILE) in message, message


def test_a_changed_preprocessing_is_refused_by_its_fingerprint(bundle, tmp_path):
    from mer_keras.inference.bundle import META_FILE, BundleFormatError, read_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / META_FILE).read_text())
    meta["preprocess"]["config"]["crop_margin"] = 0.3  # a valid value, another pre-processing
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BundleFormatError, match="'preprocess.fingerprint'.*differs"):
        read_bundle(copy)


def test_a_left_over_write_probe_does_not_make_a_folder_foreign(tmp_path):
    """The command line's write probe, left by a killed command, is not the user's file."""
    from mer_keras.cli import WRITE_PROBE_PREFIX
    from mer_keras.preprocess.cache import check_output_folder

    (tmp_path / f"{WRITE_PROBE_PREFIX}abc").write_bytes(b"\0")
    check_output_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        check_output_folder(tmp_path)
