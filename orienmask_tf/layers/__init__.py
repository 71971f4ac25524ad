"""Torch-compatible building blocks shared by the families: the official
``ConvBNRelu`` (``conv_bn``), the BatchNorm modes with the split-invariant
cross-replica ``SplitInvariantBatchNorm`` (``batch_norm``), torch-padded
conv / BN and the exact bilinear resize (``torch_layers``), DCNv2
(``deform_conv.DeformConv2D``) and CARAFE (``carafe.CARAFE``)."""

from orienmask_tf.layers.batch_norm import SplitInvariantBatchNorm
from orienmask_tf.layers.batch_norm import batch_normalization
from orienmask_tf.layers.conv_bn import ChannelSlice
from orienmask_tf.layers.conv_bn import conv_bn_leaky
from orienmask_tf.layers.conv_bn import plain_conv
from orienmask_tf.layers.conv_bn import nearest_upsample
