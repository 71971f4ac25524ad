"""Deployment: the shared inference graph (``serving.InferenceModel``) and
SavedModel / TFLite / ONNX writers. Submodules import TensorFlow; import
them directly (``orienmask_tf.export.saved_model``)."""
