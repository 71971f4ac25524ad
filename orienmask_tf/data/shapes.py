"""Synthetic COCO-format dataset of textured shapes (``make-shapes``).

Each image has a smooth textured background and a Poisson number of
textured shapes (five classes) drawn in random order, so later shapes
occlude earlier ones; annotations are the *visible* parts, as in COCO.
Sizes are log-uniform from a few pixels to most of the image, which gives
COCO's spread of small / medium / large objects. About one image in six
also gets a crowd region (a cluster of small blobs annotated once with
``iscrowd=1`` as uncompressed RLE). Most instances are stored as polygons,
about one in five as compressed RLE, so both paths of the reader are used.
Everything is a function of ``seed``: the same arguments write the same
bytes.

``style="simple"`` (the CPU quickstart's dataset) draws an easier variant:
1-6 flat-coloured shapes of 18-55 % of the image side, fully inside the
image, hardly overlapping (at most 10 % of either shape's area), ellipses
clearly elongated (so that no ellipse is a circle), no crowd regions. A
small network learns it in minutes; the default ``"coco"`` style is the
hard, COCO-like one.

Layout written under ``out``::

    train/000000.jpg ...   val/000000.jpg ...
    annotations/instances_train.json   annotations/instances_val.json
"""

import json
import os

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CATEGORIES = (
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    # Ids with gaps, as COCO's, so the id -> label mapping is exercised.
    {"id": 5, "name": "ellipse", "supercategory": "shape"},
    {"id": 8, "name": "star", "supercategory": "shape"},
)
SPLITS = ("train", "val")
STYLES = ("coco", "simple")
MIN_VISIBLE_AREA = 6
SIMPLE_SIZE_RANGE = (0.18, 0.55)  # fraction of min(height, width)
SIMPLE_MAX_OVERLAP = 0.1  # of either shape's area
SIMPLE_MAX_INSTANCES = 6


def _texture(rng, height, width):
    """Two colours mixed by a random stripe or checker pattern plus noise."""
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    period = rng.uniform(3, 16)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    if rng.random() < 0.5:
        pattern = (np.floor(u) % 2).astype(np.float32)
    else:
        v = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
        pattern = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    tex = c0 + (c1 - c0) * pattern[..., None]
    return tex + rng.normal(0, 8, (height, width, 3)).astype(np.float32)


def _background(rng, height, width):
    grid = rng.uniform(40, 215, (4, 4, 3)).astype(np.float32)
    smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return smooth + rng.normal(0, 12, (height, width, 3)).astype(np.float32)


def _shape_mask(rng, label, height, width, size, inside=False):
    """``(H, W)`` uint8 mask of one shape of class ``label`` and scale size.

    ``inside``: the centre keeps the shape within the image and ellipses
    have an aspect ratio of at least 1.6 (the simple style).
    """
    mask = np.zeros((height, width), np.uint8)
    name = CATEGORIES[label]["name"]
    if inside:
        angle = rng.uniform(0, 360)
        aspect = (rng.uniform(1.6, 2.6) ** rng.choice([-1.0, 1.0])
                  if name == "ellipse" else rng.uniform(0.5, 2.0))
        w, h = size * np.sqrt(aspect), size / np.sqrt(aspect)
        margin = 0.5 * max(np.hypot(w, h) if name in ("ellipse", "rectangle")
                           else size, 1.0)  # radius of a bounding circle
        cx = rng.uniform(margin, max(margin, width - margin))
        cy = rng.uniform(margin, max(margin, height - margin))
    else:
        cx = rng.uniform(-0.1, 1.1) * width
        cy = rng.uniform(-0.1, 1.1) * height
        angle = rng.uniform(0, 360)
        aspect = rng.uniform(0.5, 2.0)
        w, h = size * np.sqrt(aspect), size / np.sqrt(aspect)
    center = (int(round(cx * 16)), int(round(cy * 16)))
    if name == "circle":
        cv2.circle(mask, center, int(size / 2 * 16), 1, -1, cv2.LINE_8, 4)
        return mask
    if name == "ellipse":
        axes = (max(1, int(w / 2 * 16)), max(1, int(h / 2 * 16)))
        cv2.ellipse(mask, center, axes, angle, 0, 360, 1, -1, cv2.LINE_8, 4)
        return mask
    if name == "rectangle":
        points = cv2.boxPoints(((cx, cy), (w, h), angle))
    elif name == "triangle":
        t = (np.deg2rad(angle) + np.array([0, 2.1, 4.2])
             + rng.uniform(-0.3, 0.3, 3))
        points = np.stack([cx + size / 2 * np.cos(t),
                           cy + size / 2 * np.sin(t)], 1)
    else:  # star
        t = np.deg2rad(angle) + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2, size / 4, size / 2)
        points = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1,
                 cv2.LINE_8, 4)
    return mask


def _polygons(mask):
    """Visible mask -> COCO polygons (pixel-centre vertices, area > 0)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        points = contour.reshape(-1, 2).astype(np.float64) + 0.5
        if len(points) < 3:
            continue
        x, y = points[:, 0], points[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        if area >= 1.0:
            polygons.append([round(float(v), 2) for v in points.reshape(-1)])
    return polygons


def _uncompressed_rle(mask):
    """Column-major run lengths starting with zeros (COCO crowd format)."""
    flat = np.asfortranarray(mask).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


def _flat_colour(rng, height, width):
    """A saturated colour (HSV saturation and value >= 0.6) plus noise."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(153, 255),
                      rng.uniform(153, 255)]]], np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    return colour + rng.normal(0, 6, (height, width, 3)).astype(np.float32)


def _overlaps(mask, drawn, limit):
    """Whether ``mask`` covers more than ``limit`` of itself or of a drawn one."""
    area = mask.sum()
    for _, other, _ in drawn:
        common = np.logical_and(mask, other).sum()
        if common > limit * min(area, other.sum()):
            return True
    return False


def make_simple_image(rng, height, width, mean_instances=3.0,
                      max_instances=SIMPLE_MAX_INSTANCES):
    """One image of the simple style (see the module docstring)."""
    background = _background(rng, height, width)
    grey = background.mean(axis=-1, keepdims=True)
    image = np.clip(0.4 * background + 0.6 * grey, 70, 185)  # muted
    count = int(np.clip(rng.poisson(mean_instances), 1, max_instances))
    side = min(height, width)
    drawn = []
    for _ in range(count):
        for _attempt in range(10):
            label = int(rng.integers(len(CATEGORIES)))
            size = float(rng.uniform(*SIMPLE_SIZE_RANGE) * side)
            mask = _shape_mask(rng, label, height, width, size, inside=True)
            if mask.any() and not _overlaps(mask, drawn, SIMPLE_MAX_OVERLAP):
                break
        else:
            continue
        image = np.where(mask[..., None] > 0,
                         _flat_colour(rng, height, width), image)
        for _, other, _ in drawn:
            other &= 1 - mask
        drawn.append((label, mask, False))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, [item for item in drawn if item[1].sum() >= MIN_VISIBLE_AREA]


def make_image(rng, height, width, mean_instances=7.0, max_instances=20,
               crowd_probability=0.15):
    """One synthetic image and its visible instances (the coco style).

    Returns ``(image (H, W, 3) uint8 RGB, [(label, mask, is_crowd), ...])``.
    """
    image = _background(rng, height, width)
    count = int(min(rng.poisson(mean_instances), max_instances))
    small, large = 4.0, 0.8 * min(height, width)
    drawn = []
    for _ in range(count):
        label = int(rng.integers(len(CATEGORIES)))
        size = float(np.exp(rng.uniform(np.log(small), np.log(large))))
        mask = _shape_mask(rng, label, height, width, size)
        if not mask.any():
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        region = image[y0:y1, x0:x1]
        region[...] = np.where(mask[y0:y1, x0:x1, None] > 0,
                               _texture(rng, y1 - y0, x1 - x0), region)
        for _, other, _ in drawn:
            other &= 1 - mask
        drawn.append((label, mask, False))
    if rng.random() < crowd_probability:
        label = int(rng.integers(len(CATEGORIES)))
        crowd = np.zeros((height, width), np.uint8)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        spread = rng.uniform(0.05, 0.2) * min(height, width)
        colour = rng.uniform(0, 255, 3)
        for _ in range(int(rng.integers(5, 12))):
            x, y = rng.normal(cx, spread), rng.normal(cy, spread)
            r = max(1, int(rng.uniform(0.01, 0.04) * min(height, width)))
            cv2.circle(crowd, (int(x), int(y)), r, 1, -1)
        image = np.where(crowd[..., None] > 0, colour, image)
        for _, other, _ in drawn:
            other &= 1 - crowd
        drawn.append((label, crowd, True))
    image = np.clip(image, 0, 255).astype(np.uint8)
    kept = [(label, mask, crowd) for label, mask, crowd in drawn
            if mask.sum() >= MIN_VISIBLE_AREA]
    return image, kept


def make_split(out, split, num_images, image_size, seed, mean_instances=7.0,
               quality=90, progress=None, style="coco"):
    """Write one split; returns the path of its instances JSON."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    height, width = image_size
    split_id = SPLITS.index(split) if split in SPLITS else len(SPLITS)
    image_dir = os.path.join(out, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        rng = np.random.default_rng([seed, split_id, index])
        if style == "simple":
            image, instances = make_simple_image(rng, height, width,
                                                 mean_instances)
        else:
            image, instances = make_image(rng, height, width, mean_instances)
        file_name = f"{index:06d}.jpg"
        ok, data = cv2.imencode(".jpg", image[..., ::-1],
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"cannot encode {file_name}")
        with open(os.path.join(image_dir, file_name), "wb") as stream:
            stream.write(data.tobytes())
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name,
                       "height": height, "width": width})
        for label, mask, is_crowd in instances:
            if is_crowd:
                segmentation = _uncompressed_rle(mask)
            elif rng.random() < 0.2:
                rle = mask_utils.encode(np.asfortranarray(mask))
                segmentation = {"counts": rle["counts"].decode("ascii"),
                                "size": list(rle["size"])}
            else:
                segmentation = _polygons(mask)
                if not segmentation:
                    continue
            rle = _to_rle(segmentation, height, width)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": CATEGORIES[label]["id"],
                "segmentation": segmentation,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": int(is_crowd)})
        if progress is not None:
            progress(split, index + 1, num_images)
    data = {"info": {"description": f"orienmask-tf synthetic shapes "
                                    f"(seed {seed}, style {style})",
                     "version": "1.0"},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [dict(c) for c in CATEGORIES]}
    path = os.path.join(out, "annotations", f"instances_{split}.json")
    with open(path, "w") as stream:
        json.dump(data, stream)
    return path


def _to_rle(segmentation, height, width):
    if isinstance(segmentation, list):
        return mask_utils.merge(
            mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"counts": segmentation["counts"].encode("ascii"),
            "size": segmentation["size"]}


def make_shapes(out, num_train=64, num_val=16, image_size=(480, 640),
                seed=0, mean_instances=7.0, quality=90, progress=None,
                style="coco"):
    """Write the train and val splits; returns ``{split: json_path}``."""
    out = os.fspath(out)
    return {split: make_split(out, split, n, image_size, seed,
                              mean_instances, quality, progress, style)
            for split, n in (("train", num_train), ("val", num_val))}
