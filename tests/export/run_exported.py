"""Runs exported models in a fresh process (no Keras model in memory).

Usage: python run_exported.py KIND PATH INPUT.npz OUTPUT.npz
   or: python run_exported.py --jobs JOBS.json
KIND: saved_model (serving_default on uint8 `images`), saved_model_jpeg
(serve_jpeg on `encoded`), saved_model_raw (serve_raw on float `inputs`),
tflite or onnx (on float `inputs`). JOBS.json is a list of
``[KIND, PATH, INPUT.npz, OUTPUT.npz]``, run one after the other in this one
process (each artifact is loaded from disk; only the TF import is shared).
"""

import json
import sys

import numpy as np


def main(kind, path, inputs_path, output_path):
    data = np.load(inputs_path)
    if kind.startswith("saved_model"):
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        if kind == "saved_model":
            out = loaded.signatures["serving_default"](
                images=tf.constant(data["images"]))
        elif kind == "saved_model_jpeg":
            out = loaded.signatures["serve_jpeg"](
                images=tf.constant(list(data["encoded"])))
        else:
            out = loaded.signatures["serve_raw"](
                images=tf.constant(data["inputs"]))
        out = {k: v.numpy() for k, v in out.items()}
    elif kind == "tflite":
        from orienmask_tf.export.tflite import run_tflite

        out = run_tflite(path, data["inputs"])
    elif kind == "onnx":
        from orienmask_tf.export.onnx import run_onnx

        out = run_onnx(path, data["inputs"])
    else:
        raise SystemExit(f"unknown kind {kind}")
    np.savez(output_path, **out)


if __name__ == "__main__":
    if sys.argv[1] == "--jobs":
        with open(sys.argv[2]) as f:
            for job in json.load(f):
                main(*job)
    else:
        main(*sys.argv[1:])
