# SPDX-License-Identifier: Apache-2.0
"""OrienMask's serving adapter: what ``export.serving.InferenceModel`` needs.

Input ``x / 255`` (official ``transform_infer_544``); decoding is
``families.orienmask.decode.decode_orienmask`` (paper Eq. 3); ``anchors``
is the ``(9, 2)`` array.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.families.orienmask.decode import decode_orienmask


class OrienMaskAdapter:
    """OrienMask: ``/ 255`` input, ``decode_orienmask``.

    ``anchors``: ``(9, 2)`` in input pixels; ``decode_kwargs``:
    ``conf_thresh``, ``nms``, ``nms_threshold``, ``nms_pre``, ``nms_post``,
    ``orien_thresh``.
    """

    name = "orienmask"

    def __init__(self, model, image_size, anchors, decode_kwargs):
        self.image_size = tuple(int(v) for v in image_size)
        self.anchors = np.asarray(anchors, np.float32)
        self.decode_kwargs = dict(decode_kwargs)
        self.num_classes = int(model.num_classes)

    def normalize(self, images):
        """RGB [0, 1] -> network input (the network takes [0, 1])."""
        return images

    def raw_outputs(self, outputs):
        return outputs

    def decode(self, outputs):
        result = decode_orienmask(outputs, self.anchors, self.image_size,
                                  self.num_classes, **self.decode_kwargs)
        return {
            "boxes": result["boxes_xyxy"],
            "scores": result["scores"],
            "classes": result["classes"],
            "num_detections": result["num_detections"],
            "masks": tf.cast(result["masks"], tf.uint8),
        }
