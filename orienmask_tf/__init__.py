"""orienmask-tf: real-time instance segmentation (OrienMask) in Keras 3 / TensorFlow 2."""

__version__ = "0.1.0"
