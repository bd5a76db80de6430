"""Batch-1 CPU inference latency of the papers' timing-table models (``mer-keras bench latency``).

What the papers report
----------------------
* ShuffleNetV2-SVM paper (``liu2022-shufflenetv2-tvl1-svm``), **Table 4** "Comparing the
  time to identify a single sentiment sample by different network models" (ms):
  ResNet50 105.9, DeiT 168, MobileNetV2 24, ShuffleNetV2 + CBAM 28.5, ShuffleNetV2 + ViT
  37.9. The DeiT size is not named; the paper's text (section "Improved lightweight ViT
  module") says DeiT needs "more than 10 G" multiply-adds, which only DeiT-Base/16
  (17.6 G) satisfies (Small 4.6 G, Tiny 1.3 G), so the row is ``deit_base``.
  Hardware stated in "Experiment settings": Intel Core i9-9980HK CPU, 32 GB RAM, AMD
  Radeon Pro 5500M GPU, Keras; whether inference ran on the CPU or the GPU is not stated.
* MobileViT paper (``liu2022-mobilevit-macro-transfer``): "the time to process individual
  samples was only 35.4 ms" (Abstract) for MobileViT-S (the largest scale, section
  "Experimental setup"). Its Table 4 (MobileNetV3, ResNet18, MobileViT, ViT) is an image
  whose values are not in the text, and it has no MobileNetV2 row, so the paper gives no
  own ratio to MobileNetV2. Both papers state the same hardware, so
  :data:`PAPER_TIMES` also records the *cross-paper* ratio 35.4 / 24 = 1.475 (flagged as
  such; it is not a same-table measurement).
* Off-TANet paper (``zhang2021-off-tanet``): no time; Table 2 gives 59,403 parameters and
  30.08 M FLOPs. The row is measured without a paper value.

What is measured
----------------
:func:`measure_latency` times one forward pass of a batch of ``batch_size`` random
images, ``model(x, training=False)`` inside ``tf.function(jit_compile=False)`` (mode
``"compiled"``, the default): the graph a deployed Keras model runs, without
``model.predict``'s per-call set-up. Other modes, for comparison:

* ``"predict_on_batch"``: Keras' own single-batch inference path (it also runs a
  compiled ``tf.function``; it adds a NumPy conversion and a little Python);
* ``"frozen"``: the same concrete function with the variables folded into constants
  (``convert_variables_to_constants_v2``), so Grappler can fold BatchNorm into the
  convolutions — the fastest TensorFlow graph without XLA;
* ``"xla"``: ``tf.function(jit_compile=True)``;
* ``"eager"``: ``model(x, training=False)`` op by op (Python overhead per layer);
* ``"predict"``: ``model.predict(x)`` per call (builds a data adapter every call).

Measured numbers: docs/benchmarks.md, section "Model timing" (``mer-keras bench latency``).

``compiled`` and ``predict_on_batch`` agree within the noise (both run the same compiled
graph); ``compiled`` is the default. ``frozen`` is the fastest TensorFlow path for the
convolutional networks (BatchNorm folded into the convolutions) and hardly changes the
transformers. XLA on the CPU is much slower for depthwise convolutions — do not use it for
these models. A fixed per-call overhead (``eager``, ``predict``) compresses every ratio toward
1; the papers' ratios are compressed in the same direction (DeiT-Base 7.0 for 59x the
FLOPs of MobileNetV2, ResNet50 4.4 for 13x), which suggests their times include such an
overhead or ran on the GPU.

Why MobileViT-S is well above MobileNetV2 here (and above the cross-paper 1.47): it has 6.7x
the FLOPs (4.0 vs 0.6 GFLOPs at 256 vs 224 px) and already runs at a higher FLOP rate than
MobileNetV2. An op-level profile of the frozen graph (``RunMetadata`` step stats) spreads
its time over convolutions, swish (the architecture's activation), dense / batched matrix
products, transposes (unfold / fold and the head split, the same as the reference
implementation) and LayerNorm; scaling ``q`` instead of the N x N logits changed nothing
measurable. The ratio is inherent to the architecture, not a slow layer.

:func:`run_latency_bench` builds every model of :data:`TABLE4_ROWS` at its paper input
size, warms each up, then **interleaves** the timed repetitions round-robin (rotating the
start model each round) so that load changes on a shared machine hit all models alike,
and reports the median per model and its ratio to MobileNetV2 *measured in the same
run*. Thread settings are TensorFlow's defaults (intra-op pool = number of cores,
inter-op pool chosen by the runtime); they are printed in the header and can be set
with ``tf.config.threading`` before TensorFlow runs its first op.

Other processes' load
---------------------
A time measured while other jobs share the cores is too high (by how much: docs/benchmarks.md,
section "Model timing"), and a saved one would mislead every later estimate.
:class:`OtherLoad` measures, around a timed block, how many cores' worth of CPU time
*other* processes used (all cores' busy time from ``/proc/stat`` minus this process's
own CPU time, over the wall time), so that saved timings can record it and be re-measured
when they were taken above :data:`QUIET_OTHER_CORES` (:func:`measured_quietly`). The
load average cannot tell this: it counts this process's own threads too.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: Model name used as the 1.0 reference of the ratio column.
REFERENCE = "mobilenet_v2"

#: Registry names of the rows of the papers' timing tables, in the order printed.
TABLE4_ROWS: tuple[str, ...] = (
    "mobilenet_v2", "shufflenet_v2_cbam", "shufflenet_v2_vit", "resnet50", "deit_base",
    "mobilevit_s", "off_tanet")

#: Input size (square, 3 channels) used by each paper for the model (ShuffleNetV2-SVM
#: paper: 224 x 224 crops; MobileViT paper: 256 x 256 crops; Off-TANet: 112 x 112 flow).
INPUT_SIZES: dict[str, int] = {
    "mobilenet_v2": 224, "shufflenet_v2_cbam": 224, "shufflenet_v2_vit": 224,
    "resnet50": 224, "deit_base": 224, "deit_small": 224, "deit_tiny": 224,
    "shufflenet_v2": 224, "mobilevit_s": 256, "mobilevit_xs": 256, "mobilevit_xxs": 256,
    "off_tanet": 112,
}
DEFAULT_INPUT_SIZE = 224

_SHUFFLENET_T4 = "liu2022-shufflenetv2-tvl1-svm Table 4"


@dataclass(frozen=True)
class PaperTime:
    """A per-sample recognition time reported by a paper.

    ``ms``: the reported time (None when the paper reports none); ``source``: paper key
    and table/section; ``paper_ratio``: ``ms`` / the same table's MobileNetV2 time (None
    when the table has no MobileNetV2 row); ``cross_paper_ratio``: ratio to MobileNetV2 of
    another paper stated to run on the same hardware (not a same-table measurement).
    """

    label: str
    ms: float | None
    source: str
    paper_ratio: float | None = None
    cross_paper_ratio: float | None = None
    note: str = ""


_MNV2_MS = 24.0

#: Paper times per registry name (see the module docstring for the sources).
PAPER_TIMES: dict[str, PaperTime] = {
    "mobilenet_v2": PaperTime("MobileNetV2", _MNV2_MS, _SHUFFLENET_T4, 1.0),
    "shufflenet_v2_cbam": PaperTime("ShuffleNetV2 + CBAM", 28.5, _SHUFFLENET_T4, 28.5 / _MNV2_MS),
    "shufflenet_v2_vit": PaperTime("ShuffleNetV2 + ViT", 37.9, _SHUFFLENET_T4, 37.9 / _MNV2_MS),
    "resnet50": PaperTime("ResNet50", 105.9, _SHUFFLENET_T4, 105.9 / _MNV2_MS),
    "deit_base": PaperTime(
        "DeiT", 168.0, _SHUFFLENET_T4, 168.0 / _MNV2_MS,
        note="size not named; 'more than 10 G' multiply-adds in the text -> DeiT-Base/16"),
    "mobilevit_s": PaperTime(
        "MobileViT-S", 35.4, "liu2022-mobilevit-macro-transfer Abstract (Table 4 is an image)",
        None, 35.4 / _MNV2_MS,
        note="no MobileNetV2 row; cross-paper ratio uses Table 4 of liu2022-shufflenetv2 "
             "(same hardware stated)"),
    "off_tanet": PaperTime(
        "Off-TANet", None, "zhang2021-off-tanet Table 2 (no time; 59,403 params, 30.08M FLOPs)"),
}

MODES = ("compiled", "predict_on_batch", "frozen", "xla", "eager", "predict")


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _make_runner(model, x, mode: str) -> Callable[[], object]:
    """A zero-argument callable running one inference on ``x`` and waiting for its result."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "predict_on_batch":
        x_np = np.asarray(x)
        return lambda: model.predict_on_batch(x_np)
    if mode == "predict":
        x_np = np.asarray(x)
        return lambda: model.predict(x_np, batch_size=len(x_np), verbose=0)
    backend = _backend()
    if mode == "eager":
        if backend == "tensorflow":
            import tensorflow as tf

            xt = tf.constant(x)
            return lambda: np.asarray(model(xt, training=False))
        return lambda: np.asarray(model(x, training=False))
    if backend == "jax" and mode == "compiled":
        import jax

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        fn = jax.jit(lambda a, b, inp: model.stateless_call(a, b, inp, training=False)[0])
        xj = jax.numpy.asarray(x)
        return lambda: fn(tv, ntv, xj).block_until_ready()
    if backend != "tensorflow":
        raise ValueError(f"mode {mode!r} needs the TensorFlow backend (running {backend!r})")
    import tensorflow as tf

    xt = tf.constant(x)
    fn = tf.function(lambda inp: model(inp, training=False), jit_compile=(mode == "xla"))
    if mode == "frozen":
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2)

        fn = convert_variables_to_constants_v2(
            fn.get_concrete_function(tf.TensorSpec(xt.shape, xt.dtype)))
        return lambda: _first(fn(xt)).numpy()
    return lambda: _first(fn(xt)).numpy()


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _input_for(model, batch_size: int, seed: int = 0) -> np.ndarray:
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"model input shape {model.input_shape} must be static")
    rng = np.random.default_rng(seed)
    return rng.random((batch_size,) + shape, dtype=np.float32)


def _time_call(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1e3


def _stats(times_ms: Sequence[float]) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "repeats": int(t.size)}


def measure_latency(model, *, batch_size: int = 1, repeats: int = 30, warmup: int = 5,
                    mode: str = "compiled", seed: int = 0) -> dict:
    """Inference latency of ``model`` on one random batch (see the module docstring).

    Runs ``warmup`` untimed calls (tracing / graph optimisation happen there), then
    ``repeats`` timed calls, each waiting for the output. Returns ``median_ms``,
    ``p10_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``repeats``, ``warmup``, ``mode``,
    ``batch_size``, ``input_shape`` and the raw ``times_ms``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if warmup < 0:
        raise ValueError("warmup must be >= 0")
    x = _input_for(model, batch_size, seed)
    run = _make_runner(model, x, mode)
    for _ in range(max(1, warmup)):  # at least one call to trace the function
        run()
    times = [_time_call(run) for _ in range(repeats)]
    return {**_stats(times), "warmup": int(warmup), "mode": mode, "batch_size": int(batch_size),
            "input_shape": tuple(x.shape[1:]), "times_ms": times}


def thread_settings() -> dict:
    """Thread settings in effect (0 = TensorFlow's default choice)."""
    info = {"cpu_count": os.cpu_count(), "backend": _backend()}
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["intra_op_threads"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["inter_op_threads"] = tf.config.threading.get_inter_op_parallelism_threads()
    return info


def run_latency_bench(names: Sequence[str] = TABLE4_ROWS, repeats: int = 30, *,
                      warmup: int = 5, input_sizes: dict[str, int] | None = None,
                      batch_size: int = 1, mode: str = "compiled", classes: int = 3,
                      print_fn: Callable[[str], None] | None = print):
    """Latency table of ``names`` (registry names), ratios to MobileNetV2 of the same run.

    Every model is built with ``classes`` outputs at its paper input size
    (:data:`INPUT_SIZES`, overridable per name with ``input_sizes``), warmed up
    ``warmup`` times, then timed ``repeats`` times round-robin across the models.
    MobileNetV2 is added when missing (it is the ratio reference). Returns a pandas
    DataFrame with columns ``model``, ``input``, ``params`` (trainable), ``gflops``
    (analytical, :func:`mer_keras.models.summary.count_flops`), ``median_ms``,
    ``p10_ms``, ``p90_ms``, ``ratio`` (median / MobileNetV2 median), ``paper_ms``,
    ``paper_ratio`` (the paper's own ratio to its MobileNetV2; for MobileViT-S the
    cross-paper ratio, see :data:`PAPER_TIMES`), ``flops_ratio`` and ``paper_source``;
    prints it with ``print_fn`` (None = silent).
    """
    import keras
    import pandas as pd

    from mer_keras.models import registry
    from mer_keras.models.summary import count_flops, count_trainable

    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(dict.fromkeys(names))
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    sizes = {**INPUT_SIZES, **(input_sizes or {})}

    runners, info = {}, {}
    for name in names:
        size = sizes.get(name, DEFAULT_INPUT_SIZE)
        model = registry.get(name)(classes=classes, input_shape=(size, size, 3))
        try:
            flops = count_flops(model)
        except Exception:  # noqa: BLE001 - FLOPs are informative only
            flops = float("nan")
        info[name] = {"input": f"{size}x{size}x3", "params": count_trainable(model),
                      "gflops": flops / 1e9, "model": model}
        run = _make_runner(model, _input_for(model, batch_size), mode)
        for _ in range(max(1, warmup)):
            run()
        runners[name] = run

    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate the start so no model is always first
            times[name].append(_time_call(runners[name]))

    ref = float(np.median(times[REFERENCE]))
    ref_flops = info[REFERENCE]["gflops"]
    rows = []
    for name in names:
        st = _stats(times[name])
        paper = PAPER_TIMES.get(name)
        p_ratio = None
        if paper is not None:
            p_ratio = paper.paper_ratio if paper.paper_ratio is not None else paper.cross_paper_ratio
        rows.append({
            "model": name, "input": info[name]["input"], "params": info[name]["params"],
            "gflops": info[name]["gflops"], "median_ms": st["median_ms"],
            "p10_ms": st["p10_ms"], "p90_ms": st["p90_ms"], "ratio": st["median_ms"] / ref,
            "paper_ms": np.nan if paper is None or paper.ms is None else paper.ms,
            "paper_ratio": np.nan if p_ratio is None else p_ratio,
            "flops_ratio": info[name]["gflops"] / ref_flops,
            "paper_source": "" if paper is None else paper.source,
        })
    for name in names:
        del info[name]["model"]
    runners.clear()
    keras.backend.clear_session()
    df = pd.DataFrame(rows)
    if print_fn is not None:
        th = thread_settings()
        print_fn(f"batch-{batch_size} inference latency, mode={mode!r}, median of {repeats} "
                 f"interleaved runs after {warmup} warm-up calls; backend {th['backend']}, "
                 f"{th['cpu_count']} CPUs, intra-op threads {th.get('intra_op_threads', '-')}, "
                 f"inter-op threads {th.get('inter_op_threads', '-')} (0 = TF default)")
        print_fn(format_table(df))
    return df


def format_table(df) -> str:
    """Text rendering of a :func:`run_latency_bench` table, paper sources as footnotes."""
    shown = df.drop(columns=["paper_source"]).copy()
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.2f}", na_rep="-")
    notes = []
    for name in df["model"]:
        paper = PAPER_TIMES.get(name)
        if paper is not None:
            extra = f" [{paper.note}]" if paper.note else ""
            cross = " (paper_ratio is cross-paper)" if (
                paper.paper_ratio is None and paper.cross_paper_ratio is not None) else ""
            notes.append(f"  {name}: {paper.source}{cross}{extra}")
    return text + ("\npaper values:\n" + "\n".join(notes) if notes else "")


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mode", default="compiled", choices=MODES)
    p.add_argument("--models", nargs="+", default=list(TABLE4_ROWS))
    args = p.parse_args(argv)
    run_latency_bench(args.models, repeats=args.repeats, warmup=args.warmup, mode=args.mode)
    return 0


QUIET_OTHER_CORES = 0.25
"""Cores' worth of CPU time other processes may use while a saved timing is taken for it to count as quiet."""


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all cores spent busy since boot (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 5:
        return None
    idle = ticks[3] + ticks[4]  # idle + iowait; guest time is already inside user and nice
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """Cores' worth of CPU time used by *other* processes while a ``with`` block ran.

    ``with OtherLoad() as load: ...`` then ``load.cores``: (busy CPU seconds of all cores
    - this process's CPU seconds) / wall seconds, e.g. 1.0 when another job kept one core
    busy throughout; ``None`` where ``/proc/stat`` is unavailable.
    """

    def __init__(self):
        self.cores: float | None = None

    def __enter__(self) -> "OtherLoad":
        self._busy, self._own, self._wall = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy, wall = _busy_cpu_seconds(), time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        self.cores = round(max(0.0, other) / wall, 2)


QUIET_ENV = "MER_KERAS_QUIET_OTHER_CORES"
"""Environment variable that replaces :data:`QUIET_OTHER_CORES` (``inf``: reuse every saved timing,
e.g. on a machine always shared with other jobs, or in a test suite running in parallel)."""


def quiet_limit() -> float:
    """:data:`QUIET_OTHER_CORES`, or the value of the :data:`QUIET_ENV` environment variable."""
    value = os.environ.get(QUIET_ENV)
    if value is None:
        return QUIET_OTHER_CORES
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{QUIET_ENV}={value!r}: expected a number of cores (or inf)") from None


def measured_quietly(saved: dict) -> bool:
    """Whether a saved timing may be reused: it records :class:`OtherLoad` cores at most :func:`quiet_limit`.

    Timings saved without that record (older files) or where it was unknown are not reused
    (unless the limit is ``inf``).
    """
    cores = saved.get("other_cores")
    limit = quiet_limit()
    return limit == math.inf or (cores is not None and cores <= limit)


def load_note(cores: float | None) -> str:
    """``""`` for a quiet measurement, else a warning naming the other processes' load."""
    if cores is None:
        return "; other processes' load unknown"
    if cores <= quiet_limit():
        return ""
    return f"; other processes used {cores:.1f} cores meanwhile (times too long; measured again next run)"


__all__ = ["REFERENCE", "TABLE4_ROWS", "INPUT_SIZES", "PAPER_TIMES", "PaperTime", "MODES",
           "measure_latency", "run_latency_bench", "format_table", "thread_settings",
           "QUIET_OTHER_CORES", "QUIET_ENV", "quiet_limit", "OtherLoad", "measured_quietly", "load_note"]

if __name__ == "__main__":
    raise SystemExit(main())
