"""YOLACT tensor math shared by targets, losses and decoding (mmdet semantics).

* ``delta_xywh_encode`` / ``delta_xywh_decode``: mmdet ``DeltaXYWHBBoxCoder``
  (means 0, stds 0.1, 0.1, 0.2, 0.2; decode clamps dw/dh to
  ``+-|log(16/1000)|`` after de-normalising and optionally clips to
  ``max_shape = (H, W)``).
* ``crop_masks``: ``YOLACTProtonet.crop`` (padding 1, float bounds, mmdet's
  ``sanitize_coordinates`` whose "swap" leaves ``x2`` unchanged).
* ``flatten_level``: NHWC head map -> rows ``(y, x, a)`` like mmdet anchors.
* ``yolact_config_anchors``: the anchors of each Table 2 config at any scale.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.families.yolact import anchors as anchors_mmdet

BBOX_STDS = (0.1, 0.1, 0.2, 0.2)
BBOX_MEANS = (0.0, 0.0, 0.0, 0.0)
WH_RATIO_CLIP = 16 / 1000


def delta_xywh_encode(anchors, gt_boxes, means=BBOX_MEANS, stds=BBOX_STDS):
    """mmdet ``bbox2delta``: x1y1x2y2 anchors and GT -> normalised deltas."""
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    px = (anchors[..., 0] + anchors[..., 2]) * 0.5
    py = (anchors[..., 1] + anchors[..., 3]) * 0.5
    pw = anchors[..., 2] - anchors[..., 0]
    ph = anchors[..., 3] - anchors[..., 1]
    gx = (gt_boxes[..., 0] + gt_boxes[..., 2]) * 0.5
    gy = (gt_boxes[..., 1] + gt_boxes[..., 3]) * 0.5
    gw = gt_boxes[..., 2] - gt_boxes[..., 0]
    gh = gt_boxes[..., 3] - gt_boxes[..., 1]
    deltas = tf.stack([(gx - px) / pw, (gy - py) / ph, tf.math.log(gw / pw),
                       tf.math.log(gh / ph)], axis=-1)
    return (deltas - tf.constant(means, tf.float32)) / tf.constant(
        stds, tf.float32)


def delta_xywh_decode(anchors, deltas, max_shape=None, means=BBOX_MEANS,
                      stds=BBOX_STDS, wh_ratio_clip=WH_RATIO_CLIP):
    """``(..., 4)`` anchors x1y1x2y2 + normalised deltas -> boxes x1y1x2y2.

    ``max_shape``: ``(H, W)`` (Python or tensor); x is clipped to
    ``[0, W]`` and y to ``[0, H]`` when given.
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    deltas = tf.convert_to_tensor(deltas, tf.float32)
    denorm = deltas * tf.constant(stds, tf.float32) + tf.constant(
        means, tf.float32)
    dx, dy, dw, dh = tf.unstack(denorm, num=4, axis=-1)
    if wh_ratio_clip is not None:   # None: no clamp (dbolya ``decode``)
        max_ratio = float(np.abs(np.log(np.float32(wh_ratio_clip))))
        dw = tf.clip_by_value(dw, -max_ratio, max_ratio)
        dh = tf.clip_by_value(dh, -max_ratio, max_ratio)
    ax1, ay1, ax2, ay2 = tf.unstack(anchors, num=4, axis=-1)
    px = (ax1 + ax2) * 0.5
    py = (ay1 + ay2) * 0.5
    pw = ax2 - ax1
    ph = ay2 - ay1
    gw = pw * tf.exp(dw)
    gh = ph * tf.exp(dh)
    gx = px + pw * dx
    gy = py + ph * dy
    x1 = gx - gw * 0.5
    y1 = gy - gh * 0.5
    x2 = gx + gw * 0.5
    y2 = gy + gh * 0.5
    if max_shape is not None:
        height = tf.cast(max_shape[0], tf.float32)
        width = tf.cast(max_shape[1], tf.float32)
        x1 = tf.clip_by_value(x1, 0.0, width)
        x2 = tf.clip_by_value(x2, 0.0, width)
        y1 = tf.clip_by_value(y1, 0.0, height)
        y2 = tf.clip_by_value(y2, 0.0, height)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def flatten_level(x, num_anchors):
    """``(B, h, w, A * K)`` -> ``(B, h * w * A, K)`` (rows ``(y, x, a)``)."""
    shape = x.shape
    per_anchor = shape[-1] // num_anchors
    rows = shape[1] * shape[2] * num_anchors
    return tf.reshape(x, [-1, rows, per_anchor])


def sanitize_coordinates(x1, x2, size, padding=1, true_swap=False):
    """mmdet ``YOLACTProtonet.sanitize_coordinates(cast=False)``.

    mmdet computes ``x2 = max(min(x1, x2), x2)``, i.e. leaves ``x2``
    unchanged; ``true_swap=True`` is dbolya's ``max(x1, x2)``.
    """
    x1 = x1 * size
    x2 = x2 * size
    low = tf.minimum(x1, x2)
    x2 = tf.maximum(x1, x2) if true_swap else tf.maximum(low, x2)
    x1 = tf.maximum(low - padding, 0.0)
    x2 = tf.minimum(x2 + padding, float(size))
    return x1, x2


def crop_masks(masks, boxes, padding=1, true_swap=False):
    """mmdet ``YOLACTProtonet.crop``: zero everything outside the boxes.

    Args:
        masks: ``(B, H, W, N)`` (HWN per image).
        boxes: ``(B, N, 4)`` x1y1x2y2 relative to the mask size.
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height, width = masks.shape[1], masks.shape[2]
    x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], width,
                                  padding, true_swap)
    y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], height,
                                  padding, true_swap)
    cols = tf.range(width, dtype=tf.float32)[None, None, :, None]
    rows = tf.range(height, dtype=tf.float32)[None, :, None, None]
    inside = ((cols >= x1[:, None, None, :]) & (cols < x2[:, None, None, :])
              & (rows >= y1[:, None, None, :]) & (rows < y2[:, None, None, :]))
    return masks * tf.cast(inside, masks.dtype)


# The fixed-IoU configs (``yolact_r50_4x8_coco_scale{400,550,700}.py``) all
# hard-code the 550 geometry: strides ``550 / n`` and centres
# ``550 * 0.5 / n`` for n in (69, 35, 18, 9, 5), whatever the input size.
BASELINE_550_SIZES = (69, 35, 18, 9, 5)


def yolact_config_anchors(image_size, assigner="atss", scales_per_octave=1):
    """Anchors ``(N, 4)`` and per-level counts of a maIoU-fork config.

    ``image_size``: an int (square, as every official config) or
    ``(height, width)``. ``assigner="atss"`` (ATSSwIoU / ATSSwmaIoU;
    ``scales_per_octave=2`` for maYOLACT): 1 square anchor of side
    ``4 * stride``, strides 8..128. ``"max_iou"`` (the fixed-IoU baseline):
    3 anchors, base sizes 8..128 x 3, ratios 0.5, 1, 2, with the 550 strides
    and centres at every scale, as the official 400 / 700 configs do.
    """
    height, width = _height_width(image_size)
    sizes = tuple(zip(anchors_mmdet.resnet_fpn_featmap_sizes(height),
                      anchors_mmdet.resnet_fpn_featmap_sizes(width)))
    if assigner == "atss":
        return anchors_mmdet.mmdet_anchors(
            sizes, strides=anchors_mmdet.YOLACT_STRIDES, octave_base_scale=4,
            scales_per_octave=scales_per_octave, ratios=(1.0,))
    if assigner != "max_iou":
        raise ValueError(f"assigner must be 'atss' or 'max_iou', got "
                         f"{assigner!r}")
    strides = [550.0 / n for n in BASELINE_550_SIZES]
    centers = [(550 * 0.5 / n,) * 2 for n in BASELINE_550_SIZES]
    return anchors_mmdet.mmdet_anchors(
        sizes, strides=strides, octave_base_scale=3, scales_per_octave=1,
        ratios=(0.5, 1.0, 2.0), base_sizes=list(anchors_mmdet.YOLACT_STRIDES),
        centers=centers)


def dbolya_anchors(image_size):
    """The original YOLACT priors (``yolact_resnet50_config``) as corner
    anchors ``(N, 4)`` in pixels plus per-level counts, for checkpoints of
    dbolya/yolact decoded with ``style="dbolya"``. Square inputs only (the
    priors are relative to one image side)."""
    height, width = _height_width(image_size)
    if height != width:
        raise ValueError(f"dbolya priors need a square input, got "
                         f"{height}x{width}")
    sizes = anchors_mmdet.resnet_fpn_featmap_sizes(height)
    priors = anchors_mmdet.yolact_priors(height, conv_sizes=sizes)
    anchors = anchors_mmdet.center_size_to_corners(priors, height)
    return anchors, tuple(3 * n * n for n in sizes)


def _height_width(image_size):
    if np.isscalar(image_size):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)
