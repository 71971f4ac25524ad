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
"""

import keras

from orienmask_tf.layers.torch_layers import BilinearResize
from orienmask_tf.layers.torch_layers import torch_conv

EXTRA_CONVS_ON = ("input", "output")


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
