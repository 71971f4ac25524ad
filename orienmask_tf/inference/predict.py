"""``predict``: draw OrienMask / YOLACT detections (masks, boxes, class
names, scores) on image files; optionally write them as COCO results JSON."""

import glob
import json
import os

import cv2
import numpy as np

from orienmask_tf.data.coco import read_image
from orienmask_tf.eval.coco_eval import encode_mask
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.inference.drawing import draw_detections
from orienmask_tf.ops.frames import to_original_frame
from orienmask_tf.progress import bar

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(spec):
    """A file, a folder (its images, sorted) or a glob pattern -> paths."""
    if os.path.isdir(spec):
        paths = [os.path.join(spec, n) for n in sorted(os.listdir(spec))]
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = sorted(glob.glob(spec, recursive=True))
    paths = [p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS)
             and os.path.isfile(p)]
    if not paths:
        raise ValueError(f"--images {spec}: no .jpg/.jpeg/.png/.bmp image "
                         "(expected a file, a folder or a glob pattern)")
    return paths


def match_coco_images(annotation_file, paths, num_classes=None):
    """Ids of ``paths`` in a COCO annotation file, for scorable results.

    Images are matched by file name (the base name of ``file_name``);
    label ``k`` is the ``k``-th category in increasing id, as
    ``data.coco.load_coco`` numbers them for training and ``evaluate``.

    Returns:
        ``(image_ids, category_ids, class_names)``: one image id per path,
        the category id and the name of each label.

    Raises:
        ValueError: naming an image the file does not hold (or holds twice
            under the same name), or a file whose category count is not the
            model's ``num_classes``.
    """
    try:
        with open(annotation_file, encoding="utf-8") as stream:
            data = json.load(stream)
        categories = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
    except OSError as error:
        raise ValueError(f"--annotations {annotation_file}: cannot read "
                         f"({error.strerror})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--annotations {annotation_file}: not a COCO "
                         f"instances file ({error!r})") from None
    if num_classes is not None and len(categories) != num_classes:
        raise ValueError(
            f"--annotations {annotation_file}: {len(categories)} categories, "
            f"but the model has {num_classes} classes (label k is the k-th "
            "category in increasing id)")
    by_name = {}
    for image in images:
        by_name.setdefault(os.path.basename(image["file_name"]), []).append(
            image["id"])
    image_ids = []
    for path in paths:
        name = os.path.basename(path)
        ids = by_name.get(name, [])
        if len(ids) != 1:
            raise ValueError(
                f"{path}: {'not in' if not ids else 'ambiguous in'} "
                f"{annotation_file} ({len(ids)} images with file_name "
                f"{name!r}); --coco-json needs each image's COCO id")
        image_ids.append(ids[0])
    return (image_ids, [c["id"] for c in categories],
            tuple(c.get("name", str(c["id"])) for c in categories))


def predict_images(network, config, paths, output_dir, class_names=(),
                   score_threshold=0.3, coco_json=None, jit_compile=True,
                   image_ids=None, category_ids=None, progress=False):
    """Detect on every image of ``paths``; write ``output_dir/<name>`` with
    the detections drawn (same format as the input; PNG for BMP) and, if
    ``coco_json`` is set, the detections there as a COCO results list (each
    record with ``bbox`` and ``segmentation``, plus ``file_name`` and
    ``category_name``).

    Each image goes through the evaluation transform (the whole image
    resized to the network input, OpenCV bilinear, as ``evaluate`` feeds
    it) and its detections are mapped back as ``evaluate`` maps them
    (boxes rescaled; masks resized bilinearly and thresholded at 0.5), so
    with ``image_ids`` and ``category_ids`` (``match_coco_images``) the
    results score as ``evaluate --model`` on the same images.

    Args:
        image_ids: COCO id of each path (default: its position).
        category_ids: COCO category id of each label (default: the label).
        progress: a bar on stderr, one step per image.

    Returns ``[(input path, output path, number of drawn detections)]``.
    """
    anchors, decode_kwargs = config.family.inference_args(config)
    inference = InferenceModel(network, config.image_size, anchors,
                               decode_kwargs, jit_compile=jit_compile)
    input_h, input_w = config.image_size
    os.makedirs(output_dir, exist_ok=True)
    written, results = [], []
    for position, path in enumerate(bar(paths, desc="predict", unit="img",
                                        enabled=progress)):
        rgb = read_image(path)
        height, width = rgb.shape[:2]
        # data.augment.ResizeEvalTransform, and its float32 image_info.
        image = cv2.resize(rgb.astype(np.float32), (input_w, input_h),
                           interpolation=cv2.INTER_LINEAR) * np.float32(1 / 255)
        info = np.asarray([input_h / height, input_w / width, 0.0, 0.0,
                           height, width], np.float32)
        det = {k: np.asarray(v)[0]
               for k, v in inference.detect(image[None]).items()}
        n = int(det["num_detections"])
        keep = np.flatnonzero((det["classes"][:n] >= 0)
                              & (det["scores"][:n] >= score_threshold))
        boxes, masks = to_original_frame(det["boxes"][keep],
                                         det["masks"][keep], info,
                                         interpolation="bilinear")
        scores, classes = det["scores"][keep], det["classes"][keep]
        drawn = draw_detections(rgb, boxes, scores, classes, masks,
                                class_names, score_threshold=score_threshold)
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png") \
            else ".png"
        out = os.path.join(output_dir, stem + ext)
        cv2.imwrite(out, drawn[:, :, ::-1])
        written.append((path, out, len(keep)))
        if not coco_json:
            continue
        image_id = position if image_ids is None else image_ids[position]
        for i, k in enumerate(int(c) for c in classes):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            results.append({
                "image_id": image_id, "file_name": os.path.basename(path),
                "category_id": k if category_ids is None
                else int(category_ids[k]),
                "category_name": (class_names[k] if k < len(class_names)
                                  else str(k)),
                "score": float(scores[i]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "segmentation": encode_mask(masks[i])})
    if coco_json:
        os.makedirs(os.path.dirname(os.path.abspath(coco_json)), exist_ok=True)
        with open(coco_json, "w") as f:
            json.dump(results, f)
    return written
