"""COCO evaluation of a family's network on a dataset split.

The ground truth scored is the one the reader kept (``kept_ground_truth``):
with ``data.on_error: skip`` an annotation ``load_coco`` skipped (a
2-point polygon, a box outside the image, ...) is neither trained on nor
scored, and an image that cannot be decoded is not evaluated; the skips
are counted and their totals printed after each evaluation.
"""

import dataclasses
import time

import numpy as np
from pycocotools import mask as mask_utils

from orienmask_tf.data import coco as coco_lib
from orienmask_tf.data.augment import ResizeEvalTransform
from orienmask_tf.data.pipeline import data_errors
from orienmask_tf.eval.coco_eval import CocoEvaluator
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.progress import bar


def kept_ground_truth(coco):
    """The COCO ground-truth dict of what ``coco`` (a ``CocoDataset``)
    kept: its images, their checked annotations (missing ``id`` / ``area``
    / ``iscrowd`` filled in: ids past the largest, the segmentation's
    area, 0), its categories."""
    images, annotations = [], []
    next_id = 1 + max((a["id"] for r in coco.records for a in r["annotations"]
                       if isinstance(a.get("id"), int)), default=0)
    for record in coco.records:
        images.append({"id": record["image_id"],
                       "file_name": record["file_name"],
                       "height": record["height"], "width": record["width"]})
        for ann in record["annotations"]:
            ann = {k: v for k, v in ann.items() if k != "label"}
            if not isinstance(ann.get("id"), int):
                ann["id"], next_id = next_id, next_id + 1
            ann.setdefault("iscrowd", 0)
            if "area" not in ann:
                rle = coco_lib.segmentation_to_rle(
                    ann["segmentation"], record["height"], record["width"])
                ann["area"] = float(mask_utils.area(rle))
            annotations.append(ann)
    categories = [{"id": i, "name": n}
                  for i, n in zip(coco.category_ids, coco.class_names)]
    return {"images": images, "annotations": annotations,
            "categories": categories}


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

    ``evaluator(network, verbose, plots=None)`` returns ``{"bbox": {...},
    "segm": {...}}`` with the 12 COCO metrics each; ``last_results`` keeps
    the COCO results, ``last_cocoeval`` the precision arrays per IoU type
    (``eval.coco_eval.accumulated``) and ``last_image_ids`` the evaluated
    images; with ``plots`` (a folder) it also writes the evaluation
    pictures there (``write_plots``); ``progress=True`` draws a bar on
    stderr, one step per batch.
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
        self.ground_truth = kept_ground_truth(self.coco)
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
        self.batch_size = batch_size or config.train.batch_size
        self.last_results = None
        self.last_cocoeval = None
        self.last_image_ids = None
        self.last_plots = None
        self.seconds = 0.0

    def __call__(self, network, verbose=True, plots=None,
                 progress=False):
        start = time.perf_counter()
        anchors, decode_kwargs = self.config.family.inference_args(
            self.config)
        inference = InferenceModel(network, self.config.image_size, anchors,
                                   decode_kwargs,
                                   jit_compile=self.jit_compile)
        evaluator = CocoEvaluator(self.ground_truth, self.coco.category_ids)
        batches = -(-len(self.coco) // self.batch_size)
        with data_errors():
            for images, info in bar(self.dataset, total=batches,
                                    desc="evaluate", unit="batch",
                                    enabled=progress):
                det = inference.detect(images)
                evaluator.update({"boxes_xyxy": det["boxes"],
                                  "scores": det["scores"],
                                  "classes": det["classes"],
                                  "masks": det["masks"],
                                  "num_detections": det["num_detections"]},
                                 info["image_info"], info["image_id"])
        if self.coco.skipped:
            # Totals of this evaluation's reader (the first skip of each
            # kind was logged with its file and reason).
            print(f"evaluation skipped ({self.coco.summary()})", flush=True)
        stats = evaluator.evaluate(verbose=verbose)
        self.last_results = evaluator.results
        self.last_cocoeval = evaluator.last_cocoeval
        self.last_image_ids = sorted(set(evaluator.image_ids))
        self.seconds = time.perf_counter() - start
        if plots:
            self.write_plots(plots, verbose=verbose)
        return stats

    def write_plots(self, folder, score_threshold=0.3, verbose=True):
        """Write ``pr_curves``, ``per_class_ap`` and ``confusion_matrix``
        (``.png`` + ``.json``, ``eval.plots.write_evaluation_plots``) of the
        last evaluation into ``folder``; returns the paths."""
        from orienmask_tf.eval.plots import write_evaluation_plots

        if self.last_cocoeval is None:
            raise ValueError("write_plots: evaluate a network first")
        self.last_plots = write_evaluation_plots(
            folder, self.last_cocoeval, self.ground_truth, self.last_results,
            class_names=dict(zip(self.coco.category_ids,
                                 self.coco.class_names)),
            image_ids=self.last_image_ids, score_threshold=score_threshold,
            verbose=verbose)
        return self.last_plots


def _first_images(coco, count):
    """A view of ``coco`` limited to its first ``count`` images."""
    view = object.__new__(type(coco))
    view.__dict__.update(coco.__dict__)
    view.records = coco.records[:count]
    return view
