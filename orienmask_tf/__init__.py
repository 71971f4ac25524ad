# SPDX-License-Identifier: Apache-2.0
"""orienmask-tf: real-time instance segmentation model zoo in Keras 3 / TF 2.

    import orienmask_tf as om
    om.presets()                                  # shipped configs by name
    seg = om.from_preset("yolact_tiny")           # fresh weights
    seg = om.load("runs/quickstart/model.keras")  # a trained model
    results = seg.predict("image.jpg")            # boxes, scores, names, masks
    seg.evaluate("instances_val.json", "val/")
    seg.export("onnx")

Importing the package is cheap; TensorFlow loads on first use.
"""

from orienmask_tf.version import __version__

_LAZY = {
    "Segmenter": "orienmask_tf.inference.segmenter",
    "Result": "orienmask_tf.inference.segmenter",
    "presets": "orienmask_tf.inference.segmenter",
    "load_config": "orienmask_tf.config",
    "train": "orienmask_tf.training.fit",
}


def load(path, config=None, overrides=()):
    """A ``Segmenter`` from a ``.keras`` file (it carries its experiment);
    ``config`` (a YAML path) replaces that experiment and ``overrides``
    (``"section.key=value"``) apply on top (see ``Segmenter.load``)."""
    from orienmask_tf.inference.segmenter import Segmenter

    return Segmenter.load(path, config=config, overrides=overrides)


def from_preset(name, weights=None, overrides=()):
    """A ``Segmenter`` built from shipped preset ``name`` (``presets()``),
    with fresh weights or those of the ``.keras`` file ``weights``."""
    from orienmask_tf.inference.segmenter import Segmenter

    return Segmenter.from_preset(name, weights=weights, overrides=overrides)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orienmask_tf' has no attribute {name!r}")


__all__ = ["Result", "Segmenter", "from_preset", "load",
           "load_config", "presets", "train", "__version__"]
