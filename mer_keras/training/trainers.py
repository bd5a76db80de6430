"""The trainer protocol: what a recipe kind does to a LOSO fold, one registered class per kind.

A trainer is built from a recipe and the run's options and does four things:

* ``prepare(data)`` -- once per run: read the data in the form the kind trains on and
  compute the fingerprint that goes into the run's config hash (:class:`Prepared`);
* ``fit(prepared, train_index, seed)`` -- train a fresh, seeded model on those indices
  only (normalisation and class balancing fitted on them) -> :class:`Fitted`;
* ``predict(fitted, index)`` -- scores of those samples with the fitted model;
* ``estimate_cost(prepared, folds)`` -- the work a run will do, for progress and estimates.

``fit_predict(prepared, fold, seed)`` is the fold the engine runs
(:func:`~mer_keras.training.loso.run_loso`, the executors, ``fit-final``, the experiment
runner and the benchmarks use only this protocol); it asserts that no subject is in both
the training and the test set. A kind whose backend trains K folds in one compiled step
(:attr:`Trainer.supports_vectorised`) also has ``fit_predict_many``.

Kinds: ``"single"`` (:class:`SingleStageTrainer`, every backend, vectorised on JAX);
``"two_stage"``, ``"transfer"`` and ``"handcrafted"`` (:class:`MultiStageTrainer`: their
own modules' fold functions, TensorFlow only for the two network kinds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import backends
from .datasets import LOSODataset
from .engine import (apply_normalisation, as_dataset, build_model, check_input_shape, dataset_fingerprint,
                     epoch_order, fit_normalisation, flip_copies, make_loss, make_optimizer, oversample, oversample_extra,
                     test_curve_point)
from .folds import Fold, assert_subject_disjoint
from .loop import Progress, TestCurve, Timing, run_epochs, schedule_hook
from .recipes import Recipe

_REGISTRY: dict[str, type] = {}


def register_trainer(kind: str) -> Callable[[type], type]:
    """Class decorator: the trainer of recipes with ``trainer=kind``."""
    def add(cls: type) -> type:
        _REGISTRY[kind] = cls
        cls.kind = kind
        return cls
    return add


def get_trainer(recipe: Recipe, **options) -> "Trainer":
    """The registered trainer of ``recipe.trainer``, built with the run's options."""
    if recipe.trainer not in _REGISTRY:
        raise KeyError(f"no trainer registered for kind {recipe.trainer!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[recipe.trainer](recipe, **options)


def trainer_kinds() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class Prepared:
    """What ``prepare`` read once per run: the data the folds index, its fingerprint, kind-specific extras."""

    data: Any
    fingerprint: dict
    extras: dict = field(default_factory=dict)


@dataclass
class Fitted:
    """A fitted fold: the Keras model (or other estimator), its history and info, kind-specific state."""

    model: Any
    history: dict
    info: dict
    state: dict = field(default_factory=dict)


class Trainer:
    """Base of the registered trainers (see the module docstring)."""

    kind = ""
    supports_vectorised = False

    def __init__(self, recipe: Recipe, *, record_test_curve: bool = False, progress: bool = False,
                 out_dir=None, hooks: Sequence = ()):
        self.recipe = recipe
        self.record_test_curve = bool(record_test_curve)
        self.progress = bool(progress)
        self.out_dir = out_dir
        self.hooks = tuple(hooks)  # extra epoch-loop hooks (mer_keras.training.loop), e.g. a benchmark's timer

    def prepare(self, data) -> Prepared:
        raise NotImplementedError

    def fit(self, prepared: Prepared, train_index, seed: int, *, mixed: bool = False, curve_index=None,
            position: int = 1, name: str = "fold") -> Fitted:
        raise NotImplementedError

    def predict(self, fitted: Fitted, prepared: Prepared, index) -> np.ndarray:
        raise NotImplementedError

    def estimate_cost(self, prepared: Prepared, folds: Sequence[Fold]) -> dict:
        """Training samples seen over the run (``sample_epochs``) and the folds' count."""
        epochs = int(getattr(self.recipe, "epochs", 1) or 1)
        return {"folds": len(folds), "sample_epochs": int(sum(len(f.train_index) for f in folds) * epochs)}

    def fit_predict(self, prepared: Prepared, fold: Fold, seed: int, *, mixed: bool = False,
                    position: int = 1) -> tuple[Any, np.ndarray, dict, dict]:
        """Train on ``fold``'s training subjects, score its test subject: ``(model, scores, history, info)``."""
        assert_subject_disjoint(prepared.data, fold.train_index, fold.test_index)
        fitted = self.fit(prepared, fold.train_index, seed, mixed=mixed, position=position, name=fold.name,
                          curve_index=fold.test_index if self.record_test_curve else None)
        scores = self.predict(fitted, prepared, fold.test_index)
        info = {**fitted.info, "n_test": int(len(fold.test_index))}
        return fitted.model, scores, fitted.history, info

    def fold_function(self, prepared: Prepared) -> "FoldFunction":
        """A picklable ``fold_fn`` for :func:`~mer_keras.training.executors.execute_folds`."""
        return FoldFunction(self)


@dataclass
class FoldFunction:
    """``fold_fn(data, fold, recipe, seed, ...)`` of the executors, calling the trainer's ``fit_predict``."""

    trainer: Trainer

    def __call__(self, data, fold, recipe, seed, *, mixed=False, record_test_curve=False, progress=False,
                 position=1):
        self.trainer.progress = bool(progress)
        prepared = data if isinstance(data, Prepared) else Prepared(data, {})
        return self.trainer.fit_predict(prepared, fold, seed, mixed=mixed, position=position)


# ----------------------------------------------------------------------------- single stage


@register_trainer("single")
class SingleStageTrainer(Trainer):
    """One network trained from scratch on single images (STSTNet, Off-TANet, ARFNet, the flow baselines).

    Every fold: the backend's seeds set from ``seed``, a fresh model from the recipe,
    normalisation and oversampling fitted on the training indices, ``recipe.epochs`` epochs
    of the backend's compiled epoch with the recipe's step schedule, the model after the
    last epoch kept. On JAX one compiled epoch (:class:`~.backends.jax.FoldProgram`) serves
    every fold of the run, and ``fit_predict_many`` trains K folds in one vectorised step.
    """

    def __init__(self, recipe: Recipe, **options):
        super().__init__(recipe, **options)
        self._program = None

    @property
    def supports_vectorised(self) -> bool:  # type: ignore[override]
        return bool(backends.get().supports_vectorised)

    def prepare(self, data) -> Prepared:
        dataset = as_dataset(data, self.recipe, progress=self.progress)
        check_input_shape(dataset, self.recipe)
        return Prepared(dataset, dataset_fingerprint(dataset))

    # -- pieces shared by the serial and vectorised paths

    def _start(self, seed: int):
        import keras

        if backends.name() != "jax":  # JAX folds share the run's compiled program and template model
            keras.backend.clear_session()
        backends.seed(seed)
        return np.random.default_rng(seed)

    def _fold_rows(self, data: LOSODataset, train_index, rng) -> tuple[np.ndarray, Any]:
        """Pool rows of the fold's (balanced) training set and its normalisation statistics."""
        recipe = self.recipe
        x_train = np.asarray(data.x[train_index], dtype=np.float32)
        stats = fit_normalisation(x_train, recipe.normalisation)
        rows = np.asarray(train_index, dtype=np.int64)
        if recipe.class_balancing == "oversample":
            extra = oversample_extra(data.y[train_index], rng)
            rows = np.concatenate([rows, len(data) + rows[extra]]) if len(extra) else rows
        return rows, stats

    def _jax_program(self, data: LOSODataset):
        if self._program is None:
            from .backends.jax import FoldProgram

            recipe = self.recipe
            pool_x = np.asarray(data.x, dtype=np.float32)
            pool_y = np.asarray(data.y)
            flip_from = None
            if recipe.class_balancing == "oversample":
                pool_x = np.concatenate([pool_x, flip_copies(pool_x, False)])
                pool_y = np.concatenate([pool_y, pool_y])
                flip_from = len(data) if recipe.input == "flow_stack" else None
            template = build_model(recipe, data.sample_shape, data.n_classes)
            self._program = FoldProgram(template, make_optimizer(recipe), make_loss(recipe, data.n_classes,
                                        per_sample=True), pool_x, pool_y, recipe.batch_size, flip_from=flip_from)
        return self._program

    def _stats_arrays(self, stats, channels: int) -> tuple[np.ndarray, np.ndarray]:
        if stats is None:
            return np.zeros(channels, np.float32), np.ones(channels, np.float32)
        return np.asarray(stats[0], np.float32), np.asarray(stats[1], np.float32)

    def _hooks(self, name: str, position: int, curve=None) -> tuple[list, Timing]:
        recipe = self.recipe
        timing = Timing()
        hooks = [schedule_hook(recipe.stages()["train"]), timing,
                 Progress(recipe.epochs, f"  {name}", enabled=self.progress, position=position)]
        if curve is not None:
            hooks.append(TestCurve(curve))
        return hooks + list(self.hooks), timing

    # -- protocol

    def fit(self, prepared: Prepared, train_index, seed: int, *, mixed: bool = False, curve_index=None,
            position: int = 1, name: str = "fold") -> Fitted:
        data: LOSODataset = prepared.data
        recipe = self.recipe
        train_index = np.asarray(train_index, dtype=np.int64)
        if backends.name() == "jax":
            self._jax_program(data)  # built before the fold's seeding, as in fit_predict_many
            return self._fit_jax(data, train_index, seed, self._start(seed), curve_index, position, name)
        rng = self._start(seed)
        x_train = np.asarray(data.x[train_index], dtype=np.float32)
        y_train = data.y[train_index]
        stats = fit_normalisation(x_train, recipe.normalisation)
        x_train = apply_normalisation(x_train, stats)
        if recipe.class_balancing == "oversample":
            x_train, y_train = oversample(x_train, y_train, rng, flip_u=recipe.input == "flow_stack")
        model = build_model(recipe, data.sample_shape, data.n_classes)
        trainer = backends.fold_trainer(model, make_optimizer(recipe), make_loss(recipe, data.n_classes), x_train,
                                        y_train, recipe.batch_size, mixed=mixed)
        curve = None
        if curve_index is not None:
            x_curve, y_curve = apply_normalisation(data.x[curve_index], stats), data.y[curve_index]
            curve = lambda: test_curve_point(trainer.predict(x_curve), y_curve, recipe.loss)  # noqa: E731
        hooks, timing = self._hooks(name, position, curve)
        n = len(y_train)

        def epoch(_, lr):
            loss, acc = trainer.train_epoch(epoch_order(rng, n, recipe.shuffle), lr)
            return {"loss": loss, "accuracy": acc}

        history = run_epochs(epoch, recipe.epochs, hooks, lr=recipe.lr)
        info = {**timing.info, "n_train": int(len(train_index)), "n_train_balanced": int(n), "seed": int(seed),
                "backend": backends.name(), "normalisation": _stats_json(stats)}
        return Fitted(model, history, info, {"stats": stats, "trainer": trainer})

    def _fit_jax(self, data, train_index, seed, rng, curve_index, position, name) -> Fitted:
        from .backends.jax import assign_state

        recipe = self.recipe
        program = self._jax_program(data)
        rows, stats = self._fold_rows(data, train_index, rng)
        model = build_model(recipe, data.sample_shape, data.n_classes)
        state = [program.init_state(model)]
        mean, std = self._stats_arrays(stats, data.sample_shape[-1])
        steps = program.steps_for(len(rows))
        curve = None
        if curve_index is not None:
            x_curve, y_curve = apply_normalisation(data.x[curve_index], stats), data.y[curve_index]
            curve = lambda: test_curve_point(program.predict(state[0], x_curve), y_curve, recipe.loss)  # noqa: E731
        hooks, timing = self._hooks(name, position, curve)

        def epoch(_, lr):
            idx, mask = program.batches(rows[epoch_order(rng, len(rows), recipe.shuffle)], steps)
            state[0], loss, acc = program.epoch(state[0], lr, idx, mask, mean, std)
            return {"loss": loss, "accuracy": acc}

        history = _floats(run_epochs(epoch, recipe.epochs, hooks, lr=recipe.lr))
        assign_state(model, state[0][0], state[0][1])
        info = {**timing.info, "n_train": int(len(train_index)), "n_train_balanced": int(len(rows)), "seed": int(seed),
                "backend": "jax", "normalisation": _stats_json(stats)}
        return Fitted(model, history, info, {"stats": stats, "jax_state": state[0]})

    def predict(self, fitted: Fitted, prepared: Prepared, index) -> np.ndarray:
        x = apply_normalisation(prepared.data.x[np.asarray(index, dtype=np.int64)], fitted.state.get("stats"))
        if "jax_state" in fitted.state:
            return self._program.predict(fitted.state["jax_state"], x)
        return fitted.state["trainer"].predict(x)

    # -- K folds in one compiled step (JAX)

    def fit_predict_many(self, prepared: Prepared, folds: Sequence[Fold], seeds: dict, *, steps: int | None = None,
                         position: int = 1):
        """Train ``folds`` together in one vectorised step; yields ``(fold, model, scores, history, info)``.

        Each fold keeps its own seeded model, optimiser state, BatchNorm statistics, dropout
        stream, normalisation and batches (the same batches as :meth:`fit` draws for it).
        """
        from .backends.jax import FoldProgram, assign_state

        data: LOSODataset = prepared.data
        recipe = self.recipe
        program = self._jax_program(data)
        plans = []
        for fold in folds:
            assert_subject_disjoint(data, fold.train_index, fold.test_index)
            rng = self._start(seeds[fold.name])
            rows, stats = self._fold_rows(data, np.asarray(fold.train_index, dtype=np.int64), rng)
            model = build_model(recipe, data.sample_shape, data.n_classes)
            plans.append({"fold": fold, "rng": rng, "rows": rows, "stats": stats, "model": model,
                          "state": program.init_state(model),
                          "norm": self._stats_arrays(stats, data.sample_shape[-1])})
        k = len(plans)
        steps = steps or max(program.steps_for(len(p["rows"])) for p in plans)
        if steps < max(program.steps_for(len(p["rows"])) for p in plans):
            raise ValueError(f"steps={steps} is fewer than the largest training set of the group needs")
        state = [FoldProgram.stack([p["state"] for p in plans])]
        mean = np.stack([p["norm"][0] for p in plans])
        std = np.stack([p["norm"][1] for p in plans])
        label = f"  {k} folds ({plans[0]['fold'].name}..{plans[-1]['fold'].name})"
        timing = Timing()
        hooks = [schedule_hook(recipe.stages()["train"]), timing,
                 Progress(recipe.epochs, label, enabled=self.progress, position=position), *self.hooks]
        if self.record_test_curve:
            curves = [(apply_normalisation(data.x[p["fold"].test_index], p["stats"]), data.y[p["fold"].test_index])
                      for p in plans]

            def point():
                each = [test_curve_point(program.predict(s, x), y, recipe.loss)
                        for s, (x, y) in zip(FoldProgram.unstack(state[0], k), curves)]
                return {key: [e[key] for e in each] for key in each[0]}

            hooks.append(TestCurve(point))

        def epoch(_, lr):
            batches = [program.batches(p["rows"][epoch_order(p["rng"], len(p["rows"]), recipe.shuffle)], steps)
                       for p in plans]
            idx = np.stack([b[0] for b in batches])
            mask = np.stack([b[1] for b in batches])
            state[0], loss, acc = program.vectorised_epoch(state[0], lr, idx, mask, mean, std)
            return {"loss": loss, "accuracy": acc}

        history = run_epochs(epoch, recipe.epochs, hooks, lr=recipe.lr)
        for i, (p, fold_state) in enumerate(zip(plans, FoldProgram.unstack(state[0], k))):
            fold = p["fold"]
            assign_state(p["model"], fold_state[0], fold_state[1])
            own = {key: [_fold_value(v, i) for v in values] for key, values in history.items()}
            x_test = apply_normalisation(data.x[fold.test_index], p["stats"])
            scores = program.predict(fold_state, x_test)
            info = {**timing.info, "n_train": int(len(fold.train_index)), "n_train_balanced": int(len(p["rows"])),
                    "n_test": int(len(fold.test_index)), "seed": int(seeds[fold.name]), "backend": "jax",
                    "vectorised_folds": k, "normalisation": _stats_json(p["stats"])}
            yield fold, p["model"], scores, own, info

    def vectorised_steps(self, prepared: Prepared, folds: Sequence[Fold]) -> int:
        """Mini-batches per epoch of every vectorised group: enough for the largest (balanced) training set."""
        data: LOSODataset = prepared.data
        program = self._jax_program(data)
        largest = max(len(f.train_index) for f in folds)
        if self.recipe.class_balancing == "oversample":
            largest = max(int(np.bincount(data.y[f.train_index]).max()) * data.n_classes for f in folds)
        return program.steps_for(largest)

    def vectorised_group_size(self, prepared: Prepared, folds: Sequence[Fold], requested) -> int:
        """Folds per vectorised step: ``requested`` (an int), or with ``"auto"`` as many as fit in memory.

        ``"auto"`` compiles the step for all folds and takes XLA's memory analysis of it;
        while that exceeds half of the device's free memory the group is halved (the
        compiled step is kept for training). A device that reports no memory (CPU) takes
        all folds.
        """
        n = len(folds)
        if requested != "auto":
            return max(1, min(int(requested), n))
        import jax

        program = self._jax_program(prepared.data)
        steps = self.vectorised_steps(prepared, folds)
        try:
            stats = jax.devices()[0].memory_stats() or {}
            free = stats["bytes_limit"] - stats["bytes_in_use"]
        except Exception:  # noqa: BLE001 - CPU devices report no memory statistics
            return n
        k = n
        while k > 1:
            needed = program.vectorised_bytes(k, steps, prepared.data.sample_shape[-1])
            if needed is None or needed <= 0.5 * free:
                break
            k = -(-k // 2)
        return k


def _stats_json(stats):
    return None if stats is None else {"mean": np.asarray(stats[0]).tolist(), "std": np.asarray(stats[1]).tolist()}


def _floats(history: dict) -> dict:
    return {k: [float(v) if not isinstance(v, (list, dict)) else v for v in values] for k, values in history.items()}


def _fold_value(value, i: int):
    if isinstance(value, list):
        return value[i]
    array = np.asarray(value)
    return float(array[i]) if array.ndim else float(array)


# ----------------------------------------------------------------------------- multi-stage kinds


NO_TEST_SUBJECT = "(no test subject)"
"""``test_subject`` of the fold :meth:`MultiStageTrainer.fit` runs: training subjects only, nothing scored."""


class MultiStageTrainer(Trainer):
    """A kind whose fold is its own module's fold function (two-stage, transfer, handcrafted).

    ``prepare`` calls the kind's ``*_inputs`` function once (data, fingerprint and fold
    function, whose ``extras["predict"](model, index)`` scores clips with a fitted model);
    ``fit_predict`` runs that fold function. ``fit`` runs it on a fold with no test clip
    (every selection the kind makes -- pre-training epoch, grid -- stays on inner splits of
    the training subjects) and ``predict`` scores any clips with the fitted model.
    """

    def fit(self, prepared: Prepared, train_index, seed: int, *, mixed: bool = False, curve_index=None,
            position: int = 1, name: str = "fold") -> Fitted:
        if curve_index is not None:
            raise ValueError(f"a test curve is not available for {self.kind} recipes")
        fold = Fold(name=name, test_subject=NO_TEST_SUBJECT, train_index=np.asarray(train_index, dtype=np.int64),
                    test_index=np.empty(0, dtype=np.int64))
        model, _, history, info = prepared.extras["fold_fn"](prepared.data, fold, self.recipe, seed, mixed=mixed,
                                                             progress=self.progress, position=position)
        return Fitted(model, history, {k: v for k, v in info.items() if not k.startswith("n_test")})

    def predict(self, fitted: Fitted, prepared: Prepared, index) -> np.ndarray:
        return prepared.extras["predict"](fitted.model, np.asarray(index, dtype=np.int64))

    def _inputs(self, data):
        raise NotImplementedError

    def prepare(self, data) -> Prepared:
        data, fingerprint, fold_fn = self._inputs(data)
        return Prepared(data, fingerprint, {**getattr(fold_fn, "extras", {}), "fold_fn": fold_fn})

    def fit_predict(self, prepared: Prepared, fold: Fold, seed: int, *, mixed: bool = False, position: int = 1):
        assert_subject_disjoint(_subject_source(prepared.data), fold.train_index, fold.test_index)
        return prepared.extras["fold_fn"](prepared.data, fold, self.recipe, seed, mixed=mixed,
                                          record_test_curve=self.record_test_curve, progress=self.progress,
                                          position=position)

    def fold_function(self, prepared: Prepared):
        return prepared.extras["fold_fn"]

    def estimate_cost(self, prepared: Prepared, folds: Sequence[Fold]) -> dict:
        cost = super().estimate_cost(prepared, folds)
        epochs = int(getattr(self.recipe, "pretrain_epochs", 0) or 0) if getattr(self.recipe, "pretrain", False) else 0
        cost["sample_epochs"] += int(sum(len(f.train_index) for f in folds) * epochs)
        return cost


def _subject_source(data):
    """The object whose ``subjects`` the fold indices refer to (a dataset, or the first of a pair)."""
    return data[0] if isinstance(data, (tuple, list)) else data


@register_trainer("two_stage")
class TwoStageTrainer(MultiStageTrainer):
    """The ShuffleNetV2-SVM two-stage fold (:mod:`mer_keras.training.two_stage`)."""

    def _inputs(self, data):
        from .two_stage import two_stage_inputs

        return two_stage_inputs(data, self.recipe, progress=self.progress, record_test_curve=self.record_test_curve,
                                hooks=self.hooks)


@register_trainer("transfer")
class TransferTrainer(MultiStageTrainer):
    """The MobileViT macro-to-micro transfer fold (:mod:`mer_keras.training.transfer`)."""

    def _inputs(self, data):
        if self.hooks:
            raise ValueError("extra epoch hooks are not passed to the transfer recipe's loops")
        from .transfer import transfer_inputs

        return transfer_inputs(data, self.recipe, out_dir=self.out_dir, progress=self.progress,
                               record_test_curve=self.record_test_curve)


@register_trainer("handcrafted")
class HandcraftedTrainer(MultiStageTrainer):
    """Handcrafted features + linear SVM per fold (:mod:`mer_keras.training.handcrafted`)."""

    def _inputs(self, data):
        from .handcrafted import handcrafted_inputs

        return handcrafted_inputs(data, self.recipe, progress=self.progress, record_test_curve=self.record_test_curve)

    def fit(self, prepared: Prepared, train_index, seed: int, *, mixed: bool = False, curve_index=None,
            position: int = 1, name: str = "fold") -> Fitted:
        from .handcrafted import fit_handcrafted

        if curve_index is not None:
            raise ValueError("a test curve is not available for handcrafted recipes (nothing is trained by epochs)")
        model, history, info = fit_handcrafted(prepared.data, train_index, self.recipe, seed)
        return Fitted(model, history, info)

    def predict(self, fitted: Fitted, prepared: Prepared, index) -> np.ndarray:
        from .handcrafted import predict_handcrafted

        return predict_handcrafted(fitted.model, prepared.data, index)


__all__ = ["NO_TEST_SUBJECT", "FoldFunction", "Fitted", "MultiStageTrainer", "Prepared", "SingleStageTrainer", "Trainer", "get_trainer",
           "register_trainer", "trainer_kinds"]
