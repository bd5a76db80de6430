"""PyTorch reference training loops for the flow-network benchmarks.

This module exists so that benchmarks can time a reference PyTorch loop side by side with
the Keras engine, on the same data and the same machine. It is written here from the
published settings of the official code, as recorded in ``shared/reference/architectures.md``:

* STSTNet, section "Baselines re-implemented by the Off-TANet code (its Table 2)", entry
  "STSTNet (original code)": the original authors' released PyTorch code (flat modules
  ``conv1..3``, ``bn1..3``, ``fc``; 1,683 parameters for 3 classes, input 3x28x28; Adam lr
  5e-5, batch 256, 800 epochs, last epoch evaluated). Its state dict matches the official
  per-fold weights ``ststnet_official_fold006.npz``. The original code does not shuffle its
  training data.
* Off-TANet, section "Off-TANet (Zhang, Liu, Zhou 2021) -- official PyTorch code, 59,403
  parameters": the authors' module ``OffTANet`` with its triplet-attention block
  (``net_type='ta'``), input 3x112x112; Adam lr 1e-3, StepLR(step 60, gamma 0.3), 201
  epochs, batch 64, cross-entropy. Its state dict matches the official fold-1 weights
  ``off_tanet_official_loso1.npz``.
* Section "Porting PyTorch weights exactly" for the semantics the Keras builders
  (:mod:`mer_keras.models.ststnet`, :mod:`mer_keras.models.off_tanet`) reproduce: here the
  PyTorch layers are used directly (``MaxPool2d`` with ``-inf`` padding, NCHW flatten,
  BatchNorm eps 1e-5 / momentum 0.1), and :mod:`mer_keras.models.port` maps these state-dict
  names onto the Keras layers.

The networks are re-written from those facts (no code copied); every layer keeps PyTorch's
default initialisation. The training loop mirrors the official ``DataLoader`` loops without
their overhead: the whole dataset is kept as tensors on the target device and sliced into
mini-batches (reshuffled every epoch when ``shuffle=True``, last partial batch kept),
``model.train()`` during the epochs and ``model.eval()`` to predict the left-out subject
after the last epoch.

torch is optional: it is imported inside the functions only, so this module imports
without it (:func:`torch_available` says whether it can be used).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np

__all__ = [
    "INPUT_SHAPES",
    "MODELS",
    "OFFICIAL_SETTINGS",
    "build_reference",
    "reference_loso",
    "torch_available",
]

MODELS = ("ststnet", "off_tanet")

#: Input shape (H, W, C) each reference network is built for (the flatten width depends on it).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {"ststnet": (28, 28, 3), "off_tanet": (112, 112, 3)}

#: The official training recipes (architectures.md); keyword arguments of :func:`reference_loso`.
OFFICIAL_SETTINGS: dict[str, dict[str, Any]] = {
    "ststnet": dict(epochs=800, batch_size=256, lr=5e-5, lr_step=None, lr_gamma=1.0, shuffle=False),
    "off_tanet": dict(epochs=201, batch_size=64, lr=1e-3, lr_step=60, lr_gamma=0.3, shuffle=True),
}


def torch_available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except Exception:  # ImportError, or a broken install failing at import time
        return False
    return True


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised only without torch
        raise ImportError("mer_keras.training.reference_torch needs PyTorch (pip install torch)") from exc
    return torch


# --------------------------------------------------------------------------------------------
# Networks. Classes are defined on first use so that torch stays a lazy import.
# --------------------------------------------------------------------------------------------

_CLASSES: dict[str, type] = {}


def _position_code(size: int) -> np.ndarray:
    """Off-TANet's fixed code ``P[i, j] = e_i + e_j``, ``e_i = sin/cos(1 / 10000 ** (floor(i/2) / size))``
    (sin for even ``i``, cos for odd ``i``), as architectures.md states the official code builds it."""
    e = np.array(
        [(math.sin if i % 2 == 0 else math.cos)(1.0 / (10000.0 ** ((i // 2) / size))) for i in range(size)],
        dtype=np.float64,
    )
    return (e[:, None] + e[None, :]).astype(np.float32)


def _classes() -> dict[str, type]:
    if _CLASSES:
        return _CLASSES
    torch = _import_torch()
    nn = torch.nn

    class STSTNet(nn.Module):
        """STSTNet, original code: three parallel conv3x3 (padding 2) streams of 3 / 5 / 8
        filters, each -> ReLU -> BN (ReLU *before* BN) -> maxpool 3/3 padding 1 -> dropout 0.5;
        concat (16) -> avgpool 2 -> 5x5x16 -> flatten (NCHW) 400 -> Linear ``n_classes``.

        The modules are flat and grouped by kind, in the official state-dict order
        ``conv1..3``, ``bn1..3``, ``fc``; pooling, ReLU and dropout hold no weights.
        """

        def __init__(self, n_classes: int = 3, in_channels: int = 3):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, 3, kernel_size=3, padding=2)
            self.conv2 = nn.Conv2d(in_channels, 5, kernel_size=3, padding=2)
            self.conv3 = nn.Conv2d(in_channels, 8, kernel_size=3, padding=2)
            self.relu = nn.ReLU()
            self.bn1 = nn.BatchNorm2d(3)
            self.bn2 = nn.BatchNorm2d(5)
            self.bn3 = nn.BatchNorm2d(8)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=3, padding=1)
            self.avgpool = nn.AvgPool2d(kernel_size=2, stride=2)
            self.dropout = nn.Dropout(p=0.5)
            self.fc = nn.Linear(5 * 5 * 16, n_classes)

        def _stream(self, x, conv, bn):
            return self.dropout(self.maxpool(bn(self.relu(conv(x)))))

        def forward(self, x):
            x = torch.cat(
                [
                    self._stream(x, self.conv1, self.bn1),
                    self._stream(x, self.conv2, self.bn2),
                    self._stream(x, self.conv3, self.bn3),
                ],
                dim=1,
            )
            x = self.avgpool(x)
            return self.fc(torch.flatten(x, 1))

    class Residual(nn.Module):
        """``Residual(in_c, out_c)``: [conv3x3 + BN + ReLU] x2 (bias) + conv1x1 shortcut (bias,
        no BN), summed, maxpool 2. ``conv`` is a Sequential (indices 0, 1, 3, 4 hold weights)."""

        def __init__(self, in_c: int, out_c: int):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(in_c, out_c, 3, padding=1),
                nn.BatchNorm2d(out_c),
                nn.ReLU(),
                nn.Conv2d(out_c, out_c, 3, padding=1),
                nn.BatchNorm2d(out_c),
                nn.ReLU(),
            )
            self.botneck = nn.Conv2d(in_c, out_c, 1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(self.conv(x) + self.botneck(x))

    class ChannelAttention(nn.Module):
        """CBAM channel attention with ``ratio = in_planes``: bias-free 1x1 convs C -> 1 -> C,
        ReLU between, on the average- and max-pooled maps, summed, sigmoid (the weights)."""

        def __init__(self, channels: int, ratio: int):
            super().__init__()
            hidden = max(1, channels // ratio)
            self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
            self.relu1 = nn.ReLU()
            self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            avg = torch.mean(x, dim=(2, 3), keepdim=True)
            mx = torch.amax(x, dim=(2, 3), keepdim=True)
            return self.sigmoid(self.fc2(self.relu1(self.fc1(avg))) + self.fc2(self.relu1(self.fc1(mx))))

    class SpatialAttention(nn.Module):
        """[channel mean; channel max] -> conv3x3 2->1 (padding 1, no bias) -> sigmoid (the weights)."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(2, 1, 3, padding=1, bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            att = torch.cat([torch.mean(x, dim=1, keepdim=True), torch.amax(x, dim=1, keepdim=True)], dim=1)
            return self.sigmoid(self.conv1(att))

    class SelfAttentionHead(nn.Module):
        """One head: 1x1 projections (bias) C_in -> d for q, k, v; per channel, with the HxW maps
        as matrices, logits = q k^T + q P^T, softmax over all H*W entries, output = att * v."""

        def __init__(self, in_c: int, d: int, size: int):
            super().__init__()
            self.w_q = nn.Conv2d(in_c, d, 1)
            self.w_k = nn.Conv2d(in_c, d, 1)
            self.w_v = nn.Conv2d(in_c, d, 1)
            # a constant, not a weight: kept out of the state dict, moved with the module
            self.register_buffer("pos", torch.from_numpy(_position_code(size)), persistent=False)

        def forward(self, x):
            q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
            logits = torch.matmul(q, k.transpose(-1, -2)) + torch.matmul(q, self.pos.transpose(0, 1))
            b, c, h, w = logits.shape
            att = torch.softmax(logits.reshape(b, c, h * w), dim=-1).reshape(b, c, h, w)
            return att * v

    class MultiHeadSelfAttention(nn.Module):
        """Heads concatenated along channels (``sa_blocks.<h>``)."""

        def __init__(self, in_c: int, out_c: int, size: int, heads: int = 4):
            super().__init__()
            self.sa_blocks = nn.ModuleList(SelfAttentionHead(in_c, out_c // heads, size) for _ in range(heads))

        def forward(self, x):
            return torch.cat([head(x) for head in self.sa_blocks], dim=1)

    class EnhancedResidual(nn.Module):
        """Triplet-attention residual block: x0 = conv1x1(x); x = conv3x3 C->C + BN + ReLU;
        x = CA(x) * x; x = SpA(x) * x; x = MHSA(x); x = conv3x3 C->out + BN + ReLU; x + x0; maxpool 2."""

        def __init__(self, in_c: int, out_c: int, size: int):
            super().__init__()
            # registered in the official state-dict order (conv1, conv2, botneck, spa, ca, sa),
            # which is also the order in which the default initialisation draws from the RNG
            self.conv1 = nn.Sequential(nn.Conv2d(in_c, in_c, 3, padding=1), nn.BatchNorm2d(in_c), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(in_c, out_c, 3, padding=1), nn.BatchNorm2d(out_c), nn.ReLU())
            self.botneck = nn.Conv2d(in_c, out_c, 1)
            self.spa = SpatialAttention()
            self.ca = ChannelAttention(in_c, ratio=in_c)
            self.sa = MultiHeadSelfAttention(in_c, in_c, size, heads=4)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            x0 = self.botneck(x)
            x = self.conv1(x)
            x = self.ca(x) * x
            x = self.spa(x) * x
            x = self.sa(x)
            x = self.conv2(x)
            return self.pool(x + x0)

    class OffTANet(nn.Module):
        """Off-TANet (triplet attention), input 3x112x112: stem conv7x7/2 3->8 (padding 3) -> ReLU
        -> BN; Residual 8->18, 18->28; EnhancedResidual 28->8 at 14x14; flatten (NCHW) 392 ->
        64 -> ReLU -> dropout 0.5 -> 64 -> ReLU -> dropout 0.5 -> ``n_classes``."""

        def __init__(self, n_classes: int = 3, in_channels: int = 3):
            super().__init__()
            self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 8, 7, stride=2, padding=3), nn.ReLU(), nn.BatchNorm2d(8))
            self.res1 = Residual(8, 18)
            self.res2 = Residual(18, 28)
            self.eres = EnhancedResidual(28, 8, size=14)
            self.dense = nn.Sequential(
                nn.Linear(8 * 7 * 7, 64),
                nn.ReLU(),
                nn.Dropout(0.5),
                nn.Linear(64, 64),
                nn.ReLU(),
                nn.Dropout(0.5),
                nn.Linear(64, n_classes),
            )

        def forward(self, x):
            x = self.eres(self.res2(self.res1(self.conv1(x))))
            return self.dense(torch.flatten(x, 1))

    _CLASSES.update(ststnet=STSTNet, off_tanet=OffTANet)
    return _CLASSES


def build_reference(model: str, n_classes: int = 3):
    """A freshly initialised ``torch.nn.Module`` of the official architecture ``model``.

    Args:
        model: ``"ststnet"`` (original code, input NCHW 3x28x28; 1,683 parameters for 3
            classes) or ``"off_tanet"`` (input 3x112x112; 59,403 parameters for 3 classes).
        n_classes: output logits.

    The state-dict keys and shapes are those of the official weights (``weight/<key>`` in
    the ``shared/reference`` npz files), so ``load_state_dict`` takes them directly. The
    weights get PyTorch's default initialisation from the current global torch RNG.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return _classes()[model](n_classes=int(n_classes))


# --------------------------------------------------------------------------------------------
# Leave-one-subject-out training loop
# --------------------------------------------------------------------------------------------


def _fold_seed(seed: int, fold: int) -> int:
    """A 63-bit seed derived from (seed, fold index)."""
    state = np.random.SeedSequence([int(seed), int(fold)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def _python_scalar(value):
    return value.item() if hasattr(value, "item") else value


def reference_loso(
    x,
    y,
    subjects,
    *,
    model: str,
    epochs: int,
    batch_size: int,
    lr: float,
    lr_step: int | None = None,
    lr_gamma: float = 1.0,
    shuffle: bool = True,
    seed: int = 0,
    device: str = "cpu",
    folds: int | None = None,
    threads: int | None = None,
    n_classes: int | None = None,
) -> dict:
    """Leave-one-subject-out training of a reference network with the official-style loop.

    For each left-out subject (sorted unique ``subjects``; the first ``folds`` only when
    given) a fresh model is built with ``torch.manual_seed`` set from ``(seed, fold index)``,
    trained on the other subjects for ``epochs`` epochs with ``Adam(lr)`` and cross-entropy
    (``StepLR(step_size=lr_step, gamma=lr_gamma)`` stepped once per epoch when ``lr_step`` is
    given), in mini-batches of ``batch_size`` (a new permutation per epoch when ``shuffle``,
    the last partial batch kept), then put in eval mode to predict the left-out subject.

    Args:
        x: float32 array (N, H, W, 3), NHWC (transposed to NCHW once); H, W as
            :data:`INPUT_SHAPES` gives for ``model``.
        y: integer labels (N,), 0-based.
        subjects: subject id per sample (N,).
        model: ``"ststnet"`` or ``"off_tanet"``; :data:`OFFICIAL_SETTINGS` holds each one's
            official ``epochs``, ``batch_size``, ``lr``, ``lr_step``, ``lr_gamma``, ``shuffle``.
        seed: base seed of the per-fold model initialisation, shuffling and dropout.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``...). All data are kept
            on it as tensors; CUDA is synchronised before every timer read.
        folds: train only the first ``folds`` folds (None: all).
        threads: ``torch.set_num_threads(threads)`` for the run (restored afterwards).
        n_classes: output logits (None: ``max(y) + 1``).

    Returns:
        ``{"folds": [{"subject", "n_train", "n_test", "train_s", "ms_per_epoch", "y_true",
        "y_pred"}, ...], "total_s", "ms_per_epoch_median", "samples_per_s", "device",
        "torch_version", "threads"}``. ``train_s`` is the wall time of the epochs of a fold
        (model construction and prediction excluded); ``samples_per_s`` is the training
        samples processed (``n_train * epochs`` summed over folds) per second of ``train_s``;
        ``total_s`` is the wall time of the whole call.
    """
    torch = _import_torch()
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    subjects = np.asarray(subjects)
    if x.ndim != 4 or x.shape[1:] != INPUT_SHAPES[model]:
        raise ValueError(f"{model} expects x of shape (N, {', '.join(map(str, INPUT_SHAPES[model]))}), got {x.shape}")
    if not (len(x) == len(y) == len(subjects)):
        raise ValueError(f"x, y and subjects differ in length: {len(x)}, {len(y)}, {len(subjects)}")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError("y must hold non-negative integer labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if n_classes is None:
        n_classes = int(y.max()) + 1
    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        start_total = time.perf_counter()
        x_all = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(dev)
        y_all = torch.from_numpy(y.astype(np.int64)).to(dev)
        unique = np.unique(subjects)
        if folds is not None:
            unique = unique[: int(folds)]
        results = []
        for fold, subject in enumerate(unique):
            test_mask = subjects == subject
            train_idx = torch.from_numpy(np.flatnonzero(~test_mask)).to(dev)
            test_idx = torch.from_numpy(np.flatnonzero(test_mask)).to(dev)
            x_train, y_train = x_all.index_select(0, train_idx), y_all.index_select(0, train_idx)
            x_test = x_all.index_select(0, test_idx)
            n_train, n_test = int(train_idx.numel()), int(test_idx.numel())

            fold_seed = _fold_seed(seed, fold)
            torch.manual_seed(fold_seed)  # model initialisation and dropout (all devices)
            shuffler = torch.Generator().manual_seed(fold_seed)  # epoch permutations, on the CPU
            net = build_reference(model, n_classes).to(dev)
            optimizer = torch.optim.Adam(net.parameters(), lr=lr)
            scheduler = (
                torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(lr_step), gamma=lr_gamma)
                if lr_step
                else None
            )
            loss_fn = torch.nn.CrossEntropyLoss()

            sync()
            t0 = time.perf_counter()
            for _ in range(int(epochs)):
                net.train()
                order = torch.randperm(n_train, generator=shuffler).to(dev) if shuffle else None
                for begin in range(0, n_train, int(batch_size)):
                    if order is None:
                        xb = x_train[begin: begin + batch_size]
                        yb = y_train[begin: begin + batch_size]
                    else:
                        batch = order[begin: begin + batch_size]
                        xb, yb = x_train.index_select(0, batch), y_train.index_select(0, batch)
                    optimizer.zero_grad()
                    loss = loss_fn(net(xb), yb)
                    loss.backward()
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            sync()
            train_s = time.perf_counter() - t0

            net.eval()
            with torch.no_grad():
                preds = [
                    net(x_test[begin: begin + batch_size]).argmax(dim=1) for begin in range(0, n_test, int(batch_size))
                ]
            y_pred = torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
            results.append(
                {
                    "subject": _python_scalar(subject),
                    "n_train": n_train,
                    "n_test": n_test,
                    "train_s": train_s,
                    "ms_per_epoch": 1000.0 * train_s / int(epochs),
                    "y_true": [int(v) for v in y[test_mask]],
                    "y_pred": [int(v) for v in y_pred],
                }
            )
        sync()
        total_s = time.perf_counter() - start_total
        used_threads = torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(previous_threads)

    train_total = sum(r["train_s"] for r in results)
    samples = sum(r["n_train"] for r in results) * int(epochs)
    return {
        "folds": results,
        "total_s": total_s,
        "ms_per_epoch_median": statistics.median(r["ms_per_epoch"] for r in results) if results else float("nan"),
        "samples_per_s": samples / train_total if train_total > 0 else float("nan"),
        "device": str(dev),
        "torch_version": torch.__version__,
        "threads": used_threads,
    }
