"""PyTorch state_dict keys <-> Keras weights, for models whose Keras layers
are named by PyTorch module path (OrienMask, YOLACT).

Each key ``<module>.<param>`` maps to the weight ``<param>`` of the Keras layer
named ``<module>`` (inside nested models, e.g. ``backbone``):

| PyTorch | Keras | layout |
|---|---|---|
| Conv2d ``weight`` (O, I, kh, kw) | Conv2D ``kernel`` (kh, kw, I, O) | transpose (2, 3, 1, 0) |
| Conv2d ``bias`` | Conv2D ``bias`` | same |
| BatchNorm2d ``weight`` / ``bias`` | ``gamma`` / ``beta`` | same |
| BatchNorm2d ``running_mean`` / ``running_var`` | ``moving_mean`` / ``moving_variance`` | same |
| BatchNorm2d ``num_batches_tracked`` | (none) | dropped: only used by momentum=None |

Composite layers map like torch modules with submodules: ``DeformConv2D``
(``<m>.weight`` -> ``kernel``, ``<m>.conv_offset.weight/bias``) and
``CARAFE`` (``<m>.channel_compressor.*``, ``<m>.content_encoder.*``).
"""

import re

import keras
import numpy as np

from orienmask_tf.convert.torch_checkpoint import CheckpointError

_CONV_PARAMS = {"weight": "kernel", "bias": "bias"}
_BN_PARAMS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
              "running_var": "moving_variance"}
NUM_BATCHES_TRACKED = "num_batches_tracked"
_MAX_LISTED = 20


class WeightSlot:
    """One Keras variable and how an official tensor is laid into it."""

    def __init__(self, variable, is_kernel):
        self.variable = variable
        self.is_kernel = is_kernel

    @property
    def torch_shape(self):
        shape = tuple(self.variable.shape)
        if self.is_kernel:  # (kh, kw, I, O) -> (O, I, kh, kw)
            return (shape[3], shape[2], shape[0], shape[1])
        return shape

    def from_torch(self, array):
        return np.transpose(array, (2, 3, 1, 0)) if self.is_kernel else array

    def to_torch(self, array):
        return np.transpose(array, (3, 2, 0, 1)) if self.is_kernel else array


def _walk(model, prefix):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk(layer, f"{prefix}{layer.name}.")
        else:
            yield from _walk_layer(layer, f"{prefix}{layer.name}")


def _walk_layer(layer, module):
    """A Conv2D / BatchNormalization, or a composite layer built like a
    torch module: its own ``kernel`` / ``bias`` (``<module>.weight`` /
    ``.bias``, e.g. ``DeformConv2D``) plus Conv2D / BatchNormalization /
    composite sublayers named after their torch attribute
    (``<module>.<sublayer>.*``: ``DeformConv2D.conv_offset``,
    ``CARAFE.channel_compressor``). Every weight must be covered."""
    if isinstance(layer, keras.layers.Conv2D):
        yield module, layer, _CONV_PARAMS
        return
    if isinstance(layer, keras.layers.BatchNormalization):
        yield module, layer, _BN_PARAMS
        return
    if not layer.weights:
        return
    own = {name: param for name, param in _CONV_PARAMS.items()
           if isinstance(getattr(layer, param, None), keras.Variable)}
    sublayers = [sub for sub in getattr(layer, "_layers", ()) if sub.weights]
    covered = {id(getattr(layer, param)) for param in own.values()}
    covered.update(id(w) for sub in sublayers for w in sub.weights)
    if not own and not sublayers or any(
            id(w) not in covered for w in layer.weights):
        raise TypeError(
            f"no official counterpart known for weights of layer "
            f"{module} ({type(layer).__name__})")
    if own:
        yield module, layer, own
    for sub in sublayers:
        yield from _walk_layer(sub, f"{module}.{sub.name}")


def torch_weight_map(model, part="full"):
    """Map every official key to the Keras variable it fills.

    Args:
        model: an ``OrienMask``.
        part: ``"full"`` for a whole-model state_dict (``backbone.conv1...``,
            ``neck32...``) or ``"backbone"`` for a Darknet-53 state_dict such
            as ``pretrained_darknet53.pth`` (``conv1...`` without prefix).

    Returns:
        ``(slots, bn_counters)``: ``{key: WeightSlot}`` in model order, and the
        set of ``num_batches_tracked`` keys that are accepted and dropped.
    """
    if part == "full":
        root, prefix = model, ""
    elif part == "backbone":
        root, prefix = model.get_layer("backbone"), ""
    else:
        raise ValueError(f"part must be 'full' or 'backbone', got {part!r}")
    slots, bn_counters = {}, set()
    for module, layer, params in _walk(root, prefix):
        for torch_name, keras_name in params.items():
            variable = getattr(layer, keras_name, None)
            if variable is None:
                continue
            slots[f"{module}.{torch_name}"] = WeightSlot(
                variable, is_kernel=keras_name == "kernel")
        if params is _BN_PARAMS:
            bn_counters.add(f"{module}.{NUM_BATCHES_TRACKED}")
    return slots, bn_counters


def _listing(title, items):
    items = sorted(items)
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"  {title} ({len(items)}): {shown}{more}"


# Last module names of an image classifier's output layer (torchvision
# ResNet ``fc``, timm ``classifier`` / ``head.fc``, Darknet ``linear``).
CLASSIFIER_MODULES = ("fc", "classifier", "linear", "last_linear", "logits")


def classifier_hint(unexpected):
    """When the only problem is unexpected keys that all belong to an image
    classifier's output layer (an ImageNet backbone), the ``--skip-keys``
    regex that leaves them out; else ``""``."""
    modules = sorted({key.rsplit(".", 1)[0] for key in unexpected})
    if not modules or not all(m.rsplit(".", 1)[-1] in CLASSIFIER_MODULES
                              for m in modules):
        return ""
    pattern = "^(" + "|".join(re.escape(m) for m in modules) + ")\\."
    return (f"\n  the unexpected keys are an image classifier's output layer,"
            f" which this network does not have: pass --skip-keys "
            f"'{pattern}' to leave them out")


def load_checked(slots, bn_counters, entries, source, description,
                 origin=None):
    """Check ``entries`` against ``slots``, then write them; all or nothing.

    Args:
        slots, bn_counters: from ``torch_weight_map``.
        entries: ``{key: array}`` in the model's key names.
        source: file name for the message; ``description``: what the model
            is (``"full OrienMask (fpn_plus, 80 classes)"``).
        origin: ``{model key: key as written in the file}`` for messages
            when the keys were renamed (default: identity).

    Raises:
        CheckpointError: listing every missing, unexpected, mis-shaped and
            non-float key; nothing is written then.
    """
    origin = origin or {}
    name = lambda k: origin.get(k, k)  # noqa: E731
    missing = [k for k in slots if k not in entries]
    unexpected = [name(k) for k in entries
                  if k not in slots and k not in bn_counters]
    mis_shaped = [
        f"{name(k)} {tuple(np.shape(entries[k]))} != expected "
        f"{slots[k].torch_shape}"
        for k in slots if k in entries
        and tuple(np.shape(entries[k])) != slots[k].torch_shape
    ]
    bad_dtype = [
        f"{name(k)} ({np.asarray(entries[k]).dtype})" for k in slots
        if k in entries
        and not np.issubdtype(np.asarray(entries[k]).dtype, np.floating)
    ]
    problems = [
        _listing(title, items) for title, items in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("wrong shapes", mis_shaped), ("non-float tensors", bad_dtype))
        if items
    ]
    if problems:
        hint = classifier_hint(unexpected) if len(problems) == 1 else ""
        raise CheckpointError(
            f"{source}: does not match the {description}; nothing was "
            "loaded:\n" + "\n".join(problems) + hint)
    for key, slot in slots.items():
        value = slot.from_torch(np.asarray(entries[key], dtype=np.float32))
        slot.variable.assign(value.astype(slot.variable.dtype))
    return len(slots)


def read_state_dict(slots, bn_counters):
    """The weights as a state_dict; ``num_batches_tracked`` written as int64
    zeros so the result loads into the PyTorch model with ``strict=True``."""
    state_dict = {}
    for key, slot in slots.items():
        state_dict[key] = slot.to_torch(keras.ops.convert_to_numpy(slot.variable))
        module = key.rsplit(".", 1)[0]
        counter = f"{module}.{NUM_BATCHES_TRACKED}"
        if key.endswith("running_var") and counter in bn_counters:
            state_dict[counter] = np.zeros((), dtype=np.int64)
    return state_dict
