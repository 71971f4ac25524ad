# SPDX-License-Identifier: Apache-2.0
"""Anchor statistics and fitting on box sizes (numpy only, deterministic).

Boxes and anchors are ``[width, height]`` pairs in input pixels, compared
as if they shared one centre (the YOLOv3 anchor-matching overlap,
``shape_iou``): only the shape of a box decides which anchor it is matched
to, its position does not.

* :func:`anchor_stats`: best-possible recall (the fraction of boxes whose
  best anchor reaches an IoU threshold), mean best IoU, and how many boxes
  each anchor / each stride wins.
* :func:`kmeans_anchors`: k-means with the distance ``1 - IoU`` (Redmon &
  Farhadi, YOLO9000 Sec. 2 "Dimension Clusters"), k-means++ seeding, the
  median as cluster centre, several seeded restarts.
* :func:`evolve_anchors`: a short genetic refinement of the k-means anchors
  as YOLOv5 does (``utils/autoanchor.py``: random multiplicative mutations,
  kept when the fitness improves); fitness = the mean best IoU counting a
  box below the threshold as 0.
* :func:`fit_anchors`: the two together, sorted by area and grouped per
  scale (finest stride first: the smallest anchors go to stride 8).

Everything takes a ``seed``; the same input and seed give the same anchors.
"""

import numpy as np


def _as_wh(name, value):
    array = np.asarray(value, np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name}: expected an (n, 2) array of [width, "
                         f"height], got shape {array.shape}")
    if array.size and not (np.all(np.isfinite(array)) and np.all(array > 0)):
        raise ValueError(f"{name}: widths and heights must be finite and "
                         "> 0")
    return array


def shape_iou(boxes, anchors):
    """IoU ``(n, k)`` of ``boxes (n, 2)`` and ``anchors (k, 2)`` ``[w, h]``
    placed on one centre: ``min(w) min(h) / (w h + w' h' - min(w) min(h))``.
    """
    boxes = _as_wh("boxes", boxes)
    anchors = _as_wh("anchors", anchors)
    inter = (np.minimum(boxes[:, None, 0], anchors[None, :, 0])
             * np.minimum(boxes[:, None, 1], anchors[None, :, 1]))
    union = (boxes[:, None, 0] * boxes[:, None, 1]
             + anchors[None, :, 0] * anchors[None, :, 1] - inter)
    return inter / union


def resized_box_sizes(boxes_wh, image_hw, input_size, min_size=0.0):
    """Box sizes after warping each image to the network input.

    Args:
        boxes_wh: ``(n, 2)`` box ``[width, height]`` in original pixels.
        image_hw: ``(n, 2)`` ``[height, width]`` of each box's image.
        input_size: ``(height, width)`` of the network input.
        min_size: boxes narrower or lower than this after the resize are
            dropped (as the training transforms' ``min_box_size``).

    Returns:
        ``(m, 2)`` float64 ``[width, height]`` in input pixels.
    """
    boxes = np.asarray(boxes_wh, np.float64).reshape(-1, 2)
    sizes = np.asarray(image_hw, np.float64).reshape(-1, 2)
    if len(boxes) != len(sizes):
        raise ValueError(f"boxes_wh ({len(boxes)}) and image_hw "
                         f"({len(sizes)}) must have one row per box")
    height, width = (float(v) for v in input_size)
    scaled = boxes * np.stack([width / sizes[:, 1], height / sizes[:, 0]], 1)
    keep = np.all(scaled > max(float(min_size), 0.0), axis=1)
    return scaled[keep]


def anchor_stats(boxes, anchors, threshold, per_scale=None):
    """How well ``anchors`` cover ``boxes``.

    Args:
        boxes: ``(n, 2)`` ``[w, h]``; anchors: ``(k, 2)`` ``[w, h]``.
        threshold: IoU a box's best anchor must reach to count as
            recallable.
        per_scale: anchors per scale (consecutive rows form a scale); also
            count the boxes best matched at each scale.

    Returns:
        dict: ``bpr`` (best-possible recall: share of boxes whose best IoU
        is ``>= threshold``), ``mean_iou`` (mean best IoU),
        ``boxes_per_anchor`` (boxes whose best anchor is each row, first
        row on ties), ``boxes_per_scale`` (the same summed per scale, when
        ``per_scale`` is given) and ``num_boxes``.
    """
    boxes = _as_wh("boxes", boxes)
    anchors = _as_wh("anchors", anchors)
    if len(boxes) == 0:
        raise ValueError("boxes: no box to measure the anchors on")
    iou = shape_iou(boxes, anchors)
    best = iou.max(axis=1)
    counts = np.bincount(iou.argmax(axis=1), minlength=len(anchors))
    stats = {"num_boxes": int(len(boxes)),
             "bpr": float(np.mean(best >= threshold)),
             "mean_iou": float(np.mean(best)),
             "boxes_per_anchor": counts.tolist()}
    if per_scale:
        if len(anchors) % per_scale:
            raise ValueError(f"{len(anchors)} anchors do not split into "
                             f"scales of {per_scale}")
        stats["boxes_per_scale"] = counts.reshape(-1, per_scale).sum(1).tolist()
    return stats


def fitness(boxes, anchors, threshold):
    """Mean best IoU, a box whose best IoU is under ``threshold`` counting
    0 (YOLOv5's ``anchor_fitness`` with IoU in place of its ratio metric).
    """
    best = shape_iou(boxes, anchors).max(axis=1)
    return float(np.mean(np.where(best >= threshold, best, 0.0)))


def _seed_centres(boxes, k, rng):
    # k-means++ (Arthur & Vassilvitskii 2007) with the 1 - IoU distance.
    centres = [boxes[rng.integers(len(boxes))]]
    distance = 1.0 - shape_iou(boxes, np.array(centres))[:, 0]
    for _ in range(1, k):
        weights = distance ** 2
        total = weights.sum()
        index = (rng.choice(len(boxes), p=weights / total) if total > 0
                 else rng.integers(len(boxes)))
        centres.append(boxes[index])
        distance = np.minimum(
            distance, 1.0 - shape_iou(boxes, boxes[index:index + 1])[:, 0])
    return np.array(centres)


def _kmeans_once(boxes, k, rng, max_iter):
    centres = _seed_centres(boxes, k, rng)
    labels = None
    for _ in range(max_iter):
        iou = shape_iou(boxes, centres)
        new = iou.argmax(axis=1)
        for j in range(k):
            # Empty cluster: restart it on the worst-covered box.
            if not np.any(new == j):
                worst = int(np.argmin(iou[np.arange(len(boxes)), new]))
                new[worst] = j
                iou[worst] = 0.0
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([np.median(boxes[labels == j], axis=0)
                            for j in range(k)])
    return centres


def kmeans_anchors(boxes, k, seed=0, restarts=3, max_iter=300):
    """``k`` anchors ``(k, 2)`` by k-means on ``boxes (n, 2)`` with the
    ``1 - shape_iou`` distance (YOLO9000 Sec. 2): k-means++ seeding, median
    centres, the best (highest mean best IoU) of ``restarts`` seeded runs.
    Sorted by area, smallest first.
    """
    boxes = _as_wh("boxes", boxes)
    if len(np.unique(boxes, axis=0)) < k:
        raise ValueError(
            f"boxes: {len(boxes)} boxes ({len(np.unique(boxes, axis=0))} "
            f"distinct sizes) cannot make {k} anchors")
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(max(1, int(restarts))):
        centres = _kmeans_once(boxes, k, rng, max_iter)
        score = float(shape_iou(boxes, centres).max(axis=1).mean())
        if score > best_score:
            best, best_score = centres, score
    return sort_anchors(best)


def evolve_anchors(boxes, anchors, threshold, generations=1000, seed=0,
                   mutation_p=0.9, sigma=0.1, min_size=2.0):
    """Refine ``anchors`` by a genetic search (YOLOv5 ``kmean_anchors``):
    each generation multiplies every coordinate, with probability
    ``mutation_p``, by ``1 + r * N(0, 1) * sigma`` (one ``r ~ U(0, 1)`` per
    generation, clipped to [0.3, 3]) and keeps the result when it raises
    :func:`fitness`. Returns the refined anchors sorted by area and the
    fitness before and after."""
    boxes = _as_wh("boxes", boxes)
    best = _as_wh("anchors", anchors).copy()
    rng = np.random.default_rng(seed)
    start = score = fitness(boxes, best, threshold)
    for _ in range(int(generations)):
        factor = np.ones_like(best)
        while np.all(factor == 1.0):
            factor = ((rng.random(best.shape) < mutation_p) * rng.random()
                      * rng.standard_normal(best.shape) * sigma + 1.0
                      ).clip(0.3, 3.0)
        candidate = (best * factor).clip(min=min_size)
        candidate_score = fitness(boxes, candidate, threshold)
        if candidate_score > score:
            best, score = candidate, candidate_score
    return sort_anchors(best), start, score


def sort_anchors(anchors):
    """Anchors sorted by area (then width), smallest first."""
    anchors = _as_wh("anchors", anchors)
    order = np.lexsort((anchors[:, 0], anchors[:, 0] * anchors[:, 1]))
    return anchors[order]


def group_anchors(anchors, per_scale):
    """``(k, 2)`` sorted anchors -> ``(k / per_scale, per_scale, 2)``: one
    row per scale, finest stride first."""
    anchors = sort_anchors(anchors)
    if per_scale < 1 or len(anchors) % per_scale:
        raise ValueError(f"{len(anchors)} anchors do not split into scales "
                         f"of {per_scale}")
    return anchors.reshape(-1, per_scale, 2)


def fit_anchors(boxes, num_scales, per_scale, threshold, seed=0,
                generations=1000, max_boxes=20000, decimals=1):
    """K-means + genetic refinement of ``num_scales * per_scale`` anchors.

    Args:
        boxes: ``(n, 2)`` training box ``[w, h]`` in input pixels.
        num_scales, per_scale: the layout (OrienMask: 3 strides x 3).
        threshold: IoU of the best-possible recall (fitness counts boxes
            under it as 0).
        seed: seeds the subsample, k-means++ and the mutations.
        generations: genetic refinement steps (0: k-means only).
        max_boxes: fit on a seeded subsample of at most this many boxes
            (COCO has ~860k); the statistics are measured on all boxes.
        decimals: round the anchors to this many decimals (what a config
            file holds, and so what is measured).

    Returns:
        ``(num_scales, per_scale, 2)`` float64 anchors, sorted by area,
        finest stride first.
    """
    boxes = _as_wh("boxes", boxes)
    rng = np.random.default_rng(seed)
    if len(boxes) > max_boxes:
        boxes = boxes[np.sort(rng.choice(len(boxes), max_boxes,
                                         replace=False))]
    k = int(num_scales) * int(per_scale)
    anchors = kmeans_anchors(boxes, k, seed=seed)
    if generations:
        anchors, _, _ = evolve_anchors(boxes, anchors, threshold,
                                       generations=generations, seed=seed)
    anchors = np.round(anchors, decimals).clip(min=10.0 ** -decimals)
    return group_anchors(anchors, per_scale)
