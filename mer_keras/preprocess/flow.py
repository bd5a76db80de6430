"""TV-L1 optical flow, optical strain and flow images.

* :func:`tvl1_flow`: forward dense flow onset -> apex with OpenCV's Dual TV-L1
  (``cv2.optflow.DualTVL1OpticalFlow``; the TV-L1 model of the ShuffleNetV2-SVM paper,
  its Eqs. 2-3, and Off-TANet §3.1).
* :func:`optical_strain`: magnitude of the optical strain tensor, Off-TANet Eqs. 2-4,
  and the variant that the official Off-TANet code actually computes.
* :func:`flow_stack` / :func:`flow_image`: the ``(u, v, strain)`` (or magnitude) three-
  channel input of Off-TANet / ARFNet / STSTNet, as float32 or as uint8 images.

Conventions: a flow field is ``H x W x 2`` float32, channel 0 = ``u`` = dx, channel 1 =
``v`` = dy, in pixels of the image it was computed on, *forward*: the content at pixel
``p`` of ``prev`` is found at ``p + flow[p]`` in ``next``. Images are grey.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import cv2
import numpy as np

STRAIN_VARIANTS = ("paper", "official")
DERIVATIVES = ("sobel", "sobel_raw", "gradient")
THIRD_CHANNELS = ("strain", "magnitude")
NORMALISATIONS = ("minmax", "clip")


# --------------------------------------------------------------------------- TV-L1


@dataclass(frozen=True)
class TVL1Params:
    """Every parameter of ``cv2.optflow.DualTVL1OpticalFlow_create``, OpenCV's defaults.

    ``TVL1Params()`` reproduces ``DualTVL1OpticalFlow_create()`` exactly (checked against
    the installed build's getters in the tests), i.e. what the official Off-TANet code
    and most public MER code use. ``tau``: time step of the numerical scheme; ``lambda_``:
    weight of the data term (``lambda`` is a Python keyword); ``theta``: coupling of the
    two variables of the dual scheme; ``nscales``: pyramid levels; ``warps``: warpings
    per level; ``epsilon``: stopping threshold; ``inner_iterations`` /
    ``outer_iterations``: iterations of the inner and outer loops; ``scale_step``:
    pyramid down-scaling factor; ``gamma``: weight of the illumination term (0 = off);
    ``median_filtering``: kernel size of the median filter of the flow (OpenCV's default
    5); ``use_initial_flow``: start from the flow passed in.

    :meth:`fast` is the preset chosen by measurement (``mer_keras.preprocess.bench``; numbers in
    docs/benchmarks.md, section "Pre-processing: TV-L1 settings").
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5
    use_initial_flow: bool = False

    def __post_init__(self) -> None:
        for name in ("tau", "lambda_", "theta", "epsilon"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"TVL1Params.{name} must be > 0, got {getattr(self, name)}")
        for name in ("nscales", "warps", "inner_iterations", "outer_iterations", "median_filtering"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"TVL1Params.{name} must be an integer >= 1, got {value}")
        if not (0.0 < self.scale_step < 1.0):
            raise ValueError(f"TVL1Params.scale_step must be in (0, 1), got {self.scale_step}")
        if not (np.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"TVL1Params.gamma must be >= 0, got {self.gamma}")
        if self.median_filtering > 1 and self.median_filtering % 2 == 0:
            raise ValueError(f"TVL1Params.median_filtering must be odd (or 1), got {self.median_filtering}")

    @classmethod
    def opencv_defaults(cls) -> "TVL1Params":
        """Same as ``TVL1Params()``."""
        return cls()

    @classmethod
    def fast(cls) -> "TVL1Params":
        """Tuned preset: 3 pyramid levels and 3 warps per level, the rest OpenCV's defaults.

        Micro-expression motion between onset and apex is sub-pixel to a few pixels at the
        network input sizes (28-256 px), so the coarse levels of a 5-level pyramid (and
        extra warps) add time but no accuracy. Chosen with
        :func:`mer_keras.preprocess.bench.run_preprocess_bench` (real portrait warped by
        known smooth fields with 0.5-3 px peaks, EPE inside the face): about the default's
        EPE at a clearly lower time. Loosening ``epsilon`` to 0.02 was faster still but less
        accurate for the smallest motions at 224 px, so it is not part of the preset.
        Measured numbers: docs/benchmarks.md, section "Pre-processing: TV-L1 settings" (``mer-keras bench preprocess``).
        """
        return cls(nscales=3, warps=3)

    @classmethod
    def preset(cls, name: str) -> "TVL1Params":
        """``"opencv"`` (OpenCV defaults) or ``"fast"``."""
        presets = {"opencv": cls.opencv_defaults, "default": cls.opencv_defaults, "fast": cls.fast}
        if name not in presets:
            raise ValueError(f"unknown TV-L1 preset {name!r}; choose from {sorted(presets)}")
        return presets[name]()

    def create(self):
        """A new ``cv2.optflow.DualTVL1OpticalFlow`` with these parameters."""
        if not hasattr(cv2, "optflow"):
            raise ImportError("cv2.optflow is missing: install opencv-contrib-python (not opencv-python)")
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=float(self.tau),
            lambda_=float(self.lambda_),
            theta=float(self.theta),
            nscales=int(self.nscales),
            warps=int(self.warps),
            epsilon=float(self.epsilon),
            innnerIterations=int(self.inner_iterations),  # sic: OpenCV's keyword has three n's
            outerIterations=int(self.outer_iterations),
            scaleStep=float(self.scale_step),
            gamma=float(self.gamma),
            medianFiltering=int(self.median_filtering),
            useInitialFlow=bool(self.use_initial_flow),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TVL1Params":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TVL1Params fields: {sorted(unknown)}")
        return cls(**data)

    def replace(self, **changes) -> "TVL1Params":
        return replace(self, **changes)


def _flow_input(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D grey image, got shape {arr.shape} (convert BGR with cv2.cvtColor(..., COLOR_BGR2GRAY))"
        )
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)  # OpenCV scales float input by 255: floats must be in [0, 1]
    raise ValueError(f"{name} must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")


def tvl1_flow(prev: np.ndarray, next: np.ndarray, params: TVL1Params | None = None) -> np.ndarray:
    """Forward Dual TV-L1 flow from ``prev`` (onset) to ``next`` (apex).

    Inputs: grey ``H x W`` images of equal shape, uint8 in 0..255 or float in 0..1
    (OpenCV multiplies float input by 255). Returns ``H x W x 2`` float32 ``(u, v) =
    (dx, dy)`` in pixels: ``next[p + flow[p]] ~ prev[p]``. ``params=None`` uses OpenCV's
    defaults. A new algorithm object per call (creating one takes under a microsecond):
    OpenCV's ``DualTVL1OpticalFlow`` lowers its own scale count for good when an image is
    too small for its pyramid (below 16 px at the coarsest scale), so a reused object gives
    a later, larger pair fewer scales than asked for, and results that depend on what the
    process computed before.
    """
    params = params or TVL1Params()
    a, b = _flow_input(prev, "prev"), _flow_input(next, "next")
    if a.shape != b.shape:
        raise ValueError(f"prev and next must have the same shape, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        a, b = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0), b.astype(np.float32) / (
            255.0 if b.dtype == np.uint8 else 1.0
        )
    if min(a.shape) < 4:
        raise ValueError(f"images are too small for optical flow: {a.shape}")
    flow = params.create().calc(a, b, None)
    return np.asarray(flow, dtype=np.float32)


# --------------------------------------------------------------------------- strain


def _check_flow(flow: np.ndarray) -> np.ndarray:
    f = np.asarray(flow)
    if f.ndim != 3 or f.shape[2] != 2:
        raise ValueError(f"flow must be H x W x 2 (u, v), got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.floating):
        raise ValueError(f"flow must be floating point, got dtype {f.dtype}")
    return f.astype(np.float32, copy=False)


def flow_derivatives(flow: np.ndarray, derivative: str = "sobel") -> tuple[np.ndarray, ...]:
    """``(u_x, u_y, v_x, v_y)`` of a flow field, each ``H x W`` float32.

    ``derivative``:

    * ``"sobel"``: 3 x 3 Sobel (Off-TANet §3.1: "partial derivatives are calculated by
      the Sobel operator") divided by 8, so the result is in pixels per pixel (exact
      for linear fields away from the border); borders reflect (OpenCV's default,
      ``BORDER_REFLECT_101``);
    * ``"sobel_raw"``: ``cv2.Sobel`` without the 1/8 factor, exactly as the official
      Off-TANet code calls it (values 8x larger);
    * ``"gradient"``: ``np.gradient`` central differences (one-sided at the border).
    """
    f = _check_flow(flow)
    if derivative not in DERIVATIVES:
        raise ValueError(f"derivative must be one of {DERIVATIVES}, got {derivative!r}")
    u, v = np.ascontiguousarray(f[..., 0]), np.ascontiguousarray(f[..., 1])
    if derivative == "gradient":
        uy, ux = np.gradient(u)
        vy, vx = np.gradient(v)
        return tuple(x.astype(np.float32) for x in (ux, uy, vx, vy))
    scale = 1.0 if derivative == "sobel_raw" else 1.0 / 8.0
    return tuple(
        cv2.Sobel(c, cv2.CV_32F, dx, dy, ksize=3, scale=scale) for c, dx, dy in ((u, 1, 0), (u, 0, 1), (v, 1, 0), (v, 0, 1))
    )


def optical_strain(flow: np.ndarray, variant: str = "paper", derivative: str = "sobel") -> np.ndarray:
    """Optical-strain magnitude of a flow field, ``H x W`` float32 (Off-TANet Eq. 4).

    ``variant="paper"``: Eq. 4, ``sqrt(u_x^2 + v_y^2 + 0.5 * (u_y + v_x)^2)``, the
    magnitude of the strain tensor ``0.5 * (grad u + grad u^T)`` of Eqs. 2-3 (with the
    off-diagonal entry counted as in the paper).

    ``variant="official"``: what the official Off-TANet code computes,
    ``sqrt(u_x^2 + u_y^2 + 0.5 * (v_x + u_y)^2)`` (``u_y`` where Eq. 4 has ``v_y``). Use
    it, with ``derivative="sobel_raw"``, to reproduce that code's inputs.

    See :func:`flow_derivatives` for ``derivative``. Units: pixels per pixel
    (dimensionless) except for ``"sobel_raw"`` (8x).
    """
    if variant not in STRAIN_VARIANTS:
        raise ValueError(f"variant must be one of {STRAIN_VARIANTS}, got {variant!r}")
    ux, uy, vx, vy = flow_derivatives(flow, derivative)
    if variant == "paper":
        s = ux * ux + vy * vy + 0.5 * (uy + vx) ** 2
    else:
        s = ux * ux + uy * uy + 0.5 * (vx + uy) ** 2
    return np.sqrt(s).astype(np.float32)


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """``sqrt(u^2 + v^2)`` in pixels, ``H x W`` float32."""
    f = _check_flow(flow)
    return np.hypot(f[..., 0], f[..., 1]).astype(np.float32)


# --------------------------------------------------------------------------- flow images


def flow_stack(
    flow: np.ndarray,
    strain: np.ndarray | None = None,
    third: str = "strain",
    variant: str = "paper",
    derivative: str = "sobel",
) -> np.ndarray:
    """Raw-valued ``H x W x 3`` float32 stack ``(u, v, third)`` for networks fed floats.

    ``third="strain"`` uses ``strain`` if given, else :func:`optical_strain` (``variant``,
    ``derivative``); ``third="magnitude"`` uses :func:`flow_magnitude`. Channel order is
    ``(u, v, third)`` (Off-TANet's ``{u, v, |eps|}``), no normalisation.
    """
    f = _check_flow(flow)
    if third not in THIRD_CHANNELS:
        raise ValueError(f"third must be one of {THIRD_CHANNELS}, got {third!r}")
    if third == "magnitude":
        extra = flow_magnitude(f)
    elif strain is None:
        extra = optical_strain(f, variant=variant, derivative=derivative)
    else:
        extra = np.asarray(strain, dtype=np.float32)
        if extra.shape != f.shape[:2]:
            raise ValueError(f"strain shape {extra.shape} does not match flow {f.shape[:2]}")
    return np.dstack([f[..., 0], f[..., 1], extra]).astype(np.float32)


def flow_image(
    flow: np.ndarray,
    strain: np.ndarray | None = None,
    third: str = "strain",
    normalisation: str = "minmax",
    flow_scale: float = 2.0,
    third_scale: float | None = None,
    variant: str = "paper",
    derivative: str = "sobel",
) -> np.ndarray:
    """``H x W x 3`` uint8 image of ``(u, v, third)`` (channel 0 = u; not BGR/RGB colour).

    ``normalisation="minmax"`` (what common public MER code does, e.g. with
    ``cv2.normalize(..., NORM_MINMAX)``): each channel independently mapped from its
    own [min, max] to [0, 255] (a constant channel becomes 0). Amplitude is lost:
    a 0.1 px and a 3 px motion of the same shape give the same image.

    ``normalisation="clip"`` (fixed scale, amplitude preserved across clips):
    ``u, v`` -> ``127.5 + 127.5 * x / flow_scale`` (0 px -> 127.5, +-``flow_scale``
    px -> 255 / 0), the third channel (>= 0) -> ``255 * x / third_scale``; values
    beyond the scale are clipped. ``third_scale`` defaults to ``flow_scale`` for the
    magnitude and to ``flow_scale / 10`` for strain (px/px, i.e. a ``flow_scale``
    change over 10 pixels saturates). Values are rounded to the nearest integer.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    stack = flow_stack(flow, strain=strain, third=third, variant=variant, derivative=derivative)
    stack = np.nan_to_num(stack, nan=0.0, posinf=0.0, neginf=0.0)
    if normalisation == "minmax":
        lo = stack.reshape(-1, 3).min(axis=0)
        hi = stack.reshape(-1, 3).max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        out = (stack - lo) / span * 255.0
        out[..., hi <= lo] = 0.0
    else:
        if not (np.isfinite(flow_scale) and flow_scale > 0):
            raise ValueError(f"flow_scale must be > 0 pixels, got {flow_scale}")
        if third_scale is None:
            third_scale = flow_scale if third == "magnitude" else flow_scale / 10.0
        if not (np.isfinite(third_scale) and third_scale > 0):
            raise ValueError(f"third_scale must be > 0, got {third_scale}")
        out = np.empty_like(stack)
        out[..., :2] = 127.5 + 127.5 * stack[..., :2] / flow_scale
        out[..., 2] = 255.0 * stack[..., 2] / third_scale
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- synthetic ground truth


def smooth_displacement_field(
    shape: tuple[int, int],
    peak: float,
    centres: np.ndarray | None = None,
    sigma: float | None = None,
    rng: np.random.Generator | None = None,
    n_blobs: int = 4,
) -> np.ndarray:
    """A smooth ``H x W x 2`` float32 displacement field whose largest magnitude is ``peak`` px.

    A sum of Gaussian bumps (``sigma`` defaults to ``min(H, W) / 8``), each with a random
    direction, at ``centres`` (``N x 2`` (x, y); random inside the central half when not
    given); the result is rescaled so that ``max |d| == peak``. Used as ground-truth
    motion for tests and benchmarks.
    """
    h, w = (int(v) for v in shape)
    if h < 2 or w < 2:
        raise ValueError(f"shape must be at least 2 x 2, got {shape}")
    if not (np.isfinite(peak) and peak >= 0):
        raise ValueError(f"peak must be >= 0 pixels, got {peak}")
    rng = rng if rng is not None else np.random.default_rng(0)
    if centres is None:
        centres = np.column_stack([rng.uniform(0.25 * w, 0.75 * w, n_blobs), rng.uniform(0.25 * h, 0.75 * h, n_blobs)])
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    sigma = float(sigma) if sigma is not None else min(h, w) / 8.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w, 2))
    for cx, cy in centres:
        theta = rng.uniform(0, 2 * np.pi)
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        field[..., 0] += np.cos(theta) * g
        field[..., 1] += np.sin(theta) * g
    m = np.hypot(field[..., 0], field[..., 1]).max()
    if m > 0:
        field *= peak / m
    return field.astype(np.float32)


def warp_forward(image: np.ndarray, flow: np.ndarray, iterations: int = 6, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Image ``J`` such that ``J(p + flow(p)) = image(p)``: ``flow`` is then ``J``'s exact forward flow.

    ``J(q) = image(x)`` with ``x + flow(x) = q`` solved by the fixed point
    ``x <- q - flow(x)`` (converges for smooth fields with gradients below 1). Sampling
    uses ``cv2.remap`` with ``interpolation`` and replicated borders. ``image`` may be
    grey or multi-channel; the dtype is preserved.
    """
    f = _check_flow(flow)
    img = np.asarray(image)
    if img.shape[:2] != f.shape[:2]:
        raise ValueError(f"image {img.shape[:2]} and flow {f.shape[:2]} differ in size")
    h, w = f.shape[:2]
    qx, qy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = qx.copy(), qy.copy()
    for _ in range(int(iterations)):
        d = cv2.remap(f, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        x, y = qx - d[..., 0], qy - d[..., 1]
    return cv2.remap(img, x, y, interpolation, borderMode=cv2.BORDER_REPLICATE)


def resize_flow(flow: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A flow field resampled to ``size`` (``S`` or ``(height, width)``), its vectors scaled with it.

    A flow computed at a working resolution and fed to a network of another input size
    (issue 21: STSTNet's 28 px flow computed on larger crops): the field is area-averaged
    when it shrinks (``cv2.INTER_AREA``, no aliasing of the motion) and bilinear when it
    grows, and ``u`` / ``v`` are multiplied by the width / height ratio, because a
    displacement of ``d`` working pixels is ``d * new / old`` pixels at the new size.
    """
    f = _check_flow(flow)
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    old_h, old_w = f.shape[:2]
    if (old_h, old_w) == (height, width):
        return f.astype(np.float32, copy=True)
    shrink = height <= old_h and width <= old_w
    resized = cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    scale = np.array([width / old_w, height / old_h], dtype=np.float32)
    return (resized * scale).astype(np.float32)


def resize_map(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A scalar map (optical strain, magnitude) resampled like :func:`resize_flow`, values unchanged.

    Strain is a ratio of a displacement to a distance (``du/dx``), both of which scale with
    the image, so only the sampling changes.
    """
    m = np.asarray(image, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected an H x W map, got shape {m.shape}")
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if m.shape == (height, width):
        return m.copy()
    shrink = height <= m.shape[0] and width <= m.shape[1]
    return cv2.resize(m, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def endpoint_error(flow: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error ``|flow - truth|`` in pixels, over ``mask`` (True = count) if given."""
    a, b = _check_flow(flow), _check_flow(truth)
    if a.shape != b.shape:
        raise ValueError(f"flow shapes differ: {a.shape} vs {b.shape}")
    err = np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != err.shape or not m.any():
            raise ValueError("mask must match the flow and keep at least one pixel")
        err = err[m]
    return float(err.mean())
