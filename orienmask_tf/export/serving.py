"""Inference graph shared by every export format: pixels in, detections out.

``InferenceModel`` joins the Keras network, its decoder and the official
inference preprocessing (a bilinear resize of the whole image to the
network size -- no letterbox -- then the family's normalisation), and
maps boxes back to each original image. Its functions are what the
SavedModel signatures, the TFLite model and the ONNX graph are made of.

Everything that depends on the model family lives in the family's serving
adapter (``families/<name>/serving.py``, from ``Family.make_adapter``):
``normalize`` (RGB [0, 1] -> network input), ``raw_outputs`` and
``decode`` (raw outputs -> ``DETECTION_KEYS`` in the network frame).

The public functions take RGB float32 in [0, 1] (``detect``, ``raw``) or
uint8 / encoded images (``detect_uint8``, ``detect_encoded``) for every
family.
"""

import tensorflow as tf

from orienmask_tf import registry
from orienmask_tf.ops import frames

# Outputs of the end-to-end signatures (P = the largest number of kept
# detections in the batch, at most decode nms_post / max_per_img):
#   boxes           (B, P, 4) float32  x1, y1, x2, y2 in ORIGINAL image pixels
#   scores          (B, P) float32
#   classes         (B, P) int32, -1 for padding
#   num_detections  (B,) int32; rows >= num_detections are padding
#   (kept = score >= the export's score_threshold; order as decoded)
#   masks           (B, P, H, W) uint8 0/1 at the NETWORK input resolution
#                   (the whole image resized to H x W; resize a mask to the
#                   original size with nearest neighbour to overlay it)
DETECTION_KEYS = ("boxes", "scores", "classes", "num_detections", "masks")


class InferenceModel(tf.Module):
    """Network + decoding + pre/post-processing as TF functions.

    Args:
        model: the network of a registered family (weights loaded).
        image_size: network input ``(H, W)``.
        anchors, decode_kwargs: what the family's adapter takes
            (``Experiment.inference_anchors()`` / ``decode_kwargs()``;
            e.g. OrienMask's ``(9, 2)`` anchors and ``decode_orienmask``
            kwargs, YOLACT's per-level anchors and ``YolactDecoder`` kwargs).
        jit_compile: compile network + decoding with XLA (SavedModel); keep
            False for TFLite and ONNX, which cannot take XLA clusters.
        score_threshold: the end-to-end functions (``detect_uint8``,
            ``detect_encoded``) keep only detections scoring at least this
            and drop padding rows, so their outputs have a dynamic length
            (the largest count in the batch); 0 keeps every detection.
    """

    def __init__(self, model, image_size, anchors, decode_kwargs,
                 jit_compile=True, score_threshold=0.0):
        adapter = registry.family_of(model).make_adapter(
            model, image_size, anchors, decode_kwargs)
        super().__init__(name=f"{adapter.name}_inference")
        self.adapter = adapter
        self.model = model
        self.image_size = self.adapter.image_size
        self.anchors = self.adapter.anchors
        self.decode_kwargs = self.adapter.decode_kwargs
        self.num_classes = self.adapter.num_classes
        self.score_threshold = float(score_threshold)
        self._detect = tf.function(self._detect_impl, jit_compile=jit_compile)

    def _detect_impl(self, inputs):
        return self.adapter.decode(self.model(inputs, training=False))

    def normalize(self, images):
        """RGB float32 in [0, 1] -> the network's own input."""
        return self.adapter.normalize(tf.convert_to_tensor(images, tf.float32))

    def raw(self, images):
        """float32 ``(B, H, W, 3)`` in [0, 1] -> raw network outputs (those
        the decoder reads; YOLACT's training-only ``segm`` is left out)."""
        return self.adapter.raw_outputs(
            self.model(self.normalize(images), training=False))

    def check_input_size(self, images):
        """``images`` as they are if float32 ``(B, H, W, 3)`` at the network
        input size ``(H, W)``, else an ``InvalidArgumentError`` naming that
        size. A SavedModel signature does not enforce its declared input
        shape when called (TF Serving, a reloaded ``signatures[...]``), and
        the convolutions would take other sizes, giving outputs of other
        shapes or a failure deep in the graph."""
        images = tf.convert_to_tensor(images, tf.float32)
        height, width = self.image_size
        # Padded so that slicing cannot fail before the check reports.
        shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], 0)[:4]
        ok = (tf.equal(tf.rank(images), 4)
              & tf.reduce_all(tf.equal(shape[1:], [height, width, 3])))
        check = tf.debugging.Assert(ok, [
            f"images must be float32 [batch, {height}, {width}, 3], the "
            "network input size (resize first; serving_default and "
            "serve_jpeg take any size); got shape", tf.shape(images)])
        with tf.control_dependencies([check]):
            return tf.identity(images)

    def detect(self, images):
        """float32 ``(B, H, W, 3)`` in [0, 1] -> detections, network frame."""
        return self._detect(self.normalize(images))

    def detect_normalized(self, inputs):
        """Network input already normalised (what the architecture's eval
        transform yields: ``/ 255`` for OrienMask, mean / std for YOLACT)
        -> detections, network frame."""
        return self._detect(tf.convert_to_tensor(inputs, tf.float32))

    def decode_raw(self, outputs):
        """Raw network outputs (e.g. from an int8 TFLite network) -> detections."""
        outputs = {k: tf.convert_to_tensor(v, tf.float32)
                   for k, v in outputs.items()}
        return self.adapter.decode(outputs)

    def _to_original(self, detections, original_hw):
        """Scale boxes from the network frame to each image's own size
        (the whole image was resized to the network input: ``ops.frames``)."""
        info = frames.resize_image_info(original_hw, self.image_size)  # B, 6
        boxes = frames.boxes_to_original(detections["boxes"], info)
        valid = detections["classes"] >= 0
        return dict(detections, boxes=tf.where(valid[..., None], boxes, 0.0))

    def _compact(self, detections, cut=True):
        """Keep detections with score >= threshold, in their order, first;
        cut every output to the largest kept count of the batch (``cut=
        False``: keep every row, padding after the kept ones; static
        shapes, as TFLite wants them)."""
        keep = ((detections["classes"] >= 0)
                & (detections["scores"] >= self.score_threshold))
        order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
        count = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
        length = (tf.reduce_max(tf.concat([count, [0]], 0)) if cut
                  else tf.shape(detections["scores"])[1])
        out = {}
        for key in ("boxes", "scores", "classes", "masks"):
            value = tf.gather(detections[key], order, batch_dims=1)[:, :length]
            valid = tf.range(length)[None, :] < count[:, None]
            valid = tf.reshape(valid, tf.concat(
                [tf.shape(valid), tf.ones([tf.rank(value) - 2], tf.int32)], 0))
            fill = -1 if key == "classes" else 0
            out[key] = tf.where(valid, value, tf.cast(fill, value.dtype))
        out["num_detections"] = count
        return out

    def preprocess_uint8(self, images):
        """uint8 ``(B, h, w, C)``, C in {1, 3, 4} -> network input + sizes.

        Grayscale is replicated to RGB and an alpha channel dropped; any
        other channel count, rank, dtype or an empty image is an
        ``InvalidArgumentError`` naming what was expected.
        """
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype.name}")
        # Padded so that slicing cannot fail before the check below reports.
        shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], 0)[:4]
        ok = (tf.equal(tf.rank(images), 4)
              & tf.reduce_all(shape[1:3] > 0)
              & tf.reduce_any(tf.equal(shape[3], [1, 3, 4])))
        checks = [tf.debugging.Assert(ok, [
            "images must be uint8 [batch, height, width, channels] with "
            "height > 0, width > 0 and 1 (gray), 3 (RGB) or 4 (RGBA) "
            "channels; got shape", tf.shape(images)])]
        with tf.control_dependencies(checks):
            images = tf.identity(images)
        rgb = tf.cond(tf.equal(shape[3], 1),
                      lambda: tf.tile(images[..., :1], [1, 1, 1, 3]),
                      lambda: images[..., :3])
        rgb = tf.ensure_shape(rgb, [None, None, None, 3])
        return self._resize(rgb), tf.tile(shape[None, 1:3], [shape[0], 1])

    def _resize(self, rgb):
        """Pixels 0..255 -> the whole image resized (bilinear, half-pixel,
        no antialias = cv2 ``INTER_LINEAR``), scaled to [0, 1]."""
        x = tf.image.resize(tf.cast(rgb, tf.float32), self.image_size,
                            method="bilinear")
        return x / 255.0

    def decode_jpeg_batch(self, encoded):
        """``(B,)`` encoded JPEG / PNG / BMP / GIF bytes -> network input + sizes."""
        def one(data):
            image = tf.io.decode_image(data, channels=3,
                                       expand_animations=False)
            image = tf.ensure_shape(image, [None, None, 3])
            size = tf.shape(image)[:2]
            with tf.control_dependencies([tf.debugging.assert_positive(
                    size, message="decoded image has height or width 0")]):
                image = tf.identity(image)
            return self._resize(image[None])[0], size

        return tf.map_fn(
            one, encoded,
            fn_output_signature=(
                tf.TensorSpec(self.image_size + (3,), tf.float32),
                tf.TensorSpec((2,), tf.int32)))

    def detect_uint8(self, images):
        """uint8 images of any size -> detections, boxes in original pixels."""
        inputs, sizes = self.preprocess_uint8(images)
        return self._compact(self._to_original(self.detect(inputs), sizes))

    def detect_encoded(self, encoded):
        """Encoded image bytes -> detections, boxes in original pixels."""
        inputs, sizes = self.decode_jpeg_batch(encoded)
        return self._compact(self._to_original(self.detect(inputs), sizes))
