"""Augmentation used by the papers to balance classes and regularise training.

* Horizontal flip (ShuffleNetV2-SVM: positive and surprise classes "expanded by
  horizontal inversion"; MobileViT: "horizontal flip"). For a flow field, mirroring the
  images mirrors the field *and* negates ``u`` (dx); ``v`` and scalar channels such as
  strain or magnitude are unchanged (:func:`hflip_flow`).
* Small random shifts (MobileViT: "a small random horizontal or vertical shift of its
  pixel positions"), integer pixels with edge padding. A translation leaves flow
  vectors unchanged, so the same function shifts images and flow fields.
* Pixel jitter (MobileViT: "pixel fine-tuning with probability 0.3 (maximum value 20)").
* :func:`balance_by_augmentation`: which samples to augment, and how, so that every
  class reaches the size of the largest (flips first, then shifts).

Arrays are ``H x W`` or ``H x W x C`` (images, ``(u, v)`` flow, ``(u, v, strain)``
stacks); ``rng`` is a ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np


def _check_hw(arr: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be H x W or H x W x C, got shape {a.shape}")
    return a


def hflip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an ``H x W`` or ``H x W x C`` image left-right (a contiguous copy)."""
    return np.ascontiguousarray(_check_hw(image, "image")[:, ::-1])


def hflip_flow(flow: np.ndarray) -> np.ndarray:
    """Flow of the mirrored image pair: mirror the field left-right and negate ``u``.

    ``flow`` is ``H x W x 2`` ``(u, v)`` or ``H x W x 3`` ``(u, v, s)`` with ``s`` a
    mirror-invariant scalar (strain magnitude, flow magnitude); only channel 0 changes
    sign. Float dtype is preserved. Satisfies ``tvl1_flow(hflip(a), hflip(b)) ~
    hflip_flow(tvl1_flow(a, b))``.
    """
    f = np.asarray(flow)
    if f.ndim != 3 or f.shape[2] not in (2, 3):
        raise ValueError(f"flow must be H x W x 2 (u, v) or H x W x 3 (u, v, s), got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.floating):
        raise ValueError(f"flow must be floating point (a uint8 flow image cannot be negated), got {f.dtype}")
    out = np.ascontiguousarray(f[:, ::-1]).copy()
    out[..., 0] = -out[..., 0]
    return out


def shift(image_or_flow: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by integer ``(dx, dy)`` pixels (content moves right/down), padding by edge values."""
    a = _check_hw(image_or_flow, "array")
    dx, dy = int(dx), int(dy)
    h, w = a.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        raise ValueError(f"shift ({dx}, {dy}) is not smaller than the array ({w} x {h})")
    pad = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a, pad, mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[y0 : y0 + h, x0 : x0 + w])


def random_shift(
    image_or_flow: np.ndarray, max_shift: int, rng: np.random.Generator, return_shift: bool = False
):
    """Shift by integers ``dx, dy`` drawn uniformly from ``[-max_shift, max_shift]``.

    Edge padding; flow vectors are not modified (a translation does not change them).
    With ``return_shift=True`` returns ``(array, (dx, dy))``.
    """
    max_shift = int(max_shift)
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    dx, dy = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
    out = shift(image_or_flow, dx, dy)
    return (out, (dx, dy)) if return_shift else out


def pixel_jitter(image: np.ndarray, rng: np.random.Generator, prob: float = 0.3, max_value: int = 20) -> np.ndarray:
    """MobileViT's "pixel fine-tuning with probability 0.3 (maximum value 20)".

    Reading used here: each pixel (all channels of it together) is changed with
    probability ``prob`` by an integer offset drawn uniformly from
    ``[-max_value, max_value]``; uint8 results are clipped to 0..255. Other dtypes are
    offset without clipping. Returns a new array of the same dtype.
    """
    a = _check_hw(image, "image")
    if not (0.0 <= prob <= 1.0):
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    if max_value < 0:
        raise ValueError(f"max_value must be >= 0, got {max_value}")
    h, w = a.shape[:2]
    hit = rng.random((h, w)) < prob
    offset = rng.integers(-int(max_value), int(max_value) + 1, size=(h, w)) * hit
    if a.ndim == 3:
        offset = offset[..., None]
    if a.dtype == np.uint8:
        return np.clip(a.astype(np.int16) + offset, 0, 255).astype(np.uint8)
    return (a + offset).astype(a.dtype)


@dataclass(frozen=True)
class Augmentation:
    """One extra sample: copy sample ``index``, mirror it if ``flip``, then shift by ``shift`` (dx, dy)."""

    index: int
    flip: bool = False
    shift: tuple[int, int] = (0, 0)


def apply_augmentation(array: np.ndarray, aug: Augmentation, kind: str = "image") -> np.ndarray:
    """Apply ``aug`` to an image (``kind="image"``) or a flow field / stack (``kind="flow"``)."""
    if kind not in ("image", "flow"):
        raise ValueError(f"kind must be 'image' or 'flow', got {kind!r}")
    out = np.asarray(array)
    if aug.flip:
        out = hflip_flow(out) if kind == "flow" else hflip_image(out)
    if aug.shift != (0, 0):
        out = shift(out, *aug.shift)
    return out


def balance_by_augmentation(
    labels: Sequence[Hashable],
    rng: np.random.Generator,
    target: int | None = None,
    max_shift: int = 2,
    flip: bool = True,
) -> list[Augmentation]:
    """Extra samples that bring every class up to ``target`` (default: the largest class).

    For a class with ``n`` samples and deficit ``d = target - n``: first up to ``n``
    horizontal flips of distinct samples (chosen at random), then shifted copies -- of
    the originals and (if enabled) of the flips, in turn -- with a random non-zero
    integer shift in ``[-max_shift, max_shift]^2``, cycling over the class's samples in a
    random order. The originals themselves are not listed. Returns
    :class:`Augmentation` records in class order; indices refer to ``labels``.
    """
    labels = list(labels)
    if not labels:
        return []
    counts = Counter(labels)
    target = max(counts.values()) if target is None else int(target)
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    if max_shift < 1:
        raise ValueError(f"max_shift must be >= 1 so that shifted copies differ, got {max_shift}")
    shifts = [(dx, dy) for dx in range(-max_shift, max_shift + 1) for dy in range(-max_shift, max_shift + 1) if (dx, dy) != (0, 0)]
    out: list[Augmentation] = []
    for cls in sorted(counts, key=lambda c: (str(type(c)), str(c))):
        members = [i for i, y in enumerate(labels) if y == cls]
        deficit = target - len(members)
        if deficit <= 0:
            continue
        order = [members[j] for j in rng.permutation(len(members))]
        if flip:
            n_flip = min(deficit, len(order))
            out.extend(Augmentation(index=i, flip=True) for i in order[:n_flip])
            deficit -= n_flip
        k = 0
        while deficit > 0:
            i = order[k % len(order)]
            mirrored = flip and (k // len(order)) % 2 == 1
            dx, dy = shifts[int(rng.integers(len(shifts)))]
            out.append(Augmentation(index=i, flip=mirrored, shift=(dx, dy)))
            deficit -= 1
            k += 1
    return out
