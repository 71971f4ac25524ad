"""SavedModel for TF Serving: ``saved_models/<model_name>/<version>/``.

Signatures (``saved_model_cli show --all`` lists them):

* ``serving_default``: ``images`` uint8 ``[batch, height, width, channels]``
  (any size; 1, 3 or 4 channels) -> ``boxes`` (original pixels, x1 y1 x2
  y2), ``scores``, ``classes``, ``num_detections``, ``masks`` (uint8 at the
  network input resolution); network + decoding run XLA-compiled. Rows are
  the detections scoring >= the export's ``score_threshold``, padded to the
  largest count in the batch.
* ``serve_jpeg``: ``images`` string ``[batch]`` of encoded JPEG/PNG bytes ->
  the same outputs.
* ``serve_raw``: ``images`` float32 ``[batch, H, W, 3]`` in [0, 1] -> the raw
  network outputs (OrienMask: ``box_s32`` ... ``orien_s8``; YOLACT:
  ``cls_score_l0`` ... ``coeff_pred_l4`` and ``protos``, the normalisation
  applied inside, the training-only ``segm`` left out). Images of another
  size or channel count are an ``InvalidArgumentError`` naming ``[batch,
  H, W, 3]`` (the declared shape alone is not enforced when called).

The model may be the network of any family (its serving adapter says what
``anchors`` and ``decode_kwargs`` are); the signatures are the same for all.
"""

import json
import os

import keras
import tensorflow as tf

from orienmask_tf.export.serving import InferenceModel


def export_saved_model(model, image_size, anchors, decode_kwargs, export_dir,
                       metadata=None, score_threshold=0.0):
    """Write the serving SavedModel to ``export_dir`` (a ``<version>`` folder).

    ``score_threshold``: detections below it are dropped by the end-to-end
    signatures (0 keeps all, as for COCO evaluation; serving to people
    usually wants ~0.3, which also keeps REST responses small).
    ``metadata`` (e.g. the experiment config) is written next to it as
    ``assets.extra/orienmask.json``, which TF Serving ignores.
    """
    height, width = image_size
    inference = InferenceModel(model, image_size, anchors, decode_kwargs,
                               jit_compile=True,
                               score_threshold=score_threshold)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default", inference.detect_uint8,
        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8,
                                       name="images")])
    archive.add_endpoint(
        "serve_jpeg", inference.detect_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_raw(images):  # other sizes: InvalidArgument naming (H, W)
        return inference.raw(inference.check_input_size(images))

    archive.add_endpoint(
        "serve_raw", serve_raw,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32,
                                       name="images")])
    archive.write_out(export_dir, verbose=False)
    if metadata is not None:
        extra = os.path.join(export_dir, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, "orienmask.json"), "w") as f:
            json.dump(metadata, f, indent=2)
    return export_dir


def next_version(model_dir):
    """TF Serving versions are integer folder names; return the next one."""
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] \
        if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1
