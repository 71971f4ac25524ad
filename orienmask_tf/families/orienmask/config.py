# SPDX-License-Identifier: Apache-2.0
"""OrienMask's sections of an ``Experiment`` and their checks.

Defaults are the paper's final COCO model,
``orienmask_yolo_coco_544_anchor4_fpn_plus`` (Table 5). Values in ``model``
become the ``OrienMask`` constructor kwargs; ``anchors`` is a preset name
(``"yolov3"``, ``"yolov4"``) or nine ``[width, height]`` pairs in pixels of
the network input. ``targets.assigner`` picks the anchor assignment:
``yolo`` (the paper's, default) or ATSS with IoU / mask-aware IoU on the
same anchors (``families/orienmask/atss_targets.py``; new, no paper number).
"""

import dataclasses
import typing

from orienmask_tf.config import ConfigError
from orienmask_tf.config import check_choice
from orienmask_tf.config import check_synchronized_bn


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Constructor kwargs of ``families.orienmask.network.OrienMask``."""

    architecture: str = "orienmask"
    variant: str = "fpn_plus"
    num_classes: int = 80
    num_anchors: int = 3
    width: int = 32
    stackwise_num_blocks: typing.Tuple[int, ...] = (1, 2, 8, 8, 4)
    synchronized_bn: typing.Union[bool, str] = False


# targets.assigner -> ATSS overlap (None: the official YOLO assignment).
ORIENMASK_ASSIGNERS = {"yolo": None, "atss_iou": "iou", "atss_maiou": "maiou"}


@dataclasses.dataclass(frozen=True)
class TargetsConfig:
    """Anchor assignment of the OrienMask targets.

    ``assigner``: ``yolo`` (official: each instance to the best of the 9
    anchors by width/height IoU at the cell of its centre, paper Sec. 3.1),
    ``atss_iou`` or ``atss_maiou`` (ATSS, Zhang et al. 2020, with IoU or the
    maIoU paper's mask-aware IoU, over the 9 anchors placed at every cell of
    the three scales; ``families/orienmask/atss_targets.py`` says how their
    positives drive the box, objectness and orientation targets). ``topk``:
    ATSS candidates per scale (9: 3 cells x 3 anchors). ``yolo_fallback``
    (ATSS only): an instance ATSS leaves without a positive gets its YOLO
    anchor, if no other instance holds it.
    """

    assigner: str = "yolo"
    topk: int = 9
    yolo_fallback: bool = True


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Official ``OrienMaskYOLOMultiScaleLoss`` settings (paper Eq. 4-5).

    ``weights`` are, in order: xy, wh, objectness (positive), objectness
    (negative), class, orientation (positive), orientation (negative);
    the orientation weight is the paper's lambda = 20.
    """

    center_region: float = 0.6
    valid_region: float = 0.6
    obj_ignore_threshold: float = 0.7
    label_smooth: bool = False
    weights: typing.Tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 20.0, 20.0)
    scales_weight: typing.Tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Official ``OrienMaskYOLOPostProcess`` settings (paper Eq. 3).

    ``orien_thresh`` 0.3 on the full box size is the paper's tau = 0.6 on
    the half size.
    """

    conf_thresh: float = 0.005
    nms: str = "greedy"
    nms_threshold: float = 0.5
    nms_pre: int = 400
    nms_post: int = 100
    orien_thresh: float = 0.3


def validate(config):
    """Raise ``ConfigError`` naming the key of an invalid OrienMask setting."""
    from orienmask_tf.families.orienmask.anchors import resolve_anchors

    height, width = config.image_size
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ConfigError(
            f"image_size: height and width must be positive multiples of 32, "
            f"got {list(config.image_size)}")
    try:
        anchors = resolve_anchors(config.anchors)
    except ValueError as error:
        raise ConfigError(f"anchors: {error}") from None
    if len(anchors) != 3 * config.model.num_anchors:
        raise ConfigError(
            f"anchors: expected {3 * config.model.num_anchors} pairs (3 scales "
            f"x model.num_anchors={config.model.num_anchors}), got {len(anchors)}")
    if config.model.variant not in ("base", "fpn_plus"):
        raise ConfigError(
            f"model.variant: expected 'base' or 'fpn_plus', got "
            f"{config.model.variant!r}")
    if len(config.model.stackwise_num_blocks) != 5:
        raise ConfigError(
            "model.stackwise_num_blocks: expected 5 counts (Darknet stages "
            f"conv2..conv6), got {list(config.model.stackwise_num_blocks)}")
    for key in ("num_classes", "num_anchors", "width"):
        if getattr(config.model, key) < 1:
            raise ConfigError(f"model.{key}: must be >= 1")
    check_synchronized_bn(config.model.synchronized_bn)
    check_choice(config.targets.assigner, ORIENMASK_ASSIGNERS,
                 "targets.assigner")
    if config.targets.topk < 1:
        raise ConfigError(f"targets.topk: must be >= 1, got "
                          f"{config.targets.topk}")
    if config.decode.nms not in ("greedy", "fast"):
        raise ConfigError(
            f"decode.nms: expected 'greedy' or 'fast', got {config.decode.nms!r}")
    if len(config.loss.weights) != 7 or len(config.loss.scales_weight) != 3:
        raise ConfigError(
            "loss.weights needs 7 values and loss.scales_weight 3 values")
    if min(config.loss.weights) < 0 or min(config.loss.scales_weight) < 0:
        raise ConfigError("loss.weights and loss.scales_weight: must be >= 0")
    loss, decode = config.loss, config.decode
    for key in ("center_region", "valid_region"):
        if not 0.0 < getattr(loss, key) <= 1.0:
            raise ConfigError(f"loss.{key}: expected a value in (0, 1], got "
                              f"{getattr(loss, key)}")
    if not 0.0 <= loss.obj_ignore_threshold <= 1.0:
        raise ConfigError("loss.obj_ignore_threshold: expected a value in "
                          f"[0, 1], got {loss.obj_ignore_threshold}")
    for key in ("nms_pre", "nms_post"):
        if getattr(decode, key) < 1:
            raise ConfigError(f"decode.{key}: must be >= 1, got "
                              f"{getattr(decode, key)}")
    if not (0.0 <= decode.conf_thresh < 1.0
            and 0.0 < decode.nms_threshold <= 1.0
            and 0.0 < decode.orien_thresh <= 1.0):
        raise ConfigError(
            "decode: need 0 <= conf_thresh < 1, 0 < nms_threshold <= 1 and "
            f"0 < orien_thresh <= 1, got {decode.conf_thresh}, "
            f"{decode.nms_threshold}, {decode.orien_thresh}")
