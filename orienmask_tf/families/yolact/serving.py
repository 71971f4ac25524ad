# SPDX-License-Identifier: Apache-2.0
"""YOLACT's serving adapter: what ``export.serving.InferenceModel`` needs.

Input ``(x * 255 - PIXEL_MEAN) / PIXEL_STD`` on RGB (``YolactEvalTransform``);
decoding is ``families.yolact.decode.YolactDecoder``; ``anchors`` is the list
of per-level anchor arrays; the training-only ``segm`` output is dropped.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.families.yolact.augment import PIXEL_MEAN as YOLACT_MEAN
from orienmask_tf.families.yolact.augment import PIXEL_STD as YOLACT_STD
from orienmask_tf.families.yolact.decode import YolactDecoder
from orienmask_tf.families.yolact.network import CLS_KEYS as YOLACT_CLS_KEYS


class YolactAdapter:
    """YOLACT: mean / std input on RGB 0..255, ``YolactDecoder``.

    ``anchors``: per-level ``(h_i * w_i * A, 4)`` anchors for the network
    input size (``ops.yolact_ops.yolact_config_anchors`` split with
    ``decode.yolact_decode.split_levels``); ``decode_kwargs``: the
    ``YolactDecoder`` arguments other than anchors / image_size /
    num_anchors (``nms_pre``, ``score_thr``, ``iou_thr``, ``top_k``,
    ``max_per_img``, ``mask_threshold``, ``style``).
    """

    name = "yolact"
    DECODE_KEYS = ("nms_pre", "score_thr", "iou_thr", "top_k", "max_per_img",
                   "mask_threshold", "style")

    def __init__(self, model, image_size, anchors, decode_kwargs):
        self.image_size = tuple(int(v) for v in image_size)
        self.decode_kwargs = dict(decode_kwargs)
        unknown = sorted(set(self.decode_kwargs) - set(self.DECODE_KEYS))
        if unknown:
            raise TypeError(f"YOLACT decode_kwargs: unknown {unknown}; "
                            f"expected a subset of {list(self.DECODE_KEYS)}")
        self.num_classes = int(model.num_classes)
        self.anchors = [np.asarray(a, np.float32).reshape(-1, 4)
                        for a in anchors]
        self._check_anchors(model)
        self.decoder = YolactDecoder(self.anchors, self.image_size,
                                     num_anchors=model.num_anchors,
                                     **self.decode_kwargs)
        self.mean = np.asarray(YOLACT_MEAN, np.float32)
        self.std = np.asarray(YOLACT_STD, np.float32)

    def _check_anchors(self, model):
        shapes = model.output_shapes(*self.image_size)
        expected = [shapes[k][1] * shapes[k][2] * model.num_anchors
                    for k in YOLACT_CLS_KEYS]
        got = [len(a) for a in self.anchors]
        if got != expected:
            raise ValueError(
                f"YOLACT anchors: {got} per level, but a "
                f"{self.image_size[0]}x{self.image_size[1]} input with "
                f"{model.num_anchors} anchor(s) per location needs {expected}")

    def normalize(self, images):
        """RGB [0, 1] -> ``(x * 255 - PIXEL_MEAN) / PIXEL_STD``."""
        return (images * 255.0 - self.mean) / self.std

    def raw_outputs(self, outputs):
        """Drop the training-only ``segm`` map."""
        return {k: v for k, v in outputs.items() if k != "segm"}

    def decode(self, outputs):
        result = self.decoder(outputs)
        return {
            "boxes": result["boxes"],
            "scores": result["scores"],
            "classes": result["labels"],
            "num_detections": result["num_detections"],
            "masks": tf.cast(result["masks"], tf.uint8),
        }
