"""Box math shared by targets, losses, assignment and decoding.

Boxes are ``(..., 4)``, either corners ``"xyxy"`` (x1, y1, x2, y2) or
centre-size ``"cxcywh"`` (cx, cy, w, h), in any unit. Every IoU of the
project is ``pairwise_iou`` (or ``pairwise_intersection_union`` for the
overlaps built on it: GIoU, DIoU, maIoU), one float32 operation order:

    w = max(min(x2a, x2b) - max(x1a, x1b), 0)      (same for h)
    inter = w * h
    union = (area_a + area_b) - inter,  area = (x2 - x1) * (y2 - y1)
    iou = inter / union

with centre-size boxes first turned into corners ``c -+ wh / 2`` (areas from
the corners, as the official ``bbox_ious`` and ``nms_cpu.cpp``). That order
is bit-identical to the official YOLO ``bbox_ious``, ``nms_cpu.cpp``, mmdet
``bbox_overlaps`` and the maIoU calculator; they differ only in what a zero
(or tiny) union gives, hence the two options:

* ``eps``: clamp the union to ``max(union, eps)`` first (mmdet and the
  maIoU code: ``1e-6``); a zero union then gives 0. None / 0: no clamp.
* ``zero_union``: without a clamp, what the ``0 / 0`` of two zero-area
  boxes gives (a zero-area box against a box with an area has IoU 0 in
  every mode): ``"zero"`` (``divide_no_nan``; the YOLO loss) or ``"nan"``
  (plain IEEE division, as ``nms_cpu.cpp`` and dbolya's ``jaccard``: NaN
  never reaches a threshold).

Tensors are computed with TF ops (graph / XLA safe); when neither input is a
tensor they are computed with numpy (e.g. ``data.augment``), same order.
"""

import numpy as np
import tensorflow as tf

BOX_FORMATS = ("xyxy", "cxcywh")
ZERO_UNION = ("zero", "nan")


def _is_tensor(x):
    return tf.is_tensor(x) or isinstance(x, tf.Variable)


def cxcywh_to_xyxy(boxes):
    """``(..., 4)`` centre-size boxes -> corners ``(x1, y1, x2, y2)``."""
    if not _is_tensor(boxes):
        boxes = np.asarray(boxes)
        xy, wh = boxes[..., 0:2], boxes[..., 2:4]
        return np.concatenate([xy - wh / 2, xy + wh / 2], axis=-1)
    xy, wh = boxes[..., 0:2], boxes[..., 2:4]
    return tf.concat([xy - wh / 2, xy + wh / 2], axis=-1)


def _as_boxes(boxes1, boxes2):
    """Both tensors (dtype of the tensor one) or both numpy arrays."""
    if _is_tensor(boxes1) or _is_tensor(boxes2):
        ref = boxes1 if _is_tensor(boxes1) else boxes2
        dtype = tf.convert_to_tensor(ref).dtype
        return tf, tf.cast(boxes1, dtype), tf.cast(boxes2, dtype)
    return np, np.asarray(boxes1), np.asarray(boxes2)


def pairwise_intersection_union(boxes1, boxes2, box_format="xyxy", eps=None):
    """Intersection and union areas of every pair, ``(..., n1, n2)`` each.

    Args:
        boxes1: ``(..., n1, 4)``; boxes2: ``(..., n2, 4)`` (leading axes
            broadcast).
        box_format: ``"xyxy"`` or ``"cxcywh"`` (both inputs).
        eps: if set, the union is clamped to ``max(union, eps)``.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {BOX_FORMATS}, "
                         f"got {box_format!r}")
    xp, boxes1, boxes2 = _as_boxes(boxes1, boxes2)
    if box_format == "cxcywh":
        boxes1, boxes2 = cxcywh_to_xyxy(boxes1), cxcywh_to_xyxy(boxes2)
    ax1, ay1, ax2, ay2 = [boxes1[..., k:k + 1] for k in range(4)]
    bx1, by1, bx2, by2 = [boxes2[..., None, :, k] for k in range(4)]
    w = xp.maximum(xp.minimum(ax2, bx2) - xp.maximum(ax1, bx1), 0.0)
    h = xp.maximum(xp.minimum(ay2, by2) - xp.maximum(ay1, by1), 0.0)
    inter = w * h
    area1 = (ax2 - ax1) * (ay2 - ay1)
    area2 = (bx2 - bx1) * (by2 - by1)
    union = (area1 + area2) - inter
    if eps:
        union = xp.maximum(union, eps)
    return inter, union


def pairwise_iou(boxes1, boxes2, box_format="xyxy", eps=None,
                 zero_union="zero"):
    """IoU of every box of ``boxes1 (..., n1, 4)`` with ``boxes2 (..., n2,
    4)``: ``(..., n1, n2)``.

    Args:
        box_format: ``"xyxy"`` or ``"cxcywh"``.
        eps: union clamp ``max(union, eps)`` (mmdet / maIoU: ``1e-6``).
        zero_union: ``"zero"`` or ``"nan"``: the IoU of a zero union
            (matters only without ``eps``), see the module docstring.
    """
    if zero_union not in ZERO_UNION:
        raise ValueError(f"zero_union must be one of {ZERO_UNION}, "
                         f"got {zero_union!r}")
    inter, union = pairwise_intersection_union(boxes1, boxes2, box_format,
                                               eps)
    if _is_tensor(inter):
        if zero_union == "nan" or eps:
            return inter / union
        return tf.math.divide_no_nan(inter, union)
    if zero_union == "nan" or eps:
        with np.errstate(invalid="ignore"):   # 0 / 0 = NaN is the intent
            return inter / union
    return np.divide(inter, union, out=np.zeros_like(inter),
                     where=union != 0)


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
