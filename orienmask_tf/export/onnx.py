"""ONNX export through tf2onnx (opset 17) from the non-XLA inference graph.

Same contract as the TFLite model: float32 ``[1, H, W, 3]`` in [0, 1] in,
detections in the network frame out. ``jit_compile`` functions export as an
unsupported ``PartitionedCall``, so the graph converted here is the plain
one. For TensorRT, build an engine from this file (``trtexec --onnx=...``):
TF-TRT is not available in TensorFlow >= 2.18.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.export.serving import InferenceModel

OPSET = 17


def export_onnx(model, image_size, anchors, decode_kwargs, output_path,
                opset=OPSET):
    """Write ``output_path`` (.onnx) and return it."""
    import tf2onnx

    height, width = image_size
    inference = InferenceModel(model, image_size, anchors, decode_kwargs,
                               jit_compile=False)
    spec = [tf.TensorSpec([1, height, width, 3], tf.float32, name="images")]
    function = tf.function(inference.detect, input_signature=spec)
    tf2onnx.convert.from_function(function, input_signature=spec,
                                  opset=opset, output_path=str(output_path))
    return output_path


def run_onnx(path, images):
    """Run with onnxruntime (CPU); dict of numpy arrays keyed like TF."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name:
                                np.asarray(images, np.float32)})
    return {name.split(":")[0]: value for name, value in zip(names, values)}
