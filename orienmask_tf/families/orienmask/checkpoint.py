"""Official OrienMask state_dict keys <-> Keras weights of ``OrienMask``.

The mapping rules (layer named by PyTorch module path, kernel transposes,
BatchNorm statistics) live in :mod:`orienmask_tf.convert.weight_map`; this
module adds what is OrienMask-specific: the whole-model / backbone-only
choice and the check of the official training config.
"""

import re

import numpy as np

from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.convert.weight_map import load_checked
from orienmask_tf.convert.weight_map import read_state_dict
from orienmask_tf.convert.weight_map import torch_weight_map
from orienmask_tf.families.orienmask.network import OFFICIAL_CLASS_NAMES


def guess_part(state_dict):
    """``"full"`` if any key starts with ``backbone.``, else ``"backbone"``."""
    return "full" if any(k.startswith("backbone.") for k in state_dict) else "backbone"


def convert_state_dict(model, state_dict, part="auto", skip_keys=None,
                       source="checkpoint"):
    """Write an official state_dict into ``model``; strict and all-or-nothing.

    Args:
        model: an ``OrienMask`` whose architecture matches the checkpoint.
        state_dict: ``{key: np.ndarray}`` (see ``load_state_dict``).
        part: ``"full"``, ``"backbone"`` or ``"auto"`` (``guess_part``).
        skip_keys: optional regex; matching keys are deliberately ignored.
        source: name of the file, used in error messages.

    Returns:
        dict with ``part``, ``assigned`` (number of tensors written) and
        ``skipped`` (keys ignored through ``skip_keys``).

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped key;
            nothing is written to the model in that case.
    """
    if part == "auto":
        part = guess_part(state_dict)
    slots, bn_counters = torch_weight_map(model, part)
    pattern = re.compile(skip_keys) if skip_keys else None
    skipped = sorted(k for k in state_dict if pattern and pattern.search(k))
    entries = {k: v for k, v in state_dict.items() if k not in skipped}
    load_checked(slots, bn_counters, entries, source,
                 f"{part} OrienMask ({getattr(model, 'variant', '?')}, "
                 f"{getattr(model, 'num_classes', '?')} classes)")
    return {"part": part, "assigned": len(slots), "skipped": skipped}


def _anchor_name(anchors):
    """``"yolov3"`` / ``"yolov4"`` when ``anchors`` is that preset, else
    the pairs as a list."""
    from orienmask_tf.families.orienmask.anchors import ANCHOR_PRESETS

    array = np.asarray(anchors, np.float64)
    for name, preset in ANCHOR_PRESETS.items():
        if array.shape == np.shape(preset) and np.allclose(array, preset):
            return name
    return array.tolist()


def check_official_anchors(config, anchors, source="checkpoint"):
    """The anchors of the official training ``config`` (``loss.anchors``
    and ``postprocess.anchors``, ``[width, height]`` pixels) against the
    ``(9, 2)`` ``anchors`` of the user's config.

    The weights do not depend on the anchors, so a YOLOv3-anchor checkpoint
    (``orienmask_yolo_coco_544``) would otherwise convert silently into an
    anchor4 config and decode every box with the wrong priors.

    Raises:
        CheckpointError: naming ``anchors`` and the setting that matches.
    """
    if not isinstance(config, dict) or anchors is None:
        return
    ours = np.asarray(anchors, np.float64)
    for section in ("loss", "postprocess"):
        part = config.get(section)
        theirs = part.get("anchors") if isinstance(part, dict) else None
        if theirs is None:
            continue
        try:
            array = np.asarray(theirs, np.float64)
        except (TypeError, ValueError):
            continue
        if array.shape == ours.shape and np.allclose(array, ours):
            continue
        name = _anchor_name(array)
        setting = (f"anchors={name}" if isinstance(name, str)
                   else f"anchors: {name}")
        raise CheckpointError(
            f"{source}: was trained with {section}.anchors {name} but the "
            f"config has anchors {_anchor_name(ours)}; set "
            f"{setting} (the weights convert either way, the decoded boxes "
            "would not)")


def check_official_config(model, config, source="checkpoint", anchors=None):
    """Compare the ``config`` saved by the official trainer with ``model``.

    Catches a checkpoint of the other variant or another class count with a
    message in terms of the official names, before any key is compared, and
    with ``anchors`` (the user's ``(9, 2)`` anchors) anchors other than the
    checkpoint's (``check_official_anchors``).
    """
    model_config = (config or {}).get("model") if isinstance(config, dict) else None
    if not isinstance(model_config, dict):
        check_official_anchors(config, anchors, source)
        return
    expected = OFFICIAL_CLASS_NAMES[model.variant]
    found = model_config.get("type")
    if found is not None and found != expected:
        variant = {v: k for k, v in OFFICIAL_CLASS_NAMES.items()}.get(found, "?")
        raise CheckpointError(
            f"{source}: was trained as {found} (variant {variant!r}) but the "
            f"config builds {expected} (variant {model.variant!r}); set "
            f"model.variant={variant}")
    for key, ours in (("num_classes", model.num_classes),
                      ("num_anchors", model.num_anchors)):
        theirs = model_config.get(key)
        if theirs is not None and int(theirs) != ours:
            raise CheckpointError(
                f"{source}: was trained with {key}={theirs} but the config "
                f"builds {key}={ours}; set model.{key}={theirs}")
    check_official_anchors(config, anchors, source)


def state_dict_from_model(model, part="full"):
    """Read the model back as an official state_dict ``{key: np.ndarray}``.

    BatchNorm ``num_batches_tracked`` entries are written as int64 zeros so
    the result loads into the official model with ``strict=True``.
    """
    return read_state_dict(*torch_weight_map(model, part))
