"""The official ``ConvBNRelu`` block and helpers, named like PyTorch modules.

Every Keras layer is named after the PyTorch module it replaces, so that the
checkpoint converter is a lookup plus a transpose: the official
``neck32.0.conv_block.0.weight`` lives in the Keras layer ``neck32.0.conv_block.0``.
"""

import math

import keras

from orienmask_tf.layers.batch_norm import batch_normalization

# PyTorch BatchNorm2d: eps 1e-5, momentum 0.1 (running = 0.9 * running + 0.1 * batch),
# which is Keras momentum 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
LEAKY_SLOPE = 0.1


def torch_kernel_initializer():
    """PyTorch's default ``Conv2d`` init, kaiming_uniform(a=sqrt(5)): U(+-1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def torch_bias_initializer(fan_in):
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def conv_bn_leaky(x, filters, kernel_size, strides=1, name=None,
                  synchronized_bn=False):
    """Conv (no bias) -> BatchNorm -> LeakyReLU(0.1), as official ``conv_bn_leaky``.

    Args:
        x: NHWC input tensor.
        filters: output channels.
        kernel_size: 1 or 3 (3x3 convs use symmetric padding 1).
        strides: 1 or 2.
        name: PyTorch module path of the block, e.g. ``"backbone.conv2.0"``.
        synchronized_bn: ``False`` (each replica's batch statistics),
            ``True`` (cross-replica statistics under a ``tf.distribute``
            strategy, Keras ``synchronized=True``; the paper's final model
            used SyncBN) or ``"split_invariant"`` (cross-replica statistics
            that are the same however the batch is split,
            ``layers.batch_norm.SplitInvariantBatchNorm``).

    PyTorch pads a stride-2 3x3 conv by one pixel on every side; Keras
    ``padding="same"`` would pad only bottom/right on even inputs, shifting the
    whole feature map. Stride-2 convs therefore use explicit ``ZeroPadding2D``.
    """
    if strides > 1 and kernel_size > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}.pad")(x)
        padding = "valid"
    else:
        padding = "same"
    x = keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding=padding, use_bias=False,
        kernel_initializer=torch_kernel_initializer(),
        name=f"{name}.conv_block.0")(x)
    x = batch_normalization(
        f"{name}.conv_block.1", synchronized_bn, momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON)(x)
    return keras.layers.LeakyReLU(
        negative_slope=LEAKY_SLOPE, name=f"{name}.conv_block.2")(x)


def output_dtype():
    """dtype of the prediction layers: float32 (also under mixed
    precision), or float64 when the global dtype policy is float64 (the
    float64 gradient-parity tests run the whole network in float64)."""
    return ("float64" if keras.config.dtype_policy().name == "float64"
            else "float32")


def plain_conv(x, filters, name):
    """Final 1x1 prediction conv with bias (no BN, no activation), kept in
    float32 (``output_dtype``)."""
    return keras.layers.Conv2D(
        filters, 1, use_bias=True,
        kernel_initializer=torch_kernel_initializer(),
        bias_initializer=torch_bias_initializer(x.shape[-1]),
        dtype=output_dtype(), name=name)(x)


def nearest_upsample(x, factor, name):
    return keras.layers.UpSampling2D(
        factor, interpolation="nearest", name=name)(x)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class ChannelSlice(keras.layers.Layer):
    """Channels ``[start, stop)`` of an NHWC tensor (``torch.split`` on dim 1)."""

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start = start
        self.stop = stop

    def call(self, inputs):
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        config = super().get_config()
        config.update({"start": self.start, "stop": self.stop})
        return config
