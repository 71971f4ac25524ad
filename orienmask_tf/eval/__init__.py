"""COCO evaluation of instance-segmentation detections."""

from orienmask_tf.eval.coco_eval import CocoEvaluator
from orienmask_tf.eval.coco_eval import detections_to_coco
from orienmask_tf.eval.coco_eval import evaluate
from orienmask_tf.eval.coco_eval import METRIC_KEYS

__all__ = ["CocoEvaluator", "detections_to_coco", "evaluate", "METRIC_KEYS"]
