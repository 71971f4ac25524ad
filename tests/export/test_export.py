import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf import cli
from orienmask_tf.config import load_config
from orienmask_tf.export.serving import InferenceModel
from tests import testing

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")
RUNNER = os.path.join(os.path.dirname(__file__), "run_exported.py")


def _run_fresh(kind, path, inputs, tmp_path):
    """Run an exported artifact in a new Python process; its outputs."""
    src, dst = tmp_path / f"in_{kind}.npz", tmp_path / f"out_{kind}.npz"
    np.savez(src, **inputs)
    result = subprocess.run(
        [sys.executable, RUNNER, kind, str(path), str(src), str(dst)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(dst) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    config = load_config(TINY)
    model = testing.random_tiny_model(seed=11)
    model_path = tmp / "tiny.keras"
    model.save(model_path)
    calibration = tmp / "calibration"
    calibration.mkdir()
    for i in range(4):
        image = (testing.random_images(1, 64, 96, seed=20 + i)[0] * 255)
        cv2.imwrite(str(calibration / f"{i}.png"), image.astype(np.uint8))
    base = ["--model", str(model_path), "--config", TINY]
    paths = {"saved_model": tmp / "serving" / "tiny" / "1",
             "saved_model_thresholded": tmp / "serving" / "tiny" / "2"}
    assert cli.main(["export", *base, "--output", str(tmp / "serving")]) == 0
    assert cli.main(["export", *base, "--output", str(tmp / "serving"),
                     "--score-threshold", "0.5"]) == 0  # next version: 2
    for quant in (None, "fp16", "int8-dynamic", "int8"):
        path = tmp / f"tiny_{quant or 'fp32'}.tflite"
        extra = ["--quantize", quant] if quant else []
        if quant == "int8":
            extra += ["--calibration-images", str(calibration)]
        assert cli.main(["export", *base, "--format", "tflite", *extra,
                         "--output", str(path)]) == 0
        paths[f"tflite_{quant or 'fp32'}"] = path
    paths["onnx"] = tmp / "tiny.onnx"
    assert cli.main(["export", *base, "--format", "onnx", "--output",
                     str(paths["onnx"])]) == 0
    decode = dict(conf_thresh=config.decode.conf_thresh, nms="greedy",
                  nms_threshold=0.5, nms_pre=400, nms_post=100,
                  orien_thresh=0.3)
    return dict(model=model, config=config, paths=paths, tmp=tmp,
                xla=InferenceModel(model, config.image_size,
                                   config.anchor_array(), decode),
                plain=InferenceModel(model, config.image_size,
                                     config.anchor_array(), decode,
                                     jit_compile=False))




def test_saved_model_layout_and_signatures(exported):
    path = exported["paths"]["saved_model"]
    assert (path / "saved_model.pb").exists()
    assert (path / "assets.extra" / "orienmask.json").exists()
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "serve_jpeg",
                                      "serve_raw"}


def test_saved_model_reproduces_keras_in_a_fresh_process(exported, tmp_path):
    images = testing.uint8_images(2, 80, 120, seed=3)  # not the network size
    got = _run_fresh("saved_model", exported["paths"]["saved_model"],
                     {"images": images}, tmp_path)
    expected = {k: v.numpy() for k, v in
                exported["xla"].detect_uint8(images).items()}
    testing.assert_same_detections(got, expected)
    assert got["masks"].shape == (2, 100, 64, 96)
    assert np.all(got["num_detections"] > 0)
    # Boxes are in the original frame: x up to 120, y up to 80.
    valid = got["classes"] >= 0
    assert got["boxes"][valid][:, 2].max() <= 120.0
    assert got["boxes"][valid][:, 3].max() <= 80.0
    # Eager Keras + plain decode agree with the XLA graph.
    plain = {k: v.numpy() for k, v in
             exported["plain"].detect_uint8(images).items()}
    testing.assert_same_detections(plain, expected)


def test_score_threshold_keeps_confident_detections_only(exported):
    images = testing.uint8_images(2, 64, 96, seed=12)
    loaded = tf.saved_model.load(str(exported["paths"]["saved_model_thresholded"]))
    got = {k: v.numpy() for k, v in
           loaded.signatures["serving_default"](images=tf.constant(images)).items()}
    full = {k: v.numpy() for k, v in
            exported["xla"].detect_uint8(images).items()}
    for b in range(2):
        keep = full["scores"][b] >= 0.5
        n = int(keep.sum())
        assert got["num_detections"][b] == n
        np.testing.assert_array_equal(got["classes"][b, :n],
                                      full["classes"][b][keep])
        np.testing.assert_array_equal(got["masks"][b, :n],
                                      full["masks"][b][keep])
        assert np.all(got["classes"][b, n:] == -1)
    assert got["masks"].shape[1] == got["num_detections"].max() < 100


def test_serve_jpeg_and_serve_raw(exported, tmp_path):
    images = testing.uint8_images(2, 64, 96, seed=4)
    encoded = np.array([cv2.imencode(".png", im[:, :, ::-1])[1].tobytes()
                        for im in images], dtype=object)
    got = _run_fresh("saved_model_jpeg", exported["paths"]["saved_model"],
                     {"encoded": encoded.astype(bytes)}, tmp_path)
    expected = {k: v.numpy() for k, v in
                exported["xla"].detect_uint8(images).items()}
    testing.assert_same_detections(got, expected)
    inputs = testing.random_images(1, 64, 96, seed=5)
    raw = _run_fresh("saved_model_raw", exported["paths"]["saved_model"],
                     {"inputs": inputs}, tmp_path)
    for key, value in exported["model"](inputs, training=False).items():
        np.testing.assert_allclose(raw[key], value, atol=1e-5, err_msg=key)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    cli_path = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    path = str(exported["paths"]["saved_model"])
    show = subprocess.run([cli_path, "show", "--dir", path, "--all"],
                          capture_output=True, text=True, timeout=300)
    assert show.returncode == 0, show.stderr[-2000:]
    assert "serve_jpeg" in show.stdout and "DT_UINT8" in show.stdout
    image_file = tmp_path / "image.npy"
    np.save(image_file, testing.uint8_images(1, 48, 72, seed=10))
    run = subprocess.run(
        [cli_path, "run", "--dir", path, "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs",
         f"images={image_file}"],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "num_detections" in run.stdout


@pytest.fixture(scope="module")
def serving(exported):
    return tf.saved_model.load(str(exported["paths"]["saved_model"]))


@pytest.mark.parametrize("images,message", [
    (np.zeros((1, 0, 8, 3), np.uint8), "height > 0"),
    (np.zeros((1, 8, 8, 2), np.uint8), "1 \\(gray\\), 3 \\(RGB\\) or 4"),
    (np.zeros((8, 8, 3), np.uint8), "uint8 \\[batch, height, width, channels\\]"),
])
def test_bad_images_are_invalid_argument(serving, images, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serving.signatures["serving_default"](images=tf.constant(images))


def test_wrong_dtype_and_bad_bytes_are_rejected(serving):
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        serving.signatures["serving_default"](
            images=tf.zeros((1, 8, 8, 3), tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Unknown image file format"):
        serving.signatures["serve_jpeg"](images=tf.constant([b"not an image"]))


def test_gray_and_rgba_images_are_converted(serving):
    gray = testing.uint8_images(1, 40, 60, seed=6)[..., :1]
    rgb = np.repeat(gray, 3, axis=-1)
    rgba = np.concatenate([rgb, np.full_like(gray, 7)], axis=-1)
    fn = serving.signatures["serving_default"]
    reference = fn(images=tf.constant(rgb))
    for variant in (gray, rgba):
        out = fn(images=tf.constant(variant))
        for key in ("boxes", "scores", "classes", "masks"):
            np.testing.assert_array_equal(out[key], reference[key])


def test_tflite_fp32_reproduces_keras_in_a_fresh_process(exported, tmp_path):
    inputs = testing.random_images(1, 64, 96, seed=7)
    got = _run_fresh("tflite", exported["paths"]["tflite_fp32"],
                     {"inputs": inputs}, tmp_path)
    expected = {k: v.numpy() for k, v in exported["plain"].detect(inputs).items()}
    testing.assert_same_detections(got, expected)


def test_onnx_reproduces_keras_in_a_fresh_process(exported, tmp_path):
    inputs = testing.random_images(1, 64, 96, seed=8)
    got = _run_fresh("onnx", exported["paths"]["onnx"], {"inputs": inputs},
                     tmp_path)
    expected = {k: v.numpy() for k, v in exported["plain"].detect(inputs).items()}
    testing.assert_same_detections(got, expected)


@pytest.mark.parametrize("quant", ["fp16", "int8-dynamic", "int8"])
def test_quantized_tflite_stays_close(exported, tmp_path, quant):
    # Documented tolerances (README, Deployment): same number of detections,
    # and among detections that keep their class, >= 99% equal mask pixels
    # for fp16 and >= 95% for the int8 variants.
    inputs = testing.random_images(1, 64, 96, seed=9)
    got = _run_fresh("tflite", exported["paths"][f"tflite_{quant}"],
                     {"inputs": inputs}, tmp_path)
    if quant == "int8":  # network only: raw outputs, decoded in float here
        assert set(got) == {"box_s32", "box_s16", "box_s8", "orien_s32",
                            "orien_s16", "orien_s8"}
        got = {k: v.numpy() for k, v in exported["plain"].decode_raw(got).items()}
    expected = {k: v.numpy() for k, v in exported["plain"].detect(inputs).items()}
    np.testing.assert_array_equal(got["num_detections"],
                                  expected["num_detections"])
    same = got["classes"] == expected["classes"]
    agreement = np.mean(got["masks"][same] == expected["masks"][same])
    assert agreement >= (0.99 if quant == "fp16" else 0.95), agreement


def test_export_reports_bad_arguments(exported, capsys):
    base = ["export", "--model", str(exported["tmp"] / "tiny.keras"),
            "--config", TINY]
    assert cli.main([*base, "--format", "tflite", "--quantize", "int8",
                     "--output", str(exported["tmp"] / "x.tflite")]) == 2
    assert "--calibration-images" in capsys.readouterr().err
    assert cli.main([*base, "--set", "model.num_classes=5"]) == 2
    assert "has num_classes=3 but the config says model.num_classes=5" \
        in capsys.readouterr().err
    assert cli.main(["export", "--model", "missing.keras", "--config",
                     TINY]) == 2
    assert "no such file" in capsys.readouterr().err
