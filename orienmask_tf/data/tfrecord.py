"""COCO -> sharded TFRecords (``orienmask-tf prepare-data``) and back.

One ``tf.train.Example`` per image keeps the original encoded file bytes
(no re-encoding) and one compressed COCO RLE per annotation, so reading a
shard gives exactly the raw example of ``coco.CocoDataset.load_example``::

    image/encoded   bytes      image/id      int64
    image/height    int64      image/width   int64
    image/filename  bytes
    object/rle      bytes[]    compressed RLE counts, size = (height, width)
    object/label    int64[]    contiguous label
    object/is_crowd int64[]    crowd annotations become the ignore region
    object/ann_id   int64[]

Shards are ``{prefix}-{i:05d}-of-{n:05d}.tfrecord`` (image ``k`` goes to
shard ``k % n``), plus ``{prefix}-categories.json`` with the category ids
and names. ``prepare-data`` decodes every image once (``verify``), so a
corrupt file fails (or is skipped) before training, not hours into it.
"""

import glob
import json
import os

import numpy as np
import tensorflow as tf
from pycocotools import mask as mask_utils

from orienmask_tf.data import coco as coco_lib
from orienmask_tf.progress import bar


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(
        value=[int(v) for v in values]))


def example_proto(record, image_bytes):
    """``tf.train.Example`` of one checked ``CocoDataset`` record."""
    height, width = record["height"], record["width"]
    rles, labels, crowd, ann_ids = [], [], [], []
    for ann in record["annotations"]:
        rle = coco_lib.segmentation_to_rle(ann["segmentation"], height, width)
        rles.append(rle["counts"])
        labels.append(ann["label"])
        crowd.append(int(bool(ann.get("iscrowd", 0))))
        ann_ids.append(ann.get("id", -1))
    feature = {
        "image/encoded": _bytes([image_bytes]),
        "image/id": _ints([record["image_id"]]),
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/filename": _bytes([record["file_name"].encode("utf-8")]),
        "object/rle": _bytes(rles),
        "object/label": _ints(labels),
        "object/is_crowd": _ints(crowd),
        "object/ann_id": _ints(ann_ids),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(coco, prefix, num_shards=8, verify=True, progress=False):
    """Write ``coco`` (a ``CocoDataset``) as ``num_shards`` TFRecord files
    (``progress``: a bar on stderr, one step per image).

    Images that cannot be read or decoded raise ``CocoError`` (naming the
    file) under ``coco.on_error == "raise"``, else are skipped and counted
    in ``coco.skipped``.

    Returns:
        ``{"files": [...], "images": written, "skipped": n}``.
    """
    prefix = os.fspath(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    num_shards = max(1, min(int(num_shards), max(len(coco), 1)))
    files = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord"
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    written = skipped = 0
    try:
        for k, record in enumerate(bar(coco.records, desc=os.path.basename(
                prefix), unit="img", enabled=progress)):
            try:
                with open(record["path"], "rb") as stream:
                    data = stream.read()
                if verify:
                    coco_lib.decode_image(data, record["path"],
                                          (record["height"], record["width"]))
            except (OSError, coco_lib.CocoError) as error:
                message = (str(error) if isinstance(error, coco_lib.CocoError)
                           else f"{record['path']}: cannot read image")
                coco_lib._report(coco.on_error, coco._counter,
                                 "corrupt_image", message)
                skipped += 1
                continue
            proto = example_proto(record, data)
            writers[k % num_shards].write(proto.SerializeToString())
            written += 1
    finally:
        for writer in writers:
            writer.close()
    with open(f"{prefix}-categories.json", "w") as stream:
        json.dump({"category_ids": coco.category_ids,
                   "class_names": coco.class_names,
                   "annotation_file": coco.annotation_file}, stream)
    return {"files": files, "images": written, "skipped": skipped}


FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.int64),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "object/rle": tf.io.VarLenFeature(tf.string),
    "object/label": tf.io.VarLenFeature(tf.int64),
    "object/is_crowd": tf.io.VarLenFeature(tf.int64),
    "object/ann_id": tf.io.VarLenFeature(tf.int64),
}


def record_files(pattern):
    files = sorted(glob.glob(os.fspath(pattern)))
    files = [f for f in files if f.endswith(".tfrecord")]
    if not files:
        raise ValueError(f"no TFRecord files match {pattern!r}")
    return files


def record_dataset(pattern):
    """Serialized examples of the shards matching ``pattern``, in order."""
    return tf.data.TFRecordDataset(record_files(pattern))


def raw_example(encoded, height, width, filename, rles, labels, crowd,
                image_id):
    """Numpy raw example (as ``CocoDataset.load_example``) from parsed
    record fields; raises ``CocoError`` for an undecodable image."""
    height, width = int(height), int(width)
    name = filename.decode("utf-8") if isinstance(filename, bytes) \
        else str(filename)
    image = coco_lib.decode_image(encoded, name, (height, width))
    crowd = np.asarray(crowd, bool)
    if len(rles):
        stack = mask_utils.decode([{"size": [height, width], "counts": r}
                                   for r in rles])  # (H, W, N)
    else:
        stack = np.zeros((height, width, 0), np.uint8)
    masks = np.moveaxis(stack[..., ~crowd], -1, 0)
    crowd_mask = (stack[..., crowd].max(-1) if crowd.any()
                  else np.zeros((height, width), np.uint8))
    keep = masks.reshape(len(masks), -1).any(1) if len(masks) else \
        np.zeros((0,), bool)
    return {"image": image, "masks": masks[keep],
            "classes": np.asarray(labels, np.int32)[~crowd][keep],
            "crowd_mask": crowd_mask, "image_id": int(image_id),
            "file_name": name}


def parse_record(serialized):
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return {k: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor)
                else v) for k, v in parsed.items()}
