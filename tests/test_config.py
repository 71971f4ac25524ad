import json

import numpy as np
import pytest

from orienmask_tf.config import ConfigError
from orienmask_tf.config import Experiment
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config
from orienmask_tf.families.orienmask.anchors import ANCHORS_YOLOV3
from orienmask_tf.families.orienmask.anchors import resolve_anchors
from tests import testing


def test_configs_are_shipped():
    names = {p.stem for p in testing.SHIPPED_CONFIGS}
    assert {"orienmask_yolo_coco_544", "orienmask_yolo_coco_544_anchor4",
            "orienmask_yolo_fpnplus_coco_544_anchor4", "tiny"} <= names
    # maIoU paper Table 2: 3 scales x 3 assigners, plus test / CPU configs.
    assert {f"yolact_r50_{scale}_{assigner}" for scale in (400, 550, 700)
            for assigner in ("fixed_iou", "atss_iou", "atss_maiou")} <= names
    assert {"yolact_tiny", "quickstart_yolact"} <= names


@pytest.mark.parametrize("path", testing.SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_names_its_paper_row(path):
    config = load_config(path)
    assert config.name == path.stem
    assert "Table" in config.reproduces


def test_paper_configs_follow_the_official_ones():
    base = load_config(testing.CONFIGS_DIR / "orienmask_yolo_coco_544.yaml")
    anchor4 = load_config(
        testing.CONFIGS_DIR / "orienmask_yolo_coco_544_anchor4.yaml")
    plus = load_config(
        testing.CONFIGS_DIR / "orienmask_yolo_fpnplus_coco_544_anchor4.yaml")
    assert (base.model.variant, anchor4.model.variant,
            plus.model.variant) == ("base", "base", "fpn_plus")
    np.testing.assert_array_equal(base.anchor_array(), ANCHORS_YOLOV3)
    # The recorded official configuration used ANCHORS_YOLOV4 (anchor4).
    with open(testing.reference_path("orienmask", "config.json")) as f:
        official = json.load(f)
    for config in (anchor4, plus):
        np.testing.assert_array_equal(config.anchor_array(),
                                      official["anchors_official_544"])
    assert plus.decode.conf_thresh == official["conf_thresh"]
    assert plus.decode.nms_pre == official["nms_pre"]
    assert plus.decode.nms_post == official["nms_post"]
    assert plus.decode.orien_thresh == official["orien_thresh"]
    assert plus.loss.obj_ignore_threshold == official["obj_ignore_threshold"]
    assert list(plus.loss.weights) == official["loss_weight"]
    assert plus.image_size == (544, 544)
    # The FPN-plus file spells out the defaults: they must agree.
    assert config_to_dict(plus) == config_to_dict(
        Experiment(name=plus.name, reproduces=plus.reproduces))


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, "model:\n  widht: 8\n")
    with pytest.raises(ConfigError,
                       match=r"exp.yaml: unknown key 'model.widht', did you "
                             r"mean 'model.width'\? known keys of 'model': "
                             r"architecture, num_anchors, num_classes"):
        load_config(path)


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'optimizer'"):
        load_config(_write(tmp_path, "optimizer:\n  lr: 1\n"))


@pytest.mark.parametrize("text,message", [
    ("model:\n  width: 8.5\n", r"model.width: expected an integer, got 8.5"),
    ("model:\n  synchronized_bn: 1\n", r"model.synchronized_bn: expected true/false"),
    ("image_size: [544]\n", r"image_size: expected a list of 2 values"),
    ("model: 3\n", r"model: expected a mapping"),
    ("decode:\n  conf_thresh: low\n", r"decode.conf_thresh: expected a number"),
    ("image_size: [500, 544]\n", r"image_size: height and width must be "
                                 r"positive multiples of 32"),
    ("anchors: yolov5\n", r"anchors: .*unknown anchor preset 'yolov5'"),
    ("anchors: [[1, 2], [3, 4]]\n", r"anchors: expected 9 pairs"),
    ("model:\n  variant: mask_rcnn\n", r"model.variant: expected 'base' or"),
    ("model: {stackwise_num_blocks: [1, 1]}\n", r"model.stackwise_num_blocks"),
    ("key: [unclosed\n", r"exp.yaml: not valid YAML"),
    ("data:\n  aspect_jitter: 1.5\n",
     r"data.aspect_jitter and data.pad_ratio: expected values in \[0, 1\)"),
    ("model:\n  architecture: yolact\ndata:\n  recipe: yolact\n"
     "  pad_ratio: 0.5\n", r"belong to the orienmask recipe"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_orienmask_configs_keep_their_sections():
    config = load_config(testing.CONFIGS_DIR / "tiny.yaml")
    assert config.architecture == "orienmask"
    # The OrienMask targets section: the official YOLO assignment by default.
    assert config_to_dict(config)["targets"] == dict(
        assigner="yolo", topk=9, yolo_fallback=True)
    assert "architecture" not in config.model_kwargs()
    np.testing.assert_array_equal(config.inference_anchors(),
                                  config.anchor_array())
    assert config.decode_kwargs() == dict(
        conf_thresh=0.005, nms="greedy", nms_threshold=0.5, nms_pre=400,
        nms_post=100, orien_thresh=0.3)
    with pytest.raises(ConfigError, match=r"data.recipe: 'yolact' does not "
                                          r"match model.architecture"):
        load_config(testing.CONFIGS_DIR / "tiny.yaml", ["data.recipe=yolact"])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="absent.yaml: cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_set_overrides_apply_after_the_file(tmp_path):
    path = _write(tmp_path, "model:\n  width: 8\n")
    config = load_config(path, ["model.width=16", "image_size=[320, 480]",
                                "anchors=yolov3", "model.synchronized_bn=true"])
    assert config.model.width == 16
    assert config.image_size == (320, 480)
    assert config.anchors == "yolov3"
    assert config.model.synchronized_bn is True
    assert config.model_kwargs()["width"] == 16


@pytest.mark.parametrize("override,message", [
    ("model.widht=3", r"--set model.widht=3: unknown key 'model.widht'"),
    ("model.width", r"--set model.width: expected section.key=value"),
    ("model.width=abc", r"--set model.width=abc: model.width: expected an integer"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_explicit_anchor_list():
    anchors = [[w * 2, h * 2] for w, h in ANCHORS_YOLOV3]
    config = load_config(None, [f"anchors={anchors}"])
    np.testing.assert_array_equal(config.anchor_array(),
                                  2 * np.asarray(ANCHORS_YOLOV3))
    with pytest.raises(ValueError, match="positive"):
        resolve_anchors([[1, -2]] * 9)


@pytest.mark.parametrize("override, key", [
    ("data.shuffle_buffer=0", "data.shuffle_buffer"),
    ("data.max_instances=-1", "data.max_instances"),
    ("data.max_instances=0", "data.max_instances"),
    ("data.num_parallel_calls=0", "data.num_parallel_calls"),
    ("data.min_box_size=-1", "data.min_box_size"),
    ("decode.nms_pre=-5", "decode.nms_pre"),
    ("decode.nms_post=0", "decode.nms_post"),
    ("decode.nms_threshold=0", "nms_threshold"),
    ("loss.center_region=0", "loss.center_region"),
    ("loss.obj_ignore_threshold=1.5", "loss.obj_ignore_threshold"),
    ("train.momentum=1.0", "train.momentum"),
    ("train.warmup_ratio=2", "train.warmup_ratio"),
])
def test_numeric_settings_are_range_checked(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(testing.CONFIGS_DIR / "tiny.yaml", [override])


def test_yaml_with_a_repeated_key_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("model:\n  width: 8\ntrain:\n  epochs: 2\n"
                    "model:\n  num_classes: 3\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'model' appears "
                       r"twice in one mapping \(lines 1 and 5\)"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  epochs: 2\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="'epochs' appears twice"):
        load_config(nested)
