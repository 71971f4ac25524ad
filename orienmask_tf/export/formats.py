# SPDX-License-Identifier: Apache-2.0
"""Names of the deployment formats ``benchmark`` times (no TensorFlow import,
so the CLI can list them cheaply)."""

FORMATS = ("keras_eager", "tf_function", "saved_model_xla", "tflite_fp32",
           "tflite_fp16", "tflite_int8_dynamic", "tflite_int8", "onnx",
           "tflite_int8_e2e")
