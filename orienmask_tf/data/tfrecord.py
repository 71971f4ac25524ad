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

Nothing is used half-written: shards are written under temporary names
(``...tfrecord.tmp-<pid>``, which no reader picks up) and renamed when all
are complete; ``{prefix}-manifest.json`` (each shard's name, record count,
size and SHA-256) is written last, atomically. A rerun deletes the old
manifest before touching any shard. Readers (``record_files``, used by
``data.pipeline``) refuse a shard that no manifest lists, or whose size
differs from it, with a one-line ``TFRecordError`` naming the folder.
"""

import glob
import hashlib
import json
import os
import re

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


MANIFEST_FORMAT = 1
_SHARD = re.compile(r"(.*)-(\d{5})-of-(\d{5})\.tfrecord")


class TFRecordError(ValueError):
    """TFRecord shards that are not a complete ``prepare-data`` output."""


def manifest_path(prefix):
    return f"{prefix}-manifest.json"


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def write_tfrecords(coco, prefix, num_shards=8, verify=True, progress=False):
    """Write ``coco`` (a ``CocoDataset``) as ``num_shards`` TFRecord files
    (``progress``: a bar on stderr, one step per image), then the
    manifest; an error leaves no shard of this call under a final name
    and no manifest.

    Images that cannot be read or decoded raise ``CocoError`` (naming the
    file) under ``coco.on_error == "raise"``, else are skipped and counted
    in ``coco.skipped``.

    Returns:
        ``{"files": [...], "images": written, "skipped": n,
        "manifest": path}``.
    """
    prefix = os.fspath(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    num_shards = max(1, min(int(num_shards), max(len(coco), 1)))
    files = [f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord"
             for i in range(num_shards)]
    # The old shards of this prefix stop being usable before any changes.
    if os.path.exists(manifest_path(prefix)):
        os.remove(manifest_path(prefix))
    temps = [f"{f}.tmp-{os.getpid()}" for f in files]
    writers = [tf.io.TFRecordWriter(f) for f in temps]
    counts = [0] * num_shards
    written = skipped = 0
    complete = False
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
            counts[k % num_shards] += 1
            written += 1
        for writer in writers:
            writer.close()
        shards = []
        for final, tmp, count in zip(files, temps, counts):
            with open(tmp, "rb") as stream:
                os.fsync(stream.fileno())
            shards.append({"file": os.path.basename(final), "records": count,
                           "bytes": os.path.getsize(tmp),
                           "sha256": _sha256_file(tmp)})
        for final, tmp in zip(files, temps):
            os.replace(tmp, final)
        complete = True
    finally:
        for writer in writers:
            writer.close()
        if not complete:
            for tmp in temps:
                if os.path.exists(tmp):
                    os.remove(tmp)
    # Shards of an earlier run with another shard count would be globbed
    # with these: they are no longer listed anywhere, delete them.
    for stale in glob.glob(glob.escape(prefix) + "-?????-of-?????.tfrecord"):
        if stale not in files:
            os.remove(stale)
    categories = f"{prefix}-categories.json"
    _write_atomic(categories, json.dumps({
        "category_ids": coco.category_ids, "class_names": coco.class_names,
        "annotation_file": coco.annotation_file}))
    _write_atomic(manifest_path(prefix), json.dumps({
        "format": MANIFEST_FORMAT, "shards": shards, "images": written,
        "skipped": skipped, "categories": os.path.basename(categories),
        "annotation_file": coco.annotation_file}, indent=1))
    return {"files": files, "images": written, "skipped": skipped,
            "manifest": manifest_path(prefix)}


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


def read_manifest(prefix):
    """The manifest of the shards ``prefix-*`` as ``{file name: entry}``.

    Raises:
        TFRecordError: missing or unreadable (the shards may be partial).
    """
    path = manifest_path(prefix)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as stream:
            manifest = json.load(stream)
        shards = {entry["file"]: entry for entry in manifest["shards"]}
    except FileNotFoundError:
        raise TFRecordError(
            f"{folder}: the shards {os.path.basename(prefix)}-* have no "
            f"prepare-data manifest ({os.path.basename(path)}): they may be "
            "partial (prepare-data did not finish); run prepare-data again"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise TFRecordError(f"{folder}: unreadable manifest "
                            f"{os.path.basename(path)} ({error}); run "
                            "prepare-data again") from None
    return shards


def check_shards(files, checksums=False):
    """Refuse shards that are not a complete ``prepare-data`` output:
    each must be listed in its prefix's manifest with the same size
    (``checksums``: and SHA-256), and every shard a manifest lists must be
    there.

    Raises:
        TFRecordError: one line naming the folder and the shard.
    """
    manifests = {}
    for path in files:
        folder = os.path.dirname(os.path.abspath(path))
        name = os.path.basename(path)
        match = _SHARD.fullmatch(path)
        if not match:
            raise TFRecordError(
                f"{folder}: {name} is not a prepare-data shard (expected "
                "PREFIX-NNNNN-of-NNNNN.tfrecord with PREFIX-manifest.json)")
        prefix = match.group(1)
        if prefix not in manifests:
            manifests[prefix] = read_manifest(prefix)
            for listed, entry in manifests[prefix].items():
                other = os.path.join(os.path.dirname(path), listed)
                if not os.path.exists(other):
                    raise TFRecordError(
                        f"{folder}: {listed}, listed in "
                        f"{os.path.basename(manifest_path(prefix))}, is "
                        "missing; run prepare-data again")
        entry = manifests[prefix].get(name)
        if entry is None:
            raise TFRecordError(
                f"{folder}: {name} is not in "
                f"{os.path.basename(manifest_path(prefix))} (left from "
                "another prepare-data run?); run prepare-data again")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise TFRecordError(
                f"{folder}: {name} has {size} bytes, its manifest says "
                f"{entry['bytes']} (truncated or changed); run prepare-data "
                "again")
        if checksums and _sha256_file(path) != entry["sha256"]:
            raise TFRecordError(f"{folder}: {name} does not match its "
                                "SHA-256 in the manifest; run prepare-data "
                                "again")


def record_files(pattern):
    """The shards matching ``pattern`` (a glob), sorted, after
    ``check_shards``."""
    files = sorted(glob.glob(os.fspath(pattern)))
    files = [f for f in files if f.endswith(".tfrecord")]
    if not files:
        raise ValueError(f"no TFRecord files match {pattern!r}")
    check_shards(files)
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
