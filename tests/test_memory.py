"""Memory plumbing of the training engine: zero-copy tensors and trainers freed without the garbage collector.

(The peak RSS itself is measured by ``mer-keras bench fold``, not asserted here.)
"""

import gc
import weakref

import numpy as np
import pytest

from mer_keras.training import get_recipe
from mer_keras.training.backends.tensorflow import to_tensor
from mer_keras.training.datasets import TENSOR_ALIGNMENT, aligned_empty


@pytest.mark.parametrize("dtype", ["uint8", "float32", "int64"])
def test_aligned_buffer_reaches_tensorflow_without_a_copy(dtype):
    x = aligned_empty((5, 4, 3, 1), dtype)
    assert x.ctypes.data % TENSOR_ALIGNMENT == 0 and x.flags.c_contiguous and x.shape == (5, 4, 3, 1)
    x[...] = np.arange(x.size).reshape(x.shape)
    t = to_tensor(x)
    assert t.dtype.name == dtype and np.array_equal(t.numpy(), x)
    x[0, 0, 0, 0] = 7  # shared memory (the trainer never writes its buffer; this only shows no copy was made)
    assert t.numpy()[0, 0, 0, 0] == 7
    assert to_tensor(t) is t


def test_unaligned_or_read_only_arrays_are_copied():
    unaligned = aligned_empty((65,), "uint8")[1:]
    read_only = aligned_empty((64,), "uint8")
    read_only.flags.writeable = False
    strided = np.arange(6, dtype=np.float32)[::2]
    unaligned[:] = 1
    tensors = [to_tensor(x) for x in (unaligned, read_only, strided)]
    for t, x in zip(tensors, (unaligned, read_only, strided)):
        assert np.array_equal(t.numpy(), x)
    unaligned[0] = 9
    assert tensors[0].numpy()[0] == 1  # a copy


def test_a_dropped_trainer_is_freed_by_reference_counting():
    """No trainer <-> tf.function cycle: the fold's tensors go when the trainer goes, not at the next collection."""
    import keras

    from mer_keras.training.backends.tensorflow import FoldTrainer
    from mer_keras.training.engine import make_loss, make_optimizer
    from mer_keras.training.two_stage import build_two_stage_model

    recipe = get_recipe("shufflenet_svm").quick(1).replace(input_size=16, backbone="ststnet")
    model = build_two_stage_model(recipe, (16, 16, 1), 3, head="svm", seed=0)
    x = aligned_empty((6, 16, 16, 1), "uint8")
    x[...] = 3
    trainer = FoldTrainer(model, make_optimizer(recipe), make_loss(recipe, 3), x, np.arange(6) % 3, recipe.batch_size)
    trainer.train_epoch(np.arange(6), recipe.lr)
    assert trainer.predict(x).shape == (6, 3)
    ref = weakref.ref(trainer)
    gc.disable()
    try:
        del trainer
        assert ref() is None
    finally:
        gc.enable()
    keras.backend.clear_session()


def test_fold_bench_lists_the_rss_after_each_fold():
    from mer_keras.training.bench_fold import format_fold_bench

    gb = 1024**3
    results = {
        "data": {"n_clips": 442, "n_subjects": 68, "size": 64, "frames_per_clip": 30, "reused": True, "seconds": 1.0},
        "fold": {"recipe": "r", "width": 1.0, "cpu_count": 2, "subject": "samm/006", "n_test": 4, "epochs": 1,
                 "pretrain_epochs": 1, "n_folds": 2, "child_wall_s": 60.0},
        "stage1": {}, "stage2": {},
        "rss": {"start": 0.1 * gb, "after_load": 0.2 * gb, "after_stage1": 1.0 * gb, "peak": 1.5 * gb,
                "ratio_to_target": 1.5 / 4, "per_fold": [{"fold": "samm__006", "rss": 1.25 * gb, "peak_rss": 1.4 * gb},
                                                         {"fold": "samm__007", "rss": 1.3 * gb, "peak_rss": 1.5 * gb}]},
    }
    text = format_fold_bench(results)
    assert "2 folds in one process" in text
    assert "   1 samm__006           1.25 GB     1.40 GB" in text and "   2 samm__007           1.30 GB     1.50 GB" in text


def test_training_loops_leave_no_traced_graph_behind():
    """The engine's optimisers skip the one-replica all-reduce, whose ``tf.custom_gradient`` kept every
    traced epoch graph in TensorFlow's gradient registry (3 graphs per transfer loop before)."""
    import keras
    from tensorflow.python.framework.func_graph import FuncGraph

    from mer_keras.models.ststnet import STSTNet
    from mer_keras.training.transfer import _Loop

    def alive() -> int:
        gc.collect()
        return sum(isinstance(o, FuncGraph) for o in gc.get_objects())

    recipe = get_recipe("ststnet")
    x = np.random.default_rng(0).random((8, 28, 28, 3), dtype=np.float32)
    y = np.arange(8) % 3
    keras.backend.clear_session()
    before = alive()
    for _ in range(2):
        loop = _Loop(STSTNet(classes=3, input_shape=(28, 28, 3)), recipe, 3, [], mixed=False, compiled=True)
        loop.epoch(x, y, np.arange(8))
        del loop
        keras.backend.clear_session()
    assert alive() == before
