import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from orienmask_tf.config import DataConfig
from orienmask_tf.config import load_config
from orienmask_tf.data import coco
from orienmask_tf.data import pipeline
from orienmask_tf.data import shapes
from orienmask_tf.eval import coco_eval
from orienmask_tf.cli import build_parser
from orienmask_tf.ops.frames import to_original_frame
from tests.testing import CONFIGS_DIR
from tests.testing import TESTS_DIR

TINY = TESTS_DIR / "fixtures" / "tiny_coco"


def gt_as_results(annotation_file):
    """Every non-crowd ground truth as a detection with score 1."""
    data = json.loads(open(annotation_file).read())
    bbox, segm = [], []
    for ann in data["annotations"]:
        if ann["iscrowd"]:
            continue
        image = next(i for i in data["images"] if i["id"] == ann["image_id"])
        rle = coco.segmentation_to_rle(ann["segmentation"], image["height"],
                                       image["width"])
        base = {"image_id": ann["image_id"], "category_id": ann["category_id"],
                "score": 1.0}
        bbox.append(dict(base, bbox=ann["bbox"]))
        segm.append(dict(base, segmentation={
            "size": rle["size"], "counts": rle["counts"].decode("ascii")}))
    return {"bbox": bbox, "segm": segm}


def test_ground_truth_against_itself_is_ap_1_tiny_fixture():
    path = TINY / "instances.json"
    stats = coco_eval.evaluate(path, gt_as_results(path), verbose=False)
    for iou_type in ("bbox", "segm"):
        assert set(stats[iou_type]) == set(coco_eval.METRIC_KEYS)
        assert stats[iou_type]["AP"] == pytest.approx(1.0)
        assert stats[iou_type]["AP50"] == pytest.approx(1.0)
        assert stats[iou_type]["AR100"] == pytest.approx(1.0)


def test_ground_truth_against_itself_is_ap_1_shapes(tmp_path):
    paths = shapes.make_shapes(tmp_path, 2, 8, (60, 80), seed=2)
    stats = coco_eval.evaluate(paths["val"], gt_as_results(paths["val"]),
                               verbose=False)
    assert stats["bbox"]["AP"] == pytest.approx(1.0)
    assert stats["segm"]["AP"] == pytest.approx(1.0)


def _one_image_gt():
    return {"images": [{"id": 1, "height": 100, "width": 100,
                        "file_name": "x.jpg"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                 "bbox": [10, 10, 20, 20], "area": 400,
                 "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]},
                {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0,
                 "bbox": [60, 60, 30, 30], "area": 900,
                 "segmentation": [[60, 60, 90, 60, 90, 90, 60, 90]]}],
            "categories": [{"id": 1, "name": "thing"}]}


def test_known_ap_below_one():
    gt = _one_image_gt()
    # A false positive ranked above both true positives: precision 1/2 at
    # recall 1/2 and 2/3 at recall 1 -> interpolated precision 2/3 at every
    # recall threshold -> AP = 2/3 at every IoU threshold.
    dets = [{"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10],
             "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
             "score": 0.8},
            {"image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30],
             "score": 0.7}]
    stats = coco_eval.evaluate(gt, {"bbox": dets}, ("bbox",), verbose=False)
    assert stats["bbox"]["AP"] == pytest.approx(2 / 3, abs=1e-9)
    # Only one of the two objects found: recall 1/2 -> the precision
    # envelope is 1 on 51 of the 101 recall thresholds -> AP = 51/101.
    stats = coco_eval.evaluate(gt, {"bbox": dets[1:2]}, ("bbox",),
                               verbose=False)
    assert stats["bbox"]["AP"] == pytest.approx(51 / 101, abs=1e-9)
    assert stats["bbox"]["AR100"] == pytest.approx(0.5)
    # A box shifted to IoU 280/520 = 0.54 is a true positive at the 0.5
    # threshold only; above it, it is a false positive ranked first, so the
    # envelope is 1/2 up to recall 1/2: AP = 0.5 * 51/101 there.
    shifted = [dict(dets[1], bbox=[16, 10, 20, 20]), dets[2]]
    stats = coco_eval.evaluate(gt, {"bbox": shifted}, ("bbox",),
                               verbose=False)
    expected = (1.0 + 9 * 0.5 * 51 / 101) / 10
    assert stats["bbox"]["AP"] == pytest.approx(expected, abs=1e-9)
    assert stats["bbox"]["AP50"] == pytest.approx(1.0)


def test_no_detections_scores_zero(capsys):
    stats = coco_eval.evaluate(_one_image_gt(), {"bbox": []}, ("bbox",))
    assert all(v == 0.0 for v in stats["bbox"].values())
    assert "no detections" in capsys.readouterr().out


def test_to_original_frame_inverts_resize_pad_and_flip():
    mask0 = np.zeros((40, 60), np.uint8)
    mask0[10:20, 5:25] = 1
    # Input frame: scale 2, padded by (top 4, left 6), then flipped in a
    # 132-pixel-wide input.
    big = np.zeros((88, 132), np.uint8)
    big[4:84, 6:126] = np.kron(mask0, np.ones((2, 2), np.uint8))
    flipped = big[:, ::-1]
    info = [2.0, -2.0, 4.0, 132 - 6.0, 40, 60]
    box = [[132 - (6 + 50), 4 + 20, 132 - (6 + 10), 4 + 40]]
    for interpolation in ("bilinear", "nearest"):
        boxes, masks = to_original_frame(box, flipped[None], info,
                                         interpolation)
        np.testing.assert_allclose(boxes, [[5, 10, 25, 20]])
        np.testing.assert_array_equal(masks[0], mask0)


def test_to_original_frame_upsamples_like_the_official_evaluator():
    import cv2
    # The official evaluator: F.interpolate(bilinear, align_corners=False)
    # to the original size, then round (> 0.5 is foreground).
    rng = np.random.default_rng(0)
    small = (rng.random((1, 17, 23)) > 0.5).astype(np.uint8)
    _, masks = to_original_frame(
        np.zeros((1, 4)), small, [17 / 40, 23 / 50, 0, 0, 40, 50],
        interpolation="bilinear")
    expected = cv2.resize(small[0].astype(np.float32), (50, 40),
                          interpolation=cv2.INTER_LINEAR) > 0.5
    np.testing.assert_array_equal(masks[0], expected)


def test_pipeline_ground_truth_through_the_evaluator_is_ap_1(tmp_path):
    # Shapes at the input size: the eval resize is the identity, so the
    # evaluator's mapping back to the original frame is exact.
    paths = shapes.make_shapes(tmp_path, 1, 6, (64, 96), seed=3)
    config = load_config(CONFIGS_DIR / "tiny.yaml",
                         ["model.num_classes=5", "train.batch_size=2"])
    data = DataConfig(val_annotations=paths["val"],
                               val_images=str(tmp_path / "val"),
                               max_instances=30)
    loaded = coco.load_coco(paths["val"], tmp_path / "val")
    evaluator = coco_eval.CocoEvaluator(paths["val"], loaded.category_ids)
    for images, gt in pipeline.build_dataset(config, "val", data=data,
                                             coco=loaded):
        n = gt["num_instances"].numpy()
        detections = {"boxes_xyxy": gt["boxes_xyxy"], "masks": gt["masks"],
                      "classes": gt["classes"], "num_detections": n,
                      "scores": np.ones(gt["classes"].shape, np.float32)}
        evaluator.update(detections, gt["image_info"], gt["image_id"])
    stats = evaluator.evaluate(verbose=False)
    assert stats["segm"]["AP"] == pytest.approx(1.0)
    assert stats["bbox"]["AP"] == pytest.approx(1.0)
    evaluator.save(tmp_path / "results.json")

    parser = build_parser()
    args = parser.parse_args(["evaluate", "--annotations", paths["val"],
                              "--results", str(tmp_path / "results.json"),
                              "--output", str(tmp_path / "metrics.json")])
    assert args.func(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert len(metrics["bbox"]) == 12


def test_detections_to_coco_skips_padding():
    bbox, segm = coco_eval.detections_to_coco(
        7, np.array([[0, 0, 4, 4], [1, 1, 2, 2], [0, 0, 0, 0]], np.float32),
        [0.9, 0.5, 0.0], [1, 0, -1], [3, 7],
        masks=np.ones((3, 8, 8), bool), image_info=[2, 2, 0, 0, 4, 4],
        num_detections=2)
    assert [d["category_id"] for d in bbox] == [7, 3]
    assert bbox[0]["bbox"] == [0.0, 0.0, 2.0, 2.0]
    assert mask_utils.decode(dict(segm[0]["segmentation"],
                                  counts=segm[0]["segmentation"]["counts"]
                                  .encode())).shape == (4, 4)


def test_bad_results_file(tmp_path):
    (tmp_path / "r.json").write_text("{oops")
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--annotations",
                              str(TINY / "instances.json"), "--results",
                              str(tmp_path / "r.json")])
    with pytest.raises(ValueError, match="r.json: malformed JSON"):
        args.func(args)


def test_faster_coco_eval_backend_is_optional():
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="optional package"):
            coco_eval.evaluate(_one_image_gt(), {"bbox": []},
                               backend="faster_coco_eval")
        return
    path = TINY / "instances.json"
    stats = coco_eval.evaluate(path, gt_as_results(path),
                               backend="faster_coco_eval", verbose=False)
    assert stats["segm"]["AP"] == pytest.approx(1.0)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10],
             "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [16, 10, 20, 20],
             "score": 0.8}]
    fast = coco_eval.evaluate(_one_image_gt(), {"bbox": dets}, ("bbox",),
                              backend="faster_coco_eval", verbose=False)
    ref = coco_eval.evaluate(_one_image_gt(), {"bbox": dets}, ("bbox",),
                             verbose=False)
    for key in coco_eval.METRIC_KEYS:
        assert fast["bbox"][key] == pytest.approx(ref["bbox"][key])


@pytest.mark.torch
def test_mask_recovery_matches_the_official_torch_code():
    import torch  # the [torch] extra is part of the test install: fail, never skip
    rng = np.random.default_rng(1)
    small = (rng.random((3, 17, 23)) > 0.5).astype(np.uint8)
    for size in ((40, 50), (9, 11)):
        _, ours = to_original_frame(
            np.zeros((3, 4)), small,
            [17 / size[0], 23 / size[1], 0, 0, size[0], size[1]],
            interpolation="bilinear")
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(small)[None].float(), size=size,
            mode="bilinear", align_corners=False)[0].round().to(torch.uint8)
        np.testing.assert_array_equal(ours, ref.numpy())
