"""PyTorch ``F.interpolate(mode='bilinear', align_corners=False)``, exact.

One implementation for every bilinear resize of the project (OrienMask
orientation maps in the decoder and the loss, YOLACT FPN / protonet
upsampling, mask targets and pasted masks):

* ``bilinear_taps``: the source indices and weights of torch's
  ``upsample_bilinear2d`` along one axis (half-pixel centres, no
  antialiasing, float32 as torch computes them).
* ``resize_bilinear(x, size, axes)``: resize two axes to ``size``;
  ``upsample_bilinear(x, factor, axes)``: the same by an integer factor
  (``scale_factor=f`` and ``size=f * n`` give the same taps).

The resize is two static gathers, first along the width axis
(``x[lo] * w0 + x[hi] * w1``), then along the height axis, so the float32
operation order is fixed and identical eagerly, in ``tf.function`` and
under XLA. ``tf.image.resize(..., "bilinear")`` is the same function
eagerly but gives wrong values under ``jit_compile=True`` for some size
pairs on TF 2.21 CPU (34 -> 100 x 150 differs by up to 0.88); it is only
used as the fallback when a size is not static. Numpy arrays are resized
with numpy (same taps and order), tensors with TF ops.
"""

import numpy as np
import tensorflow as tf


def bilinear_taps(in_size, out_size):
    """torch ``upsample_bilinear2d`` (align_corners=False) taps of one axis.

    Returns ``(lo, hi, w0, w1)``, each ``(out_size,)``: output ``i`` is
    ``x[lo[i]] * w0[i] + x[hi[i]] * w1[i]`` with the source coordinate
    ``max((i + 0.5) * in / out - 0.5, 0)`` (float32).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    src = np.maximum(src - np.float32(0.5), np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, np.float32(1.0) - frac, frac


def _is_static(*values):
    return all(isinstance(v, (int, np.integer)) for v in values)


def _resize_axis(x, axis, out_size, numpy):
    """Bilinear resize of one (static) axis of ``x``."""
    lo, hi, w0, w1 = bilinear_taps(int(x.shape[axis]), int(out_size))
    shape = [-1] + [1] * (len(x.shape) - 1 - axis)   # broadcast along axis
    if numpy:
        w0 = w0.reshape(shape).astype(x.dtype, copy=False)
        w1 = w1.reshape(shape).astype(x.dtype, copy=False)
        return np.take(x, lo, axis=axis) * w0 + np.take(x, hi, axis=axis) * w1
    w0 = tf.constant(w0.reshape(shape), x.dtype)
    w1 = tf.constant(w1.reshape(shape), x.dtype)
    return tf.gather(x, lo, axis=axis) * w0 + tf.gather(x, hi, axis=axis) * w1


def resize_bilinear(x, size, axes=(1, 2)):
    """Resize axes ``axes = (height_axis, width_axis)`` of ``x`` to ``size =
    (H, W)``: torch ``F.interpolate(size=..., mode='bilinear',
    align_corners=False)``.

    Default axes: NHWC ``(B, h, w, C) -> (B, H, W, C)``; ``axes=(-2, -1)``
    resizes planar ``(..., h, w)`` maps. Static gathers (XLA-safe, fixed
    float32 order: width first, then height) when the input and output
    sizes are Python ints; otherwise (NHWC only) ``tf.image.resize``.
    Numpy in, numpy out (same arithmetic); floating dtypes are kept.
    """
    numpy = isinstance(x, np.ndarray)
    if not numpy:
        x = tf.convert_to_tensor(x)
    rank = len(x.shape)
    axis_h, axis_w = (int(a) % rank for a in axes)
    out_h, out_w = size
    if not _is_static(x.shape[axis_h], x.shape[axis_w], out_h, out_w):
        if numpy or (axis_h, axis_w) != (1, 2) or rank != 4:
            raise ValueError("dynamic sizes are only supported for NHWC "
                             f"tensors, got axes {axes} of shape {x.shape}")
        out = tf.image.resize(x, tf.stack([out_h, out_w]), method="bilinear",
                              antialias=False)
        return tf.cast(out, x.dtype)
    x = _resize_axis(x, axis_w, out_w, numpy)
    return _resize_axis(x, axis_h, out_h, numpy)


def upsample_bilinear(x, factor, axes=(1, 2)):
    """Scale axes ``axes`` of ``x`` by the integer ``factor``: torch
    ``F.interpolate(scale_factor=factor, mode='bilinear',
    align_corners=False)`` (for an integer factor torch's ``1 / factor`` and
    ``in / (factor * in)`` are the same float32 scale, so this is
    ``resize_bilinear`` to ``factor`` times the size)."""
    numpy = isinstance(x, np.ndarray)
    if not numpy:
        x = tf.convert_to_tensor(x)
    factor = int(factor)
    rank = len(x.shape)
    size = []
    for axis in axes:
        n = x.shape[int(axis) % rank]
        size.append(n * factor if n is not None
                    else tf.shape(x)[int(axis) % rank] * factor)
    return resize_bilinear(x, size, axes)
