"""YOLACT prediction head shared by all FPN levels (mmdet ``YOLACTHead``).

``bbox_head.head_convs.{k}.conv`` (3x3 + ReLU, ``num_head_convs`` of them),
then three 3x3 convs: ``bbox_head.conv_cls`` (``A * (C + 1)`` softmax logits,
background last), ``bbox_head.conv_reg`` (``A * 4`` DeltaXYWH deltas) and
``bbox_head.conv_coeff`` (``A * num_protos``, followed by tanh). Channels are
anchor-major (``a * C + c``). The same Keras layers are called on every
level, so the weights are shared as in PyTorch.
"""

import keras

from orienmask_tf.layers.conv_bn import torch_bias_initializer
from orienmask_tf.layers.conv_bn import torch_kernel_initializer


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
                           f"{name}.conv_cls", dtype="float32")
    conv_reg = _SharedConv(num_anchors * 4, in_channels, f"{name}.conv_reg",
                           dtype="float32")
    conv_coeff = _SharedConv(num_anchors * num_protos, in_channels,
                             f"{name}.conv_coeff", dtype="float32")
    cls_scores, bbox_preds, coeff_preds = [], [], []
    for level, x in enumerate(levels):
        for k, conv in enumerate(towers):
            x = keras.layers.ReLU(name=f"{name}.head_convs.{k}.relu_l{level}")(
                conv(x))
        cls_scores.append(conv_cls(x))
        bbox_preds.append(conv_reg(x))
        coeff_preds.append(keras.layers.Activation(
            "tanh", dtype="float32", name=f"{name}.coeff_tanh_l{level}")(
                conv_coeff(x)))
    return cls_scores, bbox_preds, coeff_preds

