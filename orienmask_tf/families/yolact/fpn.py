"""FPN P3..P7 of YOLACT (mmdet ``FPN`` as configured by maIoU-YOLACT).

Layer names are the mmdet module paths: ``neck.lateral_convs.{0,1,2}.conv``
(1x1 on C3, C4, C5), ``neck.fpn_convs.{0,1,2}.conv`` (3x3 giving P3..P5) and
``neck.fpn_convs.{3,4}.conv`` (3x3 stride 2 giving P6, P7).

* ``extra_convs_on="input"`` (mmdet ``add_extra_convs='on_input'``): P6 is
  computed from C5, no activation anywhere.
* ``extra_convs_on="output"`` with ``relu_outputs=True`` is the original
  YOLACT FPN (dbolya ``FPN``): P3..P5 are ReLU'd and P6 is computed from
  the ReLU'd P5 (256 channels).

The top-down path resizes each level to the exact size of the next lower
lateral with half-pixel bilinear interpolation (``F.interpolate(size=...,
mode='bilinear', align_corners=False)``), so non-integer ratios such as
18 -> 35 are handled like PyTorch.

``yolact_fpn_carafe`` is maYOLACT's mmdet ``FPN_CARAFE``
(``tests/fixtures/reference/mayolact/README.md`` §3): five laterals
``neck.lateral_convs.{0,1,2}.conv`` (1x1 on C3..C5),
``neck.lateral_convs.3.conv`` (3x3 stride 2 on C5) and
``neck.lateral_convs.4.conv`` (3x3 stride 2 on L6), a CARAFE x2 top-down
path over all five levels (``neck.upsample_modules.{i}`` upsamples the
merged level ``i + 1``; the result is cropped to the top-left ``H x W`` of
level ``i``), and five 3x3 ``neck.fpn_convs.{i}.conv``. No norm, no
activation, biases everywhere.
"""

import keras

from orienmask_tf.layers.carafe import CARAFE
from orienmask_tf.layers.torch_layers import BilinearResize
from orienmask_tf.layers.torch_layers import torch_conv

EXTRA_CONVS_ON = ("input", "output")
NECKS = ("fpn", "fpn_carafe")
# FPN_CARAFE's upsample_cfg in maYOLACT (compressed_channels is a kwarg).
CARAFE_UPSAMPLE = dict(scale_factor=2, up_kernel=5, up_group=1,
                       encoder_kernel=3, encoder_dilation=1)


def yolact_fpn(features, channels=256, extra_convs_on="input",
               relu_outputs=False, name="neck"):
    """``{"C3", "C4", "C5"}`` -> ``[P3, P4, P5, P6, P7]`` (strides 8..128)."""
    if extra_convs_on not in EXTRA_CONVS_ON:
        raise ValueError(f"extra_convs_on must be one of {EXTRA_CONVS_ON}, "
                         f"got {extra_convs_on!r}")
    inputs = [features["C3"], features["C4"], features["C5"]]
    laterals = [
        torch_conv(x, channels, 1, name=f"{name}.lateral_convs.{i}.conv")
        for i, x in enumerate(inputs)]
    for i in (2, 1):
        up = BilinearResize(name=f"{name}.upsample.{i}")(
            [laterals[i], laterals[i - 1]])
        laterals[i - 1] = keras.layers.Add(name=f"{name}.top_down.{i - 1}")(
            [laterals[i - 1], up])
    outs = []
    for i, lateral in enumerate(laterals):
        p = torch_conv(lateral, channels, 3, name=f"{name}.fpn_convs.{i}.conv")
        if relu_outputs:
            p = keras.layers.ReLU(name=f"{name}.fpn_convs.{i}.relu")(p)
        outs.append(p)
    source = inputs[-1] if extra_convs_on == "input" else outs[-1]
    p6 = torch_conv(source, channels, 3, strides=2,
                    name=f"{name}.fpn_convs.3.conv")
    p7 = torch_conv(p6, channels, 3, strides=2, name=f"{name}.fpn_convs.4.conv")
    return outs + [p6, p7]


@keras.saving.register_keras_serializable(package="orienmask_tf")
class TopLeftCrop(keras.layers.Layer):
    """``[x, reference]`` -> ``x[:, :H_ref, :W_ref]`` (mmdet FPN_CARAFE's
    ``upsample_feat[:, :, :H, :W]`` crop of the upsampled map)."""

    def call(self, inputs):
        x, reference = inputs
        shape = keras.ops.shape(reference)
        return x[:, :shape[1], :shape[2], :]

    def compute_output_shape(self, input_shape):
        shape, reference = input_shape
        return (shape[0], reference[1], reference[2], shape[3])


def yolact_fpn_carafe(features, channels=256, compressed_channels=64,
                      name="neck"):
    """mmdet ``FPN_CARAFE`` (maYOLACT): ``{"C3", "C4", "C5"}`` -> ``[P3..P7]``.

    Args:
        features: dict with ``C3``, ``C4``, ``C5`` (NHWC; ``C2`` unused).
        channels: output width of every level (256).
        compressed_channels: CARAFE channel-compressor width (64); the other
            upsampler settings are maYOLACT's (``CARAFE_UPSAMPLE``: x2,
            up_kernel 5, up_group 1, encoder 3x3, dilation 1).
    """
    inputs = [features["C3"], features["C4"], features["C5"]]
    laterals = [
        torch_conv(x, channels, 1, name=f"{name}.lateral_convs.{i}.conv")
        for i, x in enumerate(inputs)]
    laterals.append(torch_conv(inputs[-1], channels, 3, strides=2,
                               name=f"{name}.lateral_convs.3.conv"))
    laterals.append(torch_conv(laterals[-1], channels, 3, strides=2,
                               name=f"{name}.lateral_convs.4.conv"))
    for i in range(len(laterals) - 1, 0, -1):
        up = CARAFE(channels, compressed_channels=compressed_channels,
                    name=f"{name}.upsample_modules.{i - 1}",
                    **CARAFE_UPSAMPLE)(laterals[i])
        up = TopLeftCrop(name=f"{name}.upsample_crop.{i - 1}")(
            [up, laterals[i - 1]])
        laterals[i - 1] = keras.layers.Add(name=f"{name}.top_down.{i - 1}")(
            [laterals[i - 1], up])
    return [torch_conv(lateral, channels, 3, name=f"{name}.fpn_convs.{i}.conv")
            for i, lateral in enumerate(laterals)]
