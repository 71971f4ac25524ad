"""Torch-compatible building blocks of YOLACT (ResNet, FPN, heads).

* ``torch_conv``: ``nn.Conv2d(padding=k // 2)`` with symmetric padding for
  strided convs and PyTorch's default init.
* ``batch_norm``: ``nn.BatchNorm2d`` (eps 1e-5, momentum 0.1).
* ``BilinearResize``: ``F.interpolate(mode='bilinear', align_corners=False)``
  to a reference size or by an integer factor.
* ``resize_bilinear``: the same function on tensors.

``tf.image.resize(..., "bilinear")`` is correct eagerly but gives wrong
values under ``jit_compile=True`` for some size pairs on TF 2.21 CPU (34 ->
100 x 150 differs by up to 0.88), so whenever the sizes are static the resize
is written as two static gathers with precomputed half-pixel taps.
"""

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.layers.conv_bn import BN_EPSILON
from orienmask_tf.layers.conv_bn import BN_MOMENTUM
from orienmask_tf.layers.conv_bn import torch_bias_initializer
from orienmask_tf.layers.conv_bn import torch_kernel_initializer


def torch_conv(x, filters, kernel_size, strides=1, use_bias=True, name=None,
               dtype=None):
    """``nn.Conv2d(padding=kernel_size // 2)`` with torch-default init.

    Stride-1 odd kernels use ``same`` (symmetric); strided ones pad
    explicitly so the padding is symmetric as in torch.
    """
    pad = kernel_size // 2
    if strides > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}.pad")(x)
        padding = "valid"
    else:
        padding = "same"
    fan_in = x.shape[-1] * kernel_size * kernel_size
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding,
        use_bias=use_bias, kernel_initializer=torch_kernel_initializer(),
        bias_initializer=torch_bias_initializer(fan_in) if use_bias else None,
        dtype=dtype, name=name)(x)


def batch_norm(x, name, synchronized_bn=False):
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized_bn,
        name=name)(x)


def _taps(in_size, out_size):
    """torch ``upsample_bilinear2d`` (align_corners=False) source taps."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    src = np.maximum(src - np.float32(0.5), np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, np.float32(1.0) - frac, frac


def resize_bilinear(x, size):
    """``(B, h, w, C)`` -> ``(B, H, W, C)`` half-pixel bilinear, no antialias.

    Static gathers (XLA-safe) when ``h, w, H, W`` are Python ints, otherwise
    ``tf.image.resize``.
    """
    in_h, in_w = x.shape[1], x.shape[2]
    out_h, out_w = size
    if not all(isinstance(v, (int, np.integer))
               for v in (in_h, in_w, out_h, out_w)):
        out = tf.image.resize(x, tf.stack([out_h, out_w]), method="bilinear",
                              antialias=False)
        return tf.cast(out, x.dtype)
    dtype = x.dtype
    lo, hi, w0, w1 = _taps(int(in_w), int(out_w))
    x = (tf.gather(x, lo, axis=2) * tf.constant(w0[:, None], dtype)
         + tf.gather(x, hi, axis=2) * tf.constant(w1[:, None], dtype))
    lo, hi, w0, w1 = _taps(int(in_h), int(out_h))
    return (tf.gather(x, lo, axis=1) * tf.constant(w0[:, None, None], dtype)
            + tf.gather(x, hi, axis=1) * tf.constant(w1[:, None, None], dtype))


@keras.saving.register_keras_serializable(package="orienmask_tf")
class BilinearResize(keras.layers.Layer):
    """Half-pixel bilinear resize without antialiasing (torch ``interpolate``).

    Called on ``[x, reference]`` it resizes ``x`` to the spatial size of
    ``reference``; called on ``x`` with ``factor`` it scales by ``factor``.
    """

    def __init__(self, factor=None, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, inputs):
        if self.factor is None:
            x, reference = inputs
            size = _size(reference)
        else:
            x = inputs
            factor = int(self.factor)
            size = [v * factor for v in _size(x)]
        return resize_bilinear(x, size)

    def compute_output_shape(self, input_shape):
        if self.factor is None:
            shape, reference = input_shape
            return (shape[0], reference[1], reference[2], shape[3])
        scale = int(self.factor)
        return (input_shape[0],
                None if input_shape[1] is None else input_shape[1] * scale,
                None if input_shape[2] is None else input_shape[2] * scale,
                input_shape[3])

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config


def _size(x):
    """Spatial size of an NHWC tensor: Python ints where static."""
    dynamic = tf.shape(x)
    return [x.shape[i] if x.shape[i] is not None else dynamic[i]
            for i in (1, 2)]
