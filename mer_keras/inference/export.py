"""Export a bundle's network for small devices: TensorFlow Lite (``mer-keras export``).

The MobileViT paper names deployment on small devices as future work. The installed
TensorFlow (2.21) converts the package's Keras 3 models with
``tf.lite.TFLiteConverter.from_keras_model`` (it exports the model's inference function
and converts it; measured once on the shared, loaded 2-core CPU: Off-TANet 112 px 4.4 s,
ShuffleNetV2 0.5x at 32 px 13 s, STSTNet 1.4 s), and runs them with
``tf.lite.Interpreter`` (deprecated in favour of the separate ``ai_edge_litert`` package,
which is used when installed). Float32 weights, no quantisation: the exported network
computes what the Keras model computes (:func:`check_tflite` measures the difference).

Only the network is exported: the pre-processing (alignment, TV-L1, masks) and the
normalisation statistics stay in the bundle's ``pipeline.json``; :func:`export_tflite`
writes a copy of the parts a device needs next to the ``.tflite`` file
(``<name>.tflite.json``: input kind, shape, dtype, normalisation, class names, score kind,
frame sampling, pre-processing parameters).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np


def _interpreter(model_content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter  # the maintained runtime, if installed
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        return Interpreter(model_content=model_content)


def convert_tflite(model) -> bytes:
    """The ``.tflite`` flatbuffer of a Keras model (float32, converter defaults)."""
    import tensorflow as tf

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its signature listing
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        return converter.convert()


def random_inputs(shape, dtype: str, n: int, seed: int = 0, *, pixels: bool = False) -> np.ndarray:
    """``n`` random network inputs: pixels in 0..255 for uint8 inputs (or ``pixels=True``: an
    image fed as float without normalisation), else standard normal (flow in pixels, or
    normalised inputs)."""
    rng = np.random.default_rng(seed)
    if dtype == "uint8" or pixels:
        return rng.integers(0, 256, size=(n, *shape)).astype(dtype)
    return rng.standard_normal((n, *shape)).astype(dtype)


def check_tflite(model, content: bytes, *, n: int = 8, seed: int = 0, inputs: np.ndarray | None = None,
                 pixels: bool = False) -> dict:
    """Run ``n`` random inputs through the Keras model and the TFLite model; return the differences.

    Returns ``max_abs_diff``, ``mean_abs_diff``, ``max_rel_diff`` (max abs diff / max abs
    Keras output), ``argmax_agreement`` (share of inputs with the same top class), ``n``,
    ``output_range`` of the Keras outputs and ``runtime`` (which interpreter ran).
    """
    shape = tuple(int(v) for v in model.input_shape[1:])
    dtype = str(model.inputs[0].dtype).replace("<dtype: '", "").replace("'>", "")
    x = random_inputs(shape, dtype, n, seed, pixels=pixels) if inputs is None else np.asarray(inputs)
    reference = np.asarray(model(x, training=False), dtype=np.float64)
    interpreter = _interpreter(content)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [1, *shape])
    interpreter.allocate_tensors()
    got = []
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i: i + 1].astype(inp["dtype"]))
        interpreter.invoke()
        got.append(np.array(interpreter.get_tensor(out["index"]), dtype=np.float64)[0])
    got = np.stack(got)
    diff = np.abs(got - reference)
    scale = float(np.abs(reference).max()) or 1.0
    return {"n": int(len(x)), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / scale),
            "argmax_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))),
            "output_range": [float(reference.min()), float(reference.max())],
            "runtime": type(interpreter).__module__.split(".")[0]}


def export_tflite(pipeline, out, *, check: int = 8, seed: int = 0) -> dict:
    """Write the network of ``pipeline`` (a :class:`~mer_keras.inference.predict.Pipeline` or a
    bundle path) as a TFLite file ``out`` (atomically) plus ``<out>.json``; return a report.

    The report holds ``path``, ``bytes``, ``input`` and, with ``check > 0``, the
    :func:`check_tflite` numbers on ``check`` random inputs.
    """
    from .predict import Pipeline, load_pipeline

    if not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    content = convert_tflite(pipeline.model)
    tmp = out.with_name(f".tmp-{out.name}")
    tmp.write_bytes(content)
    os.replace(tmp, out)
    keys = ("input", "normalisation", "class_names", "output", "frame_sampling", "preprocess", "recipe",
            "mer_keras_version")
    side = {k: pipeline.meta.get(k) for k in keys}
    side["tflite"] = {"file": out.name, "note": "network only; pre-process and normalise as described here"}
    side_path = out.with_name(out.name + ".json")
    side_path.write_text(json.dumps(side, indent=2) + "\n")
    report = {"path": str(out), "bytes": len(content), "sidecar": str(side_path), "input": pipeline.meta["input"]}
    if check:
        pixels = pipeline.input_kind != "flow_stack" and pipeline.normalisation is None
        report["check"] = check_tflite(pipeline.model, content, n=check, seed=seed, pixels=pixels)
    return report


__all__ = ["check_tflite", "convert_tflite", "export_tflite", "random_inputs"]
