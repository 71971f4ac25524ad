"""Mask-aware IoU (Oksuz et al., BMVC 2021) and box overlaps, corner format.

Every overlap function here has the signature
``fn(anchors, gt_boxes, gt_masks=None) -> (G, N) float32`` with anchors
``(N, 4)`` and padded ground truth ``gt_boxes (G, 4)``, ``gt_masks (G, H, W)``
(any dtype; non-zero is "on"), boxes ``x1, y1, x2, y2`` in pixels; one
image per call (a batched 3-D input is a ``ValueError`` naming the argument:
batched boxes go through ``box_ops.pairwise_iou``). The matrix
is GT-major like mmdet's ``bbox_overlaps(gt, anchors)``, so per-GT top-k and
gathers run along the last axis. Padded GT rows are computed like any other
row; the assigners mask them out.

The arithmetic follows the official ``ATSSmaIoUAssigner.maiou_calculator``
(float32, same operation order), so IoU and maIoU are bit-identical:

* ``union = max(area_gt + area_anchor - inter, 1e-6)``; ``IoU = inter / union``.
* ``MOB[g] = |M_g| / (area(gt box g) + 1e-6)`` (the annotated box, not the
  mask's tight box).
* The anchor used for pixel counting is ``round(anchor)`` (half to even),
  int32, clamped to ``>= 0`` and ``x2 <= W``, ``y2 <= H``.
* The integral image is the zero-padded ``(H+1, W+1)`` cumulative sum and
  the lookup has **no +1** (unlike the paper's Alg. 1): the count is the
  number of mask pixels with ``y1 <= row < y2`` and ``x1 <= col < x2``.
* ``maIoU = (count / MOB) / union`` where ``IoU > 0``, exactly 0 elsewhere;
  an empty mask gives MOB = 0 and NaN where ``IoU > 0`` (official behaviour).

The official code loops over GTs, builds full ``(G, H+1, W+1)`` tables with
two cumulative sums and indexes them with Python lists. Here the rounded
anchor corners do not depend on the GT, so the table is only evaluated on
the grid of distinct corner columns x rows (71 x 71 for the ATSS-550
anchors) by two exact 0/1 matmuls, and one gather per corner serves all
padded GTs at once. The full table is ``integral_images`` (reference only).
"""

import numpy as np
import tensorflow as tf

from orienmask_tf.ops.box_ops import check_boxes
from orienmask_tf.ops.box_ops import pairwise_intersection_union
from orienmask_tf.ops.box_ops import pairwise_iou
from orienmask_tf.ops.box_ops import static_shape

EPS = 1e-6


def _checked(anchors, gt_boxes, gt_masks=None):
    """float32 ``(N, 4)`` anchors and ``(G, 4)`` boxes (and ``(G, H, W)``
    masks), or ``ValueError`` naming the argument.

    The overlap functions take one image: a batched (3-D) input would
    broadcast into a wrong matrix (or fail deep inside TF), so it is refused
    here. Batched boxes: ``ops.box_ops.pairwise_iou`` (leading axes
    broadcast there).
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    check_boxes("anchors", anchors, rank=2)
    check_boxes("gt_boxes", gt_boxes, rank=2)
    if gt_masks is not None:
        gt_masks = tf.convert_to_tensor(gt_masks)
        shape = static_shape(gt_masks)
        if shape is not None and len(shape) != 3:
            raise ValueError(f"gt_masks: expected masks of shape (G, H, W), "
                             f"got shape {shape}")
    return anchors, gt_boxes, gt_masks


def _split(boxes):
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return tf.unstack(boxes, num=4, axis=-1)


def _area(x1, y1, x2, y2):
    return (x2 - x1) * (y2 - y1)


def _inter_union(anchors, gt_boxes):
    """Pairwise intersection and eps-clamped union, (G, N) each
    (``box_ops.pairwise_intersection_union``, GT-major)."""
    return pairwise_intersection_union(
        tf.convert_to_tensor(gt_boxes, tf.float32),
        tf.convert_to_tensor(anchors, tf.float32), eps=EPS)


def box_iou(anchors, gt_boxes, gt_masks=None):
    """IoU, (G, N): mmdet ``bbox_overlaps(gt_boxes, anchors, mode='iou')``
    (``box_ops.pairwise_iou(gt_boxes, anchors, eps=1e-6)`` with the overlap
    signature of this module)."""
    anchors, gt_boxes, _ = _checked(anchors, gt_boxes)
    return pairwise_iou(gt_boxes, anchors, eps=EPS)


def _enclosing(anchors, gt_boxes):
    gx1, gy1, gx2, gy2 = [c[:, None] for c in _split(gt_boxes)]
    ax1, ay1, ax2, ay2 = [c[None, :] for c in _split(anchors)]
    ew = tf.maximum(tf.maximum(gx2, ax2) - tf.minimum(gx1, ax1), 0.0)
    eh = tf.maximum(tf.maximum(gy2, ay2) - tf.minimum(gy1, ay1), 0.0)
    return ew, eh


def box_giou(anchors, gt_boxes, gt_masks=None):
    """Generalised IoU, (G, N): mmdet ``bbox_overlaps(..., mode='giou')``."""
    anchors, gt_boxes, _ = _checked(anchors, gt_boxes)
    inter, union = _inter_union(anchors, gt_boxes)
    ew, eh = _enclosing(anchors, gt_boxes)
    enclose = tf.maximum(ew * eh, EPS)
    return inter / union - (enclose - union) / enclose


def box_diou(anchors, gt_boxes, gt_masks=None):
    """Distance IoU, (G, N): ``IoU - rho^2 / c^2`` (mmdet ``diou_loss``)."""
    anchors, gt_boxes, _ = _checked(anchors, gt_boxes)
    inter, union = _inter_union(anchors, gt_boxes)
    ew, eh = _enclosing(anchors, gt_boxes)
    c2 = ew * ew + eh * eh + EPS
    gx1, gy1, gx2, gy2 = [c[:, None] for c in _split(gt_boxes)]
    ax1, ay1, ax2, ay2 = [c[None, :] for c in _split(anchors)]
    rho2 = (((ax1 + ax2) - (gx1 + gx2)) ** 2
            + ((ay1 + ay2) - (gy1 + gy2)) ** 2) / 4.0
    return inter / union - rho2 / c2


def integral_images(gt_masks):
    """Full ``(G, H+1, W+1)`` int32 tables: ``I[g, y, x]`` counts mask pixels
    with ``row < y`` and ``col < x``.

    The reference definition (zero first row and column, as the official
    ``integral_image_compute``); ``mask_aware_overlaps`` evaluates the same
    table only at the rows and columns that anchor corners use.
    """
    masks = tf.cast(tf.not_equal(gt_masks, 0), tf.int32)
    table = tf.cumsum(tf.cumsum(masks, axis=1), axis=2)
    return tf.pad(table, [[0, 0], [1, 0], [1, 0]])


def _round_clamp(boxes, height, width, xp):
    """Rounded (half to even), int32, clamped corners, as the official code.

    x1 / y1 are not clamped above in the official code (IoU > 0 implies
    x1 < W, y1 < H there); clamping them too keeps the lookups of IoU == 0
    pairs, whose values are discarded, in range.
    """
    box = xp.maximum(xp.cast(xp.round(boxes), "int32"), 0)
    x1, y1, x2, y2 = box[:, 0], box[:, 1], box[:, 2], box[:, 3]
    return (xp.minimum(x1, width), xp.minimum(y1, height),
            xp.minimum(x2, width), xp.minimum(y2, height))


class _TF:
    round, maximum, minimum = tf.round, tf.maximum, tf.minimum

    @staticmethod
    def cast(x, dtype):
        return tf.cast(x, dtype)


class _NP:
    round, maximum, minimum = np.rint, np.maximum, np.minimum

    @staticmethod
    def cast(x, dtype):
        return x.astype(dtype)


def _corner_grid(anchors, height, width):
    """Distinct corner columns ``xs``, rows ``ys`` and each corner's position.

    Returns ``xs (Kx,)``, ``ys (Ky,)`` (W and H always included, last) and
    ``(ix1, iy1, ix2, iy2)``, the positions of every anchor's rounded and
    clamped corners in ``xs`` / ``ys``. Static anchors and mask size (numpy,
    constants) are resolved with numpy at trace time; otherwise with
    ``tf.unique`` in the graph.
    """
    static = tf.get_static_value(anchors)
    if (static is not None and isinstance(height, int)
            and isinstance(width, int)):
        x1, y1, x2, y2 = _round_clamp(np.asarray(static, np.float32),
                                      height, width, _NP)
        xs, xpos = np.unique(np.concatenate([x1, x2, [width]]),
                             return_inverse=True)
        ys, ypos = np.unique(np.concatenate([y1, y2, [height]]),
                             return_inverse=True)
        n = len(x1)
        return (tf.constant(xs, tf.int32), tf.constant(ys, tf.int32),
                tuple(tf.constant(v, tf.int32) for v in
                      (xpos[:n], ypos[:n], xpos[n:2 * n], ypos[n:2 * n])),
                (tf.constant(np.searchsorted(xs, width), tf.int32),
                 tf.constant(np.searchsorted(ys, height), tf.int32)))
    x1, y1, x2, y2 = _round_clamp(anchors, height, width, _TF)
    n = tf.shape(x1)[0]
    xs, xpos = tf.unique(tf.concat([x1, x2, [width]], 0), tf.int32)
    ys, ypos = tf.unique(tf.concat([y1, y2, [height]], 0), tf.int32)
    return (xs, ys, (xpos[:n], ypos[:n], xpos[n:2 * n], ypos[n:2 * n]),
            (xpos[2 * n], ypos[2 * n]))


def sparse_integral_image(gt_masks, xs, ys):
    """``I[g, ys[a], xs[b]]`` for all ``a, b``: (G, Ky, Kx) float32, exact.

    Two matmuls with 0/1 step matrices (``c < xs[b]``, ``r < ys[a]``) instead
    of two full cumulative sums: every entry is an integer below 2**24, so
    the float32 sums are exact in any order. ``xs`` / ``ys`` need not be
    sorted.
    """
    masks = tf.cast(tf.not_equal(gt_masks, 0), tf.float32)
    shape = tf.shape(masks)
    step_x = tf.cast(tf.range(shape[2])[:, None] < xs[None, :], tf.float32)
    step_y = tf.cast(tf.range(shape[1])[None, :] < ys[:, None], tf.float32)
    num_x, num_y = tf.shape(xs)[0], tf.shape(ys)[0]
    cols = tf.reshape(tf.matmul(tf.reshape(masks, [-1, shape[2]]), step_x),
                      [shape[0], shape[1], num_x])           # (G, H, Kx)
    return tf.matmul(tf.broadcast_to(step_y[None], [shape[0], num_y, shape[1]]),
                     cols)                                   # (G, Ky, Kx)


def mask_aware_overlaps(anchors, gt_boxes, gt_masks):
    """maIoU, IoU (both (G, N)) and MOB ratio (G,), as ``maiou_calculator``."""
    if gt_masks is None:
        raise ValueError("gt_masks: the mask-aware IoU needs the (G, H, W) "
                         "instance masks")
    anchors, gt_boxes, gt_masks = _checked(anchors, gt_boxes, gt_masks)
    inter, union = _inter_union(anchors, gt_boxes)
    ious = inter / union

    height, width = gt_masks.shape[1], gt_masks.shape[2]
    if height is None or width is None:
        height, width = tf.shape(gt_masks)[1], tf.shape(gt_masks)[2]
    xs, ys, (ix1, iy1, ix2, iy2), (iw, ih) = _corner_grid(
        anchors, height, width)
    table = sparse_integral_image(gt_masks, xs, ys)          # (G, Ky, Kx)
    num_gts = tf.shape(table)[0]
    flat = tf.reshape(table, [num_gts, -1])
    row = tf.shape(xs)[0]

    def corner(iy, ix):
        return tf.gather(flat, iy * row + ix, axis=1)

    count = (corner(iy2, ix2) + corner(iy1, ix1)) - (corner(iy1, ix2)
                                                     + corner(iy2, ix1))
    mask_area = table[:, ih, iw]
    gx1, gy1, gx2, gy2 = _split(gt_boxes)
    mob = mask_area / (_area(gx1, gy1, gx2, gy2) + EPS)
    maious = (count / mob[:, None]) / union
    maious = tf.where(ious > 0.0, maious, tf.zeros_like(maious))
    return maious, ious, mob


def region_iof(anchors, region_mask):
    """Fraction of each anchor covered by a region mask: ``(N,)`` float32.

    The pixel form of mmdet's ignore test ``bbox_overlaps(anchors,
    ignore_boxes, mode='iof')`` (intersection over the anchor's area): the
    intersection is the number of ``region_mask`` pixels inside the
    anchor, counted exactly as the maIoU numerator (corners rounded half to
    even and clamped to the image, rows ``y1 <= r < y2``, columns
    ``x1 <= c < x2``, one integral-image lookup per corner), divided by
    ``max(area(anchor), 1e-6)`` of the float anchor. For a rectangular
    region with integer corners and integer anchors this equals
    ``box_ops.pairwise_iof(anchors, [region box])`` exactly.

    Args:
        anchors: ``(N, 4)`` x1, y1, x2, y2 pixels (static anchors resolve
            the corner grid with numpy at trace time: XLA safe).
        region_mask: ``(H, W)``, non-zero = inside (e.g. the pipeline's
            ``crowd_mask``).
    """
    anchors, _, _ = _checked(anchors, tf.zeros((0, 4), tf.float32))
    region = tf.convert_to_tensor(region_mask)
    shape = static_shape(region)
    if shape is not None and len(shape) != 2:
        raise ValueError(f"region_mask: expected a mask of shape (H, W), got "
                         f"shape {shape}")
    height, width = region.shape[0], region.shape[1]
    if height is None or width is None:
        height, width = tf.shape(region)[0], tf.shape(region)[1]
    xs, ys, (ix1, iy1, ix2, iy2), _ = _corner_grid(anchors, height, width)
    table = sparse_integral_image(region[None], xs, ys)[0]      # (Ky, Kx)
    flat = tf.reshape(table, [-1])
    row = tf.shape(xs)[0]

    def corner(iy, ix):
        return tf.gather(flat, iy * row + ix)

    count = (corner(iy2, ix2) + corner(iy1, ix1)) - (corner(iy1, ix2)
                                                     + corner(iy2, ix1))
    area = _area(*_split(anchors))
    return count / tf.maximum(area, EPS)


def mask_aware_iou(anchors, gt_boxes, gt_masks):
    """Mask-aware IoU (paper Eq. 5), (G, N) float32."""
    return mask_aware_overlaps(anchors, gt_boxes, gt_masks)[0]


OVERLAPS = {"iou": box_iou, "giou": box_giou, "diou": box_diou,
            "maiou": mask_aware_iou}


def get_overlap_fn(overlap):
    """Name (``iou``, ``maiou``, ``giou``, ``diou``) or callable -> callable."""
    if callable(overlap):
        return overlap
    try:
        return OVERLAPS[overlap]
    except KeyError:
        raise ValueError(f"unknown overlap {overlap!r}; expected one of "
                         f"{sorted(OVERLAPS)} or a callable") from None
