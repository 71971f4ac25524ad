"""COCO evaluation: detections -> COCO results -> bbox and segm AP.

Detections in the network-input frame (padded, as the decoders return
them) are mapped back to the original image with the ``image_info`` of the
input pipeline (``[scale_y, scale_x, pad_top, pad_left, original_h,
original_w]``, see ``orienmask_tf.ops.frames``): boxes become ``[x, y, w,
h]`` in original pixels, masks are resampled at the original resolution as
the official ``COCOMetrics`` does (bilinear) and stored as compressed RLE. The
results are scored with pycocotools (or faster-coco-eval, an optional
extra giving the same numbers faster), which prints the standard
12-number tables.
"""

import contextlib
import io
import json
import math
import numbers
import os

import numpy as np
from pycocotools import mask as mask_utils

from orienmask_tf.ops.frames import to_original_frame
from orienmask_tf.paths import check_path

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")
BACKENDS = ("pycocotools", "faster_coco_eval")


def encode_mask(mask):
    """``(H, W)`` {0, 1} -> JSON-ready compressed RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]],
            "counts": rle["counts"].decode("ascii")}


def detections_to_coco(image_id, boxes_xyxy, scores, classes, category_ids,
                       masks=None, image_info=None, num_detections=None):
    """One image's detections -> ``(bbox_results, segm_results)`` lists.

    Args:
        image_id: COCO image id.
        boxes_xyxy: ``(P, 4)`` corners, input pixels (or original pixels
            when ``image_info`` is None).
        scores: ``(P,)``; classes: ``(P,)`` contiguous labels (-1 = pad).
        category_ids: label -> COCO category id.
        masks: ``(P, H, W)`` or None (no segm results).
        image_info: ``(6,)`` from the input pipeline, or None.
        num_detections: number of valid leading rows (default: all rows
            with ``classes >= 0``).
    """
    classes = np.asarray(classes).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
    n = (int(num_detections) if num_detections is not None
         else len(classes))
    valid = np.flatnonzero(classes[:n] >= 0)
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)[valid]
    if masks is not None:
        masks = np.asarray(masks)[valid]
    if image_info is not None:
        boxes, masks = to_original_frame(boxes, masks, image_info,
                                         interpolation="bilinear")
    category_ids = np.asarray(category_ids)
    bbox_results, segm_results = [], []
    for i, k in enumerate(valid):
        category = int(category_ids[int(classes[k])])
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        base = {"image_id": int(image_id), "category_id": category,
                "score": float(scores[k])}
        bbox_results.append(dict(base, bbox=[x0, y0, x1 - x0, y1 - y0]))
        if masks is not None:
            segm_results.append(dict(base, segmentation=encode_mask(masks[i])))
    return bbox_results, segm_results


def _backend(name):
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval
    if name == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            raise ValueError(
                "backend 'faster_coco_eval' needs the optional package: pip "
                "install 'orienmask-tf[fast-eval]'") from None
        return COCO, COCOeval_faster
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def _read_ground_truth(path):
    """The dict of a ground-truth COCO JSON file; ``ValueError`` naming the
    file when it is missing, a folder, not JSON or not a COCO file."""
    check_path(path, "file", "annotations", "a COCO instances JSON file")
    try:
        with open(path, "rb") as stream:
            data = json.loads(stream.read())
    except OSError as error:
        raise ValueError(f"{path}: cannot read ({error.strerror})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: malformed JSON ({error})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ValueError(f"{path}: not a COCO instances file ({key!r} "
                             "must be a list)")
    for key in ("images", "categories"):
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict) or "id" not in entry:
                raise ValueError(f"{path}: {key}[{i}] has no 'id'")
    return data


def load_ground_truth(annotations, backend="pycocotools"):
    """A COCO object from a path, a dict or an existing COCO object (a
    path that is not a readable COCO file is a ``ValueError`` naming it)."""
    coco_cls, _ = _backend(backend)
    if isinstance(annotations, (str, os.PathLike)):
        annotations = _read_ground_truth(os.fspath(annotations))
    if isinstance(annotations, dict):
        gt = coco_cls()
        gt.dataset = annotations
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
        return gt
    return annotations


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _record_problem(record, iou_type, sizes):
    """What is wrong with one COCO result of ``iou_type`` (a phrase naming
    the field), or None; ``sizes``: image id -> ``[height, width]``."""
    if not isinstance(record, dict):
        return f"expected an object, got {type(record).__name__}"
    for key in ("image_id", "category_id"):
        if key not in record:
            return f"no {key!r}"
        if not _is_int(record[key]):
            return f"{key!r}: expected an integer, got {record[key]!r}"
    if "score" not in record:
        return "no 'score'"
    if not _is_number(record["score"]):
        return f"'score': expected a finite number, got {record['score']!r}"
    if iou_type == "bbox":
        box = record.get("bbox")
        if box is None:
            return ("no 'bbox' (scoring bbox needs [x, y, width, height] "
                    "boxes)")
        if not (isinstance(box, list) and len(box) == 4
                and all(_is_number(v) for v in box)):
            return (f"'bbox': expected [x, y, width, height] (4 finite "
                    f"numbers), got {box!r}")
        if box[2] < 0 or box[3] < 0:
            return f"'bbox': negative width or height in {box!r}"
        return None
    rle = record.get("segmentation")
    if rle is None:
        return ("no 'segmentation' (scoring segm needs masks; a box-only "
                "results file can be scored as bbox only)")
    size = rle.get("size") if isinstance(rle, dict) else None
    if not (isinstance(size, list) and len(size) == 2
            and all(_is_int(v) for v in size)
            and isinstance(rle.get("counts"), (str, list))):
        return ("'segmentation': expected an RLE {'size': [height, width], "
                f"'counts': ...}}, got {str(rle)[:60]}")
    expected = sizes.get(record["image_id"])
    if expected is not None and list(size) != expected:
        return (f"'segmentation': RLE size {size} differs from image "
                f"{record['image_id']}'s [height, width] {expected}")
    return None


def _some(values, count=5):
    values = sorted(values)
    text = ", ".join(str(v) for v in values[:count])
    return text + (", ..." if len(values) > count else "")


def check_results(results, ground_truth, iou_types=IOU_TYPES,
                  source="results", ground_truth_name="the ground truth"):
    """Check COCO results before scoring them; raise ``ValueError`` with
    one line naming ``source`` (a file) and what is wrong.

    Refused: results without a list for an IoU type to score (``{"bbox":
    [...]}`` scored as ``segm``); a record that is not an object, lacks
    ``image_id`` / ``category_id`` / ``score`` or the field of the IoU type
    (``bbox``: ``[x, y, w, h]``, 4 finite numbers, w, h >= 0;
    ``segmentation``: an RLE of the image's size), or has a value of the
    wrong type (named by its index and field); image or category ids that
    are not in ``ground_truth`` (a COCO object), counted with a few of
    them. pycocotools would instead score a box-only file as masks (the
    boxes become polygons), fail with an assertion, or ignore unknown
    categories silently.
    """
    if not isinstance(results, dict):
        raise ValueError(f"{source}: expected {{'bbox': [...], 'segm': "
                         "[...]} or one list of COCO results, got "
                         f"{type(results).__name__}")
    unknown = sorted(set(results) - set(IOU_TYPES), key=str)
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} (expected "
                         f"the lists {' and '.join(map(repr, IOU_TYPES))})")
    images = ground_truth.dataset.get("images", [])
    sizes = {i["id"]: [i.get("height"), i.get("width")] for i in images}
    categories = {c["id"] for c in ground_truth.dataset.get("categories",
                                                            [])}
    for iou_type in iou_types:
        if iou_type not in results:
            raise ValueError(
                f"{source}: no {iou_type!r} results to score {iou_type} "
                f"(it has {' and '.join(map(repr, sorted(results))) or 'none'}"
                "); score only what it holds")
        records = results[iou_type]
        if not isinstance(records, list):
            raise ValueError(f"{source}: {iou_type!r}: expected a list of "
                             f"results, got {type(records).__name__}")
        for index, record in enumerate(records):
            problem = _record_problem(record, iou_type, sizes)
            if problem is not None:
                raise ValueError(f"{source}: {iou_type} result {index}: "
                                 f"{problem}")
        for key, known, what in (("image_id", sizes, "image"),
                                 ("category_id", categories, "category")):
            missing = [r[key] for r in records if r[key] not in known]
            if missing:
                raise ValueError(
                    f"{source}: {what} ids not in {ground_truth_name}: "
                    f"{_some(set(missing))} ({len(set(missing))} ids, in "
                    f"{len(missing)} of the {len(records)} {iou_type} "
                    "results)")


def evaluate(annotations, results, iou_types=IOU_TYPES,
             backend="pycocotools", verbose=True, image_ids=None,
             return_evals=False, check=True, source="results"):
    """Score COCO results.

    Args:
        annotations: ground-truth JSON path, dict, or COCO object.
        results: ``{"bbox": [...], "segm": [...]}`` COCO result lists.
        iou_types: which of ``results`` to score.
        check: ``check_results`` first (``source`` names the results in
            its errors, e.g. the results file).
        verbose: print pycocotools' 12-line summary per type.
        image_ids: restrict to these images (default: all images of the
            ground truth).
        return_evals: also return the evaluated (accumulated) ``COCOeval``
            objects, ``{iou_type: COCOeval or None}`` (None: no detection);
            their ``eval["precision"]`` feeds ``orienmask_tf.eval.plots``.

    Returns:
        ``{iou_type: {metric: value}}`` with the 12 ``METRIC_KEYS``; a type
        without any detection scores 0 everywhere. With ``return_evals``,
        ``(stats, evals)``.
    """
    _, eval_cls = _backend(backend)
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou type must be one of {IOU_TYPES}, got "
                             f"{iou_type!r}")
    gt = load_ground_truth(annotations, backend)
    if check:
        check_results(results, gt, iou_types, source, ground_truth_name=(
            os.fspath(annotations) if isinstance(annotations, (
                str, os.PathLike)) else "the ground truth"))
    stats, evals = {}, {}
    for iou_type in iou_types:
        # loadRes adds keys (numpy-typed area, id) to the dicts it gets. A
        # result with both a box and a mask (predict --coco-json) is scored
        # as segm without its box: loadRes would take the box area for the
        # small / medium / large ranges instead of the mask's.
        dets = [{k: v for k, v in d.items()
                 if not (iou_type == "segm" and k == "bbox"
                         and "segmentation" in d)}
                for d in results.get(iou_type, ())]
        if not dets:
            if verbose:
                print(f"{iou_type}: no detections, every metric is 0")
            stats[iou_type] = {k: 0.0 for k in METRIC_KEYS}
            evals[iou_type] = None
            continue
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink):
            dt = gt.loadRes(dets)
            ev = eval_cls(gt, dt, iouType=iou_type)
            if image_ids is not None:
                ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
        if verbose:
            print(f"{iou_type}:")
            print(summary.getvalue().rstrip())
        values = np.asarray(ev.stats, np.float64).tolist()
        stats[iou_type] = dict(zip(METRIC_KEYS, values[:len(METRIC_KEYS)]))
        evals[iou_type] = ev
    return (stats, evals) if return_evals else stats


def accumulated(ev):
    """What the pictures need of an accumulated ``COCOeval`` (pycocotools
    or faster-coco-eval), without its per-image state: ``{"precision":
    (T, R, K, A, M) array, "iou_thresholds", "recall_thresholds",
    "category_ids", "area_labels", "max_dets"}``; None stays None."""
    if ev is None:
        return None
    p = ev.params
    return {"precision": np.asarray(ev.eval["precision"], np.float64),
            "iou_thresholds": np.asarray(p.iouThrs, np.float64),
            "recall_thresholds": np.asarray(p.recThrs, np.float64),
            "category_ids": [int(c) for c in p.catIds],
            "area_labels": list(p.areaRngLbl),
            "max_dets": [int(m) for m in p.maxDets]}


class CocoEvaluator:
    """Accumulate batched detections, then score them.

    Args:
        annotations: ground truth (JSON path, dict or COCO object).
        category_ids: label -> COCO category id (``CocoDataset.category_ids``).
        iou_types: ``("bbox", "segm")`` or a subset.
        backend: ``"pycocotools"`` or ``"faster_coco_eval"``.

    ``update(detections, image_info, image_ids)`` takes one batch:
    ``detections`` with ``boxes_xyxy (B, P, 4)``, ``scores (B, P)``,
    ``classes (B, P)``, optional ``masks (B, P, H, W)`` and
    ``num_detections (B,)`` (the decoders' padded outputs, tensors or
    numpy), ``image_info (B, 6)`` and ``image_ids (B,)`` from the pipeline.
    """

    def __init__(self, annotations, category_ids, iou_types=IOU_TYPES,
                 backend="pycocotools"):
        self.annotations = annotations
        self.category_ids = list(category_ids)
        self.iou_types = tuple(iou_types)
        self.backend = backend
        self.results = {"bbox": [], "segm": []}
        self.image_ids = []
        # {iou_type: accumulated(COCOeval) or None} of the last evaluate().
        self.last_cocoeval = None

    def reset(self):
        self.results = {"bbox": [], "segm": []}
        self.image_ids = []

    def update(self, detections, image_info, image_ids):
        det = {k: np.asarray(v) for k, v in detections.items()}
        image_info = np.asarray(image_info)
        image_ids = np.asarray(image_ids).reshape(-1)
        with_masks = "segm" in self.iou_types and "masks" in det
        for b, image_id in enumerate(image_ids):
            if image_id < 0:
                continue
            bbox, segm = detections_to_coco(
                image_id, det["boxes_xyxy"][b], det["scores"][b],
                det["classes"][b], self.category_ids,
                masks=det["masks"][b] if with_masks else None,
                image_info=image_info[b],
                num_detections=(det["num_detections"][b]
                                if "num_detections" in det else None))
            self.results["bbox"] += bbox
            self.results["segm"] += segm
            self.image_ids.append(int(image_id))

    def save(self, path):
        with open(path, "w") as stream:
            json.dump(self.results, stream)

    def evaluate(self, verbose=True, all_images=False):
        """Scores over the updated images (or every ground-truth image);
        ``last_cocoeval`` then holds the precision arrays
        (``accumulated``) per IoU type."""
        # The results are detections_to_coco's own: nothing to check.
        stats, evals = evaluate(self.annotations, self.results,
                                self.iou_types, self.backend, verbose,
                                image_ids=None if all_images else sorted(
                                    set(self.image_ids)),
                                return_evals=True, check=False)
        self.last_cocoeval = {t: accumulated(ev) for t, ev in evals.items()}
        return stats


def format_table(stats):
    """Markdown table of ``{iou_type: {metric: value}}``."""
    types = list(stats)
    lines = ["| metric | " + " | ".join(types) + " |",
             "|---|" + "---|" * len(types)]
    for key in METRIC_KEYS:
        lines.append(f"| {key} | " + " | ".join(
            f"{100 * stats[t][key]:.1f}" for t in types) + " |")
    return "\n".join(lines)


def write_json(path, value):
    """Write ``value`` as indented JSON, creating the folder; say where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as stream:
        json.dump(value, stream, indent=2)
    print(f"wrote {path}")
