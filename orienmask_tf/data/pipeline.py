"""``build_dataset``: COCO (JSON or TFRecords) -> batched, static-shape tf.data.

One element per image flows through::

    index -> [shard] -> [shuffle, repeat] -> enumerate -> parse (numpy /
    OpenCV inside tf.numpy_function: decode, rasterize, augment, pad)
    -> [filter skipped] -> ensure_shape -> encoder(gt) -> batch -> prefetch

With ``data.skip_empty`` (training only; the YOLACT default, as mmdet's
``filter_empty_gt``) images without any annotation are left out of the
index first (``CocoDataset.with_annotations_only``; TFRecords: examples
without objects).

The parsed ground truth of one example is a dict of fixed shapes
(``M = max_instances``, ``(H, W) = config.image_size``)::

    boxes          (M, 4) float32 normalized (cx, cy, w, h); zeros = pad
    boxes_xyxy     (M, 4) float32 pixels (x0, y0, x1, y1) of the input
    classes        (M,) int32 contiguous label, -1 = pad
    masks          (M, H, W) uint8 {0, 1}
    num_instances  () int32
    crowd_mask     (H, W) uint8: iscrowd regions (ignore, never instances)
    image_info     (6,) float32 [scale_y, scale_x, pad_top, pad_left,
                   original_h, original_w] (see ``augment``)
    image_id       () int64

This is the per-example format ``OrienMaskTargetEncoder`` expects; when an
``encoder`` is given it runs inside ``Dataset.map`` and the dataset yields
``(images, encoder(gt))``, otherwise ``(images, gt)``. The encoder gets
``masks`` unpadded, ``(num_instances, H, W)`` (every other key padded):
padding 100 masks of 544x544 costs 30 MB of writes per example, and
encoders only read ``masks[:num_instances]``. Augmentation of
element ``k`` of input pipeline ``p`` uses the generator
``numpy.random.default_rng([seed, p, k])``: with ``deterministic=True``
(and a seeded shuffle) two runs give identical batches.
"""

import contextlib
import dataclasses
import logging
import re

import numpy as np
import tensorflow as tf

from orienmask_tf.data import coco as coco_lib
from orienmask_tf.data import tfrecord

logger = logging.getLogger(__name__)

GT_KEYS = ("boxes", "boxes_xyxy", "classes", "masks", "num_instances",
           "crowd_mask", "image_info", "image_id")


def _autotune(value):
    return tf.data.AUTOTUNE if value is None or value < 0 else int(value)


def pad_example(out, max_instances):
    """Pad (or truncate) a transform output to ``max_instances`` instances.

    Returns the tuple in ``GT_KEYS`` order minus ``image_id`` (numpy).
    Masks are only truncated, never padded here: ``(n, H, W)``. Padding
    100 masks of 544x544 would write 30 MB per example; it is done in TF
    only when the padded masks are batched (no encoder).
    """
    n = min(len(out["classes"]), max_instances)
    height, width = out["image"].shape[:2]
    masks = np.ascontiguousarray(out["masks"][:n], np.uint8)
    boxes = np.zeros((max_instances, 4), np.float32)
    boxes[:n] = out["boxes"][:n]
    xyxy = np.zeros((max_instances, 4), np.float32)
    xyxy[:n] = out["boxes_xyxy"][:n]
    classes = np.full((max_instances,), -1, np.int32)
    classes[:n] = out["classes"][:n]
    return (out["image"].astype(np.float32, copy=False), boxes, xyxy,
            classes, masks, np.int32(n), out["crowd_mask"],
            out["info"].astype(np.float32))


class ExampleParser:
    """Decode + rasterize + augment + pad one example (numpy side).

    Args:
        transform: an ``augment`` transform.
        image_size: ``(H, W)`` output size.
        max_instances: M.
        seed: base seed; element ``k`` of pipeline ``p`` uses
            ``default_rng([seed, p, k])``.
        pipeline_id: input pipeline index (sharding).
        on_error: ``"raise"`` or ``"skip"`` for undecodable images.
    """

    def __init__(self, transform, image_size, max_instances, seed=0,
                 pipeline_id=0, on_error="raise"):
        self.transform = transform
        self.image_size = tuple(int(v) for v in image_size)
        self.max_instances = int(max_instances)
        self.seed = int(seed)
        self.pipeline_id = int(pipeline_id)
        self.on_error = on_error
        self.truncated = 0
        self.skipped = 0

    def empty(self):
        h, w = self.image_size
        m = self.max_instances
        return (np.zeros((h, w, 3), np.float32), np.zeros((m, 4), np.float32),
                np.zeros((m, 4), np.float32), np.full((m,), -1, np.int32),
                np.zeros((0, h, w), np.uint8), np.int32(0),
                np.zeros((h, w), np.uint8), np.zeros((6,), np.float32))

    def __call__(self, example, counter):
        """``example``: raw example dict (``coco``) or None (skipped)."""
        if example is None:
            self.skipped += 1
            return self.empty() + (np.int64(-1), False)
        rng = np.random.default_rng([self.seed, self.pipeline_id,
                                     int(counter)])
        out = self.transform(example["image"], example["masks"],
                             example["classes"], example["crowd_mask"], rng)
        if len(out["classes"]) > self.max_instances:
            if not self.truncated:
                logger.warning(
                    "image %s has %d instances, more than max_instances=%d: "
                    "keeping the first %d (further truncations are counted)",
                    example.get("file_name"), len(out["classes"]),
                    self.max_instances, self.max_instances)
            self.truncated += 1
        return pad_example(out, self.max_instances) + (
            np.int64(example["image_id"]), True)


def _tout():
    return (tf.float32, tf.float32, tf.float32, tf.int32, tf.uint8, tf.int32,
            tf.uint8, tf.float32, tf.int64, tf.bool)


def _to_dict(values, image_size, max_instances, pad_masks=True):
    h, w = image_size
    m = max_instances
    shapes = ((h, w, 3), (m, 4), (m, 4), (m,), (None, h, w), (), (h, w),
              (6,), ())
    image, *gt = [tf.ensure_shape(v, s) for v, s in zip(values, shapes)]
    keys = ("boxes", "boxes_xyxy", "classes", "masks", "num_instances",
            "crowd_mask", "image_info", "image_id")
    gt = dict(zip(keys, gt))
    if pad_masks:
        masks = gt["masks"]
        masks = tf.pad(masks, [[0, m - tf.shape(masks)[0]], [0, 0], [0, 0]])
        gt["masks"] = tf.ensure_shape(masks, (m, h, w))
    return image, gt


def _split_paths(data, split):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return (getattr(data, f"{split}_annotations"),
            getattr(data, f"{split}_images"),
            getattr(data, f"{split}_tfrecords"))


def build_dataset(config, split, input_context=None, encoder=None, data=None,
                  batch_size=None, training=None, coco=None, start_batch=0,
                  transform=None):
    """Batched ``tf.data.Dataset`` of ``(images, gt or targets)``.

    Args:
        config: an ``Experiment`` (``image_size``, ``train.batch_size``,
            and ``data`` when the config has that section).
        split: ``"train"`` or ``"val"``.
        input_context: ``tf.distribute.InputContext``: the dataset is
            sharded by input pipeline and batched per replica.
        encoder: callable ``gt -> targets`` run inside ``Dataset.map``
            (e.g. ``config.family.make_encoder(config)``); None yields the
            padded gt.
        data: a ``DataConfig`` (default: ``config.data`` or defaults).
        batch_size: global batch size (default ``config.train.batch_size``).
        training: augment, shuffle, repeat and drop the remainder (default:
            ``split == "train"``).
        coco: an already loaded ``coco.CocoDataset`` (skips the JSON read).
        transform: the numpy transform of each example (default: the
            model family's recipe, ``config.family.make_transform``).
        start_batch: training only: begin the stream after this many
            batches (a resumed run passes its global step, so that it sees
            the batches -- order and augmentation -- the uninterrupted run
            would have seen). Only example indices are skipped, nothing is
            decoded; with ``data.on_error: skip`` a dropped example shifts
            the stream by one.

    Returns:
        ``tf.data.Dataset``; in training the batch dimension is static.
    """
    data = data or config.data
    training = split == "train" if training is None else training
    image_size = tuple(int(v) for v in config.image_size)
    global_batch = int(batch_size or config.train.batch_size)
    num_pipelines, pipeline_id = 1, 0
    batch = global_batch
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        batch = input_context.get_per_replica_batch_size(global_batch)
    if transform is None:
        transform = config.family.make_transform(
            dataclasses.replace(config, data=data), training)
    parser = ExampleParser(transform, image_size, data.max_instances,
                           seed=data.seed, pipeline_id=pipeline_id,
                           on_error=data.on_error)
    annotations, images, tfrecords = _split_paths(data, split)
    parallel = _autotune(data.num_parallel_calls)

    if coco is None and not tfrecords:
        if not annotations:
            raise ValueError(f"no {split} data: set data.{split}_annotations "
                             f"and data.{split}_images, or "
                             f"data.{split}_tfrecords")
        coco = coco_lib.load_coco(annotations, images, on_error=data.on_error)
    # data.skip_empty (mmdet filter_empty_gt): training only, before the
    # shuffle, so resuming (start_batch) skips the same filtered stream.
    skip_empty = training and bool(getattr(data, "skip_empty", False))
    if coco is not None:
        if skip_empty:
            coco = coco.with_annotations_only()
            if not len(coco):
                raise ValueError(
                    f"data.skip_empty: no {split} image has an annotation "
                    f"({coco.annotation_file})")
        ds = tf.data.Dataset.range(len(coco))
        load = _json_loader(coco, parser)
    else:
        ds = tfrecord.record_dataset(tfrecords)
        if skip_empty:
            ds = ds.filter(_has_objects)
        load = _record_loader(parser, data.on_error)
    if num_pipelines > 1:
        ds = ds.shard(num_pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(data.shuffle_buffer, seed=data.seed,
                        reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()  # the counter seeds each example's augmentation
    if start_batch:
        if not training:
            raise ValueError("start_batch is for the training stream")
        ds = ds.skip(int(start_batch) * batch)
    ds = ds.map(load, num_parallel_calls=parallel,
                deterministic=data.deterministic)
    ds = ds.filter(lambda *values: values[-1])

    def finish(*values):
        image, gt = _to_dict(values[:-1], image_size, data.max_instances,
                             pad_masks=encoder is None)
        return (image, gt) if encoder is None else (image, encoder(gt))

    ds = ds.map(finish, num_parallel_calls=parallel,
                deterministic=data.deterministic)
    ds = ds.batch(batch, drop_remainder=training)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(data.deterministic)
    return ds.with_options(options)


_COCO_ERROR = re.compile(r"CocoError: ([^\n]+)")


def coco_error_in(error):
    """The ``coco.CocoError`` that a ``tf.errors.OpError`` from a dataset
    iterator carries (raised inside ``tf.numpy_function``, it reaches
    Python as an ``InvalidArgumentError`` / ``UnknownError`` whose message
    holds its text and both tracebacks), or None."""
    match = _COCO_ERROR.search(getattr(error, "message", None) or str(error))
    return coco_lib.CocoError(match.group(1).strip()) if match else None


@contextlib.contextmanager
def data_errors():
    """Around code that iterates a ``build_dataset`` dataset (``fit``, an
    evaluation loop): a ``CocoError`` raised inside tf.data (an
    undecodable image under ``data.on_error: raise``) comes out as that
    ``CocoError`` (one line naming the file), not a TensorFlow error."""
    try:
        yield
    except tf.errors.OpError as error:
        found = coco_error_in(error)
        if found is None:
            raise
        raise found from None


def _has_objects(serialized):
    """A TFRecord example with at least one object (crowd ones included)."""
    labels = tf.io.parse_single_example(
        serialized, {"object/label": tfrecord.FEATURES["object/label"]})
    return tf.size(labels["object/label"].values) > 0


def _json_loader(coco, parser):
    def py_fn(index, counter):
        return parser(coco.load_example(int(index)), counter)

    def load(counter, index):
        values = tf.numpy_function(py_fn, [index, counter], _tout(),
                                   stateful=False)
        return tuple(values)

    return load


def _record_loader(parser, on_error="raise"):
    """Map function ``(counter, serialized) -> parser outputs``."""

    def py_fn(encoded, height, width, filename, rles, labels, crowd,
              image_id, counter):
        try:
            example = tfrecord.raw_example(encoded, height, width, filename,
                                           rles, labels, crowd, image_id)
        except coco_lib.CocoError:
            if on_error == "raise":
                raise
            example = None
        return parser(example, counter)

    def load(counter, serialized):
        f = tfrecord.parse_record(serialized)
        values = tf.numpy_function(
            py_fn, [f["image/encoded"], f["image/height"], f["image/width"],
                    f["image/filename"], f["object/rle"], f["object/label"],
                    f["object/is_crowd"], f["image/id"], counter], _tout(),
            stateful=False)
        return tuple(values)

    return load
