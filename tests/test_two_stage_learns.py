"""The two-stage ShuffleNetV2-SVM loop learns what its frames carry (issue 20).

Data: a tiny in-memory set whose frames show an *identity-independent* expression, so a
loop that works must find it on subjects it has never seen, and one that cannot learn (or
learns identities) stays at chance:

* each subject is a random smooth face-sized texture (its identity: low-frequency blobs of
  +-40 grey levels on grey 120, different for every subject and much larger than the
  expression);
* each clip's frames go from onset (no expression) to apex (full expression); the
  expression is a class-specific pattern of the same shape for every subject (negative: a
  dark horizontal band at brow height; positive: two bright marks at the mouth corners;
  surprise: a dark round mouth), peak 45 grey levels, times a per-clip strength in
  [0.7, 1]; pixel noise sigma 4 on every frame;
* the flow image of a clip (pre-training input) draws the same pattern into one of its
  three channels, so pre-training has something to learn and its reload can be measured.

The same run with the labels permuted across clips must score at chance (below the 99th
percentile of the pooled UF1 of label permutations, as in ``tests/test_chance.py``).
"""

import numpy as np
import pytest

from mer_keras.preprocess.changes import frame_changes
from mer_keras.training import LOSODataset, get_recipe, loso_folds, run_loso, seed_for
from mer_keras.training.two_stage import build_stage2, loss_terms, pretrain_fold, stage2_training_set

from .test_chance import null_uf1

SIZE = 32
N_SUBJECTS = 4
CLIPS_PER_CLASS = 4
N_FRAMES = 4
RECIPE = get_recipe("shufflenet_svm_changes").quick(6).replace(
    name="shufflenet-learns-test", input_size=SIZE, batch_size=8, pretrain_batch_size=8,
    model_kwargs={**get_recipe("shufflenet_svm_changes").model_kwargs, "width_multiplier": 0.5})


def _pattern(label: int) -> np.ndarray:
    """Expression of class ``label`` on the ``SIZE x SIZE`` grid, in [-1, 1] (same for every subject)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    if label == 0:  # brows lowered: a dark band
        return -np.exp(-((yy - 0.28) / 0.05) ** 2) * (np.abs(xx - 0.5) < 0.35)
    if label == 1:  # lip corners pulled: two bright marks
        return sum(np.exp(-(((yy - 0.72) / 0.06) ** 2 + ((xx - cx) / 0.06) ** 2)) for cx in (0.3, 0.7))
    return -np.exp(-(((yy - 0.75) / 0.09) ** 2 + ((xx - 0.5) / 0.09) ** 2))  # jaw dropped: a dark mouth


def _identity(rng: np.random.Generator) -> np.ndarray:
    blobs = np.zeros((SIZE, SIZE))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    for _ in range(6):
        cy, cx, r, a = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(-40, 40)
        blobs += a * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / r**2))
    return 120.0 + blobs


def expression_set(seed: int = 0, shuffle_labels: bool = False, input: str = "frames") -> tuple[LOSODataset, LOSODataset]:
    """``(flow_ds, frame_ds)`` of the set described in the module docstring; ``frame_ds`` holds ``input``
    (``"frames"`` or ``"frame_changes"``), as a two-stage recipe with that input reads it."""
    rng = np.random.default_rng(seed)
    flows, stacks, labels, subjects = [], [], [], []
    for s in range(N_SUBJECTS):
        face = _identity(rng)
        for label in np.repeat(np.arange(3), CLIPS_PER_CLASS):
            strength = rng.uniform(0.7, 1.0)
            ramp = np.linspace(0.0, 1.0, N_FRAMES)
            frames = [face + 45.0 * strength * t * _pattern(label) + rng.normal(0, 4, face.shape) for t in ramp]
            stacks.append(np.clip(np.stack(frames), 0, 255).astype(np.uint8)[..., None])
            flow = np.full((SIZE, SIZE, 3), 96.0) + rng.normal(0, 30, (SIZE, SIZE, 3))
            flow[..., label] += 100.0 * strength * np.abs(_pattern(label))
            flows.append(np.clip(flow, 0, 255).astype(np.uint8))
            labels.append(int(label))
            subjects.append(f"synth/s{s:02d}")
    y = np.array(labels)
    if shuffle_labels:
        y = np.random.default_rng(seed + 1).permutation(y)
    clips = [f"c{i:03d}" for i in range(len(y))]
    flow_ds = LOSODataset.from_arrays(np.stack(flows), y, subjects, clips=clips)
    if input == "frame_changes":
        stacks = [frame_changes(stack) for stack in stacks]
    frame_ds = LOSODataset.from_arrays(stacks, y, subjects, clips=clips)
    return flow_ds, frame_ds


def test_the_expression_is_identity_independent_and_smaller_than_identity():
    flow, frames = expression_set()
    onsets = np.stack([stack[0, ..., 0] for stack in frames.x]).astype(float)
    apexes = np.stack([stack[-1, ..., 0] for stack in frames.x]).astype(float)
    between_subjects = np.std([onsets[frames.subjects == s].mean(0) for s in frames.subject_list()], axis=0).mean()
    expression = np.abs(apexes - onsets).mean()
    assert expression < between_subjects  # identities differ more than a frame changes with its expression
    assert len(flow) == N_SUBJECTS * 3 * CLIPS_PER_CLASS and frames.x[0].shape == (N_FRAMES, SIZE, SIZE, 1)


@pytest.mark.parametrize("shuffle_labels", [False, True], ids=["true_labels", "shuffled_labels"])
def test_two_stage_loso_learns_the_expression_and_not_shuffled_labels(shuffle_labels, tmp_path):
    data = expression_set(shuffle_labels=shuffle_labels, input=RECIPE.input)
    report = run_loso(data, RECIPE, tmp_path / "run", progress=False)
    q99 = float(np.percentile(null_uf1(data[0].y), 99))
    print(f"pooled UF1 {report['uf1']:.4f} ({'shuffled' if shuffle_labels else 'true'} labels); null q99 {q99:.4f}")
    assert report["n_folds"] == N_SUBJECTS
    if shuffle_labels:
        assert report["uf1"] < q99
    else:
        assert report["uf1"] >= 0.9


def test_reloading_pretrained_layers_moves_stage2_starting_point():
    """The reload changes stage 2's starting point: its pooled features of the training frames
    (training-mode BatchNorm, as the first step sees them) and its initial hinge loss."""
    import keras

    flow, frames = expression_set(input=RECIPE.input)
    fold = loso_folds(flow)[0]
    keras.backend.clear_session()
    pretrained, _, _ = pretrain_fold(flow, fold, RECIPE, seed_for(0, fold.name))
    seed = seed_for(0, "stage2")
    fresh, none = build_stage2(RECIPE, frames.sample_shape, 3, seed)
    reloaded, names = build_stage2(RECIPE, frames.sample_shape, 3, seed, pretrained)
    assert none == [] and len(names) > 5
    train = stage2_training_set(frames, fold.train_index, [1, 2])
    a, b = (loss_terms(m, train["x"], train["y"], RECIPE.loss) for m in (fresh, reloaded))
    for name in names:
        for w0, w1 in zip(pretrained.get_layer(name).get_weights(), reloaded.get_layer(name).get_weights()):
            np.testing.assert_array_equal(w0, w1)
    f0, f1 = (keras.ops.convert_to_numpy(keras.Model(m.inputs, m.get_layer("avg_pool").output)(train["x"], training=True))
              for m in (fresh, reloaded))
    moved = float(np.abs(f1 - f0).mean() / np.abs(f0).mean())
    print(f"initial stage-2 hinge loss: fresh {a['data_loss']:.4f}, reloaded {b['data_loss']:.4f}; pooled features "
          f"moved by {moved:.2f} of their mean magnitude")
    assert moved > 0.1
    assert abs(a["data_loss"] - b["data_loss"]) > 1e-4


def test_frame_changes_cancel_the_face_and_keep_the_change():
    from mer_keras.inference.predict import network_input

    stack = np.array([[[100, 0]], [[110, 0]], [[40, 250]]], dtype=np.uint8)  # T=3 frames of 1 x 2 pixels
    out = frame_changes(stack)
    np.testing.assert_array_equal(out, [[[128, 128]], [[148, 128]], [[8, 255]]])  # 128 + 2 x change, clipped
    assert out.dtype == np.uint8
    features = type("F", (), {"frames": stack})()
    np.testing.assert_array_equal(network_input(features, "frame_changes")[..., 0], out)
    with pytest.raises(ValueError, match="gain"):
        frame_changes(stack, gain=0)
