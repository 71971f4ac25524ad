# SPDX-License-Identifier: Apache-2.0
"""YOLACT's sections of an ``Experiment`` (maIoU paper), and their checks.

Defaults are ``yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py``: ResNet-50 + FPN
(mmdet layout), ATSS with mask-aware IoU, the mmdet ``4x8`` schedule. YOLACT
has no ``anchors`` key: its anchors follow ``image_size``,
``targets.assigner`` and ``decode.style`` (``config_anchors``).

Images without annotations are not trained on (``data.skip_empty: true``
in the family defaults, set in ``YolactFamily.defaults``), as mmdet's
``CocoDataset(filter_empty_gt=True)`` of every official config; crowd
regions are not ignored (``targets.ignore_iof_thr: -1``, mmdet's
``MaxIoUAssigner`` default there).
"""

import dataclasses
import typing

from orienmask_tf.config import ConfigError
from orienmask_tf.config import check_synchronized_bn
from orienmask_tf.config import DataConfig
from orienmask_tf.config import TrainConfig
from orienmask_tf.config import check_choice


@dataclasses.dataclass(frozen=True)
class YolactModelConfig:
    """Constructor kwargs of ``orienmask_tf.models.yolact.Yolact``.

    Defaults: the maIoU paper's ResNet-50 + FPN YOLACT (mmdet layout: P6
    from C5, no ReLU after the FPN convs). ``num_anchors`` 0 takes the
    count of the anchors (``targets.assigner`` / ``decode.style``: 1 for
    ATSS, 3 for fixed IoU and dbolya); any other value must equal it.
    ``extra_convs_on: output`` with ``relu_fpn_outputs: true`` is the
    original (dbolya) YOLACT. maYOLACT: ``neck: fpn_carafe``,
    ``stage_with_dcn: [false, true, true, true]``, ``deformable_groups: 4``
    (with ``targets.scales_per_octave: 2``); ``carafe_compressed_channels``
    is FPN_CARAFE's CARAFE compressor width.
    """

    architecture: str = "yolact"
    num_classes: int = 80
    num_anchors: int = 0
    num_protos: int = 32
    stem_channels: int = 64
    base_channels: int = 64
    stackwise_num_blocks: typing.Tuple[int, ...] = (3, 4, 6, 3)
    fpn_channels: int = 256
    feat_channels: int = 256
    proto_channels: int = 256
    num_head_convs: int = 1
    extra_convs_on: str = "input"
    relu_fpn_outputs: bool = False
    synchronized_bn: typing.Union[bool, str] = False
    neck: str = "fpn"
    stage_with_dcn: typing.Tuple[bool, ...] = (False, False, False, False)
    deformable_groups: int = 1
    carafe_compressed_channels: int = 64


# Table 2 rows of the maIoU paper: assigner -> (targets.yolact_encoder
# assigner, overlap). GIoU / DIoU are its other ATSS rows.
YOLACT_ASSIGNERS = {
    "fixed_iou": ("max_iou", "iou"),
    "atss_iou": ("atss", "iou"),
    "atss_maiou": ("atss", "maiou"),
    "atss_giou": ("atss", "giou"),
    "atss_diou": ("atss", "diou"),
}


@dataclasses.dataclass(frozen=True)
class YolactTargetsConfig:
    """Anchor assignment of YOLACT (official ``train_cfg``).

    ``assigner``: ``fixed_iou`` (``MaxIoUAssigner``: ``pos_iou_thr`` 0.5,
    ``neg_iou_thr`` 0.4, ``min_pos_iou`` 0; 3 anchors per location),
    ``atss_iou`` (``ATSSAssigner``, ``topk`` 9), ``atss_maiou``
    (``ATSSmaIoUAssigner``, the paper's method), or ``atss_giou`` /
    ``atss_diou`` (Table 2's other rows); the ATSS ones use 1 anchor per
    location. The overlap is part of the name. ``official_segm_channels``:
    the fork's label-1 channel shift of the semantic-segmentation targets.
    ``scales_per_octave`` (ATSS assigners only): anchors per location, of
    sides ``4 * 2**(i / n) * stride`` (mmdet ``octave_base_scale=4``);
    maYOLACT uses 2 (scales 4 and 4·√2: 12,832 anchors at 550).
    """

    assigner: str = "atss_maiou"
    topk: int = 9
    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0
    # fixed_iou only: ignore anchors covered by more than this fraction of
    # crowd (iscrowd) pixels (mmdet MaxIoUAssigner ignore_iof_thr, see
    # families/yolact/encoder.py); <= 0 = off (-1: every official config).
    ignore_iof_thr: float = -1.0
    official_segm_channels: bool = True
    scales_per_octave: int = 1


@dataclasses.dataclass(frozen=True)
class YolactLossConfig:
    """Official YOLACT loss (``YOLACTHead`` with OHEM, ``YOLACTProtonet``,
    ``YOLACTSegmHead``). ``mask_weight`` is 8 for the ATSS configs and 6.125
    for fixed IoU (paper Sec. 4); the defaults are the ATSS-maIoU config.
    """

    cls_weight: float = 1.0
    box_weight: float = 1.5
    mask_weight: float = 8.0
    segm_weight: float = 1.0
    neg_pos_ratio: int = 3
    max_masks: int = 100
    smooth_l1_beta: float = 1.0


@dataclasses.dataclass(frozen=True)
class YolactDecodeConfig:
    """``YolactDecoder`` kwargs (official ``test_cfg``: ``nms_pre`` 1000,
    ``score_thr`` 0.05, ``iou_thr`` 0.5, ``top_k`` 200, ``max_per_img`` 100).
    ``style``: ``mmdet`` (maIoU fork) or ``dbolya`` (original YOLACT
    checkpoints: its priors as anchors, no clamp / clip / ``nms_pre``).
    """

    style: str = "mmdet"
    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_thr: float = 0.5
    top_k: int = 200
    max_per_img: int = 100
    mask_threshold: float = 0.5


# The train_cfg / optimizer of the mmdet YOLACT configs ("4x8": 8 images on
# each of 4 GPUs): SGD lr 4e-3 (1e-3 per 8 images), momentum 0.9, L2 5e-4,
# gradient norm clipped at 35, linear warm-up over 500 iterations from 0.1,
# x0.1 at epochs 20, 42, 49 and 52 of 55.
YOLACT_TRAIN = TrainConfig(
    batch_size=32, epochs=55, learning_rate=4e-3, momentum=0.9,
    weight_decay=5e-4, warmup_iters=500, warmup_ratio=0.1,
    milestones=(20, 42, 49, 52), milestones_unit="epochs", gamma=0.1,
    clip_norm=35.0)


def anchors_per_location(config):
    """3 for fixed IoU and the dbolya priors; ``targets.scales_per_octave``
    (1, maYOLACT 2) for ATSS."""
    if config.decode.style == "dbolya" \
            or config.targets.assigner == "fixed_iou":
        return 3
    return config.targets.scales_per_octave


def config_anchors(config):
    """Anchors ``(N, 4)`` x1, y1, x2, y2 in input pixels (levels P3..P7, rows
    ``(y, x, a)``) and the per-level counts: the official config's anchors
    for ``targets.assigner`` at ``image_size``
    (``families.yolact.ops.yolact_config_anchors``), or the dbolya priors
    when ``decode.style`` is ``dbolya``."""
    from orienmask_tf.families.yolact.ops import dbolya_anchors
    from orienmask_tf.families.yolact.ops import yolact_config_anchors

    if config.decode.style == "dbolya":
        return dbolya_anchors(config.image_size)
    kind = YOLACT_ASSIGNERS[config.targets.assigner][0]
    if kind != "atss":
        return yolact_config_anchors(config.image_size, assigner=kind)
    return yolact_config_anchors(
        config.image_size, assigner=kind,
        scales_per_octave=config.targets.scales_per_octave)


def validate(config):
    """Raise ``ConfigError`` naming the key of an invalid YOLACT setting."""
    height, width = config.image_size
    if height < 32 or width < 32:
        raise ConfigError(f"image_size: height and width must be at least 32, "
                          f"got {list(config.image_size)}")
    model, targets = config.model, config.targets
    loss, decode = config.loss, config.decode
    check_choice(targets.assigner, YOLACT_ASSIGNERS, "targets.assigner")
    check_choice(decode.style, ("mmdet", "dbolya"), "decode.style")
    check_choice(model.extra_convs_on, ("input", "output"), "model.extra_convs_on")
    check_choice(model.neck, ("fpn", "fpn_carafe"), "model.neck")
    for key in ("num_classes", "num_protos", "stem_channels", "base_channels",
                "fpn_channels", "feat_channels", "proto_channels"):
        if getattr(model, key) < 1:
            raise ConfigError(f"model.{key}: must be >= 1")
    if model.num_head_convs < 0:
        raise ConfigError("model.num_head_convs: must be >= 0")
    blocks = model.stackwise_num_blocks
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError(
            "model.stackwise_num_blocks: expected 4 counts >= 1 (ResNet "
            f"stages layer1..layer4; ResNet-50: [3, 4, 6, 3]), got "
            f"{list(blocks)}")
    _validate_mayolact_model(model)
    check_synchronized_bn(model.synchronized_bn)
    if isinstance(targets.scales_per_octave, bool) \
            or targets.scales_per_octave < 1:
        raise ConfigError("targets.scales_per_octave: must be >= 1, got "
                          f"{targets.scales_per_octave}")
    if targets.scales_per_octave != 1 and (
            YOLACT_ASSIGNERS[targets.assigner][0] != "atss"
            or decode.style == "dbolya"):
        raise ConfigError(
            f"targets.scales_per_octave: {targets.scales_per_octave} needs an "
            f"ATSS targets.assigner with decode.style mmdet (the "
            f"{targets.assigner!r} / {decode.style!r} anchors are fixed); "
            "use 1")
    try:
        config_anchors(config)
    except ValueError as error:
        raise ConfigError(f"decode.style: {error}") from None
    per_location = anchors_per_location(config)
    if model.num_anchors not in (0, per_location):
        raise ConfigError(
            f"model.num_anchors: targets.assigner {targets.assigner!r} with "
            f"decode.style {decode.style!r} places {per_location} anchor(s) "
            f"per location, got {model.num_anchors} (0 = follow the anchors)")
    if targets.topk < 1:
        raise ConfigError("targets.topk: must be >= 1")
    if targets.ignore_iof_thr > 0 and (
            targets.ignore_iof_thr >= 1
            or YOLACT_ASSIGNERS[targets.assigner][0] != "max_iou"):
        raise ConfigError(
            f"targets.ignore_iof_thr: {targets.ignore_iof_thr} needs "
            "targets.assigner fixed_iou and a value < 1 (crowd regions "
            "ignored by mmdet's MaxIoUAssigner); <= 0 = off")
    if not (0.0 <= targets.neg_iou_thr <= targets.pos_iou_thr <= 1.0
            and 0.0 <= targets.min_pos_iou <= 1.0):
        raise ConfigError(
            "targets: need 0 <= neg_iou_thr <= pos_iou_thr <= 1 and "
            f"0 <= min_pos_iou <= 1, got {targets.neg_iou_thr}, "
            f"{targets.pos_iou_thr}, {targets.min_pos_iou}")
    for key in ("cls_weight", "box_weight", "mask_weight", "segm_weight"):
        if getattr(loss, key) < 0:
            raise ConfigError(f"loss.{key}: must be >= 0")
    if loss.neg_pos_ratio < 1 or loss.max_masks < 1 \
            or loss.smooth_l1_beta <= 0:
        raise ConfigError("loss.neg_pos_ratio and loss.max_masks must be >= "
                          "1 and loss.smooth_l1_beta > 0")
    if decode.nms_pre < 0 or decode.top_k < 1 or decode.max_per_img < 1:
        raise ConfigError("decode.nms_pre must be >= 0 (0 = keep all), "
                          "decode.top_k and decode.max_per_img >= 1")
    if not (0.0 <= decode.score_thr < 1.0 and 0.0 < decode.iou_thr <= 1.0
            and 0.0 < decode.mask_threshold < 1.0):
        raise ConfigError("decode: need 0 <= score_thr < 1, 0 < iou_thr <= 1 "
                          "and 0 < mask_threshold < 1")
    if (config.data.aspect_jitter != DataConfig.aspect_jitter
            or config.data.pad_ratio != DataConfig.pad_ratio):
        raise ConfigError(
            "data.aspect_jitter / data.pad_ratio belong to the orienmask "
            "recipe; the yolact recipe has no such step")


def _validate_mayolact_model(model):
    """The DCN / FPN_CARAFE keys of ``model`` (maYOLACT)."""
    dcn = model.stage_with_dcn
    if len(dcn) != 4 or not all(isinstance(v, bool) for v in dcn):
        raise ConfigError(
            "model.stage_with_dcn: expected 4 booleans (DCNv2 in ResNet "
            "layer1..layer4; maYOLACT: [false, true, true, true]), got "
            f"{list(dcn)}")
    groups = model.deformable_groups
    if isinstance(groups, bool) or groups < 1:
        raise ConfigError(f"model.deformable_groups: must be >= 1, got "
                          f"{groups}")
    for stage, on in enumerate(dcn):
        planes = model.base_channels * 2 ** stage
        if on and planes % groups:
            raise ConfigError(
                f"model.deformable_groups: {groups} does not divide the "
                f"{planes} channels of layer{stage + 1} (model.base_channels "
                f"{model.base_channels} x {2 ** stage}), which has DCN")
    if model.carafe_compressed_channels < 1:
        raise ConfigError("model.carafe_compressed_channels: must be >= 1")
    if model.neck == "fpn_carafe" and (model.extra_convs_on != "input"
                                       or model.relu_fpn_outputs):
        raise ConfigError(
            "model.neck: fpn_carafe computes P6 / P7 from C5 without "
            "activations; it needs model.extra_convs_on: input and "
            "model.relu_fpn_outputs: false")
