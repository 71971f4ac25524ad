"""COCO instances reader: JSON -> checked image records -> raw examples.

``load_coco`` reads an ``instances_*.json`` file (polygons, compressed and
uncompressed RLE, ``iscrowd``), checks every image and annotation once, and
returns a :class:`CocoDataset`. ``CocoDataset.load_example(i)`` decodes one
image (OpenCV: grayscale, RGBA, CMYK and EXIF-rotated JPEGs become RGB
uint8) and rasterizes its annotations through pycocotools into a raw
example::

    {"image": (H, W, 3) uint8 RGB, "masks": (N, H, W) uint8,
     "classes": (N,) int32 contiguous labels, "ann_ids": (N,) int64,
     "crowd_mask": (H, W) uint8 union of the iscrowd regions,
     "image_id": int, "file_name": str}

Crowd annotations are never instances: they become ``crowd_mask`` (an
ignore region). Bad input is handled by ``on_error``:

* ``"raise"`` (default): :class:`CocoError` naming the file and the
  annotation id, at load time (before training starts) where it can be
  checked there: malformed JSON, unknown category, zero-area polygon,
  annotation outside the image, missing image file; a corrupt image fails
  when it is first decoded, naming the file.
* ``"skip"``: the annotation (or the image) is dropped, counted in
  ``CocoDataset.skipped`` and logged once per kind.

A malformed JSON file (not parseable, or without ``images``,
``annotations`` and ``categories`` lists) is always an error.
"""

import collections
import copy
import json
import logging
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from orienmask_tf.paths import kind_error

logger = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
# Annotations may overflow the image slightly (COCO has such polygons); the
# overflow is clipped by rasterization. Beyond this many pixels the
# annotation is treated as "outside the image".
OUTSIDE_TOLERANCE = 2.0


class CocoError(ValueError):
    """Bad COCO input; the message names the file and the annotation id."""


class SkipCounter:
    """Counts skipped inputs by kind; logs the first of each kind."""

    def __init__(self, source):
        self.source = source
        self.counts = collections.Counter()

    def skip(self, kind, message):
        if not self.counts[kind]:
            logger.warning("%s: skipping (%s) %s [further %r skips are only "
                           "counted]", self.source, kind, message, kind)
        self.counts[kind] += 1

    def summary(self):
        if not self.counts:
            return f"{self.source}: nothing skipped"
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return f"{self.source}: skipped {parts}"


def _report(policy, counter, kind, message):
    if policy == "raise":
        raise CocoError(message)
    counter.skip(kind, message)


def decode_image(data, name="<bytes>", expected_size=None):
    """Encoded image bytes -> ``(H, W, 3)`` uint8 RGB.

    OpenCV's ``IMREAD_COLOR`` turns grayscale, RGBA (alpha dropped), 16-bit
    and CMYK/YCCK JPEGs into 8-bit colour and applies the EXIF orientation.
    COCO annotations refer to the size recorded in the JSON; when the
    EXIF-rotated image does not have that size but the stored pixels do,
    the stored pixels are used (the annotation frame wins).

    Raises:
        CocoError: naming ``name`` when the bytes are not a decodable image
            or its size matches neither orientation of ``expected_size``.
    """
    buffer = np.frombuffer(bytes(data), np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise CocoError(f"{name}: cannot decode image (corrupt, truncated or "
                        "not an image)")
    if expected_size is not None and image.shape[:2] != tuple(expected_size):
        raw = cv2.imdecode(buffer, cv2.IMREAD_COLOR
                           | cv2.IMREAD_IGNORE_ORIENTATION)
        if raw is None or raw.shape[:2] != tuple(expected_size):
            raise CocoError(
                f"{name}: decoded size {list(image.shape[:2])} (height, "
                f"width) differs from the annotation's {list(expected_size)}")
        image = raw
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path, expected_size=None):
    """Read and decode an image file; a missing file is a ``CocoError``."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise CocoError(f"{path}: cannot read image ({error.strerror})")
    return decode_image(data, path, expected_size)


def segmentation_to_rle(segmentation, height, width):
    """COCO segmentation (polygons, RLE with list or string counts) -> one
    compressed RLE of size ``(height, width)``."""
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(
            [[float(v) for v in p] for p in segmentation], height, width)
        return mask_utils.merge(rles)
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def segmentation_to_mask(segmentation, height, width):
    """COCO segmentation -> ``(height, width)`` uint8 {0, 1} mask."""
    return mask_utils.decode(segmentation_to_rle(segmentation, height, width))


def _polygon_area(points):
    x, y = points[0::2], points[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def check_annotation(ann, height, width):
    """Why ``ann`` is unusable, as ``(kind, reason)``, or None when fine.

    ``kind`` is one of ``malformed``, ``zero_area``, ``outside_image``.
    A ``bbox`` must be four finite numbers ``[x, y, w, h]`` with a positive
    size inside the image (masks are the ground truth here, but evaluation
    scores boxes against it).
    """
    problem = _check_bbox(ann.get("bbox"), height, width)
    if problem is not None:
        return problem
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        if not seg:
            return "zero_area", "empty polygon list"
        boxes, area = [], 0.0
        for polygon in seg:
            try:
                points = np.asarray(polygon, np.float64).reshape(-1)
            except (TypeError, ValueError):
                return "malformed", "polygon coordinates are not numbers"
            if points.size % 2 or not np.all(np.isfinite(points)):
                return "malformed", "polygon with an odd number of " \
                                    "coordinates or non-finite values"
            if points.size < 6:
                return "zero_area", f"polygon with {points.size // 2} points"
            area += _polygon_area(points)
            boxes.append((points[0::2].min(), points[1::2].min(),
                          points[0::2].max(), points[1::2].max()))
        if area <= 0.0:
            return "zero_area", "polygon of zero area"
        x0 = min(b[0] for b in boxes)
        y0 = min(b[1] for b in boxes)
        x1 = max(b[2] for b in boxes)
        y1 = max(b[3] for b in boxes)
        tol = OUTSIDE_TOLERANCE
        if (x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol
                or x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height):
            return "outside_image", (
                f"polygon spans x [{x0:g}, {x1:g}], y [{y0:g}, {y1:g}], "
                f"image is {width}x{height}")
        return None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            return "outside_image", (f"RLE size {list(seg['size'])} differs "
                                     f"from the image's {[height, width]}")
        try:
            area = float(mask_utils.area(
                segmentation_to_rle(seg, height, width)))
        except Exception as error:  # pycocotools raises bare Exceptions
            return "malformed", f"unreadable RLE ({error})"
        if area <= 0:
            return "zero_area", "RLE of zero area"
        return None
    return "malformed", "segmentation is neither polygons nor RLE"


def _check_bbox(bbox, height, width):
    if bbox is None:
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return "malformed", f"bbox {bbox!r} is not [x, y, width, height]"
    if not np.all(np.isfinite([x, y, w, h])):
        return "malformed", f"bbox {bbox!r} has non-finite values"
    if w <= 0 or h <= 0:
        return "zero_area", f"bbox {bbox!r} has a width or height <= 0"
    tol = OUTSIDE_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return "outside_image", (f"bbox {[x, y, w, h]} leaves the "
                                 f"{width}x{height} image")
    return None


class CocoDataset:
    """Checked COCO images and annotations (built by :func:`load_coco`).

    Attributes:
        records: list of dicts ``{image_id, file_name, path, height, width,
            annotations}``; each annotation is the JSON dict plus
            ``label`` (contiguous class index).
        category_ids: sorted COCO category ids; label ``i`` is
            ``category_ids[i]``.
        class_names: names in label order.
        skipped: ``collections.Counter`` of skipped inputs by kind
            (``unknown_category``, ``zero_area``, ``outside_image``,
            ``malformed``, ``missing_image``, ``corrupt_image``).
        num_empty: images kept without any non-crowd instance.
        annotation_file: the source JSON path.
    """

    def __init__(self, records, categories, annotation_file, on_error,
                 counter):
        self.records = records
        self.category_ids = [c["id"] for c in categories]
        self.class_names = [c.get("name", str(c["id"])) for c in categories]
        self.category_to_label = {c: i for i, c in enumerate(self.category_ids)}
        self.annotation_file = annotation_file
        self.on_error = on_error
        self._counter = counter
        self.num_empty = sum(
            1 for r in records
            if not any(not a.get("iscrowd", 0) for a in r["annotations"]))

    @property
    def skipped(self):
        return self._counter.counts

    @property
    def num_classes(self):
        return len(self.category_ids)

    def __len__(self):
        return len(self.records)

    def summary(self):
        return self._counter.summary()

    def with_annotations_only(self):
        """The images that have at least one annotation (this dataset when
        all have): mmdet ``CocoDataset(filter_empty_gt=True)`` in training,
        whose ``_filter_imgs`` keeps an image with any annotation of a known
        category, crowd ones included (such an image trains with no
        instances). Sharing records and the skip counter."""
        kept = [r for r in self.records if r["annotations"]]
        if len(kept) == len(self.records):
            return self
        subset = copy.copy(self)
        subset.records = kept
        subset.num_empty = sum(
            1 for r in kept
            if not any(not a.get("iscrowd", 0) for a in r["annotations"]))
        return subset

    def read_image(self, index):
        record = self.records[index]
        return read_image(record["path"], (record["height"], record["width"]))

    def load_example(self, index, image=None):
        """Raw example ``index`` (see the module docstring).

        A corrupt image raises :class:`CocoError` with ``on_error="raise"``;
        with ``"skip"`` it is counted and None is returned.
        """
        record = self.records[index]
        if image is None:
            try:
                image = self.read_image(index)
            except CocoError as error:
                _report(self.on_error, self._counter, "corrupt_image",
                        str(error))
                return None
        return annotations_to_example(record, image)


def annotations_to_example(record, image):
    """Rasterize the checked annotations of ``record`` for ``image``.

    ``masks`` and ``crowd_mask`` are views of one ``(N + 1, H, W)`` array
    (crowd plane last), which ``augment`` then uses without a copy.
    """
    height, width = record["height"], record["width"]
    rles, classes, ann_ids, crowd = [], [], [], []
    for ann in record["annotations"]:
        rles.append(segmentation_to_rle(ann["segmentation"], height, width))
        crowd.append(bool(ann.get("iscrowd", 0)))
        classes.append(ann["label"])
        ann_ids.append(ann.get("id", -1))
    crowd = np.asarray(crowd, bool)
    if rles:
        decoded = mask_utils.decode(rles)  # (H, W, K), column-major
        areas = mask_utils.area(rles)
    else:
        decoded = np.zeros((height, width, 0), np.uint8)
        areas = np.zeros((0,))
    # Instances clipped to nothing (overflowing polygons) are not instances.
    instance = np.flatnonzero(~crowd & (areas > 0))
    planes = np.empty((len(instance) + 1, height, width), np.uint8)
    for k, i in enumerate(instance):
        planes[k] = decoded[..., i]
    if crowd.any():
        planes[-1] = decoded[..., crowd].max(-1)
    else:
        planes[-1] = 0
    return {"image": image, "masks": planes[:-1],
            "classes": np.asarray(classes, np.int32)[instance],
            "ann_ids": np.asarray(ann_ids, np.int64)[instance],
            "crowd_mask": planes[-1], "image_id": record["image_id"],
            "file_name": record["file_name"]}


def _require_list(data, key, path):
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        raise CocoError(f"{path}: malformed COCO file: {key!r} must be a "
                        "list")
    return value


def load_coco(annotation_file, image_dir, on_error="raise",
              check_files=True, skip_empty=False):
    """Read and check a COCO instances file.

    Args:
        annotation_file: ``instances_*.json`` path.
        image_dir: folder the ``file_name`` entries are relative to.
        on_error: ``"raise"`` or ``"skip"`` (module docstring).
        check_files: check that every image file exists (one ``stat`` each).
        skip_empty: drop images without any non-crowd instance (kept by
            default, as the official training list keeps them).

    Returns:
        :class:`CocoDataset`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got "
                         f"{on_error!r}")
    path = os.fspath(annotation_file)
    # A folder given for the JSON, a file or nothing for the image folder
    # (a missing JSON: "cannot read" below).
    problem = kind_error(path, "if_exists_file", "annotation file",
                         "a COCO instances JSON file")
    if problem is None and check_files and os.path.exists(path):
        problem = kind_error(image_dir, "folder", "image folder",
                             f"the folder of the images of {path}")
    if problem is not None:
        raise CocoError(problem)
    try:
        with open(path, "rb") as stream:
            data = json.loads(stream.read())
    except OSError as error:
        raise CocoError(f"{path}: cannot read annotation file "
                        f"({error.strerror})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CocoError(f"{path}: malformed JSON ({error})") from None
    images = _require_list(data, "images", path)
    annotations = _require_list(data, "annotations", path)
    categories = _require_list(data, "categories", path)
    counter = SkipCounter(path)

    try:
        categories = sorted(categories, key=lambda c: c["id"])
        category_to_label = {c["id"]: i for i, c in enumerate(categories)}
    except (KeyError, TypeError):
        raise CocoError(f"{path}: malformed COCO file: every category "
                        "needs an 'id'") from None

    records, by_id = [], {}
    for image in images:
        try:
            image_id = image["id"]
            record = {"image_id": image_id, "file_name": image["file_name"],
                      "height": int(image["height"]),
                      "width": int(image["width"]), "annotations": []}
        except (KeyError, TypeError, ValueError):
            raise CocoError(f"{path}: malformed image entry {image!r}: needs "
                            "id, file_name, height, width") from None
        if image_id in by_id:
            raise CocoError(f"{path}: duplicate image id {image_id}")
        record["path"] = os.path.join(os.fspath(image_dir),
                                      record["file_name"])
        by_id[image_id] = record
        records.append(record)

    for ann in annotations:
        ann_id = ann.get("id") if isinstance(ann, dict) else None
        where = f"{path}: annotation id {ann_id}"
        if not isinstance(ann, dict) or "image_id" not in ann:
            _report(on_error, counter, "malformed",
                    f"{where}: not an annotation object with an image_id")
            continue
        record = by_id.get(ann["image_id"])
        if record is None:
            _report(on_error, counter, "unknown_image",
                    f"{where}: unknown image_id {ann['image_id']}")
            continue
        where += f" (image {record['file_name']})"
        if ann.get("category_id") not in category_to_label:
            _report(on_error, counter, "unknown_category",
                    f"{where}: unknown category_id {ann.get('category_id')!r}")
            continue
        problem = check_annotation(ann, record["height"], record["width"])
        if problem is not None:
            _report(on_error, counter, problem[0], f"{where}: {problem[1]}")
            continue
        ann = dict(ann, label=category_to_label[ann["category_id"]])
        record["annotations"].append(ann)

    kept = []
    for record in records:
        if check_files and not os.path.isfile(record["path"]):
            _report(on_error, counter, "missing_image",
                    f"{record['path']}: image file not found (image id "
                    f"{record['image_id']})")
            continue
        if skip_empty and not any(not a.get("iscrowd", 0)
                                  for a in record["annotations"]):
            continue
        kept.append(record)
    dataset = CocoDataset(kept, categories, path, on_error, counter)
    if counter.counts:
        logger.info(counter.summary())
    return dataset
