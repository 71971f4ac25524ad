"""OrienMask network: Darknet-53 -> YOLOv3 FPN -> BoxHeads + OrienHead (paper Fig. 2)."""

import keras

from orienmask_tf.families.orienmask.darknet53 import Darknet53Backbone
from orienmask_tf.families.orienmask.darknet53 import DARKNET53_BLOCKS
from orienmask_tf.families.orienmask.heads import orientation_head
from orienmask_tf.families.orienmask.heads import yolo_box_head
from orienmask_tf.families.orienmask.yolo_fpn import yolo_fpn
from orienmask_tf.families.orienmask.yolo_fpn import VARIANTS
from orienmask_tf.families.orienmask.anchors import INPUT_DIVISOR
from orienmask_tf.families.orienmask.anchors import STRIDES

# Output keys, ordered like the official ((bbox32, orien32), (bbox16, orien16), (bbox8, orien8)).
BOX_KEYS = tuple(f"box_s{s}" for s in STRIDES)
ORIEN_KEYS = tuple(f"orien_s{s}" for s in STRIDES)
OUTPUT_KEYS = tuple(k for pair in zip(BOX_KEYS, ORIEN_KEYS) for k in pair)
# The official class name of each variant (used to recognise checkpoints).
OFFICIAL_CLASS_NAMES = {"base": "OrienMaskYOLO", "fpn_plus": "OrienMaskYOLOFPNPlus"}


def check_image_size(height, width):
    """Raise ``ValueError`` unless both sides are positive multiples of 32."""
    for side_name, side in (("height", height), ("width", width)):
        if side is not None and (side <= 0 or side % INPUT_DIVISOR):
            raise ValueError(
                f"OrienMask input {side_name} must be a positive multiple of "
                f"{INPUT_DIVISOR} (routes are upsampled x2 and concatenated "
                f"with the backbone), got {height}x{width}")


@keras.saving.register_keras_serializable(package="orienmask_tf")
class OrienMask(keras.Model):
    """OrienMask (Du et al., ICCV 2021) raw network, NHWC, Keras functional.

    Args:
        num_classes: object classes C (80 for COCO).
        variant: ``"fpn_plus"`` (official ``OrienMaskYOLOFPNPlus``, Table 4
            "+ fpn plus") or ``"base"`` (official ``OrienMaskYOLO``).
        num_anchors: anchors per scale A (3 in YOLOv3).
        width: channels of the first conv (32 in Darknet-53); every other
            width scales with it, so tests build narrow variants of this code.
        stackwise_num_blocks: residual blocks of Darknet stages conv2..conv6.
        image_shape: ``(height, width, 3)``; ``None`` dims accept any size
            divisible by 32.
        synchronized_bn: ``True``: cross-replica BatchNorm (the paper's final
            model); ``"split_invariant"``: cross-replica with statistics that
            do not depend on the split of the batch
            (``layers.batch_norm.SplitInvariantBatchNorm``).

    Input: float32 RGB images in ``[0, 1]`` (the official ``Normalize`` with
    mean 0, std 255), shape ``(B, H, W, 3)``.

    Output: dict of raw (pre-activation) tensors, NHWC:
        ``box_s{32,16,8}``: ``(B, H/s, W/s, A * (5 + C))``, channel
            ``a * (5 + C) + k`` = (tx, ty, tw, th, objectness, classes...).
        ``orien_s{32,16,8}``: ``(B, H/4, W/4, 2 * A)``, channel ``2 * a + j``
            = orientation component j (x, y) of the map of local anchor a of
            that scale, in units of half the anchor size (paper Eq. 5).
    With 80 classes there are 63,662,063 (``fpn_plus``) and 63,596,143
    (``base``) trainable parameters, as in the official models.
    """

    def __init__(self, num_classes=80, variant="fpn_plus", num_anchors=3,
                 width=32, stackwise_num_blocks=DARKNET53_BLOCKS,
                 image_shape=(None, None, 3), synchronized_bn=False,
                 **kwargs):
        if variant not in VARIANTS:
            raise ValueError(
                f"variant must be one of {VARIANTS}, got {variant!r}")
        if int(num_classes) < 1 or int(num_anchors) < 1 or int(width) < 1:
            raise ValueError(
                "num_classes, num_anchors and width must be positive, got "
                f"{num_classes}, {num_anchors}, {width}")
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(
                f"image_shape must be (height, width, 3), got {image_shape!r}")
        check_image_size(image_shape[0], image_shape[1])
        images = keras.Input(shape=image_shape, name="images")
        backbone = Darknet53Backbone(
            width=width, stackwise_num_blocks=stackwise_num_blocks,
            image_shape=image_shape, synchronized_bn=synchronized_bn,
            name="backbone")
        necks = yolo_fpn(backbone(images), variant=variant, width=width,
                         synchronized_bn=synchronized_bn)
        outputs = {}
        for stride, feature in zip(STRIDES, necks[:3]):
            outputs[f"box_s{stride}"] = yolo_box_head(
                feature, num_anchors, num_classes, name=f"bbox_head{stride}",
                synchronized_bn=synchronized_bn)
        oriens = orientation_head(necks[3], num_anchors, len(STRIDES),
                                  synchronized_bn=synchronized_bn)
        for stride, orien in zip(STRIDES, oriens):
            outputs[f"orien_s{stride}"] = orien
        super().__init__(
            inputs=images, outputs={k: outputs[k] for k in OUTPUT_KEYS},
            **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.variant = variant
        self.num_anchors = int(num_anchors)
        self.width = int(width)
        self.stackwise_num_blocks = tuple(stackwise_num_blocks)
        self.image_shape = tuple(image_shape)
        self.synchronized_bn = synchronized_bn

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "variant": self.variant,
            "num_anchors": self.num_anchors,
            "width": self.width,
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "image_shape": list(self.image_shape),
            "synchronized_bn": self.synchronized_bn,
        }

    def output_shapes(self, height, width, batch_size=1):
        """Static output shapes for an input of ``height x width`` (no forward pass)."""
        check_image_size(height, width)
        spec = self.compute_output_spec(
            keras.KerasTensor((batch_size, height, width, 3)))
        return {key: tuple(spec[key].shape) for key in OUTPUT_KEYS}
