"""COCO evaluation of a family's network on a dataset split."""

import dataclasses
import time

import numpy as np

from orienmask_tf.data import coco as coco_lib
from orienmask_tf.data.augment import ResizeEvalTransform
from orienmask_tf.eval.coco_eval import CocoEvaluator
from orienmask_tf.export.serving import InferenceModel


def _eval_encoder(gt):
    # Only what maps detections back to the original image; no mask padding.
    return {"image_info": gt["image_info"], "image_id": gt["image_id"]}


class NetworkEvaluator:
    """Decode (XLA) and score ``network`` on ``split`` of ``config.data``.

    Args:
        config: an ``Experiment``.
        split: ``"val"`` or ``"train"``.
        max_images: evaluate the first N images only (0 = all).
        batch_size: evaluation batch (default ``train.batch_size``).
        jit_compile: XLA for network + decoding (one compile per batch shape).

    ``evaluator(network, verbose)`` returns ``{"bbox": {...}, "segm": {...}}``
    with the 12 COCO metrics each; ``last_results`` keeps the COCO results.
    """

    def __init__(self, config, split="val", max_images=0, batch_size=None,
                 jit_compile=True):
        from orienmask_tf.data.pipeline import build_dataset

        self.config = config
        annotations = getattr(config.data, f"{split}_annotations")
        images = getattr(config.data, f"{split}_images")
        if not annotations:
            raise ValueError(f"evaluation needs data.{split}_annotations and "
                             f"data.{split}_images (a COCO JSON)")
        self.annotations = annotations
        self.coco = coco_lib.load_coco(annotations, images,
                                       on_error=config.data.on_error)
        if max_images:
            self.coco = _first_images(self.coco, max_images)
        # InferenceModel takes RGB in [0, 1] and applies the network's own
        # normalisation (the family's serving adapter): feed the plain
        # bilinear resize to [0, 1], the same for every family.
        data = dataclasses.replace(config.data, deterministic=True)
        self.dataset = build_dataset(
            config, split, encoder=_eval_encoder, data=data,
            batch_size=batch_size or config.train.batch_size, training=False,
            coco=self.coco, transform=ResizeEvalTransform(
                config.image_size, min_box_size=data.min_box_size))
        self.jit_compile = jit_compile
        self.last_results = None
        self.seconds = 0.0

    def __call__(self, network, verbose=True):
        start = time.perf_counter()
        anchors, decode_kwargs = self.config.family.inference_args(
            self.config)
        inference = InferenceModel(network, self.config.image_size, anchors,
                                   decode_kwargs,
                                   jit_compile=self.jit_compile)
        evaluator = CocoEvaluator(self.annotations, self.coco.category_ids)
        for images, info in self.dataset:
            det = inference.detect(images)
            evaluator.update({"boxes_xyxy": det["boxes"],
                              "scores": det["scores"],
                              "classes": det["classes"],
                              "masks": det["masks"],
                              "num_detections": det["num_detections"]},
                             info["image_info"], info["image_id"])
        stats = evaluator.evaluate(verbose=verbose)
        self.last_results = evaluator.results
        self.seconds = time.perf_counter() - start
        return stats


def _first_images(coco, count):
    """A view of ``coco`` limited to its first ``count`` images."""
    view = object.__new__(type(coco))
    view.__dict__.update(coco.__dict__)
    view.records = coco.records[:count]
    return view
