# SPDX-License-Identifier: Apache-2.0
"""OrienMask targets with ATSS / ATSS-maIoU assignment (new: in neither paper).

OrienMask (Du et al., ICCV 2021) assigns each instance to ONE anchor: the
best of the 9 YOLO priors by width/height IoU, at the cell of its centre
(paper Sec. 3.1), and that anchor also picks the orientation map the
instance is drawn on ("instance grouping", Sec. 3.2). The maIoU paper
(Oksuz et al., BMVC 2021, Sec. 3.4) assigns YOLACT's anchors with ATSS
(Zhang et al. 2020) using IoU or the mask-aware IoU. This module puts the
two together: ``targets.assigner: atss_iou | atss_maiou`` runs the
project's vectorised ``assign.assigners.ATSSAssigner`` (overlap ``iou`` /
``maiou``, unchanged) on OrienMask's own anchor boxes, the 9 priors placed
at the centre of every cell of their scale (3 per cell; rows in the order
stride 32, 16, 8, then row, column, anchor, so the ATSS top-k, which
breaks distance ties by lower index, takes whole cells: ``topk`` 9 = the 3
nearest cells of each scale). Every output has the layout and meaning of
:class:`~orienmask_tf.families.orienmask.encoder.OrienMaskTargetEncoder`,
so the loss and the decoder are unchanged. The decisions, and why:

* **Box targets: every positive regresses its own offsets**, YOLO-style
  relative to its own cell and anchor: ``tw, th = log(w / anchor)``, the
  ``2 - w*h`` scale weight and the class of its instance, as a YOLO
  positive. ``tx, ty`` are the instance centre minus the cell corner in
  cells, **clamped to [0, 1]**. An ATSS positive need not hold the centre
  (its anchor centre must lie inside the box, not the box centre inside
  its cell): with ``topk`` 9 the candidates are the 3 nearest cells, so
  the centre is at most about one cell outside. The network predicts
  ``sigmoid(t)`` in (0, 1) -- the official decoder adds it to the cell --
  so an offset outside [0, 1] cannot be reached, and the BCE of the
  official xy loss has no minimum for a target > 1 or < 0 (the logit would
  be pushed to infinity). The clamped target asks for the reachable point
  nearest the true centre: that positive's box is off by the distance of
  the centre from its cell (< 1 stride), which NMS resolves against the
  positive that does hold the centre. (Widening the range to YOLOv4's
  ``2 * sigmoid - 0.5`` would change the decoder and every official
  checkpoint; not done.)
* **Objectness**: target 1 on every positive; every other anchor is a
  negative except where the official rule ignores it: its decoded
  prediction has IoU > ``loss.obj_ignore_threshold`` with any ground truth
  (computed in the loss from the predictions, unchanged). ATSS has no
  ignore band of its own (an anchor is positive or negative), and the
  prediction-based rule already covers what an extra band would: anchors
  that ATSS rejects (e.g. neighbours whose anchor centre lies outside the
  box) but whose predictions fit an instance well are not pushed to 0 --
  they are the near-duplicates NMS removes. No second, prior-IoU ignore
  band is added, so the ablation changes only the assignment.
* **Orientation maps (instance grouping)**: an instance is drawn on every
  anchor map (scale, anchor) on which it has at least one positive, at any
  cell, and on no other. At inference a detection from anchor (s, a)
  takes its mask from map (s, a) (paper Sec. 3.3), so every map that can
  emit a detection of the instance must carry it; drawing it elsewhere
  would only add overlaps. On each map the official rule holds unchanged
  (Eq. 1-2): the ROI is the box * ``valid_region`` plus half a stride of
  THAT map's scale (as the official code does for the instance's scale),
  the base position is the box centre, and a pixel is foreground of the
  LAST instance (ground-truth order, the official visiting order) drawn on
  the map whose ROI and mask cover it; other pixels average the background
  vectors of every instance of the map (foreground overrides background).
  An instance drawn on one map gets exactly the official targets there
  (tested against the ``yolo`` encoder to float rounding: the background
  sums are divided by the anchor after summing, ~1 ulp). The orientation
  loss multiplies by the positives of the scale (Eq. 5, ``N_inst``), so
  with ATSS it weighs each positive as the box loss does.
* **Instances without a positive**: ATSS gives none when no candidate's
  anchor centre lies inside the box by more than 0.01 px (an instance
  smaller than the stride-8 cell spacing, between anchor centres) or when
  its maIoU threshold is NaN (empty mask). With ``yolo_fallback`` (the
  default) such an instance takes its official YOLO anchor (best of 9 by
  width/height IoU, centre cell), unless an ATSS positive of another
  instance holds it (among fallbacks, the later instance wins, as the
  official overwrite); so, as in the official code, every instance trains
  the detector and is drawn on a map. ``yolo_fallback=False`` is plain
  ATSS (mmdet: such an instance is never learned).
* ``base_position="grid_center"`` (paper Table 4 row 1) is defined by the
  single assigned cell; with several positive cells it is ambiguous, so it
  is refused with ATSS.

Cost: the ATSS overlaps are ``(n, A)`` for ``A`` anchors (3 x the cells of
the three scales: 1,008 at 128 px, 18,207 at 544), maIoU adds the
integral-image lookups of ``assign.maiou``; the orientation maps are built
per scale (three passes over the ``(n, H, W)`` instance planes instead of
one). Everything is static-shape and runs inside ``tf.data``; the only
Python loops are over the 3 scales and their 3 anchors.
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.assign.assigners import ATSSAssigner
from orienmask_tf.families.orienmask import anchors as anchor_ops
from orienmask_tf.families.orienmask import orientation
from orienmask_tf.ops.box_ops import cxcywh_to_xyxy
from orienmask_tf.ops.box_ops import first_argmax

# targets.assigner -> overlap of the ATSS threshold.
ATSS_OVERLAPS = {"atss_iou": "iou", "atss_maiou": "maiou"}
STAT_NAMES = ("instances", "positives", "fallbacks", "unassigned",
              "clamped", "maps")


def anchor_boxes(image_size, anchors, anchor_mask=anchor_ops.ANCHOR_MASK,
                 strides=anchor_ops.STRIDES):
    """OrienMask's anchors at every cell: ``(A, 4)`` float32 x1, y1, x2, y2
    in input pixels and the count per scale (Python ints).

    Rows: scales in ``strides`` order, then cell row, cell column, local
    anchor (``anchor_mask[s]`` order); an anchor is centred on its cell
    (``(col + 0.5) * sw``, ``(row + 0.5) * sh``).
    """
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    boxes, counts = [], []
    for s, grid in enumerate(anchor_ops.grid_sizes(image_size, strides)):
        sw, sh = anchor_ops.cell_size(image_size, grid)
        cols, rows = anchor_ops.cell_offsets(grid)
        cx = ((cols + np.float32(0.5)) * sw)[..., None]      # (gh, gw, 1)
        cy = ((rows + np.float32(0.5)) * sh)[..., None]
        wh = anchors[list(anchor_mask[s])] / np.float32(2)   # (nA, 2)
        box = np.stack(np.broadcast_arrays(
            cx - wh[:, 0], cy - wh[:, 1], cx + wh[:, 0], cy + wh[:, 1]), -1)
        boxes.append(box.reshape(-1, 4))
        counts.append(int(box.shape[0] * box.shape[1] * box.shape[2]))
    return np.concatenate(boxes).astype(np.float32), tuple(counts)


def multi_map_orientation_targets(boxes, masks, member, grid_wh, scale_wh,
                                  half_anchor, image_size, center_region,
                                  valid_region, num_anchors):
    """Orientation labels and targets when an instance may be drawn on
    several anchor maps (base position: the box centre).

    The official per-map rule (``orientation.orientation_targets``, paper
    Eq. 1-2) with membership instead of one map per instance: per scale
    ``s`` the ROIs use that scale's half stride; on map ``m`` a pixel is
    foreground of the last member instance (index order) with ROI and mask
    there, otherwise the mean of the background vectors of every member
    whose ROI covers it.

    Args:
        boxes: ``(n, 4)`` normalized cx, cy, w, h.
        masks: ``(n, H, W)`` bool.
        member: ``(n, S * num_anchors)`` bool: instance ``i`` is drawn on
            map ``m`` (scale-major, as ``half_anchor``).
        grid_wh, scale_wh: per scale ``(gw, gh)`` and pixels per cell
            (float32 numpy pairs).
        half_anchor: ``(S * num_anchors, 2)`` half anchor size per map.

    Returns:
        lists (one entry per scale) of labels ``(nA, H, W)`` int8 and
        targets ``(nA, 2, H, W)`` float32.
    """
    height, width = image_size
    f32 = tf.float32
    n = tf.shape(boxes)[0]
    hw = height * width
    cols = tf.range(width, dtype=f32)
    rows = tf.range(height, dtype=f32)
    pixel_x = tf.tile(cols, [height])                 # (hw,) row-major
    pixel_y = tf.repeat(rows, width)
    maskf = tf.cast(masks, f32)
    member = tf.cast(member, f32)
    order = tf.range(1, n + 1, dtype=f32)             # 1-based GT order
    half = np.asarray(half_anchor, np.float32)
    labels, targets = [], []
    for s in range(len(grid_wh)):
        sw, sh = float(scale_wh[s][0]), float(scale_wh[s][1])
        g = boxes * np.tile(np.asarray(grid_wh[s], np.float32), 2)
        # The arithmetic of orientation_targets (same float32 order).
        cx, cy = g[:, 0] * sw, g[:, 1] * sh
        vw = (g[:, 2] * valid_region + 0.5) * sw
        vh = (g[:, 3] * valid_region + 0.5) * sh
        cw = orientation.exact_div(vw, valid_region) * center_region
        ch = orientation.exact_div(vh, valid_region) * center_region
        roi_x, ex, kx = orientation._axis_terms(cols, cx, cx, vw, cw,
                                                float(width))
        roi_y, ey, ky = orientation._axis_terms(rows, cy, cy, vh, ch,
                                                float(height))
        roi = tf.cast(roi_y, f32)[:, :, None] * tf.cast(roi_x, f32)[:, None]
        fg = roi * maskf
        bg = roi - fg
        bgk = bg * (tf.minimum(kx[:, None, :], ky[:, :, None]) - 1.0)
        members = member[:, s * num_anchors:(s + 1) * num_anchors]  # (n, nA)
        flat = [tf.reshape(x, [n, hw]) for x in
                (bg, bgk * ex[:, None, :], bgk * ey[:, :, None], fg)]
        count, sum_x, sum_y = (tf.matmul(members, x, transpose_a=True)
                               for x in flat[:3])      # (nA, hw) each
        # Owner of a foreground pixel on map a: the largest 1-based index
        # among member instances with foreground there (0: none).
        owner = tf.stack([
            tf.maximum(tf.reduce_max(flat[3] * (members[:, a] * order)[:, None],
                                     axis=0), 0.0)
            for a in range(num_anchors)])
        has_fg = owner > 0
        index = tf.where(has_fg, tf.cast(owner, tf.int32) - 1, n)
        base_x = tf.gather(tf.concat([cx, [0.0]], 0), index)
        base_y = tf.gather(tf.concat([cy, [0.0]], 0), index)
        hx = half[s * num_anchors:(s + 1) * num_anchors, 0:1]
        hy = half[s * num_anchors:(s + 1) * num_anchors, 1:2]
        count = tf.where(has_fg, 0.0, count)
        denom = tf.maximum(count, 1.0)
        vx = tf.where(has_fg, -orientation.exact_div(pixel_x - base_x, hx),
                      orientation.exact_div(orientation.exact_div(sum_x, hx),
                                            denom))
        vy = tf.where(has_fg, -orientation.exact_div(pixel_y - base_y, hy),
                      orientation.exact_div(orientation.exact_div(sum_y, hy),
                                            denom))
        shape = [num_anchors, height, width]
        targets.append(tf.stack([tf.reshape(vx, shape),
                                 tf.reshape(vy, shape)], 1))
        labels.append(tf.reshape(
            tf.cast(has_fg, tf.int8) * orientation.ORIEN_POSITIVE
            + tf.cast(count > 0, tf.int8) * orientation.ORIEN_NEGATIVE,
            shape))
    return labels, targets


class AtssTargets:
    """ATSS / ATSS-maIoU targets of an ``OrienMaskTargetEncoder``.

    Built by the encoder for ``assigner`` ``atss_iou`` / ``atss_maiou``;
    reads its image size, anchors, grid and orientation settings. See the
    module docstring for the design.

    Args:
        encoder: the ``OrienMaskTargetEncoder``.
        overlap: ``"iou"`` or ``"maiou"``.
        topk: ATSS candidates per scale.
        yolo_fallback: give an instance without ATSS positive its YOLO
            anchor.
    """

    def __init__(self, encoder, overlap, topk=9, yolo_fallback=True):
        self.encoder = encoder
        self.overlap = overlap
        self.topk = int(topk)
        self.yolo_fallback = bool(yolo_fallback)
        self.assigner = ATSSAssigner(topk=self.topk, overlap=overlap)
        self.anchors, self.num_level_anchors = anchor_boxes(
            encoder.image_size, encoder.anchors, encoder.anchor_mask,
            encoder.strides)
        self.offsets = tuple(int(v) for v in
                             np.cumsum((0,) + self.num_level_anchors)[:-1])
        n_a = encoder.num_anchors
        # Map (scale * nA + local anchor) of every anchor row.
        self.map_of_anchor = np.concatenate([
            np.tile(np.arange(n_a, dtype=np.int32), count // n_a) + s * n_a
            for s, count in enumerate(self.num_level_anchors)])

    def _fallback(self, assigned, boxes, valid):
        """``assigned`` plus the YOLO anchor of each valid instance without
        positive, where no ATSS positive holds it (later instance wins
        among fallbacks); and the ``(n,)`` bool of instances that took one."""
        enc = self.encoder
        n = tf.shape(boxes)[0]
        n_a = enc.num_anchors
        yolo = enc.assign(boxes, valid)
        claims = tf.stack([a for a, _, _ in yolo], 0)           # (S, n)
        scale_of = first_argmax(tf.cast(tf.transpose(claims), tf.int32))
        index = tf.stack([scale_of, tf.range(n)], -1)
        local = tf.gather_nd(tf.stack([loc for _, loc, _ in yolo], 0), index)
        grids = np.array([[gw, gh] for gh, gw in enc.grid_sizes], np.int32)
        grid = tf.gather(grids, scale_of)                       # (n, 2)
        xy = tf.floor(boxes[:, 0:2] * tf.cast(grid, tf.float32))
        cell = tf.cast(tf.clip_by_value(xy, 0.0, tf.cast(grid - 1,
                                                          tf.float32)),
                       tf.int32)
        flat = (tf.gather(np.array(self.offsets, np.int32), scale_of)
                + (cell[:, 1] * grid[:, 0] + cell[:, 0]) * n_a + local)
        positives = tf.math.unsorted_segment_sum(
            tf.ones_like(assigned), tf.where(assigned > 0, assigned - 1, n),
            n + 1)[:n]
        want = valid & tf.reduce_any(claims, 0) & (positives == 0)
        flat = tf.where(want, flat, 0)
        claim = tf.tensor_scatter_nd_max(
            tf.zeros_like(assigned), flat[:, None],
            tf.where(want, tf.range(1, n + 1), 0))
        taken = (assigned == 0) & (claim > 0)
        new = tf.where(taken, claim, assigned)
        took = tf.math.unsorted_segment_sum(
            tf.cast(taken, tf.int32), tf.where(taken, claim - 1, n), n + 1)
        return new, took[:n] > 0

    def assign(self, boxes, masks, valid):
        """``(A,)`` int32 assignment over ``anchor_boxes`` rows (0 negative,
        ``k >= 1`` instance ``k - 1``) and ``(n,)`` bool fallback flags.

        ``boxes`` normalized cx, cy, w, h (invalid rows zeroed: a zero box
        holds no anchor centre, so it never gets a positive)."""
        height, width = self.encoder.image_size
        scale = tf.constant([width, height, width, height], tf.float32)
        pixel_boxes = cxcywh_to_xyxy(boxes) * scale
        n = tf.shape(boxes)[0]
        result = self.assigner(tf.constant(self.anchors),
                               self.num_level_anchors, pixel_boxes,
                               tf.cast(masks, tf.uint8), num_gts=n)
        assigned = tf.cast(result["assigned_gt_inds"], tf.int32)
        if not self.yolo_fallback:
            return assigned, tf.zeros([n], tf.bool)
        return self._fallback(assigned, boxes, valid)

    def encode(self, boxes, classes, masks, valid):
        """Targets (``OrienMaskTargetEncoder`` keys except ``gt_boxes``)
        and a dict of ``STAT_NAMES`` int32 counts of the example."""
        enc = self.encoder
        n = tf.shape(boxes)[0]
        n_a = enc.num_anchors
        assigned, fallback = self.assign(boxes, masks, valid)
        pad_boxes = tf.concat([boxes, tf.zeros([1, 4])], 0)
        pad_classes = tf.concat([classes, [-1]], 0)
        out, clamped = {}, 0
        for s, name in enumerate(enc.names):
            gh, gw = enc.grid_sizes[s]
            start, count = self.offsets[s], self.num_level_anchors[s]
            ids = tf.transpose(tf.reshape(assigned[start:start + count],
                                          [gh, gw, n_a]), [2, 0, 1])
            pos = ids > 0
            idx = tf.where(pos, ids - 1, n)                   # (nA, gh, gw)
            grid_wh, _, grid_anchors = enc.scale_constants(s)
            anchor_wh = grid_anchors[list(enc.anchor_mask[s])][:, None, None]
            box = tf.gather(pad_boxes, idx)
            g_xy = box[..., 0:2] * grid_wh
            g_wh = box[..., 2:4] * grid_wh
            cols, rows = anchor_ops.cell_offsets((gh, gw))
            offset = g_xy - np.stack([cols, rows], -1)
            outside = tf.reduce_any((offset < 0.0) | (offset > 1.0), -1)
            clamped += tf.reduce_sum(tf.cast(pos & outside, tf.int32))
            txy = tf.clip_by_value(offset, 0.0, 1.0)
            safe_wh = tf.where(pos[..., None], g_wh, anchor_wh)
            twh = tf.math.log(orientation.exact_div(safe_wh, anchor_wh))
            weight = 2.0 - orientation.exact_div(g_wh[..., 0] * g_wh[..., 1],
                                                 float(gw * gh))
            values = tf.concat([txy, twh, weight[..., None]], -1)
            out[f"box_targets_{name}"] = tf.where(pos[..., None], values, 0.0)
            out[f"cls_targets_{name}"] = tf.where(
                pos, tf.gather(pad_classes, idx), -1)

        num_maps = len(enc.strides) * n_a
        pair = tf.where(assigned > 0,
                        (assigned - 1) * num_maps + self.map_of_anchor,
                        n * num_maps)
        per_map = tf.math.unsorted_segment_sum(
            tf.ones_like(assigned), pair, n * num_maps + 1)[:n * num_maps]
        per_map = tf.reshape(per_map, [n, num_maps])
        member = per_map > 0
        consts = [enc.scale_constants(s) for s in range(len(enc.strides))]
        half_anchor = np.stack(
            [enc.anchors[list(m)] for m in enc.anchor_mask]).reshape(-1, 2)
        labels, targets = multi_map_orientation_targets(
            boxes, masks, member, [c[0] for c in consts],
            [c[1] for c in consts], half_anchor / np.float32(2),
            enc.image_size, enc.center_region, enc.valid_region, n_a)
        for s, name in enumerate(enc.names):
            out[f"orien_labels_{name}"] = labels[s]
            out[f"orien_targets_{name}"] = tf.cast(targets[s],
                                                   enc.orien_dtype)
        positives = tf.reduce_sum(per_map, 1)
        stats = {
            "instances": tf.reduce_sum(tf.cast(valid, tf.int32)),
            "positives": tf.reduce_sum(positives),
            "fallbacks": tf.reduce_sum(tf.cast(fallback, tf.int32)),
            "unassigned": tf.reduce_sum(tf.cast(valid & (positives == 0),
                                                tf.int32)),
            "clamped": clamped,
            "maps": tf.reduce_sum(tf.cast(member, tf.int32)),
        }
        return out, stats
