"""Two-stage training of the ShuffleNetV2-SVM paper (Liu et al. 2022): flow pre-training, then frames.

Per LOSO fold (:func:`train_fold_two_stage`; selected by :func:`mer_keras.training.loso.run_loso`
for recipes with ``trainer="two_stage"``, e.g. ``"shufflenet_svm"``):

1. **Pre-training** (paper, "TV-L1 optical flow features and pre-training";
   :func:`pretrain_fold`). The network with a softmax head is trained with cross-entropy
   and Adam (``pretrain_lr``, paper 0.001) on the TV-L1 flow images (onset -> apex, cache
   input ``"flow_image"``) of the fold's training subjects. "We extracted the same number
   of samples from each category": every epoch draws, without replacement, as many
   samples of each class as the smallest class has
   (:func:`~mer_keras.training.folds.balanced_indices`) and feeds them in a random order
   "without repetition". The paper keeps the weights "when the model is most accurate";
   here the epoch is chosen on a validation split of whole training subjects
   (:func:`~mer_keras.training.folds.inner_split`, ``val_fraction`` of the subjects,
   never the test subject): the highest validation UF1 (the class-balanced accuracy the
   papers report; the validation split is not class-balanced), ties broken by the lower
   validation cross-entropy, then by the earlier epoch. The pre-training model is fitted
   on the remaining training subjects only.
2. **Training on frames** (paper, Fig. 1 steps 3-4; :func:`build_stage2`). A *fresh* model
   with the recipe's head (SVM: linear outputs trained with the multi-margin hinge loss of
   Eq. 17, margin 1, p = 1) is built from a seed of its own; the pre-trained
   *down-sampling layers* (:func:`~mer_keras.models.heads.downsampling_layer_names`:
   ShuffleNetV2's stem, stages 2-4 and conv5; for backbones without such a list, every
   weighted layer before the pooled features) are copied into it
   (:func:`~mer_keras.models.heads.copy_layer_weights`); the classifier (and, for the
   attention variants, the CBAM / ViT units) stay freshly initialised. It is trained on
   every aligned, masked frame from onset to apex of the training clips, each frame
   carrying its clip's label (:meth:`~mer_keras.training.datasets.LOSODataset.expand_frames`);
   the frames of the ``flip_classes`` clips (paper, "Pre-processing": positive and
   surprise "expanded by horizontal inversion") are added once more, mirrored
   (:func:`stage2_training_set`). Adam at ``lr`` (paper 0.001) with the learning rate
   "dynamically adjusted by accuracy and loss" (:class:`PlateauSchedule`). The model after
   the last epoch is evaluated (the paper names no stage-2 selection; the test subject
   never selects anything). A test clip's score is the mean of its frames' scores
   (SVM decision values or softmax probabilities; :func:`~mer_keras.training.datasets.clip_scores`).

Inputs. The flow image (uint8 ``S x S x 3``) and the grey frames (uint8 ``S x S x 1``) are
kept in memory as uint8 tensors; the model starts with ``Rescaling(1/255)`` (layer
``"rescale"``) and, for grey frames, repeats the grey channel three times (layer
``"grey_to_rgb"``: the paper's network takes 224 x 224 x 3 images, Table 1), so the stem
has the same weights shape in both stages and is reloaded exactly. Both datasets come from
the same cache in the same clip order (checked).

Both stages reuse the engine's compiled epoch loop (:func:`mer_keras.training.backends.fold_trainer`;
one ``tf.function`` per epoch over in-memory tensors). Everything fitted sees training
subjects only: :func:`~mer_keras.training.folds.assert_subject_disjoint` is called for
fold train/test (both datasets), pre-training fit/validation, validation/test and, in
stage 2, for the clips of the frames trained on.

Memory. A run through :func:`two_stage_inputs` holds every frame once: one 64-byte-aligned
buffer (:func:`stage2_pool`) with all clips' frames followed by the mirrored frames of the
``flip_classes`` clips; the frame dataset's stacks are views into it
(:func:`pooled_frames`), and TensorFlow reads it without a copy
(:func:`~mer_keras.training.backends.tensorflow.to_tensor`). A fold's stage 2 gathers its training
rows (:func:`stage2_rows`: the same samples, in the same order, as
:func:`stage2_training_set`; the test subject's rows are in the buffer but never among
them, checked), so no per-fold copy is made. Before, each fold concatenated the frames and
their mirrored copies into a new array and ``tf.constant`` copied it again. Measured peaks:
docs/benchmarks.md, section "Memory of one ShuffleNetV2-SVM fold at 224 px" (``mer-keras bench fold``).

L2 = 0.2 (paper, Experiments: "L2 regularization at a scale of 0.2") collapses training.
Keras' ``L2(0.2)`` adds ``0.2 * sum(w**2)`` per kernel, far more than the hinge loss at
initialisation; with it training predicts every frame as one class and stays at the majority
share, with 5e-4 it learns the training frames. Measured with :func:`loss_terms`:
docs/benchmarks.md, section "Two-stage: L2 = 0.2 against the hinge loss". Adam normalises the
update per weight, so the weights the data barely moves are driven by the regulariser,
shrinking at about the learning rate per step. The global gradient norms are of the same
order at initialisation (BatchNorm makes the convolutions scale-invariant), so the damage is
done through the loss landscape over many steps rather than visible in one gradient.
``"shufflenet_svm"`` keeps 0.2 (the paper's value); ``"shufflenet_svm_corrected"`` uses 5e-4
(recipe notes hold the full numbers).
"""

from __future__ import annotations

import gc
import inspect
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .datasets import LOSODataset, aligned_empty, clip_scores
from .folds import Fold, assert_subject_disjoint, balanced_indices, inner_split
from . import backends
from .engine import dataset_fingerprint, epoch_order, make_loss, make_optimizer, seed_for, validation_uf1
from .loop import (Hook, KeepBest, PlateauSchedule, Progress, StepSchedule, Timing, Validation, run_epochs,
                   schedule_hook)
from .recipes import Recipe

__all__ = [
    "PlateauSchedule", "build_stage2", "build_two_stage_model", "frame_clip_scores", "load_two_stage_data",
    "loss_terms", "model_predict",
    "pooled_frames", "pretrain_fold", "stage2_pool", "stage2_rows", "stage2_training_set", "train_fold_two_stage",
    "two_stage_fingerprint", "two_stage_inputs",
]


# ----------------------------------------------------------------------------- data


def load_two_stage_data(data, recipe: Recipe, *, progress: bool = False) -> tuple[LOSODataset, LOSODataset]:
    """``(flow_ds, frame_ds)``: the flow images and the onset..apex frame stacks of the same clips.

    ``data`` is a prepared cache (path or :class:`~mer_keras.preprocess.cache.PreparedCache`;
    needs ``keep="onset_to_apex"``, e.g. ``PreprocessConfig.preset("shufflenet", size=...)``)
    or a ``(flow_ds, frame_ds)`` pair. Raises ``ValueError`` when the two disagree on clips,
    labels or subjects, or when the flow images do not have the recipe's ``input_size``.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, LOSODataset) for d in data):
        flow, frames = data
    else:
        from mer_keras.preprocess.cache import PreparedCache

        if isinstance(data, (str, Path)) and not (Path(data) / "cache.json").is_file():
            raise ValueError(f"{data}: a two-stage recipe needs a prepared cache with frame stacks "
                             "(`mer-keras prepare` with the 'shufflenet' preset)")
        cache = data if isinstance(data, PreparedCache) else PreparedCache(data)
        flow = LOSODataset.from_cache(cache, input="flow_image", progress=progress)
        frames = LOSODataset.from_cache(cache, input=recipe.input, progress=progress)
    if flow.is_sequence or not frames.is_sequence:
        raise ValueError("expected (flow images, frame sequences)")
    for column in ("clips", "subjects", "datasets", "y"):
        if not np.array_equal(getattr(flow, column), getattr(frames, column)):
            raise ValueError(f"flow and frame datasets differ in {column} (they must list the same clips in the same order)")
    if tuple(flow.sample_shape) != tuple(recipe.input_size):
        raise ValueError(f"flow images are {'x'.join(map(str, flow.sample_shape))} but recipe {recipe.name!r} expects "
                         f"{'x'.join(map(str, recipe.input_size))}; prepare the cache at that size or override "
                         f"input_size={flow.sample_shape[0]}")
    if tuple(frames.sample_shape[:2]) != tuple(flow.sample_shape[:2]) or frames.sample_shape[2] not in (1, 3):
        raise ValueError(f"frames are {frames.sample_shape}, flow images {flow.sample_shape}: sizes must match")
    return flow, frames


def two_stage_fingerprint(flow: LOSODataset, frames: LOSODataset) -> dict:
    """Identity of both inputs of a run (part of the run's config hash)."""
    import hashlib


    h = hashlib.sha256()
    for stack in frames.x:
        h.update(np.ascontiguousarray(stack).tobytes())
        h.update(str(stack.shape).encode())
    n_frames = int(sum(len(s) for s in frames.x))
    return {**dataset_fingerprint(flow), "n_frames": n_frames, "frames_sha256": h.hexdigest()[:16]}


def stage2_pool(frames: LOSODataset, flip_labels) -> dict[str, np.ndarray]:
    """Every stage-2 sample of ``frames`` in one buffer: each clip's frames, then the mirrored ones.

    ``x`` (``F' x S x S x C``, same dtype as the frames) is filled once, in a
    64-byte-aligned buffer (:func:`~mer_keras.training.datasets.aligned_empty`, so the
    trainer hands it to TensorFlow without a copy): the frames of every clip in dataset
    order, then a mirrored copy (left-right, :func:`~mer_keras.preprocess.augment.hflip_image`)
    of the frames of each clip whose label is in ``flip_labels``, in dataset order (paper,
    "Pre-processing": positive and surprise "expanded by horizontal inversion"; grey frames
    carry no flow, so nothing is negated). Per row: ``y`` (the clip's label),
    ``frame_to_clip`` (dataset position of the clip) and ``flipped``; per clip: ``start``
    (first row of its frames), ``flip_start`` (first row of its mirrored frames, -1 when
    not mirrored) and ``length``. :func:`stage2_rows` picks a fold's training rows.
    """
    flip = np.asarray(sorted(set(int(v) for v in flip_labels)), dtype=np.int64)
    length = np.array([len(stack) for stack in frames.x], dtype=np.int64)
    mirrored = np.isin(frames.y, flip)
    start = np.concatenate([[0], np.cumsum(length)[:-1]])
    n = int(length.sum())
    flip_start = np.full(len(frames), -1, dtype=np.int64)
    flip_start[mirrored] = n + np.concatenate([[0], np.cumsum(length[mirrored])[:-1]])
    x = aligned_empty((n + int(length[mirrored].sum()), *frames.sample_shape), frames.x[0].dtype)
    for i, stack in enumerate(frames.x):
        x[start[i]: start[i] + length[i]] = stack
        if mirrored[i]:
            x[flip_start[i]: flip_start[i] + length[i]] = stack[:, :, ::-1, :]
    owner = np.concatenate([np.repeat(np.arange(len(frames)), length), np.repeat(np.flatnonzero(mirrored),
                                                                                 length[mirrored])])
    return {"x": x, "y": frames.y[owner], "frame_to_clip": owner,
            "flipped": np.arange(len(x)) >= n, "start": start, "flip_start": flip_start, "length": length,
            "flip_labels": flip}


def stage2_rows(pool: dict, index) -> np.ndarray:
    """Rows of ``pool`` (:func:`stage2_pool`) forming the stage-2 training set of the clips at ``index``.

    The frames of each clip in ``index`` order, then the mirrored frames of the mirrored
    ones in ``index`` order: ``pool["x"][stage2_rows(pool, index)]`` equals
    ``stage2_training_set(frames, index, flip_labels)["x"]`` (tested).
    """
    index = np.asarray(index, dtype=np.int64)
    start, flip_start, length = pool["start"], pool["flip_start"], pool["length"]
    mirrored = index[flip_start[index] >= 0]
    parts = [np.arange(start[i], start[i] + length[i]) for i in index]
    parts += [np.arange(flip_start[i], flip_start[i] + length[i]) for i in mirrored]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def stage2_training_set(frames: LOSODataset, index, flip_labels) -> dict[str, np.ndarray]:
    """Stage-2 training frames of the clips at ``index``, with the flip doubling.

    Returns ``x`` (``F' x S x S x C`` uint8), ``y`` (frame labels = clip labels),
    ``frame_to_clip`` (dataset position of each frame's clip) and ``flipped`` (bool): the
    frames of every clip, in ``index`` order, then a mirrored copy (left-right,
    :func:`~mer_keras.preprocess.augment.hflip_image`) of each frame of the clips whose
    label is in ``flip_labels`` (paper, "Pre-processing": positive and surprise "expanded by
    horizontal inversion"). Grey frames carry no flow, so nothing is negated. ``x`` is one
    aligned buffer filled once (:func:`stage2_pool` of the clips at ``index``): the same
    rows as concatenating the frames and their mirrored copies, without the intermediate
    copies.
    """
    index = np.asarray(index, dtype=np.int64)
    pool = stage2_pool(frames.subset(index), flip_labels)
    return {"x": pool["x"], "y": pool["y"], "frame_to_clip": index[pool["frame_to_clip"]], "flipped": pool["flipped"]}


def pooled_frames(frames: LOSODataset, pool: dict) -> LOSODataset:
    """``frames`` with each clip's stack a view into ``pool["x"]`` (the frames held once, not twice)."""
    views = np.empty(len(frames), dtype=object)
    for i, (begin, n) in enumerate(zip(pool["start"], pool["length"])):
        views[i] = pool["x"][begin: begin + n]
    return LOSODataset(x=views, y=frames.y, subjects=frames.subjects, datasets=frames.datasets, clips=frames.clips,
                       class_names=frames.class_names)


def _flip_labels(recipe: Recipe, class_names) -> list[int]:
    unknown = sorted(set(recipe.flip_classes) - set(class_names))
    if unknown:
        raise ValueError(f"flip_classes {unknown} are not class names {list(class_names)}")
    return [list(class_names).index(c) for c in recipe.flip_classes]


# ----------------------------------------------------------------------------- models


def _builder_kwargs(builder, kwargs: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split ``kwargs`` into those the builder accepts and those it does not (e.g. DeiT has no ``activation``)."""
    params = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs), {}
    return ({k: v for k, v in kwargs.items() if k in params}, {k: v for k, v in kwargs.items() if k not in params})


def build_two_stage_model(recipe: Recipe, data_shape, n_classes: int, *, head: str, dtype: str = "uint8",
                          seed: int | None = None):
    """A fresh model of ``recipe.model`` reading samples of ``data_shape`` (``H x W x 1|3``) and ``dtype``.

    Layers: ``"input"`` -> ``"rescale"`` (``x / 255`` for uint8, identity otherwise) ->
    ``"grey_to_rgb"`` (grey frames only: the channel repeated three times) -> the backbone
    built with ``recipe.model_kwargs`` (keys the builder does not take are left out and
    listed in ``model.two_stage_dropped_kwargs``) and the ``head`` (``"svm"`` or
    ``"softmax"``). With ``seed``, Keras' global seeds are set first, so the same seed
    gives the same initial weights.
    """
    import keras

    from mer_keras.models import get

    builder = get(recipe.model)
    kwargs, dropped = _builder_kwargs(builder, recipe.model_kwargs)
    if seed is not None:
        backends.seed(int(seed))
    data_shape = tuple(int(v) for v in data_shape)
    if data_shape[-1] not in (1, 3):
        raise ValueError(f"samples must have 1 (grey) or 3 channels, got {data_shape}")
    inp = keras.Input(shape=data_shape, dtype=dtype, name="input")
    x = keras.layers.Rescaling(1.0 / 255.0 if dtype == "uint8" else 1.0, name="rescale")(inp)
    if data_shape[-1] == 1:
        x = keras.layers.Concatenate(name="grey_to_rgb")([x, x, x])
    built = builder(classes=int(n_classes), input_tensor=x, input_shape=tuple(x.shape[1:]), head=head, **kwargs)
    model = keras.Model(inp, built.outputs[0], name=built.name)  # single (not list) input: no structure warning
    model.two_stage_dropped_kwargs = dropped
    if recipe.init == "pytorch":
        from mer_keras.models.init import pytorch_default_init

        pytorch_default_init(model)
    return model


def build_stage2(recipe: Recipe, data_shape, n_classes: int, seed: int, pretrained=None, *, dtype: str = "uint8"):
    """The stage-2 model: fresh (seeded) with ``recipe.head``; ``(model, reloaded layer names)``.

    With a ``pretrained`` model, the weights of its down-sampling layers
    (:func:`~mer_keras.models.heads.downsampling_layer_names` of the pre-trained model) are
    copied in (paper, "the weights of the down sampled partial layers are retained ... In
    the final training, the weights of the layers are loaded"); everything else keeps the
    fresh initialisation of ``seed``.
    """
    from mer_keras.models.heads import copy_layer_weights, downsampling_layer_names

    model = build_two_stage_model(recipe, data_shape, n_classes, head=recipe.head, dtype=dtype, seed=seed)
    if pretrained is None:
        return model, []
    return model, copy_layer_weights(pretrained, model, downsampling_layer_names(pretrained))


# ----------------------------------------------------------------------------- measurement


def loss_terms(model, x, y, loss: str, batch_size: int = 256, *, gradients: bool = False) -> dict:
    """Data loss, L2 term and prediction spread of ``model`` on ``(x, y)`` (inference mode).

    ``data_loss``: the mean hinge loss (Eq. 17, ``loss="multi_margin"``) or cross-entropy;
    ``reg_loss``: the sum of the model's regularisation losses (``0.2 * sum(w**2)`` per
    kernel for the paper's L2); ``ratio`` = reg / data; ``majority_share``: the share of
    samples predicted as the most predicted class (1.0 = every sample one class);
    ``score_std``: the standard deviation of the outputs over samples, averaged over
    classes (near 0 when the outputs no longer depend on the input). With ``gradients``,
    also ``grad_ratio``: ``||d reg / dw|| / ||d data / dw||`` over the trainable weights on
    the first ``batch_size`` samples in training mode (how much of the update the
    regulariser decides).
    """
    import keras

    out = np.concatenate([np.asarray(model(x[i: i + batch_size], training=False), dtype=np.float64)
                          for i in range(0, len(x), batch_size)])
    y = np.asarray(y, dtype=np.int64)
    rows = np.arange(len(y))
    if loss == "multi_margin":
        margin = np.maximum(0.0, 1.0 - out[rows, y][:, None] + out)
        margin[rows, y] = 0.0
        data = float(margin.sum(axis=1).mean() / out.shape[1])
    else:
        data = float(-np.mean(np.log(np.clip(out[rows, y], 1e-12, None))))
    reg = float(sum(float(keras.ops.convert_to_numpy(t)) for t in model.losses)) if model.losses else 0.0
    pred = out.argmax(axis=1)
    terms = {"data_loss": data, "reg_loss": reg, "ratio": reg / max(data, 1e-12),
             "majority_share": float(np.bincount(pred).max() / len(pred)),
             "score_std": float(out.std(axis=0).mean()), "accuracy": float(np.mean(pred == y))}
    if gradients:
        import tensorflow as tf

        from mer_keras.models.heads import MultiMarginLoss

        loss_fn = MultiMarginLoss() if loss == "multi_margin" else keras.losses.SparseCategoricalCrossentropy()
        weights = model.trainable_variables
        with tf.GradientTape(persistent=True) as tape:
            data_t = loss_fn(tf.constant(y[:batch_size], tf.int32), model(x[:batch_size], training=True))
            reg_t = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
        norm = lambda grads: float(tf.linalg.global_norm([g for g in grads if g is not None]))  # noqa: E731
        g_data, g_reg = norm(tape.gradient(data_t, weights)), norm(tape.gradient(reg_t, weights))
        del tape
        terms["grad_ratio"] = g_reg / max(g_data, 1e-12)
    return terms


def _reg_loss(model) -> float:
    import keras

    return float(sum(float(keras.ops.convert_to_numpy(t)) for t in model.losses)) if model.losses else 0.0


# ----------------------------------------------------------------------------- stages


def pretrain_fold(flow: LOSODataset, fold: Fold, recipe: Recipe, fold_seed: int, *, mixed: bool = False,
                  progress: bool = False, position: int = 1, hooks: Sequence[Hook] = ()):
    """Stage 1 of one fold: ``(pre-trained model, history, info)`` (see the module docstring).

    ``history``: per epoch ``loss``, ``accuracy`` (balanced training samples, total loss
    incl. L2), ``reg_loss``, ``class_counts`` (samples per class fed that epoch),
    ``val_loss``, ``val_accuracy``, ``val_uf1``, ``n_samples``. ``info``: the fit /
    validation indices and subjects and the chosen ``best_epoch`` (0-based), whose weights
    the model holds. ``hooks`` are added to the epoch loop (label ``"pretrain"``).
    """

    assert_subject_disjoint(flow, fold.train_index, fold.test_index)
    backends.seed(fold_seed)
    rng = np.random.default_rng(fold_seed)
    fit, val = inner_split(flow, fold.train_index, recipe.val_fraction, seed=fold_seed, test_index=fold.test_index)
    assert_subject_disjoint(flow, fit, val)
    assert_subject_disjoint(flow, val, fold.test_index)
    assert_subject_disjoint(flow, fit, fold.test_index)

    x_fit, y_fit = flow.x[fit], flow.y[fit]
    x_val, y_val = flow.x[val], flow.y[val]
    stage = recipe.stage("pretrain")  # the stage-2 optimiser at pretrain_lr, constant; softmax + cross-entropy
    model = build_two_stage_model(stage, flow.sample_shape, flow.n_classes, head="softmax", dtype=str(flow.x.dtype))
    trainer = backends.fold_trainer(model, make_optimizer(stage), make_loss(stage, flow.n_classes), x_fit, y_fit,
                                     stage.batch_size, mixed=mixed)
    positions = np.arange(len(y_fit))

    def epoch(_, lr):
        chosen = balanced_indices(y_fit, positions, rng)
        loss, acc = trainer.train_epoch(rng.permutation(chosen), lr)
        return {"loss": loss, "accuracy": acc, "reg_loss": _reg_loss(model), "n_samples": int(len(chosen)),
                "class_counts": np.bincount(y_fit[chosen], minlength=flow.n_classes).tolist()}

    best = KeepBest(model, key=lambda logs: (logs["val_uf1"], -logs["val_loss"]))
    hooks = [StepSchedule(stage.lr), Validation(trainer.predict, x_val, y_val, "cross_entropy"), best,
             Progress(recipe.pretrain_epochs, f"  {fold.name} pre-train", enabled=progress, position=position,
                      show=("loss", "val_uf1")), *hooks]
    history = run_epochs(epoch, recipe.pretrain_epochs, hooks, lr=stage.lr, label="pretrain")
    history.pop("best_epoch", None)
    best_epoch = best.best_epoch
    info = {"best_epoch": int(best_epoch), "fit_index": fit.tolist(), "val_index": val.tolist(),
            "fit_subjects": sorted(set(flow.subjects[fit].tolist())), "val_subjects": sorted(set(flow.subjects[val].tolist())),
            "dropped_model_kwargs": sorted(model.two_stage_dropped_kwargs)}
    return model, history, info


def train_fold_two_stage(flow: LOSODataset, frames: LOSODataset, fold: Fold, recipe: Recipe, fold_seed: int, *,
                         mixed: bool = False, progress: bool = False, position: int = 1,
                         track_loss_terms: bool = False, return_model: bool = False, pool: dict | None = None,
                         hooks: Sequence[Hook] = ()):
    """Both stages of one fold; returns ``(scores, history)`` (``(scores, history, model)`` with ``return_model``).

    ``scores``: ``len(fold.test_index) x K``, one row per test clip in ``fold.test_index``
    order, the mean over the clip's frames of the final model's outputs (SVM decision
    values, or softmax probabilities for ``head="softmax"``). ``history``: ``"pretrain"``
    (see :func:`pretrain_fold`; empty without pre-training), ``"train"`` (per stage-2
    epoch: ``loss`` incl. L2, ``accuracy``, ``lr``, ``reg_loss``; with
    ``track_loss_terms`` also the :func:`loss_terms` of the training frames after each
    epoch as ``terms_*``, plus ``terms_initial``) and ``"info"`` (sizes, reloaded layers,
    best pre-training epoch, timings, seeds).

    Memory. ``pool``: a :func:`stage2_pool` of ``frames`` built once for the run
    (:func:`two_stage_inputs` does): stage 2 then trains on the fold's rows of it
    (:func:`stage2_rows`, the same samples in the same order as
    :func:`stage2_training_set`), so no per-fold copy of the frames is made. Without it the
    fold's :func:`stage2_training_set` is built. Either buffer reaches TensorFlow without
    a copy (:func:`~mer_keras.training.backends.tensorflow.to_tensor`). The stage-1 model, trainer
    and flow arrays are released before the stage-2 set-up.
    """
    import keras

    if not np.array_equal(flow.clips, frames.clips) or not np.array_equal(flow.subjects, frames.subjects):
        raise ValueError("flow and frame datasets must list the same clips in the same order")
    assert_subject_disjoint(flow, fold.train_index, fold.test_index)
    assert_subject_disjoint(frames, fold.train_index, fold.test_index)
    keras.backend.clear_session()
    start = time.perf_counter()

    pretrained, pre_history, pre_info = None, {}, {}
    if recipe.pretrain:
        pretrained, pre_history, pre_info = pretrain_fold(flow, fold, recipe, fold_seed, mixed=mixed,
                                                          progress=progress, position=position, hooks=hooks)
    pre_s = time.perf_counter() - start

    stage2_seed = seed_for(fold_seed, "stage2")
    rng = np.random.default_rng(stage2_seed)
    flip = _flip_labels(recipe, frames.class_names)
    if pool is None:
        pool = stage2_training_set(frames, fold.train_index, flip)
        rows = np.arange(len(pool["y"]))
    elif len(pool["length"]) != len(frames) or not np.array_equal(pool["flip_labels"], sorted(set(flip))):
        raise ValueError("pool must be the stage2_pool of these frames with the recipe's flip classes")
    else:
        rows = stage2_rows(pool, fold.train_index)
    assert_subject_disjoint(frames, np.unique(pool["frame_to_clip"][rows]), fold.test_index)
    model, reloaded = build_stage2(recipe, frames.sample_shape, frames.n_classes, stage2_seed, pretrained,
                                   dtype=str(pool["x"].dtype))
    del pretrained
    gc.collect()  # the stage-1 model, trainer and traced loop form reference cycles: free them before stage 2
    trainer = backends.fold_trainer(model, make_optimizer(recipe), make_loss(recipe, frames.n_classes), pool["x"],
                                     pool["y"], recipe.batch_size, mixed=mixed)
    schedule = schedule_hook(recipe.stages()["train"])  # reduce on plateau of the training loss / accuracy
    terms_initial = None
    if track_loss_terms:
        x_rows, y_rows = pool["x"][rows], pool["y"][rows]  # a copy, for this analysis only
        terms_initial = loss_terms(model, x_rows, y_rows, recipe.loss)

    def epoch(_, lr):
        loss, acc = trainer.train_epoch(rows[epoch_order(rng, len(rows), recipe.shuffle)], lr)
        logs = {"loss": loss, "accuracy": acc, "reg_loss": _reg_loss(model), "n_samples": int(len(rows))}
        if track_loss_terms:
            logs.update({f"terms_{k}": v for k, v in loss_terms(model, x_rows, y_rows, recipe.loss).items()})
        return logs

    timing = Timing()
    hooks = [schedule, timing, Progress(recipe.epochs, f"  {fold.name}", enabled=progress, position=position,
                                        show=("loss",)), *hooks]
    history: dict[str, Any] = run_epochs(epoch, recipe.epochs, hooks, lr=schedule.lr, label="train")
    if terms_initial is not None:
        history["terms_initial"] = terms_initial

    scores, n_test_frames = frame_clip_scores(trainer.predict, frames, fold.test_index, frames.n_classes)
    info = {"seed": int(fold_seed), "stage2_seed": int(stage2_seed), "pretrain": bool(recipe.pretrain),
            "pretrain_s": round(pre_s, 3), **timing.info,
            "n_train": int(len(fold.train_index)), "n_test": int(len(fold.test_index)),
            "n_train_frames": int((~pool["flipped"][rows]).sum()), "n_flipped_frames": int(pool["flipped"][rows].sum()),
            "n_test_frames": n_test_frames, "reloaded_layers": reloaded,
            "dropped_model_kwargs": sorted(model.two_stage_dropped_kwargs),
            **{f"pretrain_{k}": v for k, v in pre_info.items() if k in ("best_epoch", "fit_subjects", "val_subjects")}}
    out = {"pretrain": pre_history, "train": history, "info": info}
    return (scores, out, model) if return_model else (scores, out)


def frame_clip_scores(predict, frames: LOSODataset, index, n_classes: int) -> tuple[np.ndarray, int]:
    """Clip scores of the clips at ``index`` (ascending) from the frame scores of ``predict``:
    ``(len(index) x n_classes, frames scored)``; an empty ``index`` gives a ``0 x n_classes`` array."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return np.zeros((0, int(n_classes))), 0
    x, owner = frames.expand_frames(index)
    clips, scores = clip_scores(predict(x), owner)
    if not np.array_equal(clips, index):  # loso_folds gives sorted test indices, as clip_scores
        raise ValueError("the clips to score must be given in ascending order (as loso_folds gives them)")
    return scores, int(len(x))


def model_predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``model(x, training=False)`` in batches as float64 NumPy, on any Keras backend."""
    import keras

    return np.concatenate([np.asarray(keras.ops.convert_to_numpy(model(x[i: i + batch_size], training=False)),
                                      np.float64) for i in range(0, len(x), batch_size)])


def two_stage_inputs(data, recipe: Recipe, *, progress: bool = False, record_test_curve: bool = False,
                     hooks: Sequence[Hook] = ()):
    """For :func:`~mer_keras.training.loso.run_loso`: ``(flow_ds, fingerprint, fold_fn)``.

    ``fold_fn`` has the engine's ``train_fold`` signature and result
    ``(model, scores, history, info)``; the LOSO folds, the predictions table and the
    report use the flow dataset (same clips, labels and subjects as the frames).
    """
    if record_test_curve:
        raise ValueError("record_test_curve is not available for two-stage recipes")
    flow, frames = load_two_stage_data(data, recipe, progress=progress)
    pool = stage2_pool(frames, _flip_labels(recipe, frames.class_names))
    frames = pooled_frames(frames, pool)  # the frames live in the pool only

    def fold_fn(dataset, fold, recipe, fold_seed, *, mixed=False, record_test_curve=False, progress=False, position=1):
        scores, history, model = train_fold_two_stage(dataset, frames, fold, recipe, fold_seed, mixed=mixed,
                                                      progress=progress, position=position, return_model=True,
                                                      pool=pool, hooks=hooks)
        return model, scores, history, history["info"]

    def predict(model, index):
        return frame_clip_scores(lambda x: model_predict(model, x), frames, index, frames.n_classes)[0]

    # the run's stage-2 frame pool (for benchmarks and inspection) and the fitted model's clip scores
    fold_fn.extras = {"frames": pool, "predict": predict}
    return flow, two_stage_fingerprint(flow, frames), fold_fn
