"""Static-shape NMS for padded, batched candidates (XLA-compilable).

Both functions take centre-size boxes ``(B, K, 4)``, scores ``(B, K)`` and a
validity mask ``(B, K)`` and return a keep mask ``(B, K)`` in the INPUT order,
so callers choose the order of the survivors themselves.

* ``greedy_nms_mask``: exactly the classic greedy NMS of the official
  ``eval/src/nms_cpu.cpp`` (boxes visited by descending score, a box is
  suppressed by an earlier *kept* box when IoU >= threshold). It is computed
  as the fixed point of ``keep = valid & ~any_i(keep_i & S_ij)`` over the
  strictly upper-triangular suppression matrix ``S`` (Cluster-NMS, Zheng et
  al. 2021): because ``S`` only points from higher to lower scores the
  recursion has a unique solution, reached after at most ``K`` iterations
  (in practice a handful), each a ``(K,) x (K, K)`` product.
* ``fast_nms_mask``: YOLACT's matrix Fast NMS (one iteration of the above:
  already-suppressed boxes may still suppress). Faster, slightly different.

Ties in score are broken by the lower index first (stable sort); the
official code sorts with an unstable sort, so it leaves ties unspecified.
"""

import tensorflow as tf

from orienmask_tf.ops.box_ops import pairwise_iou


def _sorted_suppression(boxes, scores, valid, iou_threshold):
    """Score order, sorted validity and ``S_ij``: i (earlier) suppresses j."""
    num = boxes.shape[-2]
    ranked = tf.where(valid, scores, tf.fill(tf.shape(scores), -float("inf")))
    order = tf.argsort(ranked, axis=-1, direction="DESCENDING", stable=True)
    sorted_boxes = tf.gather(boxes, order, batch_dims=1)
    sorted_valid = tf.gather(valid, order, batch_dims=1)
    # float32 as nms_cpu.cpp: corners c -+ wh / 2, areas without +1, and
    # 0 / 0 = NaN, which never reaches a threshold (as in the C++ code).
    iou = pairwise_iou(sorted_boxes, sorted_boxes, box_format="cxcywh",
                       zero_union="nan")
    ones = tf.ones([num, num])
    upper = tf.cast(tf.linalg.band_part(ones, 0, -1) - tf.eye(num), tf.bool)
    suppress = ((iou >= iou_threshold) & upper[None]
                & sorted_valid[:, :, None] & sorted_valid[:, None, :])
    return order, sorted_valid, tf.cast(suppress, tf.float32)


def _unsort(sorted_keep, order):
    inverse = tf.argsort(order, axis=-1, stable=True)
    return tf.gather(sorted_keep, inverse, batch_dims=1)


def _suppressed_by(keep, suppress):
    # (B, 1, K) x (B, K, K): counts are small integers, exact in float32.
    hits = tf.matmul(tf.cast(keep, tf.float32)[:, None, :], suppress)
    return hits[:, 0, :] > 0.0


def greedy_nms_mask(boxes, scores, valid, iou_threshold=0.5):
    """Exact greedy NMS (suppress at IoU >= threshold); keep mask ``(B, K)``."""
    order, sorted_valid, suppress = _sorted_suppression(
        boxes, scores, valid, iou_threshold)

    def body(keep, _):
        new_keep = sorted_valid & ~_suppressed_by(keep, suppress)
        return new_keep, tf.reduce_any(tf.not_equal(new_keep, keep))

    keep, _ = tf.while_loop(
        lambda keep, changed: changed, body,
        (sorted_valid, tf.constant(True)),
        maximum_iterations=boxes.shape[-2] + 1)
    return _unsort(keep, order)


def fast_nms_mask(boxes, scores, valid, iou_threshold=0.5):
    """YOLACT Fast NMS: suppressed by ANY higher-scored valid box (IoU >= t)."""
    order, sorted_valid, suppress = _sorted_suppression(
        boxes, scores, valid, iou_threshold)
    keep = sorted_valid & ~_suppressed_by(sorted_valid, suppress)
    return _unsort(keep, order)
