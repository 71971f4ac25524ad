"""YOLACT checkpoint conversion: mmdet, dbolya and torchvision key layouts."""

import json

import numpy as np
import pytest

from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.convert.torch_checkpoint import load_state_dict
from orienmask_tf.families.yolact.checkpoint import convert_state_dict
from orienmask_tf.families.yolact.checkpoint import dbolya_key
from orienmask_tf.families.yolact.checkpoint import guess_layout
from orienmask_tf.families.yolact.checkpoint import state_dict_from_model
from orienmask_tf.families.yolact.checkpoint import torch_weight_map
from orienmask_tf.families.yolact.network import Yolact
from tests.testing import random_official_state_dict
from tests.testing import reference_path

MINI_KWARGS = dict(stem_channels=8, base_channels=4, fpn_channels=16,
                   feat_channels=16, proto_channels=16)
DBOLYA_KWARGS = dict(num_anchors=3, extra_convs_on="output",
                     relu_fpn_outputs=True)


def _listing(name):
    with open(reference_path("yolact", name)) as f:
        return json.load(f)


def _mini_state_dict():
    data = np.load(reference_path("yolact", "mini_forward.npz"))
    return {k[3:]: data[k] for k in data.files if k.startswith("sd.")}


def _num_trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def dbolya_model():
    return Yolact(**DBOLYA_KWARGS)


def test_dbolya_key_mapping_covers_listing(dbolya_model):
    listing = _listing("state_dict_yolact_r50_550_dbolya.json")
    assert _num_trainable(dbolya_model) == listing["num_parameters"]
    slots, counters = torch_weight_map(dbolya_model)
    mapped = {dbolya_key(e["key"]): tuple(e["shape"])
              for e in listing["state_dict"]}
    assert len(mapped) == len(listing["state_dict"]) == 354
    assert set(mapped) == set(slots) | counters
    for key, slot in slots.items():
        assert slot.torch_shape == mapped[key], key
    assert dbolya_key("fpn.lat_layers.0.weight") == \
        "neck.lateral_convs.2.conv.weight"
    assert dbolya_key("fpn.pred_layers.2.bias") == "neck.fpn_convs.0.conv.bias"
    assert dbolya_key("fpn.downsample_layers.1.weight") == \
        "neck.fpn_convs.4.conv.weight"
    assert dbolya_key("backbone.layers.3.2.bn3.weight") == \
        "backbone.layer4.2.bn3.weight"
    assert dbolya_key("prediction_layers.0.upfeature.0.weight") == \
        "bbox_head.head_convs.0.conv.weight"


def test_dbolya_conversion_reorders_classes(dbolya_model):
    listing = _listing("state_dict_yolact_r50_550_dbolya.json")
    state_dict = random_official_state_dict(listing, seed=3)
    assert guess_layout(state_dict) == "dbolya"
    report = convert_state_dict(dbolya_model, state_dict)
    assert report["layout"] == "dbolya"
    kernel = dbolya_model.get_layer("bbox_head.conv_cls").kernel.numpy()
    conf = state_dict["prediction_layers.0.conf_layer.weight"]  # (243,..)
    for anchor in range(3):
        # ours: channel a*81 + c (bg last); dbolya: a*81 + 0 is bg.
        np.testing.assert_array_equal(
            kernel[..., anchor * 81 + 80],
            conf[anchor * 81].transpose(1, 2, 0))
        np.testing.assert_array_equal(
            kernel[..., anchor * 81 + 0],
            conf[anchor * 81 + 1].transpose(1, 2, 0))
    bias = dbolya_model.get_layer("bbox_head.conv_cls").bias.numpy()
    conf_bias = state_dict["prediction_layers.0.conf_layer.bias"]
    np.testing.assert_array_equal(bias.reshape(3, 81)[:, :80],
                                  conf_bias.reshape(3, 81)[:, 1:])
    lateral = dbolya_model.get_layer("neck.lateral_convs.0.conv").kernel
    np.testing.assert_array_equal(
        lateral.numpy(),
        state_dict["fpn.lat_layers.2.weight"].transpose(2, 3, 1, 0))


def test_torchvision_backbone():
    model = Yolact(**MINI_KWARGS)
    mini = _mini_state_dict()
    torchvision = {k[len("backbone."):]: v for k, v in mini.items()
                   if k.startswith("backbone.")}
    torchvision["fc.weight"] = np.zeros((1000, 128), np.float32)
    torchvision["fc.bias"] = np.zeros((1000,), np.float32)
    assert guess_layout(torchvision) == "torchvision"
    head_before = model.get_layer("bbox_head.conv_cls").kernel.numpy().copy()
    report = convert_state_dict(model, torchvision)
    assert report["part"] == "backbone"
    assert report["skipped"] == ["fc.bias", "fc.weight"]
    conv = model.get_layer("backbone").get_layer("layer3.0.conv2").kernel
    np.testing.assert_array_equal(
        conv.numpy(), mini["backbone.layer3.0.conv2.weight"].transpose(
            2, 3, 1, 0))
    np.testing.assert_array_equal(
        model.get_layer("bbox_head.conv_cls").kernel.numpy(), head_before)


def test_strict_errors_name_keys_and_write_nothing(tmp_path):
    model = Yolact(**MINI_KWARGS)
    state_dict = _mini_state_dict()
    before = model.get_layer("bbox_head.conv_reg").kernel.numpy().copy()
    bad = dict(state_dict)
    del bad["neck.fpn_convs.3.conv.weight"]
    bad["bbox_head.extra.weight"] = np.zeros(3, np.float32)
    bad["bbox_head.conv_reg.weight"] = np.zeros((8, 16, 3, 3), np.float32)
    with pytest.raises(CheckpointError) as error:
        convert_state_dict(model, bad, source="bad.pth")
    message = str(error.value)
    for text in ("bad.pth", "neck.fpn_convs.3.conv.weight",
                 "bbox_head.extra.weight", "bbox_head.conv_reg.weight"):
        assert text in message
    np.testing.assert_array_equal(
        model.get_layer("bbox_head.conv_reg").kernel.numpy(), before)
    # A 3-anchor checkpoint does not load into a 1-anchor model.
    with pytest.raises(CheckpointError, match="wrong shapes"):
        convert_state_dict(Yolact(num_anchors=3, **MINI_KWARGS), state_dict)


def test_npz_checkpoint_roundtrip(tmp_path):
    model = Yolact(**MINI_KWARGS)
    convert_state_dict(model, _mini_state_dict())
    path = tmp_path / "yolact.npz"
    np.savez(path, **state_dict_from_model(model))
    loaded = load_state_dict(str(path))
    other = Yolact(**MINI_KWARGS)
    assert convert_state_dict(other, loaded)["assigned"] == 301
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
