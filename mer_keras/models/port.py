"""Load official PyTorch ``state_dict`` weights into the Keras flow networks.

Supported builders: :func:`~mer_keras.models.off_tanet.OffTANet`,
:func:`~mer_keras.models.arfnet.ARFNet` and :func:`~mer_keras.models.ststnet.STSTNet`
(and, with their own tables, the Table-2 baselines of
:mod:`~mer_keras.models.flow_baselines`). Each builder module keeps its name table as data
(``TORCH_NAMES``: Keras layer name -> PyTorch module path); the table whose entries match
the model and the checkpoint best is picked automatically unless ``name_map`` is given.

Conversions (PyTorch -> Keras):

* ``Conv2d.weight`` OIHW -> HWIO (``transpose(2, 3, 1, 0)``); ``bias`` as is;
* ``Linear.weight`` (out, in) -> (in, out). The builders flatten in NCHW order (a
  ``Permute`` before ``Flatten``), so no row permutation is needed;
* ``BatchNorm2d`` ``weight/bias/running_mean/running_var`` -> ``gamma/beta/moving_mean/
  moving_variance`` (``num_batches_tracked`` is skipped);
* per-head 1x1 projections ``<mhsa>.sa_blocks.<h>.w_{q,k,v}.{weight,bias}`` of the
  Off-TANet/ARFNet self-attention are stacked into ``(heads, C_in, d)`` kernels and
  ``(heads, d)`` biases of :class:`~mer_keras.models.flow_layers.OffTANetMHSA` (a single
  head module ``<mhsa>.w_q...`` is accepted for ``heads=1``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from mer_keras.models.flow_layers import OffTANetMHSA

__all__ = ["PortReport", "load_torch_state_dict", "name_maps", "read_state_dict", "to_torch_state_dict"]

_SKIPPED_SUFFIXES = ("num_batches_tracked",)


@dataclasses.dataclass
class PortReport:
    """What :func:`load_torch_state_dict` did.

    Attributes:
        name_map: the name of the table used (``"off_tanet"``, ``"arfnet"``, ...) or
            ``"custom"``.
        assigned: ``(keras variable path, PyTorch key(s))`` pairs, in assignment order.
        missing: Keras variable paths that received no tensor.
        unused: state-dict keys that were not used (ignored and skipped keys excluded).
        skipped: keys skipped by design (``num_batches_tracked``) or by ``ignore``.
    """

    name_map: str
    assigned: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unused: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unused


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch.Tensor (torch is optional and never imported here)
        value = value.detach()
        if hasattr(value, "cpu"):
            value = value.cpu()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def read_state_dict(source: Any) -> dict[str, np.ndarray]:
    """A ``{name: numpy array}`` state dict from a mapping or an ``.npz`` path.

    * a mapping of names to numpy arrays or to torch tensors (converted with
      ``.detach().cpu().numpy()``);
    * a path to an ``.npz`` whose state-dict entries are stored as ``weight/<key>``
      (other entries, e.g. test inputs, are ignored); an ``.npz`` without any ``weight/``
      key is read as a plain state dict.
    """
    if isinstance(source, (str, os.PathLike)):
        with np.load(os.fspath(source)) as data:
            files = list(data.files)
            if any(k.startswith("weight/") for k in files):
                return {k[len("weight/"):]: np.asarray(data[k]) for k in files if k.startswith("weight/")}
            return {k: np.asarray(data[k]) for k in files}
    if isinstance(source, Mapping):
        return {str(k): _to_numpy(v) for k, v in source.items()}
    raise TypeError(f"expected a mapping or an .npz path, got {type(source).__name__}")


def name_maps() -> dict[str, dict[str, str]]:
    """Every registered Keras-name -> PyTorch-module table, by model family."""
    from mer_keras.models import arfnet, flow_baselines, off_tanet, ststnet

    return {
        "off_tanet": off_tanet.TORCH_NAMES,
        "arfnet": arfnet.TORCH_NAMES,
        "ststnet": ststnet.TORCH_NAMES,
        "ststnet_off_tanet": ststnet.TORCH_NAMES_OFF_TANET,
        **{f"flow_baselines.{k}": v for k, v in flow_baselines.TORCH_NAMES.items()},
    }


def _weighted_layers(model) -> list:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True) if layer.weights]


def _pick_map(model, state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    layers = _weighted_layers(model)
    best, best_score = None, (-1, -1)
    for key, table in name_maps().items():
        covered = sum(1 for layer in layers if layer.name in table)
        found = sum(
            1
            for layer in layers
            if layer.name in table and any(k.startswith(table[layer.name] + ".") for k in state)
        )
        score = (found, covered)
        if score > best_score:
            best, best_score = key, score
    return best, name_maps()[best]


def _conv(w):
    if w.ndim != 4:
        raise ValueError(f"expected a 4-D OIHW convolution weight, got shape {w.shape}")
    return np.transpose(w, (2, 3, 1, 0))


def _linear(w):
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D (out, in) Linear weight, got shape {w.shape}")
    return w.T


def _plan(layer, prefix: str, state: Mapping[str, np.ndarray]):
    """``[(keras variable, torch key(s), converted array or None when absent)]`` for a layer."""
    plan = []

    def get(key, convert=lambda a: a):
        return (key, convert(state[key]) if key in state else None)

    if isinstance(layer, OffTANetMHSA):
        heads = layer.heads
        single = heads == 1 and f"{prefix}.w_q.weight" in state
        for proj in ("q", "k", "v"):
            for part in ("weight", "bias"):
                attr = f"{proj}_{'kernel' if part == 'weight' else 'bias'}"
                if not hasattr(layer, attr):
                    continue
                keys = (
                    [f"{prefix}.w_{proj}.{part}"]
                    if single
                    else [f"{prefix}.sa_blocks.{h}.w_{proj}.{part}" for h in range(heads)]
                )
                if all(k in state for k in keys):
                    if part == "weight":
                        arr = np.stack([state[k][:, :, 0, 0].T for k in keys])
                    else:
                        arr = np.stack([state[k] for k in keys])
                else:
                    arr = None
                plan.append((getattr(layer, attr), ", ".join(keys), keys, arr))
        return plan
    if isinstance(layer, keras.layers.BatchNormalization):
        pairs = [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                 ("moving_variance", "running_var")]
        for attr, part in pairs:
            var = getattr(layer, attr, None)
            if var is None:
                continue
            key, arr = get(f"{prefix}.{part}")
            plan.append((var, key, [key], arr))
        return plan
    if isinstance(layer, keras.layers.Conv2D):
        convert = _conv
    elif isinstance(layer, keras.layers.Dense):
        convert = _linear
    else:
        raise TypeError(f"no PyTorch conversion for layer {layer.name!r} of type {type(layer).__name__}")
    key, arr = get(f"{prefix}.weight", convert)
    plan.append((layer.kernel, key, [key], arr))
    if getattr(layer, "use_bias", False):
        key, arr = get(f"{prefix}.bias")
        plan.append((layer.bias, key, [key], arr))
    return plan


def load_torch_state_dict(
    model,
    state_dict,
    *,
    strict: bool = True,
    name_map: Mapping[str, str] | None = None,
    ignore: tuple[str, ...] = (),
) -> PortReport:
    """Assign a PyTorch ``state_dict`` to a Keras flow network built by this package.

    Args:
        model: a Keras model from ``OffTANet``, ``ARFNet``, ``STSTNet`` (or a Table-2
            baseline) whose layer names are those of the builders.
        state_dict: ``{name: array}`` (numpy arrays or torch tensors), or a path to an
            ``.npz`` holding ``weight/<name>`` entries.
        strict: when True, every Keras weight must be assigned and every state-dict
            tensor used (``num_batches_tracked`` and ``ignore`` prefixes excepted), else a
            ``KeyError`` lists the leftovers; no weight is modified in that case. When
            False, whatever matches is assigned and the report lists the rest.
        name_map: Keras layer name -> PyTorch module path; default: the registered table
            (see :func:`name_maps`) that matches the model and the checkpoint best.
        ignore: state-dict key prefixes to leave out (e.g. modules the official code
            builds but does not use, such as ``off_tanet.TORCH_UNUSED``).

    Returns:
        A :class:`PortReport`.

    Raises:
        ValueError: a tensor's shape does not match its Keras variable (both named).
        KeyError: ``strict`` and something is left over on either side.
    """
    state = read_state_dict(state_dict)
    if name_map is None:
        map_name, table = _pick_map(model, state)
    else:
        map_name, table = "custom", dict(name_map)
    report = PortReport(name_map=map_name)
    used: set[str] = set()
    assignments = []
    for layer in _weighted_layers(model):
        prefix = table.get(layer.name)
        if prefix is None:
            report.missing.extend(v.path for v in layer.weights)
            continue
        for var, label, keys, arr in _plan(layer, prefix, state):
            if arr is None:
                report.missing.append(f"{var.path} <- {label}")
                continue
            if tuple(arr.shape) != tuple(var.shape):
                raise ValueError(
                    f"shape mismatch: Keras {var.path} {tuple(var.shape)} <- PyTorch {label} "
                    f"{tuple(arr.shape)} (after layout conversion)"
                )
            assignments.append((var, arr))
            used.update(keys)
            report.assigned.append((var.path, label))
        # Keras weights that the plan does not cover (e.g. unexpected layer internals).
        planned = {id(p[0]) for p in _plan(layer, prefix, state)}
        report.missing.extend(v.path for v in layer.weights if id(v) not in planned)
    for key in state:
        if key in used:
            continue
        if key.endswith(_SKIPPED_SUFFIXES) or key.startswith(tuple(ignore)):
            report.skipped.append(key)
        else:
            report.unused.append(key)
    if strict and not report.complete:
        raise KeyError(
            "state_dict does not match the model "
            f"(name map {map_name!r}): Keras weights not assigned: {report.missing or 'none'}; "
            f"state_dict tensors not used: {report.unused or 'none'}"
        )
    for var, arr in assignments:
        var.assign(arr.astype(var.dtype))
    return report


def to_torch_state_dict(model, *, name_map: Mapping[str, str] | str | None = None) -> dict[str, np.ndarray]:
    """The inverse of :func:`load_torch_state_dict`: a PyTorch-layout ``{key: array}`` dict.

    Useful to check a name table on models without an official checkpoint (export, load
    into a fresh model, compare outputs) and to hand Keras-trained weights to the official
    PyTorch code. ``name_map``: a table, the name of a registered table (see
    :func:`name_maps`), or None for the registered table covering most of the model's
    weighted layers. Layers absent from the table are left out.
    """
    if isinstance(name_map, str):
        table = name_maps()[name_map]
    elif name_map is None:
        layers = _weighted_layers(model)
        table = max(name_maps().values(), key=lambda t: sum(1 for layer in layers if layer.name in t))
    else:
        table = dict(name_map)
    out: dict[str, np.ndarray] = {}
    for layer in _weighted_layers(model):
        prefix = table.get(layer.name)
        if prefix is None:
            continue
        if isinstance(layer, OffTANetMHSA):
            for proj in ("q", "k", "v"):
                kernel = np.asarray(getattr(layer, f"{proj}_kernel").numpy())  # (heads, in, d)
                for h in range(layer.heads):
                    out[f"{prefix}.sa_blocks.{h}.w_{proj}.weight"] = kernel[h].T[:, :, None, None].copy()
                    if layer.use_bias:
                        bias = np.asarray(getattr(layer, f"{proj}_bias").numpy())
                        out[f"{prefix}.sa_blocks.{h}.w_{proj}.bias"] = bias[h].copy()
        elif isinstance(layer, keras.layers.BatchNormalization):
            for attr, part in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                               ("moving_variance", "running_var")):
                var = getattr(layer, attr, None)
                if var is not None:
                    out[f"{prefix}.{part}"] = np.asarray(var.numpy())
        elif isinstance(layer, keras.layers.Conv2D):
            out[f"{prefix}.weight"] = np.transpose(np.asarray(layer.kernel.numpy()), (3, 2, 0, 1)).copy()
            if layer.use_bias:
                out[f"{prefix}.bias"] = np.asarray(layer.bias.numpy())
        elif isinstance(layer, keras.layers.Dense):
            out[f"{prefix}.weight"] = np.asarray(layer.kernel.numpy()).T.copy()
            if layer.use_bias:
                out[f"{prefix}.bias"] = np.asarray(layer.bias.numpy())
    return out
