"""Anchors of the YOLACT / maYOLACT detectors (Mask-aware IoU, BMVC 2021).

Two conventions live here:

* ``mmdet_anchors``: mmdetection 2.x ``AnchorGenerator`` as used by the
  maIoU configs (``configs/mayolact/*.py``): corner boxes ``x1, y1, x2, y2``
  in pixels, level P3 first, row-major within a level (row ``i`` outer,
  column ``j`` inner), base anchors innermost. With ``center_offset = 0`` the
  anchor of cell ``(i, j)`` is centred at ``(j * s, i * s)``. The float32
  arithmetic follows the official order so the boxes are bit-identical.
  Presets: ``ATSS_550`` (1 anchor per location, 6,416 at 550 px),
  ``MAYOLACT_550`` (2 scales per octave, 12,832) and ``YOLACT_MMDET_550``
  (the mmdet port of YOLACT: 3 ratios, float strides ``550 / n``).
* ``yolact_priors``: the priors of the original YOLACT code
  (dbolya/yolact ``PredictionModule.make_priors``), centre-size and
  normalised by the image size, for importing its checkpoints.

Pure numpy: anchors are static per image size.
"""

import itertools
import math

import numpy as np

from orienmask_tf.ops.box_ops import cxcywh_to_xyxy

YOLACT_STRIDES = (8, 16, 32, 64, 128)


def _conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def resnet_fpn_featmap_sizes(image_size, num_levels=5):
    """P3..P7 side lengths of ResNet + FPN (``add_extra_convs='on_input'``).

    7x7/2 p3 stem conv, 3x3/2 p1 max-pool, then 3x3/2 p1 for C3, C4, C5 and
    the two extra convs: 550 -> 69, 35, 18, 9, 5; 128 -> 16, 8, 4, 2, 1.
    """
    size = _conv_out(_conv_out(int(image_size), 7, 2, 3), 3, 2, 1)
    sizes = []
    for _ in range(num_levels):
        size = _conv_out(size, 3, 2, 1)
        sizes.append(size)
    return tuple(sizes)


def _base_anchors(base_size, scales, ratios, center):
    """mmdet ``gen_single_level_base_anchors`` (scale_major=True), float32."""
    ratios = np.asarray(ratios, np.float32)
    scales = np.asarray(scales, np.float32)
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    w = np.float32(base_size)
    ws = (w * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (w * h_ratios[:, None] * scales[None, :]).reshape(-1)
    x_c, y_c = np.float32(center[0]), np.float32(center[1])
    half = np.float32(0.5)
    return np.stack([x_c - half * ws, y_c - half * hs,
                     x_c + half * ws, y_c + half * hs], axis=-1)


def _stride_pairs(strides, num_levels):
    """``[(stride_w, stride_h)]`` per level (mmdet ``_pair``); a number
    stays the same object on both axes, so scalar strides give the same
    float32 arithmetic as before pairs were accepted."""
    given = strides
    strides = None if np.isscalar(strides) else list(strides)
    if strides is None or len(strides) < num_levels:
        raise ValueError(
            f"strides: expected one stride per level ({num_levels} levels), "
            f"each a number or a (stride_w, stride_h) pair, got {given!r}")
    pairs = []
    for stride in strides[:num_levels]:
        try:
            pair = (stride, stride) if np.isscalar(stride) else tuple(stride)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(np.isscalar(v) and v > 0
                                     for v in pair):
            raise ValueError(
                f"strides: {stride!r} is not a positive number or a "
                "(stride_w, stride_h) pair")
        pairs.append(pair)
    return pairs


def mmdet_anchors(featmap_sizes, strides=YOLACT_STRIDES, octave_base_scale=4,
                  scales_per_octave=1, ratios=(1.0,), base_sizes=None,
                  centers=None, center_offset=0.0):
    """mmdet ``AnchorGenerator.grid_anchors`` for square feature maps.

    Args:
        featmap_sizes: side length of each (square) level, or (h, w) pairs.
        strides: stride of each level: a number, or a ``(stride_w,
            stride_h)`` pair as mmdet's ``strides=[(8, 8), ...]`` (order
            w, h: ``shift_x = j * stride_w``, ``shift_y = i * stride_h``).
        octave_base_scale, scales_per_octave: scales are
            ``octave_base_scale * 2 ** (k / scales_per_octave)``.
        ratios: h / w ratios.
        base_sizes: one number per level; default the strides (a pair:
            its smaller value, as mmdet ``min(stride)``).
        centers: per-level base-anchor centre (overrides ``center_offset``).

    Returns:
        anchors (N, 4) float32 x1, y1, x2, y2 in pixels and the per-level
        anchor counts (tuple of ints).

    Raises:
        ValueError: naming ``strides`` (a stride that is neither a positive
            number nor a pair of them, or fewer strides than levels) or
            ``base_sizes`` (not one number per level).
    """
    octave = np.array([2 ** (k / scales_per_octave)
                       for k in range(scales_per_octave)])
    scales = (octave * octave_base_scale).astype(np.float32)
    pairs = _stride_pairs(strides, len(featmap_sizes))
    if base_sizes is None:
        base_sizes = [s if np.isscalar(s) else min(pair)
                      for s, pair in zip(strides, pairs)]
    if len(base_sizes) < len(featmap_sizes) or not all(
            np.isscalar(b) for b in base_sizes[:len(featmap_sizes)]):
        raise ValueError(
            f"base_sizes: expected one number per level "
            f"({len(featmap_sizes)} levels), got {list(base_sizes)!r}")
    levels, counts = [], []
    for lvl, size in enumerate(featmap_sizes):
        feat_h, feat_w = (size, size) if np.isscalar(size) else size
        if centers is not None:
            center = centers[lvl]
        else:
            center = (center_offset * base_sizes[lvl],) * 2
        base = _base_anchors(base_sizes[lvl], scales, ratios, center)
        stride_w, stride_h = pairs[lvl]
        shift_x = (np.arange(feat_w) * stride_w).astype(np.float32)
        shift_y = (np.arange(feat_h) * stride_h).astype(np.float32)
        xx = np.tile(shift_x, feat_h)
        yy = np.repeat(shift_y, feat_w)
        shifts = np.stack([xx, yy, xx, yy], axis=-1)
        grid = (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)
        levels.append(grid.astype(np.float32))
        counts.append(grid.shape[0])
    return np.concatenate(levels, axis=0), tuple(counts)


def atss_anchors(image_size=550, scales_per_octave=1):
    """Anchors of ``yolact_r50_4x8_coco_scale550_ATSSw{IoU,maIoU}.py``.

    ``scales_per_octave=2`` gives the maYOLACT anchors
    (``mayolact_r50_4x8_coco_scale550.py``). Square images only.
    """
    return mmdet_anchors(resnet_fpn_featmap_sizes(image_size),
                         strides=YOLACT_STRIDES, octave_base_scale=4,
                         scales_per_octave=scales_per_octave, ratios=(1.0,))


def yolact_mmdet_anchors(image_size=550):
    """Anchors of mmdet's ``yolact_r50_4x8_coco_scale550.py`` (the baseline).

    Base sizes 8..128 times 3, ratios 0.5, 1, 2, strides ``image_size / n``
    and centres ``image_size / (2 n)`` (n = feature-map side).
    """
    sizes = resnet_fpn_featmap_sizes(image_size)
    strides = [image_size / n for n in sizes]
    centers = [(image_size * 0.5 / n,) * 2 for n in sizes]
    return mmdet_anchors(sizes, strides=strides, octave_base_scale=3,
                         scales_per_octave=1, ratios=(0.5, 1.0, 2.0),
                         base_sizes=list(YOLACT_STRIDES), centers=centers)


def yolact_priors(image_size=550, conv_sizes=None,
                  scales=(24, 48, 96, 192, 384), aspect_ratios=(1, 0.5, 2),
                  use_square_anchors=True, preapply_sqrt=False,
                  use_pixel_scales=True):
    """Priors of the original YOLACT (``yolact_base_config``), float32.

    Order: level, then row ``j``, column ``i``, then aspect ratio; rows are
    ``[cx, cy, w, h]`` normalised by the image size. ``use_square_anchors``
    reproduces the official (documented) bug that sets ``h = w``.
    """
    if conv_sizes is None:
        conv_sizes = resnet_fpn_featmap_sizes(image_size)
    data = []
    for conv, scale in zip(conv_sizes, scales):
        for j, i in itertools.product(range(conv), range(conv)):
            x = (i + 0.5) / conv
            y = (j + 0.5) / conv
            for ar in aspect_ratios:
                if not preapply_sqrt:
                    ar = math.sqrt(ar)
                if use_pixel_scales:
                    w = scale * ar / image_size
                    h = scale / ar / image_size
                else:
                    w = scale * ar / conv
                    h = scale / ar / conv
                if use_square_anchors:
                    h = w
                data.append((x, y, w, h))
    return np.asarray(data, np.float32)


def center_size_to_corners(priors, image_size):
    """Normalised ``[cx, cy, w, h]`` -> pixel ``[x1, y1, x2, y2]``."""
    corners = cxcywh_to_xyxy(np.asarray(priors, np.float32))
    return (corners * np.float32(image_size)).astype(np.float32)
