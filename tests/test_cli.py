import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from orienmask_tf import cli
from orienmask_tf.families.orienmask.checkpoint import state_dict_from_model
from tests import testing

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")


def _console_script():
    script = os.path.join(os.path.dirname(sys.executable), "orienmask-tf")
    assert os.path.exists(script), "install the package: pip install -e ."
    return script


def test_console_script_help():
    result = subprocess.run([_console_script(), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "info" in result.stdout and "convert" in result.stdout


def test_console_script_info_on_tiny_config():
    result = subprocess.run([_console_script(), "info", "--config", TINY],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "box_s32     [1, 2, 3, 24]" in result.stdout
    assert "orien_s8    [1, 16, 24, 6]" in result.stdout


@pytest.mark.large
@pytest.mark.parametrize("path", testing.SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_info_on_every_shipped_config(path, capsys):
    assert cli.main(["info", "--config", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    height, width = info["input_shape"][1:3]
    if info["architecture"] == "yolact":
        _check_yolact_info(info)
        return
    assert info["output_shapes"]["orien_s32"][1:3] == [height // 4, width // 4]
    official = {"fpn_plus": "OrienMaskYOLOFPNPlus", "base": "OrienMaskYOLO"}
    if info["model"]["num_classes"] == 80 and info["model"]["width"] == 32:
        listing = testing.official_model_listing(
            official[info["model"]["variant"]])
        assert info["trainable_parameters"] == listing["num_parameters"]
        assert (info["total_parameters"]
                == listing["num_params_plus_bn_running_stats"])


def _check_yolact_info(info):
    shapes = info["output_shapes"]
    p3 = shapes["cls_score_l0"][1:3]
    assert shapes["protos"][1:3] == [2 * p3[0], 2 * p3[1]]
    anchors = info["model"]["num_anchors"]
    assert info["anchors"] == [
        shapes[f"cls_score_l{i}"][1] * shapes[f"cls_score_l{i}"][2] * anchors
        for i in range(5)]
    if info["model"]["num_classes"] == 80 and \
            info["model"]["fpn_channels"] == 256 and \
            info["model"].get("neck") == "fpn_carafe":
        # maYOLACT and its Table 4 rows: the official maYOLACT-550 count
        # (DCN + FPN_CARAFE + 2 anchors) less what a row leaves out.
        listing = json.loads(testing.reference_path(
            "yolact", "state_dict_mayolact_r50_550_mmdet.json").read_text())
        entries = listing["state_dict"]
        per_anchor = sum(e["numel"] for e in entries if e["key"].startswith(
            ("bbox_head.conv_cls.", "bbox_head.conv_reg.",
             "bbox_head.conv_coeff."))) // 2
        offsets = sum(e["numel"] for e in entries if ".conv_offset." in e["key"])
        expected = listing["num_parameters"] - (2 - anchors) * per_anchor
        if not any(info["model"]["stage_with_dcn"]):
            expected -= offsets
        assert info["trainable_parameters"] == expected
        assert shapes["cls_score_l0"][-1] == anchors * 81
    elif info["model"]["num_classes"] == 80 and \
            info["model"]["fpn_channels"] == 256:
        # maIoU ResNet-50 YOLACT: mmdet's parameter count (the fixture's
        # ATSS listing; 3 anchors for the fixed-IoU baseline).
        listing = json.loads(testing.reference_path(
            "yolact", "state_dict_yolact_r50_550_mmdet.json").read_text())
        expected = {1: listing["num_parameters"], 3: 35_293_711}[anchors]
        assert expected == (34_754_341 if anchors == 1 else 35_293_711)
        assert info["trainable_parameters"] == expected
        assert shapes["cls_score_l0"][-1] == anchors * 81


def test_info_on_yolact_tiny(capsys):
    tiny = str(testing.CONFIGS_DIR / "yolact_tiny.yaml")
    assert cli.main(["info", "--config", tiny, "--set",
                     "targets.assigner=fixed_iou"]) == 0
    out = capsys.readouterr().out
    assert "YOLACT classes=3 anchors/location=3 protos=8" in out
    assert "cls_score_l0   [1, 12, 16, 12]" in out  # 3 x (3 + 1) channels
    assert "protos         [1, 24, 32, 8]" in out
    assert "anchors     771 (576 + 144 + 36 + 12 + 3 on P3..P7; " \
           "targets.assigner=fixed_iou" in out


def test_info_with_overrides_and_image_size(capsys):
    assert cli.main(["info", "--config", TINY, "--set", "model.num_classes=1",
                     "--image-size", "96", "160", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "box_s16     [2, 6, 10, 18]" in out
    assert "classes=1" in out


def test_info_reports_config_errors(capsys):
    assert cli.main(["info", "--config", TINY, "--set", "model.widht=3"]) == 2
    assert "unknown key 'model.widht'" in capsys.readouterr().err
    assert cli.main(["info", "--config", TINY, "--image-size", "64", "90"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_convert_npz_to_keras(tmp_path, capsys):
    state_dict = testing.tiny_state_dict(seed=7)
    checkpoint = tmp_path / "official.npz"
    np.savez(checkpoint, **state_dict)
    output = tmp_path / "out" / "model.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = keras.models.load_model(output)
    back = state_dict_from_model(model)
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.torch
def test_convert_official_pth_to_keras_and_backbone_only(tmp_path, capsys):
    import torch

    state_dict = testing.tiny_state_dict(seed=8)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}
    checkpoint = tmp_path / "orienmask_yolo.pth"
    torch.save({"state_dict": tensors, "config": {"model": {
        "type": "OrienMaskYOLOFPNPlus", "num_anchors": 3, "num_classes": 3}}},
        checkpoint)
    output = tmp_path / "model.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(output)]) == 0
    back = state_dict_from_model(keras.models.load_model(output))
    np.testing.assert_array_equal(back["orien_head.5.weight"],
                                  state_dict["orien_head.5.weight"])

    backbone = tmp_path / "pretrained_darknet53.pth"
    torch.save({k[len("backbone."):]: v for k, v in tensors.items()
                if k.startswith("backbone.")}, backbone)
    assert cli.main(["convert", "--checkpoint", str(backbone), "--config",
                     TINY, "--output", str(output)]) == 0
    assert "into the backbone" in capsys.readouterr().out
    back = state_dict_from_model(keras.models.load_model(output))
    np.testing.assert_array_equal(back["backbone.conv6.1.conv.1.conv_block.0.weight"],
                                  state_dict["backbone.conv6.1.conv.1.conv_block.0.weight"])

    # The official config says "base": a clear error before any key is compared.
    torch.save({"state_dict": tensors, "config": {"model": {
        "type": "OrienMaskYOLO", "num_classes": 3}}}, checkpoint)
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(output)]) == 2
    assert "set model.variant=base" in capsys.readouterr().err


def test_convert_reports_bad_checkpoints(tmp_path, capsys):
    state_dict = testing.tiny_state_dict(seed=9)
    del state_dict["neck4.2.conv_block.1.running_mean"]
    checkpoint = tmp_path / "partial.npz"
    np.savez(checkpoint, **state_dict)
    output = tmp_path / "model.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "partial.npz" in err
    assert "missing keys (1): neck4.2.conv_block.1.running_mean" in err
    assert not output.exists()
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(tmp_path / "model.h5")]) == 2
    assert "expected a .keras file" in capsys.readouterr().err
