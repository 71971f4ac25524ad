"""Anchor assigners of YOLACT and maYOLACT, vectorized over padded GT.

* ``MaxIoUAssigner``: mmdet's fixed-threshold assigner as configured for the
  YOLACT baseline (pos 0.5, neg 0.4, min_pos_iou 0, one forced best anchor
  per GT applied in GT order, later GTs overwrite earlier ones), with
  mmdet's ignore regions (``ignore_iof_thr``: crowd boxes or a crowd mask).
* ``ATSSAssigner``: adaptive training sample selection (Zhang et al. 2020)
  with the overlap as a parameter: ``"iou"`` is mmdet's ``ATSSAssigner``,
  ``"maiou"`` the official ``ATSSmaIoUAssigner`` (Mask-aware IoU, BMVC 2021).

Inputs are static-shape padded ground truth: ``gt_boxes (G, 4)`` x1, y1, x2,
y2 float32 pixels, ``gt_masks (G, H, W)`` uint8, ``num_gts`` scalar (rows
``>= num_gts`` are padding and never match), optional ``gt_labels (G,)``.
Outputs are a dict of ``(N,)`` tensors:

* ``assigned_gt_inds`` int32: 0 negative, ``k >= 1`` GT ``k - 1``
  (``MaxIoUAssigner`` also -1 = ignored);
* ``max_overlaps`` float32: as the official ``AssignResult.max_overlaps``;
* ``assigned_labels`` int32: label of the assigned GT, -1 otherwise.

No Python loop over GTs, no boolean-mask gathers: the functions trace into
one graph and run in ``tf.data`` and under ``tf.function``. Ties follow the
official code with a deterministic rule: the first GT index on equal
overlaps, the first anchor index on equal per-GT maxima, and in the ATSS
top-k the lower anchor index on equal centre distances (``tf.math.top_k``).
"""

import tensorflow as tf

from orienmask_tf.assign.maiou import get_overlap_fn
from orienmask_tf.assign.maiou import region_iof
from orienmask_tf.ops.box_ops import check_boxes
from orienmask_tf.ops.box_ops import first_argmax
from orienmask_tf.ops.box_ops import pairwise_iof

INF = 100000000.0


def _valid_gts(gt_boxes, num_gts):
    size = tf.shape(gt_boxes)[0]
    if num_gts is None:
        num_gts = size
    num_gts = tf.cast(num_gts, tf.int32)
    return tf.range(size) < num_gts, num_gts


def _labels(assigned_gt_inds, gt_labels):
    if gt_labels is None:
        return tf.fill(tf.shape(assigned_gt_inds), -1)
    gt_labels = tf.cast(gt_labels, tf.int32)
    index = tf.maximum(assigned_gt_inds - 1, 0)
    padded = tf.concat([gt_labels, [-1]], axis=0)   # safe when G == 0
    return tf.where(assigned_gt_inds > 0, tf.gather(padded, index), -1)


class MaxIoUAssigner:
    """mmdet ``MaxIoUAssigner`` (``match_low_quality=True``), vectorized.

    Steps: every anchor starts at -1; its max overlap over GTs (first GT on
    ties) in ``[0, neg_iou_thr)`` makes it 0, ``>= pos_iou_thr`` assigns that
    GT; then each GT ``g`` in order with best overlap ``>= min_pos_iou``
    takes its best anchor (the first one; every maximal anchor when
    ``gt_max_assign_all``), a later GT overwriting an earlier one. With no
    GT every anchor is 0 and ``max_overlaps`` 0.

    Ignore regions (mmdet ``ignore_iof_thr`` / ``gt_bboxes_ignore``, e.g.
    COCO crowd annotations): with ``ignore_iof_thr > 0`` (mmdet's test;
    <= 0 is off, the default -1 of mmdet and of every YOLACT config) and
    ignore regions given, an anchor whose largest IoF with them is
    ``> ignore_iof_thr`` has its overlap with every GT set to -1 before
    any step above, exactly where mmdet's ``assign`` does it: it is then
    neither negative nor positive (``assigned_gt_inds`` -1,
    ``max_overlaps`` -1) and cannot be a GT's forced best anchor (unless
    every anchor of that GT is below ``min_pos_iou``, as in mmdet). The
    IoF is intersection over the anchor's area
    (``ignore_wrt_candidates=True``, mmdet's default) or over the ignore
    box's area (False). With no GT the regions change nothing (mmdet:
    every anchor 0).

    Args:
        pos_iou_thr, neg_iou_thr, min_pos_iou, gt_max_assign_all,
            match_low_quality: as mmdet (``neg_iou_thr`` float or a
            ``(lo, hi)`` pair).
        overlap: name or callable of ``assign.maiou``.
        ignore_iof_thr: IoF threshold of the ignore regions; <= 0: off.
        ignore_wrt_candidates: IoF over the anchor's area (True) or over
            the ignore box's (False; boxes only).
    """

    def __init__(self, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                 gt_max_assign_all=False, match_low_quality=True,
                 overlap="iou", ignore_iof_thr=-1.0,
                 ignore_wrt_candidates=True):
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality
        self.overlap = overlap
        self.ignore_iof_thr = float(ignore_iof_thr)
        self.ignore_wrt_candidates = bool(ignore_wrt_candidates)
        self._overlap_fn = get_overlap_fn(overlap)

    def ignored_anchors(self, anchors, gt_bboxes_ignore=None,
                        num_ignores=None, ignore_mask=None):
        """``(N,)`` bool: max IoF with the ignore regions ``>
        ignore_iof_thr``; None when the test is off or no region is given.

        Args:
            anchors: ``(N, 4)`` float32.
            gt_bboxes_ignore: padded ``(K, 4)`` x1, y1, x2, y2 ignore boxes
                (mmdet ``gt_bboxes_ignore``); rows ``>= num_ignores`` are
                padding and never ignore anything. ``K`` may be 0.
            num_ignores: scalar count of real rows (default ``K``).
            ignore_mask: ``(H, W)`` ignore region (non-zero = ignore), its
                IoF being ``maiou.region_iof`` (the crowd pixels inside the
                anchor over the anchor's area); needs
                ``ignore_wrt_candidates``.
        """
        if self.ignore_iof_thr <= 0 or (gt_bboxes_ignore is None
                                        and ignore_mask is None):
            return None
        num_anchors = tf.shape(anchors)[0]
        best = tf.zeros([num_anchors], tf.float32)
        if gt_bboxes_ignore is not None:
            ignore = tf.convert_to_tensor(gt_bboxes_ignore, tf.float32)
            check_boxes("gt_bboxes_ignore", ignore, rank=2)
            size = tf.shape(ignore)[0]
            count = size if num_ignores is None else tf.cast(num_ignores,
                                                             tf.int32)
            real = tf.range(size) < count
            if self.ignore_wrt_candidates:
                iof = pairwise_iof(anchors, ignore, eps=1e-6)       # (N, K)
            else:
                iof = tf.transpose(pairwise_iof(ignore, anchors, eps=1e-6))
            iof = tf.where(real[None, :], iof, 0.0)
            best = tf.maximum(best, tf.reduce_max(
                tf.concat([iof, tf.zeros([num_anchors, 1])], 1), 1))
        if ignore_mask is not None:
            if not self.ignore_wrt_candidates:
                raise ValueError(
                    "ignore_mask: a region mask has no box area; it needs "
                    "ignore_wrt_candidates=True (IoF over the anchor)")
            best = tf.maximum(best, region_iof(anchors, ignore_mask))
        return best > self.ignore_iof_thr

    def __call__(self, anchors, gt_boxes, gt_masks=None, num_gts=None,
                 gt_labels=None, gt_bboxes_ignore=None, num_ignores=None,
                 ignore_mask=None):
        """Assign; ``gt_bboxes_ignore`` / ``num_ignores`` / ``ignore_mask``
        as ``ignored_anchors`` (used only with ``ignore_iof_thr > 0``)."""
        anchors = tf.convert_to_tensor(anchors, tf.float32)
        gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
        valid, num_gts = _valid_gts(gt_boxes, num_gts)
        overlaps = self._overlap_fn(anchors, gt_boxes, gt_masks)  # (G, N)
        overlaps = tf.where(valid[:, None], overlaps, -1.0)
        ignored = self.ignored_anchors(anchors, gt_bboxes_ignore,
                                       num_ignores, ignore_mask)
        if ignored is not None:   # mmdet: overlaps[:, ignored] = -1
            overlaps = tf.where(ignored[None, :], -1.0, overlaps)
        num_anchors = tf.shape(anchors)[0]
        num_rows = tf.shape(overlaps)[0]
        has_gt = num_gts > 0

        max_overlaps = tf.reduce_max(
            tf.concat([overlaps, tf.fill([1, num_anchors], -1.0)], 0), 0)
        argmax = first_argmax(overlaps, axis=0)
        assigned = tf.fill([num_anchors], -1)
        if isinstance(self.neg_iou_thr, (tuple, list)):
            lo, hi = self.neg_iou_thr
            neg = (max_overlaps >= lo) & (max_overlaps < hi)
        else:
            neg = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        assigned = tf.where(neg, 0, assigned)
        assigned = tf.where(max_overlaps >= self.pos_iou_thr, argmax + 1,
                            assigned)

        if self.match_low_quality:
            gt_max = tf.reduce_max(overlaps, axis=1)               # (G,)
            if self.gt_max_assign_all:
                hit = overlaps == gt_max[:, None]
            else:
                hit = (tf.range(num_anchors)[None, :]
                       == first_argmax(overlaps, axis=1)[:, None])
            hit &= (valid & (gt_max >= self.min_pos_iou))[:, None]
            gt_ids = tf.range(1, num_rows + 1)[:, None]
            # Applied in GT order, so the last (largest) GT index wins.
            forced = tf.reduce_max(
                tf.concat([tf.where(hit, gt_ids, 0),
                           tf.zeros([1, num_anchors], tf.int32)], 0), 0)
            assigned = tf.where(forced > 0, forced, assigned)

        assigned = tf.where(has_gt, assigned, 0)
        max_overlaps = tf.where(has_gt, max_overlaps, 0.0)
        return {"assigned_gt_inds": assigned,
                "max_overlaps": max_overlaps,
                "assigned_labels": _labels(assigned, gt_labels)}


class ATSSAssigner:
    """ATSS with a pluggable overlap (``"iou"``, ``"maiou"``, ``"giou"``, ...).

    Per GT and level the ``min(topk, n_l)`` anchors with the closest centres
    are candidates (lower anchor index first on equal distances); the
    threshold is mean + unbiased std of the candidates' overlaps; a
    candidate is positive when its overlap ``>= thr`` and its centre is
    inside the GT box by more than ``inside_eps`` (strict, 0.01 px). An
    anchor positive for several GTs takes the one with the largest overlap
    (first GT on ties). A GT whose threshold is NaN (maIoU of an empty mask)
    gets no positives. ``num_level_anchors`` must be Python ints.

    Extra outputs for inspection: ``candidate_idxs (G, C)`` and ``thr (G,)``.
    """

    def __init__(self, topk=9, overlap="iou", inside_eps=0.01):
        self.topk = topk
        self.overlap = overlap
        self.inside_eps = inside_eps
        self._overlap_fn = get_overlap_fn(overlap)

    def __call__(self, anchors, num_level_anchors, gt_boxes, gt_masks=None,
                 num_gts=None, gt_labels=None):
        anchors = tf.convert_to_tensor(anchors, tf.float32)
        gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
        valid, num_gts = _valid_gts(gt_boxes, num_gts)
        overlaps = self._overlap_fn(anchors, gt_boxes, gt_masks)  # (G, N)
        num_anchors = tf.shape(anchors)[0]
        num_rows = tf.shape(overlaps)[0]

        ax1, ay1, ax2, ay2 = tf.unstack(anchors, num=4, axis=-1)
        gx1, gy1, gx2, gy2 = tf.unstack(gt_boxes, num=4, axis=-1)
        a_cx, a_cy = (ax1 + ax2) / 2.0, (ay1 + ay2) / 2.0
        g_cx, g_cy = (gx1 + gx2) / 2.0, (gy1 + gy2) / 2.0
        dx = a_cx[None, :] - g_cx[:, None]
        dy = a_cy[None, :] - g_cy[:, None]
        neg_dist = -tf.sqrt(dx * dx + dy * dy)                    # (G, N)

        candidates, start = [], 0
        for count in num_level_anchors:
            count = int(count)
            k = min(self.topk, count)
            _, idx = tf.math.top_k(neg_dist[:, start:start + count], k=k,
                                   sorted=True)
            candidates.append(idx + start)
            start += count
        candidates = tf.concat(candidates, axis=1)                # (G, C)
        num_cand = int(candidates.shape[1])

        cand_overlaps = tf.gather(overlaps, candidates, batch_dims=1)
        mean = tf.reduce_mean(cand_overlaps, axis=1)
        var = tf.reduce_sum(tf.square(cand_overlaps - mean[:, None]),
                            axis=1) / float(num_cand - 1)
        thr = mean + tf.sqrt(var)
        is_pos = cand_overlaps >= thr[:, None]

        cx = tf.gather(a_cx, candidates)
        cy = tf.gather(a_cy, candidates)
        inside = tf.reduce_min(
            tf.stack([cx - gx1[:, None], cy - gy1[:, None],
                      gx2[:, None] - cx, gy2[:, None] - cy], 0), 0)
        is_pos &= (inside > self.inside_eps) & valid[:, None]

        # Candidate indices are unique per GT row: scatter without conflicts.
        rows = tf.broadcast_to(tf.range(num_rows)[:, None],
                               tf.shape(candidates))
        pos = tf.scatter_nd(tf.stack([rows, candidates], -1),
                            tf.cast(is_pos, tf.int32),
                            tf.stack([num_rows, num_anchors]))
        overlaps_inf = tf.where(pos > 0, overlaps, -INF)
        overlaps_inf = tf.concat(
            [overlaps_inf, tf.fill([1, num_anchors], -INF)], 0)
        max_overlaps = tf.reduce_max(overlaps_inf, axis=0)
        argmax = first_argmax(overlaps_inf, axis=0)
        assigned = tf.where(max_overlaps != -INF, argmax + 1, 0)

        has_gt = num_gts > 0
        assigned = tf.where(has_gt, assigned, 0)
        max_overlaps = tf.where(has_gt, max_overlaps, 0.0)
        return {"assigned_gt_inds": assigned,
                "max_overlaps": max_overlaps,
                "assigned_labels": _labels(assigned, gt_labels),
                "candidate_idxs": candidates,
                "thr": thr}
