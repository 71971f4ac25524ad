"""``predict``: draw OrienMask / YOLACT detections (masks, boxes, class
names, scores) on image files; optionally write them as COCO results JSON."""

import glob
import json
import os

import cv2
import numpy as np

from orienmask_tf.eval.coco_eval import encode_mask
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.inference.drawing import draw_detections

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


def predict_images(network, config, paths, output_dir, class_names=(),
                   score_threshold=0.3, coco_json=None, jit_compile=True):
    """Detect on every image of ``paths``; write ``output_dir/<name>`` with
    the detections drawn (same format as the input; PNG for BMP) and, if
    ``coco_json`` is set, the detections there as a COCO results list
    (``image_id`` = position in ``paths``, ``file_name`` added).

    Returns ``[(input path, output path, number of drawn detections)]``.
    """
    anchors, decode_kwargs = config.family.inference_args(config)
    inference = InferenceModel(network, config.image_size, anchors,
                               decode_kwargs, jit_compile=jit_compile,
                               score_threshold=score_threshold)
    os.makedirs(output_dir, exist_ok=True)
    written, results = [], []
    for image_id, path in enumerate(paths):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a readable image")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        det = {k: np.asarray(v)[0]
               for k, v in inference.detect_uint8(rgb[None]).items()}
        n = int(det["num_detections"])
        height, width = rgb.shape[:2]
        masks = np.stack([cv2.resize(m, (width, height),
                                     interpolation=cv2.INTER_NEAREST)
                          for m in det["masks"][:n]]) if n else \
            np.zeros((0, height, width), np.uint8)
        drawn = draw_detections(rgb, det["boxes"][:n], det["scores"][:n],
                                det["classes"][:n], masks, class_names,
                                score_threshold=score_threshold)
        stem, ext = os.path.splitext(os.path.basename(path))
        ext = ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png") \
            else ".png"
        out = os.path.join(output_dir, stem + ext)
        cv2.imwrite(out, drawn[:, :, ::-1])
        written.append((path, out, n))
        if coco_json:
            for i in range(n):
                x0, y0, x1, y1 = (float(v) for v in det["boxes"][i])
                k = int(det["classes"][i])
                results.append({
                    "image_id": image_id, "file_name": os.path.basename(path),
                    "category_id": k,
                    "category_name": (class_names[k] if k < len(class_names)
                                      else str(k)),
                    "score": float(det["scores"][i]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "segmentation": encode_mask(masks[i])})
    if coco_json:
        os.makedirs(os.path.dirname(os.path.abspath(coco_json)), exist_ok=True)
        with open(coco_json, "w") as f:
            json.dump(results, f)
    return written
