"""Training recipes: one frozen preset per paper, selected by name by the LOSO engine and the CLI.

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

``recipe.quick()`` gives a short variant (few epochs, same everything else) for tests and
CI; it is never a paper setting. When a paper value is found to make training collapse,
the paper preset stays as it is and a documented corrected preset is registered beside
it (none is needed so far).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

LOSSES = ("cross_entropy", "multi_margin")
NORMALISATIONS = (None, "per_channel")
CLASS_BALANCING = (None, "oversample")
OPTIMIZERS = ("adam", "sgd")


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
        notes: how every value was chosen (paper, official code, or an open choice).
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))
        object.__setattr__(self, "optimizer_kwargs", dict(self.optimizer_kwargs))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        object.__setattr__(self, "notes", tuple(self.notes))
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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"recipe {self.name!r}: {message}")

    # ------------------------------------------------------------------ variants

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (validated); unknown field names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)

    def quick(self, epochs: int = 4) -> "Recipe":
        """A short variant for tests and CI: ``epochs`` epochs (default 4), the step decay
        scaled to the same fraction of training, everything else unchanged. Not a paper setting."""
        step = None if self.lr_step is None else max(1, round(self.lr_step * epochs / self.epochs))
        note = f"quick variant of {self.name!r}: {epochs} epochs instead of {self.epochs} (tests/CI, not a paper setting)"
        return self.replace(name=f"{self.name}-quick", epochs=int(epochs), lr_step=step, notes=(*self.notes, note))

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` (PyTorch ``StepLR`` semantics)."""
        if self.lr_step is None:
            return float(self.lr)
        return float(self.lr * self.lr_gamma ** (int(epoch) // int(self.lr_step)))

    def to_dict(self) -> dict:
        """Plain JSON-ready fields (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["input_size"] = list(self.input_size)
        out["notes"] = list(self.notes)
        return out


# ----------------------------------------------------------------------------- presets

_OFF_TANET_TRAINING = dict(
    input="flow_stack",
    input_size=(112, 112, 3),
    optimizer="adam",
    lr=1e-3,
    optimizer_kwargs=dict(epsilon=1e-8),
    lr_step=60,
    lr_gamma=0.3,
    epochs=201,
    batch_size=64,
    loss="cross_entropy",
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
)

_PRESETS: dict[str, Recipe] = {
    "ststnet": Recipe(
        name="ststnet",
        paper="ststnet_original_code",
        model="ststnet",
        model_kwargs=dict(variant="original"),
        input="flow_image",
        input_size=(28, 28, 3),
        optimizer="adam",
        lr=5e-5,
        optimizer_kwargs=dict(epsilon=1e-8),
        lr_step=None,
        epochs=800,
        batch_size=256,
        loss="cross_entropy",
        notes=(
            "Adam lr 5e-5, batch 256, 800 epochs, cross-entropy, constant lr, last epoch evaluated: the "
            "original STSTNet code.",
            "Adam betas/eps and weight decay: PyTorch defaults (epsilon 1e-8, no decay).",
            "Input: 28x28x3 (u, v, strain) images with pixel values 0..255 as the code reads them with "
            "cv2.imread, i.e. the cache's uint8 'flow_image' (prepare preset 'ststnet') or the MEGC2019 "
            "folders; fed unscaled (no normalisation), as in the code.",
            "Model: the original code's network (variant='original', 1,683 parameters, dropout 0.5).",
            "No augmentation and no class balancing (none in the code); shuffled batches, last partial "
            "batch kept.",
        ),
    ),
    "off_tanet": Recipe(
        name="off_tanet",
        paper="off_tanet_official_code",
        model="off_tanet",
        model_kwargs=dict(block="triplet"),
        notes=_OFF_TANET_NOTES,
        **_OFF_TANET_TRAINING,
    ),
    "arfnet": Recipe(
        name="arfnet",
        paper="arfnet_2022",
        model="arfnet",
        model_kwargs=dict(self_attention=True, position_encoding=True, heads=4),
        notes=("ARFNet states the same input, training and LOSO protocol as Off-TANet; the values below "
               "are Off-TANet's official ones.", *_OFF_TANET_NOTES),
        **_OFF_TANET_TRAINING,
    ),
}


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
