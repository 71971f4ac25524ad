"""YOLACT checkpoints (mmdet maIoU, original dbolya, torchvision ResNet-50)
<-> Keras weights of ``Yolact``.

The Keras layers of ``Yolact`` carry the mmdet module paths as names, so an
mmdet key ``<module>.<param>`` maps to the weight ``<param>`` of the layer
``<module>`` (the walker and tensor layouts are those of
``orienmask_keys``). Two other layouts are renamed to mmdet keys first:

* dbolya YOLACT (``yolact_resnet50_54_800000.pth``, a bare state_dict):
  ``backbone.layers.i`` -> ``backbone.layer{i+1}``; the reversed
  ``fpn.lat_layers.k`` / ``fpn.pred_layers.k`` -> ``neck.lateral_convs.{2-k}``
  / ``neck.fpn_convs.{2-k}``; ``fpn.downsample_layers.k`` ->
  ``neck.fpn_convs.{3+k}`` (on the P5 output: build the model with
  ``extra_convs_on="output", relu_fpn_outputs=True``);
  ``prediction_layers.0.{upfeature.0, conf_layer, bbox_layer, mask_layer}``
  -> ``bbox_head.{head_convs.0.conv, conv_cls, conv_reg, conv_coeff}`` with
  the 81 class channels of each anchor rolled from ``[bg, fg...]`` to
  ``[fg..., bg]``; ``proto_net.k`` -> ``mask_head.protonet.k``;
  ``semantic_seg_conv`` -> ``segm_head.segm_conv``. Its priors and box
  coder differ (see ``ops.anchors_mmdet.yolact_priors``).
* torchvision ``resnet50`` ImageNet weights (``conv1``, ``layer1.0...``,
  ``fc.*``): loaded into the backbone only, ``fc.*`` dropped. Into a DCN
  backbone (maYOLACT) ``layerX.Y.conv2.weight`` fills the deformable conv's
  kernel; the ``conv2.conv_offset.*`` weights, which torchvision lacks, are
  set to zero as mmdet's ``ResNet.init_weights`` does before loading with
  ``strict=False`` (the DCN is then 0.5 x the plain conv). Every other key
  stays strict, and mmdet checkpoints must hold the offsets.

maYOLACT checkpoints (DCNv2 + ``FPN_CARAFE``, 400 keys) map by name like the
others: ``backbone.layerX.Y.conv2.conv_offset.*`` and
``neck.upsample_modules.{i}.{channel_compressor,content_encoder}.*`` are
sublayers of ``DeformConv2D`` / ``CARAFE`` (see ``convert.weight_map``).
"""

import re

import numpy as np

from orienmask_tf.convert.weight_map import load_checked
from orienmask_tf.convert.weight_map import read_state_dict
from orienmask_tf.convert.weight_map import torch_weight_map

LAYOUTS = ("mmdet", "dbolya", "torchvision")
# Keys of the torchvision classifier, never part of a backbone.
TORCHVISION_SKIP = re.compile(r"^fc\.")
# DCN offset convs: absent from torchvision ImageNet weights.
CONV_OFFSET = re.compile(r"\.conv_offset\.(weight|bias)$")


_DBOLYA_RULES = (
    (re.compile(r"^backbone\.layers\.(\d+)\."),
     lambda m: f"backbone.layer{int(m.group(1)) + 1}."),
    (re.compile(r"^fpn\.lat_layers\.(\d+)\."),
     lambda m: f"neck.lateral_convs.{2 - int(m.group(1))}.conv."),
    (re.compile(r"^fpn\.pred_layers\.(\d+)\."),
     lambda m: f"neck.fpn_convs.{2 - int(m.group(1))}.conv."),
    (re.compile(r"^fpn\.downsample_layers\.(\d+)\."),
     lambda m: f"neck.fpn_convs.{3 + int(m.group(1))}.conv."),
    (re.compile(r"^prediction_layers\.0\.upfeature\.0\."),
     lambda m: "bbox_head.head_convs.0.conv."),
    (re.compile(r"^prediction_layers\.0\.conf_layer\."),
     lambda m: "bbox_head.conv_cls."),
    (re.compile(r"^prediction_layers\.0\.bbox_layer\."),
     lambda m: "bbox_head.conv_reg."),
    (re.compile(r"^prediction_layers\.0\.mask_layer\."),
     lambda m: "bbox_head.conv_coeff."),
    (re.compile(r"^proto_net\.(\d+)\."),
     lambda m: f"mask_head.protonet.{m.group(1)}."),
    (re.compile(r"^semantic_seg_conv\."), lambda m: "segm_head.segm_conv."),
)


def dbolya_key(key):
    """dbolya YOLACT key -> mmdet key (unchanged if no rule applies)."""
    for pattern, repl in _DBOLYA_RULES:
        new, count = pattern.subn(repl, key, count=1)
        if count:
            return new
    return key


def _roll_background_last(array, num_classes_with_bg):
    """Per anchor, class channels ``[bg, fg0..]`` -> ``[fg0.., bg]`` (dim 0)."""
    array = np.asarray(array)
    anchors = array.shape[0] // num_classes_with_bg
    grouped = array.reshape((anchors, num_classes_with_bg) + array.shape[1:])
    rolled = np.concatenate([grouped[:, 1:], grouped[:, :1]], axis=1)
    return rolled.reshape(array.shape)


def dbolya_to_mmdet(state_dict, num_classes=80):
    """Rename a dbolya state_dict to mmdet keys and reorder class channels."""
    out = {}
    for key, value in state_dict.items():
        new = dbolya_key(key)
        if new.startswith("bbox_head.conv_cls."):
            value = _roll_background_last(value, num_classes + 1)
        out[new] = value
    return out


def guess_layout(state_dict):
    """``"mmdet"``, ``"dbolya"`` or ``"torchvision"`` from the key names."""
    keys = list(state_dict)
    if any(k.startswith(("neck.", "bbox_head.")) for k in keys):
        return "mmdet"
    if any(k.startswith(("fpn.", "prediction_layers.", "proto_net."))
           or k.startswith("backbone.layers.") for k in keys):
        return "dbolya"
    if any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    return "mmdet"


def convert_state_dict(model, state_dict, layout="auto", skip_keys=None,
                       source="checkpoint"):
    """Write a YOLACT / ResNet state_dict into ``model`` (strict, atomic).

    Args:
        model: a ``Yolact`` whose architecture matches the checkpoint.
        state_dict: ``{key: np.ndarray}`` (see ``load_state_dict``).
        layout: ``"mmdet"``, ``"dbolya"``, ``"torchvision"`` (backbone
            only; ``fc.*`` is dropped) or ``"auto"`` (``guess_layout``).
        skip_keys: optional regex of keys deliberately ignored.
        source: file name for error messages.

    Returns:
        dict with ``layout``, ``part``, ``assigned`` and ``skipped``.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key
            (in the checkpoint's own names where renamed); nothing is
            written to the model then.
    """
    if layout == "auto":
        layout = guess_layout(state_dict)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or 'auto', "
                         f"got {layout!r}")
    pattern = re.compile(skip_keys) if skip_keys else None
    skipped = sorted(k for k in state_dict if (pattern and pattern.search(k))
                     or (layout == "torchvision"
                         and TORCHVISION_SKIP.search(k)))
    entries = {k: v for k, v in state_dict.items() if k not in skipped}
    origin = {k: k for k in entries}
    if layout == "dbolya":
        num_classes = getattr(model, "num_classes", 80)
        renamed = dbolya_to_mmdet(entries, num_classes)
        origin = {dbolya_key(k): k for k in entries}
        entries = renamed
    part = "backbone" if layout == "torchvision" else "full"
    slots, bn_counters = torch_weight_map(model, part)
    zeroed = []
    if layout == "torchvision":
        zeroed = [k for k in slots if CONV_OFFSET.search(k)
                  and k not in entries]
    zero_slots = [slots.pop(k) for k in zeroed]
    load_checked(slots, bn_counters, entries, source,
                 f"{layout} YOLACT ({part}, "
                 f"{getattr(model, 'num_classes', '?')} classes, "
                 f"{getattr(model, 'num_anchors', '?')} anchors)", origin)
    for slot in zero_slots:
        slot.variable.assign(np.zeros(slot.variable.shape,
                                      slot.variable.dtype))
    return {"layout": layout, "part": part, "assigned": len(slots),
            "skipped": skipped, "zeroed": sorted(zeroed)}


def state_dict_from_model(model, part="full"):
    """The model as an mmdet state_dict (``num_batches_tracked`` as zeros)."""
    return read_state_dict(*torch_weight_map(model, part))


__all__ = ["convert_state_dict", "dbolya_key", "dbolya_to_mmdet",
           "guess_layout", "state_dict_from_model", "torch_weight_map"]
