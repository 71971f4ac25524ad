"""Darknet-53, the backbone of YOLOv3 and OrienMask (paper Sec. 3.1)."""

import keras

from orienmask_tf.layers import conv_bn_leaky

DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class Darknet53Backbone(keras.Model):
    """Darknet-53 as a functional model with a pyramid of outputs.

    Layout and layer names follow the official ``model/backbone/darknet.py``:
    ``conv1`` (3x3, ``width`` channels), then stages ``conv2`` .. ``conv6``,
    each a stride-2 3x3 conv doubling the channels followed by residual blocks
    ``conv{i}.{j}.conv.{0,1}`` (1x1 halving, 3x3 restoring).

    Args:
        width: channels of ``conv1``; stage ``i`` ends with ``width * 2**(i-1)``
            channels (32 -> 64, 128, 256, 512, 1024 as in Darknet-53).
        stackwise_num_blocks: residual blocks per stage ``conv2`` .. ``conv6``.
        image_shape: ``(height, width, 3)``; ``None`` dims accept any size
            divisible by 32.
        synchronized_bn: ``False``, ``True`` (cross-replica BatchNorm
            statistics) or ``"split_invariant"`` (``layers.batch_norm``).

    Outputs a dict ``{"P2": stride 4, "P3": stride 8, "P4": stride 16,
    "P5": stride 32}`` (official ``x4, x8, x16, x32``).
    """

    def __init__(self, width=32, stackwise_num_blocks=DARKNET53_BLOCKS,
                 image_shape=(None, None, 3), synchronized_bn=False, **kwargs):
        if len(stackwise_num_blocks) != 5:
            raise ValueError(
                "stackwise_num_blocks needs one count per stage conv2..conv6, "
                f"got {stackwise_num_blocks!r}")
        images = keras.Input(shape=image_shape, name="images")
        x = conv_bn_leaky(images, width, 3, name="conv1",
                          synchronized_bn=synchronized_bn)
        features = []
        for stage, num_blocks in enumerate(stackwise_num_blocks, start=2):
            channels = width * 2 ** (stage - 2)
            x = conv_bn_leaky(x, channels * 2, 3, strides=2,
                              name=f"conv{stage}.0",
                              synchronized_bn=synchronized_bn)
            for block in range(1, num_blocks + 1):
                prefix = f"conv{stage}.{block}.conv"
                y = conv_bn_leaky(x, channels, 1, name=f"{prefix}.0",
                                  synchronized_bn=synchronized_bn)
                y = conv_bn_leaky(y, channels * 2, 3, name=f"{prefix}.1",
                                  synchronized_bn=synchronized_bn)
                x = keras.layers.Add(name=f"conv{stage}.{block}.add")([x, y])
            features.append(x)
        pyramid = {"P2": features[1], "P3": features[2], "P4": features[3],
                   "P5": features[4]}
        super().__init__(inputs=images, outputs=pyramid, **kwargs)
        self.width = width
        self.stackwise_num_blocks = tuple(stackwise_num_blocks)
        self.image_shape = tuple(image_shape)
        self.synchronized_bn = synchronized_bn

    def get_config(self):
        # Not chained to super(): a functional config would rebuild a plain
        # Functional model instead of this class (keras-hub does the same).
        return {
            "name": self.name,
            "trainable": self.trainable,
            "width": self.width,
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "image_shape": list(self.image_shape),
            "synchronized_bn": self.synchronized_bn,
        }
