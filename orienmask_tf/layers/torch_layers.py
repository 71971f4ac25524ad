"""Torch-compatible building blocks of YOLACT (ResNet, FPN, heads).

* ``torch_conv``: ``nn.Conv2d(padding=k // 2)`` with symmetric padding for
  strided convs and PyTorch's default init.
* ``batch_norm``: ``nn.BatchNorm2d`` (eps 1e-5, momentum 0.1).
* ``BilinearResize``: ``F.interpolate(mode='bilinear', align_corners=False)``
  to a reference size or by an integer factor, as a Keras layer around
  ``orienmask_tf.ops.resize`` (the one torch-exact bilinear resize; see
  there why it is not ``tf.image.resize``).
"""

import keras
import tensorflow as tf

from orienmask_tf.layers.batch_norm import batch_normalization
from orienmask_tf.layers.conv_bn import BN_EPSILON
from orienmask_tf.layers.conv_bn import BN_MOMENTUM
from orienmask_tf.layers.conv_bn import torch_bias_initializer
from orienmask_tf.layers.conv_bn import torch_kernel_initializer
from orienmask_tf.ops.resize import resize_bilinear


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
    """``nn.BatchNorm2d`` of a ``synchronized_bn`` mode (``False``, ``True``
    or ``"split_invariant"``, see ``layers.batch_norm``)."""
    return batch_normalization(name, synchronized_bn, momentum=BN_MOMENTUM,
                               epsilon=BN_EPSILON)(x)


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
