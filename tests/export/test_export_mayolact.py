"""SavedModel, TFLite fp32 and ONNX of a small maYOLACT (DCNv2 backbone,
CARAFE FPN, two anchors per location): each artifact is reloaded in a fresh
Python process and reproduces the in-process Keras network + decoding, with
the rules of the YOLACT export tests (``test_export_yolact.py``)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import orienmask_tf as om
from orienmask_tf.config import load_config
from orienmask_tf.export.onnx import export_onnx
from orienmask_tf.export.saved_model import export_saved_model
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.export.tflite import convert_tflite
from orienmask_tf.inference.segmenter import preset_path
from tests import testing

RUNNER = os.path.join(os.path.dirname(__file__), "run_exported.py")


def _numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export_mayolact")
    config = load_config(preset_path("mayolact_tiny"),
                         ["decode.score_thr=0.0"])
    family = config.family
    # Non-degenerate random weights with non-zero DCN offsets, through the
    # family's own converter.
    network = testing.random_family_network(config, seed=5)
    assert any(float(np.abs(w.numpy()).max()) > 0 for w in network.weights
               if "conv_offset" in w.path)
    anchors, decode = family.inference_args(config)
    common = (network, config.image_size, anchors, decode)
    paths = {"saved_model": tmp / "serving" / "1",
             "tflite_fp32": tmp / "tiny.tflite", "onnx": tmp / "tiny.onnx"}
    export_saved_model(*common, str(paths["saved_model"]))
    paths["tflite_fp32"].write_bytes(convert_tflite(*common))
    export_onnx(*common, paths["onnx"])
    height, width = config.image_size
    images = testing.uint8_images(2, 80, 120, seed=3)
    inputs = testing.random_images(1, height, width, seed=7)
    jobs = {"saved_model": ("saved_model", {"images": images}),
            "tflite_fp32": ("tflite", {"inputs": inputs}),
            "onnx": ("onnx", {"inputs": inputs})}
    commands = []
    for name, (kind, data) in jobs.items():
        np.savez(tmp / f"in_{name}.npz", **data)
        commands.append([kind, str(paths[name]), str(tmp / f"in_{name}.npz"),
                         str(tmp / f"out_{name}.npz")])
    (tmp / "jobs.json").write_text(json.dumps(commands))
    result = subprocess.run(
        [sys.executable, RUNNER, "--jobs", str(tmp / "jobs.json")],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = {}
    for name, (_, data) in jobs.items():
        with np.load(tmp / f"out_{name}.npz") as out:
            fresh[name] = (data, {k: out[k] for k in out.files})
    return dict(common=common, fresh=fresh, config=config)


def test_saved_model_reproduces_keras_in_a_fresh_process(exported):
    inputs, got = exported["fresh"]["saved_model"]
    expected = _numpy(InferenceModel(*exported["common"]).detect_uint8(
        inputs["images"]))
    assert np.all(expected["num_detections"] > 0)
    testing.assert_same_detections(got, expected)
    assert np.any(got["masks"]) and not np.all(got["masks"])


@pytest.mark.parametrize("name", ["tflite_fp32", "onnx"])
def test_float_tflite_and_onnx_reproduce_keras(exported, name):
    inputs, got = exported["fresh"][name]
    expected = _numpy(InferenceModel(*exported["common"], jit_compile=False)
                      .detect(inputs["inputs"]))
    assert np.all(expected["num_detections"] > 0)
    testing.assert_same_detections(got, expected)


def test_table4_configs_and_anchor_counts():
    rows = {"yolact_r50_550_fixed_iou": (3, 19248, 28.5),
            "yolact_r50_550_atss_maiou": (1, 6416, 30.4),
            "mayolact_table4_carafe": (1, 6416, 31.4),
            "mayolact_table4_dcn": (1, 6416, 33.2),
            "mayolact_table4_anchors": (2, 12832, 33.5),
            "mayolact_r50_550": (2, 12832, 34.8)}
    for name, (per_location, count, mask_ap) in rows.items():
        config = load_config(preset_path(name))
        assert config.model_kwargs()["num_anchors"] == per_location, name
        assert len(config.anchor_array()) == count, name
        assert f"{mask_ap} mask AP" in config.reproduces, name
    final = load_config(preset_path("mayolact_r50_550"))
    assert final.model.neck == "fpn_carafe"
    assert final.model.stage_with_dcn == (False, True, True, True)
    assert final.model.deformable_groups == 4
    assert final.train.schedule == "cosine_epoch"
    assert final.train.learning_rate == 0.008
    assert final.targets.assigner == "atss_maiou"
    big = load_config(preset_path("mayolact_r50_700"))
    assert len(big.anchor_array()) == 20642
    assert "37.7 mask AP" in big.reproduces
    assert om.presets()["mayolact_r50_550"]["family"] == "yolact"
