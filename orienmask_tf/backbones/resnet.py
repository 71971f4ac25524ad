"""ResNet-50 in the torchvision / mmdet ``style='pytorch'`` layout (YOLACT).

Layer names are the PyTorch module paths of mmdet's ``ResNet`` (and of
torchvision's ``resnet50`` without ``fc``): ``conv1``, ``bn1``,
``layer{1..4}.{b}.conv{1,2,3}``, ``layer{1..4}.{b}.bn{1,2,3}``,
``layer{1..4}.0.downsample.{0,1}``. The stride of a stage sits on the 3x3
conv (``pytorch`` style, ResNet v1.5) and every padding is symmetric like
torch's (explicit ``ZeroPadding2D`` before ``valid`` strided convs).
"""

import keras

from orienmask_tf.layers.conv_bn import torch_kernel_initializer
from orienmask_tf.layers.torch_layers import batch_norm
from orienmask_tf.layers.torch_layers import torch_conv

RESNET50_BLOCKS = (3, 4, 6, 3)
EXPANSION = 4


def bottleneck(x, planes, strides, name, synchronized_bn=False):
    """torchvision ``Bottleneck`` (stride on ``conv2``), ``relu(f(x) + id)``."""
    out_channels = planes * EXPANSION
    y = torch_conv(x, planes, 1, use_bias=False, name=f"{name}.conv1")
    y = batch_norm(y, f"{name}.bn1", synchronized_bn)
    y = keras.layers.ReLU(name=f"{name}.relu1")(y)
    y = torch_conv(y, planes, 3, strides=strides, use_bias=False,
                   name=f"{name}.conv2")
    y = batch_norm(y, f"{name}.bn2", synchronized_bn)
    y = keras.layers.ReLU(name=f"{name}.relu2")(y)
    y = torch_conv(y, out_channels, 1, use_bias=False, name=f"{name}.conv3")
    y = batch_norm(y, f"{name}.bn3", synchronized_bn)
    if strides != 1 or x.shape[-1] != out_channels:
        x = keras.layers.Conv2D(
            out_channels, 1, strides=strides, use_bias=False,
            kernel_initializer=torch_kernel_initializer(),
            name=f"{name}.downsample.0")(x)
        x = batch_norm(x, f"{name}.downsample.1", synchronized_bn)
    y = keras.layers.Add(name=f"{name}.add")([y, x])
    return keras.layers.ReLU(name=f"{name}.relu3")(y)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class ResNetBackbone(keras.Model):
    """ResNet (bottleneck) backbone with outputs ``{"C2", "C3", "C4", "C5"}``.

    Args:
        stem_channels: channels of ``conv1`` (64 in ResNet-50).
        base_channels: planes of ``layer1`` (64); stage ``i`` has
            ``base_channels * 2**i`` planes and ``4x`` that many outputs.
        stackwise_num_blocks: bottlenecks per stage (3, 4, 6, 3 = ResNet-50).
        image_shape: ``(height, width, 3)``, any size.
        synchronized_bn: cross-replica BatchNorm statistics.

    Input is the normalised RGB image (``(x - mean) / std``), NHWC. ``C2`` is
    stride 4 (after the max-pool and ``layer1``), ``C5`` stride 32; sizes
    follow ``floor((n + 2p - k) / s) + 1`` (550 -> 138, 69, 35, 18).
    With the defaults there are 23,508,032 trainable parameters.
    """

    def __init__(self, stem_channels=64, base_channels=64,
                 stackwise_num_blocks=RESNET50_BLOCKS,
                 image_shape=(None, None, 3), synchronized_bn=False, **kwargs):
        images = keras.Input(shape=image_shape, name="images")
        x = torch_conv(images, stem_channels, 7, strides=2, use_bias=False,
                       name="conv1")
        x = batch_norm(x, "bn1", synchronized_bn)
        x = keras.layers.ReLU(name="relu")(x)
        # Zero padding equals torch's -inf padding on post-ReLU input.
        x = keras.layers.ZeroPadding2D(1, name="maxpool.pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
        features = {}
        for stage, num_blocks in enumerate(stackwise_num_blocks):
            planes = base_channels * 2 ** stage
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = bottleneck(x, planes, strides,
                               name=f"layer{stage + 1}.{block}",
                               synchronized_bn=synchronized_bn)
            features[f"C{stage + 2}"] = x
        super().__init__(inputs=images, outputs=features, **kwargs)
        self.stem_channels = int(stem_channels)
        self.base_channels = int(base_channels)
        self.stackwise_num_blocks = tuple(stackwise_num_blocks)
        self.image_shape = tuple(image_shape)
        self.synchronized_bn = synchronized_bn

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "stem_channels": self.stem_channels,
            "base_channels": self.base_channels,
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "image_shape": list(self.image_shape),
            "synchronized_bn": self.synchronized_bn,
        }
