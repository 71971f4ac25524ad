"""``predict --coco-json --annotations`` writes results that score as
``evaluate --model`` does on the same images."""

import json

import pytest

import orienmask_tf as om
from orienmask_tf import cli
from orienmask_tf.eval import coco_eval
from tests import testing

TINY_COCO = testing.TESTS_DIR / "fixtures" / "tiny_coco"
ANNOTATIONS = str(TINY_COCO / "instances.json")
ANNOTATED = str(TINY_COCO / "images" / "[abc].*")  # a.jpg b.png c.jpg


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny OrienMask with random weights, 2 classes (the fixture's
    categories 3 and 7)."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    return str(om.from_preset("tiny", overrides=[
        "model.num_classes=2"]).save(path))


def _key(record):
    return (record["image_id"], record["category_id"],
            round(record["score"], 4), tuple(round(v, 2)
                                             for v in record["bbox"]))


def _mask_key(record):
    return (record["image_id"], record["category_id"],
            round(record["score"], 4), record["segmentation"]["counts"])


def _pseudo_ground_truth(records, path, per_image=2):
    """The fixture's images and categories, with the ``per_image``
    best-scoring predicted masks of each image as its instances: random
    weights score ~0 on the real annotations, and AP 0 everywhere would
    compare nothing."""
    from pycocotools import mask as mask_utils

    gt = json.loads(open(ANNOTATIONS).read())
    annotations = []
    for image in gt["images"]:
        mine = sorted((r for r in records if r["image_id"] == image["id"]),
                      key=lambda r: -r["score"])[:per_image]
        for r in mine:
            rle = dict(r["segmentation"], counts=r["segmentation"][
                "counts"].encode("ascii"))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image["id"],
                "category_id": r["category_id"], "iscrowd": 0,
                "segmentation": r["segmentation"],
                "area": float(mask_utils.area(rle)),
                "bbox": r["bbox"]})  # the predicted box: bbox AP too
    path.write_text(json.dumps(dict(gt, annotations=annotations)))
    return str(path)


def test_predict_results_score_as_evaluate(model, tmp_path, capsys):
    dets = tmp_path / "detections.json"
    assert cli.main(["predict", "--model", model, "--images", ANNOTATED,
                     "--output", str(tmp_path / "drawn"),
                     "--score-threshold", "0", "--coco-json", str(dets),
                     "--annotations", ANNOTATIONS]) == 0
    out = capsys.readouterr()
    assert "predict: 100%" in out.err and "3/3" in out.err  # the bar
    gt = json.loads(open(ANNOTATIONS).read())
    ids = {image["file_name"]: image["id"] for image in gt["images"]}
    predicted = json.loads(dets.read_text())
    assert predicted
    for record in predicted:
        assert record["image_id"] == ids[record["file_name"]]
    assert {r["category_id"] for r in predicted} <= {3, 7}
    assert {r["category_name"] for r in predicted} <= {"box", "blob"}

    pseudo = _pseudo_ground_truth(predicted, tmp_path / "pseudo.json")
    assert cli.main(["evaluate", "--model", model, "--annotations", pseudo,
                     "--images", str(TINY_COCO / "images"), "--output",
                     str(tmp_path / "eval" / "metrics.json"),
                     "--results-output", str(tmp_path / "evaluated.json")]) \
        == 0
    assert "evaluate: 100%" in capsys.readouterr().err  # per batch
    expected = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert expected["segm"]["AP"] > 0.2 and expected["bbox"]["AP"] > 0.2

    # The same records as evaluate's own results ...
    evaluated = json.loads((tmp_path / "evaluated.json").read_text())
    assert sorted(map(_key, predicted)) == sorted(map(_key,
                                                      evaluated["bbox"]))
    assert sorted(map(_mask_key, predicted)) == sorted(
        map(_mask_key, evaluated["segm"]))
    # ... so the same 12 numbers, scored by pycocotools directly and by
    # `evaluate --results` on the file.
    stats = coco_eval.evaluate(pseudo, {"bbox": predicted,
                                        "segm": predicted}, verbose=False)
    assert cli.main(["evaluate", "--annotations", pseudo, "--results",
                     str(dets), "--output", str(tmp_path / "scored.json")]) \
        == 0
    scored = json.loads((tmp_path / "scored.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert stats[iou_type] == pytest.approx(expected[iou_type], abs=1e-9)
        assert scored[iou_type] == pytest.approx(expected[iou_type],
                                                 abs=1e-9)


def test_an_image_missing_from_the_annotations_is_named(model, tmp_path,
                                                        capsys):
    code = cli.main(["predict", "--model", model, "--images",
                     str(TINY_COCO / "images"), "--output",
                     str(tmp_path / "drawn"), "--coco-json",
                     str(tmp_path / "d.json"), "--annotations", ANNOTATIONS])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cmyk.jpg: not in " in err[0] and "instances.json" in err[0]
    # Class names only (no --coco-json): every image is fine.
    assert cli.main(["predict", "--quiet", "--model", model, "--images",
                     str(TINY_COCO / "images"), "--output",
                     str(tmp_path / "drawn"), "--annotations",
                     ANNOTATIONS]) == 0
    assert "predict:" not in capsys.readouterr().err


def test_without_annotations_ids_are_positions(model, tmp_path, capsys):
    dets = tmp_path / "d.json"
    assert cli.main(["predict", "--model", model, "--images", ANNOTATED,
                     "--output", str(tmp_path / "drawn"), "--coco-json",
                     str(dets), "--score-threshold", "0"]) == 0
    assert "note: --coco-json without --annotations" in \
        capsys.readouterr().err
    records = json.loads(dets.read_text())
    assert {r["image_id"] for r in records} <= {0, 1, 2}
    assert {r["category_id"] for r in records} <= {0, 1}
