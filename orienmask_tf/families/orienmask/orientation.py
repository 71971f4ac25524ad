"""Orientation targets of OrienMask (paper Sec. 3.2, Eq. 1-2, Fig. 3).

Vectorised form of the official sequential rule. On each anchor map the
official code visits the instances assigned to it in order; inside an
instance's ROI (box * valid_region + half a stride, rounded half-to-even):

* foreground (ROI and mask): count M = -1, vector T = pixel - base
  (overwrites everything before, background sums included);
* background (ROI, not mask, M >= 0): M += 1, T += vector from the pixel to
  where the ray base -> pixel leaves the centre box (0 outside that box).

Because a foreground overwrites everything and then blocks every later
background, the final state of a pixel is: the foreground of the LAST
instance covering it with ROI and mask if there is one, otherwise the sum and
count of all backgrounds. Here: an instance "owns" a foreground pixel when
no later instance of its map has foreground there (a strictly-upper-triangular
same-map matmul), and owners, border vectors and counts are summed per map
with a one-hot matmul, for all instances at once.
Targets: foreground ``(base - p) / (anchor / 2)``, background the mean of the
border vectors ``/ (anchor / 2)``.
"""

import numpy as np
import tensorflow as tf

ORIEN_POSITIVE = 1
ORIEN_NEGATIVE = -1
ORIEN_IGNORE = 0
BASE_POSITIONS = ("box_center", "grid_center")


def exact_div(x, y):
    """IEEE ``x / y`` for ``y != 0`` in eager and graph mode alike.

    Grappler rewrites ``x / constant`` into ``x * (1 / constant)`` inside
    ``tf.function`` (1 ulp off eager and the official code); ``DivNoNan``
    is left alone.
    """
    return tf.math.divide_no_nan(x, y)


def _axis_terms(coords, centre, base, half_valid, half_centre, size):
    """Separable per-axis pieces, ``(n, size)`` each: ROI membership,
    ``sign(d) * max(|d|, 1e-8)`` and
    ``max(half_centre / max(|d|, 1e-8), 1)``."""
    lo = tf.round(tf.clip_by_value(centre - half_valid, 0.0, size - 1.0))
    hi = tf.round(tf.clip_by_value(centre + half_valid, 0.0, size - 1.0)) + 1
    roi = (coords >= lo[:, None]) & (coords < hi[:, None])
    offset = coords[None, :] - base[:, None]
    length = tf.maximum(tf.abs(offset), 1e-8)
    signed = tf.sign(offset) * length
    ratio = tf.maximum(exact_div(half_centre[:, None], length), 1.0)
    return roi, signed, ratio


def orientation_targets(grid_boxes, scale_wh, cell, masks, map_id, num_maps,
                        half_anchor, image_size, center_region, valid_region,
                        base_position="box_center", maps_per_group=None):
    """Orientation labels and targets of all anchor maps of one example.

    Args:
        grid_boxes: ``(n, 4)`` cx, cy, w, h in grid units of each instance's
            assigned scale.
        scale_wh: ``(n, 2)`` pixels per cell of that scale.
        cell: ``(n, 2)`` int (col, row) of the assigned cell.
        masks: ``(n, H, W)`` bool instance masks.
        map_id: ``(n,)`` int32 anchor map of each instance; the value
            ``num_maps`` drops the instance.
        half_anchor: ``(num_maps, 2)`` half anchor size in pixels per map.

        maps_per_group: split the outputs in groups of this many maps (one
            group per scale saves slicing copies); default all in one.

    Returns:
        lists (one entry per group) of labels ``(maps, H, W)`` int8
        (``ORIEN_*``) and targets ``(maps, 2, H, W)`` float32
        (channel-first: (x, y) planes).
    """
    height, width = image_size
    maps_per_group = maps_per_group or num_maps
    n = tf.shape(grid_boxes)[0]
    sw, sh = scale_wh[:, 0], scale_wh[:, 1]
    cx = grid_boxes[:, 0] * sw
    cy = grid_boxes[:, 1] * sh
    vw = (grid_boxes[:, 2] * valid_region + 0.5) * sw
    vh = (grid_boxes[:, 3] * valid_region + 0.5) * sh
    cw = exact_div(vw, valid_region) * center_region
    ch = exact_div(vh, valid_region) * center_region
    if base_position == "grid_center":
        cell = tf.cast(cell, tf.float32)
        bx, by = (cell[:, 0] + 0.5) * sw, (cell[:, 1] + 0.5) * sh
    else:
        bx, by = cx, cy
    cols = tf.range(width, dtype=tf.float32)
    rows = tf.range(height, dtype=tf.float32)
    roi_x, ex, kx = _axis_terms(cols, cx, bx, vw, cw, float(width))
    roi_y, ey, ky = _axis_terms(rows, cy, by, vh, ch, float(height))

    # Dense per-instance maps as float 0/1 (n, H*W); aggregation over the
    # anchor maps is a one-hot matmul (much faster than unsorted_segment_*
    # on CPU). A foreground pixel of instance i counts only if no LATER
    # instance of its map has foreground there ("owner"); a background pixel
    # only if NO instance of its map has foreground there. Then each pixel of
    # a map has either one owner (sum exact) or only backgrounds.
    f32 = tf.float32
    hw = height * width
    roi = tf.cast(roi_y, f32)[:, :, None] * tf.cast(roi_x, f32)[:, None, :]
    fg = tf.reshape(roi * tf.cast(masks, f32), [n, hw])
    bg = tf.reshape(roi, [n, hw]) - fg
    same_map = tf.cast(tf.equal(map_id[:, None], map_id[None, :]), f32)
    upper = tf.linalg.band_part(tf.ones([n, n], f32), 0, -1)
    later = same_map * (upper - tf.linalg.band_part(upper, 0, 0))  # j > i
    cover = tf.matmul(tf.concat([later, same_map], 0), fg)  # (2n, hw)
    owner = fg * tf.cast(tf.equal(cover[:n], 0.0), f32)
    bg = bg * tf.cast(tf.equal(cover[n:], 0.0), f32)
    owner3 = tf.reshape(owner, [n, height, width])
    bg3 = tf.reshape(bg, [n, height, width])
    half = np.asarray(half_anchor, np.float32)  # (maps, 2)
    half_i = tf.gather(np.concatenate([half, np.ones([1, 2], np.float32)]),
                       map_id)
    # Foreground: (p - base) / (anchor / 2) / M with M = -1 (Eq. 1).
    fx = -exact_div(cols[None, :] - bx[:, None], half_i[:, 0:1])
    fy = -exact_div(rows[None, :] - by[:, None], half_i[:, 1:2])
    # Background: border vectors / (anchor / 2), averaged below (Eq. 2).
    # Dividing each vector (not the sum) by the anchor changes the official
    # result by float rounding only (~1 ulp).
    gx = exact_div(ex, half_i[:, 0:1])
    gy = exact_div(ey, half_i[:, 1:2])
    bgk = bg3 * (tf.minimum(kx[:, None, :], ky[:, :, None]) - 1.0)
    vx = tf.reshape(owner3 * fx[:, None, :] + bgk * gx[:, None, :], [n, hw])
    vy = tf.reshape(owner3 * fy[:, :, None] + bgk * gy[:, :, None], [n, hw])
    onehot = tf.one_hot(map_id, num_maps, axis=0, dtype=f32)  # (maps, n)
    labels, targets = [], []
    for start in range(0, num_maps, maps_per_group):
        rows_oh = onehot[start:start + maps_per_group]
        shape = [-1, height, width]
        count = tf.reshape(tf.matmul(rows_oh, bg), shape)
        has_fg = tf.reshape(tf.matmul(rows_oh, owner), shape) > 0
        denom = tf.maximum(count, 1.0)[:, None]
        targets.append(exact_div(tf.stack([
            tf.reshape(tf.matmul(rows_oh, vx), shape),
            tf.reshape(tf.matmul(rows_oh, vy), shape)], 1), denom))
        labels.append(tf.cast(has_fg, tf.int8) * ORIEN_POSITIVE
                      + tf.cast(count > 0, tf.int8) * ORIEN_NEGATIVE)
    return labels, targets


def render_orientation_targets(image, masks, targets, path=None,
                               scale_names=("s32", "s16", "s8")):
    """Render an example and its orientation targets (paper Fig. 3) to RGB.

    Row 0: the image with each instance mask tinted; rows 1..S: one panel per
    anchor map of each scale. Orientation vectors are coloured by direction
    (hue) and length (value, saturating at 2 half-anchors); foreground
    pixels at full saturation, background pixels at half saturation with a
    darker value, ignored pixels black.

    Args:
        image: ``(H, W, 3)`` uint8 or float in [0, 1].
        masks: ``(N, H, W)`` instance masks (padding rows all zero).
        targets: encoder output of this example (``orien_labels_k``,
            ``orien_targets_k`` for every ``k`` in ``scale_names``).
        path: optional PNG path to write.

    Returns:
        ``(rows * (H + 2), cols * (W + 2), 3)`` uint8 mosaic.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    height, width = image.shape[:2]
    rng = np.random.RandomState(1)
    overlay = image.astype(np.float32)
    for mask in np.asarray(masks):
        if mask.any():
            colour = rng.uniform(64, 255, 3)
            overlay[mask > 0] = 0.5 * overlay[mask > 0] + 0.5 * colour
    panels = [[overlay.astype(np.uint8)]]
    for name in scale_names:
        labels = np.asarray(targets[f"orien_labels_{name}"])
        vectors = np.asarray(targets[f"orien_targets_{name}"], np.float32)
        row = []
        for a in range(labels.shape[0]):
            vx, vy = vectors[a, 0], vectors[a, 1]
            hue = (np.arctan2(vy, vx) / (2 * np.pi)) % 1.0
            value = np.clip(np.hypot(vx, vy) / 2.0, 0.0, 1.0) * 0.8 + 0.2
            pos = labels[a] == ORIEN_POSITIVE
            neg = labels[a] == ORIEN_NEGATIVE
            sat = np.where(pos, 1.0, 0.5)
            value = np.where(pos, value, 0.6 * value) * (pos | neg)
            hsv = np.stack([hue, sat, value], -1).astype(np.float32)
            row.append((tf.image.hsv_to_rgb(hsv).numpy() * 255).astype(
                np.uint8))
        panels.append(row)
    cols = max(len(r) for r in panels)
    canvas = np.full((len(panels) * (height + 2), cols * (width + 2), 3),
                     255, np.uint8)
    for i, row in enumerate(panels):
        for j, panel in enumerate(row):
            y, x = i * (height + 2), j * (width + 2)
            canvas[y:y + height, x:x + width] = panel
    if path is not None:
        tf.io.write_file(str(path), tf.io.encode_png(canvas))
    return canvas
