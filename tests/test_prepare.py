"""`prepare`: cache contents, resume after a kill, invalidation on a parameter change."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mer_keras.preprocess.cache import PreparedCache, _lock_cache, prepare
from mer_keras.preprocess.pipeline import PreprocessConfig

STSTNET = PreprocessConfig.preset("ststnet")  # 28x28: the cheapest preset


def test_prepare_writes_every_clip(megc_tiny_cropped, tmp_path):
    result = prepare(megc_tiny_cropped, tmp_path, STSTNET, workers=2, progress=False)
    assert result.n_computed == len(megc_tiny_cropped) and result.n_reused == 0
    assert result.skipped.empty, result.skipped
    cache = PreparedCache(tmp_path)
    assert list(cache.manifest["clip"]) == list(megc_tiny_cropped["clip"])
    images = cache.stack("flow_image")
    assert images.shape == (len(megc_tiny_cropped), 28, 28, 3) and images.dtype == np.uint8
    flow = cache.stack("flow")
    assert np.isfinite(flow).all() and np.abs(flow).max() > 0
    assert cache.config == STSTNET


def test_parameter_change_invalidates_and_rerun_reuses(megc_tiny_cropped, tmp_path):
    first = prepare(megc_tiny_cropped, tmp_path, STSTNET, workers=1, progress=False)
    again = prepare(megc_tiny_cropped, tmp_path, STSTNET, workers=1, progress=False)
    assert again.n_reused == first.n_computed and again.n_computed == 0
    changed = STSTNET.replace(size=32)
    assert changed.fingerprint() != STSTNET.fingerprint()
    third = prepare(megc_tiny_cropped, tmp_path, changed, workers=1, progress=False)
    assert third.n_stale == len(megc_tiny_cropped) and third.n_reused == 0
    assert PreparedCache(tmp_path).stack("flow_image").shape[1:] == (32, 32, 3)
    assert "parameters changed" in third.summary()


def test_unreadable_clip_is_skipped_and_counted(megc_tiny_manifest, tmp_path):
    """A frame without a face on the aligned route (the cropped route detects nothing: crops are faces)."""
    manifest = megc_tiny_manifest.copy()
    manifest.attrs = dict(megc_tiny_manifest.attrs)
    bad = tmp_path / "blank.jpg"
    import cv2

    cv2.imwrite(str(bad), np.zeros((480, 640, 3), np.uint8))  # a frame with no face (colour, as the clip's others)
    frames = list(manifest.at[0, "frames"])
    frames[0] = str(bad)
    manifest.at[0, "frames"] = tuple(frames)
    aligned = PreprocessConfig.preset("ststnet_aligned", flow_size=None)
    result = prepare(manifest, tmp_path / "cache", aligned, workers=1, progress=False)
    assert len(result.skipped) == 1 and "NoFaceError" in result.skipped["reason"].iloc[0]
    assert len(PreparedCache(tmp_path / "cache")) == len(manifest) - 1
    assert "skipped 1" in result.summary()


def test_killed_prepare_resumes_with_identical_results(megc_tiny, megc_tiny_cropped, tmp_path):
    data_root, _ = megc_tiny
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mer_keras.cli", "prepare", "--composite", "megc2019", "--data-dir", str(data_root),
           "--preset", "ststnet", "--workers", "1", "--no-progress", "--out", str(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "clips").glob("[!.]*.npz"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list((killed / "clips").glob("[!.]*.npz")))
    assert 2 <= n_before < len(megc_tiny_cropped), "kill landed too late to test resuming"
    with pytest.raises(ValueError, match="did not finish"):
        PreparedCache(killed)  # a half-written cache is never read as if it were whole

    # The resumed and the straight runs are CLI processes too, as a user runs them. (This test once failed when
    # they ran in this process: a reused TV-L1 object kept the lower scale count of an earlier test's small
    # images; tvl1_flow now creates one per call, tests/test_flow.py.)
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"computed {len(megc_tiny_cropped) - n_before}, reused {n_before} from an earlier run" in resumed.stdout
    straight = subprocess.run(cmd[:-1] + [str(tmp_path / "straight")], capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = PreparedCache(killed), PreparedCache(tmp_path / "straight")
    assert a.config == b.config == STSTNET
    for key in a.manifest["key"]:
        for name, arr in a.load(key).items():
            np.testing.assert_array_equal(arr, b.load(key)[name], err_msg=f"{key}/{name}")


def test_second_prepare_on_the_same_cache_is_refused(megc_tiny_cropped, tmp_path):
    with _lock_cache(tmp_path):
        with pytest.raises(RuntimeError, match="another `prepare` is writing"):
            prepare(megc_tiny_cropped, tmp_path, STSTNET, workers=1, progress=False)
    assert prepare(megc_tiny_cropped, tmp_path, STSTNET, workers=1, progress=False).n_computed == len(megc_tiny_cropped)


def test_apex_only_prepare_keeps_single_image_clips(tmp_path):
    """JAFFE clips are single images (onset == apex): skipped by a flow preset, prepared without flow."""
    from mer_keras.data.readers import get_reader
    from mer_keras.data.synthetic import write_dataset
    from mer_keras.training import LOSODataset

    write_dataset("jaffe", tmp_path / "jaffe", n_subjects=2, clips_per_subject=2, seed=4)
    manifest = get_reader("jaffe")(tmp_path / "jaffe").manifest
    assert len(manifest) == 4 and (manifest["onset"] == manifest["apex"]).all()
    flow = prepare(manifest, tmp_path / "flow", PreprocessConfig.preset("ststnet_aligned"), workers=1, progress=False)
    assert len(flow.skipped) == len(manifest) and flow.skipped["reason"].str.contains("two frames").all()
    apex_cfg = PreprocessConfig.preset("mobilevit_apex", size=32)
    result = prepare(manifest, tmp_path / "apex", apex_cfg, workers=1, progress=False)
    assert result.skipped.empty and result.n_computed == len(manifest)
    cache = PreparedCache(tmp_path / "apex")
    assert cache.config == apex_cfg and not cache.config.compute_flow
    assert cache.stack("apex").shape == (4, 32, 32) and not {"flow", "flow_image"} & set(cache.load(cache.manifest["key"][0]))
    with pytest.raises(KeyError, match="apex-only"):
        cache.stack("flow_image")
    labelled = manifest["label_id"].ge(0).sum()
    data = LOSODataset.from_cache(cache, input="apex")
    assert data.x.shape == (labelled, 32, 32, 1) and data.x.dtype == np.uint8
    assert prepare(manifest, tmp_path / "apex", apex_cfg, workers=1, progress=False).n_reused == len(manifest)


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory):
    """48 synthetic MEGC2019 clips: enough work that a signal sent after the first clip lands mid-run."""
    from mer_keras.data.synthetic import write_composite

    root = tmp_path_factory.mktemp("many_clips")
    write_composite("megc2019", root, subjects_per_dataset=2, clips_per_subject=8, n_frames=9, seed=3)
    return root


def _start_prepare_with_workers(data_root, out):
    cmd = [sys.executable, "-m", "mer_keras.cli", "prepare", "--composite", "megc2019", "--data-dir", str(data_root),
           "--preset", "shufflenet", "--size", "160", "--workers", "2", "--no-progress", "--out", str(out)]
    # frame stacks and flow at 160 px: each clip takes long enough that the signal lands mid-run on a loaded machine
    # a shell that starts jobs in the background (CI) hands them SIGINT ignored; a terminal's Ctrl-C is not
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "clips").glob("[!.]*.npz")):
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert workers, "prepare started no worker processes"
    return proc, workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("how", ["sigkill", "ctrl-c"])
def test_stopped_prepare_leaves_no_worker_behind(many_clips, tmp_path, how):
    """SIGKILL of the parent alone, or Ctrl-C (SIGINT to the parent alone): the spawn workers end within seconds."""
    proc, workers = _start_prepare_with_workers(many_clips, tmp_path / "cache")
    try:
        os.kill(proc.pid, signal.SIGKILL if how == "sigkill" else signal.SIGINT)
        try:  # the output pipes close when the parent and every worker that inherited them are gone
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = ""
        n_done = len(list((tmp_path / "cache" / "clips").glob("[!.]*.npz")))
        assert n_done < 48, "prepare finished before the signal: nothing was stopped"
        if how == "ctrl-c":
            assert proc.returncode == 130 and "rerun the same command to resume" in stderr, stderr
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.1)
        left = [pid for pid in workers if _alive(pid)]
        assert not left, f"worker processes still running after the parent stopped ({how})"
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_prepare_throughput_bench_times_both_routes_on_the_same_composite(tmp_path):
    from mer_keras.preprocess.bench import ROUTES, run_prepare_throughput

    lines = []
    out = run_prepare_throughput((1,), subjects_per_dataset=1, clips_per_subject=1, workdir=tmp_path,
                                 print_fn=lines.append)
    assert [(r["preset"], r["source"]) for r in out["rows"]] == [(ROUTES[0], "cropped"), (ROUTES[1], "aligned")]
    assert out["n_clips"] == 3  # one clip from each of CASME II, SAMM and SMIC
    for row in out["rows"]:
        assert row["seconds"] > 0 and row["clips_per_s"] == pytest.approx(3 / row["seconds"])
    assert out["rows"][0]["vs_first"] == 1.0
    assert any("cropped" in line for line in lines) and any("aligned" in line for line in lines)
