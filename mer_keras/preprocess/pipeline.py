"""Per-clip pre-processing: alignment, masking, TV-L1 flow, strain and flow images.

:func:`preprocess_clip` turns the raw frames of one micro-expression clip into the
compact arrays that every model of the package consumes (:class:`ClipFeatures`);
:class:`PreprocessConfig` holds every choice that affects them, with one named preset
per paper and a stable :meth:`PreprocessConfig.fingerprint` for cache invalidation.

Order of operations (ShuffleNetV2-SVM Fig. 2; Off-TANet §4.1):

1. grey conversion, face detection and 68 landmarks on the onset frame;
2. rotation about the eyes' midpoint (Eq. 1), square crop, resize to ``size`` with cubic
   interpolation -- one warp per frame, the onset's transform reused for every frame
   by default; the flow is computed at the network's input size unless ``flow_size``
   names a working resolution (the same crop warped to ``flow_size``, flow and strain
   computed there and area-resized to ``size``, the vectors scaled);
3. TV-L1 flow onset -> apex on the aligned, *unmasked* frames; strain from that flow;
4. the landmark mask (eyes, outside the face) applied to frames, flow and strain.

Cropped-release route (``source="cropped"``, presets ``"off_tanet"`` and ``"ststnet"``): the
frames are a dataset's own face crops (CASME II ``Cropped/.../reg_img46.jpg``) and are used
as they are, in the official Off-TANet ``data.py`` order: read in colour, resized to
``size`` x ``size`` with cubic interpolation, converted to grey; no detection, alignment or
mask (``preprocessing.md``). The flow is computed at ``size``, at a stated ``flow_size``, or
at the crop's own resolution (``flow_size="crop"``: the community's STSTNet flow images)
and resized to ``size``.

Apex-only clips (``compute_flow=False``, preset ``"mobilevit_apex"``): steps 1, 2 and 4
only, no flow, strain or flow image. The MobileViT paper feeds the grey, aligned,
eye-masked apex frame ("Pre-processing"), and its macro-expression set has single images
(JAFFE: onset = apex), which a flow preset must reject because flow needs two frames.
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from .face import ALIGN_MODES, FaceAligner, ImageLike, align_clip, align_frame, to_grey
from .flow import (
    DERIVATIVES,
    NORMALISATIONS,
    STRAIN_VARIANTS,
    THIRD_CHANNELS,
    TVL1Params,
    flow_image,
    optical_strain,
    resize_flow,
    resize_map,
    tvl1_flow,
)
from .frames import read_colour
from .masks import MaskConfig, apply_mask, build_mask

KEEP_MODES = ("onset_apex", "onset_to_apex")
INTERPOLATIONS = {"cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
PRESETS = ("shufflenet", "mobilevit", "mobilevit_apex", "off_tanet", "off_tanet_aligned", "ststnet", "ststnet_aligned")
SOURCES = ("aligned", "cropped")
"""Where a clip's face comes from: ``"aligned"`` (dlib landmarks on raw frames, Eq. 1 of the
ShuffleNetV2 paper) or ``"cropped"`` (the dataset's cropped release taken as it is)."""
CROP_RESOLUTION = "crop"
"""``flow_size`` value of the cropped route: the flow at each crop's own resolution."""
SCHEMA_VERSION = 1
"""Bumped whenever the meaning of a field or the computation changes; part of the fingerprint."""


@dataclass(frozen=True)
class FlowImageOptions:
    """How :func:`mer_keras.preprocess.flow.flow_image` renders ``(u, v, third)`` as uint8."""

    third: str = "strain"
    normalisation: str = "minmax"
    flow_scale: float = 2.0
    third_scale: float | None = None

    def __post_init__(self) -> None:
        if self.third not in THIRD_CHANNELS:
            raise ValueError(f"third must be one of {THIRD_CHANNELS}, got {self.third!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if not (np.isfinite(self.flow_scale) and self.flow_scale > 0):
            raise ValueError(f"flow_scale must be > 0 pixels, got {self.flow_scale}")
        if self.third_scale is not None and not (np.isfinite(self.third_scale) and self.third_scale > 0):
            raise ValueError(f"third_scale must be > 0 or None, got {self.third_scale}")

    def render(self, flow: np.ndarray, strain: np.ndarray) -> np.ndarray:
        """:func:`~mer_keras.preprocess.flow.flow_image` of ``flow`` and ``strain`` with these options."""
        return flow_image(flow, strain=strain, third=self.third, normalisation=self.normalisation,
                          flow_scale=self.flow_scale, third_scale=self.third_scale)


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that determines :func:`preprocess_clip`'s output.

    ``size``: output side in pixels. ``align_mode``: ``"reuse"`` (onset transform for all
    frames) or ``"per_frame"``. ``crop_margin``: see
    :func:`mer_keras.preprocess.face.estimate_alignment`. ``upsample``: dlib detector
    upsampling (one retry at ``upsample + 1`` when nothing is found). ``interpolation``:
    ``"cubic"`` (papers), ``"linear"``, ``"area"`` or ``"lanczos"``. ``mask``: landmark
    mask geometry. ``flow``: TV-L1 parameters. ``strain_variant`` / ``strain_derivative``:
    see :func:`mer_keras.preprocess.flow.optical_strain`. ``flow_image``: rendering of the
    uint8 flow image. ``keep``: ``"onset_apex"`` (no frame stack stored) or
    ``"onset_to_apex"`` (all aligned, masked frames from onset to apex stored).
    ``compute_flow``: ``False`` prepares apex-only clips (aligned, masked frames; no flow,
    strain or flow image) and accepts clips whose onset is their apex (single images).
    It enters :meth:`fingerprint` only when ``False``, so caches prepared before the field
    existed keep their fingerprint. ``flow_size``: the working resolution of the flow
    (issue 21): the onset and apex are aligned with the same crop at ``flow_size`` px, TV-L1
    and the strain are computed there, and the flow (vectors scaled) and strain are
    area-resized to ``size`` (:func:`~mer_keras.preprocess.flow.resize_flow`); ``None`` =
    computed at ``size`` (and left out of :meth:`fingerprint`); ``"crop"`` (cropped route only) =
    at each crop's own resolution. TV-L1 on 28-px frames loses the sub-pixel motion that the
    same crop at a larger size keeps. ``source``: ``"aligned"`` (detect, align, crop, mask) or
    ``"cropped"`` (the frames are a cropped release: resized and converted to grey only, see
    the module docstring; takes no landmark mask); hashed only when ``"cropped"``.
    """

    size: int = 112
    align_mode: str = "reuse"
    crop_margin: float = 0.1
    upsample: int = 0
    interpolation: str = "cubic"
    mask: MaskConfig = field(default_factory=MaskConfig)
    flow: TVL1Params = field(default_factory=TVL1Params.fast)
    strain_variant: str = "paper"
    strain_derivative: str = "sobel"
    flow_image: FlowImageOptions = field(default_factory=FlowImageOptions)
    keep: str = "onset_apex"
    compute_flow: bool = True
    flow_size: int | str | None = None
    source: str = "aligned"

    def __post_init__(self) -> None:
        if int(self.size) != self.size or not (8 <= self.size <= 2048):
            raise ValueError(f"size must be an integer in [8, 2048], got {self.size}")
        if self.align_mode not in ALIGN_MODES:
            raise ValueError(f"align_mode must be one of {ALIGN_MODES}, got {self.align_mode!r}")
        if not (0.0 <= self.crop_margin <= 2.0):
            raise ValueError(f"crop_margin must be in [0, 2], got {self.crop_margin}")
        if int(self.upsample) != self.upsample or self.upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {self.upsample}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.strain_variant not in STRAIN_VARIANTS:
            raise ValueError(f"strain_variant must be one of {STRAIN_VARIANTS}, got {self.strain_variant!r}")
        if self.strain_derivative not in DERIVATIVES:
            raise ValueError(f"strain_derivative must be one of {DERIVATIVES}, got {self.strain_derivative!r}")
        if self.keep not in KEEP_MODES:
            raise ValueError(f"keep must be one of {KEEP_MODES}, got {self.keep!r}")
        if not isinstance(self.compute_flow, bool):
            raise TypeError(f"compute_flow must be a bool, got {type(self.compute_flow).__name__}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "cropped" and not self.mask.is_identity:
            raise ValueError("source='cropped' takes the dataset's crops as they are, without landmarks, so it cannot "
                             "apply a landmark mask: pass mask=MaskConfig.none(), or source='aligned' to mask")
        if self.flow_size == CROP_RESOLUTION:
            if self.source != "cropped":
                raise ValueError("flow_size='crop' (the crop's own resolution) needs source='cropped'; "
                                 "the aligned route takes an integer flow_size")
        elif self.flow_size is not None:
            if isinstance(self.flow_size, bool) or int(self.flow_size) != self.flow_size or not (
                    8 <= self.flow_size <= 2048):
                raise ValueError(f"flow_size must be None or an integer in [8, 2048], got {self.flow_size!r}")
            object.__setattr__(self, "flow_size", int(self.flow_size))
        for name, kind in (("mask", MaskConfig), ("flow", TVL1Params), ("flow_image", FlowImageOptions)):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "size", int(self.size))

    @property
    def release(self) -> str:
        """The dataset release this config reads: ``"cropped"`` for the cropped route, else ``"raw"``.

        Pass it to the readers and composites (``load_dataset(name, root, release=config.release)``).
        """
        return "cropped" if self.source == "cropped" else "raw"

    # -- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "PreprocessConfig":
        """Named presets, one per paper (``overrides`` replace fields afterwards).

        * ``"shufflenet"`` (ShuffleNetV2-SVM): 224 px; eyes and outside-the-face masked
          (``MaskConfig()``); flow image ``(u, v, magnitude)`` min-max; the onset..apex
          frame stack is kept (the paper trains on the pre-processed sequences).
        * ``"mobilevit"``: 256 px; eyes masked only; apex frame used (onset/apex kept).
        * ``"mobilevit_apex"``: as ``"mobilevit"`` without flow (``compute_flow=False``):
          the aligned, eye-masked grey apex only, single-image clips (JAFFE) accepted --
          the MobileViT paper's input for both its macro and micro sets.
        * ``"off_tanet"`` (Off-TANet / ARFNet; official ``data.py``): the datasets' cropped
          releases (``source="cropped"``), resized to 112 px with cubic interpolation, grey,
          no mask; TV-L1 with OpenCV's defaults (``TVL1Params()``) at 112 px; strain as the
          official code computes it (``"official"`` formula, unscaled ``cv2.Sobel``) so that
          inputs match the released weights; networks consume the float ``(u, v, strain)``.
        * ``"off_tanet_aligned"``: the same network input from raw frames (dlib alignment,
          ``TVL1Params.fast()``), for data without a cropped release; not the official input.
        * ``"ststnet"``: the cropped releases, flow and Eq. 4 strain computed at each crop's
          own resolution (``flow_size="crop"``) and area-resized to 28 px, no mask,
          ``(u, v, strain)`` min-max image, OpenCV's default TV-L1: the community's STSTNet
          flow images are computed on the datasets' face crops at their own resolution and
          then resized to 28 (``preprocessing.md``); TV-L1 on 28-px frames loses the
          sub-pixel motion (``tests/test_flow_resolution.py``).
        * ``"ststnet_aligned"``: the STSTNet input from raw frames: dlib crop, flow at 112 px
          resized to 28 (``flow_size=112``), ``TVL1Params.fast()``.

        The aligned presets use ``TVL1Params.fast()`` (see ``mer_keras.preprocess.bench``
        for the measurement behind it); pass ``flow=TVL1Params()`` for OpenCV's defaults.
        The presets reproducing an official code's input use that code's TV-L1 (OpenCV's
        defaults); ``flow=TVL1Params.fast()`` is the named faster option.
        """
        table = {
            "shufflenet": dict(
                size=224, mask=MaskConfig(), flow_image=FlowImageOptions(third="magnitude"), keep="onset_to_apex"
            ),
            "mobilevit": dict(size=256, mask=MaskConfig.eyes_only(), flow_image=FlowImageOptions(third="magnitude")),
            "mobilevit_apex": dict(size=256, mask=MaskConfig.eyes_only(), compute_flow=False),
            "off_tanet": dict(size=112, mask=MaskConfig.none(), strain_variant="official",
                              strain_derivative="sobel_raw", source="cropped", flow=TVL1Params()),
            "off_tanet_aligned": dict(size=112, mask=MaskConfig.none(), strain_variant="official",
                                      strain_derivative="sobel_raw"),
            "ststnet": dict(size=28, mask=MaskConfig.none(), strain_variant="paper", strain_derivative="sobel",
                            source="cropped", flow_size=CROP_RESOLUTION, flow=TVL1Params()),
            "ststnet_aligned": dict(size=28, mask=MaskConfig.none(), strain_variant="paper",
                                    strain_derivative="sobel", flow_size=112),
        }
        if name not in table:
            raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")
        return replace(cls(**table[name]), **overrides)

    # -- serialisation
    def to_dict(self) -> dict:
        """JSON-compatible nested dict (sub-configs as dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        data = dict(data)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown PreprocessConfig fields: {sorted(unknown)}")
        if isinstance(data.get("mask"), dict):
            data["mask"] = MaskConfig.from_dict(data["mask"])
        if isinstance(data.get("flow"), dict):
            data["flow"] = TVL1Params.from_dict(data["flow"])
        if isinstance(data.get("flow_image"), dict):
            opts = data["flow_image"]
            bad = set(opts) - {f.name for f in fields(FlowImageOptions)}
            if bad:
                raise ValueError(f"unknown FlowImageOptions fields: {sorted(bad)}")
            data["flow_image"] = FlowImageOptions(**opts)
        return cls(**data)

    def fingerprint(self, length: int = 16) -> str:
        """Hex SHA-256 (first ``length`` chars) of the canonical JSON of the config + schema version.

        Stable across processes and Python versions (sorted keys, floats via ``repr``);
        changes when any field changes. ``compute_flow`` is hashed only when ``False``,
        ``flow_size`` only when set and ``source`` only when ``"cropped"`` (their defaults
        leave the fingerprints of existing caches unchanged).
        """
        config = self.to_dict()
        if config["compute_flow"]:
            del config["compute_flow"]
        if config["flow_size"] is None:
            del config["flow_size"]
        if config["source"] == "aligned":
            del config["source"]
        payload = {"schema": SCHEMA_VERSION, "config": config}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[: int(length)]

    def replace(self, **changes: Any) -> "PreprocessConfig":
        return replace(self, **changes)


@dataclass
class ClipFeatures:
    """Pre-processed arrays of one clip (all in aligned output coordinates, ``S = size``).

    ``onset`` / ``apex``: ``S x S`` uint8, masked. ``flow``, ``strain`` and ``flow_image``
    are ``None`` for an apex-only clip (``compute_flow=False``). ``frames``: ``T x S x S`` uint8 aligned
    and masked frames onset..apex (``None`` unless ``keep="onset_to_apex"``). ``flow``:
    ``S x S x 2`` float32 ``(u, v)`` px, computed on the unmasked frames, then masked.
    ``strain``: ``S x S`` float32 (computed from the unmasked flow, then masked).
    ``flow_image``: ``S x S x 3`` uint8 ``(u, v, third)``. ``mask``: ``S x S`` bool
    (True = kept). ``landmarks``: ``68 x 2`` float32 onset landmarks. ``n_fallback_frames``:
    frames aligned with the onset transform because no face was found (per-frame mode).
    """

    onset: np.ndarray
    apex: np.ndarray
    flow: np.ndarray | None
    strain: np.ndarray | None
    flow_image: np.ndarray | None
    mask: np.ndarray
    landmarks: np.ndarray
    n_fallback_frames: int = 0
    frames: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Dict of numpy arrays for ``np.savez`` (``None`` arrays -- frames, or the flow of an apex-only clip -- omitted)."""
        out = {
            "onset": self.onset,
            "apex": self.apex,
            "flow": self.flow,
            "strain": self.strain,
            "flow_image": self.flow_image,
            "mask": self.mask,
            "landmarks": self.landmarks,
            "n_fallback_frames": np.asarray(self.n_fallback_frames, dtype=np.int32),
            "frames": self.frames,
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "ClipFeatures":
        """Inverse of :meth:`to_arrays` (accepts an ``np.load`` result; no flow arrays = apex-only clip)."""
        keys = ("onset", "apex", "mask", "landmarks")
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise KeyError(f"missing arrays: {missing}")
        return cls(
            **{k: np.asarray(arrays[k]) for k in keys},
            **{k: np.asarray(arrays[k]) if k in arrays else None for k in ("flow", "strain", "flow_image")},
            n_fallback_frames=int(np.asarray(arrays.get("n_fallback_frames", 0))),
            frames=np.asarray(arrays["frames"]) if "frames" in arrays else None,
        )


def flow_and_strain(aligned_pair: Callable[[int | None], tuple[np.ndarray, np.ndarray]], config: PreprocessConfig,
                    params: TVL1Params | None = None) -> tuple[np.ndarray, np.ndarray]:
    """TV-L1 flow onset -> apex and its optical strain at ``config.size``, computed at ``config.flow_size``.

    ``aligned_pair(size)`` returns the aligned (or cropped), unmasked grey onset and apex at
    ``size`` px (the same crop at every size); ``size=None`` (``flow_size="crop"``) asks for
    the crops at their own resolution. With a working resolution other than ``size`` the flow
    and strain are computed there and resized to ``size``
    (:func:`~mer_keras.preprocess.flow.resize_flow`: area-averaged, vectors scaled; strain
    unscaled). ``params``: TV-L1 settings other than ``config.flow`` (``predict --realtime``).
    Shared by ``prepare`` and ``predict``.
    """
    work_size = None if config.flow_size == CROP_RESOLUTION else (config.flow_size or config.size)
    onset, apex = aligned_pair(work_size)
    flow = tvl1_flow(onset, apex, params or config.flow)
    strain = optical_strain(flow, variant=config.strain_variant, derivative=config.strain_derivative)
    if flow.shape[:2] != (config.size, config.size):
        flow, strain = resize_flow(flow, config.size), resize_map(strain, config.size)
    return flow, strain


def _read_crop(item: ImageLike) -> np.ndarray:
    """A cropped-release frame as the official code reads it: a path in colour (``cv2.imread``), an array as given."""
    if isinstance(item, (str, PathLike)):
        return read_colour(item)
    image = np.asarray(item)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"expected a grey or BGR image, got shape {image.shape}")
    return image


def _cropped_pair(crops: Sequence[np.ndarray], config: PreprocessConfig) -> Callable[[int | None], tuple]:
    """``aligned_pair`` of :func:`flow_and_strain` for the cropped route: each crop resized, then grey."""
    interpolation = INTERPOLATIONS[config.interpolation]

    def pair(size: int | None) -> tuple[np.ndarray, np.ndarray]:
        first, last = crops[0], crops[-1]
        if size is None:  # the crops' own resolution; an apex of another size is brought to the onset's
            height, width = first.shape[:2]
            if last.shape[:2] != (height, width):
                last = cv2.resize(last, (width, height), interpolation=interpolation)
            return to_grey(first), to_grey(last)
        return tuple(to_grey(cv2.resize(c, (size, size), interpolation=interpolation)) for c in (first, last))

    return pair


def preprocess_cropped(crops: Sequence[ImageLike], config: PreprocessConfig, *,
                       params: TVL1Params | None = None) -> ClipFeatures:
    """The cropped-release route (module docstring) on a clip's selected frames: onset .. apex, or (onset, apex).

    ``crops``: paths (read in colour, as the official ``data.py`` does) or arrays (BGR or
    grey) of face crops; each is resized to ``size`` and converted to grey, and the flow is
    computed at the working resolution (:func:`flow_and_strain`). No landmark is located:
    ``landmarks`` is NaN and ``mask`` all True. ``params``: TV-L1 settings other than
    ``config.flow`` (``predict --realtime``). Shared by ``prepare`` and ``predict``.
    """
    crops = [_read_crop(item) for item in crops]
    interpolation = INTERPOLATIONS[config.interpolation]
    greys = np.stack([to_grey(cv2.resize(c, (config.size, config.size), interpolation=interpolation))
                      for c in crops])
    onset, apex = greys[0], greys[-1]
    mask = np.ones((config.size, config.size), dtype=bool)
    landmarks = np.full((68, 2), np.nan, dtype=np.float32)
    frames = greys if config.keep == "onset_to_apex" else None
    if not config.compute_flow:
        return ClipFeatures(onset=onset, apex=apex, flow=None, strain=None, flow_image=None, mask=mask,
                            landmarks=landmarks, frames=frames)
    pair = _cropped_pair([crops[0], crops[-1]], config)
    flow, strain = flow_and_strain(lambda size: (onset, apex) if size == config.size else pair(size), config, params)
    image = config.flow_image.render(flow, strain)
    return ClipFeatures(onset=onset, apex=apex, flow=flow, strain=strain, flow_image=image, mask=mask,
                        landmarks=landmarks, frames=frames)


def preprocess_clip(
    frames: Sequence[ImageLike] | np.ndarray,
    onset_index: int,
    apex_index: int,
    config: PreprocessConfig,
    aligner: FaceAligner | None = None,
) -> ClipFeatures:
    """Pre-process one clip (see the module docstring for the order of operations).

    ``frames``: the clip's frames (paths, or arrays: BGR as ``cv2.imread`` gives them, or
    grey), or a ``T x H x W (x C)`` array; only ``onset_index`` and ``apex_index`` (or the
    range between them, for ``keep="onset_to_apex"``) are read. Requires
    ``0 <= onset_index < apex_index < len(frames)`` (``onset_index == apex_index`` is
    accepted when ``config.compute_flow`` is False: a single image). Raises
    ``NoFaceError`` when the onset frame has no detectable face, and
    :class:`~mer_keras.preprocess.frames.FrameError` for an incomplete frame file (a
    truncated JPEG) or frames of different sizes.
    """
    if not isinstance(config, PreprocessConfig):
        raise TypeError(f"config must be a PreprocessConfig, got {type(config).__name__}")
    items = list(frames) if not isinstance(frames, np.ndarray) else [frames[i] for i in range(frames.shape[0])]
    n = len(items)
    onset_index, apex_index = int(onset_index), int(apex_index)
    if not config.compute_flow:
        if not (0 <= onset_index <= apex_index < n):
            raise ValueError(f"need 0 <= onset_index <= apex_index < {n} frames, got onset {onset_index}, apex {apex_index}")
    elif not (0 <= onset_index < apex_index < n):
        raise ValueError(f"need 0 <= onset_index < apex_index < {n} frames (flow needs two frames; "
                         f"compute_flow=False prepares single images), got onset {onset_index}, apex {apex_index}")
    if config.keep == "onset_to_apex":
        selected = items[onset_index : apex_index + 1]
    else:
        selected = [items[onset_index], items[apex_index]]
    if config.source == "cropped":
        return preprocess_cropped(selected, config)
    if aligner is None:
        aligner = FaceAligner(upsample=config.upsample, fallback_upsample=config.upsample + 1)
    aligned = align_clip(
        selected,
        config.size,
        reference=0,
        mode=config.align_mode,
        margin=config.crop_margin,
        aligner=aligner,
        interpolation=INTERPOLATIONS[config.interpolation],
    )
    onset, apex = aligned.frames[0], aligned.frames[-1]
    mask = build_mask(aligned.landmarks, config.size, config.mask)
    frames_m = apply_mask(aligned.frames, mask) if config.keep == "onset_to_apex" else None
    if not config.compute_flow:  # apex-only clip: aligned, masked frames, no flow
        return ClipFeatures(onset=apply_mask(onset, mask), apex=apply_mask(apex, mask), flow=None, strain=None,
                            flow_image=None, mask=mask, landmarks=aligned.landmarks.astype(np.float32),
                            n_fallback_frames=int(aligned.n_fallback), frames=frames_m)
    ends = (selected[0], selected[-1])
    flow, strain = flow_and_strain(
        lambda size: (onset, apex) if size == config.size else tuple(
            align_frame(frame, tf.resized(size), interpolation=INTERPOLATIONS[config.interpolation])
            for frame, tf in zip(ends, (aligned.transforms[0], aligned.transforms[-1]))),
        config)
    flow_m = apply_mask(flow, mask)
    strain_m = apply_mask(strain, mask)
    image = config.flow_image.render(flow_m, strain_m)
    return ClipFeatures(
        onset=apply_mask(onset, mask),
        apex=apply_mask(apex, mask),
        flow=flow_m,
        strain=strain_m,
        flow_image=image,
        mask=mask,
        landmarks=aligned.landmarks.astype(np.float32),
        n_fallback_frames=int(aligned.n_fallback),
        frames=frames_m,
    )
