"""Synthetic subjects, motion fields and clip rendering (mer_keras.data.synthetic)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from mer_keras.data.synthetic import faces, motion
from mer_keras.data.synthetic.faces import MIRROR_PERMUTATION, detect_landmarks, make_subjects, mirror_landmarks
from mer_keras.data.synthetic.motion import blink_field, displacement_field, face_frame
from mer_keras.data.synthetic.render import render_clip
from mer_keras.resources import face_photo_paths


def _photo(index: int):
    """One of the bundled portraits (sorted by their short name)."""
    photos = face_photo_paths()
    return photos[sorted(photos)[index]]


def _iod(landmarks: np.ndarray) -> float:
    return float(np.hypot(*(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))))


def _at(field: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = int(round(float(point[0]))), int(round(float(point[1])))
    return field[y, x].astype(np.float64)


def _moved(landmarks: np.ndarray, field: np.ndarray, index: int) -> np.ndarray:
    """Where landmark ``index`` ends up under the forward field."""
    return landmarks[index] + _at(field, landmarks[index])


def _local(frame: motion.FaceFrame, vector: np.ndarray) -> np.ndarray:
    """(along the eye line, down the face) components of an image-space vector."""
    return np.array([np.dot(vector, frame.x_axis), np.dot(vector, frame.y_axis)])


@pytest.fixture(scope="module")
def subjects():
    return make_subjects(4, seed=3)


@pytest.fixture(scope="module")
def grey_subjects():
    return make_subjects(2, frame_size=(960, 650), grey=True, seed=1)


# ----------------------------------------------------------------------------- subjects


def test_subjects_have_requested_format(subjects, grey_subjects):
    assert [s.name for s in subjects] == ["subject01", "subject02", "subject03", "subject04"]
    for s in subjects:
        assert s.image.shape == (480, 640, 3) and s.image.dtype == np.uint8
        assert s.landmarks.shape == (68, 2) and s.landmarks.dtype == np.float32
        assert np.all(s.landmarks >= 0) and np.all(s.landmarks[:, 0] < 640) and np.all(s.landmarks[:, 1] < 480)
    for s in grey_subjects:
        assert s.image.shape == (650, 960) and s.image.dtype == np.uint8


def test_subjects_are_distinct(subjects):
    for i in range(len(subjects)):
        for j in range(i + 1, len(subjects)):
            diff = np.abs(subjects[i].image.astype(np.int16) - subjects[j].image.astype(np.int16)).mean()
            assert diff > 15, (i, j, diff)
            assert np.abs(subjects[i].landmarks - subjects[j].landmarks).mean() > 5


def test_subjects_deterministic_per_seed(subjects):
    again = make_subjects(2, seed=3)  # subject i does not depend on n
    for a, b in zip(again, subjects):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
    other = make_subjects(1, seed=4)[0]
    assert np.abs(other.image.astype(np.int16) - subjects[0].image.astype(np.int16)).mean() > 5


def test_dlib_finds_one_face_with_the_stored_landmarks(subjects, grey_subjects):
    for s in subjects + grey_subjects:
        found = detect_landmarks(s.image)
        assert len(found) == 1, s.name
        error = np.hypot(*(found[0] - s.landmarks).T)
        iod = _iod(s.landmarks)
        assert error.mean() < 0.1 * iod, (s.name, error.mean(), iod)
        # eyes and nose are the most reliable points: within a few pixels
        assert error[27:48].mean() < 0.08 * iod, (s.name, error[27:48].mean())


def test_subject_geometry_is_lab_like(subjects, grey_subjects):
    rolls = []
    for s in subjects + grey_subjects:
        h = s.image.shape[0]
        extent = s.landmarks[:, 1].max() - s.landmarks[:, 1].min()
        assert 0.27 * h < extent < 0.5 * h, (s.name, extent / h)
        frame = face_frame(s.landmarks)
        rolls.append(np.degrees(np.arctan2(frame.x_axis[1], frame.x_axis[0])))
    assert np.all(np.abs(rolls) < faces.MAX_ROLL_DEG + 3.0), rolls
    assert np.max(np.abs(rolls)) > 1.0, rolls  # there is roll for alignment to correct


def test_mirror_permutation_is_a_left_right_involution():
    perm = MIRROR_PERMUTATION
    np.testing.assert_array_equal(perm[perm], np.arange(68))
    assert set(np.nonzero(perm == np.arange(68))[0]) == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}
    assert list(perm[36:42]) == [45, 44, 43, 42, 47, 46]
    assert list(perm[17:22]) == [26, 25, 24, 23, 22]
    assert perm[48] == 54 and perm[0] == 16


def test_mirrored_landmarks_match_dlib_on_the_flipped_photo():
    photo = cv2.imread(str(_photo(0)), cv2.IMREAD_COLOR)[:, :, ::-1]
    original = detect_landmarks(np.ascontiguousarray(photo))[0]
    flipped_photo = np.ascontiguousarray(photo[:, ::-1])
    detected = detect_landmarks(flipped_photo)[0]
    predicted = mirror_landmarks(original, photo.shape[1])
    iod = _iod(detected)
    # the left-eye landmarks of the flipped image sit where the flipped right eye was
    eye_error = np.hypot(*(predicted[42:48] - detected[42:48]).T)
    assert eye_error.mean() < 0.1 * iod, eye_error
    assert np.hypot(*(predicted - detected).T).mean() < 0.1 * iod
    # without the permutation the eyes would be swapped: far off
    unpermuted = original.copy()
    unpermuted[:, 0] = photo.shape[1] - 1 - unpermuted[:, 0]
    assert np.hypot(*(unpermuted[42:48] - detected[42:48]).T).mean() > 0.5 * iod


def test_make_subjects_from_a_photo_folder(tmp_path):
    shutil.copy(_photo(1), tmp_path / "portrait.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    subs = make_subjects(2, photos=tmp_path, frame_size=(320, 240), seed=5)
    assert len(subs) == 2 and subs[0].image.shape == (240, 320, 3)
    assert np.abs(subs[0].image.astype(np.int16) - subs[1].image.astype(np.int16)).mean() > 5


def test_make_subjects_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        make_subjects(0)
    with pytest.raises(ValueError, match="too small"):
        make_subjects(1, frame_size=(100, 80))
    with pytest.raises(ValueError, match="no image files"):
        make_subjects(1, photos=tmp_path)
    with pytest.raises(ValueError, match="not found"):
        make_subjects(1, photos=[tmp_path / "missing.jpg"])


# ----------------------------------------------------------------------------- motion


@pytest.mark.parametrize("label", motion.LABELS)
@pytest.mark.parametrize("amplitude", [0.5, 1.7, 3.0])
def test_displacement_peak_equals_amplitude_and_vanishes_far_away(subjects, label, amplitude):
    s = subjects[0]
    field = displacement_field(s.landmarks, (480, 640), label, amplitude, np.random.default_rng(7))
    assert field.shape == (480, 640, 2) and field.dtype == np.float32
    magnitude = np.hypot(field[..., 0], field[..., 1])
    assert magnitude.max() == pytest.approx(amplitude, rel=1e-5)
    lo, hi = s.landmarks.min(0), s.landmarks.max(0)
    margin = 1.6 * _iod(s.landmarks)
    far = np.ones((480, 640), bool)
    far[max(0, int(lo[1] - margin)) : int(hi[1] + margin), max(0, int(lo[0] - margin)) : int(hi[0] + margin)] = False
    assert far.any() and np.all(magnitude[far] == 0)


def test_positive_pulls_mouth_corners_up_and_out(subjects):
    for k in range(10):
        s = subjects[k % len(subjects)]
        frame = face_frame(s.landmarks)
        field = displacement_field(s.landmarks, (480, 640), "positive", 2.0, np.random.default_rng(k))
        left, right = _local(frame, _at(field, s.landmarks[48])), _local(frame, _at(field, s.landmarks[54]))
        assert left[1] < -0.2 and right[1] < -0.2, (left, right)  # up
        assert left[0] < -0.1 and right[0] > 0.1, (left, right)  # outward
        width = np.linalg.norm(s.landmarks[54] - s.landmarks[48])
        moved = np.linalg.norm(_moved(s.landmarks, field, 54) - _moved(s.landmarks, field, 48))
        assert moved > width


def test_surprise_raises_brows_and_drops_jaw(subjects):
    for k in range(10):
        s = subjects[k % len(subjects)]
        frame = face_frame(s.landmarks)
        field = displacement_field(s.landmarks, (480, 640), "surprise", 2.0, np.random.default_rng(k))
        for i in range(17, 27):
            assert _local(frame, _at(field, s.landmarks[i]))[1] < -0.1, (k, i)
        assert _local(frame, _at(field, s.landmarks[8]))[1] > 0.3, k


def test_negative_lowers_and_draws_inner_brows_together(subjects):
    for k in range(10):
        s = subjects[k % len(subjects)]
        frame = face_frame(s.landmarks)
        field = displacement_field(s.landmarks, (480, 640), "negative", 2.0, np.random.default_rng(k))
        d21, d22 = _local(frame, _at(field, s.landmarks[21])), _local(frame, _at(field, s.landmarks[22]))
        assert d21[1] > 0.2 and d22[1] > 0.2, (d21, d22)  # down
        assert d21[0] > 0.05 and d22[0] < -0.05, (d21, d22)  # toward each other
        before = np.linalg.norm(s.landmarks[22] - s.landmarks[21])
        after = np.linalg.norm(_moved(s.landmarks, field, 22) - _moved(s.landmarks, field, 21))
        assert after < before


def test_classes_have_distinct_spatial_patterns(subjects):
    s = subjects[1]
    means = {}
    for label in motion.LABELS:
        fields = [displacement_field(s.landmarks, (480, 640), label, 2.0, np.random.default_rng(k)) for k in range(6)]
        means[label] = np.mean(fields, axis=0).ravel()
    for a in ("negative", "positive", "surprise"):
        for b in ("negative", "positive", "surprise"):
            if a < b:
                cos = np.dot(means[a], means[b]) / (np.linalg.norm(means[a]) * np.linalg.norm(means[b]))
                assert cos < 0.5, (a, b, cos)


def test_displacement_field_rejects_bad_label_and_amplitude(subjects):
    lm, rng = subjects[0].landmarks, np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown label"):
        displacement_field(lm, (480, 640), "happiness", 1.0, rng)
    for bad in (0, -1.0, float("nan"), float("inf"), "big"):
        with pytest.raises(ValueError, match="amplitude"):
            displacement_field(lm, (480, 640), "positive", bad, rng)
    with pytest.raises(ValueError, match="landmarks"):
        displacement_field(lm[:60], (480, 640), "positive", 1.0, rng)


def _eye_boxes(landmarks: np.ndarray, shape_hw, margin: float) -> np.ndarray:
    mask = np.zeros(shape_hw, bool)
    for eye in (landmarks[36:42], landmarks[42:48]):
        width = np.linalg.norm(eye[3] - eye[0])
        lo, hi = eye.min(0) - margin * width, eye.max(0) + margin * width
        mask[int(np.floor(lo[1])) : int(np.ceil(hi[1])) + 1, int(np.floor(lo[0])) : int(np.ceil(hi[0])) + 1] = True
    return mask


def test_blink_field_stays_in_the_eye_regions(subjects):
    for s in subjects:
        field = blink_field(s.landmarks, (480, 640), 1.0)
        moving = np.hypot(field[..., 0], field[..., 1]) > 0
        assert moving.any()
        assert not np.any(moving & ~_eye_boxes(s.landmarks, (480, 640), 0.6))
        for i in list(range(17, 27)) + list(range(27, 36)) + list(range(48, 68)):
            assert np.all(_at(field, s.landmarks[i]) == 0), i
        frame = face_frame(s.landmarks)
        for lid in (37, 38, 43, 44):  # upper lids move down the face
            assert _local(frame, _at(field, s.landmarks[lid]))[1] > 0.5
    assert not blink_field(subjects[0].landmarks, (480, 640), 0.0).any()
    with pytest.raises(ValueError, match="closure"):
        blink_field(subjects[0].landmarks, (480, 640), 1.5)


# ----------------------------------------------------------------------------- rendering


def test_clip_structure(subjects):
    clip = render_clip(subjects[0], "positive", n_frames=12, rng=np.random.default_rng(0))
    assert len(clip.frames) == 12 and clip.onset == 0 and clip.offset == 11 and 1 <= clip.apex <= 10
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in clip.frames)
    assert clip.apex_flow.shape == (480, 640, 2) and clip.apex_flow.dtype == np.float32
    assert clip.expression_flow.shape == (480, 640, 2) and clip.expression_flow.dtype == np.float32
    assert clip.label == "positive" and isinstance(clip.blink, bool)
    assert 0.5 <= np.hypot(*np.moveaxis(clip.expression_flow, -1, 0)).max() <= 3.0 + 1e-5


def test_clip_is_deterministic_given_rng(subjects):
    a = render_clip(subjects[1], "surprise", rng=np.random.default_rng(11))
    b = render_clip(subjects[1], "surprise", rng=np.random.default_rng(11))
    c = render_clip(subjects[1], "surprise", rng=np.random.default_rng(12))
    assert a.apex == b.apex and a.blink == b.blink
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.apex_flow, b.apex_flow)
    assert not np.array_equal(a.apex_flow, c.apex_flow)


def test_onset_is_neutral_and_noise_has_requested_sigma(subjects):
    s = subjects[2]
    quiet = render_clip(s, "negative", rng=np.random.default_rng(3), noise_sigma=0)
    np.testing.assert_array_equal(quiet.frames[0], s.image)
    noisy = render_clip(s, "negative", rng=np.random.default_rng(3), noise_sigma=1.5)
    residual = noisy.frames[0].astype(np.float64) - s.image
    unclipped = (s.image > 10) & (s.image < 245)
    assert abs(residual[unclipped].mean()) < 0.05
    assert residual[unclipped].std() == pytest.approx(1.5 * np.sqrt(1 + 1 / (12 * 1.5**2)), rel=0.1)


@pytest.mark.parametrize("label", motion.LABELS)
def test_apex_frame_is_onset_moved_by_apex_flow(subjects, label):
    s = subjects[motion.LABELS.index(label)]
    clip = render_clip(
        s, label, rng=np.random.default_rng(21), amplitude=3.0, noise_sigma=0, jitter_px=0.5, blink_prob=1.0
    )
    onset = clip.frames[0].astype(np.float32)
    apex = clip.frames[clip.apex].astype(np.float32)
    h, w = onset.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    flow = clip.apex_flow

    def sample_apex(sign):
        return cv2.remap(apex, gx + sign * flow[..., 0], gy + sign * flow[..., 1], cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)

    inner = (slice(8, -8), slice(8, -8))
    matched = np.abs(sample_apex(1.0) - onset)[inner]  # forward convention: onset(p) == apex(p + flow(p))
    unmoved = np.abs(apex - onset)[inner]
    backwards = np.abs(sample_apex(-1.0) - onset)[inner]
    assert matched.mean() < 0.3 * unmoved.mean(), (matched.mean(), unmoved.mean())
    assert matched.mean() < 0.2 * backwards.mean(), (matched.mean(), backwards.mean())
    face = np.hypot(clip.expression_flow[..., 0], clip.expression_flow[..., 1])[inner] > 0.5
    assert np.median(matched[face]) < 0.5 * np.median(unmoved[face])


def test_apex_flow_is_expression_plus_jitter_and_blink(subjects):
    s = subjects[0]
    no_jitter = render_clip(s, "surprise", rng=np.random.default_rng(5), jitter_px=0, blink_prob=0)
    np.testing.assert_array_equal(no_jitter.apex_flow, no_jitter.expression_flow)
    jitter = render_clip(s, "surprise", rng=np.random.default_rng(5), jitter_px=0.4, blink_prob=0)
    np.testing.assert_allclose(jitter.expression_flow, no_jitter.expression_flow)
    shift = (jitter.apex_flow - jitter.expression_flow).reshape(-1, 2)
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-5)
    assert 0 < np.hypot(*shift[0]) < 2.0
    blink = render_clip(s, "surprise", rng=np.random.default_rng(5), jitter_px=0, blink_prob=1.0)
    extra = np.hypot(*np.moveaxis(blink.apex_flow - blink.expression_flow, -1, 0)) > 1e-6
    assert blink.blink and not np.any(extra & ~_eye_boxes(s.landmarks, (480, 640), 0.6))


def test_expression_rises_to_the_apex_and_decays(subjects):
    s = subjects[3]
    clip = render_clip(s, "positive", n_frames=15, apex_index=6, amplitude=2.5, rng=np.random.default_rng(9),
                       noise_sigma=0, jitter_px=0, blink_prob=0)
    change = [np.abs(f.astype(np.float32) - clip.frames[0]).mean() for f in clip.frames]
    assert change[0] == 0 and int(np.argmax(change)) == 6
    assert all(change[i] < change[i + 1] for i in range(6))
    assert all(change[i] >= change[i + 1] for i in range(6, 14))


def test_blinks_change_only_the_eye_regions(subjects):
    s = subjects[1]
    kwargs = dict(noise_sigma=0, jitter_px=0, amplitude=2.0, apex_index=7)
    with_blink = render_clip(s, "others", rng=np.random.default_rng(4), blink_prob=1.0, **kwargs)
    without = render_clip(s, "others", rng=np.random.default_rng(4), blink_prob=0.0, **kwargs)
    assert with_blink.blink and not without.blink
    eyes = _eye_boxes(s.landmarks, (480, 640), 0.65)
    changed = np.zeros((480, 640), bool)
    for a, b in zip(with_blink.frames, without.frames):
        changed |= np.any(a != b, axis=-1)
    assert changed.any() and not np.any(changed & ~eyes)


def test_grey_clip(grey_subjects):
    clip = render_clip(grey_subjects[0], "negative", rng=np.random.default_rng(2))
    assert all(f.shape == (650, 960) and f.dtype == np.uint8 for f in clip.frames)
    assert clip.apex_flow.shape == (650, 960, 2)


def test_render_clip_validates_arguments(subjects):
    s, rng = subjects[0], np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown label"):
        render_clip(s, "joy", rng=rng)
    for bad in (0.0, -2.0, float("nan")):
        with pytest.raises(ValueError, match="amplitude"):
            render_clip(s, "positive", amplitude=bad, rng=rng)
    with pytest.raises(ValueError, match="apex_index"):
        render_clip(s, "positive", n_frames=10, apex_index=0, rng=rng)
    with pytest.raises(ValueError, match="apex_index"):
        render_clip(s, "positive", n_frames=10, apex_index=10, rng=rng)
    with pytest.raises(ValueError, match="n_frames"):
        render_clip(s, "positive", n_frames=2, rng=rng)
    with pytest.raises(ValueError, match="blink_prob"):
        render_clip(s, "positive", blink_prob=1.5, rng=rng)
    with pytest.raises(ValueError, match="rng"):
        render_clip(s, "positive", rng=0)


# ----------------------------------------------------------------------------- appearance


def _face_coordinates(landmarks: np.ndarray, shape_hw) -> tuple[np.ndarray, np.ndarray]:
    """(along the eye line, down the face) of every pixel, in inter-ocular distances from the eyes' midpoint."""
    frame = face_frame(landmarks)
    gy, gx = np.mgrid[0 : shape_hw[0], 0 : shape_hw[1]].astype(np.float64)
    dx, dy = gx - frame.center[0], gy - frame.center[1]
    along = (dx * frame.x_axis[0] + dy * frame.x_axis[1]) / frame.iod
    down = (dx * frame.y_axis[0] + dy * frame.y_axis[1]) / frame.iod
    return along, down


def _disc(landmarks: np.ndarray, shape_hw, centre: np.ndarray, radius_iod: float) -> np.ndarray:
    gy, gx = np.mgrid[0 : shape_hw[0], 0 : shape_hw[1]]
    return np.hypot(gx - centre[0], gy - centre[1]) < radius_iod * _iod(landmarks)


def test_zero_appearance_strength_renders_exactly_the_motion_only_clip(subjects, monkeypatch):
    from mer_keras.data.synthetic import render

    s = subjects[0]
    kwargs = dict(n_frames=9, apex_index=4, blink_prob=1.0)  # noise, jitter and a blink on

    def no_appearance(*args, **kw):
        raise AssertionError("strength 0 must not compute an appearance change")

    with monkeypatch.context() as patched:
        patched.setattr(render, "appearance_change", no_appearance)
        rng_off = np.random.default_rng(8)
        off = render_clip(s, "negative", rng=rng_off, appearance_strength=0, **kwargs)
    with monkeypatch.context() as patched:  # the default strength with the shading step skipped
        patched.setattr(render._Shading, "apply", lambda self, frame, coefficient: None)
        skipped = render_clip(s, "negative", rng=np.random.default_rng(8), **kwargs)
    rng_on = np.random.default_rng(8)
    on = render_clip(s, "negative", rng=rng_on, **kwargs)

    assert not off.appearance_change.any() and on.appearance_change.any()
    for a, b in zip(off.frames, skipped.frames):
        np.testing.assert_array_equal(a, b)
    # the shading draws from a child generator: motion, blink, jitter, noise and the
    # caller's generator are the same with and without it
    assert on.blink and off.blink and on.actions == off.actions
    np.testing.assert_array_equal(on.apex_flow, off.apex_flow)
    assert rng_on.random() == rng_off.random()
    np.testing.assert_array_equal(on.frames[0], off.frames[0])
    shaded = on.appearance_change != 0
    for a, b in zip(on.frames, off.frames):
        differs = np.any(a != b, axis=-1)
        assert not np.any(differs & ~shaded)
    assert np.any(on.frames[4] != off.frames[4])


def test_appearance_is_zero_at_onset_and_largest_at_apex(subjects):
    s = subjects[1]
    kwargs = dict(n_frames=13, apex_index=5, amplitude=2.0, noise_sigma=0, jitter_px=0, blink_prob=0)
    on = render_clip(s, "surprise", rng=np.random.default_rng(4), appearance_strength=0.1, **kwargs)
    off = render_clip(s, "surprise", rng=np.random.default_rng(4), appearance_strength=0, **kwargs)
    change = on.appearance_change
    assert 0.06 - 1e-6 <= np.abs(change).max() <= 0.1 + 1e-6  # the clip's peak: strength x U(0.6, 1)
    shaded = np.abs(change) > 0.02
    lit = off.frames[5].astype(np.float64).mean(-1) > 40  # enough grey levels for the ratio to be measurable
    differences = [np.abs(a.astype(np.float64) - b)[shaded].mean() for a, b in zip(on.frames, off.frames)]
    assert differences[0] == 0 and int(np.argmax(differences)) == 5
    assert all(differences[i] < differences[i + 1] for i in range(5))
    assert all(differences[i] >= differences[i + 1] for i in range(5, 12))
    # at the apex the frame is the motion-only frame times (1 + change), up to uint8 rounding
    expected = off.frames[5].astype(np.float64) * (1.0 + change[..., None])
    error = np.abs(on.frames[5] - expected)[shaded & lit]
    assert error.max() <= 1.1, error.max()
    assert np.abs(on.frames[5].astype(np.float64) - off.frames[5])[shaded & lit].max() >= 5  # visible: grey levels


@pytest.mark.parametrize("action, below", [("AU1+2 brow raiser", False), ("AU26 jaw drop", True)])
def test_appearance_change_stays_at_its_action(subjects, action, below):
    """Forehead lines and lit brows stay above the nose tip; the parted lips and the
    flattened nasolabial and chin-lip furrows stay below the lower eyelids."""
    from mer_keras.data.synthetic.appearance import appearance_change

    s = subjects[2]
    frame = face_frame(s.landmarks)
    _, down = _face_coordinates(s.landmarks, (480, 640))
    depth = (s.landmarks.astype(np.float64) - frame.center) @ frame.y_axis / frame.iod  # of every landmark
    border = depth[list(range(40, 42)) + list(range(46, 48))].max() if below else depth[33]
    for k in range(5):
        change = appearance_change(s.landmarks, (480, 640), [action], 0.12, np.random.default_rng(k))
        assert np.abs(change).max() > 0.07
        elsewhere = down < border if below else down > border
        assert not np.any(change[elsewhere]), (action, k)


def test_rendered_appearance_leaves_the_background_untouched(subjects):
    s = subjects[3]
    lo, hi = s.landmarks.min(0), s.landmarks.max(0)
    margin = 0.6 * _iod(s.landmarks)
    face = np.zeros((480, 640), bool)
    face[int(lo[1] - margin) : int(hi[1] + margin) + 1, int(lo[0] - margin) : int(hi[0] + margin) + 1] = True
    for k, label in enumerate(motion.LABELS):
        kwargs = dict(n_frames=7, apex_index=3, noise_sigma=0, jitter_px=0, blink_prob=0)
        on = render_clip(s, label, rng=np.random.default_rng(30 + k), **kwargs)
        off = render_clip(s, label, rng=np.random.default_rng(30 + k), appearance_strength=0, **kwargs)
        changed = np.any(on.frames[3] != off.frames[3], axis=-1)
        assert changed.sum() > 200, label
        assert not np.any(changed & ~face), label
        assert not np.any(on.appearance_change[~face]), label


def test_class_appearance_means_differ_at_the_action_anchors(subjects):
    from mer_keras.data.synthetic.appearance import appearance_change

    s = subjects[0]
    pts = s.landmarks.astype(np.float64)
    frame = face_frame(pts)
    iod = frame.iod
    regions = {  # where each class's defining action creases or opens the face
        "glabella": _disc(pts, (480, 640), pts[[21, 22]].mean(0), 0.1),
        "nasolabial": _disc(pts, (480, 640), (pts[31] + pts[48]) / 2 - 0.12 * iod * frame.x_axis, 0.06)
        | _disc(pts, (480, 640), (pts[35] + pts[54]) / 2 + 0.12 * iod * frame.x_axis, 0.06),
        "forehead": _disc(pts, (480, 640), pts[[19, 24]].mean(0) - 0.13 * iod * frame.y_axis, 0.1),
        "lips": _disc(pts, (480, 640), pts[60:68].mean(0), 0.08),
    }
    means = {}
    for label in ("negative", "positive", "surprise"):
        maps = []
        for k in range(12):
            rng = np.random.default_rng(k)
            maps.append(appearance_change(pts, (480, 640), motion.draw_actions(label, rng), 0.12, rng))
        mean_map = np.mean(maps, axis=0)
        means[label] = {name: float(mean_map[region].mean()) for name, region in regions.items()}
    darkest = {name: min(means, key=lambda label: means[label][name]) for name in regions}
    expected = {"glabella": "negative", "nasolabial": "positive", "forehead": "surprise", "lips": "surprise"}
    assert darkest == expected, means
    assert means["negative"]["glabella"] < -0.02 and means["positive"]["glabella"] > -0.005, means
    assert means["positive"]["nasolabial"] < -0.02 and means["negative"]["nasolabial"] > -0.01, means


def test_draw_actions_then_displacement_field_equals_drawing_inside(subjects):
    s = subjects[0]
    for label in motion.LABELS:
        inside = displacement_field(s.landmarks, (480, 640), label, 2.0, np.random.default_rng(3))
        rng = np.random.default_rng(3)
        actions = motion.draw_actions(label, rng)
        outside = displacement_field(s.landmarks, (480, 640), label, 2.0, rng, actions=actions)
        np.testing.assert_array_equal(inside, outside)


def test_appearance_parameters_are_validated(subjects):
    from mer_keras.data.synthetic.appearance import appearance_change

    s, rng = subjects[0], np.random.default_rng(0)
    for bad in (-0.01, 0.51, float("nan"), float("inf"), "strong", None):
        with pytest.raises(ValueError, match="appearance strength"):
            render_clip(s, "positive", rng=rng, appearance_strength=bad)
    with pytest.raises(ValueError, match="no appearance cue"):
        appearance_change(s.landmarks, (480, 640), ["AU99 ear wiggler"], 0.1, rng)
    with pytest.raises(ValueError, match="landmarks"):
        appearance_change(s.landmarks[:60], (480, 640), ["AU4 brow lowerer"], 0.1, rng)
    with pytest.raises(ValueError, match="actions"):
        displacement_field(s.landmarks, (480, 640), "positive", 1.0, rng, actions=["AU12 lip corner puller"])


def test_write_dataset_passes_the_appearance_strength(tmp_path):
    from mer_keras.data.synthetic import write_dataset

    with pytest.raises(ValueError, match="appearance strength"):
        write_dataset("casme2", tmp_path / "bad", appearance_strength=-1)
    small = dict(n_subjects=1, clips_per_subject=1, frame_size=(320, 240), n_frames=5, seed=4)
    write_dataset("casme2", tmp_path / "plain", appearance_strength=0, **small)
    write_dataset("casme2", tmp_path / "shaded", **small)
    plain = sorted(p.relative_to(tmp_path / "plain") for p in (tmp_path / "plain").rglob("*.jpg"))
    shaded = sorted(p.relative_to(tmp_path / "shaded") for p in (tmp_path / "shaded").rglob("*.jpg"))
    assert plain == shaded and len(plain) >= 5
    changes = []
    for name in plain:
        a, b = cv2.imread(str(tmp_path / "plain" / name)), cv2.imread(str(tmp_path / "shaded" / name))
        changes.append(int(np.abs(a.astype(int) - b).max()))
    assert min(changes) == 0 and max(changes) > 5, changes  # the onset is neutral, the expression shaded


def _shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Procrustes distance of two 68-point shapes (translation, scale and rotation removed)."""
    a, b = a - a.mean(0), b - b.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    u, _, vt = np.linalg.svd(b.T @ a)
    return float(np.linalg.norm(b @ (u @ vt) - a))


def test_identity_variety_fills_the_gap_between_the_two_photos(subjects):
    """Default subjects cluster by base photo (subject i from photo i mod 2); varied ones are
    morphs, reshaped and lit: same-photo pairs differ more, and cross-photo pairs no longer
    stand apart from them. Measured when written (seed 3, 8 subjects): same-photo / cross-photo
    mean shape distance 0.069 / 0.112 default, 0.082 / 0.085 varied."""
    plain = make_subjects(8, seed=3)
    varied = make_subjects(8, seed=3, variety=True)
    for a, b in zip(plain[:4], subjects):  # the option leaves default subjects as they were
        np.testing.assert_array_equal(a.image, b.image)

    def spread(group):
        pairs = [(i, j) for i in range(8) for j in range(i + 1, 8)]
        same = np.mean([_shape_distance(group[i].landmarks, group[j].landmarks) for i, j in pairs if i % 2 == j % 2])
        cross = np.mean([_shape_distance(group[i].landmarks, group[j].landmarks) for i, j in pairs if i % 2 != j % 2])
        return same, cross

    plain_same, plain_cross = spread(plain)
    varied_same, varied_cross = spread(varied)
    assert plain_cross / plain_same > 1.4, (plain_same, plain_cross)
    assert varied_cross / varied_same < 1.2, (varied_same, varied_cross)
    assert varied_same > 1.1 * plain_same
    for s in varied:  # still a face dlib finds, with the stored landmarks
        found = detect_landmarks(s.image)
        assert len(found) == 1 and np.hypot(*(found[0] - s.landmarks).T).mean() < 0.1 * _iod(s.landmarks), s.name
        assert s.image.shape == (480, 640, 3)
