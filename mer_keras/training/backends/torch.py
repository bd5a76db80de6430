"""PyTorch training: an eager loop with autograd over Keras' torch variables.

Each step runs the model in training mode, adds the model's regularisation losses,
back-propagates with ``loss.backward()`` and applies the Keras optimiser to the variables'
gradients (the loop Keras documents for its PyTorch backend). The data stay on the
training device as tensors; batches follow the fold's permutation with the last partial
batch kept, as in the TensorFlow loop.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

def seed(value: int) -> None:
    """Python's and NumPy's seeds (Keras' default initialiser and dropout seeds come from Python's ``random``)."""
    import random

    random.seed(int(value))
    np.random.seed(int(value))
    import torch

    torch.manual_seed(int(value))


supports_vectorised = False


class FoldTrainer:
    """One fold's eager training epoch and inference on the PyTorch backend."""

    def __init__(self, model, optimizer, loss_fn, x_train, y_train, batch_size: int, *, mixed: bool = False,
                 transform_gradients=None):
        import keras
        import torch

        if transform_gradients is not None:
            raise NotImplementedError("gradient transforms (frozen layers) train on the TensorFlow backend only")
        self.model, self.loss_fn, self.batch_size = model, loss_fn, int(batch_size)
        self.optimizer = optimizer
        optimizer.build(model.trainable_variables)
        self.x = keras.ops.convert_to_tensor(np.asarray(x_train, dtype=np.float32))
        self.y = keras.ops.convert_to_tensor(np.asarray(y_train, dtype=np.int32))
        self._torch = torch

    def train_epoch(self, perm: np.ndarray, lr: float) -> tuple[float, float]:
        torch = self._torch
        self.optimizer.learning_rate.assign(lr)
        variables = self.model.trainable_variables
        perm = torch.as_tensor(np.asarray(perm, dtype=np.int64), device=self.x.device)
        total, correct, n = 0.0, 0, int(perm.shape[0])
        for start in range(0, n, self.batch_size):
            idx = perm[start: start + self.batch_size]
            xb, yb = self.x[idx], self.y[idx]
            out = self.model(xb, training=True).float()
            loss = self.loss_fn(yb, out)
            for term in self.model.losses:
                loss = loss + term.float()
            self.model.zero_grad()
            loss.backward()
            grads = [v.value.grad for v in variables]
            with torch.no_grad():
                self.optimizer.apply(grads, variables)
            total += float(loss.detach()) * len(idx)
            correct += int((out.detach().argmax(-1) == yb).sum())
        return total / max(n, 1), correct / max(n, 1)

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                scores = self.model(np.asarray(x[start: start + batch_size], dtype=np.float32), training=False)
                out.append(scores.float().cpu().numpy())
        if not out:
            return np.zeros((0, int(self.model.output_shape[-1])))
        return np.concatenate(out).astype(np.float64)


@contextmanager
def runtime(device: str, *, mixed_precision: bool = False, deterministic: bool | None = None):
    """PyTorch device context (``keras.device``); float32; deterministic algorithms on CPU by default."""
    import keras
    import torch

    from . import DEVICES

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    has_gpu = torch.cuda.is_available()
    if device == "gpu" and not has_gpu:
        raise RuntimeError("device 'gpu' requested but PyTorch sees no GPU (use --device auto or cpu)")
    used = "gpu" if has_gpu and device != "cpu" else "cpu"
    wanted = deterministic if deterministic is not None else used == "cpu"
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(bool(wanted), warn_only=True)
    try:
        with keras.device("cuda:0" if used == "gpu" else "cpu"):
            yield {"backend": "torch", "device": used, "precision": "float32", "op_determinism": bool(wanted)}
    finally:
        torch.use_deterministic_algorithms(previous)


__all__ = ["FoldTrainer", "runtime", "seed", "supports_vectorised"]
