"""Macro-to-micro transfer learning of the MobileViT paper (Liu et al. 2022, Front. Neurorobot.).

Recipes with ``trainer="transfer"`` (``"mobilevit_transfer"``) are run by
:func:`mer_keras.training.loso.run_loso` through :func:`transfer_inputs`. Section names
below are the paper's; it numbers no equations except the eye-angle formula (Eq. 1,
"Pre-processing") and the MobileViT block (Eq. 2, "Optimized MobileViT Model").

Input (paper, "Pre-processing"; Fig. 2). Both sets are the grey, aligned, eye-masked *apex*
frame of each sample at 256 x 256 ("the vertex frame of each expression sample is first
taken out and converted to grayscale"), prepared with ``PreprocessConfig.preset(
"mobilevit_apex")`` (no optical flow, so single-image clips such as JAFFE's are kept).
The uint8 frame enters the model, which scales it to [0, 1] (layer ``"rescale"``) and
repeats the grey channel three times (layer ``"grey_to_rgb"``; Table 1's input is
256 x 256 x 3), exactly as :func:`mer_keras.training.two_stage.build_two_stage_model`.
A macro cache prepared with ``keep="onset_to_apex"`` contributes every kept frame (the
paper's last three frames of each CK+ / Oulu-CASIA sequence, "9,342 images"), one
sample per frame; otherwise its apex frames.

Stage 1 -- macro-expression transfer (paper, "Transfer Learning of Macro-Expressions";
Fig. 1 steps 1-3; :func:`pretrain_macro`). MobileViT-S with a softmax head is trained
with cross-entropy on CK+, Oulu-CASIA, JAFFE and MUG (:func:`mer_keras.data.composites.
mobilevit_macro`), SGD momentum 0.9, lr 0.01, batch 32, 100 epochs ("Experimental
Setup"). The paper maps the macro labels onto the same three classes as the micro set
("Datasets": positive = happiness, negative = anger, disgust, sadness, surprise;
:data:`mer_keras.data.composites.MOBILEVIT_MAP`), so the stage-1 head has the micro
classes; it is still not transferred (only "the MobileNetV2 block" is, and stage 2 ends
in an SVM). "The weights of the MobileNetV2 block are saved when the highest accuracy is
achieved": the kept epoch is the one with the highest accuracy on a validation split of
whole macro subjects (``val_fraction``; ties: lower loss, then the earlier epoch); the
other macro subjects are fitted.

**Stage 1 is trained once per run and shared by every LOSO fold.** Leave-one-subject-out
forbids that anything fitted for a fold has seen the fold's test subject. The macro set
holds no micro-expression subject (CK+, Oulu-CASIA, JAFFE and MUG are other people,
other datasets; :func:`load_transfer_data` checks that the two sets share no subject
name), and stage 1 reads nothing of the micro set, so the stage-1 model is the same
function of the same data for every fold: retraining it per fold would give the same
model 68 times. It is trained at the first fold that needs it and stored in the run folder
(``<out_dir>/stage1/<key>/``: ``weights.weights.h5``, then ``stage1.json`` written last,
both atomically), under a key hashing everything it depends on (macro data fingerprint,
backbone and builder arguments, stage-1 optimiser, epochs, batch, lr, validation share,
augmentation, seed, precision; :func:`stage1_config`), so a resumed run reloads it and a
changed setting trains a new one (:class:`Stage1Cache`). Two processes filling folds of
the same run may both train it; they write the same weights (seeded, deterministic on
CPU) and the second atomic write replaces the first.

Stage 2 -- micro-expression fine-tuning per fold (paper, "Optimized MobileViT Model";
Fig. 1 steps 3-5; :func:`fine_tune`). A *fresh* model with the recipe's head (SVM: linear
outputs trained with the multi-margin hinge loss, margin 1, p = 1,
:class:`~mer_keras.models.heads.MultiMarginLoss`; ablation: softmax) is built from its own
seed; the stage-1 weights of the stem and every MobileNetV2 block
(:func:`~mer_keras.models.heads.downsampling_layer_names`: ``stem_*``,
``layer{1..5}_mv2_*``) are copied in with
:func:`~mer_keras.models.heads.copy_layer_weights`; the MobileViT blocks, the final 1x1
convolution and the classifier keep their fresh initialisation.
(:func:`~mer_keras.models.heads.swap_head` is not used: it would carry over the stage-1
MobileViT blocks too, which the paper does not transfer.) Adam lr 0.007, batch 64, L2 on
every convolution and dense kernel, dropout 0.5 ("Experimental Setup").

Gradual unfreezing (paper, end of "Transfer Learning of Macro-Expressions": "freeze the
weights of all convolutional layers and gradually unfreeze the convolutional layers as the
number of training iterations increases until all are unfroze"; no schedule is given).
Schedule used (:func:`unfreeze_groups`, :func:`unfreeze_epochs`): the reloaded layers
start frozen and the fresh ones train; the reloaded layers are unfrozen in five groups,
the deepest first -- ``layer5_mv2``, ``layer4_mv2``, ``layer3_mv2``, ``layer2_mv2``,
``layer1_mv2`` + stem (for backbones without MobileNetV2 blocks: five contiguous groups of
the reloaded layers, a nested ``keras.applications`` backbone split into its layers) -- at
evenly spaced epochs over the first ``unfreeze_fraction`` of stage 2 (0.5: epochs 10, 20,
30, 40, 50 of 100); the rest of stage 2 trains every layer.
Freezing random layers would keep them random, so the fresh layers are never frozen, and
without stage 1 nothing is. A frozen layer gets no update (its gradient is multiplied by
0, which leaves Adam's and SGD's state at zero and the weight bit-identical) and its
BatchNorm moving statistics are restored after every epoch; its BatchNorm normalises with
batch statistics in training steps. That is what ``trainable=False`` did in Keras 2.2.4,
the library the paper used (Keras >= 2.3 / TF 2 switched frozen BatchNorm to inference
mode). One compiled epoch function serves every phase (the freeze mask is a variable):
tracing the MobileViT training step is slow, and a retrace per phase would pay it five more
times (measured trace time: docs/benchmarks.md, section "Transfer tracing cost").

Augmentation (paper, "Pre-processing" and "Transfer Learning of Macro-Expressions"), in
both stages, training images only: the classes are balanced up to the largest one by
horizontal flips, then small random shifts (:func:`~mer_keras.preprocess.augment.
balance_by_augmentation`, shifts up to ``max_shift`` pixels, edge padding), drawn once per
training set (:func:`balanced_training_set`); "pixel fine-tuning with probability 0.3
(maximum value 20)" (:func:`~mer_keras.preprocess.augment.pixel_jitter`) is redrawn every
epoch on every training image.

Hyperparameter search (paper, "Experimental Setup": "a grid search method was used to
optimize the values of hyperparameters, including batch size, initial learning rate, and
a number of iterations"; "Optimized MobileViT Model": the weight decay "gradually
increasing from 0.0001 to 0.1"; :func:`grid_search`). Per fold, KerasTuner's
``GridSearch`` walks ``recipe.grid`` (``weight_decay`` is the model's L2 factor); each
trial trains stage 2 (from the shared stage-1 weights, same seed for every trial) on the
*fit* part of an inner split of the fold's training subjects
(:func:`~mer_keras.training.folds.inner_split`, ``val_fraction`` of the subjects) and is
scored by the UF1 of the *validation* subjects after its last epoch (ties: lower
validation loss, then grid order). The test subject is never seen:
:func:`~mer_keras.training.folds.assert_subject_disjoint` checks fold train/test, fit/val,
val/test and fit/test, and each trial records the subjects it trained on and was scored
on. The tuner's folder is a temporary folder of the fold, deleted afterwards. The final
stage-2 model is then trained on all of the fold's training subjects with the chosen
values and the test subject is predicted once, after the last epoch. ``grid=None`` uses
the recipe's values (batch 64, lr 0.007, ``epochs``, ``model_kwargs["l2"]``).

Execution. Each training run uses the engine's style of loop (in-memory arrays, one
``tf.function`` per epoch over mini-batches of a seeded permutation, last partial batch
kept). Runs with fewer than :data:`COMPILE_MIN_STEPS` optimiser steps run eagerly
instead: an eager step is much slower than a compiled one, but tracing costs many eager
steps, so compiling pays off only for longer runs (measured step and trace times:
docs/benchmarks.md, section "Transfer tracing cost"); paper-sized runs (hundreds of steps)
are always compiled.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .datasets import LOSODataset
from .folds import Fold, assert_subject_disjoint, inner_split
from .backends.tensorflow import epoch_steps, prepare_optimizer
from .engine import (ENGINE_VERSION, dataset_fingerprint, make_loss, make_optimizer, seed_for, test_curve_point,
                     validation_uf1)
from .loop import EpochCallback, KeepBest, Progress, StepSchedule, Validation, run_epochs
from .recipes import GRID_KEYS, Recipe
from .store import atomic_save_weights, atomic_write_text, canonical_json, config_hash

__all__ = [
    "COMPILE_MIN_STEPS", "TRANSFER_VERSION", "UNFREEZE_GROUPS", "Stage1Cache", "balanced_training_set",
    "build_stage2", "build_transfer_model", "expand_nested", "fine_tune", "grid_search", "load_transfer_data",
    "pretrain_macro", "stage1_config", "train_fold_transfer", "transfer_inputs", "unfreeze_epochs", "unfreeze_groups",
]

TRANSFER_VERSION = 1
"""Bumped whenever the computation of this module changes (part of the stage-1 key)."""

COMPILE_MIN_STEPS = 24
"""Training runs with at least this many optimiser steps are compiled, shorter ones run eagerly (module docstring)."""

UNFREEZE_GROUPS = 5
"""Number of groups the reloaded layers are unfrozen in (MobileViT: its five MobileNetV2 stages)."""

_MV2_LAYER = re.compile(r"^layer(\d+)_mv2_")


# ----------------------------------------------------------------------------- data


def _flatten_frames(seq: LOSODataset) -> LOSODataset:
    """One sample per stored frame of a sequence dataset (clip ids ``"<clip>#<k>"``)."""
    x, owner = seq.expand_frames()
    k = np.concatenate([np.arange(len(s)) for s in seq.x])
    clips = [f"{c}#{i}" for c, i in zip(seq.clips[owner], k)]
    return LOSODataset(x=x, y=seq.y[owner], subjects=seq.subjects[owner], datasets=seq.datasets[owner],
                       clips=np.asarray(clips, dtype=object), class_names=seq.class_names)


def _load_images(source, role: str, *, progress: bool) -> LOSODataset:
    from mer_keras.preprocess.cache import PreparedCache

    if isinstance(source, LOSODataset):
        if source.is_sequence and role == "micro":
            raise ValueError("the micro set must hold one apex image per clip, got frame sequences")
        return _flatten_frames(source) if source.is_sequence else source
    if isinstance(source, (str, Path)) and not (Path(source) / "cache.json").is_file():
        raise ValueError(f"{source}: the {role} set must be a prepared cache (`mer-keras prepare`, preset "
                         "'mobilevit_apex') or a LOSODataset")
    cache = source if isinstance(source, PreparedCache) else PreparedCache(source)
    if role == "macro" and cache.config.keep == "onset_to_apex":
        return _flatten_frames(LOSODataset.from_cache(cache, input="frames", progress=progress))
    return LOSODataset.from_cache(cache, input="apex", progress=progress)


def load_transfer_data(data, recipe: Recipe, *, progress: bool = False) -> tuple[LOSODataset, LOSODataset | None]:
    """``(micro, macro)`` image datasets of a transfer run (``macro`` is None without pre-training).

    ``data`` is a dict ``{"micro": m, "macro": M}``, a pair ``(m, M)``, or just ``m`` when
    ``recipe.pretrain`` is off. Each of ``m`` and ``M`` is a prepared cache (path or
    :class:`~mer_keras.preprocess.cache.PreparedCache`; preset ``"mobilevit_apex"``) or a
    :class:`LOSODataset`. The micro set gives its apex frames (``input="apex"``); the macro
    set its apex frames, or every stored frame when prepared with ``keep="onset_to_apex"``.
    Raises ``ValueError`` when the macro set is missing, when the image size differs from
    the recipe's ``input_size``, when the two sets differ in image shape or class names, or
    when they share a subject name (stage 1 must never see a micro subject).
    """
    if isinstance(data, Mapping):
        unknown = set(data) - {"micro", "macro"}
        if unknown or "micro" not in data:
            raise ValueError(f"transfer data dict needs key 'micro' (and 'macro'), got {sorted(data)}")
        micro_src, macro_src = data["micro"], data.get("macro")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        micro_src, macro_src = data
    else:
        micro_src, macro_src = data, None
    if recipe.pretrain and macro_src is None:
        raise ValueError(f"recipe {recipe.name!r} pre-trains on macro-expressions: pass data={{'micro': ..., "
                         "'macro': ...}} (or a (micro, macro) pair), or pretrain=False")
    micro = _load_images(micro_src, "micro", progress=progress)
    size = tuple(recipe.input_size[:2])
    if tuple(micro.sample_shape[:2]) != size or micro.sample_shape[2] not in (1, 3):
        raise ValueError(f"micro images are {'x'.join(map(str, micro.sample_shape))} but recipe {recipe.name!r} expects "
                         f"{size[0]}x{size[1]} grey (or RGB) images; prepare the cache at that size or override "
                         f"input_size={micro.sample_shape[0]}")
    if not recipe.pretrain:
        return micro, None
    macro = _load_images(macro_src, "macro", progress=progress)
    if tuple(macro.sample_shape) != tuple(micro.sample_shape) or macro.x.dtype != micro.x.dtype:
        raise ValueError(f"macro images are {macro.sample_shape} {macro.x.dtype}, micro images {micro.sample_shape} "
                         f"{micro.x.dtype}: prepare both with the same preset and size")
    if tuple(macro.class_names) != tuple(micro.class_names):
        raise ValueError(f"macro classes {macro.class_names} differ from micro classes {micro.class_names}")
    shared = sorted(set(macro.subjects.tolist()) & set(micro.subjects.tolist()))
    if shared:
        raise ValueError(f"macro and micro sets share subjects {shared[:5]}: stage 1 must not see micro subjects")
    return micro, macro


def balanced_training_set(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, max_shift: int
                          ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x', y', n_added)``: ``x`` plus flipped / shifted copies bringing every class to the largest.

    Paper, "Pre-processing": a minority class is balanced by "a small random horizontal or
    vertical shift of its pixel positions" or "a horizontal flip"
    (:func:`~mer_keras.preprocess.augment.balance_by_augmentation`: flips first, then
    integer shifts up to ``max_shift`` pixels).
    """
    from mer_keras.preprocess.augment import apply_augmentation, balance_by_augmentation

    augs = balance_by_augmentation(y.tolist(), rng, max_shift=int(max_shift))
    if not augs:
        return x, y, 0
    extra = np.stack([apply_augmentation(x[a.index], a) for a in augs]).astype(x.dtype)
    return np.concatenate([x, extra]), np.concatenate([y, y[[a.index for a in augs]]]), len(augs)


def _jittered(x: np.ndarray, rng: np.random.Generator, prob: float, max_value: int) -> np.ndarray:
    """The training images with a fresh pixel jitter (:func:`~mer_keras.preprocess.augment.pixel_jitter`)."""
    from mer_keras.preprocess.augment import pixel_jitter

    if prob <= 0 or max_value <= 0:
        return x
    return np.stack([pixel_jitter(img, rng, prob=prob, max_value=max_value) for img in x])


# ----------------------------------------------------------------------------- models


def build_transfer_model(recipe: Recipe, data_shape, n_classes: int, *, head: str, l2: float | None = None,
                         seed: int | None = None, dtype: str = "uint8"):
    """A fresh ``recipe.model`` (``"rescale"`` -> ``"grey_to_rgb"`` -> backbone -> ``head``).

    ``l2`` replaces ``model_kwargs["l2"]`` (the grid's weight decay). Raises ``ValueError``
    when the backbone's builder does not take ``l2`` but one is asked for.
    """
    from .two_stage import build_two_stage_model

    kwargs = dict(recipe.model_kwargs)
    if l2 is not None:
        kwargs["l2"] = float(l2)
    model = build_two_stage_model(recipe.replace(model_kwargs=kwargs), data_shape, n_classes, head=head, dtype=dtype,
                                  seed=seed)
    if l2 is not None and "l2" in model.two_stage_dropped_kwargs:
        raise ValueError(f"backbone {recipe.model!r} takes no l2: the weight decay cannot be searched")
    return model


def build_stage2(recipe: Recipe, data_shape, n_classes: int, seed: int, pretrained=None, *, l2: float | None = None,
                 dtype: str = "uint8"):
    """Fresh stage-2 model with ``recipe.head``; ``(model, reloaded layer names)``.

    With a ``pretrained`` (stage-1) model, the weights of its stem and MobileNetV2 blocks
    (:func:`~mer_keras.models.heads.downsampling_layer_names`) are copied in
    (:func:`~mer_keras.models.heads.copy_layer_weights`); everything else keeps the fresh
    initialisation of ``seed``.
    """
    from mer_keras.models.heads import copy_layer_weights, downsampling_layer_names

    model = build_transfer_model(recipe, data_shape, n_classes, head=recipe.head, l2=l2, seed=seed, dtype=dtype)
    if pretrained is None:
        return model, []
    return model, copy_layer_weights(pretrained, model, downsampling_layer_names(pretrained))


def _sublayers(layer):
    """Every layer nested in ``layer`` (depth first, model order), not ``layer`` itself."""
    for sub in getattr(layer, "layers", ()):
        yield sub
        yield from _sublayers(sub)


def _layers_by_name(model) -> dict:
    return {layer.name: layer for layer in _sublayers(model)}


def expand_nested(model, names) -> list[str]:
    """``names`` with each nested backbone (a ``keras.applications`` model wrapped as one
    layer, e.g. MobileNetV2) replaced by its own weighted layers, so it can be unfrozen
    in parts."""
    out = []
    for name in names:
        layer = model.get_layer(name)
        inner = [sub.name for sub in _sublayers(layer) if sub.weights and not getattr(sub, "layers", None)]
        out.extend(inner or [name])
    return out


def unfreeze_groups(names) -> list[list[str]]:
    """The reloaded layer ``names`` in unfreezing order (deepest group first).

    MobileViT: one group per MobileNetV2 stage (``layer5_mv2`` ... ``layer2_mv2``, then
    ``layer1_mv2`` with the stem). Other backbones: :data:`UNFREEZE_GROUPS` contiguous
    groups of ``names`` (model order; nested backbones expanded first with
    :func:`expand_nested`), the last first.
    """
    names = list(names)
    if not names:
        return []
    if any(_MV2_LAYER.match(n) for n in names):
        by_stage: dict[int, list[str]] = {}
        for n in names:
            m = _MV2_LAYER.match(n)
            by_stage.setdefault(int(m.group(1)) if m else 1, []).append(n)  # the stem joins layer 1
        return [by_stage[k] for k in sorted(by_stage, reverse=True)]
    chunks = [list(c) for c in np.array_split(np.asarray(names, dtype=object), min(UNFREEZE_GROUPS, len(names)))]
    return [c for c in reversed(chunks) if c]


def unfreeze_epochs(epochs: int, n_groups: int, fraction: float) -> list[int]:
    """0-based epoch at which each group (in :func:`unfreeze_groups` order) becomes trainable.

    Group ``k`` (0-based) unfreezes at ``round((k + 1) * fraction * epochs / n_groups)``,
    at least 1 (epoch 0 always trains the fresh layers alone); ``fraction=0`` unfreezes
    everything at epoch 0. Epochs >= ``epochs`` mean the group stays frozen.
    """
    if fraction <= 0 or n_groups == 0:
        return [0] * n_groups
    return [max(1, int(math.floor((k + 1) * fraction * epochs / n_groups + 0.5))) for k in range(n_groups)]


# ----------------------------------------------------------------------------- training loop


class _Loop:
    """One training run: per-epoch steps over in-memory arrays, with freezable layer groups.

    ``groups`` are lists of layer names; a frozen group's gradients are multiplied by 0
    (a mask variable, so one compiled epoch serves every phase) and its layers'
    non-trainable weights (BatchNorm moving statistics) are restored after each epoch.
    """

    def __init__(self, model, stage: Recipe, n_classes: int, groups, *, mixed: bool, compiled: bool):
        import tensorflow as tf

        self.model, self.stage, self.mixed = model, stage, mixed
        self.optimizer = prepare_optimizer(make_optimizer(stage), mixed=mixed)
        self.variables = list(model.trainable_variables)
        self.optimizer.build(self.variables)
        self.loss_fn = make_loss(stage, n_classes)
        self.groups = [list(g) for g in groups]
        self.layers = _layers_by_name(model)  # nested layers too (expand_nested)
        var_group = {id(v): i + 1 for i, names in enumerate(self.groups) for name in names
                     for v in self.layers[name].trainable_weights}
        self.group_of = [var_group.get(id(v), 0) for v in self.variables]
        self.mask = tf.Variable(np.ones(len(self.groups) + 1, np.float32), trainable=False, name="freeze_mask")
        self.saved = {name: [np.array(w) for w in self.layers[name].non_trainable_weights]
                      for names in self.groups for name in names}
        self.frozen: set[int] = set()
        self.compiled = bool(compiled)
        self._epoch = tf.function(self._epoch_fn, reduce_retracing=True) if compiled else self._epoch_fn

    def set_frozen(self, frozen) -> None:
        """Freeze exactly the groups with these indices (into ``groups``)."""
        self.frozen = set(int(g) for g in frozen)
        self.mask.assign(np.asarray([0.0 if g - 1 in self.frozen else 1.0 for g in range(len(self.groups) + 1)],
                                    np.float32))

    def _restore_frozen(self) -> None:
        for g in self.frozen:
            for name in self.groups[g]:
                for var, value in zip(self.layers[name].non_trainable_weights, self.saved[name]):
                    var.assign(value)

    def _masked(self, grads):
        import tensorflow as tf

        return [None if g is None else g * tf.cast(self.mask[k], g.dtype) for g, k in zip(grads, self.group_of)]

    def _epoch_fn(self, x, y, perm):
        return epoch_steps(self.model, self.optimizer, self.loss_fn, x, y, perm, self.stage.batch_size,
                           mixed=self.mixed, transform_gradients=self._masked)

    def epoch(self, x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> tuple[float, float]:
        import tensorflow as tf

        loss, acc = self._epoch(tf.constant(x), tf.constant(y.astype(np.int32)), tf.constant(perm.astype(np.int32)))
        self._restore_frozen()
        return float(loss), float(acc)


def _predict(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    import tensorflow as tf

    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])))
    return np.concatenate([np.asarray(tf.cast(model(x[i: i + batch_size], training=False), tf.float32), np.float64)
                           for i in range(0, len(x), batch_size)])


def fine_tune(model, stage: Recipe, x: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int,
              groups=(), mixed: bool = False, validation: tuple[np.ndarray, np.ndarray] | None = None,
              keep_best: bool = False, on_epoch_end: Callable[[int, Any], None] | None = None,
              progress: bool = False, desc: str = "train", position: int = 1, extra_hooks=()) -> dict:
    """Train ``model`` in place for ``stage.epochs`` epochs; returns the history.

    ``stage`` gives the optimiser, ``lr``, ``batch_size``, ``epochs``, loss and the
    augmentation settings (``max_shift``, ``jitter_prob``, ``jitter_max``): the training
    set is class-balanced once (:func:`balanced_training_set`) and jittered afresh every
    epoch. ``groups`` (:func:`unfreeze_groups` order) start frozen and are unfrozen at
    :func:`unfreeze_epochs` of ``stage.unfreeze_fraction``. With ``validation`` each
    epoch is scored on it (``val_loss``, ``val_accuracy``, ``val_uf1``); ``keep_best``
    then restores the epoch with the highest validation accuracy (ties: lower loss, then
    the earlier epoch) and records it as ``best_epoch``. ``on_epoch_end(epoch, model)``
    is called after each epoch (for tests). History: per epoch ``loss`` (incl. L2),
    ``accuracy``, ``frozen_groups``; ``n_train``, ``n_balancing_copies``, ``unfreeze_at``,
    ``compiled``, ``seconds``. ``extra_hooks`` join the epoch loop
    (:func:`~mer_keras.training.loop.run_epochs`, labelled ``desc``).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    x_bal, y_bal, n_added = balanced_training_set(x, y, rng, stage.max_shift)
    epochs = int(stage.epochs)
    steps = epochs * -(-len(y_bal) // int(stage.batch_size))
    groups = [list(g) for g in groups]
    loop = _Loop(model, stage, n_classes, groups, mixed=mixed, compiled=steps >= COMPILE_MIN_STEPS)
    unfreeze_at = unfreeze_epochs(epochs, len(groups), stage.unfreeze_fraction)

    def epoch(index, lr):
        frozen = [g for g, e in enumerate(unfreeze_at) if index < e]
        loop.set_frozen(frozen)
        x_epoch = _jittered(x_bal, rng, stage.jitter_prob, stage.jitter_max)
        loss, acc = loop.epoch(x_epoch, y_bal, rng.permutation(len(y_bal)))
        return {"loss": loss, "accuracy": acc, "frozen_groups": len(frozen), "n_samples": int(len(y_bal))}

    hooks = [StepSchedule(stage.lr)]
    if validation is not None:
        hooks.append(Validation(lambda xv: _predict(model, xv), *validation, stage.loss))
        if keep_best:
            hooks.append(KeepBest(model, key=lambda logs: (logs["val_accuracy"], -logs["val_loss"])))
    if on_epoch_end is not None:
        hooks.append(EpochCallback(lambda index: on_epoch_end(index, model)))
    hooks += [Progress(epochs, desc, enabled=progress, position=position), *extra_hooks]
    history: dict[str, Any] = run_epochs(epoch, epochs, hooks, lr=stage.lr, label=desc)
    del history["lr"], history["n_samples"]  # constant within a stage (the optimiser's lr, the balanced set)
    history.update({"n_train": int(len(y)), "n_balancing_copies": int(n_added), "unfreeze_at": unfreeze_at,
                    "groups": [g[0] for g in groups], "compiled": loop.compiled})
    history["seconds"] = round(time.perf_counter() - start, 3)
    return history


# ----------------------------------------------------------------------------- stage 1


def _stage1_recipe(recipe: Recipe) -> Recipe:
    """Stage-1 training settings: softmax head, the ``pretrain_*`` optimiser, no unfreezing."""
    return recipe.stage("pretrain")


def stage1_config(macro: LOSODataset, recipe: Recipe, *, mixed: bool = False, fingerprint: dict | None = None) -> dict:
    """Everything the stage-1 model depends on (its :func:`~mer_keras.training.store.config_hash` is the cache key).

    ``fingerprint`` is ``dataset_fingerprint(macro)`` when already computed.
    """
    fingerprint = dataset_fingerprint(macro) if fingerprint is None else fingerprint
    return {"transfer_version": TRANSFER_VERSION, "engine_version": ENGINE_VERSION, "macro": fingerprint,
            "model": recipe.model, "model_kwargs": dict(recipe.model_kwargs), "input_size": list(recipe.input_size),
            "optimizer": recipe.pretrain_optimizer, "optimizer_kwargs": dict(recipe.pretrain_optimizer_kwargs),
            "lr": recipe.pretrain_lr, "batch_size": recipe.pretrain_batch_size, "epochs": recipe.pretrain_epochs,
            "val_fraction": recipe.val_fraction, "max_shift": recipe.max_shift, "jitter_prob": recipe.jitter_prob,
            "jitter_max": recipe.jitter_max, "seed": recipe.seed, "mixed_precision": bool(mixed)}


def pretrain_macro(macro: LOSODataset, recipe: Recipe, *, mixed: bool = False, progress: bool = False,
                   position: int = 1):
    """Stage 1: ``(model, history, info)`` -- the softmax model at its best macro-validation epoch.

    Seeded by ``seed_for(recipe.seed, "stage1")``; fits on the macro subjects outside a
    ``val_fraction`` validation split of whole subjects
    (:func:`~mer_keras.training.folds.inner_split`), which picks the epoch.
    """
    seed = seed_for(recipe.seed, "stage1")
    fit, val = inner_split(macro, np.arange(len(macro)), recipe.val_fraction, seed=seed)
    assert_subject_disjoint(macro, fit, val)
    stage = _stage1_recipe(recipe)
    model = build_transfer_model(stage, macro.sample_shape, macro.n_classes, head="softmax", seed=seed,
                                 dtype=str(macro.x.dtype))
    history = fine_tune(model, stage, macro.x[fit], macro.y[fit], macro.n_classes, seed=seed, mixed=mixed,
                        validation=(macro.x[val], macro.y[val]), keep_best=True, progress=progress,
                        desc="  stage 1 (macro)", position=position)
    info = {"seed": seed, "best_epoch": int(history["best_epoch"]), "n_fit": int(len(fit)), "n_val": int(len(val)),
            "fit_subjects": sorted(set(macro.subjects[fit].tolist())),
            "val_subjects": sorted(set(macro.subjects[val].tolist())),
            "dropped_model_kwargs": sorted(model.two_stage_dropped_kwargs)}
    return model, history, info


class Stage1Cache:
    """The stage-1 model of a run: trained once, kept in memory and, with a ``folder``, on disk.

    Layout: ``folder/<key>/weights.weights.h5`` then ``folder/<key>/stage1.json`` (config,
    history, info, weights checksum), each written atomically; ``key`` is the config hash
    of :func:`stage1_config`. :meth:`get` returns ``(model, record)`` with
    ``record["source"]`` = ``"trained"``, ``"disk"`` or ``"memory"``.
    """

    def __init__(self, folder=None):
        self.folder = None if folder is None else Path(folder)
        self._memory: dict[str, tuple[Any, dict]] = {}
        self._fingerprints: list[tuple[LOSODataset, dict]] = []  # the macro set is hashed once per run

    def _config(self, macro: LOSODataset, recipe: Recipe, mixed: bool) -> dict:
        known = next((fp for ds, fp in self._fingerprints if ds is macro), None)
        if known is None:
            known = dataset_fingerprint(macro)
            self._fingerprints.append((macro, known))
        return stage1_config(macro, recipe, mixed=mixed, fingerprint=known)

    def get(self, macro: LOSODataset, recipe: Recipe, *, mixed: bool = False, progress: bool = False,
            position: int = 1):
        from .store import sha256_file

        config = self._config(macro, recipe, mixed)
        key = config_hash(config)
        if key in self._memory:
            model, record = self._memory[key]
            return model, {**record, "source": "memory"}
        stage = _stage1_recipe(recipe)
        folder = None if self.folder is None else self.folder / key
        if folder is not None and (folder / "stage1.json").is_file():
            import json

            saved = json.loads((folder / "stage1.json").read_text())
            weights = folder / "weights.weights.h5"
            if weights.is_file() and saved.get("weights_sha256") == sha256_file(weights):
                model = build_transfer_model(stage, macro.sample_shape, macro.n_classes, head="softmax",
                                             dtype=str(macro.x.dtype))
                model.load_weights(weights)
                record = {"key": key, "info": saved["info"], "path": str(folder)}
                self._memory[key] = (model, record)
                return model, {**record, "source": "disk"}
        model, history, info = pretrain_macro(macro, recipe, mixed=mixed, progress=progress, position=position)
        record = {"key": key, "info": info, "path": None if folder is None else str(folder)}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "stage1.json").unlink(missing_ok=True)
            weights_sha256 = atomic_save_weights(model, folder / "weights.weights.h5")
            atomic_write_text(folder / "stage1.json", canonical_json(
                {"key": key, "config": config, "info": info, "history": history, "weights_sha256": weights_sha256}))
        self._memory[key] = (model, record)
        return model, {**record, "source": "trained"}


# ----------------------------------------------------------------------------- grid search


def _grid_space(grid: Mapping[str, tuple]):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for key in GRID_KEYS:  # fixed order: the grid order is batch, lr, epochs, weight decay
        if key in grid:
            cast = int if key in ("batch_size", "epochs") else float
            hp.Choice(key, [cast(v) for v in grid[key]])
    return hp


def grid_search(evaluate: Callable[[dict], dict], grid: Mapping[str, tuple], directory, *, seed: int = 0
                ) -> tuple[dict, list[dict]]:
    """Exhaustive search with KerasTuner's ``GridSearch``; ``(best values, trial records)``.

    ``evaluate(values) -> {"val_uf1": float, "val_loss": float, ...}`` trains and scores one
    combination (``values`` maps the grid's keys to one value each). The best trial has
    the highest ``val_uf1``, ties broken by the lower ``val_loss``, then by grid order. A
    failing trial stops the search (``keras_tuner.errors.FatalError`` chained to the
    cause) instead of being skipped. ``directory`` holds the tuner's files.
    """
    import keras_tuner as kt

    records: list[dict] = []

    class _Grid(kt.GridSearch):
        def run_trial(self, trial, *args, **kwargs):
            values = dict(trial.hyperparameters.values)
            try:
                result = evaluate(values)
            except Exception as exc:  # surface it: KerasTuner would mark the trial invalid and go on
                raise kt.errors.FatalError(f"grid trial {values} failed: {exc!r}") from exc
            records.append({"values": values, **result})
            return {"val_uf1": float(result["val_uf1"]), "val_loss": float(result["val_loss"])}

    tuner = _Grid(objective=kt.Objective("val_uf1", "max"), hyperparameters=_grid_space(grid), seed=int(seed),
                  directory=str(directory), project_name="grid", overwrite=True)
    tuner.search(verbose=0)
    expected = int(np.prod([len(v) for v in grid.values()]))
    if len(records) != expected:
        raise RuntimeError(f"the grid search ran {len(records)} of {expected} trials")
    best = max(range(len(records)), key=lambda i: (records[i]["val_uf1"], -records[i]["val_loss"], -i))
    oracle_best = tuner.oracle.get_best_trials(1)[0].score
    if not np.isclose(oracle_best, records[best]["val_uf1"]):
        raise RuntimeError(f"KerasTuner's best score {oracle_best} is not the best recorded {records[best]['val_uf1']}")
    return dict(records[best]["values"]), records


# ----------------------------------------------------------------------------- stage 2 per fold


def _stage2_recipe(recipe: Recipe, values: Mapping[str, Any]) -> Recipe:
    changes = {k: values[k] for k in ("batch_size", "lr", "epochs") if k in values}
    return recipe.replace(**changes) if changes else recipe


def _train_stage2(micro: LOSODataset, index: np.ndarray, recipe: Recipe, values: Mapping[str, Any], seed: int,
                  pretrained, *, mixed: bool, progress: bool, position: int, desc: str, validation=None):
    """Fresh stage-2 model (reloaded blocks) trained on the clips at ``index``; ``(model, history, reloaded)``.

    ``validation``: ``(x, y)`` scored after every epoch (curves only; nothing is selected on it)."""
    stage = _stage2_recipe(recipe, values)
    model, reloaded = build_stage2(stage, micro.sample_shape, micro.n_classes, seed, pretrained,
                                   l2=values.get("weight_decay"), dtype=str(micro.x.dtype))
    history = fine_tune(model, stage, micro.x[index], micro.y[index], micro.n_classes, seed=seed,
                        groups=unfreeze_groups(expand_nested(model, reloaded)), mixed=mixed, progress=progress,
                        desc=desc, position=position, validation=validation)
    return model, history, reloaded


def train_fold_transfer(micro: LOSODataset, fold: Fold, recipe: Recipe, fold_seed: int, *, pretrained=None,
                        mixed: bool = False, progress: bool = False, position: int = 1, return_model: bool = False):
    """Stage 2 of one fold (grid search, then the final model); ``(scores, history)`` (+ model).

    ``pretrained`` is the stage-1 model (``None``: no transfer). ``scores`` has one row per
    test clip in ``fold.test_index`` order (SVM decision values, or softmax probabilities).
    ``history``: ``"train"`` (the final model's :func:`fine_tune` history), ``"grid"``
    (per trial: ``values``, ``val_uf1``, ``val_loss``, ``val_accuracy``, ``fit_subjects``,
    ``val_subjects``, ``seconds`` and ``history``: per-epoch ``loss``, ``accuracy`` on the
    inner fit split and ``val_loss``, ``val_accuracy``, ``val_uf1`` on its validation
    subjects -- learning curves only, the trial is scored after its last epoch; empty
    without a grid) and ``"info"`` (chosen values, subjects, reloaded layers, unfreezing
    schedule, seeds, timings).
    """
    assert_subject_disjoint(micro, fold.train_index, fold.test_index)
    start = time.perf_counter()
    values: dict[str, Any] = {"batch_size": recipe.batch_size, "lr": recipe.lr, "epochs": recipe.epochs}
    if "l2" in recipe.model_kwargs:
        values["weight_decay"] = recipe.model_kwargs["l2"]
    trials: list[dict] = []
    grid_info: dict[str, Any] = {}
    if recipe.grid is not None:
        trial_seed = seed_for(fold_seed, "grid")
        fit, val = inner_split(micro, fold.train_index, recipe.val_fraction, seed=fold_seed,
                               test_index=fold.test_index)
        assert_subject_disjoint(micro, fit, val)
        assert_subject_disjoint(micro, val, fold.test_index)
        assert_subject_disjoint(micro, fit, fold.test_index)

        def evaluate(trial_values: dict) -> dict:
            t0 = time.perf_counter()
            model, curves, _ = _train_stage2(micro, fit, recipe, {**values, **trial_values}, trial_seed, pretrained,
                                             mixed=mixed, progress=progress, position=position,
                                             desc=f"  {fold.name} grid {len(trials) + 1}",
                                             validation=(micro.x[val], micro.y[val]))
            point = test_curve_point(_predict(model, micro.x[val]), micro.y[val], recipe.loss)
            result = {"val_uf1": validation_uf1(micro.y[val], point["y_pred"]),
                      "val_loss": point["loss"], "val_accuracy": point["accuracy"],
                      "fit_subjects": sorted(set(micro.subjects[fit].tolist())),
                      "val_subjects": sorted(set(micro.subjects[val].tolist())),
                      "seconds": round(time.perf_counter() - t0, 3),
                      "history": {k: curves[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_uf1")}}
            trials.append(result)
            return result

        with tempfile.TemporaryDirectory(prefix=f"mer-keras-{fold.name}-") as tmp:
            best, trials = grid_search(evaluate, recipe.grid, Path(tmp) / "tuner", seed=trial_seed)
        values.update(best)
        grid_info = {"grid_best": best, "grid_fit_subjects": sorted(set(micro.subjects[fit].tolist())),
                     "grid_val_subjects": sorted(set(micro.subjects[val].tolist())), "grid_trials": len(trials),
                     "grid_seed": trial_seed}
    search_s = time.perf_counter() - start

    final_seed = seed_for(fold_seed, "stage2")
    model, history, reloaded = _train_stage2(micro, fold.train_index, recipe, values, final_seed, pretrained,
                                             mixed=mixed, progress=progress, position=position, desc=f"  {fold.name}")
    scores = _predict(model, micro.x[fold.test_index])
    info = {"seed": int(fold_seed), "stage2_seed": int(final_seed), "pretrain": pretrained is not None,
            "values": values, **grid_info, "search_s": round(search_s, 3), "train_s": history["seconds"],
            "n_train": int(len(fold.train_index)), "n_test": int(len(fold.test_index)),
            "n_balancing_copies": history["n_balancing_copies"], "reloaded_layers": reloaded,
            "unfreeze_groups": history["groups"], "unfreeze_at": history["unfreeze_at"],
            "compiled": history["compiled"]}
    out = {"train": history, "grid": trials, "info": info}
    return (scores, out, model) if return_model else (scores, out)


def transfer_inputs(data, recipe: Recipe, *, out_dir=None, progress: bool = False, record_test_curve: bool = False):
    """For :func:`~mer_keras.training.loso.run_loso`: ``(micro_ds, fingerprint, fold_fn)``.

    ``data``: ``{"micro": ..., "macro": ...}`` or ``(micro, macro)`` (caches or
    :class:`LOSODataset`; see :func:`load_transfer_data`), or the micro set alone with
    ``pretrain=False``. The LOSO folds, predictions and report use the micro set. The
    stage-1 model is trained at the first fold that needs it and cached under
    ``out_dir/stage1/`` (in memory only when ``out_dir`` is None); each fold's history
    and ``done.json`` record its key and whether it was ``"trained"``, loaded from
    ``"disk"`` or reused from ``"memory"``. ``fingerprint`` identifies both sets.
    """
    if record_test_curve:
        raise ValueError("record_test_curve is not available for transfer recipes")
    micro, macro = load_transfer_data(data, recipe, progress=progress)
    cache = Stage1Cache(None if out_dir is None else Path(out_dir) / "stage1")
    fingerprint = {"micro": dataset_fingerprint(micro)}
    if macro is not None:
        fingerprint["macro"] = dataset_fingerprint(macro)

    def fold_fn(dataset, fold, recipe, fold_seed, *, mixed=False, record_test_curve=False, progress=False, position=1):
        import keras

        keras.backend.clear_session()
        pretrained, stage1 = None, None
        if recipe.pretrain:
            pretrained, stage1 = cache.get(macro, recipe, mixed=mixed, progress=progress, position=position)
        scores, history, model = train_fold_transfer(dataset, fold, recipe, fold_seed, pretrained=pretrained,
                                                     mixed=mixed, progress=progress, position=position,
                                                     return_model=True)
        if stage1 is not None:
            history["info"]["stage1"] = {"key": stage1["key"], "source": stage1["source"],
                                         "best_epoch": stage1["info"]["best_epoch"]}
        return model, scores, history, history["info"]

    fold_fn.extras = {"predict": lambda model, index: _predict(model, micro.x[np.asarray(index, dtype=np.int64)])}
    return micro, fingerprint, fold_fn
