import json

import numpy as np
import pytest

from orienmask_tf import cli
from orienmask_tf.config import load_config
from tests import testing

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")
YOLACT_TINY = str(testing.CONFIGS_DIR / "yolact_tiny.yaml")


def _write_coco(path, seed=0):
    """A COCO file of 40 images (128x256) with boxes around three sizes,
    and one crowd box that must be left out."""
    rng = np.random.default_rng(seed)
    centres = np.array([[30.0, 12.0], [60.0, 40.0], [150.0, 70.0]])
    images, annotations = [], []
    for image_id in range(40):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg",
                       "height": 128, "width": 256})
        for centre in centres:
            w, h = centre * np.exp(rng.normal(0, 0.05, 2))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": 1, "iscrowd": 0, "area": float(w * h),
                "bbox": [1.0, 1.0, float(w), float(h)],
                "segmentation": [[1, 1, 1 + w, 1, 1 + w, 1 + h, 1, 1 + h]]})
    annotations.append({"id": len(annotations) + 1, "image_id": 0,
                        "category_id": 1, "iscrowd": 1, "area": 4.0,
                        "bbox": [0.0, 0.0, 2.0, 2.0],
                        "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]})
    path.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}]}))
    return str(path)


@pytest.fixture
def data_overrides(tmp_path):
    annotations = _write_coco(tmp_path / "train.json")
    # The input is half the images' size: every box shrinks by 2 in x and y.
    return [f"data.train_annotations={annotations}",
            f"data.train_images={tmp_path}", "image_size=[64,128]"]


def _run(capsys, *argv):
    code = cli.main(["anchors", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_compares_config_and_fitted_anchors(capsys, data_overrides):
    argv = ["--config", TINY, "--generations", "50", "--json"]
    for override in data_overrides:
        argv += ["--set", override]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    report = json.loads(out)
    assert report["num_boxes"] == 120  # the crowd box is not counted
    assert report["threshold"] == 0.5 and report["strides"] == [8, 16, 32]
    config, fitted = report["config"], report["fitted"]
    # YOLOv4 anchors are sized for 544 px: on these boxes (15x6 ... 75x35
    # after the resize) they are too big; the fitted ones recall every box.
    assert fitted["mean_iou"] > config["mean_iou"] + 0.1
    assert fitted["bpr"] == 1.0
    assert sum(fitted["boxes_per_scale"]) == 120
    assert sum(config["boxes_per_scale"]) == 120
    smallest = np.array(fitted["anchors"][0])
    np.testing.assert_allclose(smallest, [15, 6], rtol=0.1)
    # The text report: one row per anchor set.
    code, out, _ = _run(capsys, *[a for a in argv if a != "--json"])
    assert code == 0
    assert "120 non-crowd training boxes" in out and "64x128" in out
    rows = [line.split()[0] for line in out.splitlines()
            if line.startswith(("config ", "fitted "))]
    assert rows.count("fitted") == 2 and "BPR" in out


def test_write_makes_a_loadable_config_with_sorted_fitted_anchors(
        capsys, tmp_path, data_overrides):
    output = tmp_path / "fitted.yaml"
    argv = ["--config", TINY, "--generations", "50", "--write", "--output",
            str(output)]
    for override in data_overrides:
        argv += ["--set", override]
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and f"wrote {output}" in out
    assert output.read_text().startswith("# Written by `orienmask-tf "
                                         "anchors --write`")
    written = load_config(str(output))
    original = load_config(TINY, data_overrides)
    anchors = written.anchor_array()
    assert anchors.shape == (9, 2)
    assert not np.allclose(anchors, original.anchor_array())
    assert np.all(np.diff(anchors.prod(1)) >= 0)
    # The --set values travel with it; everything else is the source's.
    assert written.image_size == (64, 128)
    assert written.data.train_annotations == \
        original.data.train_annotations
    assert written.model == original.model
    # Measured again from the written file, the anchors are the fitted ones.
    code, out, _ = _run(capsys, "--config", str(output), "--json",
                        "--generations", "50")
    report = json.loads(out)
    np.testing.assert_allclose(report["config"]["anchors"],
                               report["fitted"]["anchors"])
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("argv, message", [
    (["--config", "missing.yaml"], "missing.yaml: cannot read config"),
    (["--config", TINY, "--set", "model.widht=3"], "did you mean"),
    (["--config", TINY, "--set", "data.train_annotations=''"],
     "data.train_annotations: anchors needs"),
    (["--config", TINY, "--output", "x.yaml"], "add --write"),
    (["--config", TINY, "--write", "--output", TINY], "is the --config"),
    (["--config", TINY, "--write", "--output", "no/such/dir/x.yaml"],
     "does not exist"),
    (["--config", TINY, "--generations", "-1"], "--generations: expected"),
    (["--config", YOLACT_TINY, "--write"], "cannot be written into a "
                                           "YOLACT config"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("orienmask-tf anchors: error: ")
    assert message in err and len(err.strip().splitlines()) == 1


def test_bad_annotations_file_names_it(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _run(capsys, "--config", TINY, "--set",
                        f"data.train_annotations={bad}")
    assert code == 2 and f"{bad}: malformed JSON" in err


def test_yolact_anchors_are_measured_not_fitted(capsys, data_overrides):
    argv = ["--config", YOLACT_TINY]
    for override in data_overrides:
        argv += ["--set", override]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "scales_ratios" and "fitted" not in report
    assert report["strides"] == [8, 16, 32, 64, 128]
    assert len(report["config"]["boxes_per_scale"]) == 5
    assert sum(report["config"]["boxes_per_scale"]) == 120
    code, out, _ = _run(capsys, *argv)
    assert "fitting  not supported" in out
