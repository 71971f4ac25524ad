from orienmask_tf.layers.conv_bn import ChannelSlice
from orienmask_tf.layers.conv_bn import conv_bn_leaky
from orienmask_tf.layers.conv_bn import plain_conv
from orienmask_tf.layers.conv_bn import nearest_upsample
