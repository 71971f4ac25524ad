"""YOLOv3 BoxHead (paper Sec. 3.1): ``A * (5 + C)`` channels per cell."""

from orienmask_tf.layers import conv_bn_leaky
from orienmask_tf.layers import plain_conv


def yolo_box_head(x, num_anchors, num_classes, name, synchronized_bn=False):
    """3x3 conv doubling the channels, then a biased 1x1 prediction conv.

    Channel ``a * (5 + C) + k`` holds, for local anchor ``a``: k = 0..3 raw
    (tx, ty, tw, th), k = 4 the objectness logit, k = 5.. the class logits
    (official ``_build_bbox_head``; the decoder and loss rely on this order).
    """
    x = conv_bn_leaky(x, x.shape[-1] * 2, 3, name=f"{name}.0",
                      synchronized_bn=synchronized_bn)
    return plain_conv(x, num_anchors * (5 + num_classes), name=f"{name}.1")
