"""``predict``: draw OrienMask / YOLACT detections (masks, boxes, class
names, scores) on image files; optionally write them as COCO results JSON.

Videos and cameras (``--source clip.mp4`` / ``--source 0``) go through
``inference.video``, which feeds its frames through the same
``detect_batch`` as the images here.
"""

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
# Drawn images keep these formats (and their extension as written); the
# others (BMP) are written as PNG.
KEPT_FORMATS = (".jpg", ".jpeg", ".png")


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
        raise ValueError(f"--source {spec}: no .jpg/.jpeg/.png/.bmp image "
                         "(expected an image, a folder or a glob pattern of "
                         "images, a video file or a camera index)")
    return paths


def resolve_source(spec):
    """What ``--source`` names: ``("camera", index)`` for an integer that is
    not an existing path, ``("video", path)`` for an existing file that is
    not an image (``inference.video`` then checks that it decodes), else
    ``("images", list_images(spec))`` (an image, a folder of images, a glob
    pattern)."""
    text = str(spec)
    if not os.path.exists(text) and text.strip().isdigit():
        return "camera", int(text)
    if not os.path.exists(text) and not any(c in text for c in "*?["):
        raise ValueError(f"--source {text}: no such file or folder "
                         "(expected an image, a folder or a glob pattern of "
                         "images, a video file or a camera index)")
    if os.path.isfile(text) and not text.lower().endswith(IMAGE_EXTENSIONS):
        return "video", text
    return "images", list_images(text)


def check_output_folder(output_dir, inputs):
    """Refuse an ``--output`` folder that would overwrite or mix with the
    inputs: one that is an input's folder or holds an input anywhere below
    it (symbolic links resolved), or that is an existing file.

    Raises:
        ValueError: one line naming the folder and the offending input.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"--output {output_dir}: is a file, expected a "
                         "folder for the drawings")
    folder = os.path.realpath(output_dir)
    for path in inputs:
        real = os.path.realpath(path)
        if os.path.commonpath([folder, real]) == folder:
            raise ValueError(
                f"--output {output_dir}: holds the input {path}, so the "
                "drawings would overwrite or mix with the inputs; give a "
                "folder outside the inputs")


def output_names(paths, output_dir):
    """One distinct, deterministic output path per input image.

    Each image keeps its path relative to the inputs' deepest common folder
    (so ``a/x.jpg`` and ``b/x.jpg`` become ``<output>/a/x.jpg`` and
    ``<output>/b/x.jpg``) and its extension as written; formats that are
    not kept get ``.png`` appended (``x.bmp`` -> ``x.bmp.png``, distinct
    from a drawn ``x.png``). A name already given (compared
    case-insensitively, for case-insensitive file systems) gets ``-2``,
    ``-3``, ... before its extension, in the order of ``paths``.
    """
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    taken, names = set(), []
    for path in absolute:
        name = os.path.relpath(path, root)
        if os.path.splitext(name)[1].lower() not in KEPT_FORMATS:
            name += ".png"
        base, ext = os.path.splitext(name)
        count = 1
        while name.casefold() in taken:
            count += 1
            name = f"{base}-{count}{ext}"
        taken.add(name.casefold())
        names.append(os.path.join(output_dir, name))
    return names


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


def make_inference(network, config, jit_compile=True):
    """The ``InferenceModel`` that ``detect_batch`` runs."""
    anchors, decode_kwargs = config.family.inference_args(config)
    return InferenceModel(network, config.image_size, anchors, decode_kwargs,
                          jit_compile=jit_compile)


def detect_batch(inference, images, score_threshold=0.3, pad_to=None):
    """Detect on RGB uint8 images (any sizes) in one network call.

    Each image goes through the evaluation transform (the whole image
    resized to the network input, OpenCV bilinear, as ``evaluate`` feeds
    it) and its detections are mapped back as ``evaluate`` maps them
    (boxes rescaled; masks resized bilinearly and thresholded at 0.5).
    ``pad_to``: fill the network batch up to this size with copies of the
    last image (one compiled shape for every batch of a video); only the
    given images' detections are returned.

    Returns:
        one dict per image: ``boxes`` ``(n, 4)`` x1, y1, x2, y2 and
        ``masks`` ``(n, h, w)`` bool in the image's pixels, ``scores``
        ``(n,)`` and ``classes`` ``(n,)``, the detections scoring at least
        ``score_threshold`` in decoding order.
    """
    input_h, input_w = inference.image_size
    # data.augment.ResizeEvalTransform, and its float32 image_info.
    batch = np.stack([
        cv2.resize(rgb.astype(np.float32), (input_w, input_h),
                   interpolation=cv2.INTER_LINEAR) * np.float32(1 / 255)
        for rgb in images])
    if pad_to and pad_to > len(batch):
        batch = np.concatenate([batch, np.repeat(
            batch[-1:], pad_to - len(batch), axis=0)])
    det = {k: np.asarray(v) for k, v in inference.detect(batch).items()}
    out = []
    for b, rgb in enumerate(images):
        height, width = rgb.shape[:2]
        info = np.asarray([input_h / height, input_w / width, 0.0, 0.0,
                           height, width], np.float32)
        n = int(det["num_detections"][b])
        keep = np.flatnonzero((det["classes"][b, :n] >= 0)
                              & (det["scores"][b, :n] >= score_threshold))
        boxes, masks = to_original_frame(det["boxes"][b][keep],
                                         det["masks"][b][keep], info,
                                         interpolation="bilinear")
        out.append({"boxes": boxes, "scores": det["scores"][b][keep],
                    "classes": det["classes"][b][keep], "masks": masks})
    return out


def write_atomically(path, data):
    """Write ``data`` (bytes or text) to a temporary name beside ``path``,
    then rename it: ``path`` holds either nothing new or all of it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w",
                  **({} if isinstance(data, bytes) else
                     {"encoding": "utf-8"})) as stream:
            stream.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def predict_images(network, config, paths, output_dir, class_names=(),
                   score_threshold=0.3, coco_json=None, jit_compile=True,
                   image_ids=None, category_ids=None, progress=False):
    """Detect on every image of ``paths`` (one network call each,
    ``detect_batch``); write each with the detections drawn to
    ``output_names(paths, output_dir)`` (same format as the input; PNG for
    BMP) and, if ``coco_json`` is set, the detections there as a COCO
    results list (each record with ``bbox`` and ``segmentation``, plus
    ``file_name`` and ``category_name``).

    The images are fed and mapped back as ``evaluate`` does
    (``detect_batch``), so with ``image_ids`` and ``category_ids``
    (``match_coco_images``) the results score as ``evaluate --model`` on
    the same images. Each file is written under a temporary name and
    renamed when complete.

    Args:
        image_ids: COCO id of each path (default: its position).
        category_ids: COCO category id of each label (default: the label).
        progress: a bar on stderr, one step per image.

    Raises:
        ValueError: ``output_dir`` holds an input (``check_output_folder``).

    Returns ``[(input path, output path, number of drawn detections)]``.
    """
    check_output_folder(output_dir, paths)
    inference = make_inference(network, config, jit_compile)
    names = output_names(paths, output_dir)
    written, results = [], []
    for position, path in enumerate(bar(paths, desc="predict", unit="img",
                                        enabled=progress)):
        rgb = read_image(path)
        det = detect_batch(inference, [rgb], score_threshold)[0]
        boxes, masks = det["boxes"], det["masks"]
        scores, classes = det["scores"], det["classes"]
        drawn = draw_detections(rgb, boxes, scores, classes, masks,
                                class_names, score_threshold=score_threshold)
        out = names[position]
        ok, encoded = cv2.imencode(os.path.splitext(out)[1],
                                   drawn[:, :, ::-1])
        if not ok:
            raise ValueError(f"{out}: OpenCV could not encode the drawing")
        write_atomically(out, encoded.tobytes())
        written.append((path, out, len(scores)))
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
        write_atomically(coco_json, json.dumps(results))
    return written
