"""Box math shared by targets, losses and decoding (centre-size boxes)."""

import tensorflow as tf


def cxcywh_to_xyxy(boxes):
    """``(..., 4)`` centre-size boxes -> corners ``(x1, y1, x2, y2)``."""
    xy, wh = boxes[..., 0:2], boxes[..., 2:4]
    return tf.concat([xy - wh / 2, xy + wh / 2], axis=-1)


def pairwise_iou_cxcywh(boxes1, boxes2):
    """IoU of every box of ``boxes1 (..., n1, 4)`` with ``boxes2 (..., n2, 4)``.

    Same float32 operation order as the official ``bbox_ious``; a zero union
    (two empty boxes) gives IoU 0 instead of NaN.
    """
    c1, c2 = cxcywh_to_xyxy(boxes1), cxcywh_to_xyxy(boxes2)
    b1x1, b1y1, b1x2, b1y2 = [c1[..., k:k + 1] for k in range(4)]
    b2x1, b2y1, b2x2, b2y2 = [tf.expand_dims(c2[..., k], -2) for k in range(4)]
    dx = tf.maximum(tf.minimum(b1x2, b2x2) - tf.maximum(b1x1, b2x1), 0.0)
    dy = tf.maximum(tf.minimum(b1y2, b2y2) - tf.maximum(b1y1, b2y1), 0.0)
    inter = dx * dy
    area1 = (b1x2 - b1x1) * (b1y2 - b1y1)
    area2 = (b2x2 - b2x1) * (b2y2 - b2y1)
    union = (area1 + area2) - inter
    return tf.math.divide_no_nan(inter, union)


def shape_iou(wh1, wh2):
    """IoU of ``wh1 (n1, 2)`` and ``wh2 (n2, 2)`` boxes sharing one centre.

    The YOLOv3 anchor-matching overlap (official ``anchor_ious``).
    """
    inter = (tf.minimum(wh1[:, 0:1], wh2[None, :, 0])
             * tf.minimum(wh1[:, 1:2], wh2[None, :, 1]))
    area1 = wh1[:, 0:1] * wh1[:, 1:2]
    area2 = wh2[None, :, 0] * wh2[None, :, 1]
    union = (area1 + area2) - inter
    return tf.math.divide_no_nan(inter, union)


def first_argmax(values, axis=-1):
    """``argmax`` that returns the FIRST index among ties (torch/numpy rule)."""
    best = tf.reduce_max(values, axis=axis, keepdims=True)
    size = tf.shape(values)[axis]
    index = tf.range(size, dtype=tf.int32)
    shape = [1] * values.shape.rank
    shape[axis] = -1
    index = tf.reshape(index, shape)
    return tf.reduce_min(
        tf.where(tf.equal(values, best), index, size), axis=axis)
