"""COCO data: reader, synthetic shapes, joint augmentation, tf.data pipeline.

``coco``, ``shapes`` and ``augment`` are numpy / OpenCV only; ``pipeline``
and ``tfrecord`` import TensorFlow (loaded on first use of their names).
"""

from orienmask_tf.data.coco import CocoDataset
from orienmask_tf.data.coco import CocoError
from orienmask_tf.data.coco import load_coco
from orienmask_tf.data.shapes import make_shapes

_LAZY = {"build_dataset": "pipeline", "write_tfrecords": "tfrecord"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"orienmask_tf.data.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'orienmask_tf.data' has no attribute "
                         f"{name!r}")


__all__ = ["CocoDataset", "CocoError", "load_coco", "make_shapes",
           "build_dataset", "write_tfrecords"]
