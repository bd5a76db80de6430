"""Training recipes: one frozen preset per paper, selected by name by the LOSO engine and the CLI.

A recipe is a trainer kind (``"single"``, ``"two_stage"``, ``"transfer"``,
``"handcrafted"``) plus its stage configurations (:class:`Stage`: optimiser, learning
rate, schedule, epochs, batch size, loss, which epoch is kept, initial weights, batch
order) and the kind's data settings. Presets are written that way
(:meth:`Recipe.compose`); :meth:`Recipe.stages` gives the stages back and
:meth:`Recipe.stage` the view one stage's loop reads. A recipe stores its values as flat
fields so overrides (``replace(lr=...)``) and the run-config hash stay simple; the hash
(:meth:`Recipe.config_dict`) covers every value that changes numbers and never the notes.

A :class:`Recipe` fixes everything :func:`mer_keras.training.loso.run_loso` needs to train
one fold: the model (registry name + builder keyword arguments), the input it reads from a
prepared cache, the optimiser, learning-rate schedule, epochs, batch size, loss,
normalisation, class balancing and seed. Values a paper (or its official code) states are
kept as stated; every choice the paper leaves open is written down in ``notes``.

Presets (reference: the architectures notes of this project; papers and official code):

* ``"ststnet"`` -- STSTNet (Liong et al. 2019), the original released code: 28 x 28 x 3
  ``(u, v, strain)`` images, Adam lr 5e-5, batch 256, 800 epochs, cross-entropy, constant
  learning rate, last epoch evaluated, no normalisation (the code feeds ``cv2.imread``
  pixels 0..255).
* ``"off_tanet"`` -- Off-TANet (Zhang, Liu, Zhou 2021), official code: 112 x 112 x 3 float
  ``(u, v, strain)``, Adam lr 1e-3, ``StepLR(step_size=60, gamma=0.3)``, 201 epochs,
  batch 64, cross-entropy, 49 folds over (dataset, subject).
* ``"arfnet"`` -- ARFNet (Zhang, Liu, Qi 2022): the same training as Off-TANet (the paper
  states it reuses that protocol).
* ``"shufflenet_svm"`` (+ ``"shufflenet_cbam_svm"``, ``"shufflenet_vit_svm"``) --
  ShuffleNetV2-SVM (Liu et al. 2022), a two-stage recipe (``trainer="two_stage"``, run by
  :mod:`mer_keras.training.two_stage`): TV-L1 flow-image pre-training, then the aligned,
  masked onset..apex frames with the SVM head (Eq. 17). Its stated L2 scale 0.2 collapses
  training (the regulariser is hundreds of times the data loss and drives every frame to
  one class; measured in ``docs/benchmarks.md`` and ``tests/test_two_stage.py``),
  so ``"shufflenet_svm_corrected"`` is registered beside it with a documented smaller L2.
* ``"mobilevit_transfer"`` -- MobileViT with macro-expression transfer (Liu et al. 2022,
  Front. Neurorobot.; ``trainer="transfer"``, run by :mod:`mer_keras.training.transfer`):
  MobileViT-S pre-trained with a softmax head on macro-expression apex frames (SGD momentum
  0.9, lr 0.01, batch 32, 100 epochs), its MobileNetV2 blocks reloaded into a fresh SVM-head
  model fine-tuned on micro-expression apex frames with gradual unfreezing (Adam lr 0.007,
  batch 64, L2, dropout 0.5), batch size / lr / epochs / weight decay chosen per fold by a
  KerasTuner grid search on training subjects only.

* ``"lbp_top_svm"``, ``"lbp_sip_svm"``, ``"hoof_svm"``, ``"bi_woof_svm"`` -- the handcrafted
  MER baselines (:mod:`mer_keras.baselines`: LBP-TOP as in the MEGC2019 baseline, LBP-SIP,
  HOOF, Bi-WOOF), each with a linear SVM per fold (:class:`HandcraftedRecipe`,
  ``trainer="handcrafted"``, run by :mod:`mer_keras.training.handcrafted`).

``recipe.quick()`` gives a short variant (few epochs, same everything else) for tests and
CI; it is never a paper setting. When a paper value is found to make training collapse,
the paper preset stays as it is and a documented corrected preset is registered beside
it (``"shufflenet_svm_corrected"``).

Two-stage recipes carry extra fields (``trainer``, ``backbone``, ``head``, ``pretrain``,
``pretrain_*``, ``val_fraction``, ``flip_classes``, ``plateau_*``). They appear in
``to_dict()`` only for ``trainer="two_stage"``, so single-stage recipes keep their
fields, their run-config hash (resumable run folders) and their override checks.
Transfer recipes (``trainer="transfer"``) use ``trainer``, ``backbone``, ``head``,
``pretrain``, ``pretrain_epochs``, ``pretrain_batch_size``, ``pretrain_lr`` and
``val_fraction`` of those plus their own :data:`TRANSFER_FIELDS`, which appear in
``to_dict()`` only for ``trainer="transfer"`` (the two-stage and single-stage hashes are
unchanged).
Handcrafted recipes are :class:`HandcraftedRecipe`, a subclass with the feature and SVM
fields (:data:`HANDCRAFTED_FIELDS`); :class:`Recipe` itself has none of them, so no other
recipe's fields, ``to_dict()`` or hash change, and a handcrafted recipe's ``to_dict()``
holds only what applies to it (:data:`HANDCRAFTED_CONFIG`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

LOSSES = ("cross_entropy", "multi_margin")
NORMALISATIONS = (None, "per_channel")
CLASS_BALANCING = (None, "oversample")
OPTIMIZERS = ("adam", "sgd")
INITS = ("keras", "pytorch")
"""Initial weights: the builders' Keras defaults, or PyTorch's (:func:`mer_keras.models.init.pytorch_default_init`)."""
ORDER_FIELDS = {"init": "keras", "shuffle": True}
"""Fields of the official loop beyond the optimiser, with their defaults; ``to_dict()`` holds them
only when they differ, so a recipe that keeps the defaults keeps its run-config hash."""
TRAINERS = ("single", "two_stage", "transfer", "handcrafted")
HEAD_LOSS = {"svm": "multi_margin", "softmax": "cross_entropy"}
"""Stage-2 head of a two-stage recipe -> its loss (SVM head: Eq. 17 multi-margin; softmax: cross-entropy)."""
PLATEAU_MONITORS = ("loss", "accuracy")
TWO_STAGE_FIELDS = ("trainer", "backbone", "head", "pretrain", "pretrain_epochs", "pretrain_batch_size",
                    "pretrain_lr", "val_fraction", "flip_classes", "plateau_monitor", "plateau_factor",
                    "plateau_patience", "plateau_min_delta", "plateau_min_lr")
"""Fields used only by ``trainer="two_stage"`` (left out of ``to_dict()`` of single-stage recipes)."""
TRANSFER_FIELDS = ("pretrain_optimizer", "pretrain_optimizer_kwargs", "grid", "unfreeze_fraction", "max_shift",
                   "jitter_prob", "jitter_max")
"""Fields used only by ``trainer="transfer"`` (left out of ``to_dict()`` of every other trainer)."""
TRANSFER_UNUSED = ("flip_classes", "plateau_monitor", "plateau_factor", "plateau_patience", "plateau_min_delta",
                   "plateau_min_lr")
"""Two-stage fields a transfer recipe does not use (left out of its ``to_dict()``)."""
GRID_KEYS = ("batch_size", "lr", "epochs", "weight_decay")
"""Hyperparameters a transfer recipe's ``grid`` may search (``weight_decay`` = the model's L2 factor)."""
QUICK_GRID_WEIGHT_DECAY = (1e-3, 1e-2)
"""Weight decays of the quick variant's grid (two trials: the paper's 0.01 and one step below)."""


SCHEDULES = ("constant", "step", "plateau")
STAGE_NAMES = {"single": ("train",), "two_stage": ("pretrain", "train"), "transfer": ("pretrain", "train"),
               "handcrafted": ()}
"""Stages each trainer kind runs, in order (a handcrafted recipe trains no network)."""


@dataclass(frozen=True)
class Stage:
    """One training stage of a recipe: what its epoch loop runs.

    Attributes:
        optimizer, lr, optimizer_kwargs: the stage's optimiser (``"adam"`` / ``"sgd"``),
            initial learning rate and extra arguments.
        epochs, batch_size, loss: length, mini-batch and loss (``"cross_entropy"`` /
            ``"multi_margin"``).
        schedule: ``{"kind": "constant"}``, ``{"kind": "step", "step": n, "gamma": g}``
            (PyTorch ``StepLR``, stepped per epoch) or ``{"kind": "plateau", "monitor": [...],
            "factor", "patience", "min_delta", "min_lr"}`` (Keras ``ReduceLROnPlateau``).
        select: the model kept: ``"last"`` epoch, or ``"best_val_uf1"`` on an inner split of
            the training subjects (never the test subject).
        init: ``"keras"`` or ``"pytorch"`` initial weights (see :data:`INITS`).
        shuffle: a fresh seeded permutation every epoch, or the dataset's order.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 64
    loss: str = "cross_entropy"
    schedule: Mapping[str, Any] = field(default_factory=lambda: {"kind": "constant"})
    select: str = "last"
    init: str = "keras"
    shuffle: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "optimizer_kwargs", dict(self.optimizer_kwargs))
        schedule = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(self.schedule).items()}
        object.__setattr__(self, "schedule", schedule)
        if schedule.get("kind") not in SCHEDULES:
            raise ValueError(f"stage schedule kind must be one of {SCHEDULES}, got {schedule.get('kind')!r}")
        if self.select not in ("last", "best_val_uf1"):
            raise ValueError(f"stage select must be 'last' or 'best_val_uf1', got {self.select!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"optimizer_kwargs": dict(self.optimizer_kwargs),
                                           "schedule": dict(self.schedule)}


@dataclass(frozen=True)
class Recipe:
    """A named, immutable training preset (see the module docstring for the presets).

    Attributes:
        name: registry name (``"ststnet"``; ``"ststnet-quick"`` for its quick variant).
        paper: short key of the paper / code the values come from.
        model: :func:`mer_keras.models.get` name.
        model_kwargs: builder keyword arguments (``classes`` and ``input_shape`` are set by
            the engine from the data).
        input: input kind for :meth:`LOSODataset.from_cache` (one of ``INPUT_KINDS``).
        input_size: expected ``(H, W, C)`` of one sample; the engine refuses other shapes.
        optimizer: ``"adam"`` or ``"sgd"``; ``lr`` its initial learning rate;
            ``optimizer_kwargs`` extra arguments (PyTorch-equivalent defaults when empty).
        lr_step, lr_gamma: step decay ``lr * gamma ** (epoch // lr_step)`` (PyTorch
            ``StepLR`` stepped once per epoch); ``lr_step=None`` keeps ``lr`` constant.
        epochs, batch_size: training length; the last epoch's model is evaluated.
        loss: ``"cross_entropy"`` (softmax head) or ``"multi_margin"`` (SVM head,
            :class:`mer_keras.models.heads.MultiMarginLoss`).
        label_smoothing: 0.0 (none) in every paper preset.
        normalisation: ``None`` or ``"per_channel"`` (mean/std per channel fitted on the
            fold's training samples only).
        class_balancing: ``None`` or ``"oversample"`` (minority classes of the training
            samples topped up with horizontally flipped copies, training only).
        seed: base seed; each fold's seed is derived from it and the fold name.
        mixed_precision: use ``mixed_float16`` when training on a GPU.
        init: initial weights, ``"keras"`` (the builders' glorot/zeros) or ``"pytorch"``
            (PyTorch's ``kaiming_uniform(a=sqrt(5))`` weights and ``U(+-1/sqrt(fan_in))``
            biases, for recipes that reproduce an official PyTorch code).
        shuffle: a new seeded permutation of the training samples every epoch (PyTorch
            ``DataLoader(shuffle=True)``); ``False`` keeps the dataset order in every epoch,
            as the original STSTNet code does.
        notes: how every value was chosen (paper, official code, or an open choice).

    Two-stage fields (``trainer="two_stage"``, :mod:`mer_keras.training.two_stage`; the
    stage-2 values are ``lr``, ``epochs``, ``batch_size``, ``loss``, ``optimizer``):
        trainer: ``"single"`` (the engine's one-stage loop), ``"two_stage"``, ``"transfer"``
            (:mod:`mer_keras.training.transfer`) or ``"handcrafted"`` (only
            :class:`HandcraftedRecipe`, :mod:`mer_keras.training.handcrafted`).
        backbone: the model that is pre-trained and fine-tuned; always equal to ``model``
            (``replace(backbone=...)`` sets both).
        head: stage-2 classifier, ``"svm"`` (loss ``multi_margin``) or ``"softmax"``
            (``cross_entropy``); ``replace(head=...)`` also sets ``loss``.
        pretrain: run stage 1 (flow-image pre-training) and reload its down-sampling layers.
        pretrain_epochs, pretrain_batch_size, pretrain_lr: stage-1 length, batch and Adam lr.
        val_fraction: share of the fold's training *subjects* held out to pick the best
            pre-training epoch.
        flip_classes: class names whose stage-2 clips are doubled by horizontal flip.
        plateau_monitor, plateau_factor, plateau_patience, plateau_min_delta, plateau_min_lr:
            stage-2 learning-rate reduction on plateau of the training loss / accuracy
            (Keras ``ReduceLROnPlateau`` semantics, one counter per monitored quantity).

    Transfer fields (``trainer="transfer"``, :mod:`mer_keras.training.transfer`; stage 1 =
    macro-expression pre-training with ``pretrain_epochs``, ``pretrain_batch_size``,
    ``pretrain_lr``; stage 2 = micro-expression fine-tuning with ``optimizer``, ``lr``,
    ``batch_size``, ``epochs`` and ``model_kwargs["l2"]`` unless the grid picks them;
    ``val_fraction`` is the share of subjects held out for stage-1 epoch selection (macro
    subjects) and for the grid's inner split (the fold's training subjects)):
        pretrain_optimizer, pretrain_optimizer_kwargs: stage-1 optimiser (``"sgd"`` with
            ``{"momentum": 0.9}`` in the paper).
        grid: ``None`` (no search) or ``{name: (values, ...)}`` over :data:`GRID_KEYS`;
            keys left out keep the recipe's value.
        unfreeze_fraction: share of the stage-2 epochs over which the reloaded blocks are
            unfrozen, the last block first (0: everything trainable from the start).
        max_shift: largest pixel shift of the class-balancing copies.
        jitter_prob, jitter_max: pixel jitter of the training images, redrawn every epoch.
    """

    name: str
    paper: str
    model: str
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    input: str = "flow_stack"
    input_size: tuple[int, int, int] = (112, 112, 3)
    optimizer: str = "adam"
    lr: float = 1e-3
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    lr_step: int | None = None
    lr_gamma: float = 1.0
    epochs: int = 1
    batch_size: int = 64
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0
    normalisation: str | None = None
    class_balancing: str | None = None
    seed: int = 0
    mixed_precision: bool = False
    notes: tuple[str, ...] = ()
    trainer: str = "single"
    backbone: str | None = None
    head: str | None = None
    pretrain: bool = False
    pretrain_epochs: int = 0
    pretrain_batch_size: int = 32
    pretrain_lr: float = 1e-3
    val_fraction: float = 0.2
    flip_classes: tuple[str, ...] = ()
    plateau_monitor: tuple[str, ...] = ("loss",)
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    plateau_min_delta: float = 1e-4
    plateau_min_lr: float = 0.0
    pretrain_optimizer: str = "sgd"
    pretrain_optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, tuple] | None = None
    unfreeze_fraction: float = 0.5
    max_shift: int = 4
    jitter_prob: float = 0.3
    jitter_max: int = 20
    init: str = "keras"
    shuffle: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        object.__setattr__(self, "optimizer_kwargs", dict(self.optimizer_kwargs))
        object.__setattr__(self, "pretrain_optimizer_kwargs", dict(self.pretrain_optimizer_kwargs))
        if self.grid is not None:
            grid = {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in dict(self.grid).items()}
            object.__setattr__(self, "grid", grid)
        size = self.input_size
        if isinstance(size, (int, float)) and not isinstance(size, bool):
            size = (int(size), int(size), 3)  # input_size=64 -> (64, 64, 3)
        object.__setattr__(self, "input_size", tuple(int(v) for v in size))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "flip_classes", tuple(str(c) for c in self.flip_classes))
        monitor = (self.plateau_monitor,) if isinstance(self.plateau_monitor, str) else self.plateau_monitor
        object.__setattr__(self, "plateau_monitor", tuple(monitor))
        checks = [
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.normalisation in NORMALISATIONS, f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"),
            (self.class_balancing in CLASS_BALANCING,
             f"class_balancing must be one of {CLASS_BALANCING}, got {self.class_balancing!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (int(self.epochs) >= 1 and int(self.epochs) == self.epochs, f"epochs must be an integer >= 1, got {self.epochs}"),
            (int(self.batch_size) >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.lr_step is None or int(self.lr_step) >= 1, f"lr_step must be >= 1 or None, got {self.lr_step}"),
            (self.lr_gamma > 0, f"lr_gamma must be > 0, got {self.lr_gamma}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (len(self.input_size) == 3, f"input_size must be (H, W, C), got {self.input_size}"),
            (self.trainer in TRAINERS, f"trainer must be one of {TRAINERS}, got {self.trainer!r}"),
            (self.init in INITS, f"init must be one of {INITS}, got {self.init!r}"),
            (isinstance(self.shuffle, bool), f"shuffle must be True or False, got {self.shuffle!r}"),
            ((self.trainer == "handcrafted") == isinstance(self, HandcraftedRecipe),
             "trainer 'handcrafted' is the trainer of HandcraftedRecipe (features + linear SVM) and only of it"),
        ]
        if self.trainer in ("two_stage", "transfer"):  # backbone + head switches of both multi-stage trainers
            checks += [
                (self.backbone == self.model, f"backbone ({self.backbone!r}) must equal model ({self.model!r}); "
                                              "use replace(backbone=...), which sets both"),
                (self.head in HEAD_LOSS, f"head must be one of {tuple(HEAD_LOSS)}, got {self.head!r}"),
                (HEAD_LOSS.get(self.head) == self.loss,
                 f"head {self.head!r} trains with loss {HEAD_LOSS.get(self.head)!r}, got loss {self.loss!r}; "
                 "use replace(head=...), which sets both"),
            ]
        if self.trainer == "two_stage":
            checks += [
                (not self.pretrain or int(self.pretrain_epochs) >= 1,
                 f"pretrain_epochs must be >= 1 when pretrain is on, got {self.pretrain_epochs}"),
                (int(self.pretrain_batch_size) >= 1, f"pretrain_batch_size must be >= 1, got {self.pretrain_batch_size}"),
                (self.pretrain_lr > 0, f"pretrain_lr must be > 0, got {self.pretrain_lr}"),
                (0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
                (set(self.plateau_monitor) <= set(PLATEAU_MONITORS),
                 f"plateau_monitor must be a subset of {PLATEAU_MONITORS}, got {self.plateau_monitor}"),
                (0.0 < self.plateau_factor < 1.0, f"plateau_factor must be in (0, 1), got {self.plateau_factor}"),
                (int(self.plateau_patience) >= 0, f"plateau_patience must be >= 0, got {self.plateau_patience}"),
                (self.input_size[-1] == 3, f"two-stage input_size must have 3 channels (flow image), got {self.input_size}"),
                (self.input in ("frames", "frame_changes"),
                 f"two-stage recipes train on frame stacks (input 'frames' or 'frame_changes'), got {self.input!r}"),
            ]
        if self.trainer == "transfer":
            checks += [
                (self.input == "apex", f"transfer recipes read the grey apex frame (input='apex'), got {self.input!r}"),
                (self.input_size[-1] == 3, f"input_size is the network input (grey repeated to 3 channels), got {self.input_size}"),
                (not self.pretrain or int(self.pretrain_epochs) >= 1,
                 f"pretrain_epochs must be >= 1 when pretrain is on, got {self.pretrain_epochs}"),
                (int(self.pretrain_batch_size) >= 1, f"pretrain_batch_size must be >= 1, got {self.pretrain_batch_size}"),
                (self.pretrain_lr > 0, f"pretrain_lr must be > 0, got {self.pretrain_lr}"),
                (self.pretrain_optimizer in OPTIMIZERS,
                 f"pretrain_optimizer must be one of {OPTIMIZERS}, got {self.pretrain_optimizer!r}"),
                (0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
                (0.0 <= self.unfreeze_fraction <= 1.0, f"unfreeze_fraction must be in [0, 1], got {self.unfreeze_fraction}"),
                (int(self.max_shift) >= 1, f"max_shift must be >= 1, got {self.max_shift}"),
                (0.0 <= self.jitter_prob <= 1.0, f"jitter_prob must be in [0, 1], got {self.jitter_prob}"),
                (int(self.jitter_max) >= 0, f"jitter_max must be >= 0, got {self.jitter_max}"),
                *_grid_checks(self.grid),
            ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"recipe {self.name!r}: {message}")

    # ------------------------------------------------------------------ variants

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (validated); unknown field names raise ``TypeError``.

        Two-stage and transfer switches keep their paired fields consistent: ``backbone=``
        also sets ``model`` and ``head=`` also sets ``loss`` (unless given explicitly).
        """
        if "backbone" in changes and "model" not in changes:
            changes["model"] = changes["backbone"]
        if "head" in changes and "loss" not in changes and changes["head"] in HEAD_LOSS:
            changes["loss"] = HEAD_LOSS[changes["head"]]
        return dataclasses.replace(self, **changes)

    def quick(self, epochs: int = 4) -> "Recipe":
        """A short variant for tests and CI: ``epochs`` epochs (default 4), the step decay
        scaled to the same fraction of training, everything else unchanged (two-stage and
        transfer recipes also pre-train for ``epochs`` epochs; a transfer recipe's grid
        becomes two trials: its batch size and lr, ``epochs`` epochs, weight decay
        :data:`QUICK_GRID_WEIGHT_DECAY`). Not a paper setting."""
        step = None if self.lr_step is None else max(1, round(self.lr_step * epochs / self.epochs))
        note = f"quick variant of {self.name!r}: {epochs} epochs instead of {self.epochs} (tests/CI, not a paper setting)"
        extra = {"pretrain_epochs": int(epochs)} if self.trainer in ("two_stage", "transfer") else {}
        if self.trainer == "transfer" and self.grid is not None:
            extra["grid"] = {"batch_size": (self.batch_size,), "lr": (self.lr,), "epochs": (int(epochs),),
                             "weight_decay": QUICK_GRID_WEIGHT_DECAY}
        return self.replace(name=f"{self.name}-quick", epochs=int(epochs), lr_step=step, notes=(*self.notes, note),
                            **extra)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` (PyTorch ``StepLR`` semantics)."""
        if self.lr_step is None:
            return float(self.lr)
        return float(self.lr * self.lr_gamma ** (int(epoch) // int(self.lr_step)))

    # -- composed view: a trainer kind plus its stages

    def stages(self) -> dict[str, Stage]:
        """The recipe as stage configurations, in training order (:data:`STAGE_NAMES`).

        ``"train"`` is the stage whose model is evaluated (the only stage of a single-stage
        recipe; stage 2 of a two-stage or transfer recipe). ``"pretrain"`` (two-stage flow
        pre-training, transfer macro-expression pre-training) is listed when ``pretrain`` is
        on; its model is the one with the best validation UF1 on an inner subject split.
        """
        if self.trainer == "handcrafted":
            return {}
        if self.trainer == "two_stage":
            schedule = {"kind": "plateau", "monitor": list(self.plateau_monitor), "factor": self.plateau_factor,
                        "patience": self.plateau_patience, "min_delta": self.plateau_min_delta,
                        "min_lr": self.plateau_min_lr}
        elif self.lr_step is None:
            schedule = {"kind": "constant"}
        else:
            schedule = {"kind": "step", "step": int(self.lr_step), "gamma": float(self.lr_gamma)}
        train = Stage(optimizer=self.optimizer, lr=self.lr, optimizer_kwargs=self.optimizer_kwargs, epochs=self.epochs,
                      batch_size=self.batch_size, loss=self.loss, schedule=schedule, init=self.init,
                      shuffle=self.shuffle)
        if not self.pretrain or self.trainer == "single":
            return {"train": train}
        pre = self.stage("pretrain")
        pretrain = Stage(optimizer=pre.optimizer, lr=pre.lr, optimizer_kwargs=pre.optimizer_kwargs,
                         epochs=self.pretrain_epochs, batch_size=pre.batch_size, loss="cross_entropy",
                         select="best_val_uf1", init=self.init, shuffle=self.shuffle)
        return {"pretrain": pretrain, "train": train}

    def stage(self, name: str) -> "Recipe":
        """The recipe as one stage's loop reads it: ``optimizer``, ``lr``, ``batch_size``, ``epochs``,
        ``loss`` and the head of stage ``name`` (``"train"`` is the recipe itself)."""
        if name == "train":
            return self
        if name != "pretrain" or self.trainer not in ("two_stage", "transfer"):
            raise ValueError(f"recipe {self.name!r} ({self.trainer}) has no stage {name!r}; "
                             f"its stages: {list(STAGE_NAMES[self.trainer])}")
        if self.trainer == "two_stage":  # the stage-2 optimiser, constant lr, softmax + cross-entropy
            return self.replace(head="softmax", lr=self.pretrain_lr, lr_step=None, batch_size=self.pretrain_batch_size,
                                epochs=self.pretrain_epochs, label_smoothing=0.0)
        return self.replace(head="softmax", optimizer=self.pretrain_optimizer,
                            optimizer_kwargs=self.pretrain_optimizer_kwargs, lr=self.pretrain_lr, lr_step=None,
                            batch_size=self.pretrain_batch_size, epochs=self.pretrain_epochs, unfreeze_fraction=0.0)

    @classmethod
    def compose(cls, *, name: str, paper: str, model: str, stages: Mapping[str, Stage], trainer: str = "single",
                **fields) -> "Recipe":
        """A recipe from a trainer kind and its stage configurations (the inverse of :meth:`stages`).

        ``stages`` must name exactly the kind's stages (:data:`STAGE_NAMES`; a two-stage or
        transfer recipe without ``"pretrain"`` trains stage 2 from scratch). ``fields`` are
        the kind's other settings (input, normalisation, ``val_fraction``, ``flip_classes``,
        ``grid``, ...). Stages must agree where the kind shares a setting: two-stage
        pre-training uses stage 2's optimiser; both stages share ``init`` and ``shuffle``.
        """
        allowed = STAGE_NAMES.get(trainer)
        if allowed is None:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {trainer!r}")
        if "train" not in stages or not set(stages) <= set(allowed):
            raise ValueError(f"a {trainer!r} recipe has the stages {list(allowed)} ('pretrain' optional), "
                             f"got {list(stages)}")
        clash = set(fields) & {f.name for f in dataclasses.fields(Stage)} - {"select"}
        if clash:
            raise ValueError(f"{sorted(clash)} belong to a stage; set them in stages=")
        train = stages["train"]
        values = dict(optimizer=train.optimizer, lr=train.lr, optimizer_kwargs=train.optimizer_kwargs,
                      epochs=train.epochs, batch_size=train.batch_size, loss=train.loss, init=train.init,
                      shuffle=train.shuffle)
        schedule = dict(train.schedule)
        if schedule["kind"] == "step":
            values.update(lr_step=int(schedule["step"]), lr_gamma=float(schedule["gamma"]))
        elif schedule["kind"] == "plateau":
            if trainer != "two_stage":
                raise ValueError(f"a plateau schedule is run by the two-stage trainer only, not {trainer!r}")
            values.update(plateau_monitor=tuple(schedule["monitor"]), plateau_factor=schedule["factor"],
                          plateau_patience=schedule["patience"], plateau_min_delta=schedule["min_delta"],
                          plateau_min_lr=schedule["min_lr"])
        if trainer in ("two_stage", "transfer"):
            values["backbone"] = model
            pre = stages.get("pretrain")
            values["pretrain"] = pre is not None
            if pre is not None:
                values.update(pretrain_epochs=pre.epochs, pretrain_batch_size=pre.batch_size, pretrain_lr=pre.lr)
                if trainer == "transfer":
                    values.update(pretrain_optimizer=pre.optimizer, pretrain_optimizer_kwargs=pre.optimizer_kwargs)
        recipe = cls(name=name, paper=paper, model=model, trainer=trainer, **values, **fields)
        if recipe.stages() != {k: stages[k] for k in recipe.stages()}:
            got = {k: v.to_dict() for k, v in recipe.stages().items()}
            raise ValueError(f"recipe {name!r}: these stages cannot be expressed by a {trainer!r} trainer "
                             f"(it would run {got})")
        return recipe

    def settable_fields(self) -> set[str]:
        """Field names an override may set on this recipe: those of :meth:`to_dict` plus the
        official-loop switches of :data:`ORDER_FIELDS` (left out of ``to_dict()`` at their defaults)."""
        fields = set(self.to_dict())
        return fields if self.trainer == "handcrafted" else fields | set(ORDER_FIELDS)

    def config_dict(self) -> dict:
        """:meth:`to_dict` without ``notes``: what a run's config hash covers (prose never changes numbers)."""
        out = self.to_dict()
        out.pop("notes", None)
        return out

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        out["notes"] = list(self.notes)
        for key, default in ORDER_FIELDS.items():
            if out[key] == default:
                del out[key]
        if self.trainer == "two_stage":
            out["flip_classes"] = list(self.flip_classes)
            out["plateau_monitor"] = list(self.plateau_monitor)
        elif self.trainer == "transfer":
            for key in TRANSFER_UNUSED:
                del out[key]
            out["grid"] = None if self.grid is None else {k: list(v) for k, v in self.grid.items()}
        else:
            for key in TWO_STAGE_FIELDS:
                del out[key]
        if self.trainer != "transfer":
            for key in TRANSFER_FIELDS:
                del out[key]
        return out


def _grid_checks(grid) -> list[tuple[bool, str]]:
    """Validation of a transfer recipe's ``grid`` (see :class:`Recipe`)."""
    if grid is None:
        return []
    checks = [(bool(grid), "grid must be None or name the hyperparameters to search"),
              (set(grid) <= set(GRID_KEYS), f"grid keys must be among {GRID_KEYS}, got {sorted(grid)}")]
    for key, values in grid.items():
        checks.append((len(values) >= 1 and len(set(values)) == len(values),
                       f"grid[{key!r}] needs distinct values, got {values}"))
        if key in ("batch_size", "epochs"):
            checks.append((all(int(v) == v and int(v) >= 1 for v in values), f"grid[{key!r}] must hold integers >= 1"))
        elif key == "lr":
            checks.append((all(v > 0 for v in values), "grid['lr'] must hold values > 0"))
        elif key == "weight_decay":
            checks.append((all(v >= 0 for v in values), "grid['weight_decay'] must hold values >= 0"))
    return checks


# ----------------------------------------------------------------------------- handcrafted baselines

HANDCRAFTED_MODEL = "linear_svm"
"""The ``model`` of every handcrafted recipe: standardised features + a linear SVM."""
SVM_CLASS_WEIGHTS = (None, "balanced")
HANDCRAFTED_FIELDS = ("features", "feature_params", "svm_c", "svm_c_grid", "svm_class_weight")
"""Fields only :class:`HandcraftedRecipe` has (no other recipe's ``to_dict()`` or config hash sees them)."""
HANDCRAFTED_CONFIG = ("name", "paper", "model", "input", "seed", "notes", "trainer", "val_fraction",
                      *HANDCRAFTED_FIELDS)
"""What a handcrafted recipe's ``to_dict()`` (run config, override names) holds: the network
training fields (optimiser, epochs, batch size, input size, ...) do not apply to it."""


@dataclass(frozen=True)
class HandcraftedRecipe(Recipe):
    """A handcrafted-feature baseline: features per clip, a linear SVM per LOSO fold.

    Run by :func:`mer_keras.training.loso.run_loso` through
    :mod:`mer_keras.training.handcrafted` (``trainer="handcrafted"``). A subclass, so the
    fields of every other recipe -- and their ``to_dict()`` and run-config hashes -- stay
    as they are; its own ``to_dict()`` holds only :data:`HANDCRAFTED_CONFIG`.

    Attributes (besides ``name``, ``paper``, ``input``, ``seed``, ``notes``,
    ``val_fraction`` of :class:`Recipe`; ``model`` is always ``"linear_svm"``):
        features: a :data:`mer_keras.baselines.FEATURES` name; ``input`` must be the
            cache input it reads (``replace(features=...)`` sets both).
        feature_params: keyword arguments of the feature function (``blocks``, ``radii``,
            ``bins``, ``n_frames``, ...); unknown names are refused when the run starts.
        svm_c: the SVM's ``C`` (used when ``svm_c_grid`` is None).
        svm_c_grid: ``None`` or candidate ``C`` values chosen per fold by UF1 on an inner
            split of the fold's *training* subjects (``val_fraction`` of them validate),
            then refitted on all training subjects.
        svm_class_weight: ``None`` (every clip weighs 1) or ``"balanced"`` (scikit-learn's
            inverse class-frequency weights, from the training clips).
    """

    features: str = "hoof"
    feature_params: Mapping[str, Any] = field(default_factory=dict)
    svm_c: float = 1.0
    svm_c_grid: tuple[float, ...] | None = None
    svm_class_weight: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_params", dict(self.feature_params))
        if self.svm_c_grid is not None:
            grid = self.svm_c_grid if isinstance(self.svm_c_grid, (list, tuple)) else (self.svm_c_grid,)
            object.__setattr__(self, "svm_c_grid", tuple(float(c) for c in grid))
        super().__post_init__()
        from mer_keras.baselines import FEATURES

        feature = FEATURES.get(self.features)
        grid = self.svm_c_grid
        checks = [
            (self.trainer == "handcrafted", f"a HandcraftedRecipe has trainer 'handcrafted', got {self.trainer!r}"),
            (self.model == HANDCRAFTED_MODEL, f"model must be {HANDCRAFTED_MODEL!r}, got {self.model!r}"),
            (feature is not None, f"features must be one of {sorted(FEATURES)}, got {self.features!r}"),
            (feature is None or self.input == feature.input,
             f"feature {self.features!r} reads input {getattr(feature, 'input', None)!r}, got input {self.input!r}; "
             "use replace(features=...), which sets both"),
            (_finite_number(self.svm_c) and self.svm_c > 0, f"svm_c must be finite and > 0, got {self.svm_c}"),
            (grid is None or (len(grid) >= 1 and len(set(grid)) == len(grid) and all(_finite_number(c) and c > 0 for c in grid)),
             f"svm_c_grid must be None or distinct values > 0, got {grid}"),
            (grid is None or 0.0 < self.val_fraction < 1.0, f"val_fraction must be in (0, 1), got {self.val_fraction}"),
            (self.svm_class_weight in SVM_CLASS_WEIGHTS,
             f"svm_class_weight must be one of {SVM_CLASS_WEIGHTS}, got {self.svm_class_weight!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"recipe {self.name!r}: {message}")

    def replace(self, **changes) -> "HandcraftedRecipe":
        """A copy with some fields changed; ``features=`` also sets ``input`` (unless given)."""
        if "features" in changes and "input" not in changes:
            from mer_keras.baselines import FEATURES

            if changes["features"] in FEATURES:
                changes["input"] = FEATURES[changes["features"]].input
        return super().replace(**changes)

    def quick(self, epochs: int = 4) -> "HandcraftedRecipe":
        """The same recipe named ``"<name>-quick"`` (nothing to shorten: no epochs are trained)."""
        note = f"quick variant of {self.name!r}: identical (a handcrafted recipe trains no epochs)"
        return self.replace(name=f"{self.name}-quick", notes=(*self.notes, note))

    def to_dict(self) -> dict:
        """Plain JSON-ready fields: :data:`HANDCRAFTED_CONFIG` only (tuples as lists)."""
        out = {key: getattr(self, key) for key in HANDCRAFTED_CONFIG}
        out["notes"] = list(self.notes)
        out["feature_params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.feature_params.items()}
        out["svm_c_grid"] = None if self.svm_c_grid is None else list(self.svm_c_grid)
        return out


def _finite_number(value) -> bool:
    """``value`` is a finite real number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return False
    return v == v and v not in (float("inf"), float("-inf"))


# ----------------------------------------------------------------------------- presets

_OFF_TANET_TRAINING = dict(
    input="flow_stack",
    input_size=(112, 112, 3),
    stages={"train": Stage(optimizer="adam", lr=1e-3, optimizer_kwargs=dict(epsilon=1e-8), epochs=201, batch_size=64,
                           loss="cross_entropy", schedule={"kind": "step", "step": 60, "gamma": 0.3},
                           init="pytorch")},
)

_OFF_TANET_NOTES = (
    "Adam lr 1e-3, StepLR(step_size=60, gamma=0.3) stepped per epoch, 201 epochs, batch 64, "
    "cross-entropy: official Off-TANet code.",
    "Adam betas (0.9, 0.999), eps 1e-8 and no weight decay: PyTorch defaults, which the code keeps "
    "(Keras' Adam epsilon default 1e-7 is set to 1e-8).",
    "Input: the float (u, v, strain) of TV-L1 flow at 112x112 as the code feeds it (cache input "
    "'flow_stack', prepare preset 'off_tanet'); no normalisation, no augmentation, no class balancing "
    "(none in the code).",
    "Evaluation: the model after the last epoch on the left-out (dataset, subject); 49 folds; the "
    "papers' UF1/UAR are means of per-subject scores (report: *_subject_mean).",
    "Shuffling each epoch (PyTorch DataLoader shuffle=True); the last partial batch is kept (drop_last=False).",
    "Initial weights: PyTorch's defaults (the official model is PyTorch): kaiming_uniform(a=sqrt(5)) kernels and "
    "U(+-1/sqrt(fan_in)) biases for every convolution, linear layer and attention projection (init='pytorch').",
)

_PRESETS: dict[str, Recipe] = {
    "ststnet": Recipe.compose(
        name="ststnet",
        paper="ststnet_original_code",
        model="ststnet",
        model_kwargs=dict(variant="original", fuse_streams=True, fuse_bn_pool=True),
        input="flow_image",
        input_size=(28, 28, 3),
        stages={"train": Stage(optimizer="adam", lr=5e-5, optimizer_kwargs=dict(epsilon=1e-8), epochs=800,
                               batch_size=256, loss="cross_entropy", init="pytorch", shuffle=False)},
        notes=(
            "Adam lr 5e-5, batch 256, 800 epochs, cross-entropy, constant lr, last epoch evaluated: the "
            "original STSTNet code.",
            "Adam betas/eps and weight decay: PyTorch defaults (epsilon 1e-8, no decay).",
            "Input: 28x28x3 (u, v, strain) images with pixel values 0..255 as the code reads them with "
            "cv2.imread, i.e. the cache's uint8 'flow_image' (prepare preset 'ststnet') or the MEGC2019 "
            "folders; fed unscaled (no normalisation), as in the code.",
            "Model: the original code's network (variant='original', 1,683 parameters, dropout 0.5), its three "
            "parallel streams computed as one 16-filter stream and BN behind the max-pool (fuse_streams, "
            "fuse_bn_pool: the same function and gradients, faster; copy_stream_weights maps conv1..3 / bn1..3).",
            "No augmentation and no class balancing (none in the code); the code does not shuffle: every "
            "epoch sees the training samples in the dataset's order (shuffle=False), last partial batch kept.",
            "Initial weights: PyTorch's defaults, as the released PyTorch code starts from (init='pytorch').",
        ),
    ),
    "off_tanet": Recipe.compose(
        name="off_tanet",
        paper="off_tanet_official_code",
        model="off_tanet",
        model_kwargs=dict(block="triplet"),
        notes=_OFF_TANET_NOTES,
        **_OFF_TANET_TRAINING,
    ),
    "arfnet": Recipe.compose(
        name="arfnet",
        paper="arfnet_2022",
        model="arfnet",
        model_kwargs=dict(self_attention=True, position_encoding=True, heads=4),
        notes=("ARFNet states the same input, training and LOSO protocol as Off-TANet; the values below "
               "are Off-TANet's official ones.", *_OFF_TANET_NOTES),
        **_OFF_TANET_TRAINING,
    ),
}

# ShuffleNetV2-SVM (Liu et al. 2022): two stages, see mer_keras.training.two_stage.
_SHUFFLENET_SVM_TRAINING = dict(
    trainer="two_stage",
    model="shufflenet_v2",
    input="frames",
    input_size=(224, 224, 3),
    head="svm",
    stages={
        "pretrain": Stage(optimizer="adam", lr=1e-3, epochs=100, batch_size=32, loss="cross_entropy",
                          select="best_val_uf1"),
        "train": Stage(optimizer="adam", lr=1e-3, epochs=30, batch_size=32, loss="multi_margin",
                       schedule={"kind": "plateau", "monitor": ["loss", "accuracy"], "factor": 0.1, "patience": 10,
                                 "min_delta": 1e-4, "min_lr": 0.0}),
    },
    val_fraction=0.2,
    flip_classes=("positive", "surprise"),
)

_SHUFFLENET_SVM_NOTES = (
    "Paper values: 224x224 aligned, masked faces; TV-L1 flow images (onset -> apex) for pre-training, the frames "
    "from onset to apex for training (cache prepared with the 'shufflenet' preset); Adam, initial lr 1e-3 in both "
    "stages; cross-entropy + softmax in pre-training with the same number of samples per class; SVM classifier "
    "trained with the multi-margin hinge loss (Eq. 17, margin 1, p 1); L2 0.2 on every convolution and fully "
    "connected kernel; dropout 0.5 before the classifier; LeakyReLU instead of ReLU; positive and surprise "
    "expanded by horizontal flip; pre-trained down-sampling layers reloaded; lr adjusted by accuracy and loss.",
    "Open choices (the paper gives no epochs, batch sizes or scheduler values): pre-training 100 epochs, "
    "stage 2 30 epochs, batch 32 in both stages (Keras' fit default); stage-2 lr reduced on plateau of the "
    "training loss and of the training accuracy, each with Keras' ReduceLROnPlateau defaults (factor 0.1, "
    "patience 10, min_delta 1e-4, cooldown 0, min_lr 0); pre-training at a constant lr 1e-3.",
    "Open choices (selection and split): the best pre-training epoch is the one with the highest UF1 on a "
    "validation split of 20% of the fold's training subjects (inner_split, whole subjects; ties: lower "
    "validation cross-entropy, then the earlier epoch); pre-training fits on the other training subjects; the "
    "stage-2 model after the last epoch is evaluated; a clip's score is the mean of its frames' scores.",
    "Open choices (model): LeakyReLU slope 0.3 (Keras' default); width 1.0x; BatchNorm with PyTorch-equivalent "
    "settings; pixels scaled to [0, 1]; grey frames repeated to 3 channels so the stem is reloaded unchanged; the "
    "pre-training network uses the same L2, dropout and activation as stage 2.",
    "Ablation switches: pretrain=False (no pre-training), head='softmax' (softmax + cross-entropy instead of "
    "the SVM head; clip score = mean softmax probability), backbone='mobilenet_v2' | 'resnet50' | 'deit_tiny' "
    "(Table 2 rows; builder arguments a backbone lacks, e.g. DeiT's activation, are left out and recorded in "
    "the fold's done.json), input_size=64 etc. with a cache prepared at that size (CPU runs; not a paper setting).",
)

_L2_FINDING = (
    "L2 0.2 (Keras L2(0.2) = 0.2 * sum(w^2) per kernel) collapses training. At initialisation the L2 term is "
    "1045 for ShuffleNetV2 1.0x (455 at 0.5x; it does not depend on the input size) against a hinge loss of 0.667: "
    "1568x (683x) the data loss. Measured (two_stage.loss_terms, inference mode on the training frames) on the "
    "synthetic 9-subject composite, 48 px, 0.5x, fold casme2/sub01, no pre-training, 30 epochs of 13 steps, "
    "seeded: with L2 0.2 every training frame is predicted as one class in 20 of 30 epochs (>= 97% one class in "
    "26), training accuracy stays at the majority share (0.49; best 0.81 in one epoch, final 0.50) and the L2 "
    "term is still 4.8, 11x the hinge loss, after 30 epochs; with L2 5e-4 the frames are one class only for the "
    "first 5 epochs (BatchNorm statistics settling, as for any L2), then training accuracy 0.83-1.00 (final "
    "1.00). tests/test_two_stage.py repeats the initial-ratio and one-class measurements on the tiny data.",
)

for _name, _attention, _label in (("shufflenet_svm", None, "ShuffleNetV2"),
                                  ("shufflenet_cbam_svm", "cbam", "ShuffleNetV2 with CBAM"),
                                  ("shufflenet_vit_svm", "vit", "ShuffleNetV2 with improved ViT")):
    _kwargs = dict(activation="leaky_relu", l2=0.2, dropout=0.5, width_multiplier=1.0)
    if _attention:
        _kwargs["attention"] = _attention
    _PRESETS[_name] = Recipe.compose(
        name=_name, paper="shufflenet_v2_svm_2022", model_kwargs=_kwargs,
        notes=(f"{_label} (Table 2 row), paper L2 0.2 kept as stated.", *_SHUFFLENET_SVM_NOTES, *_L2_FINDING),
        **_SHUFFLENET_SVM_TRAINING)

CORRECTED_L2 = 5e-4
"""L2 factor of ``"shufflenet_svm_corrected"`` (per kernel, Keras ``L2`` semantics); see its notes."""

_PRESETS["shufflenet_svm_corrected"] = Recipe.compose(
    name="shufflenet_svm_corrected", paper="shufflenet_v2_svm_2022",
    model_kwargs=dict(activation="leaky_relu", l2=CORRECTED_L2, dropout=0.5, width_multiplier=1.0),
    notes=("Corrected preset, NOT the paper's value: 'shufflenet_svm' with L2 5e-4 per kernel (Keras L2 "
           "semantics) instead of 0.2, a common CNN weight-decay scale; the L2 term is then 1.1-2.6 at "
           "initialisation (0.5x-1.0x), the same order as the hinge loss. Everything else as 'shufflenet_svm'.",
           *_L2_FINDING, *_SHUFFLENET_SVM_NOTES),
    **_SHUFFLENET_SVM_TRAINING)

_PRESETS["shufflenet_svm_changes"] = _PRESETS["shufflenet_svm_corrected"].replace(
    name="shufflenet_svm_changes", input="frame_changes",
    notes=("NOT the paper's input: 'shufflenet_svm_corrected' trained and scored on each frame's change since the "
           "onset (input 'frame_changes', mer_keras.preprocess.changes: 128 + 2 x (frame - onset)) instead of the "
           "frame itself; the face cancels, the expression stays. Measured beside the paper's input in "
           "docs/benchmarks.md, section 'Two-stage diagnosis': on synthetic faces the paper's frames leave a "
           "ShuffleNetV2 trained from scratch near chance on left-out subjects while a linear probe on the same "
           "frames finds the class; on the changes it scores far above both.",
           *_PRESETS["shufflenet_svm_corrected"].notes))

# MobileViT with macro-expression transfer (Liu et al. 2022, Front. Neurorobot.): see mer_keras.training.transfer.
_MOBILEVIT_TRANSFER_NOTES = (
    "Paper values: MobileViT-S ('we chose the largest scale model'); grey, aligned, eye-masked apex frames at "
    "256x256 for both the macro and the micro set ('Pre-processing'; cache preset 'mobilevit_apex'); stage 1 "
    "(macro-expression transfer) SGD momentum 0.9, lr 0.01, batch 32, 100 epochs, weights kept 'when the accuracy "
    "was highest'; only the MobileNetV2 blocks are transferred; stage 2 Adam lr 0.007, batch 64; L2 on the conv and "
    "fully connected kernels, dropout 0.5, SVM classifier (multi-margin hinge, margin 1, p 1); classes balanced by "
    "small random shifts and horizontal flips; pixel jitter with probability 0.3, maximum 20; gradual unfreezing; "
    "batch size, initial lr, number of iterations and weight decay (1e-4 .. 0.1) chosen by grid search.",
    "L2 0.01 per kernel (Keras L2 semantics): the value the weight-decay search settled on ('Optimized MobileViT "
    "Model'); the 'scale of 0.2' of 'Experimental Setup' lies outside the paper's own search range and is not used. "
    "Measured at initialisation (MobileViT-S, 256 px, SVM head): the L2 term is 129 at 0.01 and 2585 at 0.2 against "
    "a hinge loss of about 0.67 (194x and 3876x; 1.3 and 13 at the grid's 1e-4 and 1e-3). ShuffleNetV2 training "
    "collapsed at 1568x (see 'shufflenet_svm'); whether 0.01 collapses MobileViT training was not measured -- the "
    "per-fold grid can choose the smaller values.",
    "Open choices (grid): the paper names the searched hyperparameters and the chosen values, not the candidates; "
    "the grid here is batch (32, 64) x lr (0.001, 0.007, 0.01) x epochs (50, 100) x weight decay (1e-4, 1e-3, "
    "1e-2, 1e-1) = 48 trials, run per LOSO fold with KerasTuner's GridSearch on an inner split (20% of the fold's "
    "training subjects validate; the test subject is never seen), scored by validation UF1 (ties: lower validation "
    "loss, then grid order); the final model is retrained on all the fold's training subjects with the chosen "
    "values and evaluated after its last epoch. Without a grid (grid=None): batch 64, lr 0.007, 100 epochs, L2 0.01.",
    "Open choices (stage 1): trained once per run and shared by all folds (the macro set holds no micro-expression "
    "subject), cached in the run folder; the kept epoch has the highest accuracy on 20% of the macro subjects "
    "(ties: lower loss, then the earlier epoch), the other macro subjects train; macro labels mapped onto the three "
    "micro classes as the paper does (happiness; anger, disgust, sadness; surprise), softmax head; the same L2 and "
    "dropout as stage 2; the paper's grid search before stage 1 is not repeated (its results are the stated values).",
    "Open choices (gradual unfreezing; the paper gives no schedule): the reloaded stem and MobileNetV2 blocks start "
    "frozen while the fresh layers (MobileViT blocks, 1x1 conv, classifier) train, and are unfrozen one block at a "
    "time from the last to the first (layer5, layer4, layer3, layer2, layer1 + stem) at evenly spaced epochs over "
    "the first half of stage 2 (unfreeze_fraction 0.5: epochs 10, 20, 30, 40, 50 of 100); the second half trains "
    "every layer. Frozen: no update of the weights or of the BatchNorm moving statistics, batch statistics in "
    "training steps (the trainable=False semantics of Keras 2.2.4, which the paper used). Without pre-training "
    "nothing is frozen.",
    "Open choices (augmentation and input): balancing copies up to the largest class, flips first, then integer "
    "shifts of up to 4 px (edge padding), drawn once per training set; pixel jitter redrawn every epoch on every "
    "training image; both stages; test images are never augmented. uint8 pixels scaled to [0, 1] inside the model "
    "and the grey channel repeated three times (Table 1 input 256 x 256 x 3). Adam and SGD with Keras defaults "
    "otherwise (epsilon 1e-7 as in Keras 2.2.4, no Nesterov), constant learning rates.",
    "Ablation switches (Table 2): pretrain=False (no transfer), head='softmax' (softmax + cross-entropy instead of "
    "the SVM), backbone='mobilenet_v2' | 'resnet18' | 'deit_tiny' (backbones without MobileNetV2 blocks transfer "
    "every weighted layer before the pooled features, unfrozen in five contiguous groups), grid=None (no search); "
    "input_size=64 with a cache prepared at 64 px for CPU runs (not a paper setting).",
)

_PRESETS["mobilevit_transfer"] = Recipe.compose(
    name="mobilevit_transfer",
    paper="mobilevit_macro_transfer_2022",
    model="mobilevit_s",
    model_kwargs=dict(l2=0.01, dropout=0.5),
    trainer="transfer",
    input="apex",
    input_size=(256, 256, 3),
    head="svm",
    stages={
        "pretrain": Stage(optimizer="sgd", lr=0.01, optimizer_kwargs=dict(momentum=0.9), epochs=100, batch_size=32,
                          loss="cross_entropy", select="best_val_uf1"),
        "train": Stage(optimizer="adam", lr=0.007, epochs=100, batch_size=64, loss="multi_margin"),
    },
    val_fraction=0.2,
    grid=dict(batch_size=(32, 64), lr=(0.001, 0.007, 0.01), epochs=(50, 100), weight_decay=(1e-4, 1e-3, 1e-2, 1e-1)),
    unfreeze_fraction=0.5,
    max_shift=4,
    jitter_prob=0.3,
    jitter_max=20,
    notes=_MOBILEVIT_TRANSFER_NOTES,
)


# Handcrafted baselines (features + linear SVM): see mer_keras.baselines and mer_keras.training.handcrafted.
_HANDCRAFTED_NOTES = (
    "Classifier: per LOSO fold, features standardised (StandardScaler fitted on the fold's training clips only) and "
    "a linear SVM (scikit-learn SVC(kernel='linear'), LIBSVM: exact solver, one-vs-one multi-class, deterministic) "
    "fitted on the training clips; the test subject's scores are the SVM's one-vs-rest-shaped decision values. "
    "The MEGC2019 LBP-TOP baseline classifies with a linear SVM; C = 1 (the LIBSVM and scikit-learn default) is an "
    "open choice, fixed, never tuned on a test subject (svm_c_grid: per-fold choice on an inner split of the training "
    "subjects). No class weights (svm_class_weight=None), as the baselines state none.",
    "Features are computed once per run from the prepared cache (the recipe's input) and shared by all folds.",
)
_LBP_NOTES = (
    "Input: the aligned, masked grey frames onset..apex of a cache prepared with keep='onset_to_apex' (e.g. the "
    "'shufflenet' preset), input='frames'.",
    "n_frames=10: every stack resampled in time to 10 frames by linear interpolation (rounded to grey levels) -- the "
    "length normalisation of the LBP-TOP micro-expression baselines (TIM to 10 frames, ICCV 2011), with linear "
    "interpolation in place of TIM's graph embedding; onset..apex stacks are often shorter than the 9 frames Rt=4 "
    "needs.",
)

_PRESETS["lbp_top_svm"] = HandcraftedRecipe(
    name="lbp_top_svm", paper="lbp_top_megc2019_baseline", model=HANDCRAFTED_MODEL, trainer="handcrafted",
    features="lbp_top", input="frames",
    feature_params=dict(blocks=(5, 5), radii=(1, 1, 4), points=(8, 8, 8), method="nri_uniform", n_frames=10),
    svm_c=1.0,
    notes=("LBP-TOP (IEEE TPAMI 2007) as the MEGC2019 baseline: 5x5 blocks, radii (Rx, Ry, Rt) = (1, 1, 4), 8 "
           "neighbours per plane, uniform patterns (59-bin 'u2' mapping, scikit-image 'nri_uniform'); per block "
           "the XY, XT and YT histograms, each normalised; 5 * 5 * 3 * 59 = 4425 values. The elliptical XT/YT "
           "neighbourhoods (radius 1 in space, 4 in time) are sampled exactly (mer_keras.baselines.lbp.plane_codes).",
           *_LBP_NOTES, *_HANDCRAFTED_NOTES),
)
_PRESETS["lbp_sip_svm"] = HandcraftedRecipe(
    name="lbp_sip_svm", paper="lbp_sip_2014", model=HANDCRAFTED_MODEL, trainer="handcrafted",
    features="lbp_sip", input="frames",
    feature_params=dict(blocks=(5, 5), radius=1, temporal_radius=1, n_frames=10),
    svm_c=1.0,
    notes=("LBP-SIP (ACCV 2014): the six intersection points of the LBP-TOP circles with four neighbours -- a "
           "4-bit spatial code (right, up, left, down at radius 1) and a 2-bit temporal code (previous and next "
           "frame); per block a 16-bin and a 4-bin histogram, each normalised; 5 * 5 * 20 = 500 values. Blocks "
           "5x5 as the LBP-TOP preset (open choice).", *_LBP_NOTES, *_HANDCRAFTED_NOTES),
)
_PRESETS["hoof_svm"] = HandcraftedRecipe(
    name="hoof_svm", paper="hoof_2009", model=HANDCRAFTED_MODEL, trainer="handcrafted",
    features="hoof", input="flow_stack",
    feature_params=dict(blocks=(5, 5), bins=8, magnitude_weighted=True),
    svm_c=1.0,
    notes=("HOOF (IEEE CVPR 2009) as a MER baseline: orientation histograms (8 bins over the full circle, bin j "
           "centred on 2 pi j / 8, image y down) of the cached TV-L1 flow onset -> apex, votes weighted by the flow "
           "magnitude, per block of a 5x5 grid, each normalised; 200 values. The paper's mirror folding of the "
           "angles and its per-frame histograms are not used (open choices: blocks, bins, full-circle bins).",
           "Input: the float (u, v, strain) of any flow cache (input='flow_stack', e.g. the 'off_tanet' preset); "
           "masked pixels (zero flow) cast no vote.", *_HANDCRAFTED_NOTES),
)
_PRESETS["bi_woof_svm"] = HandcraftedRecipe(
    name="bi_woof_svm", paper="bi_woof_2018", model=HANDCRAFTED_MODEL, trainer="handcrafted",
    features="bi_woof", input="flow_stack",
    feature_params=dict(blocks=(5, 5), bins=8),
    svm_c=1.0,
    notes=("Bi-WOOF (Signal Processing: Image Communication 2018): flow onset -> apex; per block an orientation "
           "histogram (8 bins) with magnitude-weighted votes (local weight), normalised, times the block's mean "
           "optical-strain magnitude (global weight); 5x5 blocks, 200 values (open choices: blocks and bins; the "
           "strain is the cache's).",
           "Input: the float (u, v, strain) of any flow cache (input='flow_stack').", *_HANDCRAFTED_NOTES),
)


def available_recipes() -> list[str]:
    """Registered recipe names, sorted (each has a ``.quick()`` variant, also reachable as ``"<name>-quick"``)."""
    return sorted(_PRESETS)


def get_recipe(name) -> Recipe:
    """The preset called ``name`` (a :class:`Recipe` passes through unchanged).

    ``"<name>-quick"`` returns ``get_recipe(name).quick()``. Unknown names raise ``KeyError``
    listing the available ones.
    """
    if isinstance(name, Recipe):
        return name
    key = str(name)
    quick = key.endswith("-quick")
    base = key[: -len("-quick")] if quick else key
    if base not in _PRESETS:
        raise KeyError(f"unknown recipe {key!r}; available: {', '.join(available_recipes())} (or '<name>-quick')")
    recipe = _PRESETS[base]
    return recipe.quick() if quick else recipe
