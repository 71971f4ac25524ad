"""Latency of every deployment format on this machine (``orienmask-tf benchmark``).

Each format runs the same model end to end, from pixels to padded
detections (masks included), with warm-up runs first and the median of the
timed runs reported:

* Keras eager: the network (``InferenceModel.raw``) then the eager decoder;
* ``tf.function``: network + decoding in one graph, no XLA;
* XLA SavedModel: the exported ``serving_default`` (uint8 image of the
  original size in, resize inside, XLA-compiled network + decoding),
  reloaded with ``tf.saved_model.load``;
* TFLite fp32 / fp16 / int8-dynamic with ``ai_edge_litert``; full int8 is
  the calibrated network plus the float decoder (see ``export/tflite.py``);
* ONNX Runtime (CPU provider) on the tf2onnx graph;
* ``tflite_int8_e2e``: the quantized CPU route (``export/quantize.py``),
  one TFLite file from uint8 pixels of the original image to detections
  (float resize, full-integer network, float decoding), at every batch
  size (one calibration, one spliced model per batch).

The model may be the network of any family (``Segmenter.benchmark`` passes
its anchors and decoding settings).
"""

import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf

from orienmask_tf.export.formats import FORMATS
from orienmask_tf.export.onnx import export_onnx
from orienmask_tf.export.quantize import convert_int8_end_to_end
from orienmask_tf.export.quantize import convert_int8_network
from orienmask_tf.export.quantize import int8_runner
from orienmask_tf.export.saved_model import export_saved_model
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.export.tflite import convert_tflite
from orienmask_tf.export.tflite import tflite_runner

BATCHED = ("keras_eager", "tf_function", "saved_model_xla")


def _time(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), 1e3 * min(times)


def _materialize(outputs):
    for value in outputs.values():
        np.asarray(value)


def benchmark_formats(model, image_size, anchors, decode_kwargs,
                      formats=FORMATS, batch_sizes=(1, 8), warmup=2, runs=5,
                      original_size=(480, 640), calibration_count=4,
                      log=print):
    """Returns rows ``{format, batch, median_ms, min_ms, prepare_s}``."""
    height, width = image_size
    rng = np.random.RandomState(0)
    plain = InferenceModel(model, image_size, anchors, decode_kwargs,
                           jit_compile=False)
    graph = tf.function(plain.detect, reduce_retracing=True)
    rows = []

    def record(name, batch, fn, prepare_s=0.0):
        median, best = _time(fn, warmup, runs)
        rows.append(dict(format=name, batch=batch, median_ms=median,
                         min_ms=best, prepare_s=prepare_s))
        log(f"{name:22s} batch {batch}: median {median:8.1f} ms  "
            f"min {best:8.1f} ms  (prepare {prepare_s:.1f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        for batch in batch_sizes:
            inputs = rng.uniform(0, 1, (batch, height, width, 3)).astype(
                np.float32)
            pixels = rng.randint(0, 256, (batch,) + tuple(original_size) + (3,),
                                 dtype=np.uint8)
            if "keras_eager" in formats:
                record("keras_eager", batch, lambda: _materialize(
                    plain.decode_raw(plain.raw(inputs))))
            if "tf_function" in formats:
                record("tf_function", batch,
                       lambda: _materialize(graph(tf.constant(inputs))))
            if "saved_model_xla" in formats:
                path = os.path.join(tmp, "saved_model")
                start = time.perf_counter()
                if not os.path.exists(path):
                    export_saved_model(model, image_size, anchors,
                                       decode_kwargs, path)
                serve = tf.saved_model.load(path).signatures["serving_default"]
                prepare = time.perf_counter() - start
                record("saved_model_xla", batch, lambda: _materialize(
                    serve(images=tf.constant(pixels))), prepare)
        single = rng.uniform(0, 1, (1, height, width, 3)).astype(np.float32)
        for name in formats:
            if not name.startswith("tflite") or name == "tflite_int8_e2e":
                continue
            quant = {"tflite_fp32": None, "tflite_fp16": "fp16",
                     "tflite_int8_dynamic": "int8-dynamic",
                     "tflite_int8": "int8"}[name]
            calibration = ([rng.uniform(0, 1, single.shape).astype(np.float32)
                            for _ in range(calibration_count)]
                           if quant == "int8" else None)
            start = time.perf_counter()
            path = os.path.join(tmp, f"{name}.tflite")
            with open(path, "wb") as f:
                f.write(convert_tflite(model, image_size, anchors,
                                       decode_kwargs, quant, calibration))
            run = tflite_runner(path, plain.decode_raw if quant == "int8"
                                else None, num_threads=os.cpu_count())
            prepare = time.perf_counter() - start
            record(name, 1, lambda: run(single), prepare)
        if "tflite_int8_e2e" in formats:
            calibration = [rng.uniform(0, 1, single.shape).astype(np.float32)
                           for _ in range(calibration_count)]
            start = time.perf_counter()
            network = convert_int8_network(model, image_size, anchors,
                                           decode_kwargs, calibration)
            network_s = time.perf_counter() - start
            for batch in batch_sizes:
                start = time.perf_counter()
                run = int8_runner(convert_int8_end_to_end(
                    model, image_size, anchors, decode_kwargs,
                    batch_size=batch, network=network),
                    num_threads=os.cpu_count())
                pixels = rng.randint(0, 256, (batch,) + tuple(original_size)
                                     + (3,), dtype=np.uint8)
                prepare = time.perf_counter() - start + network_s
                record("tflite_int8_e2e", batch, lambda: run(pixels), prepare)
        if "onnx" in formats:
            path = os.path.join(tmp, "model.onnx")
            start = time.perf_counter()
            export_onnx(model, image_size, anchors, decode_kwargs, path)
            import onnxruntime

            session = onnxruntime.InferenceSession(
                path, providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: single}
            prepare = time.perf_counter() - start
            record("onnx", 1, lambda: session.run(None, feed), prepare)
    return rows


def format_table(rows, reference_ms=None):
    lines = ["| format | batch | median ms | min ms | ms / image | "
             "images / s | conversion / load s |"
             + (" vs official |" if reference_ms else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if reference_ms else "")]
    for row in rows:
        per_image = row["median_ms"] / row["batch"]
        line = (f"| {row['format']} | {row['batch']} | {row['median_ms']:.1f} "
                f"| {row['min_ms']:.1f} | {per_image:.1f} | "
                f"{1e3 / per_image:.2f} | {row['prepare_s']:.1f} |")
        if reference_ms:
            line += f" {per_image / reference_ms:.2f} |"
        lines.append(line)
    return "\n".join(lines)
