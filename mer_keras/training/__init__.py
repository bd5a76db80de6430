"""Leave-one-subject-out training: datasets, folds and resumable per-fold results.

* :mod:`.datasets` -- :class:`LOSODataset` (from arrays, a prepared cache or MEGC2019
  LOSO folders) and the frame <-> clip mapping of frame-level recipes;
* :mod:`.folds` -- :func:`loso_folds`, :func:`assert_subject_disjoint`,
  :func:`inner_split` (validation by subject) and :func:`balanced_indices`;
* :mod:`.store` -- :class:`FoldStore`, the atomic, config-checked per-fold results of a run;
* :mod:`.recipes` -- :class:`Recipe` presets per paper (:func:`get_recipe`, :func:`available_recipes`);
* :mod:`.engine` -- the building blocks every trainer shares (seeds, dataset forms,
  normalisation, balancing, model/loss/optimiser of a recipe, validation UF1);
* :mod:`.trainers` -- the trainer protocol (prepare, fit, predict, estimate cost), one
  registered class per recipe kind (:func:`get_trainer`);
* :mod:`.loop` -- the one epoch loop and its hooks (schedules, timing, progress, test curve);
* :mod:`.backends` -- backend-specific training code, one module per Keras backend;
* :mod:`.loso` -- :func:`run_loso`, the LOSO engine (fresh seeded model per fold, resumable);
* :mod:`.two_stage` -- the ShuffleNetV2-SVM two-stage fold (flow pre-training, down-sampling
  layer reload, frame training; :func:`train_fold_two_stage`), run by :func:`run_loso` for
  recipes with ``trainer="two_stage"``;
* :mod:`.transfer` -- the MobileViT macro-to-micro transfer recipe (stage 1 on macro-expressions
  once per run, per-fold KerasTuner grid search on training subjects, gradual unfreezing;
  :func:`train_fold_transfer`), run by :func:`run_loso` for recipes with ``trainer="transfer"``;
* :mod:`.handcrafted` -- the handcrafted baselines (LBP-TOP, LBP-SIP, HOOF, Bi-WOOF features of
  :mod:`mer_keras.baselines`, computed once per run, and a linear SVM per fold on the training
  subjects; :func:`~.handcrafted.train_fold_handcrafted`), run by :func:`run_loso` for recipes
  with ``trainer="handcrafted"``;
* :mod:`.executors` / :mod:`.runtime` -- where folds train (in-process, as one-thread fold
  processes side by side, or as Ray tasks; :func:`execute_folds`) and under which device,
  precision and determinism settings (the backend's context);
* :mod:`.bench` -- the training benchmarks (``mer-keras bench train``: the engine beside the
  PyTorch reference loops of :mod:`.reference_torch`).
"""

from .datasets import INPUT_KINDS, FolderLayoutError, LOSODataset, clip_scores, megc_source
from .folds import Fold, LeakageError, assert_subject_disjoint, balanced_indices, fold_name, inner_split, loso_folds
from .executors import EXECUTORS, execute_folds
from .engine import resolve_recipe, seed_for
from .loso import run_loso
from .trainers import Trainer, get_trainer, register_trainer, trainer_kinds
from .recipes import Recipe, available_recipes, get_recipe
from .two_stage import load_two_stage_data, pretrain_fold, train_fold_two_stage
from .transfer import load_transfer_data, pretrain_macro, train_fold_transfer, transfer_inputs
from .store import (
    PREDICTION_COLUMNS,
    ConfigMismatchError,
    FoldStore,
    atomic_write_text,
    config_hash,
    prediction_frame,
    safe_name,
)

__all__ = [
    "EXECUTORS",
    "INPUT_KINDS",
    "PREDICTION_COLUMNS",
    "ConfigMismatchError",
    "Fold",
    "FolderLayoutError",
    "FoldStore",
    "LOSODataset",
    "LeakageError",
    "Recipe",
    "assert_subject_disjoint",
    "atomic_write_text",
    "available_recipes",
    "balanced_indices",
    "clip_scores",
    "config_hash",
    "execute_folds",
    "fold_name",
    "get_recipe",
    "get_trainer",
    "inner_split",
    "load_transfer_data",
    "load_two_stage_data",
    "loso_folds",
    "megc_source",
    "prediction_frame",
    "pretrain_fold",
    "pretrain_macro",
    "register_trainer",
    "resolve_recipe",
    "run_loso",
    "safe_name",
    "seed_for",
    "train_fold_transfer",
    "train_fold_two_stage",
    "Trainer",
    "trainer_kinds",
    "transfer_inputs",
]
