import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from orienmask_tf import cli
from orienmask_tf.config import load_config
from orienmask_tf.export.quantize import splice_tflite
from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.ops.box_ops import pairwise_iou
from tests import testing

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")
# Runs the end-to-end int8 model in a new process: nothing of the Keras
# model or of the conversion is in memory there.
FRESH = """
import sys
import numpy as np
from orienmask_tf.export.quantize import int8_runner
data = np.load(sys.argv[2])
np.savez(sys.argv[3], **int8_runner(sys.argv[1])(data["images"]))
"""


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quantized")
    config = load_config(TINY)
    model = testing.random_tiny_model(seed=11)
    model_path = tmp / "tiny.keras"
    model.save(model_path)
    calibration = tmp / "calibration"
    calibration.mkdir()
    for i in range(4):
        image = testing.random_images(1, 64, 96, seed=20 + i)[0] * 255
        cv2.imwrite(str(calibration / f"{i}.png"), image.astype(np.uint8))
    paths = {b: tmp / f"tiny_int8_b{b}.tflite" for b in (1, 2)}
    for batch, path in paths.items():
        assert cli.main(["--quiet", "export", "--model", str(model_path),
                         "--config", TINY, "--quantize", "int8",
                         "--calibration-images", str(calibration),
                         "--batch-size", str(batch),
                         "--output", str(path)]) == 0
    anchors, decode = config.family.inference_args(config)
    plain = InferenceModel(model, config.image_size, anchors, decode,
                           jit_compile=False)
    return dict(paths=paths, plain=plain, tmp=tmp, model_path=model_path)


def _run_fresh(path, images, tmp_path):
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, images=images)
    result = subprocess.run(
        [sys.executable, "-c", FRESH, str(path), str(src), str(dst)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(dst) as data:
        return {k: data[k] for k in data.files}


def _matched(got, expected):
    """Share of the expected detections that have a detection of the same
    class at box IoU >= 0.5 in ``got`` (quantization may reorder detections
    of close scores), and the mean equal-pixel fraction of their masks."""
    matched, agreement = [], []
    for b in range(len(expected["num_detections"])):
        n = int(expected["num_detections"][b])
        m = int(got["num_detections"][b])
        iou = pairwise_iou(expected["boxes"][b, :n], got["boxes"][b, :m],
                           eps=1e-6)
        same = expected["classes"][b, :n, None] == got["classes"][b, None, :m]
        iou = np.where(same, iou, -1.0)
        matched.append(iou.max(axis=1) >= 0.5)
        best = iou.argmax(axis=1)
        agreement.append(np.mean(
            expected["masks"][b, :n] == got["masks"][b, best], axis=(1, 2)))
    return (np.mean(np.concatenate(matched)),
            np.mean(np.concatenate(agreement)))


@pytest.mark.parametrize("batch", [1, 2])
def test_int8_end_to_end_reloads_and_matches_fp32(quantized, tmp_path,
                                                  batch):
    # uint8 pixels of another size than the network input (64x96): the
    # resize, the int8 network, the float decoding and the mapping of the
    # boxes to the original 80x120 pixels all run inside the one file, and
    # the boxes are compared with fp32 boxes in that frame.
    images = testing.uint8_images(batch, 80, 120, seed=3)
    got = _run_fresh(quantized["paths"][batch], images, tmp_path)
    expected = {k: np.asarray(v) for k, v in
                quantized["plain"].detect_uint8(images).items()}
    assert set(got) == set(expected)
    assert got["masks"].dtype == np.uint8 and got["classes"].dtype == np.int32
    assert got["boxes"].shape[0] == batch
    assert got["masks"].shape[2:] == (64, 96)
    np.testing.assert_array_equal(got["num_detections"],
                                  expected["num_detections"])
    matched, agreement = _matched(got, expected)
    assert matched >= 0.8, matched
    assert agreement >= 0.95, agreement


def test_int8_model_refuses_another_batch(quantized):
    from orienmask_tf.export.quantize import int8_runner

    run = int8_runner(quantized["paths"][1])
    with pytest.raises(ValueError, match=r"uint8 \(1, height, width, 3\)"):
        run(testing.uint8_images(2, 40, 40, seed=1))
    with pytest.raises(ValueError, match="uint8"):
        run(np.zeros((1, 40, 40, 3), np.float32))


def test_export_int8_defaults_and_errors(quantized, capsys, monkeypatch):
    base = ["export", "--model", str(quantized["model_path"]), "--config",
            TINY]
    # No --calibration-images: the experiment's data.train_images, which
    # the tiny config leaves empty -> a one-line error naming both.
    assert cli.main([*base, "--quantize", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--calibration-images" in err and "data.train_images" in err
    assert cli.main([*base, "--quantize", "int8", "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in capsys.readouterr().err
    assert cli.main([*base, "--format", "onnx", "--quantize", "int8"]) == 2
    assert "--quantize applies to --format tflite" in capsys.readouterr().err


def test_splice_reports_unwired_inputs():
    with pytest.raises(ValueError, match="input 'images' is not wired"):
        splice_tflite([("a", _identity_model(), {})], ["images"],
                      {"out": "a/out"})


def _identity_model():
    import tensorflow as tf

    from orienmask_tf.export.quantize import _to_flatbuffer

    spec = tf.TensorSpec([1, 4], tf.float32, name="images")
    return _to_flatbuffer((lambda x: {"out": x * 2.0}, [spec]))


def test_splice_joins_models_in_order(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from orienmask_tf.export.quantize import _to_flatbuffer

    first = _to_flatbuffer((lambda x: {"y": x * 2.0 + 1.0},
                            [tf.TensorSpec([2, 3], tf.float32,
                                           name="images")]))

    def second_fn(y, images):
        # A while loop: its cond / body subgraphs must be renumbered.
        total = tf.while_loop(lambda i, acc: i < 3,
                              lambda i, acc: (i + 1, acc + y),
                              (tf.constant(0), tf.zeros_like(y)))[1]
        return {"z": total - images}

    second = _to_flatbuffer((second_fn, [
        tf.TensorSpec([2, 3], tf.float32, name="y"),
        tf.TensorSpec([2, 3], tf.float32, name="images")]))
    joined = splice_tflite(
        [("a", first, {"images": "images"}),
         ("b", second, {"y": "a/y", "images": "images"})],
        inputs=["images"], outputs={"z": "b/z", "y": "a/y"})
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(joined))
    assert len(model.subgraphs) == 3  # main + the loop's cond and body
    runner = Interpreter(model_content=joined).get_signature_runner("serve")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = runner(images=x)
    np.testing.assert_allclose(out["y"], 2 * x + 1)
    np.testing.assert_allclose(out["z"], 3 * (2 * x + 1) - x)


def test_benchmark_command_times_the_int8_route(capsys):
    assert cli.main(["--quiet", "benchmark", "--config", TINY, "--formats",
                     "tflite_int8_e2e", "--batch-sizes", "1", "2",
                     "--warmup", "0", "--runs", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| tflite_int8_e2e |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "2"]


def test_score_threshold_compacts_like_serving_default(quantized):
    from orienmask_tf.export.quantize import convert_int8_end_to_end
    from orienmask_tf.export.quantize import int8_runner

    plain = quantized["plain"]
    images = testing.uint8_images(1, 70, 90, seed=5)
    full = {k: np.asarray(v) for k, v in plain.detect_uint8(images).items()}
    n = int(full["num_detections"][0])
    threshold = float(np.sort(full["scores"][0, :n])[n // 2])
    calibration = [testing.random_images(1, 64, 96, seed=30 + i)
                   for i in range(2)]
    run = int8_runner(convert_int8_end_to_end(
        plain.model, plain.image_size, plain.anchors, plain.decode_kwargs,
        calibration, score_threshold=threshold))
    got = run(images)
    expected = {k: np.asarray(v) for k, v in InferenceModel(
        plain.model, plain.image_size, plain.anchors, plain.decode_kwargs,
        jit_compile=False, score_threshold=threshold).detect_uint8(
            images).items()}
    kept = int(got["num_detections"][0])
    assert 0 < kept < n
    assert abs(kept - int(expected["num_detections"][0])) <= max(2, kept // 5)
    assert np.all(got["scores"][0, :kept] >= threshold)
    assert got["boxes"].shape[1] == kept   # cut to the kept count
    matched, agreement = _matched(got, expected)
    assert matched >= 0.8 and agreement >= 0.95, (matched, agreement)


def test_no_detection_gives_empty_outputs(quantized):
    # Random YOLACT weights give no detection above score_thr: the file
    # keeps static shapes and the runner cuts to zero rows.
    from orienmask_tf.export.quantize import convert_int8_end_to_end
    from orienmask_tf.export.quantize import convert_int8_network
    from orienmask_tf.export.quantize import int8_runner

    plain = quantized["plain"]
    args = (plain.model, plain.image_size, plain.anchors)
    network = convert_int8_network(
        *args, plain.decode_kwargs, [testing.random_images(1, 64, 96, 40)])
    images = testing.uint8_images(1, 50, 60, seed=6)
    for threshold, decode in ((2.0, plain.decode_kwargs),
                              (0.0, dict(plain.decode_kwargs,
                                         conf_thresh=0.999))):
        out = int8_runner(convert_int8_end_to_end(
            *args, decode, score_threshold=threshold, network=network))(
                images)
        assert out["num_detections"].tolist() == [0]
        assert out["boxes"].shape == (1, 0, 4)
        assert out["masks"].shape == (1, 0, 64, 96)
