"""OrienMask prediction heads (paper Sec. 3.1-3.2).

* ``yolo_box_head``: the YOLOv3 BoxHead, ``A * (5 + C)`` channels per cell.
* ``orientation_head``: the OrienHead, one 2-channel orientation map per
  anchor at stride 4 (instance grouping by anchor).
"""

from orienmask_tf.layers import ChannelSlice
from orienmask_tf.layers import conv_bn_leaky
from orienmask_tf.layers import plain_conv
from orienmask_tf.layers.conv_bn import output_dtype


def yolo_box_head(x, num_anchors, num_classes, name, synchronized_bn=False):
    """3x3 conv doubling the channels, then a biased 1x1 prediction conv.

    Channel ``a * (5 + C) + k`` holds, for local anchor ``a``: k = 0..3 raw
    (tx, ty, tw, th), k = 4 the objectness logit, k = 5.. the class logits
    (official ``_build_bbox_head``; the decoder and loss rely on this order).
    """
    x = conv_bn_leaky(x, x.shape[-1] * 2, 3, name=f"{name}.0",
                      synchronized_bn=synchronized_bn)
    return plain_conv(x, num_anchors * (5 + num_classes), name=f"{name}.1")


def orientation_head(x, num_anchors, num_scales=3, name="orien_head",
                     synchronized_bn=False):
    """Three 3x3 / 1x1 pairs (channels 2c / c), then a biased 1x1 conv.

    Predicts ``num_scales * num_anchors`` orientation maps of 2 channels (x, y)
    at stride 4 -- one per anchor size, so instances grouped by anchor share a
    map (instance grouping). The output is split along channels exactly like
    the official ``torch.split``: ``[0:2A]`` -> stride 32 anchors, ``[2A:4A]``
    -> stride 16, ``[4A:6A]`` -> stride 8; inside a scale, channel
    ``2 * a + j`` is component j (0 = x, 1 = y) of local anchor ``a``.

    Returns:
        list of ``num_scales`` tensors ``(B, H/4, W/4, 2 * num_anchors)``,
        ordered stride 32, 16, 8.
    """
    channels = x.shape[-1]
    for i in range(5):
        kernel, filters = (3, channels * 2) if i % 2 == 0 else (1, channels)
        x = conv_bn_leaky(x, filters, kernel, name=f"{name}.{i}",
                          synchronized_bn=synchronized_bn)
    x = plain_conv(x, num_scales * num_anchors * 2, name=f"{name}.5")
    per_scale = 2 * num_anchors
    return [
        ChannelSlice(s * per_scale, (s + 1) * per_scale, dtype=output_dtype(),
                     name=f"{name}.split{s}")(x)
        for s in range(num_scales)
    ]
