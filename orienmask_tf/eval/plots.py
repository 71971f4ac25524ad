"""Pictures of a training run and of a COCO evaluation (matplotlib).

Training:

* ``plot_training_results(history_csv, output_png)``: every loss item,
  the learning rate and the validation mask / box AP over the epochs of a
  run's ``history.csv`` (one panel per quantity), the run's ``results.png``.

Evaluation, from the accumulated ``COCOeval`` objects that
``coco_eval.evaluate(..., return_evals=True)`` returns (pycocotools or
faster-coco-eval; or their ``coco_eval.accumulated`` arrays, as
``CocoEvaluator.last_cocoeval`` keeps them):

* ``pr_curves`` / ``plot_pr_curves``: precision over recall for ``bbox``
  and ``segm`` at IoU 0.5, 0.75 and 0.5:0.95 (mean over the thresholds),
  area "all", 100 detections per image, mean over the classes that have
  ground truth, read from ``COCOeval.eval["precision"]`` (T x R x K x A x M);
  the mean of a curve over recall is the COCO AP at that IoU.
* ``per_class_ap`` / ``plot_per_class_ap``: AP per class from the same
  array, as detectron2's ``COCOEvaluator._derive_coco_results`` computes it.
* ``confusion_matrix`` / ``plot_confusion_matrix``: class confusion of the
  detections scoring at least ``score_threshold`` (class-agnostic greedy
  matching by score, see ``confusion_matrix``).

``write_evaluation_plots(folder, ...)`` writes all three (PNG + JSON each).
Every file is written atomically (a temporary name in the same folder,
then ``os.replace``). Matplotlib is imported inside the functions and draws
on its Agg canvas without touching pyplot's global backend, so importing
this module stays light and it works on machines without a display.
"""

import csv
import json
import math
import os

import numpy as np

from orienmask_tf.eval.coco_eval import accumulated
from orienmask_tf.eval.coco_eval import load_ground_truth

IOU_TYPE_TITLES = {"bbox": "box", "segm": "mask"}
PR_IOUS = ("0.5", "0.75", "0.5:0.95")
BACKGROUND = "background"
# tab10: box and mask AP bars, PR curves.
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


# ----------------------------------------------------------------------
# Writing


def _tmp_path(path):
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f".tmp-{os.getpid()}-{name}")


def _save_figure(fig, path, dpi=100):
    """Render ``fig`` with Agg to ``path`` (PNG), atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    tmp = _tmp_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.fspath(path)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN (no ground truth) -> null
    return value


def write_json_atomic(path, value):
    """Indented JSON (NaN as null), written atomically."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w") as stream:
            json.dump(_jsonable(value), stream, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.fspath(path)


def _json_beside(output_png, json_path):
    if json_path is False:
        return None
    return json_path or os.path.splitext(os.fspath(output_png))[0] + ".json"


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


# ----------------------------------------------------------------------
# Training: results.png


def read_history(history_csv):
    """``history.csv`` (Keras ``CSVLogger``) -> ``(epochs, {column:
    values})``: one row per epoch (the last row of a repeated epoch, as a
    resumed run appends), ``NA`` / empty / non-numeric as NaN; ``epochs``
    counts from 1."""
    rows = {}
    with open(history_csv, newline="") as stream:
        for row in csv.DictReader(stream):
            try:
                epoch = int(float(row.get("epoch", "")))
            except ValueError:
                continue  # a repeated header line
            rows[epoch] = row
    epochs = sorted(rows)
    columns = {}
    for epoch in epochs:
        for key in rows[epoch]:
            if key and key != "epoch" and key not in columns:
                columns[key] = []
    for key in columns:
        for epoch in epochs:
            columns[key].append(_number(rows[epoch].get(key)))
    return ([e + 1 for e in epochs],
            {k: np.asarray(v, np.float64) for k, v in columns.items()})


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _training_panels(columns):
    """``[(title, ylabel, [(label, column)])]``: one panel per loss item
    (training and validation together), the learning rate, mask AP, box
    AP, then any other column; columns that are NaN throughout are left
    out."""
    live = {k for k, v in columns.items() if np.isfinite(v).any()}
    used = set()
    panels = []

    def take(keys):
        keys = [k for k in keys if k in live]
        used.update(keys)
        return keys

    losses = sorted((k for k in columns if k.startswith("loss")),
                    key=lambda k: (k != "loss", k))
    for key in losses:
        series = [(label, k) for label, k in (("train", key),
                                               ("val", "val_" + key))
                  if k in take([k])]
        if series:
            panels.append((key, "loss", series))
    for key in take(["learning_rate", "lr"]):
        panels.append(("learning rate", "learning rate", [("", key)]))
    take(["val_learning_rate", "val_lr"])  # Keras' meaningless val_ copies
    for prefix, title in (("val_mask_", "val mask AP"),
                          ("val_box_", "val box AP")):
        keys = take(sorted((k for k in columns if k.startswith(prefix)),
                           key=lambda k: (len(k), k)))
        if keys:
            panels.append((title, "AP", [(k[len(prefix):], k) for k in keys]))
    for key in sorted(columns):
        if key in live and key not in used and not (
                key.startswith("val_") and key[4:] in used):
            series = [(label, k) for label, k in (("train", key),
                                                   ("val", "val_" + key))
                      if k in live]
            used.update(k for _, k in series)
            panels.append((key, key, series))
    return panels


def plot_training_results(history_csv, output_png, extra=None, title=None):
    """Plot a run's ``history.csv`` to ``output_png`` (atomically).

    Args:
        history_csv: the Keras ``CSVLogger`` file (``epoch`` counts from 0).
        output_png: where to write the picture.
        extra: ``{epoch (from 0): {column: value}}`` merged over the CSV
            (values the CSV has no column for, e.g. ``val_mask_AP`` first
            logged after ``CSVLogger`` fixed its columns).
        title: the figure title (default: the CSV's folder name).

    Returns:
        the PNG path, or None when the CSV has no epoch yet.
    """
    from matplotlib.ticker import MaxNLocator

    epochs, columns = read_history(history_csv)
    if extra:
        everything = sorted(set(epochs) | {int(e) + 1 for e in extra})
        index = {e: i for i, e in enumerate(everything)}
        merged = {}
        for key, values in columns.items():
            merged[key] = np.full(len(everything), np.nan)
            merged[key][[index[e] for e in epochs]] = values
        for epoch, logs in extra.items():
            for key, value in logs.items():
                if key == "epoch":
                    continue
                merged.setdefault(key, np.full(len(everything), np.nan))
                if not np.isfinite(merged[key][index[int(epoch) + 1]]):
                    merged[key][index[int(epoch) + 1]] = _number(value)
        epochs, columns = everything, merged
    if not epochs:
        return None
    panels = _training_panels(columns)
    x = np.asarray(epochs)
    ncols = max(1, min(4, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig = _figure(3.6 * ncols, 2.7 * nrows + 0.4)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, ylabel, series) in zip(axes, panels):
        for i, (label, key) in enumerate(series):
            y = columns[key]
            ok = np.isfinite(y)
            sparse = ok.sum() < len(y) or len(y) <= 12
            ax.plot(x[ok], y[ok], color=_COLORS[i % len(_COLORS)],
                    marker="o" if sparse else None, markersize=3,
                    linewidth=1.5, label=label or None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)  # the same epochs everywhere
        if ylabel == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if not panels:
        axes[0].text(0.5, 0.5, "no numeric column yet", ha="center",
                     va="center", transform=axes[0].transAxes)
    run = title or os.path.basename(os.path.dirname(
        os.path.abspath(history_csv)))
    fig.suptitle(f"{run}: epoch {epochs[-1]}", fontsize=12)
    return _save_figure(fig, output_png)


# ----------------------------------------------------------------------
# Precision arrays


def _arrays(coco_eval):
    """An accumulated ``COCOeval`` (or its ``accumulated`` dict) -> dict."""
    if coco_eval is None or isinstance(coco_eval, dict):
        return coco_eval
    return accumulated(coco_eval)


def _precision_trk(arrays, area="all", max_dets=100):
    """``precision[:, :, :, area, max_dets]`` -> ``(T, R, K)`` (-1: the
    class has no ground truth)."""
    a = arrays["area_labels"].index(area)
    dets = arrays["max_dets"]
    m = dets.index(max_dets) if max_dets in dets else len(dets) - 1
    return np.asarray(arrays["precision"], np.float64)[:, :, :, a, m]


def _mean_valid(values, axis):
    """Mean over ``axis`` of the entries > -1 (NaN where there is none)."""
    valid = values > -1
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _iou_index(arrays, iou):
    found = np.flatnonzero(np.isclose(arrays["iou_thresholds"], iou))
    if not len(found):
        raise ValueError(f"IoU threshold {iou} is not among the evaluated "
                         f"{arrays['iou_thresholds'].tolist()}")
    return int(found[0])


def pr_curves(coco_eval):
    """Precision-recall curves of one IoU type.

    Returns:
        ``{"recall": (R,) thresholds, "0.5" | "0.75" | "0.5:0.95":
        {"precision": (R,), "AP": mean over recall}}``, area "all", 100
        detections per image, precision averaged over the classes with
        ground truth (and over the 10 IoU thresholds for "0.5:0.95"); None
        for None (no detection).
    """
    arrays = _arrays(coco_eval)
    if arrays is None:
        return None
    precision = _precision_trk(arrays)  # T, R, K
    t, r, k = precision.shape
    curves = {"recall": arrays["recall_thresholds"]}
    for name, values in (
            ("0.5", precision[_iou_index(arrays, 0.5)]),
            ("0.75", precision[_iou_index(arrays, 0.75)]),
            ("0.5:0.95", precision.transpose(1, 0, 2).reshape(r, t * k))):
        curve = _mean_valid(values, axis=1)
        curves[name] = {"precision": curve,
                        "AP": float(np.mean(curve)) if len(curve) else
                        math.nan}
    return curves


def plot_pr_curves(coco_eval_by_type, output_png, json_path=None):
    """PR curves of each IoU type (``{"bbox": COCOeval, "segm": ...}``), one
    panel per type; also ``json_path`` (default: the PNG's name with
    ``.json``; False: none) with the curves. Returns the curves."""
    types = [t for t in ("bbox", "segm") if t in coco_eval_by_type] + [
        t for t in coco_eval_by_type if t not in ("bbox", "segm")]
    curves = {t: pr_curves(coco_eval_by_type[t]) for t in types}
    fig = _figure(5.0 * max(1, len(types)), 4.4)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(types)), squeeze=False)
                         ).ravel()
    for ax, iou_type in zip(axes, types):
        name = IOU_TYPE_TITLES.get(iou_type, iou_type)
        ax.set_title(f"{name} ({iou_type}) precision-recall")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        c = curves[iou_type]
        if c is None:
            ax.text(0.5, 0.5, "no detections", ha="center", va="center",
                    transform=ax.transAxes)
            continue
        for i, key in enumerate(PR_IOUS):
            ax.plot(c["recall"], c[key]["precision"], color=_COLORS[i],
                    linewidth=1.8,
                    label=f"IoU {key}: AP {100 * c[key]['AP']:.1f}")
        ax.legend(loc="lower left", title="area all, 100 dets",
                  fontsize=9, title_fontsize=8)
    _save_figure(fig, output_png)
    path = _json_beside(output_png, json_path)
    if path:
        write_json_atomic(path, {
            "description": "COCO precision at the 101 recall thresholds, "
                           "area all, maxDets 100, mean over the classes "
                           "with ground truth; AP = mean over recall",
            **curves})
    return curves


# ----------------------------------------------------------------------
# Per-class AP


def _names_by_category(arrays, class_names):
    ids = arrays["category_ids"]
    if class_names is None:
        return {c: str(c) for c in ids}
    if isinstance(class_names, dict):
        return {c: str(class_names.get(c, c)) for c in ids}
    names = list(class_names)
    if len(names) != len(ids):
        raise ValueError(f"{len(names)} class names for {len(ids)} "
                         "evaluated categories")
    return dict(zip(ids, map(str, names)))


def per_class_ap(coco_eval, class_names=None):
    """AP of each class, from the precision array as detectron2 computes
    it (area "all", the last ``maxDets``, mean of the entries > -1).

    Args:
        coco_eval: an accumulated ``COCOeval`` or its ``accumulated`` dict.
        class_names: names in ``params.catIds`` order, or ``{category id:
            name}`` (default: the ids).

    Returns:
        ``[{"category_id", "name", "AP", "AP50", "AP75"}]`` in category
        order, fractions in [0, 1]; NaN for a class without ground truth.
    """
    arrays = _arrays(coco_eval)
    if arrays is None:
        return []
    precision = _precision_trk(arrays, max_dets=arrays["max_dets"][-1])
    names = _names_by_category(arrays, class_names)
    i50, i75 = _iou_index(arrays, 0.5), _iou_index(arrays, 0.75)
    rows = []
    for k, category in enumerate(arrays["category_ids"]):
        values = precision[:, :, k]
        rows.append({"category_id": int(category), "name": names[category],
                     "AP": float(_mean_valid(values.ravel(), axis=0)),
                     "AP50": float(_mean_valid(values[i50], axis=0)),
                     "AP75": float(_mean_valid(values[i75], axis=0))})
    return rows


def format_per_class_table(tables):
    """Markdown table of ``{iou_type: per_class_ap rows}`` (AP in %)."""
    types = [t for t in tables if tables[t]]
    if not types:
        return ""
    lines = ["| class | " + " | ".join(
        f"{IOU_TYPE_TITLES.get(t, t)} AP" for t in types) + " |",
        "|---|" + "---|" * len(types)]
    for i, row in enumerate(tables[types[0]]):
        cells = []
        for t in types:
            value = tables[t][i]["AP"]
            cells.append("-" if not math.isfinite(value)
                         else f"{100 * value:.1f}")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_per_class_ap(coco_eval_by_type, class_names, output_png,
                      json_path=None):
    """Horizontal bars of the per-class AP (0.5:0.95) of each IoU type;
    also a JSON (default: beside the PNG) with AP / AP50 / AP75 per class.
    Returns ``{iou_type: per_class_ap rows}``."""
    tables = {t: per_class_ap(ev, class_names)
              for t, ev in coco_eval_by_type.items()}
    types = [t for t in tables if tables[t]]
    rows = tables[types[0]] if types else []
    count = max(1, len(rows))
    fig = _figure(7.5, 1.4 + 0.32 * count * max(1, len(types)) ** 0.5)
    ax = fig.subplots()
    y = np.arange(len(rows))
    height = 0.8 / max(1, len(types))
    for i, iou_type in enumerate(types):
        values = np.asarray([r["AP"] for r in tables[iou_type]], np.float64)
        shown = np.nan_to_num(values) * 100
        offset = (i - (len(types) - 1) / 2) * height
        bars = ax.barh(y + offset, shown, height=height,
                       color=_COLORS[i % len(_COLORS)],
                       label=f"{IOU_TYPE_TITLES.get(iou_type, iou_type)} AP")
        ax.bar_label(bars, labels=["n/a" if not math.isfinite(v)
                                   else f"{100 * v:.1f}" for v in values],
                     padding=2, fontsize=7)
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.invert_yaxis()
    top = max([100 * r["AP"] for t in types for r in tables[t]
               if math.isfinite(r["AP"])] + [1.0])
    ax.set_xlim(0, min(100, top * 1.15 + 2))
    ax.set_xlabel("AP @ IoU 0.5:0.95 (%)")
    ax.set_title("AP per class (area all, 100 dets)")
    ax.grid(True, axis="x", alpha=0.3)
    if types:
        ax.legend(loc="lower right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center",
                transform=ax.transAxes)
    _save_figure(fig, output_png)
    path = _json_beside(output_png, json_path)
    if path:
        write_json_atomic(path, {
            "description": "AP per class from COCOeval precision (area all, "
                           "maxDets 100), fractions; null: no ground truth",
            **tables})
    return tables


# ----------------------------------------------------------------------
# Confusion matrix


def _results_for(results, iou_type):
    if isinstance(results, dict):
        if iou_type is None:
            iou_type = "segm" if results.get("segm") else "bbox"
        return list(results.get(iou_type, ())), iou_type
    results = list(results)
    if iou_type is None:
        iou_type = ("segm" if results and "segmentation" in results[0]
                    else "bbox")
    return results, iou_type


def _det_box(det):
    if "bbox" in det:
        return [float(v) for v in det["bbox"]]
    from pycocotools import mask as mask_utils

    return [float(v) for v in mask_utils.toBbox(det["segmentation"])]


def _ious(gt, dets, anns, iou_type):
    """``(D, G)`` IoU of detections and ground truth (crowd ground truth:
    intersection over the detection's area, as COCOeval)."""
    from pycocotools import mask as mask_utils

    if not dets or not anns:
        return np.zeros((len(dets), len(anns)))
    crowd = [int(bool(a.get("iscrowd", 0))) for a in anns]
    if iou_type == "segm":
        d = [det["segmentation"] for det in dets]
        g = [gt.annToRLE(a) for a in anns]
    else:
        d = np.asarray([_det_box(det) for det in dets], np.float64)
        g = np.asarray([a["bbox"] for a in anns], np.float64)
    return np.asarray(mask_utils.iou(d, g, crowd), np.float64).reshape(
        len(dets), len(anns))


def confusion_matrix(gt, results, iou=0.5, score_threshold=0.3,
                     iou_type=None, image_ids=None):
    """Class-level confusion of detections against the ground truth.

    Per image, the detections scoring at least ``score_threshold`` are taken
    by descending score; each is matched to the not yet matched non-crowd
    ground-truth instance **of any class** with which it has the highest
    IoU, if that IoU is at least ``iou``: the cell (ground-truth class,
    detected class) counts it. The IoU is the **mask IoU** for
    ``iou_type="segm"`` (the default when the results have masks) and the
    box IoU for ``"bbox"``. A detection left unmatched counts in the
    background row (a false positive) unless it lies on a crowd region
    (intersection over its own area >= ``iou``, as COCOeval ignores it),
    then it is not counted; a ground-truth instance left unmatched counts
    in the background column (missed). Crowd ground truth never counts.

    Args:
        gt: ground truth (COCO JSON path, dict or COCO object).
        results: COCO results, a list or ``{"bbox": [...], "segm": [...]}``.
        image_ids: these images only (default: every ground-truth image).

    Returns:
        ``{"classes": names + ["background"], "category_ids", "matrix":
        (K+1, K+1) int64 with rows = ground truth and columns =
        prediction, "iou_type", "iou_threshold", "score_threshold",
        "images"}``.
    """
    gt = load_ground_truth(gt)
    dets, iou_type = _results_for(results, iou_type)
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got "
                         f"{iou_type!r}")
    category_ids = sorted(gt.getCatIds())
    label = {c: i for i, c in enumerate(category_ids)}
    names = [str(gt.cats[c].get("name", c)) for c in category_ids]
    bg = len(category_ids)
    matrix = np.zeros((bg + 1, bg + 1), np.int64)
    images = (sorted(gt.getImgIds()) if image_ids is None
              else sorted({int(i) for i in image_ids}))
    wanted = set(images)
    by_image = {}
    for det in dets:
        image = int(det["image_id"])
        if image in wanted and float(det["score"]) >= score_threshold:
            if int(det["category_id"]) not in label:
                raise ValueError(f"detection category {det['category_id']} "
                                 "is not in the ground truth")
            by_image.setdefault(image, []).append(det)
    for image in images:
        anns = gt.imgToAnns.get(image, [])
        image_dets = by_image.get(image, [])
        scores = np.asarray([float(d["score"]) for d in image_dets])
        image_dets = [image_dets[i] for i in np.argsort(-scores,
                                                        kind="stable")]
        ious = _ious(gt, image_dets, anns, iou_type)
        crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], bool)
        gt_labels = np.asarray([label[a["category_id"]] for a in anns],
                               np.int64)
        free = ~crowd
        for d, det in enumerate(image_dets):
            det_label = label[int(det["category_id"])]
            candidates = np.where(free, ious[d], -1.0)
            best = int(np.argmax(candidates)) if len(anns) else -1
            if best >= 0 and candidates[best] >= iou:
                free[best] = False
                matrix[gt_labels[best], det_label] += 1
            elif not (crowd & (ious[d] >= iou)).any():
                matrix[bg, det_label] += 1
        missed = free & ~crowd
        np.add.at(matrix[:, bg], gt_labels[missed], 1)
    return {"classes": names + [BACKGROUND], "category_ids": category_ids,
            "matrix": matrix, "rows": "ground truth",
            "columns": "prediction", "iou_type": iou_type,
            "iou_threshold": float(iou),
            "score_threshold": float(score_threshold),
            "images": len(images)}


def plot_confusion_matrix(confusion, output_png, json_path=None):
    """Draw ``confusion_matrix(...)``: colours are each row's fractions (of
    a ground-truth class: where its instances went), numbers the counts;
    also a JSON (default: beside the PNG) with the counts."""
    matrix = np.asarray(confusion["matrix"], np.int64)
    classes = list(confusion["classes"])
    n = len(classes)
    import matplotlib

    totals = matrix.sum(axis=1, keepdims=True)
    fractions = matrix / np.maximum(totals, 1)
    shown = fractions.copy()
    shown[-1, -1] = np.nan  # background as background: not counted
    side = min(22.0, 3.2 + 0.55 * n)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="#dddddd")
    image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the row")
    ticks = np.arange(n)
    ax.set_xticks(ticks, classes, rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    kind = "mask" if confusion["iou_type"] == "segm" else "box"
    ax.set_title(f"confusion matrix ({kind} IoU \u2265 "
                 f"{confusion['iou_threshold']:g}, score \u2265 "
                 f"{confusion['score_threshold']:g}, "
                 f"{confusion['images']} images)", fontsize=10)
    if n <= 30:
        rows, cols = np.nonzero(matrix)
        for r, c in zip(rows, cols):
            ax.text(c, r, str(matrix[r, c]), ha="center", va="center",
                    fontsize=8 if n > 12 else 10,
                    color="white" if fractions[r, c] > 0.5 else "black")
    _save_figure(fig, output_png)
    path = _json_beside(output_png, json_path)
    if path:
        write_json_atomic(path, dict(confusion, matrix=matrix.tolist()))
    return confusion


# ----------------------------------------------------------------------
# All of an evaluation


def write_evaluation_plots(folder, coco_eval_by_type, annotations, results,
                           class_names=None, image_ids=None,
                           score_threshold=0.3, verbose=True):
    """Write ``pr_curves``, ``per_class_ap`` and ``confusion_matrix``
    (``.png`` + ``.json`` each) into ``folder``; returns their paths.

    Args:
        coco_eval_by_type: ``{iou_type: COCOeval or accumulated dict}``.
        annotations: the ground truth the results were scored against.
        results: ``{"bbox": [...], "segm": [...]}`` COCO results.
        class_names: ``{category id: name}`` or names in category order
            (default: the ground truth's names).
        image_ids: the evaluated images (default: all).
        score_threshold: of the confusion matrix.
    """
    os.makedirs(folder, exist_ok=True)
    gt = load_ground_truth(annotations)
    if class_names is None:
        class_names = {c: gt.cats[c].get("name", str(c))
                       for c in gt.getCatIds()}
    paths = []
    png = os.path.join(folder, "pr_curves.png")
    plot_pr_curves(coco_eval_by_type, png)
    paths += [png, os.path.splitext(png)[0] + ".json"]
    png = os.path.join(folder, "per_class_ap.png")
    plot_per_class_ap(coco_eval_by_type, class_names, png)
    paths += [png, os.path.splitext(png)[0] + ".json"]
    png = os.path.join(folder, "confusion_matrix.png")
    plot_confusion_matrix(confusion_matrix(
        gt, results, score_threshold=score_threshold, image_ids=image_ids),
        png)
    paths += [png, os.path.splitext(png)[0] + ".json"]
    if verbose:
        for path in paths[::2]:
            print(f"wrote {path} (+ .json)")
    return paths
