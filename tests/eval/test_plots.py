"""Evaluation and training pictures (orienmask_tf.eval.plots)."""

import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from orienmask_tf.data import coco
from orienmask_tf.data import shapes
from orienmask_tf.eval import coco_eval
from orienmask_tf.eval import plots
from tests.eval.test_coco_eval import gt_as_results

RECALL = np.linspace(0, 1, 101)


def _no_temp_files(folder):
    return not [n for n in os.listdir(folder) if n.startswith(".tmp-")]


def _check_png(path, min_bytes=5000):
    assert os.path.getsize(path) > min_bytes
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.ndim == 3
    assert min(image.shape[:2]) > 200
    # Not a blank canvas: more than a handful of distinct colours.
    assert len(np.unique(image.reshape(-1, image.shape[2]), axis=0)) > 20
    return image


def _square(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _ann(ann_id, image_id, category, box, crowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category,
            "iscrowd": crowd, "bbox": list(box), "area": box[2] * box[3],
            "segmentation": _square(*box)}


def _two_box_gt():
    return {"images": [{"id": 1, "height": 100, "width": 100,
                        "file_name": "x.jpg"}],
            "annotations": [_ann(1, 1, 1, (10, 10, 20, 20)),
                            _ann(2, 1, 1, (60, 60, 30, 30))],
            "categories": [{"id": 1, "name": "thing"}]}


def _det(image_id, category, box, score, size=(100, 100)):
    """A bbox + segm result of a filled rectangle."""
    mask = np.zeros(size, np.uint8)
    x, y, w, h = (int(v) for v in box)
    mask[y:y + h, x:x + w] = 1
    rle = coco_eval.encode_mask(mask)
    return {"image_id": image_id, "category_id": category, "score": score,
            "bbox": [float(v) for v in box], "segmentation": rle}


def _evals(gt, results, backend="pycocotools", types=("bbox", "segm")):
    return coco_eval.evaluate(gt, results, types, backend=backend,
                              verbose=False, return_evals=True)


# ----------------------------------------------------------------------
# PR curves


def test_pr_curves_perfect_detections_are_precision_1_up_to_recall_1():
    gt = _two_box_gt()
    stats, evals = _evals(gt, gt_as_results_dict(gt))
    for iou_type in ("bbox", "segm"):
        curves = plots.pr_curves(evals[iou_type])
        np.testing.assert_allclose(curves["recall"], RECALL)
        for key in plots.PR_IOUS:
            np.testing.assert_allclose(curves[key]["precision"], 1.0)
            assert curves[key]["AP"] == pytest.approx(1.0)
        assert stats[iou_type]["AP"] == pytest.approx(1.0)


def gt_as_results_dict(gt):
    bbox = [{"image_id": a["image_id"], "category_id": a["category_id"],
             "score": 1.0, "bbox": a["bbox"]} for a in gt["annotations"]
            if not a["iscrowd"]]
    segm = []
    for a in gt["annotations"]:
        if a["iscrowd"]:
            continue
        image = next(i for i in gt["images"] if i["id"] == a["image_id"])
        rle = mask_utils.merge(mask_utils.frPyObjects(
            a["segmentation"], image["height"], image["width"]))
        segm.append({"image_id": a["image_id"],
                     "category_id": a["category_id"], "score": 1.0,
                     "segmentation": {"size": rle["size"],
                                      "counts": rle["counts"].decode()}})
    return {"bbox": bbox, "segm": segm}


@pytest.mark.parametrize("backend", coco_eval.BACKENDS)
def test_pr_curves_with_a_false_positive(backend):
    pytest.importorskip(backend)
    gt = _two_box_gt()
    # TP, FP, TP by score: precision 1 at recall 1/2, then 1/2, then 2/3 at
    # recall 1 -> the interpolated precision is 1 on the recall thresholds
    # 0 .. 0.5 (51 of them) and 2/3 on 0.51 .. 1, at every IoU threshold.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
             "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10],
             "score": 0.8},
            {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30],
             "score": 0.7}]
    stats, evals = _evals(gt, {"bbox": dets}, backend, ("bbox",))
    curves = plots.pr_curves(evals["bbox"])
    expected = np.where(RECALL <= 0.5 + 1e-9, 1.0, 2 / 3)
    for key in plots.PR_IOUS:
        np.testing.assert_allclose(curves[key]["precision"], expected)
    assert curves["0.5:0.95"]["AP"] == pytest.approx(stats["bbox"]["AP"])
    assert curves["0.5"]["AP"] == pytest.approx(stats["bbox"]["AP50"])
    assert curves["0.75"]["AP"] == pytest.approx(stats["bbox"]["AP75"])
    assert stats["bbox"]["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # The light arrays the evaluator keeps give the same curves.
    light = plots.pr_curves(coco_eval.accumulated(evals["bbox"]))
    np.testing.assert_array_equal(light["0.5"]["precision"],
                                  curves["0.5"]["precision"])


def test_evaluate_return_evals_keeps_stats_and_evaluator_keeps_arrays(
        capsys):
    gt = _two_box_gt()
    results = gt_as_results_dict(gt)
    plain = coco_eval.evaluate(gt, results)
    printed = capsys.readouterr().out
    stats, evals = coco_eval.evaluate(gt, results, return_evals=True)
    assert stats == plain and capsys.readouterr().out == printed
    assert set(evals) == {"bbox", "segm"}
    assert evals["bbox"].eval["precision"].shape == (10, 101, 1, 4, 3)
    _, none = coco_eval.evaluate(gt, {"bbox": []}, ("bbox",), verbose=False,
                                 return_evals=True)
    assert none == {"bbox": None}
    assert plots.pr_curves(None) is None


# ----------------------------------------------------------------------
# Per-class AP


def _noisy_results(gt_path, seed=0):
    """Ground truth turned into imperfect detections: shifted boxes and
    masks, random scores, some dropped, some relabelled, extra boxes."""
    data = json.loads(open(gt_path).read())
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in data["categories"]]
    sizes = {i["id"]: (i["height"], i["width"]) for i in data["images"]}
    bbox, segm = [], []
    for ann in data["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.15:
            continue
        h, w = sizes[ann["image_id"]]
        mask = mask_utils.decode(coco.segmentation_to_rle(
            ann["segmentation"], h, w))
        dy, dx = rng.integers(-3, 4, 2)
        mask = np.roll(mask, (dy, dx), axis=(0, 1))
        x, y, bw, bh = ann["bbox"]
        category = (ann["category_id"] if rng.random() > 0.15
                    else int(rng.choice(cats)))
        base = {"image_id": ann["image_id"], "category_id": category,
                "score": float(rng.random())}
        bbox.append(dict(base, bbox=[x + dx, y + dy, bw * rng.uniform(
            0.8, 1.2), bh * rng.uniform(0.8, 1.2)]))
        segm.append(dict(base, segmentation=coco_eval.encode_mask(mask)))
    for image, (h, w) in sizes.items():
        for _ in range(2):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            mask = np.zeros((h, w), np.uint8)
            mask[int(y):int(y) + 8, int(x):int(x) + 8] = 1
            base = {"image_id": image, "category_id": int(rng.choice(cats)),
                    "score": float(rng.random() * 0.5)}
            bbox.append(dict(base, bbox=[x, y, 8.0, 8.0]))
            segm.append(dict(base, segmentation=coco_eval.encode_mask(mask)))
    return {"bbox": bbox, "segm": segm}


@pytest.fixture(scope="module")
def shapes_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    paths = shapes.make_shapes(folder, 1, 12, (96, 128), seed=5)
    results = _noisy_results(paths["val"])
    stats, evals = _evals(paths["val"], results)
    return paths["val"], results, stats, evals


def test_per_class_ap_equals_cocoeval_restricted_to_the_class(shapes_case):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path, results, stats, evals = shapes_case
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
    names = {c: gt.cats[c]["name"] for c in gt.getCatIds()}
    for iou_type in ("bbox", "segm"):
        rows = plots.per_class_ap(evals[iou_type], names)
        assert [r["category_id"] for r in rows] == sorted(gt.getCatIds())
        assert [r["name"] for r in rows] == [names[c] for c in
                                             sorted(names)]
        checked = 0
        for row in rows:
            with contextlib.redirect_stdout(io.StringIO()):
                dt = gt.loadRes([dict(d) for d in results[iou_type]])
                ev = COCOeval(gt, dt, iouType=iou_type)
                ev.params.catIds = [row["category_id"]]
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            if ev.stats[0] < 0:  # no ground truth of this class
                assert np.isnan(row["AP"])
                continue
            assert row["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
            assert row["AP50"] == pytest.approx(ev.stats[1], abs=1e-12)
            assert row["AP75"] == pytest.approx(ev.stats[2], abs=1e-12)
            checked += 1
        assert checked >= 3
        # Not all equal (the case is not degenerate) and their mean is the
        # COCO AP.
        aps = [r["AP"] for r in rows if np.isfinite(r["AP"])]
        assert len(set(np.round(aps, 6))) > 1
        assert np.mean(aps) == pytest.approx(stats[iou_type]["AP"])


def test_per_class_ap_names_by_list_and_errors(shapes_case):
    _, _, _, evals = shapes_case
    ids = coco_eval.accumulated(evals["bbox"])["category_ids"]
    rows = plots.per_class_ap(evals["bbox"], [f"c{i}" for i in ids])
    assert [r["name"] for r in rows] == [f"c{i}" for i in ids]
    with pytest.raises(ValueError, match="class names"):
        plots.per_class_ap(evals["bbox"], ["one"])
    table = plots.format_per_class_table(
        {"bbox": rows, "segm": plots.per_class_ap(evals["segm"])})
    assert table.startswith("| class | box AP | mask AP |")


# ----------------------------------------------------------------------
# Confusion matrix


def _confusion_gt():
    return {"images": [{"id": 1, "height": 100, "width": 100,
                        "file_name": "a.jpg"},
                       {"id": 2, "height": 100, "width": 100,
                        "file_name": "b.jpg"}],
            "annotations": [
                _ann(1, 1, 1, (10, 10, 20, 20)),       # cat
                _ann(2, 1, 3, (60, 60, 30, 30)),       # dog
                _ann(3, 1, 3, (0, 60, 30, 30), crowd=1),  # dog crowd
                _ann(4, 2, 1, (10, 10, 20, 20))],      # cat, never found
            "categories": [{"id": 1, "name": "cat"},
                           {"id": 3, "name": "dog"}]}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_confusion_matrix_hand_computed(iou_type):
    dets = [_det(1, 3, (10, 10, 20, 20), 0.9),   # cat seen as dog
            _det(1, 3, (60, 60, 30, 30), 0.8),   # dog: correct
            _det(1, 1, (5, 65, 10, 10), 0.7),    # on the crowd: ignored
            _det(1, 1, (40, 0, 10, 10), 0.6),    # nothing there: FP
            _det(1, 1, (11, 11, 20, 20), 0.5),   # duplicate of the cat: FP
            _det(1, 1, (70, 0, 10, 10), 0.1)]    # below the threshold
    results = {"bbox": [{k: v for k, v in d.items() if k != "segmentation"}
                        for d in dets],
               "segm": [{k: v for k, v in d.items() if k != "bbox"}
                        for d in dets]}
    out = plots.confusion_matrix(_confusion_gt(), results, iou=0.5,
                                 score_threshold=0.3, iou_type=iou_type)
    assert out["classes"] == ["cat", "dog", "background"]
    assert out["category_ids"] == [1, 3]
    assert out["iou_type"] == iou_type and out["images"] == 2
    # rows: ground truth cat, dog, background; columns: predicted.
    np.testing.assert_array_equal(out["matrix"], [[0, 1, 1],
                                                  [0, 1, 0],
                                                  [2, 0, 0]])


def test_confusion_matrix_defaults_to_masks_and_matches_by_score():
    gt = _confusion_gt()
    # The higher-scoring detection takes the cat even with the lower IoU
    # (0.6); the better-fitting one is then a false positive.
    dets = [_det(1, 3, (14, 10, 20, 20), 0.9),
            _det(1, 1, (10, 10, 20, 20), 0.8)]
    out = plots.confusion_matrix(gt, {"segm": [dict(d) for d in dets],
                                      "bbox": []}, image_ids=[1])
    assert out["iou_type"] == "segm" and out["images"] == 1
    # image 2 left out: its cat is not missed; the dog of image 1 is.
    np.testing.assert_array_equal(out["matrix"], [[0, 1, 0],
                                                  [0, 0, 1],
                                                  [1, 0, 0]])
    # A stricter IoU: the 0.6 match fails, the 0.8 detection takes the cat.
    out = plots.confusion_matrix(gt, [dict(d) for d in dets], iou=0.8,
                                 image_ids=[1])
    np.testing.assert_array_equal(out["matrix"], [[1, 0, 0],
                                                  [0, 0, 1],
                                                  [0, 1, 0]])
    with pytest.raises(ValueError, match="not in the ground truth"):
        plots.confusion_matrix(gt, [_det(1, 7, (0, 0, 5, 5), 0.9)])


def test_confusion_matrix_of_perfect_results_is_diagonal(shapes_case):
    gt_path = shapes_case[0]
    out = plots.confusion_matrix(gt_path, gt_as_results(gt_path))
    matrix = out["matrix"]
    assert matrix[:-1, :-1].sum() == np.trace(matrix)
    assert matrix[-1].sum() == 0 and matrix[:, -1].sum() == 0
    data = json.loads(open(gt_path).read())
    assert np.trace(matrix) == sum(not a["iscrowd"]
                                   for a in data["annotations"])


# ----------------------------------------------------------------------
# Pictures and JSON files


def test_evaluation_pictures_and_json(tmp_path, shapes_case):
    gt_path, results, stats, evals = shapes_case
    paths = plots.write_evaluation_plots(tmp_path / "plots", evals, gt_path,
                                         results, verbose=False)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(f"{n}.{e}" for n in (
        "pr_curves", "per_class_ap", "confusion_matrix")
        for e in ("png", "json"))
    for path in paths:
        if path.endswith(".png"):
            _check_png(path)
    assert _no_temp_files(tmp_path / "plots")
    pr = json.loads(open(tmp_path / "plots" / "pr_curves.json").read())
    assert len(pr["segm"]["recall"]) == 101
    for iou_type in ("bbox", "segm"):
        assert pr[iou_type]["0.5:0.95"]["AP"] == pytest.approx(
            stats[iou_type]["AP"])
        assert pr[iou_type]["0.5"]["AP"] == pytest.approx(
            stats[iou_type]["AP50"])
    per_class = json.loads(
        open(tmp_path / "plots" / "per_class_ap.json").read())
    names = [c["name"] for c in json.loads(open(gt_path).read())[
        "categories"]]
    assert [r["name"] for r in per_class["segm"]] == names
    assert per_class["segm"] == json.loads(json.dumps(plots._jsonable(
        plots.per_class_ap(evals["segm"], names))))
    confusion = json.loads(
        open(tmp_path / "plots" / "confusion_matrix.json").read())
    assert confusion["classes"] == names + ["background"]
    assert confusion["matrix"] == plots.confusion_matrix(
        gt_path, results)["matrix"].tolist()
    assert confusion["rows"] == "ground truth"


def test_pictures_without_detections(tmp_path):
    gt = _two_box_gt()
    _, evals = _evals(gt, {"bbox": [], "segm": []})
    plots.plot_pr_curves(evals, tmp_path / "pr.png")
    plots.plot_per_class_ap(evals, None, tmp_path / "ap.png")
    assert json.loads(open(tmp_path / "pr.json").read())["bbox"] is None
    assert os.path.getsize(tmp_path / "ap.png") > 1000


# ----------------------------------------------------------------------
# results.png


HISTORY = """epoch,learning_rate,loss,loss_bbox,loss_cls,val_learning_rate,val_loss,val_loss_bbox,val_loss_cls,val_mask_AP,val_mask_AP50,val_box_AP
0,0.001,17.0,4.5,5.0,NA,NA,NA,NA,NA,NA,NA
1,0.0008,11.3,2.9,3.8,NA,NA,NA,NA,0.10,0.25,0.12
2,0.0005,9.1,2.1,3.1,NA,NA,NA,NA,NA,NA,NA
3,0.0001,8.4,1.9,2.9,NA,NA,NA,NA,0.15,0.33,0.17
"""


def test_training_results_panels_and_png(tmp_path):
    csv_path = tmp_path / "history.csv"
    csv_path.write_text(HISTORY)
    epochs, columns = plots.read_history(csv_path)
    assert epochs == [1, 2, 3, 4]
    assert np.isnan(columns["val_mask_AP"][0])
    panels = plots._training_panels(columns)
    titles = [p[0] for p in panels]
    assert titles == ["loss", "loss_bbox", "loss_cls", "learning rate",
                      "val mask AP", "val box AP"]
    # The all-NA validation losses and Keras' val_learning_rate are left out.
    assert panels[0][2] == [("train", "loss")]
    assert panels[4][2] == [("AP", "val_mask_AP"), ("AP50", "val_mask_AP50")]
    out = plots.plot_training_results(csv_path, tmp_path / "results.png")
    assert out == os.fspath(tmp_path / "results.png")
    _check_png(out, min_bytes=10000)
    assert _no_temp_files(tmp_path)


def test_training_results_extra_logs_and_empty_csv(tmp_path):
    csv_path = tmp_path / "history.csv"
    csv_path.write_text("epoch,loss\n0,3.0\n1,2.0\n1,1.5\n")
    extra = {1: {"val_mask_AP": 0.2, "loss": 99.0}}
    out = plots.plot_training_results(csv_path, tmp_path / "r.png",
                                      extra=extra)
    _check_png(out)
    epochs, columns = plots.read_history(csv_path)
    assert epochs == [1, 2]  # the repeated epoch keeps its last row
    np.testing.assert_allclose(columns["loss"], [3.0, 1.5])
    csv_path.write_text("epoch,loss\n")
    assert plots.plot_training_results(csv_path, tmp_path / "n.png") is None
    assert not (tmp_path / "n.png").exists()


def test_training_plot_callback_redraws_each_epoch(tmp_path):
    from orienmask_tf.training.callbacks import TrainingPlot

    csv_path = tmp_path / "history.csv"
    png = tmp_path / "results.png"
    callback = TrainingPlot(str(csv_path), str(png))
    csv_path.write_text("epoch,learning_rate,loss\n0,0.01,3.0\n")
    callback.on_epoch_end(0, {"learning_rate": 0.01, "loss": 3.0})
    first = png.read_bytes()
    with open(csv_path, "a") as stream:
        stream.write("1,0.005,2.0\n")
    callback.on_epoch_end(1, {"learning_rate": 0.005, "loss": 2.0,
                              "val_mask_AP": 0.3})
    assert png.read_bytes() != first
    _check_png(png)
    assert callback.extra[1]["val_mask_AP"] == 0.3
    # A missing history never stops training.
    os.remove(csv_path)
    callback.on_epoch_end(2, {"loss": 1.0})
    assert _no_temp_files(tmp_path)


def test_evaluate_parser_has_plots_option():
    from orienmask_tf.cli import build_parser

    args = build_parser().parse_args(
        ["evaluate", "--model", "m.keras", "--plots", "out/plots"])
    assert args.plots == "out/plots"
