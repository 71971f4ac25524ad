"""Numpy port of the official maYOLACT code, loop for loop: the test oracle.

Ports ``ATSSmaIoUAssigner.maiou_calculator`` / ``assign`` (per-GT loop,
boolean indexing), mmdet ``ATSSAssigner`` and ``MaxIoUAssigner`` from
github.com/kemaloksuz/Mask-aware-IoU (commit a6ddebb). The only change is
the documented one: top-k ties go to the lower anchor index (stable sort),
i.e. the fixtures' ``_stable`` arrays. float32 throughout.
"""

import numpy as np

F = np.float32
INF = F(100000000)


def maiou_calculator(gt_bboxes, bboxes, gt_masks, eps=1e-6):
    gt_bboxes = np.asarray(gt_bboxes, F)
    bboxes = np.asarray(bboxes, F)
    rows, cols = len(gt_bboxes), len(bboxes)
    if rows * cols == 0:
        return np.zeros((rows, cols), F), np.zeros((rows, cols), F), None
    lt = np.maximum(gt_bboxes[:, None, :2], bboxes[:, :2])
    rb = np.minimum(gt_bboxes[:, None, 2:], bboxes[:, 2:])
    wh = np.maximum(rb - lt, F(0))
    inter = wh[:, :, 0] * wh[:, :, 1]
    area1 = (gt_bboxes[:, 2] - gt_bboxes[:, 0]) * (gt_bboxes[:, 3] - gt_bboxes[:, 1])
    area2 = (bboxes[:, 2] - bboxes[:, 0]) * (bboxes[:, 3] - bboxes[:, 1])
    union = np.maximum(area1[:, None] + area2 - inter, F(eps))
    ious = inter / union
    larger = ious > 0
    overlap = np.zeros((rows, cols), F)
    masks = np.asarray(gt_masks) != 0
    g, h, w = masks.shape
    padded = np.zeros((g, h + 1, w + 1), np.int64)
    padded[:, 1:, 1:] = masks
    integral = np.cumsum(np.cumsum(padded, axis=1), axis=2).astype(F)
    mob = integral[:, -1, -1] / (area1 + F(eps))
    for i in range(g):
        boxes = np.rint(bboxes[larger[i]]).astype(np.int32)
        boxes = np.maximum(boxes, 0)
        boxes[:, 2] = np.minimum(boxes[:, 2], w)
        boxes[:, 3] = np.minimum(boxes[:, 3], h)
        x1, y1, x2, y2 = boxes.T
        table = integral[i]
        area = table[y2, x2] + table[y1, x1] - table[y1, x2] - table[y2, x1]
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap[i, larger[i]] = area / mob[i]
    with np.errstate(invalid="ignore"):
        return overlap / union, ious, mob


def brute_force_maiou(gt_bboxes, bboxes, gt_masks):
    """Pixel counting per pair (IoU > 0 only), same rounding and division order."""
    _, ious, mob = maiou_calculator(gt_bboxes, bboxes, gt_masks)
    out = np.zeros_like(ious)
    masks = np.asarray(gt_masks) != 0
    h, w = masks.shape[1:]
    b = np.asarray(bboxes, F)
    gt = np.asarray(gt_bboxes, F)
    for g, n in zip(*np.nonzero(ious > 0)):
        x1, y1, x2, y2 = np.maximum(np.rint(b[n]).astype(np.int32), 0)
        x2, y2 = min(x2, w), min(y2, h)
        count = F(masks[g, y1:y2, x1:x2].sum())
        inter_w = max(F(0), min(gt[g, 2], b[n, 2]) - max(gt[g, 0], b[n, 0]))
        inter_h = max(F(0), min(gt[g, 3], b[n, 3]) - max(gt[g, 1], b[n, 1]))
        inter = F(inter_w * inter_h)
        union = max(F((gt[g, 2] - gt[g, 0]) * (gt[g, 3] - gt[g, 1])
                      + (b[n, 2] - b[n, 0]) * (b[n, 3] - b[n, 1]) - inter), F(1e-6))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[g, n] = (count / mob[g]) / union
    return out


def atss_assign(bboxes, num_level_bboxes, gt_bboxes, overlaps, gt_labels=None, topk=9):
    """``ATSS(ma)IoUAssigner.assign`` given the (G, N) overlap matrix."""
    bboxes = np.asarray(bboxes, F)
    gt_bboxes = np.asarray(gt_bboxes, F)
    num_gt, num_bboxes = len(gt_bboxes), len(bboxes)
    overlaps = np.asarray(overlaps, F).T                     # (N, G)
    assigned = np.zeros(num_bboxes, np.int64)
    labels = np.full(num_bboxes, -1, np.int64)
    if num_gt == 0 or num_bboxes == 0:
        return assigned, np.zeros(num_bboxes, F), labels, None
    gt_c = np.stack([(gt_bboxes[:, 0] + gt_bboxes[:, 2]) / F(2),
                     (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / F(2)], 1)
    bcx = (bboxes[:, 0] + bboxes[:, 2]) / F(2)
    bcy = (bboxes[:, 1] + bboxes[:, 3]) / F(2)
    pts = np.stack([bcx, bcy], 1)
    dist = np.sqrt(((pts[:, None, :] - gt_c[None]) ** 2).sum(-1))
    cands, start = [], 0
    for n in num_level_bboxes:
        end = start + int(n)
        k = min(topk, end - start)
        order = np.argsort(dist[start:end], axis=0, kind="stable")[:k]
        cands.append(order + start)
        start = end
    cand = np.concatenate(cands, 0)                          # (C, G)
    cand_ov = overlaps[cand, np.arange(num_gt)]
    thr = cand_ov.mean(0) + cand_ov.std(0, ddof=1)
    with np.errstate(invalid="ignore"):
        is_pos = cand_ov >= thr[None, :]
    l_ = bcx[cand] - gt_bboxes[:, 0]
    t_ = bcy[cand] - gt_bboxes[:, 1]
    r_ = gt_bboxes[:, 2] - bcx[cand]
    b_ = gt_bboxes[:, 3] - bcy[cand]
    is_pos &= np.stack([l_, t_, r_, b_], 1).min(1) > F(0.01)
    ov_inf = np.full((num_bboxes, num_gt), -INF, F)
    for g in range(num_gt):
        sel = cand[is_pos[:, g], g]
        ov_inf[sel, g] = overlaps[sel, g]
    max_ov = ov_inf.max(1)
    arg = ov_inf.argmax(1)                                   # first maximum
    hit = max_ov != -INF
    assigned[hit] = arg[hit] + 1
    if gt_labels is not None:
        labels[hit] = np.asarray(gt_labels)[assigned[hit] - 1]
    return assigned, max_ov, labels, cand


def max_iou_assign(overlaps, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0):
    """``MaxIoUAssigner.assign_wrt_overlaps`` (gt_max_assign_all=False)."""
    overlaps = np.asarray(overlaps, F)
    num_gts, num_bboxes = overlaps.shape
    assigned = np.full(num_bboxes, -1, np.int64)
    if num_gts == 0 or num_bboxes == 0:
        return np.zeros(num_bboxes, np.int64), np.zeros(num_bboxes, F)
    max_ov, arg = overlaps.max(0), overlaps.argmax(0)
    gt_max, gt_arg = overlaps.max(1), overlaps.argmax(1)
    assigned[(max_ov >= 0) & (max_ov < neg_iou_thr)] = 0
    pos = max_ov >= pos_iou_thr
    assigned[pos] = arg[pos] + 1
    for i in range(num_gts):
        if gt_max[i] >= min_pos_iou:
            assigned[gt_arg[i]] = i + 1
    return assigned, max_ov
