"""The engine's one epoch loop, with hooks.

:func:`run_epochs` calls ``train_epoch(epoch, lr)`` once per epoch and lets hooks set the
learning rate before an epoch and see its logs after it. The logs of one fold are floats;
those of K folds trained in one vectorised step are arrays with one value per fold (the
loop and the hooks do not care which). Hooks:

* :class:`StepSchedule` -- ``lr * gamma ** (epoch // step)`` (PyTorch ``StepLR`` stepped once
  per epoch; constant without a step);
* :class:`PlateauSchedule` -- Keras ``ReduceLROnPlateau`` semantics on one or more
  monitored training quantities (one counter each);
* :class:`Timing` -- first-epoch time (it includes tracing/compiling the step) and the
  steady time per epoch;
* :class:`Progress` -- a tqdm bar over epochs;
* :class:`Validation` -- loss, accuracy and UF1 on an inner validation split of the
  training subjects after every epoch (``val_*``);
* :class:`KeepBest` -- keeps the weights of the best epoch by a key of the logs (for
  example the validation UF1) and restores them at the end (``best_epoch``);
* :class:`TestCurve` -- the left-out subject's loss/accuracy/labels after every epoch, for
  analysis only: it is recorded under ``test_curve_*`` and never selects an epoch;
* :class:`EpochTimer` -- wall time and samples of every epoch, with the loop's label (for
  benchmarks; ``probe()`` may add a reading such as the peak memory).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np


class Hook:
    """Base hook: every method is optional."""

    def on_epoch_begin(self, epoch: int, label: str) -> None:
        pass

    def learning_rate(self, epoch: int, lr: float) -> float:
        return lr

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        pass

    def on_train_end(self, history: dict) -> None:
        pass


class StepSchedule(Hook):
    """``base * gamma ** (epoch // step)``; constant when ``step`` is None."""

    def __init__(self, base: float, step: int | None = None, gamma: float = 1.0):
        self.base, self.step, self.gamma = float(base), step, float(gamma)

    def learning_rate(self, epoch: int, lr: float) -> float:
        if self.step is None:
            return self.base
        return self.base * self.gamma ** (epoch // int(self.step))


class PlateauSchedule(Hook):
    """Reduce the learning rate when monitored training quantities stop improving (Keras semantics).

    One counter per monitored name (``"loss"`` improves downwards, ``"accuracy"``
    upwards, by more than ``min_delta``); a counter reaching ``patience`` multiplies the
    learning rate by ``factor`` (not below ``min_lr``) and restarts.
    """

    def __init__(self, lr: float, monitor: Sequence[str] = ("loss",), factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, min_lr: float = 0.0):
        self.lr, self.monitor = float(lr), tuple(monitor)
        self.factor, self.patience, self.min_delta, self.min_lr = float(factor), int(patience), float(min_delta), float(min_lr)
        self.best = {m: None for m in self.monitor}
        self.wait = {m: 0 for m in self.monitor}

    def learning_rate(self, epoch: int, lr: float) -> float:
        return self.lr

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        self.step(**{name: logs[name] for name in self.monitor})

    def step(self, **values: float) -> float:
        """Update with this epoch's values; returns the learning rate for the next epoch."""
        for name in self.monitor:
            value = float(values[name])
            best = self.best[name]
            better = best is None or (value < best - self.min_delta if name == "loss" else value > best + self.min_delta)
            if better:
                self.best[name], self.wait[name] = value, 0
                continue
            self.wait[name] += 1
            if self.wait[name] >= self.patience:
                self.lr = max(self.lr * self.factor, self.min_lr)
                self.wait[name] = 0
        return self.lr


class Timing(Hook):
    """``first_epoch_s`` (tracing included), ``train_s`` and the steady ``ms_per_epoch``."""

    def __init__(self):
        self.start = self.first_done = time.perf_counter()
        self.epochs = 0
        self.info: dict = {}

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        self.epochs += 1
        if self.epochs == 1:
            _materialise(logs)  # an asynchronous backend has finished the epoch (and its compilation)
            self.first_done = time.perf_counter()

    def on_train_end(self, history: dict) -> None:
        _materialise({k: v[-1] for k, v in history.items() if isinstance(v, list) and v})
        end = time.perf_counter()
        train_s = end - self.start
        steady = (end - self.first_done) / (self.epochs - 1) if self.epochs > 1 else train_s
        self.info = {"train_s": round(train_s, 3), "first_epoch_s": round(self.first_done - self.start, 3),
                     "ms_per_epoch": round(1e3 * steady, 3)}


def _materialise(logs: dict) -> None:
    """Wait for the values of ``logs`` (device arrays of an asynchronous backend) to exist."""
    for value in logs.values():
        if not isinstance(value, (list, dict, str)):
            np.asarray(value)


class Progress(Hook):
    """A tqdm bar over epochs (the loss shown at most about once a second)."""

    def __init__(self, epochs: int, desc: str, *, enabled: bool = True, position: int = 1, show=("loss",)):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False, position=position, disable=not enabled)
        self.enabled, self.shown, self.show = enabled, 0.0, tuple(show)

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if self.enabled and now - self.shown > 1.0:
            self.bar.set_postfix({k: f"{float(np.mean(logs[k])):.4f}" for k in self.show if k in logs}, refresh=False)
            self.shown = now

    def on_train_end(self, history: dict) -> None:
        self.bar.close()


class TestCurve(Hook):
    """After every epoch, ``point()`` -> ``{"loss", "accuracy", "y_pred"}`` stored as ``test_curve_*`` (analysis only)."""

    def __init__(self, point: Callable[[], dict]):
        self.point = point

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        for key, value in self.point().items():
            history.setdefault(f"test_curve_{key}", []).append(value)


class Validation(Hook):
    """``val_loss``, ``val_accuracy`` and ``val_uf1`` of ``predict(x_val)`` after every epoch (into the logs too).

    ``loss`` is the recipe's loss name (:func:`~mer_keras.training.engine.test_curve_point`);
    the split holds training subjects only, never the test subject.
    """

    def __init__(self, predict: Callable, x_val, y_val, loss: str):
        self.predict, self.x_val, self.y_val, self.loss = predict, x_val, np.asarray(y_val), loss

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        from .engine import test_curve_point, validation_uf1

        point = test_curve_point(self.predict(self.x_val), self.y_val, self.loss)
        values = {"val_loss": point["loss"], "val_accuracy": point["accuracy"],
                  "val_uf1": validation_uf1(self.y_val, point["y_pred"])}
        logs.update(values)
        for key, value in values.items():
            history.setdefault(key, []).append(value)


class KeepBest(Hook):
    """Keep ``model``'s weights of the epoch with the largest ``key(logs)``; restore them at the end.

    Ties keep the earlier epoch. ``best_epoch`` (0-based) is set on the hook and in the
    history.
    """

    def __init__(self, model, key: Callable[[dict], tuple]):
        self.model, self.key = model, key
        self.best_key, self.best_epoch, self.best_weights = None, -1, None

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        key = self.key(logs)
        if self.best_key is None or key > self.best_key:
            self.best_key, self.best_epoch = key, epoch
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
            history["best_epoch"] = epoch

    def on_train_end(self, history: dict) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class EpochCallback(Hook):
    """Calls ``fn(epoch)`` after every epoch (tests and notebooks watch training through it)."""

    def __init__(self, fn: Callable[[int], None]):
        self.fn = fn

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        self.fn(epoch)


class EpochTimer(Hook):
    """``records``: one ``{"label", "epoch", "s", "n", **probe()}`` per epoch (``n`` from the logs' ``n_samples``)."""

    def __init__(self, probe: Callable[[], dict] | None = None):
        self.probe = probe
        self.records: list[dict] = []
        self._start, self._label = 0.0, ""

    def on_epoch_begin(self, epoch: int, label: str) -> None:
        self._start, self._label = time.perf_counter(), label

    def on_epoch_end(self, epoch: int, logs: dict, history: dict) -> None:
        _materialise({"loss": logs.get("loss", 0.0)})
        record = {"label": self._label, "epoch": epoch, "s": time.perf_counter() - self._start,
                  "n": int(logs.get("n_samples", 0))}
        if self.probe is not None:
            record.update(self.probe())
        self.records.append(record)


def schedule_hook(stage) -> Hook:
    """The learning-rate hook of a recipe stage (:class:`~mer_keras.training.recipes.Stage`):
    :class:`StepSchedule` for ``"constant"`` and ``"step"``, :class:`PlateauSchedule` for ``"plateau"``."""
    schedule = dict(stage.schedule)
    kind = schedule["kind"]
    if kind == "constant":
        return StepSchedule(stage.lr)
    if kind == "step":
        return StepSchedule(stage.lr, int(schedule["step"]), float(schedule["gamma"]))
    if kind == "plateau":
        return PlateauSchedule(stage.lr, tuple(schedule["monitor"]), schedule["factor"], schedule["patience"],
                               schedule["min_delta"], schedule["min_lr"])
    raise ValueError(f"unknown schedule kind {kind!r}")


def run_epochs(train_epoch: Callable[[int, float], dict], epochs: int, hooks: Sequence[Hook], *,
               lr: float, label: str = "train") -> dict:
    """Train ``epochs`` epochs; returns the history ``{"loss": [...], "accuracy": [...], "lr": [...], ...}``.

    ``train_epoch(epoch, lr)`` returns the epoch's logs (at least ``loss`` and
    ``accuracy``); hooks see them in order after each epoch (a hook may add to them).
    ``label`` names the loop for the hooks (e.g. ``"pretrain"``).
    """
    history: dict[str, list] = {"loss": [], "accuracy": [], "lr": []}
    for epoch in range(int(epochs)):
        for hook in hooks:
            hook.on_epoch_begin(epoch, label)
        for hook in hooks:
            lr = hook.learning_rate(epoch, lr)
        logs = dict(train_epoch(epoch, lr))
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        history["lr"].append(lr)
        for hook in hooks:
            hook.on_epoch_end(epoch, logs, history)
    for hook in hooks:
        hook.on_train_end(history)
    return history


__all__ = ["EpochCallback", "EpochTimer", "Hook", "KeepBest", "PlateauSchedule", "Progress", "StepSchedule", "TestCurve",
           "Timing", "Validation", "run_epochs", "schedule_hook"]
