"""Torch-compatible building blocks shared by the families: the official
``ConvBNRelu`` (``conv_bn``), torch-padded conv / BN and the exact bilinear
resize (``torch_layers``), DCNv2 (``deform_conv.DeformConv2D``) and CARAFE
(``carafe.CARAFE``)."""

from orienmask_tf.layers.conv_bn import ChannelSlice
from orienmask_tf.layers.conv_bn import conv_bn_leaky
from orienmask_tf.layers.conv_bn import plain_conv
from orienmask_tf.layers.conv_bn import nearest_upsample
