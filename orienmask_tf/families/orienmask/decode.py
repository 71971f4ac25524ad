"""OrienMask post-processing in plain TF ops: raw outputs -> padded detections.

Implements the official ``OrienMaskYOLOPostProcess`` (paper Sec. 3.3, Eq. 3)
with static shapes so that it runs eagerly, in ``tf.function`` and under
``tf.function(jit_compile=True)``, vectorized over the batch:

1. boxes (normalized cx, cy, w, h) and scores ``sigmoid(cls) * sigmoid(obj)``
   of every (anchor, row, col) of the scales S32, S16, S8, concatenated;
2. one candidate per (box, class) with score > ``conf_thresh``, in box-major
   then class order; above ``nms_pre`` candidates the ``nms_pre`` best, by
   descending score;
3. class-aware NMS on boxes shifted by ``2.0 * class`` (``greedy``: exactly
   the official ``nms_cpu.cpp`` with IoU >= threshold; ``fast``: YOLACT's
   matrix Fast NMS); survivors in ascending candidate order, or, above
   ``nms_post`` of them, the ``nms_post`` best by descending score;
4. masks (Eq. 3): the detection's own anchor orientation map, upsampled x4
   (bilinear, half-pixel, as ``F.interpolate``), points each pixel to a base
   position; the pixel is foreground when that position lies within
   ``orien_thresh * box size`` of the box centre on both axes (strict).

Ties in score are broken by the lower index first everywhere (the official
code uses unstable sorts there).
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.families.orienmask import anchors as anchor_ops
from orienmask_tf.families.orienmask.anchors import ANCHOR_MASK
from orienmask_tf.families.orienmask.anchors import STRIDES
from orienmask_tf.ops.box_ops import cxcywh_to_xyxy
from orienmask_tf.ops.nms import fast_nms_mask
from orienmask_tf.ops.nms import greedy_nms_mask
from orienmask_tf.ops.resize import upsample_bilinear

BOX_KEYS = tuple(f"box_s{s}" for s in STRIDES)
ORIEN_KEYS = tuple(f"orien_s{s}" for s in STRIDES)
NMS_FUNCTIONS = {"greedy": greedy_nms_mask, "fast": fast_nms_mask}
# batched_nms: offset = (1.5 + 0.5) * class on normalized cx, cy.
CLASS_OFFSET = 2.0


class _Layout:
    """Static per-box and per-anchor constants (numpy float32, official
    operation order)."""

    def __init__(self, anchors, image_size, anchor_mask, num_classes):
        height, width = (int(v) for v in image_size)
        anchors = np.asarray(anchors, np.float32)
        self.height, self.width = height, width
        self.num_classes = int(num_classes)
        self.anchor_mask = tuple(tuple(int(a) for a in m) for m in anchor_mask)
        self.num_anchors = anchors.shape[0]
        self.grids = anchor_ops.grid_sizes((height, width))
        norm = anchors / np.array([width, height], np.float32)
        self.norm_anchors = norm.astype(np.float32)
        grid_wh = np.zeros_like(norm)
        grid_anchors = np.zeros_like(norm)
        for m, (gh, gw) in zip(self.anchor_mask, self.grids):
            grid_wh[list(m)] = (gw, gh)
            grid_anchors[list(m)] = anchor_ops.grid_anchors(
                anchors[list(m)], (height, width), (gh, gw), "normalized")
        self.grid_wh = grid_wh                         # (A, 2) grid size of A
        self.grid_anchors = grid_anchors
        xs = np.arange(width, dtype=np.float32) / np.float32(width)
        ys = np.arange(height, dtype=np.float32) / np.float32(height)
        self.base_x = (xs[None, :] * grid_wh[:, :1]).astype(np.float32)
        self.base_y = (ys[None, :] * grid_wh[:, 1:]).astype(np.float32)
        ids, gx, gy, gws, ghs = [], [], [], [], []
        for m, (gh, gw) in zip(self.anchor_mask, self.grids):
            cols, rows = anchor_ops.cell_offsets((gh, gw))   # (a, row, col)
            shape = (len(m), gh, gw)
            ids.append(np.repeat(np.asarray(m), gh * gw))
            gx.append(np.broadcast_to(cols, shape).ravel())
            gy.append(np.broadcast_to(rows, shape).ravel())
            gws.append(np.full(len(m) * gh * gw, gw))
            ghs.append(np.full(len(m) * gh * gw, gh))
        self.box_anchor = np.concatenate(ids).astype(np.int32)
        self.box_col = np.concatenate(gx).astype(np.float32)
        self.box_row = np.concatenate(gy).astype(np.float32)
        self.box_gw = np.concatenate(gws).astype(np.float32)
        self.box_gh = np.concatenate(ghs).astype(np.float32)
        self.num_boxes = self.box_anchor.size


def decode_boxes(outputs, layout):
    """All boxes ``(B, N, 4)`` normalized cx, cy, w, h and scores
    ``(B, N, C)``; N = sum over scales of ``nA * gh * gw`` (a, row, col)."""
    raw = []
    for key, m, (gh, gw) in zip(BOX_KEYS, layout.anchor_mask, layout.grids):
        x = tf.convert_to_tensor(outputs[key], tf.float32)
        x = tf.reshape(x, (-1, gh, gw, len(m), 5 + layout.num_classes))
        x = tf.transpose(x, (0, 3, 1, 2, 4))
        raw.append(tf.reshape(x, (-1, len(m) * gh * gw,
                                  5 + layout.num_classes)))
    raw = tf.concat(raw, axis=1)
    anchor_wh = layout.norm_anchors[layout.box_anchor]
    cx = (tf.sigmoid(raw[..., 0]) + layout.box_col) / layout.box_gw
    cy = (tf.sigmoid(raw[..., 1]) + layout.box_row) / layout.box_gh
    w = tf.exp(raw[..., 2]) * anchor_wh[:, 0]
    h = tf.exp(raw[..., 3]) * anchor_wh[:, 1]
    scores = tf.sigmoid(raw[..., 5:]) * tf.sigmoid(raw[..., 4:5])
    return tf.stack([cx, cy, w, h], axis=-1), scores


def select_candidates(scores, conf_thresh, nms_pre):
    """Candidates of the flattened ``(B, N*C)`` score matrix.

    Returns ``(flat_index, score, valid)``, each ``(B, nms_pre)``: the pairs
    with score > conf_thresh in ascending flat (box-major) order, or the
    ``nms_pre`` best by descending score when there are more; padded with
    ``valid = False``.
    """
    batch = tf.shape(scores)[0]
    total = scores.shape[1] * scores.shape[2]  # static even if batch is not
    flat = tf.reshape(scores, (batch, total))
    above = flat > conf_thresh
    count = tf.reduce_sum(tf.cast(above, tf.int32), axis=1)
    ranked = tf.where(above, flat, -1.0)
    if total < nms_pre:
        ranked = tf.pad(ranked, ((0, 0), (0, nms_pre - total)),
                        constant_values=-1.0)
    values, index = tf.math.top_k(ranked, k=nms_pre, sorted=True)
    valid = values >= 0.0
    # Not truncated: every candidate is in the top-k; restore flat order.
    ascending = tf.argsort(tf.where(valid, index, total + nms_pre), axis=1,
                           stable=True)
    truncated = (count > nms_pre)[:, None]
    order = tf.where(truncated, tf.range(nms_pre)[None, :], ascending)
    index = tf.gather(index, order, batch_dims=1)
    valid = tf.gather(valid, order, batch_dims=1)
    score = tf.where(valid, tf.gather(values, order, batch_dims=1), 0.0)
    return tf.where(valid, index, 0), score, valid


def order_survivors(keep, scores, nms_post):
    """Positions ``(B, nms_post)`` of the kept candidates and their validity:
    ascending candidate order, or the ``nms_post`` best by descending score
    when more than ``nms_post`` survive."""
    num = keep.shape[1]
    if num < nms_post:
        pad = ((0, 0), (0, nms_post - num))
        keep = tf.pad(keep, pad)
        scores = tf.pad(scores, pad)
        num = nms_post
    count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    positions = tf.range(num)[None, :]
    ascending = tf.argsort(tf.where(keep, positions, num + positions),
                           axis=1, stable=True)[:, :nms_post]
    _, best = tf.math.top_k(tf.where(keep, scores, -1.0), k=nms_post)
    order = tf.where((count > nms_post)[:, None], best, ascending)
    valid = tf.range(nms_post)[None, :] < tf.minimum(count, nms_post)[:, None]
    return tf.where(valid, order, 0), valid


def build_masks(orien_maps, boxes, anchor_ids, valid, layout, orien_thresh):
    """Eq. 3 masks ``(B, P, H, W)`` bool from the stride-4 orientation maps.

    ``orien_maps``: ``(B, H/4, W/4, 2 * A_total)`` with channel
    ``2 * anchor_id + j`` (j: 0 = x, 1 = y). Position of pixel (i, j) in grid
    units of the detection's scale: ``X = U_x * ga_w / 2 + j / W * gw``; the
    pixel is inside when ``|X - gw * cx| < orien_thresh * w * gw`` and
    likewise for y.
    """
    xs, ys = _pixel_positions(orien_maps, layout)          # (A, B, H, W)
    ids = tf.where(valid, anchor_ids, 0)
    grid_wh = tf.gather(tf.constant(layout.grid_wh), ids)   # (B, P, 2)
    gw, gh = grid_wh[..., 0], grid_wh[..., 1]
    cx, cy, w, h = tf.unstack(boxes, axis=-1)
    thresh = tf.constant(orien_thresh, tf.float32)
    batch_ids = tf.broadcast_to(tf.range(tf.shape(ids)[0])[:, None],
                                tf.shape(ids))
    where = tf.stack([ids, batch_ids], axis=-1)             # (B, P, 2)
    x_ok = (tf.abs(tf.gather_nd(xs, where) - (gw * cx)[..., None, None])
            < ((thresh * w) * gw)[..., None, None])
    y_ok = (tf.abs(tf.gather_nd(ys, where) - (gh * cy)[..., None, None])
            < ((thresh * h) * gh)[..., None, None])
    return x_ok & y_ok & valid[..., None, None]


def _pixel_positions(orien_maps, layout):
    """Base positions ``X, Y`` ``(A, B, H, W)`` of every pixel for every
    anchor, in grid units of the anchor's scale (official
    ``get_orien_grid``): ``X = U_x * ga_w / 2 + j / W * gw``.

    Computed anchor by anchor in a ``tf.map_fn``: the loop boundary makes
    XLA materialize the upsampled maps instead of fusing the x4
    interpolation into the per-detection mask loop, which recomputed it for
    every (detection, pixel) and was ~5x slower.
    """
    _, h, w, _ = orien_maps.shape
    per_anchor = tf.reshape(orien_maps, (-1, h, w, layout.num_anchors, 2))
    per_anchor = tf.transpose(per_anchor, (3, 4, 0, 1, 2))  # (A, 2, B, h, w)

    def positions(args):
        maps, ga, base_x, base_y = args
        up = upsample_bilinear(maps, 4, axes=(-2, -1))      # (2, B, H, W)
        return (up[0] * ga[0] / 2.0 + base_x[None, None, :],
                up[1] * ga[1] / 2.0 + base_y[None, :, None])

    return tf.map_fn(
        positions,
        (per_anchor, tf.constant(layout.grid_anchors),
         tf.constant(layout.base_x), tf.constant(layout.base_y)),
        fn_output_signature=(tf.float32, tf.float32))


def decode_orienmask(outputs, anchors, image_size, num_classes,
                     anchor_mask=ANCHOR_MASK, conf_thresh=0.005, nms="greedy",
                     nms_threshold=0.5, nms_pre=400, nms_post=100,
                     orien_thresh=0.3, return_candidates=False):
    """Decode raw OrienMask outputs into padded detections.

    Args:
        outputs: dict with ``box_s{32,16,8}`` ``(B, H/s, W/s, nA*(5+C))`` and
            ``orien_s{32,16,8}`` ``(B, H/4, W/4, 2*nA)`` (NHWC, channels as
            in ``OrienMask``).
        anchors: ``(9, 2)`` anchor [width, height] in input pixels, used as
            given (as the official code does).
        image_size: static network input ``(H, W)``.
        num_classes: C.
        anchor_mask: global anchor ids per scale, order S32, S16, S8.
        nms: ``"greedy"`` (exact official semantics) or ``"fast"``.

    Returns:
        dict of padded tensors, P = ``nms_post``:
        ``boxes`` ``(B, P, 4)`` normalized centre-size (cx, cy, w, h) of the
        network input; ``boxes_xyxy`` ``(B, P, 4)`` corners in input pixels;
        ``scores`` ``(B, P)``; ``classes`` ``(B, P)`` int32 (-1 = pad);
        ``anchor_ids`` ``(B, P)`` int32 global anchor id (-1 = pad);
        ``candidate_indices`` ``(B, P)`` int32 position among the NMS
        candidates (-1 = pad); ``masks`` ``(B, P, H, W)`` bool;
        ``num_detections`` ``(B,)`` int32. Valid detections come first.
        With ``return_candidates``, also ``candidate_boxes``,
        ``candidate_scores``, ``candidate_classes``, ``candidate_anchor_ids``,
        ``candidate_valid`` ``(B, nms_pre[, 4])`` and ``nms_keep``
        ``(B, nms_pre)`` bool.
    """
    if nms not in NMS_FUNCTIONS:
        raise ValueError(f"nms must be one of {sorted(NMS_FUNCTIONS)}, "
                         f"got {nms!r}")
    layout = _Layout(anchors, image_size, anchor_mask, num_classes)
    all_boxes, all_scores = decode_boxes(outputs, layout)

    flat, scores, valid = select_candidates(all_scores, conf_thresh, nms_pre)
    box_index = flat // layout.num_classes
    classes = flat % layout.num_classes
    boxes = tf.gather(all_boxes, box_index, batch_dims=1)
    anchor_ids = tf.gather(tf.constant(layout.box_anchor), box_index)

    offset = tf.cast(classes, tf.float32)[..., None] * CLASS_OFFSET
    shifted = tf.concat([boxes[..., :2] + offset, boxes[..., 2:]], axis=-1)
    keep = NMS_FUNCTIONS[nms](shifted, scores, valid, nms_threshold) & valid

    order, det_valid = order_survivors(keep, scores, nms_post)
    det_boxes = tf.where(det_valid[..., None],
                         tf.gather(boxes, order, batch_dims=1), 0.0)
    det_scores = tf.where(det_valid, tf.gather(scores, order, batch_dims=1),
                          0.0)
    det_classes = tf.where(det_valid, tf.gather(classes, order, batch_dims=1),
                           -1)
    det_anchor = tf.where(det_valid,
                          tf.gather(anchor_ids, order, batch_dims=1), -1)
    masks = build_masks(_orientation_by_anchor(outputs, layout), det_boxes,
                        det_anchor, det_valid, layout, orien_thresh)

    size = tf.constant([layout.width, layout.height] * 2, tf.float32)
    xyxy = cxcywh_to_xyxy(det_boxes) * size
    result = {
        "boxes": det_boxes,
        "boxes_xyxy": tf.where(det_valid[..., None], xyxy, 0.0),
        "scores": det_scores,
        "classes": det_classes,
        "anchor_ids": det_anchor,
        "candidate_indices": tf.where(det_valid, order, -1),
        "masks": masks,
        "num_detections": tf.reduce_sum(tf.cast(det_valid, tf.int32), axis=1),
    }
    if return_candidates:
        result.update(candidate_boxes=boxes, candidate_scores=scores,
                      candidate_classes=tf.where(valid, classes, -1),
                      candidate_anchor_ids=tf.where(valid, anchor_ids, -1),
                      candidate_valid=valid, nms_keep=keep)
    return result


def _orientation_by_anchor(outputs, layout):
    """Orientation maps of all scales with channel ``2 * global_id + j``."""
    channels = [None] * layout.num_anchors
    for key, m in zip(ORIEN_KEYS, layout.anchor_mask):
        x = tf.convert_to_tensor(outputs[key], tf.float32)
        for a, anchor_id in enumerate(m):
            channels[anchor_id] = x[..., 2 * a:2 * a + 2]
    return tf.concat(channels, axis=-1)


class OrienMaskDecoder:
    """Callable holding the decode settings (plain kwargs, no config import).

    Args:
        anchors, image_size, num_classes, anchor_mask, conf_thresh, nms,
        nms_threshold, nms_pre, nms_post, orien_thresh: as
        ``decode_orienmask``.
        jit_compile: None = eager call; True / False = wrap in
        ``tf.function(jit_compile=...)``.
    """

    def __init__(self, anchors, image_size, num_classes,
                 anchor_mask=ANCHOR_MASK, conf_thresh=0.005, nms="greedy",
                 nms_threshold=0.5, nms_pre=400, nms_post=100,
                 orien_thresh=0.3, jit_compile=None):
        self.kwargs = dict(
            anchors=np.asarray(anchors, np.float32), image_size=image_size,
            num_classes=num_classes, anchor_mask=anchor_mask,
            conf_thresh=conf_thresh, nms=nms, nms_threshold=nms_threshold,
            nms_pre=nms_pre, nms_post=nms_post, orien_thresh=orien_thresh)
        self.jit_compile = jit_compile

        def fn(outputs):
            return decode_orienmask(outputs, **self.kwargs)

        self._fn = (fn if jit_compile is None
                    else tf.function(fn, jit_compile=jit_compile))

    def __call__(self, outputs):
        keys = BOX_KEYS + ORIEN_KEYS
        return self._fn({k: outputs[k] for k in keys})
