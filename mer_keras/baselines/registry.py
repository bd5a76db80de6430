"""The registry of handcrafted features: name -> function and the clip input it reads.

A :class:`Feature` knows which input of a prepared cache its function needs (an input
kind of ``LOSODataset.from_cache``: ``"frames"`` = the ``T x S x S x 1`` onset..apex
stack, ``"flow_stack"`` = the ``S x S x 3`` float ``(u, v, strain)``) and how to pass one
such sample to the function; :func:`feature_matrix` applies it to every clip.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .flow_features import bi_woof, hoof
from .lbp import lbp_sip, lbp_top

_SAMPLE_ARGUMENTS = {"frames": ("frames",), "u": ("flow_stack", 0), "v": ("flow_stack", 1),
                     "strain": ("flow_stack", 2)}
"""Function argument -> (input kind, channel of the sample) it is read from (frames: the whole stack)."""


@dataclass(frozen=True)
class Feature:
    """A handcrafted descriptor: ``function(**arguments(sample), **params) -> 1-D vector``.

    Attributes:
        name: registry key.
        function: the descriptor (:func:`lbp_top`, ...).
        input: the ``LOSODataset.from_cache`` input kind its samples come from.
        arguments_from_sample: the function's data arguments, read from one sample
            (``"frames"``: the stack; ``"u"``, ``"v"``, ``"strain"``: channels 0, 1, 2).
        reference: the method, venue and year.
    """

    name: str
    function: Callable[..., np.ndarray]
    input: str
    arguments_from_sample: tuple[str, ...]
    reference: str

    @property
    def parameters(self) -> tuple[str, ...]:
        """Keyword parameters a recipe may set (the function's arguments besides the data)."""
        names = inspect.signature(self.function).parameters
        return tuple(n for n in names if n not in self.arguments_from_sample and n != "mask")

    def check_params(self, params: Mapping[str, Any] | None) -> dict:
        """``params`` as a dict; ``ValueError`` naming unknown keys and the accepted ones."""
        params = dict(params or {})
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise ValueError(f"feature {self.name!r} has no parameter(s) {unknown}; it takes {list(self.parameters)}")
        return params

    def arguments(self, sample) -> dict[str, np.ndarray]:
        """The function's data arguments from one sample of :attr:`input`."""
        a = np.asarray(sample)
        if self.input == "frames":
            if a.ndim == 4 and a.shape[-1] != 1:
                raise ValueError(f"feature {self.name!r} reads grey frame stacks (T x H x W x 1), got shape {a.shape}")
            return {"frames": a}
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"feature {self.name!r} reads (u, v, strain) samples (H x W x 3), got shape {a.shape}")
        return {name: a[..., _SAMPLE_ARGUMENTS[name][1]] for name in self.arguments_from_sample}

    def __call__(self, sample, **params) -> np.ndarray:
        return self.function(**self.arguments(sample), **self.check_params(params))


FEATURES: dict[str, Feature] = {
    "lbp_top": Feature("lbp_top", lbp_top, "frames", ("frames",), "LBP-TOP (IEEE TPAMI 2007; MEGC2019 baseline)"),
    "lbp_sip": Feature("lbp_sip", lbp_sip, "frames", ("frames",), "LBP-SIP (ACCV 2014)"),
    "hoof": Feature("hoof", hoof, "flow_stack", ("u", "v"), "HOOF (IEEE CVPR 2009)"),
    "bi_woof": Feature("bi_woof", bi_woof, "flow_stack", ("u", "v", "strain"),
                       "Bi-WOOF (Signal Processing: Image Communication 2018)"),
}
"""Registered handcrafted features by name."""


def get_feature(name: str) -> Feature:
    """The registered feature ``name`` (``KeyError`` listing the registered ones)."""
    if name not in FEATURES:
        raise KeyError(f"unknown feature {name!r}; available: {', '.join(sorted(FEATURES))}")
    return FEATURES[name]


def feature_matrix(name: str, samples: Sequence, params: Mapping[str, Any] | None = None, *,
                   progress: bool = False) -> np.ndarray:
    """``N x D`` float64 matrix: feature ``name`` with ``params`` of each sample, in order.

    ``samples`` are samples of the feature's :attr:`Feature.input` (e.g. ``dataset.x`` of
    a ``LOSODataset``). ``ValueError`` when a sample is rejected (naming its position) or
    the vectors differ in length (e.g. frames of different sizes).
    """
    from tqdm.auto import tqdm

    feature = get_feature(name)
    params = feature.check_params(params)
    rows = []
    for i, sample in enumerate(tqdm(samples, desc=f"features {name}", unit="clip", disable=not progress)):
        try:
            rows.append(feature(sample, **params))
        except ValueError as exc:
            raise ValueError(f"sample {i}: {exc}") from exc
    if not rows:
        raise ValueError("no samples")
    lengths = sorted({len(r) for r in rows})
    if len(lengths) != 1:
        raise ValueError(f"feature vectors differ in length {lengths[:4]}: the samples differ in size")
    return np.stack(rows).astype(np.float64)
