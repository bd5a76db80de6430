"""Engine v2: the trainer protocol, the backends, vectorised folds, and the structure of mer_keras/training.

* every recipe kind trains a tiny LOSO under TensorFlow, JAX and PyTorch (one subprocess per
  backend: the backend is fixed when Keras is imported) with artefacts and reports of the
  same form, and training on JAX or PyTorch imports neither TensorFlow nor dlib;
* K folds trained in one vectorised step (JAX) give the serial run's predictions;
* the training package has no import circle and no module imports another's private name;
* a recipe's notes are not part of a run's hash; the protocol fits on every subject
  without a placeholder test subject; the epoch loop's hooks.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINING = ROOT / "mer_keras" / "training"


# ----------------------------------------------------------------------------- structure


def _imports(path: Path):
    """``(module, names, level)`` of every ``from ... import ...`` in a file (function-level ones too).

    Imports under ``if TYPE_CHECKING:`` run only for type checkers and are left out.
    """
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for b in node.body for n in ast.walk(b)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and id(node) not in typing_only:
            yield node.module or "", [a.name for a in node.names], node.level


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(path: Path, module: str, level: int) -> str:
    if level == 0:
        return module
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in sorted((ROOT / "mer_keras").rglob("*.py")):
        for module, names, level in _imports(path):
            target = _target(path, module, level)
            if not target.startswith("mer_keras"):
                continue
            offenders += [f"{path.relative_to(ROOT)}: from {target} import {n}" for n in names
                          if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_training_package_has_no_import_circle():
    graph: dict[str, set] = {}
    for path in sorted(TRAINING.rglob("*.py")):
        name = _module_name(path)
        graph[name] = set()
        for module, names, level in _imports(path):
            target = _target(path, module, level)
            if not target.startswith("mer_keras.training"):
                continue
            for n in names:  # "from . import backends" names a module
                candidate = f"{target}.{n}"
                graph[name].add(candidate if (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists()
                                or (ROOT / Path(*candidate.split(".")) / "__init__.py").exists() else target)
    graph = {k: {t for t in v if t in graph and t != k and t != "mer_keras.training"} for k, v in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "mer_keras.training.trainers" in graph and "mer_keras.training.backends.jax" in graph


def test_every_recipe_kind_has_a_registered_trainer():
    from mer_keras.training import available_recipes, get_recipe, get_trainer, trainer_kinds
    from mer_keras.training.trainers import MultiStageTrainer, SingleStageTrainer

    assert trainer_kinds() == ["handcrafted", "single", "transfer", "two_stage"]
    for name in available_recipes():
        recipe = get_recipe(name)
        trainer = get_trainer(recipe)
        assert trainer.kind == recipe.trainer
        assert isinstance(trainer, SingleStageTrainer if recipe.trainer == "single" else MultiStageTrainer)


# ----------------------------------------------------------------------------- protocol and loop


def _tiny(n_subjects=3, per_subject=6, size=28, seed=0):
    rng = np.random.default_rng(seed)
    n = n_subjects * per_subject
    y = np.tile(np.arange(3), n)[:n]
    x = rng.normal(0.0, 1.0, (n, size, size, 3)).astype(np.float32)
    x[..., 0] += (y[:, None, None] - 1).astype(np.float32)
    return x, y, np.repeat([f"s{i}" for i in range(n_subjects)], per_subject)


def test_fit_on_every_subject_without_a_placeholder_then_predict():
    from mer_keras.training import get_recipe, get_trainer

    trainer = get_trainer(get_recipe("ststnet").replace(epochs=2, batch_size=8))
    prepared = trainer.prepare(_tiny())
    every = np.arange(len(prepared.data))
    fitted = trainer.fit(prepared, every, seed=7)
    assert fitted.info["n_train"] == len(every) and len(fitted.history["loss"]) == 2
    scores = trainer.predict(fitted, prepared, every[:5])
    assert scores.shape == (5, 3) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_editing_a_recipes_notes_keeps_finished_folds(tmp_path):
    from mer_keras.training import get_recipe, run_loso

    recipe = get_recipe("ststnet").replace(epochs=1, batch_size=8)
    first = run_loso(_tiny(), recipe, tmp_path, progress=False)
    assert len(first.config["run"]["trained_folds"]) == 3
    again = run_loso(_tiny(), recipe.replace(notes=("an edited note",)), tmp_path, progress=False)
    assert again.config["run"]["trained_folds"] == [] and len(again.config["run"]["reused_folds"]) == 3
    changed = run_loso(_tiny(), recipe.replace(lr=2e-3), tmp_path, progress=False, overwrite=True)
    assert len(changed.config["run"]["trained_folds"]) == 3  # a value that changes numbers does invalidate


def test_recipes_are_a_trainer_kind_plus_stages():
    from mer_keras.training import available_recipes, get_recipe
    from mer_keras.training.loop import PlateauSchedule, StepSchedule, schedule_hook
    from mer_keras.training.recipes import STAGE_NAMES, Recipe, Stage

    kept = ("input", "input_size", "model_kwargs", "normalisation", "class_balancing", "label_smoothing", "notes")
    multi = ("head", "val_fraction", "flip_classes", "grid", "unfreeze_fraction", "max_shift", "jitter_prob",
             "jitter_max")
    for name in available_recipes():
        recipe = get_recipe(name)
        stages = recipe.stages()
        assert tuple(stages) == (STAGE_NAMES[recipe.trainer] if recipe.pretrain or recipe.trainer == "single"
                                 else STAGE_NAMES[recipe.trainer][1:])
        if recipe.trainer == "handcrafted":
            continue
        fields = {k: getattr(recipe, k) for k in kept + (multi if recipe.trainer != "single" else ())}
        again = Recipe.compose(name=name, paper=recipe.paper, model=recipe.model, trainer=recipe.trainer,
                               stages=stages, **fields)
        assert again == recipe and again.config_dict() == recipe.config_dict()
    off = get_recipe("off_tanet").stages()["train"]
    assert off.schedule == {"kind": "step", "step": 60, "gamma": 0.3} and off.init == "pytorch"
    hook = schedule_hook(off)
    assert isinstance(hook, StepSchedule) and hook.base == 1e-3
    two = get_recipe("shufflenet_svm").stages()
    assert two["pretrain"].select == "best_val_uf1" and two["train"].loss == "multi_margin"
    assert isinstance(schedule_hook(two["train"]), PlateauSchedule)
    pre = get_recipe("mobilevit_transfer").stage("pretrain")
    assert (pre.optimizer, pre.lr, pre.batch_size, pre.head) == ("sgd", 0.01, 32, "softmax")
    with pytest.raises(ValueError, match="has no stage"):
        get_recipe("ststnet").stage("pretrain")
    with pytest.raises(ValueError, match="stages"):
        Recipe.compose(name="x", paper="p", model="ststnet", stages={"pretrain": Stage(), "train": Stage()})
    with pytest.raises(ValueError, match="belong to a stage"):
        Recipe.compose(name="x", paper="p", model="ststnet", stages={"train": Stage()}, lr=0.1)
    with pytest.raises(ValueError, match="cannot be expressed"):  # two-stage pre-training uses stage 2's optimiser
        Recipe.compose(name="x", paper="p", model="shufflenet_v2", trainer="two_stage", head="svm",
                       input="frames", input_size=(48, 48, 3),
                       stages={"pretrain": Stage(optimizer="sgd", select="best_val_uf1"),
                               "train": Stage(loss="multi_margin", schedule={"kind": "plateau", "monitor": ["loss"],
                                              "factor": 0.1, "patience": 2, "min_delta": 0.0, "min_lr": 0.0})})
    with pytest.raises(ValueError, match="schedule kind"):
        Stage(schedule={"kind": "cosine"})


def test_vectorise_folds_is_refused_where_it_cannot_run():
    from mer_keras.training import run_loso

    with pytest.raises(ValueError, match="KERAS_BACKEND=jax|integer"):
        run_loso(_tiny(), "ststnet", progress=False, epochs=1, vectorise_folds=4)


def test_loop_hooks_schedules_keep_best_and_timing():
    from mer_keras.training.loop import KeepBest, PlateauSchedule, StepSchedule, Timing, run_epochs

    class Model:
        def __init__(self):
            self.w = [np.zeros(1)]

        def get_weights(self):
            return [w.copy() for w in self.w]

        def set_weights(self, ws):
            self.w = [np.asarray(w).copy() for w in ws]

    model = Model()
    scores = [0.1, 0.5, 0.4, 0.5, 0.2]

    def epoch(e, lr):
        model.w = [np.full(1, float(e))]
        return {"loss": 1.0, "accuracy": 0.5, "score": scores[e]}

    best, timing = KeepBest(model, key=lambda logs: (logs["score"],)), Timing()
    history = run_epochs(epoch, 5, [StepSchedule(1.0, step=2, gamma=0.5), best, timing], lr=1.0)
    assert history["lr"] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert best.best_epoch == 1 and history["best_epoch"] == 1 and model.w[0][0] == 1.0  # ties keep the earlier
    assert set(timing.info) == {"train_s", "first_epoch_s", "ms_per_epoch"}
    plateau = PlateauSchedule(1.0, monitor=("loss",), factor=0.1, patience=2)
    history = run_epochs(lambda e, lr: {"loss": 1.0, "accuracy": 0.0}, 6, [plateau], lr=1.0)
    assert history["lr"] == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1, 0.01])


# ----------------------------------------------------------------------------- backends (subprocesses)


@pytest.fixture(scope="module")
def two_stage_cache(shufflenet_cache_48):
    return shufflenet_cache_48


def _run_backend(backend: str, out: Path, *extra: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "backend_run.py"), backend, str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=1200, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(row for row in done.stdout.splitlines() if row.startswith("SUMMARY "))
    return json.loads(line[len("SUMMARY "):])


@pytest.fixture(scope="module")
def backend_runs(two_stage_cache, tmp_path_factory):
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("backends")
    runs = {"tensorflow": _run_backend("tensorflow", out / "tensorflow", str(two_stage_cache)),
            "jax": _run_backend("jax", out / "jax", str(two_stage_cache), "--vectorised")}
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        runs["torch"] = _run_backend("torch", out / "torch")
    return runs


@pytest.mark.slow
def test_every_kind_trains_on_every_backend_with_the_same_artefacts(backend_runs):
    reference = backend_runs["tensorflow"]
    assert set(reference) >= {"single", "handcrafted", "two_stage"}
    for backend, runs in backend_runs.items():
        for kind, form in runs.items():
            if kind in ("modules", "vectorised"):
                continue
            assert form["backend"] == backend, (backend, kind)
            expected = reference[kind]
            for key in ("top_files", "fold_files", "folds", "report_keys"):
                assert form[key] == expected[key], (backend, kind, key)
            assert 0.0 <= form["uf1"] <= 1.0
    assert "torch" not in backend_runs or set(backend_runs["torch"]) >= {"single", "handcrafted"}


@pytest.mark.slow
def test_training_on_jax_or_torch_imports_neither_tensorflow_nor_dlib(backend_runs):
    for backend in ("jax", "torch"):
        if backend in backend_runs:
            assert backend_runs[backend]["modules"] == {"tensorflow": False, "dlib": False}, backend


@pytest.mark.slow
def test_vectorised_folds_give_the_serial_predictions(backend_runs):
    for name, result in backend_runs["jax"]["vectorised"].items():
        assert result["n_folds"] == 4 and result["folds_per_step"] == 4, name
        assert result["max_abs_diff"] < 1e-4, (name, result)
        assert result["loss_diff"] < 1e-4, (name, result)
    oversampled = backend_runs["jax"]["vectorised"]["normalised_oversampled"]["n_train_balanced"]
    plain = backend_runs["jax"]["vectorised"]["plain"]["n_train_balanced"]
    assert all(o >= p for o, p in zip(oversampled, plain)) and oversampled != plain
