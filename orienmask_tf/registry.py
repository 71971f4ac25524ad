# SPDX-License-Identifier: Apache-2.0
"""Model families: what each architecture tells the shared code.

A family is one folder under ``orienmask_tf/families/`` whose ``__init__``
calls ``register(SomeFamily())``. The shared rooms (config, data pipeline,
training, inference, export, CLI) never ask "which network is this?": they
call ``get(config.model.architecture)`` or ``family_of(network)`` and use the
answers below. Adding a family is one folder plus its ``register`` call;
``families()`` discovers every folder, so nothing else changes.

Family ``__init__`` modules must stay light (no TensorFlow import): the
methods import their family's modules when called.
"""

import dataclasses
import importlib
import pkgutil

_REGISTRY = {}
_DISCOVERED = False


class Family:
    """The questions the shared code asks a model family.

    Class attributes:
        name: the ``model.architecture`` value naming the family.
        display_name: how people write it (``"OrienMask"``).
        summary: one line for ``orienmask-tf info`` and ``presets()``.

    Config (``orienmask_tf.config``):
        ``defaults()`` -> dict of ``Experiment`` field values (its ``model``,
        ``loss``, ``decode``, ``targets``, ``anchors``, ``train``, ``data``
        sections and ``name`` / ``image_size``); ``absent_keys`` -> for
        top-level sections this family does not have (``None`` in its
        defaults), what to set instead (words the error);
        ``validate(config)`` raises ``ConfigError`` naming the key.

    Everything else takes an ``Experiment`` of this family:
        ``network_class()``, ``build_network(config, image_shape)``,
        ``model_kwargs(config)``, ``anchor_array(config)``,
        ``inference_args(config)`` -> ``(anchors, decode_kwargs)``,
        ``make_encoder(config, orien_dtype)`` (targets inside ``tf.data``),
        ``make_transform(config, training)`` (numpy augmentation recipe),
        ``make_loss(config)`` -> an object with ``item_names`` and
        ``loss_items(y, y_pred) -> (items, total)``,
        ``make_adapter(network, image_size, anchors, decode_kwargs)`` (the
        serving adapter: ``normalize``, ``raw_outputs``, ``decode``),
        ``convert_checkpoint(network, state_dict, official_config, config,
        part=, layout=, skip_keys=, source=)`` -> report dict (``network``,
        ``part``, ``assigned``, ``skipped``, optional ``notes``),
        ``state_dict_from_model(network)``, ``describe(config, image_size)``
        -> ``{"anchors", "model", "input", "anchor_line"}`` for ``info``,
        ``anchor_layout(config)`` -> ``AnchorLayout`` and
        ``with_anchors(data, anchors)`` -> the YAML dict ``data`` with
        fitted anchors (``orienmask-tf anchors``; ``ValueError`` where the
        layout cannot take fitted anchors).
    """

    name = ""
    display_name = ""
    summary = ""
    absent_keys = {}
    # The family of ``Experiment()`` and of a config naming none.
    default = False
    # The family's smallest shipped preset (narrow, shallow; CPU tests and
    # smoke runs); the shared contract tests build every family from it.
    tiny_preset = ""
    # Every tiny preset of the family (variants too); the contract tests
    # run on each. Default: ``(tiny_preset,)``.
    test_presets = ()

    def __repr__(self):
        return f"<family {self.name}>"

    # The methods below are documented in the class docstring; each family
    # implements all of them.
    def defaults(self):
        raise NotImplementedError

    def validate(self, config):
        raise NotImplementedError

    def network_class(self):
        raise NotImplementedError

    def build_network(self, config, image_shape=(None, None, 3)):
        return self.network_class()(**self.model_kwargs(config),
                                    image_shape=image_shape, name=config.name)

    def model_kwargs(self, config):
        raise NotImplementedError

    def anchor_array(self, config):
        raise NotImplementedError

    def inference_args(self, config):
        raise NotImplementedError

    def make_encoder(self, config, orien_dtype="float32"):
        raise NotImplementedError

    def make_transform(self, config, training):
        raise NotImplementedError

    def make_loss(self, config):
        raise NotImplementedError

    def make_adapter(self, network, image_size, anchors, decode_kwargs):
        raise NotImplementedError

    def convert_checkpoint(self, network, state_dict, official_config=None,
                           config=None, **options):
        raise NotImplementedError

    def state_dict_from_model(self, network):
        raise NotImplementedError

    def describe(self, config, image_size):
        raise NotImplementedError

    def anchor_layout(self, config):
        raise NotImplementedError

    def with_anchors(self, data, anchors):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AnchorLayout:
    """How a family lays out its anchors, for ``orienmask-tf anchors``.

    Attributes:
        kind: ``"wh"``: free ``[width, height]`` anchors in input pixels,
            ``per_scale`` of them per stride, that a k-means fit can
            replace (OrienMask's 9 YOLO anchors, 3 per stride);
            ``"scales_ratios"``: anchors generated from each level's stride,
            octave scales and aspect ratios (YOLACT): their coverage is
            measured, fitted anchors are not written.
        strides: one per scale, finest first.
        anchors: the config's anchor shapes ``((w, h), ...)`` in input
            pixels, ``per_scale`` consecutive rows per stride, finest first.
        per_scale: anchors per scale (per location for ``scales_ratios``).
        threshold: IoU a box's best anchor must reach to count as
            recallable (the best-possible recall).
        threshold_source: what ``threshold`` is (one phrase).
        resize: how the training transform maps a box to the input,
            leaving out its random crop / pad / jitter: ``"warp"``, width
            and height scaled to ``image_size`` separately.
        note: one line on the layout for the report.
    """

    kind: str
    strides: tuple
    anchors: tuple
    per_scale: int
    threshold: float
    threshold_source: str
    resize: str = "warp"
    note: str = ""


def register(family):
    """Add ``family`` (a ``Family`` instance) under ``family.name``."""
    if not isinstance(family, Family) or not family.name:
        raise TypeError(f"expected a named Family instance, got {family!r}")
    _REGISTRY[family.name] = family
    return family


def _discover():
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module("orienmask_tf.families")

    for module in sorted(m.name for m in pkgutil.iter_modules(
            package.__path__) if m.ispkg):
        importlib.import_module(f"{package.__name__}.{module}")
    _DISCOVERED = True


def names():
    """Registered family names, sorted."""
    _discover()
    return tuple(sorted(_REGISTRY))


def get(name):
    """The family registered as ``name`` (``model.architecture``)."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model family {name!r}; expected one of "
                         f"{list(names())}")
    return _REGISTRY[name]


def default_family():
    """The family marked ``default = True``."""
    _discover()
    marked = [f for f in _REGISTRY.values() if f.default]
    if len(marked) != 1:
        raise RuntimeError(f"expected one default family, got {marked}")
    return marked[0]


def family_of(network):
    """The family whose network class ``network`` is an instance of."""
    _discover()
    for family in _REGISTRY.values():
        if isinstance(network, family.network_class()):
            return family
    raise ValueError(f"{type(network).__name__} is not the network of any "
                     f"model family ({', '.join(names())})")
