"""YOLOv3 feature pyramid of OrienMask, base and "FPN plus" (paper Fig. 2, Table 4)."""

import keras

from orienmask_tf.layers import conv_bn_leaky
from orienmask_tf.layers import nearest_upsample

VARIANTS = ("base", "fpn_plus")


def _neck(x, channels, name, synchronized_bn):
    """Five alternating 1x1 / 3x3 convs (official ``_build_neck``)."""
    for i in range(5):
        kernel, filters = (1, channels) if i % 2 == 0 else (3, channels * 2)
        x = conv_bn_leaky(x, filters, kernel, name=f"{name}.{i}",
                          synchronized_bn=synchronized_bn)
    return x


def _route(x, channels, factor, name, synchronized_bn):
    """1x1 conv then nearest upsampling (official ``_build_route``)."""
    x = conv_bn_leaky(x, channels, 1, name=f"{name}.0",
                      synchronized_bn=synchronized_bn)
    return nearest_upsample(x, factor, name=f"{name}.1")


def yolo_fpn(pyramid, variant="fpn_plus", width=32, synchronized_bn=False):
    """Top-down YOLOv3 neck plus the stride-4 feature that feeds the OrienHead.

    Args:
        pyramid: backbone outputs ``{"P2", "P3", "P4", "P5"}``.
        variant: ``"base"`` (official ``OrienMaskYOLO``: P2 from the stride-8
            neck through ``route8``) or ``"fpn_plus"`` (official
            ``OrienMaskYOLOFPNPlus``: P2 merges ``skip32/16/8/4`` of all
            levels, the dashed lines of Fig. 2).
        width: backbone base width (32 for the paper); every neck width is a
            fixed multiple of it (neck32 = 16 * width, ...).

    Returns:
        ``(neck32, neck16, neck8, neck4)``: features for the box heads at
        strides 32, 16, 8 and for the orientation head at stride 4.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    sbn = synchronized_bn
    concat = keras.layers.Concatenate
    neck32 = _neck(pyramid["P5"], 16 * width, "neck32", sbn)
    up32 = _route(neck32, 8 * width, 2, "route32", sbn)
    neck16 = _neck(concat(name="cat16")([up32, pyramid["P4"]]),
                   8 * width, "neck16", sbn)
    up16 = _route(neck16, 4 * width, 2, "route16", sbn)
    neck8 = _neck(concat(name="cat8")([up16, pyramid["P3"]]),
                  4 * width, "neck8", sbn)
    if variant == "base":
        up8 = _route(neck8, 2 * width, 2, "route8", sbn)
        merged = concat(name="cat4")([up8, pyramid["P2"]])
    else:
        merged = concat(name="cat4")([
            _route(neck32, 2 * width, 8, "skip32", sbn),
            _route(neck16, 2 * width, 4, "skip16", sbn),
            _route(neck8, 2 * width, 2, "skip8", sbn),
            conv_bn_leaky(pyramid["P2"], 2 * width, 1, name="skip4",
                          synchronized_bn=sbn),
        ])
    neck4 = _neck(merged, 4 * width, "neck4", sbn)
    return neck32, neck16, neck8, neck4
