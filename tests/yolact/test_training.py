"""YOLACT through the command line: train (ATSS-maIoU on shapes data),
evaluate, predict, convert and train.init_weights, on the tiny config."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import yaml

from orienmask_tf import cli
from orienmask_tf.config import load_config
from orienmask_tf.families.yolact.checkpoint import state_dict_from_model
from orienmask_tf.families.yolact.network import Yolact
from tests import testing
from tests.training.helpers import finish
from tests.training.helpers import make_data
from tests.training.helpers import run_script

TINY = str(testing.CONFIGS_DIR / "yolact_tiny.yaml")
DATA = ["model.num_classes=5", "data.max_instances=10",
        "data.shuffle_buffer=16", "data.deterministic=true",
        "data.num_parallel_calls=1"]


def _sets(overrides):
    return [arg for value in overrides for arg in ("--set", value)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """16 shapes images of 96 px; 5 epochs x 8 steps of `orienmask-tf
    train` (AdamW; COCO evaluation and TensorBoard images at the end)."""
    root = tmp_path_factory.mktemp("yolact_train")
    data = make_data(root, num_train=16, num_val=4, size=96)
    run = root / "run"
    code = cli.main(["train", "--config", TINY, "--output", str(run),
                     "--verbose", "0"] + _sets(DATA + data + [
                         "train.epochs=5", "train.steps_per_epoch=8",
                         "train.optimizer=adamw", "train.learning_rate=0.003",
                         "train.eval_every=5", "train.checkpoint_every=5",
                         "train.tensorboard_images=2"]))
    assert code == 0
    return root, run


def test_cli_train_lowers_the_loss_and_logs_every_term(trained):
    root, run = trained
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3, 4]
    history = {k: np.array([float(r[k]) for r in rows]) for k in rows[0]
               if rows[0][k] != "NA"}  # Keras' empty val_* columns
    for name in ("loss", "loss_cls", "loss_bbox", "loss_mask", "loss_segm",
                 "learning_rate"):
        assert np.all(np.isfinite(history[name])), name
    loss = history["loss"]
    assert loss[-1] < 0.8 * loss[0], loss
    assert history["loss_cls"][-1] < 0.6 * history["loss_cls"][0]
    np.testing.assert_allclose(
        loss, sum(history[k] for k in ("loss_cls", "loss_bbox", "loss_mask",
                                       "loss_segm")), rtol=1e-4)
    # The COCO evaluation ran after the last epoch (the CSV keeps the
    # first epoch's columns): best.keras by val mask AP, its results.
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["epoch"] == 5 and 0.0 <= best["val_mask_AP"] <= 1.0
    results = json.loads((run / "eval_results.json").read_text())
    assert set(results) == {"bbox", "segm"}
    assert os.listdir(run / "logs" / "images")
    network = keras.models.load_model(run / "model.keras")
    assert isinstance(network, Yolact) and network.num_classes == 5
    assert (run / "checkpoints" / "epoch_005.keras").exists()
    from orienmask_tf.training.callbacks import read_backup_state

    state = read_backup_state(str(run / "backup"))
    assert state == {"epoch": 5, "step": 0, "global_step": 40,
                     "position": 40}
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["model"]["architecture"] == "yolact"
    assert written["targets"]["assigner"] == "atss_maiou"
    assert "anchors" not in written
    assert written["data"]["class_names"] == [
        "circle", "rectangle", "triangle", "ellipse", "star"]


def test_cli_evaluate_writes_metrics_and_results(trained, capsys):
    root, run = trained
    out, results = root / "eval.json", root / "val_results.json"
    assert cli.main(["evaluate", "--model", str(run / "model.keras"),
                     "--output", str(out), "--results-output", str(results),
                     "--set", "decode.score_thr=0.0"]) == 0
    assert "4 val images" in capsys.readouterr().out
    stats = json.loads(out.read_text())
    for iou_type in ("bbox", "segm"):
        assert 0.0 <= stats[iou_type]["AP"] <= 1.0
    written = json.loads(results.read_text())
    assert set(written) == {"bbox", "segm"}
    boxes, masks = written["bbox"], written["segm"]
    assert boxes and len(boxes) == len(masks), "score_thr 0 keeps them all"
    val = json.loads((root / "shapes" / "annotations"
                      / "instances_val.json").read_text())
    assert {d["image_id"] for d in boxes} <= {i["id"] for i in val["images"]}
    assert {d["category_id"] for d in boxes} <= {
        c["id"] for c in val["categories"]}
    for box, mask in zip(boxes[:20], masks):
        # Boxes in original-image pixels (96 x 96), masks as RLE.
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96.01 and y + h <= 96.01
        assert mask["segmentation"]["size"] == [96, 96]


def test_cli_predict_draws_and_writes_coco_json(trained):
    root, run = trained
    images = root / "shapes" / "val"
    out, dets = root / "drawn", root / "dets.json"
    assert cli.main(["predict", "--model", str(run / "model.keras"),
                     "--images", str(images), "--output", str(out),
                     "--score-threshold", "0", "--coco-json", str(dets),
                     "--set", "decode.score_thr=0.0"]) == 0
    results = testing.assert_drawn_predictions(
        images, out, dets,
        ("segmentation", "bbox", "score", "file_name", "category_name"))
    assert {r["category_name"] for r in results} <= {
        "circle", "rectangle", "triangle", "ellipse", "star"}


def test_model_and_config_of_different_architectures_are_refused(
        trained, capsys):
    _, run = trained
    code = cli.main(["evaluate", "--model", str(run / "model.keras"),
                     "--config", str(testing.CONFIGS_DIR / "tiny.yaml")])
    assert code == 2
    assert "the file holds the Yolact network, but the config says " \
        "model.architecture=orienmask" in capsys.readouterr().err


def test_cli_convert_random_mmdet_checkpoint(tmp_path, capsys):
    config = load_config(TINY, ["targets.assigner=fixed_iou"])
    state_dict = testing.random_family_state_dict(config, seed=4)
    assert state_dict["bbox_head.conv_cls.weight"].shape[0] == 3 * 4
    checkpoint = tmp_path / "yolact_mmdet.npz"
    np.savez(checkpoint, **state_dict)
    output = tmp_path / "out" / "yolact.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--set", "targets.assigner=fixed_iou", "--output",
                     str(output)]) == 0
    assert "into the full of YOLACT (mmdet layout) (3 classes)" in \
        capsys.readouterr().out
    model = keras.models.load_model(output)
    assert isinstance(model, Yolact) and model.num_anchors == 3
    back = state_dict_from_model(model)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)
    # The ATSS config has 1 anchor per location: the shapes are refused,
    # nothing is written.
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(tmp_path / "atss.keras")]) == 2
    err = capsys.readouterr().err
    assert "yolact_mmdet.npz" in err and "bbox_head.conv_cls.weight" in err
    assert not (tmp_path / "atss.keras").exists()


def test_torchvision_backbone_initialises_training(tmp_path, capsys):
    config = load_config(TINY)
    full = testing.random_family_state_dict(config, seed=5)
    torchvision = {k[len("backbone."):]: v for k, v in full.items()
                   if k.startswith("backbone.")}
    torchvision["fc.weight"] = np.zeros((1000, 128), np.float32)
    torchvision["fc.bias"] = np.zeros((1000,), np.float32)
    checkpoint = tmp_path / "resnet50.npz"
    np.savez(checkpoint, **torchvision)
    converted = tmp_path / "init.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(converted)]) == 0
    out = capsys.readouterr().out
    assert "into the backbone of YOLACT (torchvision layout)" in out
    assert "skipped (2): fc.bias, fc.weight" in out
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--part", "full", "--output",
                     str(tmp_path / "x.keras")]) == 2
    assert "--part full: a torchvision YOLACT checkpoint loads the " \
        "backbone" in capsys.readouterr().err

    from orienmask_tf.training.fit import build_network

    source = keras.models.load_model(converted)
    network = build_network(load_config(
        TINY, [f"train.init_weights={converted}"]))
    weights = state_dict_from_model(network)
    for key, value in torchvision.items():
        if not key.startswith("fc.") and \
                not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(weights["backbone." + key], value,
                                          err_msg=key)
    # The rest (FPN, heads) is the converted file's fresh initialisation.
    np.testing.assert_array_equal(
        network.get_layer("bbox_head.conv_cls").kernel.numpy(),
        source.get_layer("bbox_head.conv_cls").kernel.numpy())
    # An OrienMask file cannot initialise YOLACT.
    orienmask = tmp_path / "orienmask.keras"
    testing.random_tiny_model().save(orienmask)
    with pytest.raises(ValueError, match=r"train.init_weights .*orienmask."
                                         r"keras: the file holds the "
                                         r"OrienMask network, but the config "
                                         r"says model.architecture=yolact"):
        build_network(load_config(TINY, [f"train.init_weights={orienmask}"]))


def test_one_device_equals_mirrored_two_cpus(tmp_path):
    out = tmp_path / "parity.json"
    code, log = finish(run_script("../yolact/run_parity.py", {
        "root": str(tmp_path), "out": str(out)}), timeout=600)
    assert code == 0, log[-3000:]
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    assert result["max_change"] > 1e-4  # the step did something
    # Relative to the update: a 2x-gradient bug would give ~1.
    assert result["max_rel_diff"] < 1e-3, result


def test_trained_model_file_alone_is_enough(trained, tmp_path, monkeypatch,
                                            capsys):
    """Only model.keras, copied to an empty folder: predict, evaluate and
    export need no config (the file carries its experiment)."""
    root, run = trained
    testing.assert_model_file_travels_alone(
        run / "model.keras", tmp_path, root / "shapes", monkeypatch, capsys)
