"""YOLACT post-processing with the mmdet (maIoU fork) semantics, static shapes.

Every function is batched over a leading ``B`` axis, uses only static shapes
and compiles under ``tf.function(jit_compile=True)``:

* ``delta_xywh_decode``: mmdet ``DeltaXYWHBBoxCoder.decode`` (stds 0.1, 0.1,
  0.2, 0.2; dw/dh clamped to ``+-|log(16/1000)|`` after de-normalising;
  optional clipping to ``max_shape = (H, W)``).
* ``fast_nms``: mmdet ``fast_nms`` (per class top ``top_k``; a box is kept
  when its IoU with every higher-scored box of its class, suppressed or not,
  is ``<= iou_thr`` and its score ``> score_thr``; then the ``max_num``
  best over all classes). Outputs are padded to ``max_num`` rows with
  ``labels = -1``, ``scores = 0`` and ``num_detections``.
* ``get_bboxes``: ``YOLACTHead.get_bboxes``: per-level softmax, top
  ``nms_pre`` anchors by max foreground score, decode, optional rescale,
  Fast NMS.
* ``crop_masks`` / ``assemble_masks``: ``YOLACTProtonet.crop`` (padding 1,
  mmdet's ``sanitize_coordinates``, whose "swap" leaves ``x2`` unchanged)
  and ``simple_test``'s mask branch (``sigmoid(protos @ coeffs.T)``, crop to
  the detection box relative to the network input, half-pixel bilinear
  resize, ``> 0.5``).

Network outputs are NHWC (``Yolact``); rows are flattened ``(y, x, a)``
per level, levels P3 -> P7, as mmdet's anchors.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.ops.box_ops import pairwise_iou
from orienmask_tf.ops.resize import resize_bilinear
from orienmask_tf.families.yolact.ops import BBOX_STDS
from orienmask_tf.families.yolact.ops import crop_masks
from orienmask_tf.families.yolact.ops import delta_xywh_decode
from orienmask_tf.families.yolact.ops import flatten_level
from orienmask_tf.families.yolact.ops import sanitize_coordinates


def fast_nms(boxes, scores, coeffs, score_thr=0.05, iou_thr=0.5, top_k=200,
             max_num=100, valid=None, second_threshold=True, union_eps=1e-6):
    """mmdet ``fast_nms``, batched and padded.

    Args:
        boxes: ``(B, n, 4)`` class-agnostic x1y1x2y2.
        scores: ``(B, n, C + 1)`` softmax probabilities, background last
            (ignored).
        coeffs: ``(B, n, P)`` mask coefficients carried along.
        valid: optional ``(B, n)`` rows taking part (dbolya's pre-filter);
            invalid rows sort last and are never kept.
        second_threshold: keep only ``score > score_thr`` (mmdet); dbolya's
            ``Detect.fast_nms`` skips it.
        union_eps: IoU union clamp (mmdet 1e-6; dbolya ``jaccard`` 0).

    Returns:
        dict: ``boxes (B, max_num, 4)``, ``scores (B, max_num)``,
        ``labels (B, max_num)`` int32 (-1 = padding), ``coeffs (B,
        max_num, P)``, ``num_detections (B,)`` int32. Rows are sorted by
        descending score; equal scores keep class-major order.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    num = scores.shape[1]
    num_classes = scores.shape[2] - 1
    k = min(int(top_k), num)
    fg_scores = scores[:, :, :num_classes]
    if valid is not None:
        fg_scores = tf.where(tf.cast(valid, tf.bool)[..., None], fg_scores,
                             -1.0)
    class_scores = tf.transpose(fg_scores, (0, 2, 1))
    top_scores, idx = tf.math.top_k(class_scores, k=k, sorted=True)  # B,C,k
    cls_boxes = tf.gather(boxes, idx, batch_dims=1)            # B,C,k,4
    # mmdet bbox_overlaps (no +1, union clamped to union_eps); without the
    # clamp (dbolya jaccard) 0 / 0 stays NaN.
    iou = pairwise_iou(cls_boxes, cls_boxes, eps=union_eps,
                       zero_union="nan")                       # B,C,k,k
    upper = tf.constant(np.triu(np.ones((k, k), np.float32), 1))
    iou_max = tf.reduce_max(iou * upper, axis=-2)              # column max
    keep = (iou_max <= iou_thr) & (top_scores >= 0.0)
    if second_threshold:
        keep &= top_scores > score_thr
    flat_keep = tf.reshape(keep, [-1, num_classes * k])
    flat_scores = tf.reshape(top_scores, [-1, num_classes * k])
    ranked = tf.where(flat_keep, flat_scores, -1.0)
    max_num = int(max_num)
    if num_classes * k < max_num:
        ranked = tf.pad(ranked, [[0, 0], [0, max_num - num_classes * k]],
                        constant_values=-1.0)
    best, order = tf.math.top_k(ranked, k=max_num, sorted=True)
    valid = best > -1.0
    order = tf.minimum(order, num_classes * k - 1)
    anchor_idx = tf.gather(tf.reshape(idx, [-1, num_classes * k]), order,
                           batch_dims=1)
    labels = order // k
    out_boxes = tf.gather(boxes, anchor_idx, batch_dims=1)
    out_coeffs = tf.gather(coeffs, anchor_idx, batch_dims=1)
    return {
        "boxes": tf.where(valid[..., None], out_boxes, 0.0),
        "scores": tf.where(valid, best, 0.0),
        "labels": tf.where(valid, labels, -1),
        "coeffs": tf.where(valid[..., None], out_coeffs, 0.0),
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=1),
    }


def get_bboxes(cls_scores, bbox_preds, coeff_preds, anchors, img_shape,
               scale_factor=None, num_anchors=1, nms_pre=1000, score_thr=0.05,
               iou_thr=0.5, top_k=200, max_per_img=100, style="mmdet"):
    """mmdet ``YOLACTHead.get_bboxes`` for a batch of equally sized images.

    Args:
        cls_scores, bbox_preds, coeff_preds: per-level NHWC maps.
        anchors: per-level ``(h * w * A, 4)`` anchors (numpy or tensors).
        img_shape: ``(H, W)`` of the network input (the clip window).
        scale_factor: ``(B, 4)`` or ``(4,)`` ``[w, h, w, h]`` scale; when
            given, boxes are divided by it (``rescale=True``) before NMS.
        style: ``"mmdet"`` or ``"dbolya"`` (original YOLACT ``Detect``:
            anchors = its priors in pixels, no dw/dh clamp, no clipping, no
            ``nms_pre``, rows with max foreground score ``<= score_thr``
            dropped before Fast NMS, no second score threshold, IoU
            without the union clamp). Not checked against a fixture.

    Returns:
        ``fast_nms`` dict (boxes in original pixels if rescaled).
    """
    if style not in ("mmdet", "dbolya"):
        raise ValueError(f"style must be 'mmdet' or 'dbolya', got {style!r}")
    dbolya = style == "dbolya"
    all_boxes, all_scores, all_coeffs = [], [], []
    for cls, reg, coeff, level_anchors in zip(cls_scores, bbox_preds,
                                              coeff_preds, anchors):
        cls = flatten_level(tf.cast(cls, tf.float32), num_anchors)
        reg = flatten_level(tf.cast(reg, tf.float32), num_anchors)
        coeff = flatten_level(tf.cast(coeff, tf.float32), num_anchors)
        level_anchors = tf.convert_to_tensor(level_anchors, tf.float32)
        probs = tf.nn.softmax(cls, axis=-1)
        rows = probs.shape[1]
        if nms_pre and rows > nms_pre and not dbolya:
            max_fg = tf.reduce_max(probs[..., :-1], axis=-1)
            _, keep = tf.math.top_k(max_fg, k=int(nms_pre), sorted=True)
            probs = tf.gather(probs, keep, batch_dims=1)
            reg = tf.gather(reg, keep, batch_dims=1)
            coeff = tf.gather(coeff, keep, batch_dims=1)
            level_anchors = tf.gather(level_anchors, keep)
        else:
            level_anchors = tf.broadcast_to(
                level_anchors[None], tf.shape(reg))
        if dbolya:
            boxes = delta_xywh_decode(level_anchors, reg, wh_ratio_clip=None)
        else:
            boxes = delta_xywh_decode(level_anchors, reg, max_shape=img_shape)
        all_boxes.append(boxes)
        all_scores.append(probs)
        all_coeffs.append(coeff)
    boxes = tf.concat(all_boxes, axis=1)
    scores = tf.concat(all_scores, axis=1)
    coeffs = tf.concat(all_coeffs, axis=1)
    if scale_factor is not None:
        scale = tf.convert_to_tensor(scale_factor, tf.float32)
        scale = tf.reshape(scale, [-1, 1, 4])
        boxes = boxes / scale
    if dbolya:
        valid = tf.reduce_max(scores[..., :-1], axis=-1) > score_thr
        return fast_nms(boxes, scores, coeffs, score_thr, iou_thr, top_k,
                        max_per_img, valid=valid, second_threshold=False,
                        union_eps=0.0)
    return fast_nms(boxes, scores, coeffs, score_thr, iou_thr, top_k,
                    max_per_img)


def lincomb_masks(protos, coeffs):
    """``sigmoid(protos @ coeffs.T)``: ``(B, H, W, P) x (B, N, P)`` -> HWN."""
    return tf.sigmoid(tf.einsum("bhwp,bnp->bhwn", protos, coeffs))


def assemble_masks(protos, coeffs, boxes, input_size, output_size,
                   threshold=0.5, true_swap=False):
    """``simple_test``'s mask branch, batched.

    Args:
        protos: ``(B, Hp, Wp, P)`` prototypes.
        coeffs: ``(B, N, P)`` coefficients of the detections.
        boxes: ``(B, N, 4)`` detection boxes in network-input pixels.
        input_size: ``(H, W)`` of the network input (crop boxes are
            relative to it).
        output_size: ``(h, w)`` of the pasted masks.
        true_swap: dbolya's crop bounds (see ``sanitize_coordinates``).

    Returns:
        ``(soft, binary)``: ``(B, N, h, w)`` float32 masks before the
        threshold and uint8 masks ``soft > threshold``.
    """
    protos = tf.convert_to_tensor(protos, tf.float32)
    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height, width = float(input_size[0]), float(input_size[1])
    rel = boxes / tf.constant([width, height, width, height], tf.float32)
    masks = crop_masks(lincomb_masks(protos, coeffs), rel,
                       true_swap=true_swap)                      # B,Hp,Wp,N
    soft = resize_masks(masks, output_size)
    return soft, tf.cast(soft > threshold, tf.uint8)


def resize_masks(masks_hwn, output_size):
    """``(B, Hp, Wp, N)`` -> ``(B, N, h, w)`` half-pixel bilinear, no
    antialiasing (cv2 ``INTER_LINEAR`` / ``F.interpolate``)."""
    resized = resize_bilinear(masks_hwn, (int(output_size[0]),
                                          int(output_size[1])))
    return tf.transpose(resized, (0, 3, 1, 2))


class YolactDecoder:
    """Raw ``Yolact`` outputs -> padded detections and masks (XLA-friendly).

    Args:
        anchors: per-level anchor arrays for the network input size (e.g.
            from ``ops.anchors_mmdet.mmdet_anchors``, split by level).
        image_size: ``(H, W)`` of the network input.
        num_anchors: anchors per location.
        nms_pre, score_thr, iou_thr, top_k, max_per_img: mmdet test_cfg.
        mask_threshold: binarisation threshold (0.5).
        style: ``"mmdet"`` or ``"dbolya"`` (see ``get_bboxes``; for dbolya
            weights pass its priors as corner anchors in pixels).

    ``__call__(outputs)`` returns boxes / scores / labels / num_detections
    in network-input pixels and ``masks (B, max_per_img, H, W)`` uint8 at
    the network resolution (rows past ``num_detections`` are zero).
    """

    def __init__(self, anchors, image_size, num_anchors=1, nms_pre=1000,
                 score_thr=0.05, iou_thr=0.5, top_k=200, max_per_img=100,
                 mask_threshold=0.5, style="mmdet"):
        self.anchors = [np.asarray(a, np.float32) for a in anchors]
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_anchors = int(num_anchors)
        self.nms_pre = nms_pre
        self.score_thr = score_thr
        self.iou_thr = iou_thr
        self.top_k = top_k
        self.max_per_img = max_per_img
        self.mask_threshold = mask_threshold
        self.style = style

    def __call__(self, outputs):
        levels = range(len(self.anchors))
        dets = get_bboxes(
            [outputs[f"cls_score_l{i}"] for i in levels],
            [outputs[f"bbox_pred_l{i}"] for i in levels],
            [outputs[f"coeff_pred_l{i}"] for i in levels],
            self.anchors, self.image_size, num_anchors=self.num_anchors,
            nms_pre=self.nms_pre, score_thr=self.score_thr,
            iou_thr=self.iou_thr, top_k=self.top_k,
            max_per_img=self.max_per_img, style=self.style)
        soft, _ = assemble_masks(outputs["protos"], dets["coeffs"],
                                 dets["boxes"], self.image_size,
                                 self.image_size, self.mask_threshold,
                                 true_swap=self.style == "dbolya")
        valid = dets["labels"] >= 0
        # A boolean AND, not a uint8 multiply: TFLite has no builtin uint8 Mul.
        dets["masks"] = tf.cast((soft > self.mask_threshold)
                                & valid[..., None, None], tf.uint8)
        return dets


def split_levels(anchors, counts):
    """Concatenated anchors + per-level counts -> list of per-level arrays."""
    bounds = np.cumsum((0,) + tuple(counts))
    return [anchors[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


__all__ = ["BBOX_STDS", "YolactDecoder", "assemble_masks", "crop_masks",
           "delta_xywh_decode", "fast_nms", "get_bboxes", "lincomb_masks",
           "flatten_level", "resize_masks",
           "sanitize_coordinates", "split_levels"]
