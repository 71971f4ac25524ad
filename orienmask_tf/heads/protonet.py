"""YOLACT prototype network (mmdet ``YOLACTProtonet.protonet``) and the
semantic-segmentation auxiliary head (``YOLACTSegmHead``).

``mask_head.protonet``: on P3, three 3x3 convs + ReLU (indices 0, 2, 4),
bilinear x2 upsampling + ReLU (6, 7), a 3x3 conv + ReLU (8) and a 1x1 conv to
``num_protos`` + ReLU (10, 11). Output: prototypes NHWC at stride 4
(138 x 138 for a 550 input), after the final ReLU.
"""

import keras

from orienmask_tf.layers.torch_layers import BilinearResize
from orienmask_tf.layers.torch_layers import torch_conv


def protonet(p3, channels=256, num_protos=32, name="mask_head.protonet"):
    x = p3
    for index in (0, 2, 4):
        x = torch_conv(x, channels, 3, name=f"{name}.{index}")
        x = keras.layers.ReLU(name=f"{name}.{index + 1}")(x)
    x = BilinearResize(factor=2, name=f"{name}.6")(x)
    x = keras.layers.ReLU(name=f"{name}.7")(x)
    x = torch_conv(x, channels, 3, name=f"{name}.8")
    x = keras.layers.ReLU(name=f"{name}.9")(x)
    x = torch_conv(x, num_protos, 1, name=f"{name}.10", dtype="float32")
    return keras.layers.ReLU(name=f"{name}.11", dtype="float32")(x)


def segm_head(p3, num_classes=80, name="segm_head.segm_conv"):
    """1x1 conv on P3 -> per-class logits (training-only auxiliary loss)."""
    return torch_conv(p3, num_classes, 1, name=name, dtype="float32")
