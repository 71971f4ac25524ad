"""YOLACT training targets for one padded example, inside ``tf.data``.

The mmdet (maIoU fork) ``AnchorHead._get_targets_single`` +
``YOLACTProtonet.get_targets`` + ``YOLACTSegmHead.get_targets`` for static
shapes:

* assignment with ``ATSSAssigner`` (``overlap="iou"`` or ``"maiou"``,
  topk 9) or the fixed-IoU ``MaxIoUAssigner`` (pos 0.5, neg 0.4,
  min_pos_iou 0); every anchor is valid (``allowed_border=-1``);
* ``labels (N,)``: the GT class of positives, ``num_classes`` (background)
  for everything else; ``label_weights (N,)``: 1 for positives and
  negatives, 0 for anchors the assigner ignores (``-1``);
* ``box_targets (N, 4)``: DeltaXYWH ``encode(anchor, matched GT)`` with
  stds 0.1, 0.1, 0.2, 0.2 (zeros elsewhere);
* ``matched_gt (N,)``: GT row of each positive, -1 elsewhere (the masks);
* ``mask_targets (G, Hp, Wp)``: GT masks bilinearly resized to the
  prototype size (half-pixel, no antialias) and ``> 0.5``;
* ``segm_targets (Hs, Ws, C)``: per class the max of its resized GT masks
  ``> 0.5``. With ``official_segm_channels`` (the default) label ``l`` lands
  in channel ``(l - 1) mod C`` as in the maIoU fork (class 0 in channel 79);
  the auxiliary head is training-only, so this only permutes its channels.
* ``gt_boxes (G, 4)`` pixels x1y1x2y2 and ``num_gts`` for the mask loss
  (``YolactSegmLoss`` also reads ``num_gts``: an image without instances
  has no semantic-segmentation loss, as mmdet).

Crowd regions (``ignore_iof_thr > 0``, ``max_iou`` only; off in every
paper config, as mmdet's YOLACT ``train_cfg``): mmdet's ``MaxIoUAssigner``
ignores anchors whose IoF with a ``gt_bboxes_ignore`` box exceeds the
threshold. The data pipeline keeps COCO's crowd annotations as one
``crowd_mask (H, W)`` plane, transformed with the image (boxes are never
transformed here, see ``data.augment``), so per-annotation crowd boxes do
not exist after augmentation; the encoder passes that plane as the
assigner's ``ignore_mask`` and the IoF is the fraction of the anchor
covered by crowd pixels (``assign.maiou.region_iof``). It equals mmdet's
box IoF when a crowd region fills its box; for a non-rectangular region it
is smaller (a box over-covers its region) and, for an anchor straddling two
crowd regions, it counts both (mmdet takes the larger single box).
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.ops.box_ops import cxcywh_to_xyxy
from orienmask_tf.ops.resize import resize_bilinear
from orienmask_tf.families.yolact.ops import delta_xywh_encode
from orienmask_tf.assign.assigners import ATSSAssigner
from orienmask_tf.assign.assigners import MaxIoUAssigner

ASSIGNERS = ("atss", "max_iou")
__all__ = ["ASSIGNERS", "YolactTargetEncoder", "delta_xywh_encode",
           "resize_masks_binary"]


def resize_masks_binary(masks, size):
    """``(G, H, W)`` masks -> ``(G, h, w)`` {0, 1} float: bilinear, ``> .5``."""
    masks = tf.cast(tf.convert_to_tensor(masks), tf.float32)[..., None]
    resized = resize_bilinear(masks, (int(size[0]), int(size[1])))[..., 0]
    return tf.cast(resized > 0.5, tf.float32)


class YolactTargetEncoder:
    """Encode one padded ground-truth example into YOLACT targets.

    Args:
        anchors: ``(N, 4)`` anchors x1y1x2y2 in input pixels (all levels).
        num_level_anchors: anchors per level (Python ints, for ATSS).
        image_size: ``(H, W)`` of the network input.
        num_classes: foreground classes C.
        assigner: ``"atss"`` or ``"max_iou"``.
        overlap: ``"iou"`` or ``"maiou"`` (the ATSS overlap).
        topk: ATSS candidates per level.
        proto_size: prototype size (``(H + 3) // 4``-ish: 138 at 550);
            default derived like the network (stride 4 after the x2
            upsampling of P3).
        segm_size: P3 size (69 at 550).
        official_segm_channels: reproduce the fork's label-1 channel shift.
        pos_iou_thr, neg_iou_thr, min_pos_iou: the ``max_iou`` thresholds
            (official 0.5, 0.4, 0).
        ignore_iof_thr: ``max_iou`` only: anchors covered by more than this
            fraction of crowd pixels (``gt["crowd_mask"]``) are ignored
            (label weight 0); <= 0 (default -1, the official configs): off.

    Call with ``{"boxes": (G, 4) normalized cx, cy, w, h, "classes": (G,)
    int (-1 = pad), "masks": (G', H, W) uint8/bool at the input size,
    "num_instances": ()}`` (the data pipeline's padded example). The first
    ``num_instances`` rows are the instances. ``masks`` may hold only those
    rows (``G' = num_instances``, as ``build_dataset`` passes them): overlaps
    and mask targets are computed for the instances only and the mask
    targets padded back to ``G`` rows, so every output has a static shape.
    """

    def __init__(self, anchors, num_level_anchors, image_size, num_classes=80,
                 assigner="atss", overlap="iou", topk=9, proto_size=None,
                 segm_size=None, official_segm_channels=True,
                 pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                 ignore_iof_thr=-1.0):
        if assigner not in ASSIGNERS:
            raise ValueError(f"assigner must be one of {ASSIGNERS}, got "
                             f"{assigner!r}")
        self.ignore_iof_thr = float(ignore_iof_thr)
        if self.ignore_iof_thr > 0 and assigner != "max_iou":
            raise ValueError(
                f"ignore_iof_thr={ignore_iof_thr}: crowd regions are ignored "
                "by the max_iou assigner only (mmdet MaxIoUAssigner); use "
                "-1 with ATSS")
        self.anchors = np.asarray(anchors, np.float32)
        self.num_level_anchors = tuple(int(n) for n in num_level_anchors)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_classes = int(num_classes)
        self.assigner = assigner
        self.overlap = overlap
        self.topk = int(topk)
        p3 = tuple(_p3_size(s) for s in self.image_size)
        self.segm_size = tuple(segm_size) if segm_size else p3
        self.proto_size = (tuple(proto_size) if proto_size
                           else (2 * p3[0], 2 * p3[1]))
        self.official_segm_channels = bool(official_segm_channels)
        if assigner == "atss":
            self._assign = ATSSAssigner(topk=self.topk, overlap=overlap)
        else:
            self._assign = MaxIoUAssigner(pos_iou_thr=pos_iou_thr,
                                          neg_iou_thr=neg_iou_thr,
                                          min_pos_iou=min_pos_iou,
                                          overlap=overlap,
                                          ignore_iof_thr=self.ignore_iof_thr)

    def pixel_boxes(self, boxes):
        """Normalised cx, cy, w, h -> pixel x1, y1, x2, y2."""
        height, width = self.image_size
        scale = tf.constant([width, height, width, height], tf.float32)
        return cxcywh_to_xyxy(boxes) * scale

    def __call__(self, gt):
        boxes = tf.convert_to_tensor(gt["boxes"], tf.float32)
        max_gts = boxes.shape[0] if boxes.shape[0] is not None else \
            tf.shape(boxes)[0]
        masks = tf.convert_to_tensor(gt["masks"])
        masks = tf.cast(tf.not_equal(masks, 0), tf.uint8)
        num_gts = tf.minimum(tf.cast(gt["num_instances"], tf.int32),
                             tf.minimum(max_gts, tf.shape(masks)[0]))
        valid = tf.range(max_gts) < num_gts
        classes = tf.cast(tf.convert_to_tensor(gt["classes"]), tf.int32)
        classes = tf.where(valid, classes, -1)
        gt_boxes = tf.where(valid[:, None], self.pixel_boxes(boxes), 0.0)
        # Only the instances take part: padded rows never match, and the
        # maIoU integral images of padding would be wasted work.
        masks = masks[:num_gts]
        inst_boxes = gt_boxes[:num_gts]
        inst_classes = classes[:num_gts]

        anchors = tf.constant(self.anchors)
        if self.assigner == "atss":
            result = self._assign(anchors, self.num_level_anchors, inst_boxes,
                                  masks, num_gts=num_gts,
                                  gt_labels=inst_classes)
        else:
            crowd = None
            if self.ignore_iof_thr > 0:
                if "crowd_mask" not in gt:
                    raise ValueError(
                        f"ignore_iof_thr={self.ignore_iof_thr}: the ground "
                        "truth has no 'crowd_mask' (H, W) to ignore")
                crowd = tf.convert_to_tensor(gt["crowd_mask"])
            result = self._assign(anchors, inst_boxes, masks, num_gts=num_gts,
                                  gt_labels=inst_classes, ignore_mask=crowd)
        assigned = result["assigned_gt_inds"]
        positive = assigned > 0
        matched = tf.where(positive, assigned - 1, -1)
        safe = tf.maximum(matched, 0)
        labels = tf.where(positive, tf.gather(classes, safe),
                          self.num_classes)
        label_weights = tf.cast(assigned >= 0, tf.float32)
        matched_boxes = tf.gather(gt_boxes, safe)
        deltas = delta_xywh_encode(anchors, matched_boxes)
        box_targets = tf.where(positive[:, None], deltas, 0.0)

        mask_targets = resize_masks_binary(masks, self.proto_size)
        mask_targets = tf.pad(mask_targets,
                              [[0, max_gts - num_gts], [0, 0], [0, 0]])
        if isinstance(max_gts, int):
            mask_targets = tf.ensure_shape(
                mask_targets, (max_gts,) + self.proto_size)
        segm_masks = resize_masks_binary(masks, self.segm_size)
        channel = (inst_classes - 1 if self.official_segm_channels
                   else inst_classes)
        channel = tf.math.floormod(channel, self.num_classes)
        onehot = tf.one_hot(channel, self.num_classes) * tf.cast(
            inst_classes >= 0, tf.float32)[:, None]                # (n, C)
        segm_targets = tf.reduce_max(tf.concat([
            segm_masks[:, :, :, None] * onehot[:, None, None, :],
            tf.zeros((1,) + self.segm_size + (self.num_classes,))], 0),
            axis=0)
        return {
            "labels": tf.cast(labels, tf.int32),
            "label_weights": label_weights,
            "box_targets": box_targets,
            "matched_gt": tf.cast(matched, tf.int32),
            "gt_boxes": gt_boxes,
            "num_gts": num_gts,
            "mask_targets": mask_targets,
            "segm_targets": segm_targets,
        }


def _p3_size(size):
    """P3 side of ResNet + FPN: 7x7/2 stem, 3x3/2 pool, 3x3/2 ``layer2``."""
    for kernel, pad in ((7, 3), (3, 1), (3, 1)):
        size = (size + 2 * pad - kernel) // 2 + 1
    return size
