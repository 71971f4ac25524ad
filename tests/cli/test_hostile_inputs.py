"""Hostile and careless inputs through ``orienmask-tf`` (in-process): every
one ends with exit code 2 and exactly one stderr line ``orienmask-tf
<command>: error: ...`` that names the file or setting and what was
expected -- never a traceback."""

import json
import os
import shutil

import pytest

from orienmask_tf import cli
from tests.testing import CONFIGS_DIR
from tests.training.helpers import TINY_OVERRIDES
from tests.training.helpers import make_data

TINY = str(CONFIGS_DIR / "tiny.yaml")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny shapes data (64 px, 5 classes; val image ids 1, 2), a tiny
    model, a plain file, results files of every kind of mistake."""
    import orienmask_tf as om

    root = tmp_path_factory.mktemp("hostile")
    data = make_data(root, num_train=4, num_val=2)
    paths = {k: v.split("=", 1)[1] for k, v in zip(
        ("train_ann", "train_images", "val_ann", "val_images"), data)}
    w = dict(paths, root=str(root), data=data)
    w["model"] = str(om.from_preset("tiny", overrides=[
        "model.num_classes=5", "image_size=[64,64]"]).save(
            root / "tiny.keras"))
    w["file"] = str(root / "notes.txt")
    open(w["file"], "w").write("not a folder")
    # The validation images again, one of them 0 bytes.
    w["broken_images"] = str(root / "broken")
    shutil.copytree(paths["val_images"], w["broken_images"])
    open(os.path.join(w["broken_images"], "000001.jpg"), "wb").close()
    w["dup_yaml"] = str(root / "dup.yaml")
    open(w["dup_yaml"], "w").write("train:\n  epochs: 2\ntrain:\n  epochs: 3\n")

    box = {"image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 12],
           "score": 0.9}
    rle = {"size": [64, 64], "counts": "0`01"}
    results = {
        "box_only": [box],
        "unknown_images": [box, dict(box, image_id=999),
                           dict(box, image_id=1000)],
        "unknown_category": [box, dict(box, category_id=4)],
        "no_score": [box, {k: v for k, v in box.items() if k != "score"}],
        "bbox_type": [dict(box, bbox="1 2 10 12")],
        "image_id_type": [dict(box, image_id="1")],
        "rle_size": [dict(box, segmentation=dict(rle, size=[32, 64]))],
        "unknown_key": {"bbox": [box], "keypoints": []},
    }
    for name, value in results.items():
        w[name] = str(root / f"{name}.json")
        json.dump(value, open(w[name], "w"))
    w["not_json"] = str(root / "not_json.json")
    open(w["not_json"], "w").write('[{"image_id": 1,')
    return w


def train(w, *sets, output="run"):
    argv = ["train", "--config", TINY, "--no-eval", "--output",
            os.path.join(w["root"], output)]
    for value in TINY_OVERRIDES + w["data"] + list(sets):
        argv += ["--set", value]
    return argv


def results(w, name, *extra):
    return ["evaluate", "--annotations", w["val_ann"], "--results", w[name],
            *extra]


# (id, argv(w), the substrings the one error line must hold (w-formatted))
CASES = [
    # Config values: the setting and the range.
    ("shuffle_buffer_0", lambda w: ["info", "--config", TINY, "--set",
                                    "data.shuffle_buffer=0"],
     ["data.shuffle_buffer", ">= 1", "got 0"]),
    ("max_instances_-1", lambda w: train(w, "data.max_instances=-1"),
     ["data.max_instances", ">= 1", "got -1"]),
    ("nms_pre_-5", lambda w: ["info", "--config", TINY, "--set",
                              "decode.nms_pre=-5"],
     ["decode.nms_pre", "got -5"]),
    ("learning_rate_0", lambda w: ["info", "--config", TINY, "--set",
                                   "train.learning_rate=0"],
     ["train.learning_rate", "> 0"]),
    ("image_size_odd", lambda w: ["info", "--config", TINY,
                                  "--image-size", "64", "90"],
     ["multiple of 32"]),
    ("duplicate_yaml_key", lambda w: ["info", "--config", w["dup_yaml"]],
     ["{dup_yaml}", "'train' appears twice"]),
    # Paths of the wrong kind, or missing.
    ("config_is_a_folder", lambda w: ["info", "--config", w["root"]],
     ["{root}: is a folder, expected a YAML config file"]),
    ("annotations_is_a_folder",
     lambda w: ["evaluate", "--annotations", w["root"], "--results",
                w["box_only"]],
     ["--annotations {root}: is a folder, expected a COCO instances JSON"]),
    ("annotations_missing",
     lambda w: ["evaluate", "--annotations", w["root"] + "/no.json",
                "--results", w["box_only"]],
     ["--annotations {root}/no.json: no such file"]),
    ("results_is_a_folder",
     lambda w: ["evaluate", "--annotations", w["val_ann"], "--results",
                w["root"]],
     ["--results {root}: is a folder"]),
    ("results_without_annotations",
     lambda w: ["evaluate", "--results", w["box_only"]],
     ["needs --annotations"]),
    ("model_is_a_folder", lambda w: ["evaluate", "--model", w["root"]],
     ["--model {root}: is a folder, expected a .keras model file"]),
    ("images_is_a_file",
     lambda w: ["evaluate", "--model", w["model"], "--annotations",
                w["val_ann"], "--images", w["file"]],
     ["--images {file}: is a file, expected the folder"]),
    ("annotations_without_images",
     lambda w: ["evaluate", "--model", w["model"], "--annotations",
                w["val_ann"]],
     ["--annotations with --model needs --images"]),
    ("images_without_annotations",
     lambda w: ["evaluate", "--model", w["model"], "--images",
                w["val_images"]],
     ["--images with --model needs --annotations"]),
    ("metrics_output_is_a_folder",
     lambda w: results(w, "box_only", "--iou-types", "bbox", "--output",
                       w["root"]),
     ["--output {root}: is a folder, expected the metrics JSON file"]),
    ("predict_output_is_a_file",
     lambda w: ["predict", "--model", w["model"], "--images",
                w["val_images"], "--output", w["file"]],
     ["--output {file}: is a file, expected a folder"]),
    ("prepare_images_is_a_file",
     lambda w: ["prepare-data", "--annotations", w["val_ann"], "--images",
                w["file"], "--output", w["root"] + "/rec/val"],
     ["--images {file}: is a file"]),
    ("prepare_output_is_a_folder_name",
     lambda w: ["prepare-data", "--annotations", w["val_ann"], "--images",
                w["val_images"], "--output", w["root"] + "/"],
     ["--output {root}/: is a folder name, expected an output prefix"]),
    ("make_shapes_output_is_a_file",
     lambda w: ["make-shapes", "--output", w["file"]],
     ["--output {file}: is a file, expected the dataset folder"]),
    ("convert_checkpoint_is_a_folder",
     lambda w: ["convert", "--checkpoint", w["root"], "--config", TINY,
                "--output", w["root"] + "/c.keras"],
     ["--checkpoint {root}: is a folder"]),
    ("export_below_a_file",
     lambda w: ["export", "--model", w["model"], "--output",
                w["file"] + "/serving"],
     ["--output {file}/serving: cannot be created, {file} is a file"]),
    ("train_output_is_a_file", lambda w: train(w, output=w["file"]),
     ["--output {file}: is a file, expected the run folder"]),
    ("train_images_is_a_file",
     lambda w: train(w, f"data.train_images={w['file']}"),
     ["data.train_images {file}: is a file, expected the folder of the "
      "training images"]),
    ("train_images_missing",
     lambda w: train(w, f"data.train_images={w['root']}/nowhere"),
     ["{root}/nowhere: no such folder"]),
    ("init_weights_is_a_folder",
     lambda w: train(w, f"train.init_weights={w['root']}"),
     ["train.init_weights {root}: is a folder, expected a .keras file"]),
    ("output_dir_is_a_file",
     lambda w: ["info", "--config", TINY, "--set",
                f"train.output_dir={w['file']}"],
     ["train.output_dir {file}: is a file, expected the run folder"]),
    ("anchors_annotations_is_a_folder",
     lambda w: ["anchors", "--config", TINY, "--set",
                f"data.train_annotations={w['root']}"],
     ["data.train_annotations {root}: is a folder"]),
    # An image that cannot be decoded, met inside tf.data.
    ("undecodable_image",
     lambda w: ["evaluate", "--model", w["model"], "--annotations",
                w["val_ann"], "--images", w["broken_images"]],
     ["{broken_images}/000001.jpg: cannot decode image"]),
    # Results files.
    ("box_results_scored_as_masks", lambda w: results(w, "box_only"),
     ["{box_only}: segm result 0: no 'segmentation'"]),
    ("unknown_image_ids",
     lambda w: results(w, "unknown_images", "--iou-types", "bbox"),
     ["{unknown_images}: image ids not in {val_ann}: 999, 1000",
      "2 ids, in 2 of the 3 bbox results"]),
    ("unknown_category_ids",
     lambda w: results(w, "unknown_category", "--iou-types", "bbox"),
     ["{unknown_category}: category ids not in {val_ann}: 4"]),
    ("result_without_score",
     lambda w: results(w, "no_score", "--iou-types", "bbox"),
     ["{no_score}: bbox result 1: no 'score'"]),
    ("bbox_of_wrong_type",
     lambda w: results(w, "bbox_type", "--iou-types", "bbox"),
     ["{bbox_type}: bbox result 0: 'bbox': expected [x, y, width, height]"]),
    ("image_id_of_wrong_type",
     lambda w: results(w, "image_id_type", "--iou-types", "bbox"),
     ["{image_id_type}: bbox result 0: 'image_id': expected an integer"]),
    ("rle_of_another_size",
     lambda w: results(w, "rle_size", "--iou-types", "segm"),
     ["{rle_size}: segm result 0: 'segmentation': RLE size [32, 64]",
      "[64, 64]"]),
    ("results_dict_with_unknown_key", lambda w: results(w, "unknown_key"),
     ["{unknown_key}: unknown key 'keypoints'"]),
    ("results_not_json", lambda w: results(w, "not_json"),
     ["{not_json}: malformed JSON"]),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_one_line_error_naming_the_input(world, capsys, argv, expected):
    argv = argv(world)
    code = cli.main(["--quiet", *argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (code, captured.err[-2000:])
    assert len(lines) == 1, lines
    assert "Traceback" not in captured.err + captured.out
    command = {"val": "evaluate"}.get(argv[0], argv[0])
    assert lines[0].startswith(f"orienmask-tf {command}: error: "), lines
    for text in expected:
        assert text.format(**world) in lines[0], lines[0]


def test_box_results_score_as_boxes(world, capsys):
    # The file refused as segm is fine as bbox: the check is no blanket
    # refusal.
    assert cli.main(["--quiet", *results(world, "box_only", "--iou-types",
                                         "bbox")]) == 0
    assert capsys.readouterr().err == ""
