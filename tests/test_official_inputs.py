"""The ``off_tanet`` preset prepares the input the official Off-TANet code computes, and the ported model agrees.

The official steps, written here from their description (``preprocessing.md``, section
"Off-TANet official code", ``data.py``): each frame of the dataset's cropped release is read
in colour with ``cv2.imread``, resized to 112 x 112 with ``INTER_CUBIC`` and converted to
grey (``COLOR_BGR2GRAY``); no detection, alignment or mask. The flow is
``cv2.optflow.DualTVL1OpticalFlow_create()`` with its defaults, ``calc(onset, apex)``; the
strain is ``sqrt(ux^2 + uy^2 + 0.5 (vx + uy)^2)`` of ``cv2.Sobel(..., CV_32F, 1, 0)`` /
``(0, 1)`` derivatives; the network reads the raw floats ``(u, v, strain)``.

Data: a synthetic Off-TANet composite (CASME, CASME II, CAS(ME)^2) written with its cropped
releases only, read back by the readers with ``release="cropped"``, prepared by ``prepare``
with the ``off_tanet`` preset. The model is the ported official Off-TANet with the released
weights of LOSO fold 1 when the reference file is beside the repository, else the same
architecture with seeded weights (the comparison of the two inputs does not depend on them).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "off_tanet_official_loso1.npz"


def official_input(onset_path, apex_path, size: int = 112) -> np.ndarray:
    """The official Off-TANet network input of one clip, ``size x size x 3`` float32 ``(u, v, strain)``."""
    grey = []
    for path in (onset_path, apex_path):
        image = cv2.resize(cv2.imread(str(path)), (size, size), interpolation=cv2.INTER_CUBIC)
        grey.append(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    flow = cv2.optflow.DualTVL1OpticalFlow_create().calc(grey[0], grey[1], None)
    u, v = flow[..., 0], flow[..., 1]
    ux, uy = cv2.Sobel(u, cv2.CV_32F, 1, 0), cv2.Sobel(u, cv2.CV_32F, 0, 1)
    vx = cv2.Sobel(v, cv2.CV_32F, 1, 0)
    strain = np.sqrt(ux**2 + uy**2 + 0.5 * (vx + uy) ** 2)
    return np.stack([u, v, strain], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from mer_keras.data.composites import load_composite
    from mer_keras.data.synthetic import write_composite
    from mer_keras.preprocess.cache import prepare
    from mer_keras.preprocess.pipeline import PreprocessConfig

    root = tmp_path_factory.mktemp("official_inputs")
    roots = write_composite("off_tanet", root / "data", subjects_per_dataset=1, clips_per_subject=2, n_frames=7,
                            seed=21, release="cropped")
    manifest = load_composite("off_tanet", release="cropped", **roots)
    manifest = manifest[manifest["label_id"] >= 0].reset_index(drop=True)
    assert set(manifest["release"]) == {"cropped"} and manifest["dataset"].nunique() == 3
    result = prepare(manifest, root / "cache", PreprocessConfig.preset("off_tanet"), workers=1, progress=False)
    assert result.skipped.empty
    return manifest, root / "cache"


def _ends(row):
    numbers = list(row["frame_numbers"])
    return row["frames"][numbers.index(row["onset"])], row["frames"][numbers.index(row["apex"])]


def test_crops_are_read_from_the_cropped_releases(prepared):
    manifest, _ = prepared
    for row in manifest.to_dict("records"):
        onset = Path(_ends(row)[0])
        folder = {"casme": "Cropped", "casme2": "Cropped", "casme_sq": "cropped"}[row["dataset"]]
        assert folder in onset.parts, onset
        height, width = cv2.imread(str(onset)).shape[:2]
        assert max(height, width) < 400  # a face crop, not a 640 x 480 recording


def test_prepared_input_equals_the_official_steps(prepared):
    from mer_keras.training import LOSODataset

    manifest, cache = prepared
    data = LOSODataset.from_cache(cache, input="flow_stack")
    assert data.x.shape == (len(manifest), 112, 112, 3) and data.x.dtype == np.float32
    order = {clip: i for i, clip in enumerate(data.clips)}
    worst = 0.0
    for row in manifest.to_dict("records"):
        want = official_input(*_ends(row))
        got = data.x[order[str(row["clip"])]]
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"max |prepared - official steps| over {len(manifest)} clips: {worst:.2e}")
    assert worst < 1e-5


def test_ported_model_gives_the_same_logits_on_both_inputs(prepared):
    import keras

    from mer_keras.models.off_tanet import OffTANet
    from mer_keras.models.port import load_torch_state_dict
    from mer_keras.training import LOSODataset

    manifest, cache = prepared
    keras.utils.set_random_seed(3)
    model = OffTANet(classifier_activation=None)
    official_weights = REFERENCE.is_file()
    if official_weights:
        assert load_torch_state_dict(model, REFERENCE).complete
    data = LOSODataset.from_cache(cache, input="flow_stack")
    order = [data.clips.tolist().index(str(c)) for c in manifest["clip"]]
    ours = np.asarray(model(data.x[order], training=False))
    theirs = np.asarray(model(np.stack([official_input(*_ends(r)) for r in manifest.to_dict("records")]),
                              training=False))
    diff = float(np.abs(ours - theirs).max())
    print(f"{'official' if official_weights else 'seeded'} weights: max |logit difference| = {diff:.2e} "
          f"(logit range {float(np.ptp(theirs)):.2f})")
    assert diff < 1e-4 and (ours.argmax(-1) == theirs.argmax(-1)).all()
