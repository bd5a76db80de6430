"""Recognising new clips: fit-final bundles, load_pipeline, predict (CLI too), apex spotting, TFLite export.

Data: a synthetic CASME II-layout set (3 subjects x 3 clips, 9 rendered frames, 320 x 240)
for training and a held-out one written with another seed (1 subject x 3 clips); prepared
at the STSTNet preset (28 px flow images) and at the ShuffleNetV2 preset at 32 px (frame
stacks). Networks train for one or two epochs: these tests check the plumbing, not accuracy.
"""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mer_keras.inference import (
    BundleFormatError,
    ClipError,
    InferenceOptions,
    clip_features,
    fit_final,
    load_pipeline,
    read_clip,
    read_meta,
)
from mer_keras.inference.bundle import META_FILE, MODEL_FILE

FRAME_SIZE = (320, 240)


def _clip_dir(root, subject, clip):
    return root / "CASME2_RAW_selected" / subject / clip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from mer_keras.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("inference")
    write_dataset("casme2", root / "train", n_subjects=3, clips_per_subject=3, n_frames=9, frame_size=FRAME_SIZE, seed=5)
    write_dataset("casme2", root / "test", n_subjects=1, clips_per_subject=3, n_frames=9, frame_size=FRAME_SIZE, seed=99)
    return root


@pytest.fixture(scope="module")
def held_out(data):
    """``[(folder, true apex index, motion label)]`` of the held-out clips (ground truth from the writer)."""
    from mer_keras.data.synthetic import load_ground_truth

    out = []
    for _, row in load_ground_truth(data / "test").iterrows():
        folder = _clip_dir(data / "test", row["subject"], row["clip"])
        names = read_clip(folder).names
        out.append((folder, names.index(f"img{row['apex']}.jpg"), row["motion_label"]))
    return out


def _prepare(data, out, config):
    from mer_keras.data import load_dataset
    from mer_keras.preprocess.cache import prepare

    manifest = load_dataset("casme2", data / "train")
    prepare(manifest[manifest["label_id"] >= 0], out, config, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def flow_cache(data):
    from mer_keras.preprocess.pipeline import PreprocessConfig

    return _prepare(data, data / "cache_ststnet", PreprocessConfig.preset("ststnet_aligned"))


@pytest.fixture(scope="module")
def frames_cache(data):
    from mer_keras.preprocess.pipeline import PreprocessConfig

    return _prepare(data, data / "cache_shufflenet", PreprocessConfig.preset("shufflenet", size=32))


@pytest.fixture(scope="module")
def flow_fit(flow_cache, data):
    """STSTNet, 2 epochs, with per-channel normalisation switched on (to check that it is saved)."""
    return fit_final(flow_cache, "ststnet", data / "bundle_ststnet", epochs=2, progress=False,
                     normalisation="per_channel")


@pytest.fixture(scope="module")
def flow_pipeline(flow_fit):
    return load_pipeline(flow_fit.path)


# ----------------------------------------------------------------------------- bundle


def test_bundle_round_trip_gives_the_in_memory_models_predictions(flow_fit, flow_pipeline, flow_cache):
    from mer_keras.training import LOSODataset
    from mer_keras.training.loso import apply_normalisation, fit_normalisation

    ds = LOSODataset.from_cache(flow_cache, input="flow_image")
    stats = fit_normalisation(ds.x.astype(np.float32), "per_channel")
    np.testing.assert_allclose(flow_pipeline.normalisation[0], stats[0], rtol=1e-6)  # fitted on all training clips
    np.testing.assert_allclose(flow_pipeline.normalisation[1], stats[1], rtol=1e-6)
    expected = np.asarray(flow_fit.model(apply_normalisation(ds.x, stats), training=False))
    np.testing.assert_allclose(flow_pipeline.predict_arrays(ds.x), expected, rtol=1e-5, atol=1e-6)


def test_bundle_records_the_preprocessing_and_training(flow_fit, flow_cache):
    from mer_keras import __version__
    from mer_keras.preprocess.cache import PreparedCache

    meta = read_meta(flow_fit.path)
    cache = PreparedCache(flow_cache)
    assert meta["preprocess"] == {"config": cache.config.to_dict(), "fingerprint": cache.meta["fingerprint"]}
    assert meta["recipe"]["name"] == "ststnet" and meta["recipe"]["config"]["epochs"] == 2
    assert meta["input"] == {"kind": "flow_image", "shape": [28, 28, 3], "dtype": "float32"}
    assert meta["class_names"] == ["negative", "positive", "surprise"]
    assert meta["output"]["score_kind"] == "probability" and meta["frame_sampling"]["rule"] == "onset_apex"
    assert meta["mer_keras_version"] == __version__ and meta["created"]
    training = meta["training"]
    assert training["n_subjects"] == 3 and training["n_clips"] == len(cache.manifest[cache.manifest["label_id"] >= 0])
    assert "(no test subject)" not in training["subjects"]
    assert sorted(p.name for p in flow_fit.path.iterdir()) == [MODEL_FILE, META_FILE]
    assert not [p for p in flow_fit.path.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_bundle_of_unknown_format_is_refused(flow_fit, tmp_path):
    meta = json.loads((flow_fit.path / META_FILE).read_text())

    def bundle(name, changes, model=True):
        folder = tmp_path / name
        folder.mkdir()
        (folder / META_FILE).write_text(json.dumps({**meta, **changes}))
        if model:
            shutil.copy(flow_fit.path / MODEL_FILE, folder / MODEL_FILE)
        return folder

    with pytest.raises(BundleFormatError, match="newer than the format 1"):
        load_pipeline(bundle("future", {"format_version": 99}, model=False))
    with pytest.raises(BundleFormatError, match="not a mer-keras pipeline bundle"):
        load_pipeline(bundle("other", {"format": "something-else"}, model=False))
    with pytest.raises(BundleFormatError, match="no pipeline.json"):
        load_pipeline(tmp_path)
    changed = bundle("changed", {"preprocess": {**meta["preprocess"], "fingerprint": "0" * 16}})
    with pytest.raises(BundleFormatError, match="fingerprint"):
        load_pipeline(changed)
    assert load_pipeline(changed, strict=False).class_names == ("negative", "positive", "surprise")


def test_fit_final_refuses_bad_requests(flow_fit, flow_cache, data):
    with pytest.raises(FileExistsError):
        fit_final(flow_cache, "ststnet", flow_fit.path, epochs=1, progress=False)
    with pytest.raises(ValueError, match="handcrafted"):
        fit_final(flow_cache, "hoof_svm", data / "never", progress=False)
    with pytest.raises(ValueError, match="not a prepared cache"):
        fit_final(data / "train", "ststnet", data / "never", progress=False)
    assert not (data / "never").exists()


# ----------------------------------------------------------------------------- pre-processing and spotting


@pytest.mark.parametrize("preset, kind", [("ststnet_aligned", "flow_image"), ("off_tanet_aligned", "flow_stack"),
                                          ("shufflenet", "frames"), ("ststnet_aligned@28", "flow_image"),
                                          ("off_tanet", "flow_stack"), ("ststnet", "flow_image")])
def test_staged_preprocessing_equals_preprocess_clip(held_out, preset, kind):
    """``predict``'s staged pre-processing gives ``prepare``'s arrays (``ststnet_aligned``: flow at 112 px resized to
    28; ``@28``: flow computed on the 28-px frames; ``off_tanet`` / ``ststnet``: the frames taken as face crops)."""
    from mer_keras.preprocess.pipeline import PreprocessConfig, preprocess_clip

    preset, _, flow_size = preset.partition("@")
    config = PreprocessConfig.preset(preset, size=32) if preset == "shufflenet" else PreprocessConfig.preset(preset)
    if flow_size:
        config = config.replace(flow_size=int(flow_size))
    folder, apex, _ = held_out[0]
    frames = read_clip(folder).frames
    got, info, timings = clip_features(frames, 0, apex, config, input_kind=kind)
    want = preprocess_clip(frames, 0, apex, config)
    for name in ("onset", "apex", "mask", "landmarks", *(("flow", "strain", "flow_image") if kind != "frames" else ("frames",))):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert info["apex"] == apex and not info["apex_spotted"]
    assert timings.get("detection", 0) > 0 if config.source == "aligned" else "detection" not in timings


def test_cropped_release_bundle_predicts_from_face_crops(tmp_path):
    """A bundle trained on a cropped release takes a crop folder: no detection, the apex spotted on the whole crop,
    and the network input of ``prepare`` up to the grey-before-resize order (``read_clip`` reads grey frames;
    ``prepare`` reads the crops in colour, resizes, then converts, as the official code does)."""
    from mer_keras.data import load_dataset
    from mer_keras.data.synthetic import load_ground_truth, write_dataset
    from mer_keras.preprocess.cache import PreparedCache, prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    root = tmp_path / "casme2"
    write_dataset("casme2", root, n_subjects=2, clips_per_subject=2, n_frames=9, frame_size=FRAME_SIZE, seed=7,
                  release="cropped")
    assert not (root / "CASME2_RAW_selected").exists()
    manifest = load_dataset("casme2", root, release="cropped")
    assert set(manifest["release"]) == {"cropped"}
    prepare(manifest[manifest["label_id"] >= 0], tmp_path / "cache", PreprocessConfig.preset("ststnet"), workers=1,
            progress=False)
    pipeline = load_pipeline(fit_final(tmp_path / "cache", "ststnet", tmp_path / "bundle", epochs=1,
                                       progress=False).path)
    assert pipeline.config.source == "cropped"
    cache = PreparedCache(tmp_path / "cache")
    row = cache.manifest.iloc[0]
    truth = load_ground_truth(root).set_index("clip").loc[row["clip"]]
    folder = root / "Cropped" / row["subject"] / row["clip"]
    names = read_clip(folder).names
    true_apex = names.index(f"reg_img{truth['apex']}.jpg")
    spotted = pipeline.predict_clip(folder)
    assert spotted.apex_spotted and abs(spotted.apex - true_apex) <= 1, (spotted.apex, true_apex)
    assert spotted.timings_ms.get("detection", 0) == 0 and spotted.label in pipeline.class_names
    got, _, _ = clip_features(read_clip(folder).frames, 0, true_apex, pipeline.config, input_kind="flow_image")
    want = cache.load(row["key"])
    for name in ("flow", "strain"):
        r = np.corrcoef(got.__dict__[name].ravel(), want[name].ravel())[0, 1]
        print(f"{name}: r = {r:.4f} between the grey-read crop and the colour-read crop")
        assert r > 0.9, (name, r)


def test_spotted_apex_is_within_one_frame_of_the_rendered_apex(data, held_out):
    from mer_keras.data.synthetic import load_ground_truth
    from mer_keras.inference import spot_apex
    from mer_keras.preprocess.face import FaceAligner

    clips = [(f, a) for f, a, _ in held_out]
    for _, row in load_ground_truth(data / "train").iterrows():
        folder = _clip_dir(data / "train", row["subject"], row["clip"])
        clips.append((folder, read_clip(folder).names.index(f"img{row['apex']}.jpg")))
    aligner = FaceAligner()
    errors = []
    for folder, true_apex in clips:
        frames = read_clip(folder).frames
        spotted, curve = spot_apex(frames, aligner.landmarks(frames[0]), 0)
        assert curve[0] == 0 and len(curve) == len(frames)
        errors.append(abs(spotted - true_apex))
    print(f"spotting errors (frames) on {len(clips)} clips: {errors}")
    assert max(errors) <= 1, errors


# ----------------------------------------------------------------------------- predict


def test_predict_held_out_clip_spotted_and_given(flow_pipeline, held_out):
    folder, true_apex, _ = held_out[1]
    spotted = flow_pipeline.predict_clip(folder)
    assert spotted.label in flow_pipeline.class_names and spotted.apex_spotted and spotted.onset == 0
    assert abs(sum(spotted.scores.values()) - 1.0) < 1e-5 and spotted.score_kind == "probability"
    assert abs(spotted.apex - true_apex) <= 1 and spotted.motion_curve is not None
    assert set(spotted.timings_ms) >= {"detection", "landmarks", "alignment", "tvl1", "network", "total"}
    given = flow_pipeline.predict_clip(folder, onset=0, apex=true_apex)
    assert not given.apex_spotted and given.apex == true_apex and given.motion_curve is None
    if spotted.apex == true_apex:
        assert given.scores == pytest.approx(spotted.scores)
    # the onset and apex images as a pair: the same frames, the same prediction
    names = read_clip(folder).names
    pair = flow_pipeline.predict_clip([folder / names[0], folder / names[true_apex]])
    assert (pair.onset, pair.apex, pair.apex_spotted) == (0, 1, False)
    assert pair.scores == pytest.approx(given.scores, abs=1e-6)


def test_predict_video_and_realtime_options(flow_pipeline, held_out, tmp_path):
    import cv2

    folder, _, _ = held_out[2]
    frames = read_clip(folder).frames
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, FRAME_SIZE)
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    result = flow_pipeline.predict_clip(video)
    assert result.n_frames == len(frames) and result.apex_spotted and result.label in flow_pipeline.class_names
    fast = flow_pipeline.with_options(InferenceOptions.realtime()).predict_clip(folder)
    assert fast.label in flow_pipeline.class_names and fast.timings_ms["tvl1"] > 0


def test_two_stage_fit_final_and_frame_pipeline(frames_cache, held_out, data, monkeypatch):
    """fit-final hands the two-stage fold function every clip as training data and no test clip (no
    placeholder); the saved frame pipeline predicts. The fold function itself (pre-training with the epoch chosen on an
    inner subject split, stage 2) is tested in test_two_stage.py; here it is replaced by a stand-in that returns
    an untrained ShuffleNetV2, so this test does not spend a minute tracing two training graphs."""
    import mer_keras.training.two_stage as two_stage
    from mer_keras.training import LOSODataset, get_recipe
    from mer_keras.training.trainers import NO_TEST_SUBJECT

    seen = {}

    def stand_in(flow, frames, fold, recipe, fold_seed, **kwargs):
        seen.update(flow=flow, frames=frames, fold=fold, kwargs=kwargs)
        model = two_stage.build_two_stage_model(recipe, frames.sample_shape, frames.n_classes, head=recipe.head,
                                                dtype="uint8", seed=0)
        history = {"pretrain": {}, "train": {"loss": [1.0], "accuracy": [0.5]}, "info": {"pretrain_best_epoch": 0}}
        return np.zeros((len(fold.test_index), frames.n_classes)), history, model

    monkeypatch.setattr(two_stage, "train_fold_two_stage", stand_in)
    recipe = get_recipe("shufflenet_svm_corrected").quick(1)
    recipe = recipe.replace(input_size=32, model_kwargs={**recipe.model_kwargs, "width_multiplier": 0.5})
    fit = fit_final(frames_cache, recipe, data / "bundle_shufflenet", progress=False, overwrite=True)
    real = LOSODataset.from_cache(frames_cache, input="frames")
    fold, frames, flow = seen["fold"], seen["frames"], seen["flow"]
    assert fold.train_index.tolist() == list(range(len(real))) and fold.test_index.tolist() == []
    assert fold.test_subject == NO_TEST_SUBJECT and seen["kwargs"]["return_model"]
    assert list(frames.clips) == list(flow.clips) == list(real.clips)
    assert fit.meta["training"]["subjects"] == real.subject_list() and fit.meta["training"]["n_clips"] == len(real)

    pipeline = load_pipeline(fit.path)
    meta = pipeline.meta
    assert meta["input"] == {"kind": "frames", "shape": [32, 32, 1], "dtype": "uint8"}
    assert meta["output"]["score_kind"] == "svm_score" and meta["frame_sampling"]["rule"] == "onset_to_apex"
    np.testing.assert_allclose(pipeline.predict_arrays(real.x[0]), np.asarray(fit.model(real.x[0], training=False)),
                               rtol=1e-5, atol=1e-5)
    folder, true_apex, _ = held_out[0]
    result = pipeline.predict_clip(folder, apex=true_apex)
    assert result.label in pipeline.class_names and result.timings_ms["tvl1"] == 0.0  # no flow at inference
    assert result.apex == true_apex and not result.apex_spotted


def test_predict_cli_batch_reports_bad_inputs_and_goes_on(flow_fit, held_out, tmp_path, capsys):
    import cv2

    from mer_keras.cli import main

    good = str(held_out[0][0])
    corrupt = tmp_path / "corrupt.avi"
    corrupt.write_bytes(b"not a video" * 64)
    single = tmp_path / "one_frame"
    single.mkdir()
    shutil.copy(held_out[0][0] / read_clip(held_out[0][0]).names[0], single / "img1.jpg")
    blank = [tmp_path / "blank_onset.png", tmp_path / "blank_apex.png"]
    for path in blank:
        cv2.imwrite(str(path), np.full((240, 320), 128, np.uint8))
    out_csv = tmp_path / "out.csv"
    code = main(["predict", good, str(corrupt), str(single), str(tmp_path / "missing"), "--pipeline",
                 str(flow_fit.path), "--csv", str(out_csv), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{good}:" in captured.out
    assert "3 of 4 clip(s) failed" in captured.err
    assert "OpenCV cannot open it as a video" in captured.err and "1 frame(s); a clip needs at least 2" in captured.err
    assert "no such file or folder" in captured.err
    import pandas as pd

    table = pd.read_csv(out_csv)
    assert table["status"].tolist() == ["ok", "failed", "failed", "failed"]
    assert table.loc[0, "label"] in ("negative", "positive", "surprise") and table["error"].isna().tolist()[0]

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *map(str, blank), good, "--pipeline", str(flow_fit.path), "--pairs", "--json"])
    assert exit_info.value.code == 2 and "--pairs takes an even number" in capsys.readouterr().err
    names = read_clip(held_out[0][0]).names
    onset_apex = [str(held_out[0][0] / names[0]), str(held_out[0][0] / names[held_out[0][1]])]
    code = main(["predict", *map(str, blank), *onset_apex, "--pipeline", str(flow_fit.path), "--pairs", "--json"])
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert code == 1 and doc["n_clips"] == 2 and doc["n_failed"] == 1
    assert "no face detected" in doc["failures"][0]["error"]
    ok = doc["predictions"][0]
    assert ok["status"] == "ok" and (ok["onset"], ok["apex"], ok["apex_spotted"]) == (0, 1, False)
    assert set(ok["scores"]) == {"negative", "positive", "surprise"}


def test_read_clip_errors(tmp_path):
    with pytest.raises(ClipError, match="holds no image files"):
        read_clip(tmp_path)
    with pytest.raises(ClipError, match="no such file"):
        read_clip(tmp_path / "nothing.mp4")
    with pytest.raises(ClipError, match="T x H x W"):
        read_clip(np.zeros((4, 4)))
    from mer_keras.inference.clips import natural_key

    assert sorted(["img10.jpg", "img9.jpg", "img100.jpg"], key=natural_key) == ["img9.jpg", "img10.jpg", "img100.jpg"]


# ----------------------------------------------------------------------------- export


def test_tflite_export_matches_keras(flow_fit, flow_pipeline, flow_cache, tmp_path, capsys):
    from mer_keras.cli import main
    from mer_keras.inference.export import check_tflite
    from mer_keras.training import LOSODataset
    from mer_keras.training.loso import apply_normalisation

    out = tmp_path / "model.tflite"
    assert main(["export", "--pipeline", str(flow_fit.path), "--out", str(out), "--check", "8"]) == 0
    printed = capsys.readouterr().out
    assert "TFLite vs Keras on 8 random inputs" in printed and out.stat().st_size > 0
    random = check_tflite(flow_fit.model, out.read_bytes(), n=16, seed=1)  # random inputs, as the CLI checks
    assert random["max_rel_diff"] < 1e-5 and random["argmax_agreement"] == 1.0, random
    side = json.loads((tmp_path / "model.tflite.json").read_text())
    assert side["input"]["kind"] == "flow_image" and side["normalisation"]["kind"] == "per_channel"
    # on real (normalised) inputs too
    x = apply_normalisation(LOSODataset.from_cache(flow_cache, input="flow_image").x, flow_pipeline.normalisation)
    check = check_tflite(flow_fit.model, out.read_bytes(), inputs=x)
    print(check)
    assert check["max_abs_diff"] < 1e-5 and check["argmax_agreement"] == 1.0


# ----------------------------------------------------------------------------- package


def test_import_stays_light_and_load_pipeline_is_lazy():
    code = ("import sys, mer_keras; assert 'tensorflow' not in sys.modules and 'mer_keras.inference' not in sys.modules; "
            "f = mer_keras.load_pipeline; assert f.__module__ == 'mer_keras.inference.predict'; "
            "assert 'tensorflow' not in sys.modules; print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_cli_parser_has_the_new_commands():
    from mer_keras.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["bench", "e2e"]).what == "e2e"
    args = parser.parse_args(["fit-final", "--data", "c", "--recipe", "off_tanet", "--out", "b", "--epochs", "3"])
    assert (args.data, args.recipe, args.out, args.epochs) == ("c", "off_tanet", "b", 3)
    args = parser.parse_args(["predict", "a", "b", "--pipeline", "p", "--onset", "0", "--apex", "4", "--csv", "o.csv"])
    assert (args.clips, args.onset, args.apex, args.csv) == (["a", "b"], 0, 4, "o.csv")
