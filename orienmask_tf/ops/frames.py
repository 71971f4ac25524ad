"""Network-input frame <-> original image frame.

The input pipeline describes how an original image became the network input
with ``image_info``, ``(6,)`` (or batched ``(..., 6)``) float::

    [scale_y, scale_x, pad_top, pad_left, original_h, original_w]

The input pixel of the original point ``(x, y)`` is ``(x * scale_x +
pad_left, y * scale_y + pad_top)``: the image was resized by ``(scale_y,
scale_x)`` and then shifted by ``(pad_top, pad_left)``. A horizontal flip is
a negative ``scale_x``, with ``pad_left`` then the input x of the original
``x = 0`` (e.g. ``input_w - left`` for an image placed at ``left`` and
flipped). A plain resize of the whole image to ``(H, W)`` is
``[H / h0, W / w0, 0, 0, h0, w0]`` (``resize_image_info``).

* ``boxes_to_original``: input-frame corners -> original corners (flips
  swap x1 / x2 back), clipped to ``[0, w0] x [0, h0]``.
* ``masks_to_original``: input-frame masks -> ``(..., h0, w0)`` bool, by
  nearest neighbour (the input pixel containing the centre of each
  original pixel) or, numpy only, bilinear as the official evaluator (cut
  the image region out of the input, undo the flip, resize to the original
  size, ``> 0.5``).
* ``to_original_frame``: both.

Tensors are mapped with TF ops (float32, graph-safe: the serving signature
and the decoders), numpy arrays with numpy (float64: the COCO evaluator).
TensorFlow is not imported here: numpy-only users (scoring COCO results)
stay light, and a tensor can only exist once TensorFlow is loaded.
"""

import sys

import numpy as np

INTERPOLATIONS = ("nearest", "bilinear")


def _tf():
    """The loaded ``tensorflow`` module, or None (then nothing is a tensor)."""
    return sys.modules.get("tensorflow")


def _is_tensor(*values):
    tf = _tf()
    return tf is not None and any(
        tf.is_tensor(v) or isinstance(v, tf.Variable) for v in values)


def resize_image_info(original_hw, image_size):
    """``image_info`` of the whole image resized to ``image_size = (H, W)``
    (no padding, no flip). ``original_hw``: ``(2,)`` or ``(B, 2)``."""
    height, width = (float(v) for v in image_size)
    if _is_tensor(original_hw):
        tf = _tf()
        hw = tf.cast(original_hw, tf.float32)
        h0, w0 = hw[..., 0], hw[..., 1]
        zero = tf.zeros_like(h0)
        return tf.stack([height / h0, width / w0, zero, zero, h0, w0], -1)
    hw = np.asarray(original_hw, np.float64)
    h0, w0 = hw[..., 0], hw[..., 1]
    zero = np.zeros_like(h0)
    return np.stack([height / h0, width / w0, zero, zero, h0, w0], -1)


def boxes_to_original(boxes_xyxy, image_info):
    """Input-frame corners ``(..., P, 4)`` -> original-image corners.

    ``image_info``: ``(6,)`` for all boxes or ``(..., 6)`` per leading index
    (e.g. ``(B, 6)`` with boxes ``(B, P, 4)``). Each coordinate is
    ``(v - pad) / scale``; x1 / x2 (y1 / y2) are reordered by min / max, so
    that flipped boxes stay ``x1 <= x2``; the result is clipped to
    ``[0, w0] x [0, h0]``.
    """
    if _is_tensor(boxes_xyxy, image_info):
        xp = tf = _tf()
        boxes = tf.convert_to_tensor(boxes_xyxy, tf.float32)
        info = tf.cast(image_info, tf.float32)
        stack = tf.stack
    else:
        xp = np
        boxes = np.asarray(boxes_xyxy, np.float64)
        info = np.asarray(image_info, np.float64)
        stack = np.stack
    info = info[..., None, :]                       # broadcast over P
    sy, sx, top, left, h0, w0 = (info[..., k] for k in range(6))
    x1 = (boxes[..., 0] - left) / sx
    x2 = (boxes[..., 2] - left) / sx
    y1 = (boxes[..., 1] - top) / sy
    y2 = (boxes[..., 3] - top) / sy
    out = stack([xp.minimum(x1, x2), xp.minimum(y1, y2),
                 xp.maximum(x1, x2), xp.maximum(y1, y2)], -1)
    limit = stack([w0, h0, w0, h0], -1)
    return xp.minimum(xp.maximum(out, 0.0), limit)


def _static_info(image_info):
    """``image_info`` as six Python floats (None when it is not static)."""
    value = _tf().get_static_value(image_info) if _is_tensor(image_info) \
        else np.asarray(image_info, np.float64)
    if value is None:
        return None
    return [float(v) for v in np.asarray(value, np.float64).reshape(6)]


def masks_to_original(masks, image_info, interpolation="nearest",
                      original_size=None):
    """Input-frame masks ``(..., H, W)`` -> original frame ``(..., h0,
    w0)`` bool.

    Args:
        masks: bool / integer / float masks (non-zero, resp. ``> 0``, is
            foreground); numpy or tensor.
        image_info: ``(6,)`` (one image).
        interpolation: ``"nearest"``: original pixel ``(i, j)`` takes input
            pixel ``(floor((i + 0.5) * sy + top), floor((j + 0.5) * sx +
            left))``, clamped to the input (flips included).
            ``"bilinear"`` (numpy only; the official ``COCOMetrics``): cut
            the image region ``round(top) : round(top + h0 * sy)`` (same
            for x) out of the input, undo the flip, resize it to ``(h0,
            w0)`` with OpenCV ``INTER_LINEAR`` (half-pixel centres), and
            keep ``> 0.5``.
        original_size: static ``(h0, w0)``; default from ``image_info``
            (which must then be static).
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, "
                         f"got {interpolation!r}")
    static = _static_info(image_info)
    if original_size is None:
        if static is None:
            raise ValueError("original_size is required when image_info is "
                             "not static")
        original_size = static[4:6]
    h0, w0 = (int(round(float(v))) for v in original_size)
    height, width = masks.shape[-2], masks.shape[-1]
    tensor = _is_tensor(masks, image_info)
    if interpolation == "bilinear":
        if tensor or static is None:
            raise ValueError("bilinear masks_to_original needs numpy masks "
                             "and image_info")
        return _bilinear_to_original(np.asarray(masks), static, h0, w0)
    if tensor:
        tf = _tf()
        info = tf.cast(image_info, tf.float32)
        sy, sx, top, left = info[0], info[1], info[2], info[3]
        rows = tf.floor((tf.range(h0, dtype=tf.float32) + 0.5) * sy + top)
        cols = tf.floor((tf.range(w0, dtype=tf.float32) + 0.5) * sx + left)
        rows = tf.clip_by_value(tf.cast(rows, tf.int32), 0, height - 1)
        cols = tf.clip_by_value(tf.cast(cols, tf.int32), 0, width - 1)
        masks = tf.convert_to_tensor(masks)
        out = tf.gather(tf.gather(masks, rows, axis=-2), cols, axis=-1)
        return out if out.dtype == tf.bool else tf.not_equal(out, 0)
    sy, sx, top, left = static[:4]
    rows = np.floor((np.arange(h0) + 0.5) * sy + top).astype(np.int64)
    cols = np.floor((np.arange(w0) + 0.5) * sx + left).astype(np.int64)
    rows = np.clip(rows, 0, height - 1)
    cols = np.clip(cols, 0, width - 1)
    masks = np.asarray(masks)
    return np.take(np.take(masks, rows, axis=-2), cols, axis=-1) > 0


def _bilinear_to_original(masks, info, h0, w0):
    """The official evaluator's mask recovery (numpy, OpenCV resize)."""
    import cv2  # numpy-only path; keeps ``ops`` importable without OpenCV

    sy, sx, top, left = info[:4]
    height, width = masks.shape[-2:]
    if sx < 0:  # undo the flip first: x' = W - x
        masks = masks[..., ::-1]
        sx, left = -sx, width - left
    r0 = int(np.clip(round(top), 0, height))
    r1 = int(np.clip(round(top + h0 * sy), r0 + 1, height))
    c0 = int(np.clip(round(left), 0, width))
    c1 = int(np.clip(round(left + w0 * sx), c0 + 1, width))
    lead = masks.shape[:-2]
    flat = masks.reshape((-1, height, width))
    out = np.empty((len(flat), h0, w0), bool)
    for mask, dst in zip(flat, out):
        region = np.ascontiguousarray(mask[r0:r1, c0:c1], np.float32)
        dst[...] = cv2.resize(region, (w0, h0),
                              interpolation=cv2.INTER_LINEAR) > 0.5
    return out.reshape(lead + (h0, w0))


def to_original_frame(boxes_xyxy, masks, image_info, interpolation="nearest",
                      original_size=None):
    """Input-frame detections -> original image: ``(boxes, masks)``.

    ``boxes_to_original(boxes_xyxy, image_info)`` and, unless ``masks`` is
    None, ``masks_to_original(masks, image_info, interpolation,
    original_size)`` (else None). See the module docstring for the
    ``image_info`` layout and flips.
    """
    boxes = boxes_to_original(boxes_xyxy, image_info)
    if masks is None:
        return boxes, None
    return boxes, masks_to_original(masks, image_info, interpolation,
                                    original_size)
