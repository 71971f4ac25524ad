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
TensorFlow is imported on first use, so numpy callers never load it.

Shapes: ``(..., n, 4)``, leading (batch) axes broadcast (``(B, n1, 4)``
against ``(B, n2, 4)`` is ``(B, n1, n2)``, image against image). A static
shape that is not of that form (a single ``(4,)`` box, a 5-column
detection array, batch axes that do not broadcast) is a ``ValueError``
naming the argument (``check_boxes``), never a silently reshaped result.
"""

import sys

import numpy as np


class _LazyTensorFlow:
    """``tensorflow``, imported on the first attribute access."""

    def __getattr__(self, name):
        import tensorflow

        return getattr(tensorflow, name)


tf = _LazyTensorFlow()

BOX_FORMATS = ("xyxy", "cxcywh")
ZERO_UNION = ("zero", "nan")


def _is_tensor(x):
    # Nothing is a tensor before TensorFlow has been imported by someone.
    loaded = sys.modules.get("tensorflow")
    return loaded is not None and (loaded.is_tensor(x)
                                   or isinstance(x, loaded.Variable))


def cxcywh_to_xyxy(boxes):
    """``(..., 4)`` centre-size boxes -> corners ``(x1, y1, x2, y2)``."""
    if not _is_tensor(boxes):
        boxes = np.asarray(boxes)
        xy, wh = boxes[..., 0:2], boxes[..., 2:4]
        return np.concatenate([xy - wh / 2, xy + wh / 2], axis=-1)
    xy, wh = boxes[..., 0:2], boxes[..., 2:4]
    return tf.concat([xy - wh / 2, xy + wh / 2], axis=-1)


def static_shape(x):
    """Static shape of an array / tensor as a tuple (``None`` for unknown
    dimensions), or None when even the rank is unknown."""
    shape = x.shape
    if hasattr(shape, "rank"):                     # tf.TensorShape
        return None if shape.rank is None else tuple(shape.as_list())
    return tuple(shape)


def check_boxes(name, boxes, rank=None, size=4):
    """Refuse boxes whose static shape is not ``(..., n, size)``.

    Args:
        name: the argument's name, used in the message.
        boxes: array or tensor (unknown dimensions pass).
        rank: the exact rank required (None: at least 2, leading axes are
            batch axes).
        size: the last axis (4 coordinates; ``shape_iou``: 2).

    Raises:
        ValueError: naming ``name`` and its shape.
    """
    shape = static_shape(boxes)
    if shape is None:
        return
    wanted = (f"({', '.join(['N'] * (rank - 1))}, {size})" if rank
              else f"(..., N, {size})")
    if (len(shape) != rank if rank else len(shape) < 2) or \
            shape[-1] not in (size, None):
        raise ValueError(f"{name}: expected boxes of shape {wanted}, got "
                         f"shape {shape}")


def _check_pair(boxes1, boxes2, size=4):
    """``(..., n1, size)`` and ``(..., n2, size)`` with broadcastable
    leading (batch) axes."""
    check_boxes("boxes1", boxes1, size=size)
    check_boxes("boxes2", boxes2, size=size)
    lead1, lead2 = static_shape(boxes1), static_shape(boxes2)
    if lead1 is None or lead2 is None:
        return
    for a, b in zip(lead1[-3::-1], lead2[-3::-1]):
        if a is not None and b is not None and a != b and 1 not in (a, b):
            raise ValueError(
                f"boxes1 and boxes2: leading (batch) axes {lead1[:-2]} and "
                f"{lead2[:-2]} do not broadcast")


def _as_boxes(boxes1, boxes2):
    """Both tensors (dtype of the tensor one) or both numpy arrays, shapes
    checked (``_check_pair``)."""
    if _is_tensor(boxes1) or _is_tensor(boxes2):
        ref = boxes1 if _is_tensor(boxes1) else boxes2
        dtype = tf.convert_to_tensor(ref).dtype
        boxes1, boxes2 = tf.cast(boxes1, dtype), tf.cast(boxes2, dtype)
        _check_pair(boxes1, boxes2)
        return tf, boxes1, boxes2
    boxes1, boxes2 = np.asarray(boxes1), np.asarray(boxes2)
    _check_pair(boxes1, boxes2)
    return np, boxes1, boxes2


def pairwise_intersection_union(boxes1, boxes2, box_format="xyxy", eps=None):
    """Intersection and union areas of every pair, ``(..., n1, n2)`` each.

    Args:
        boxes1: ``(..., n1, 4)``; boxes2: ``(..., n2, 4)``. Leading (batch)
            axes broadcast: ``(B, n1, 4)`` with ``(B, n2, 4)`` or ``(n2, 4)``
            gives ``(B, n1, n2)``, image ``b`` against image ``b``.
        box_format: ``"xyxy"`` or ``"cxcywh"`` (both inputs).
        eps: if set, the union is clamped to ``max(union, eps)``.

    Raises:
        ValueError: naming ``boxes1`` / ``boxes2`` when a static shape is not
            ``(..., n, 4)`` (a single ``(4,)`` box, 5 columns) or the
            leading axes do not broadcast.
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

    Leading (batch) axes broadcast as in ``pairwise_intersection_union``,
    whose shape checks (``ValueError`` naming the argument) apply.

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


def pairwise_iof(boxes1, boxes2, box_format="xyxy", eps=1e-6):
    """Intersection over the area of ``boxes1`` ("foreground"), every pair:
    ``(..., n1, n2)``.

    mmdet ``bbox_overlaps(boxes1, boxes2, mode='iof')``: the intersection of
    ``pairwise_intersection_union`` divided by ``max(area1, eps)``
    (``area1 = (x2 - x1) * (y2 - y1)``, mmdet's ``eps`` 1e-6). The ignore
    test of mmdet's ``MaxIoUAssigner`` (``ignore_wrt_candidates=True``) is
    ``pairwise_iof(anchors, ignore_boxes)``. Same shapes and checks as
    ``pairwise_iou``; ``eps`` None / 0: no clamp (0 / 0 = NaN).
    """
    inter, _ = pairwise_intersection_union(boxes1, boxes2, box_format)
    xp, boxes1, _ = _as_boxes(boxes1, boxes2)
    if box_format == "cxcywh":
        boxes1 = cxcywh_to_xyxy(boxes1)
    area1 = ((boxes1[..., 2] - boxes1[..., 0])
             * (boxes1[..., 3] - boxes1[..., 1]))[..., None]
    if eps:
        area1 = xp.maximum(area1, eps)
    if xp is np:
        with np.errstate(invalid="ignore", divide="ignore"):
            return inter / area1
    return inter / area1


def shape_iou(wh1, wh2):
    """IoU of ``wh1 (n1, 2)`` and ``wh2 (n2, 2)`` boxes sharing one centre.

    The YOLOv3 anchor-matching overlap (official ``anchor_ious``). Rank 2
    only: other shapes raise ``ValueError`` naming ``wh1`` / ``wh2``.
    """
    check_boxes("wh1", wh1, rank=2, size=2)
    check_boxes("wh2", wh2, rank=2, size=2)
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
