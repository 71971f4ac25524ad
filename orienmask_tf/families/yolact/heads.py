"""YOLACT heads (mmdet ``YOLACTHead``, ``YOLACTProtonet``, ``YOLACTSegmHead``).

* ``yolact_head``: the prediction head shared by all FPN levels.
  ``bbox_head.head_convs.{k}.conv`` (3x3 + ReLU, ``num_head_convs`` of them),
  then three 3x3 convs: ``bbox_head.conv_cls`` (``A * (C + 1)`` softmax
  logits, background last), ``bbox_head.conv_reg`` (``A * 4`` DeltaXYWH
  deltas) and ``bbox_head.conv_coeff`` (``A * num_protos``, followed by tanh).
  Channels are anchor-major (``a * C + c``). The same Keras layers are called
  on every level, so the weights are shared as in PyTorch.
* ``protonet``: ``mask_head.protonet`` on P3: three 3x3 convs + ReLU (indices
  0, 2, 4), bilinear x2 upsampling + ReLU (6, 7), a 3x3 conv + ReLU (8) and a
  1x1 conv to ``num_protos`` + ReLU (10, 11). Output: prototypes NHWC at
  stride 4 (138 x 138 for a 550 input), after the final ReLU.
* ``segm_head``: the semantic-segmentation auxiliary head (training only).
"""

import keras

from orienmask_tf.layers.conv_bn import output_dtype
from orienmask_tf.layers.conv_bn import torch_bias_initializer
from orienmask_tf.layers.conv_bn import torch_kernel_initializer
from orienmask_tf.layers.torch_layers import BilinearResize
from orienmask_tf.layers.torch_layers import torch_conv


class _SharedConv:
    """One Conv2D (with the torch padding and init) reused across levels."""

    def __init__(self, filters, in_channels, name, dtype=None):
        self.layer = keras.layers.Conv2D(
            filters, 3, padding="same",
            kernel_initializer=torch_kernel_initializer(),
            bias_initializer=torch_bias_initializer(in_channels * 9),
            dtype=dtype, name=name)

    def __call__(self, x):
        return self.layer(x)


def yolact_head(levels, num_classes=80, num_anchors=1, num_protos=32,
                feat_channels=256, num_head_convs=1, name="bbox_head"):
    """``[P3..P7]`` -> lists (per level) of cls, reg and coeff maps (NHWC)."""
    in_channels = levels[0].shape[-1]
    towers = []
    for k in range(num_head_convs):
        towers.append(_SharedConv(feat_channels, in_channels,
                                  f"{name}.head_convs.{k}.conv"))
        in_channels = feat_channels
    conv_cls = _SharedConv(num_anchors * (num_classes + 1), in_channels,
                           f"{name}.conv_cls", dtype=output_dtype())
    conv_reg = _SharedConv(num_anchors * 4, in_channels, f"{name}.conv_reg",
                           dtype=output_dtype())
    conv_coeff = _SharedConv(num_anchors * num_protos, in_channels,
                             f"{name}.conv_coeff", dtype=output_dtype())
    cls_scores, bbox_preds, coeff_preds = [], [], []
    for level, x in enumerate(levels):
        for k, conv in enumerate(towers):
            x = keras.layers.ReLU(name=f"{name}.head_convs.{k}.relu_l{level}")(
                conv(x))
        cls_scores.append(conv_cls(x))
        bbox_preds.append(conv_reg(x))
        coeff_preds.append(keras.layers.Activation(
            "tanh", dtype=output_dtype(), name=f"{name}.coeff_tanh_l{level}")(
                conv_coeff(x)))
    return cls_scores, bbox_preds, coeff_preds


def protonet(p3, channels=256, num_protos=32, name="mask_head.protonet"):
    x = p3
    for index in (0, 2, 4):
        x = torch_conv(x, channels, 3, name=f"{name}.{index}")
        x = keras.layers.ReLU(name=f"{name}.{index + 1}")(x)
    x = BilinearResize(factor=2, name=f"{name}.6")(x)
    x = keras.layers.ReLU(name=f"{name}.7")(x)
    x = torch_conv(x, channels, 3, name=f"{name}.8")
    x = keras.layers.ReLU(name=f"{name}.9")(x)
    x = torch_conv(x, num_protos, 1, name=f"{name}.10", dtype=output_dtype())
    return keras.layers.ReLU(name=f"{name}.11", dtype=output_dtype())(x)


def segm_head(p3, num_classes=80, name="segm_head.segm_conv"):
    """1x1 conv on P3 -> per-class logits (training-only auxiliary loss)."""
    return torch_conv(p3, num_classes, 1, name=name, dtype=output_dtype())
