"""YOLACT (Bolya et al., ICCV 2019) as trained in the Mask-aware IoU paper.

ResNet-50 -> FPN P3..P7 -> shared head (softmax classes with background
last, DeltaXYWH deltas, tanh mask coefficients) + protonet (prototypes at
stride 4) + semantic-segmentation head (training only). Layer names are the
mmdet module paths (``backbone.layer1.0.conv1``, ``neck.fpn_convs.3.conv``,
``bbox_head.conv_cls``, ``mask_head.protonet.10``, ``segm_head.segm_conv``),
so ``checkpoint.py`` maps an mmdet state_dict by name.

maYOLACT (the maIoU paper's real-time model, ``mayolact_r50_4x8_coco_scale*``)
is the same network with DCNv2 in ResNet layers 2-4
(``stage_with_dcn=(False, True, True, True)``, ``deformable_groups=4``), the
``FPN_CARAFE`` neck (``neck="fpn_carafe"``) and 2 anchors per location.
"""

import keras

from orienmask_tf.families.yolact.resnet import NO_DCN
from orienmask_tf.families.yolact.resnet import RESNET50_BLOCKS
from orienmask_tf.families.yolact.resnet import ResNetBackbone
from orienmask_tf.families.yolact.heads import protonet
from orienmask_tf.families.yolact.heads import segm_head
from orienmask_tf.families.yolact.heads import yolact_head
from orienmask_tf.families.yolact.fpn import NECKS
from orienmask_tf.families.yolact.fpn import yolact_fpn
from orienmask_tf.families.yolact.fpn import yolact_fpn_carafe

NUM_LEVELS = 5
CLS_KEYS = tuple(f"cls_score_l{i}" for i in range(NUM_LEVELS))
REG_KEYS = tuple(f"bbox_pred_l{i}" for i in range(NUM_LEVELS))
COEFF_KEYS = tuple(f"coeff_pred_l{i}" for i in range(NUM_LEVELS))
OUTPUT_KEYS = CLS_KEYS + REG_KEYS + COEFF_KEYS + ("protos", "segm")
# RGB mean / std of the maIoU configs (and of dbolya YOLACT).


@keras.saving.register_keras_serializable(package="orienmask_tf")
class Yolact(keras.Model):
    """YOLACT raw network, NHWC, Keras functional.

    Args:
        num_classes: foreground classes C (80); the classifier has C + 1
            softmax outputs per anchor with background at index C.
        num_anchors: anchors per location A (1 for the ATSS configs, 3 for
            the fixed-IoU baseline and dbolya, 2 for maYOLACT).
        num_protos: prototypes / mask coefficients (32).
        stem_channels, base_channels, stackwise_num_blocks: ResNet widths
            and depth (64, 64, (3, 4, 6, 3) = ResNet-50).
        fpn_channels: FPN, head and protonet input width (256).
        feat_channels: head tower width (256).
        proto_channels: protonet hidden width (256).
        num_head_convs: 3x3 + ReLU convs of the shared tower (1).
        extra_convs_on: ``"input"`` (mmdet: P6 from C5) or ``"output"``
            (dbolya: P6 from the ReLU'd P5).
        relu_fpn_outputs: ReLU after the P3..P5 convs (dbolya: True).
        image_shape: ``(height, width, 3)``, any size; static (e.g.
            ``(550, 550, 3)``) when the backbone has DCN.
        synchronized_bn: ``False``, ``True`` (cross-replica BatchNorm) or
            ``"split_invariant"`` (``layers.batch_norm``).
        neck: ``"fpn"`` (mmdet ``FPN``, the default) or ``"fpn_carafe"``
            (maYOLACT's ``FPN_CARAFE``: P6 / P7 laterals from C5, CARAFE
            top-down over all five levels; needs ``extra_convs_on="input"``
            and ``relu_fpn_outputs=False``).
        stage_with_dcn: 4 booleans: DCNv2 ``conv2`` in the bottlenecks of
            ResNet layer1..layer4 (maYOLACT: ``(False, True, True, True)``).
        deformable_groups: DCN offset groups (maYOLACT: 4).
        carafe_compressed_channels: CARAFE compressor width of
            ``fpn_carafe`` (64).

    Input: normalised RGB ``(x - PIXEL_MEAN) / PIXEL_STD``, ``(B, H, W, 3)``.

    Output dict (NHWC, float32):
        ``cls_score_l{i}`` ``(B, h_i, w_i, A * (C + 1))`` logits,
        ``bbox_pred_l{i}`` ``(B, h_i, w_i, A * 4)``,
        ``coeff_pred_l{i}`` ``(B, h_i, w_i, A * num_protos)`` (after tanh),
        ``protos`` ``(B, 2 h_0, 2 w_0, num_protos)`` (after the ReLU),
        ``segm`` ``(B, h_0, w_0, C)`` logits (training only).
    With 80 classes: 34,754,341 trainable parameters for A = 1 and
    35,293,711 for A = 3 (segmentation head included), as in mmdet;
    maYOLACT (DCN, ``fpn_carafe``, A = 2): 39,985,830.
    """

    def __init__(self, num_classes=80, num_anchors=1, num_protos=32,
                 stem_channels=64, base_channels=64,
                 stackwise_num_blocks=RESNET50_BLOCKS, fpn_channels=256,
                 feat_channels=256, proto_channels=256, num_head_convs=1,
                 extra_convs_on="input", relu_fpn_outputs=False,
                 image_shape=(None, None, 3), synchronized_bn=False,
                 neck="fpn", stage_with_dcn=NO_DCN, deformable_groups=1,
                 carafe_compressed_channels=64, **kwargs):
        if min(int(num_classes), int(num_anchors), int(num_protos)) < 1:
            raise ValueError(
                "num_classes, num_anchors and num_protos must be positive, "
                f"got {num_classes}, {num_anchors}, {num_protos}")
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(
                f"image_shape must be (height, width, 3), got {image_shape!r}")
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {NECKS}, got {neck!r}")
        if neck == "fpn_carafe" and (extra_convs_on != "input"
                                     or relu_fpn_outputs):
            raise ValueError(
                "neck='fpn_carafe' computes its extra levels from C5 without "
                "activations: it needs extra_convs_on='input' and "
                "relu_fpn_outputs=False")
        if int(carafe_compressed_channels) < 1:
            raise ValueError("carafe_compressed_channels must be >= 1, got "
                             f"{carafe_compressed_channels}")
        images = keras.Input(shape=image_shape, name="images")
        backbone = ResNetBackbone(
            stem_channels=stem_channels, base_channels=base_channels,
            stackwise_num_blocks=stackwise_num_blocks, image_shape=image_shape,
            synchronized_bn=synchronized_bn, stage_with_dcn=stage_with_dcn,
            deformable_groups=deformable_groups, name="backbone")
        if neck == "fpn_carafe":
            levels = yolact_fpn_carafe(
                backbone(images), channels=fpn_channels,
                compressed_channels=int(carafe_compressed_channels))
        else:
            levels = yolact_fpn(backbone(images), channels=fpn_channels,
                                extra_convs_on=extra_convs_on,
                                relu_outputs=relu_fpn_outputs)
        cls_scores, bbox_preds, coeff_preds = yolact_head(
            levels, num_classes=num_classes, num_anchors=num_anchors,
            num_protos=num_protos, feat_channels=feat_channels,
            num_head_convs=num_head_convs)
        outputs = {}
        for i in range(NUM_LEVELS):
            outputs[CLS_KEYS[i]] = cls_scores[i]
            outputs[REG_KEYS[i]] = bbox_preds[i]
            outputs[COEFF_KEYS[i]] = coeff_preds[i]
        outputs["protos"] = protonet(levels[0], channels=proto_channels,
                                     num_protos=num_protos)
        outputs["segm"] = segm_head(levels[0], num_classes=num_classes)
        super().__init__(inputs=images,
                         outputs={k: outputs[k] for k in OUTPUT_KEYS},
                         **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)
        self.num_protos = int(num_protos)
        self.stem_channels = int(stem_channels)
        self.base_channels = int(base_channels)
        self.stackwise_num_blocks = tuple(stackwise_num_blocks)
        self.fpn_channels = int(fpn_channels)
        self.feat_channels = int(feat_channels)
        self.proto_channels = int(proto_channels)
        self.num_head_convs = int(num_head_convs)
        self.extra_convs_on = extra_convs_on
        self.relu_fpn_outputs = bool(relu_fpn_outputs)
        self.image_shape = tuple(image_shape)
        self.synchronized_bn = synchronized_bn
        self.neck = neck
        self.stage_with_dcn = backbone.stage_with_dcn
        self.deformable_groups = backbone.deformable_groups
        self.carafe_compressed_channels = int(carafe_compressed_channels)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_classes": self.num_classes,
            "num_anchors": self.num_anchors,
            "num_protos": self.num_protos,
            "stem_channels": self.stem_channels,
            "base_channels": self.base_channels,
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "fpn_channels": self.fpn_channels,
            "feat_channels": self.feat_channels,
            "proto_channels": self.proto_channels,
            "num_head_convs": self.num_head_convs,
            "extra_convs_on": self.extra_convs_on,
            "relu_fpn_outputs": self.relu_fpn_outputs,
            "image_shape": list(self.image_shape),
            "synchronized_bn": self.synchronized_bn,
            "neck": self.neck,
            "stage_with_dcn": list(self.stage_with_dcn),
            "deformable_groups": self.deformable_groups,
            "carafe_compressed_channels": self.carafe_compressed_channels,
        }

    def output_shapes(self, height, width, batch_size=1):
        """Static output shapes for an input of ``height x width``."""
        spec = self.compute_output_spec(
            keras.KerasTensor((batch_size, height, width, 3)))
        return {key: tuple(spec[key].shape) for key in OUTPUT_KEYS}
