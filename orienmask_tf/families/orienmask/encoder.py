"""OrienMask training targets for one example, inside ``tf.data``.

Implements the official ``OrienMaskYOLOLoss.build_targets``
(github.com/duwt/OrienMask, ``eval/orienmask_yolo_loss.py``) for one padded
example, vectorised over instances (no Python loop, static output shapes):

* YOLOv3 assignment (paper Sec. 3.1): each ground truth goes to the best of
  the 9 anchors by width/height IoU (first index on ties) and to the one cell
  containing its centre; box targets ``txy``, ``twh`` and the ``2 - w*h``
  scale weight, class index.
* Orientation targets (paper Sec. 3.2, Eq. 1-2, Fig. 3) at input resolution,
  see :mod:`orienmask_tf.families.orienmask.orientation`.

The objectness ignore mask (IoU of decoded predictions with the ground truth
> threshold) depends on the predictions and is computed in the loss; the
encoder passes the ground-truth boxes through as ``gt_boxes`` for it.

``assigner="atss_iou"`` / ``"atss_maiou"`` replaces the YOLOv3 assignment by
ATSS with IoU / mask-aware IoU on the same anchors at every cell (new, in
neither paper; same outputs, design in
:mod:`orienmask_tf.families.orienmask.atss_targets`). ``"yolo"`` (default)
is the official code path above, unchanged.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.families.orienmask import anchors as anchor_ops
from orienmask_tf.families.orienmask import atss_targets
from orienmask_tf.ops import box_ops
from orienmask_tf.families.orienmask import orientation

ORIEN_POSITIVE = orientation.ORIEN_POSITIVE
ORIEN_NEGATIVE = orientation.ORIEN_NEGATIVE
ORIEN_IGNORE = orientation.ORIEN_IGNORE
BASE_POSITIONS = orientation.BASE_POSITIONS
ASSIGNERS = ("yolo",) + tuple(atss_targets.ATSS_OVERLAPS)


def scale_names(strides=anchor_ops.STRIDES):
    """Key suffix of each scale: ``("s32", "s16", "s8")``."""
    return tuple(f"s{s}" for s in strides)


class OrienMaskTargetEncoder:
    """Encode one padded ground-truth example into OrienMask targets.

    Args:
        image_size: ``(height, width)`` of the network input.
        anchors: ``(9, 2)`` anchor ``[width, height]`` in input pixels.
        num_classes: number of object classes.
        anchor_mask: global anchor ids of each scale, stride 32, 16, 8.
        strides: stride of each scale.
        center_region: half size of the "centre box" relative to the box
            (official ``center_region``, 0.6).
        valid_region: half size of the orientation ROI relative to the box
            plus half a stride (official ``valid_region``, 0.6 in anchor4).
        base_position: ``"box_center"`` (official: orientations point to the
            box centre) or ``"grid_center"`` (centre of the assigned cell,
            paper Table 4 row 1). The ROI stays centred on the box.
        orien_dtype: dtype of the stored orientation vectors; ``"float16"``
            halves the memory of an example (13 MB instead of 24 MB at 544).
        assigner: ``"yolo"`` (official), ``"atss_iou"`` or ``"atss_maiou"``
            (``atss_targets``: every positive regresses its own box, the
            instance is drawn on the map of each anchor with a positive).
        topk: ATSS candidates per scale.
        yolo_fallback: ATSS only: an instance without positive takes its
            YOLO anchor (if free).

    Call with ``{"boxes": (N, 4) normalized cx, cy, w, h, "classes": (N,)
    int (-1 = pad), "masks": (N, H, W) bool/uint8, "num_instances": ()}``.
    Instances with zero width or height or a negative class are ignored
    (the official code would produce ``log(0)`` targets for them).

    Returns a dict; for every scale ``k`` in ``scale_names(strides)``:

    * ``box_targets_k`` ``(nA, gh, gw, 5)`` float32: tx, ty (cell offset of
      the centre, target of sigmoid), tw, th (``log(w / anchor)``), scale
      ``2 - w*h`` (normalized); zeros off the positives.
    * ``cls_targets_k`` ``(nA, gh, gw)`` int32: class of the positive, -1
      elsewhere (positive mask = ``cls_targets >= 0``).
    * ``orien_labels_k`` ``(nA, H, W)`` int8: ``ORIEN_POSITIVE`` (1,
      foreground), ``ORIEN_NEGATIVE`` (-1, background), ``ORIEN_IGNORE`` (0).
    * ``orien_targets_k`` ``(nA, 2, H, W)`` ``orien_dtype``: (x, y) planes in
      units of half the assigned anchor size (channel-first: stacking x/y
      last is 10x slower on CPU; the loss transposes the predictions).

    and ``gt_boxes`` ``(N, 4)`` float32 (ignored instances zeroed).
    """

    def __init__(self, image_size, anchors, num_classes,
                 anchor_mask=anchor_ops.ANCHOR_MASK,
                 strides=anchor_ops.STRIDES, center_region=0.6,
                 valid_region=0.6, base_position="box_center",
                 orien_dtype="float32", assigner="yolo", topk=9,
                 yolo_fallback=True):
        if not 0 < float(valid_region):
            raise ValueError(f"valid_region must be > 0, got {valid_region}")
        if base_position not in BASE_POSITIONS:
            raise ValueError(f"base_position must be one of {BASE_POSITIONS}, "
                             f"got {base_position!r}")
        if assigner not in ASSIGNERS:
            raise ValueError(f"assigner must be one of {ASSIGNERS}, got "
                             f"{assigner!r}")
        if assigner != "yolo" and base_position != "box_center":
            raise ValueError(
                f"base_position {base_position!r} needs the single cell of "
                f"the yolo assigner; {assigner!r} gives an instance several "
                "cells (use 'box_center')")
        self.image_size = tuple(int(v) for v in image_size)
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.num_classes = int(num_classes)
        self.anchor_mask = tuple(tuple(int(a) for a in m) for m in anchor_mask)
        self.strides = tuple(int(s) for s in strides)
        self.center_region = float(center_region)
        self.valid_region = float(valid_region)
        self.base_position = base_position
        self.orien_dtype = tf.as_dtype(orien_dtype)
        self.grid_sizes = anchor_ops.grid_sizes(self.image_size, self.strides)
        self.num_anchors = len(self.anchor_mask[0])
        self.names = scale_names(self.strides)
        self.assigner = assigner
        self.atss = None
        if assigner != "yolo":
            self.atss = atss_targets.AtssTargets(
                self, atss_targets.ATSS_OVERLAPS[assigner], topk=topk,
                yolo_fallback=yolo_fallback)

    def scale_constants(self, s):
        """Float32 ``(gw, gh)``, pixels per cell ``(sw, sh)`` and all anchors
        in grid units of scale ``s`` (official float32 arithmetic)."""
        gh, gw = self.grid_sizes[s]
        grid_wh = np.array([gw, gh], np.float32)
        return (grid_wh,
                anchor_ops.cell_size(self.image_size, self.grid_sizes[s]),
                anchor_ops.grid_anchors(self.anchors, self.image_size,
                                        self.grid_sizes[s], "cell_size"))

    def assign(self, boxes, valid):
        """Per scale: ``(assigned (n,) bool, local anchor (n,) int32)``."""
        out = []
        for s, mask in enumerate(self.anchor_mask):
            grid_wh, _, grid_anchors = self.scale_constants(s)
            wh = boxes[:, 2:4] * grid_wh
            best = box_ops.first_argmax(box_ops.shape_iou(wh, grid_anchors))
            table = np.full(len(self.anchors), self.num_anchors, np.int32)
            table[list(mask)] = np.arange(len(mask), dtype=np.int32)
            local = tf.gather(table, best)
            assigned = valid & (local < self.num_anchors)
            out.append((assigned, local, best))
        return out

    def _box_targets(self, s, boxes, classes, assigned, local, best):
        gh, gw = self.grid_sizes[s]
        n_a = self.num_anchors
        grid_wh, _, grid_anchors = self.scale_constants(s)
        g_xy = boxes[:, 0:2] * grid_wh
        g_wh = boxes[:, 2:4] * grid_wh
        col = tf.cast(tf.clip_by_value(tf.floor(g_xy[:, 0]), 0, gw - 1),
                      tf.int32)
        row = tf.cast(tf.clip_by_value(tf.floor(g_xy[:, 1]), 0, gh - 1),
                      tf.int32)
        cell = tf.cast(tf.stack([col, row], -1), tf.float32)
        anchor_wh = tf.gather(grid_anchors, best)
        safe_wh = tf.where(assigned[:, None], g_wh, anchor_wh)
        txy = g_xy - cell
        twh = tf.math.log(orientation.exact_div(safe_wh, anchor_wh))
        scale = 2.0 - orientation.exact_div(g_wh[:, 0] * g_wh[:, 1],
                                            float(gw * gh))
        values = tf.concat([txy, twh, scale[:, None]], -1)
        values = tf.where(assigned[:, None], values, 0.0)
        slot = tf.where(assigned, local, n_a)  # n_a = dropped dummy anchor
        index = tf.stack([slot, row, col], -1)
        box = tf.scatter_nd(index, values, [n_a + 1, gh, gw, 5])[:n_a]
        cls = tf.tensor_scatter_nd_update(
            tf.fill([n_a + 1, gh, gw], -1), index, classes)[:n_a]
        return box, cls, col, row

    def _instances(self, gt):
        """The first ``num_instances`` rows: boxes (invalid ones zeroed),
        classes, bool masks, validity; and the padded boxes."""
        boxes_all = tf.convert_to_tensor(gt["boxes"], tf.float32)
        max_n = tf.shape(boxes_all)[0]
        n = tf.minimum(tf.cast(gt["num_instances"], tf.int32), max_n)
        boxes = boxes_all[:n]
        classes = tf.cast(tf.convert_to_tensor(gt["classes"])[:n], tf.int32)
        masks = tf.convert_to_tensor(gt["masks"])[:n]
        masks = masks if masks.dtype == tf.bool else tf.not_equal(masks, 0)
        valid = ((boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (classes >= 0)
                 & (classes < self.num_classes))
        boxes = tf.where(valid[:, None], boxes, 0.0)
        return boxes, classes, masks, valid, boxes_all

    def _gt_boxes(self, boxes, boxes_all):
        pad = tf.shape(boxes_all)[0] - tf.shape(boxes)[0]
        gt_boxes = tf.pad(boxes, [[0, pad], [0, 0]])
        return tf.ensure_shape(gt_boxes, boxes_all.shape)

    def encode_with_stats(self, gt):
        """ATSS assigners only: ``(targets, stats)``, ``stats`` the int32
        counts ``atss_targets.STAT_NAMES`` of the example (instances,
        positives, fallbacks, instances without positive, positives whose
        centre offset was clamped, (instance, map) drawings)."""
        if self.atss is None:
            raise ValueError("encode_with_stats: needs an ATSS assigner, "
                             f"this encoder uses {self.assigner!r}")
        boxes, classes, masks, valid, boxes_all = self._instances(gt)
        out, stats = self.atss.encode(boxes, classes, masks, valid)
        out["gt_boxes"] = self._gt_boxes(boxes, boxes_all)
        return out, stats

    def __call__(self, gt):
        if self.atss is not None:
            return self.encode_with_stats(gt)[0]
        boxes, classes, masks, valid, boxes_all = self._instances(gt)
        max_n = tf.shape(boxes_all)[0]
        n = tf.shape(boxes)[0]

        out = {}
        assignments = self.assign(boxes, valid)
        cells = []
        for s, (assigned, local, best) in enumerate(assignments):
            box, cls, col, row = self._box_targets(
                s, boxes, classes, assigned, local, best)
            out[f"box_targets_{self.names[s]}"] = box
            out[f"cls_targets_{self.names[s]}"] = cls
            cells.append(tf.stack([col, row], -1))

        # Orientation: each instance draws on the map of its (scale, anchor);
        # the first scale that claims it (float ties could make two claim).
        claims = tf.stack([a for a, _, _ in assignments], 0)  # (S, n)
        scale_of = box_ops.first_argmax(tf.cast(tf.transpose(claims),
                                                tf.int32))
        any_claim = tf.reduce_any(claims, 0)
        local_all = tf.stack([loc for _, loc, _ in assignments], 0)
        index = tf.stack([scale_of, tf.range(n)], -1)
        local_of = tf.gather_nd(local_all, index)
        num_maps = len(self.strides) * self.num_anchors
        map_id = tf.where(any_claim, scale_of * self.num_anchors + local_of,
                          num_maps)
        consts = [self.scale_constants(s) for s in range(len(self.strides))]
        grid_wh = tf.gather(np.stack([c[0] for c in consts]), scale_of)
        scale_wh = tf.gather(np.stack([c[1] for c in consts]), scale_of)
        cell = tf.gather_nd(tf.stack(cells, 0), index)
        half_anchor = np.stack(
            [self.anchors[list(m)] for m in self.anchor_mask]).reshape(-1, 2)
        half_anchor = half_anchor / np.float32(2)
        labels, targets = orientation.orientation_targets(
            boxes * tf.tile(grid_wh, [1, 2]), scale_wh, cell, masks, map_id,
            num_maps, half_anchor, self.image_size, self.center_region,
            self.valid_region, self.base_position,
            maps_per_group=self.num_anchors)
        for s, name in enumerate(self.names):
            out[f"orien_labels_{name}"] = labels[s]
            out[f"orien_targets_{name}"] = tf.cast(targets[s],
                                                   self.orien_dtype)
        gt_boxes = tf.pad(boxes, [[0, max_n - n], [0, 0]])
        out["gt_boxes"] = tf.ensure_shape(gt_boxes, boxes_all.shape)
        return out
