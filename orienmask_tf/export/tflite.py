"""TFLite export: a static ``[1, H, W, 3]`` float32 signature, builtin ops only.

The TFLite model takes RGB pixels already resized to the network size and
scaled to [0, 1] (TFLite has no builtin JPEG decoder; the official
inference transform is a plain resize + ``/ 255``; a YOLACT model applies
its mean / std normalisation inside) and returns the detections in the
network frame (``boxes`` in input pixels). Run it with
``ai_edge_litert.interpreter.Interpreter`` (``tf.lite.Interpreter`` is
deprecated).

Quantization (``quantize``):
* ``None``: float32.
* ``"fp16"``: float16 weights, float32 compute.
* ``"int8-dynamic"``: int8 weights, dynamic-range int8 matmul/conv.
* ``"int8"``: int8 weights and activations calibrated on ``calibration``
  images; inputs/outputs stay float. This file holds the NETWORK only and
  returns its raw outputs (OrienMask ``box_s32`` ... ``orien_s8``; YOLACT
  ``cls_score_l*``, ``bbox_pred_l*``, ``coeff_pred_l*``, ``protos``): with
  the OrienMask decoding in the graph TFLite's calibrator crashes
  (segfault in ``calibrator._feed_tensors``, TF 2.21), greedy or fast NMS
  alike; with the YOLACT decoding it converts, but the int8 graph fails at
  run time (quantized ``DIV``: "data[i] != zero_point", the IoU / box
  divisions) and would quantize the IoUs and softmax scores anyway.
  Decode its outputs in float with ``InferenceModel(...).decode_raw`` (or
  ``run_tflite(..., decoder=...)``).
"""

import tempfile

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.export.serving import InferenceModel

QUANTIZATIONS = (None, "fp16", "int8-dynamic", "int8")
SIGNATURE = "serve"


def convert_tflite(model, image_size, anchors, decode_kwargs, quantize=None,
                   calibration=None):
    """Return the TFLite flatbuffer (bytes).

    Args:
        calibration: for ``quantize="int8"``, an iterable of float32
            ``(1, H, W, 3)`` network inputs in [0, 1].
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, "
                         f"got {quantize!r}")
    if quantize == "int8" and calibration is None:
        raise ValueError("quantize='int8' needs calibration images")
    height, width = image_size
    inference = InferenceModel(model, image_size, anchors, decode_kwargs,
                               jit_compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            SIGNATURE, inference.raw if quantize == "int8" else inference.detect,
            input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32,
                                           name="images")])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8-dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "int8":
            samples = [np.asarray(x, np.float32) for x in calibration]
            if not samples:
                raise ValueError("quantize='int8': no calibration images")

            def representative():
                for x in samples:
                    yield {"images": x}

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
        return converter.convert()


def tflite_runner(flatbuffer_or_path, decoder=None, num_threads=None):
    """Load once with ai_edge_litert; returns ``images -> dict of arrays``.

    ``decoder``: a callable applied to raw outputs (for the network-only
    int8 model), e.g. ``InferenceModel(...).decode_raw``.
    """
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(flatbuffer_or_path, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(flatbuffer_or_path),
                                  num_threads=num_threads)
    else:
        interpreter = Interpreter(model_path=str(flatbuffer_or_path),
                                  num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE)

    def run(images):
        outputs = runner(images=np.asarray(images, np.float32))
        if decoder is not None:
            outputs = {k: np.asarray(v) for k, v in decoder(outputs).items()}
        return outputs

    return run


def run_tflite(flatbuffer_or_path, images, decoder=None):
    """One-off run of the ``serve`` signature; dict of numpy arrays."""
    return tflite_runner(flatbuffer_or_path, decoder)(images)
