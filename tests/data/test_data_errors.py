import json
import os
import shutil

import pytest

from orienmask_tf import cli
from orienmask_tf.config import load_config
from orienmask_tf.data import coco
from orienmask_tf.data import pipeline
from orienmask_tf.eval.coco_eval import evaluate
from orienmask_tf.saving import save_network
from tests.testing import CONFIGS_DIR
from tests.testing import TESTS_DIR
from tests.training.helpers import TINY_OVERRIDES
from tests.training.helpers import make_data

TINY = TESTS_DIR / "fixtures" / "tiny_coco"
BAD_POLYGON = {"id": 999, "image_id": 1, "category_id": 3, "iscrowd": 0,
               "segmentation": [[2, 2, 20, 20]], "bbox": [2, 2, 18, 18],
               "area": 10.0}


def _tiny_coco(tmp_path, corrupt=None, extra_annotation=None):
    """A copy of the tiny COCO set: ``corrupt`` image overwritten,
    ``extra_annotation`` appended."""
    shutil.copytree(TINY / "images", tmp_path / "images")
    if corrupt:
        (tmp_path / "images" / corrupt).write_bytes(b"\x89PNG truncated")
    data = json.loads((TINY / "instances.json").read_text())
    if extra_annotation:
        data["annotations"].append(extra_annotation)
    (tmp_path / "instances.json").write_text(json.dumps(data))
    return tmp_path / "instances.json", tmp_path / "images"


def _config(annotations, images, *overrides):
    return load_config(CONFIGS_DIR / "tiny.yaml", [
        "model.num_classes=2", "image_size=[64,64]", "data.max_instances=4",
        f"data.val_annotations={annotations}", f"data.val_images={images}",
        "decode.conf_thresh=0.0", *overrides])


def test_an_error_inside_tf_data_comes_out_as_the_coco_error(tmp_path):
    import tensorflow as tf

    annotations, images = _tiny_coco(tmp_path, corrupt="b.png")
    config = _config(annotations, images)
    dataset = pipeline.build_dataset(config, "val")
    with pytest.raises(tf.errors.OpError):  # what TF raises by itself
        list(dataset)
    with pytest.raises(coco.CocoError) as error:
        with pipeline.data_errors():
            list(dataset)
    assert str(error.value) == (f"{images}/b.png: cannot decode image "
                                "(corrupt, truncated or not an image)")
    # Other TF errors go through unchanged.
    with pytest.raises(tf.errors.InvalidArgumentError, match="boom"):
        with pipeline.data_errors():
            raise tf.errors.InvalidArgumentError(None, None, "boom")


def test_cli_evaluate_names_the_undecodable_image(tmp_path, capsys):
    annotations, images = _tiny_coco(tmp_path, corrupt="b.png")
    config = _config(annotations, images)
    model = tmp_path / "tiny.keras"
    save_network(config.family.build_network(config), model, config)
    code = cli.main(["evaluate", "--model", str(model), "--annotations",
                     str(annotations), "--images", str(images), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"orienmask-tf evaluate: error: {images}/b.png: cannot "
                   "decode image (corrupt, truncated or not an image)"]


def test_cli_train_names_the_undecodable_image(tmp_path, capsys):
    data = make_data(tmp_path, num_train=4, num_val=1)
    train_images = data[1].split("=", 1)[1]
    victim = os.path.join(train_images, sorted(os.listdir(train_images))[2])
    open(victim, "wb").close()  # a 0-byte image
    argv = ["train", "--config", str(CONFIGS_DIR / "tiny.yaml"), "--quiet",
            "--verbose", "0", "--no-eval", "--output", str(tmp_path / "run")]
    for value in TINY_OVERRIDES + data + ["train.steps_per_epoch=2",
                                          "data.shuffle_buffer=1"]:
        argv += ["--set", value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"orienmask-tf train: error: {victim}: ")


def test_skipped_annotations_are_not_scored(tmp_path, capsys):
    from orienmask_tf.inference.evaluate import NetworkEvaluator

    annotations, images = _tiny_coco(tmp_path, extra_annotation=BAD_POLYGON)
    config = _config(annotations, images, "data.on_error=skip")
    evaluator = NetworkEvaluator(config, "val", jit_compile=False)
    kept = evaluator.ground_truth
    assert sorted(a["id"] for a in kept["annotations"]) == [101, 102, 103,
                                                           201, 202]
    stats = evaluator(config.family.build_network(config), verbose=False)
    assert "evaluation skipped" in capsys.readouterr().out
    assert evaluator.coco.skipped["zero_area"] == 1
    # The same numbers as pycocotools on the file without the bad polygon.
    clean = json.loads((TINY / "instances.json").read_text())
    assert evaluator.last_results["segm"], "score_thr 0 keeps detections"
    assert stats == evaluate(clean, evaluator.last_results, verbose=False,
                             image_ids=evaluator.last_image_ids)
    # pycocotools on the raw file is what used to be scored: it fails.
    with pytest.raises(Exception):
        evaluate(str(annotations), evaluator.last_results, verbose=False)


def test_skipped_image_is_counted_and_not_evaluated(tmp_path, capsys):
    from orienmask_tf.inference.evaluate import NetworkEvaluator

    annotations, images = _tiny_coco(tmp_path, corrupt="c.jpg")
    config = _config(annotations, images, "data.on_error=skip")
    evaluator = NetworkEvaluator(config, "val", jit_compile=False)
    evaluator(config.family.build_network(config), verbose=False)
    assert evaluator.last_image_ids == [1, 2]
    out = capsys.readouterr().out
    assert "evaluation skipped" in out and "corrupt_image: 1" in out
