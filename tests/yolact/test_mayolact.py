"""maYOLACT inside the YOLACT family: ResNet-50 with DCNv2, FPN_CARAFE,
2 anchors per location, checkpoint keys and config.

Fixtures: ``tests/fixtures/reference/mayolact/`` (README §6-§8: official
modules at reduced widths, NCHW, float32 rounding of float64 runs) and
``tests/fixtures/reference/yolact/state_dict_mayolact_r50_550_mmdet.json``
(the 400 official maYOLACT-550 keys). Network forwards must agree to
``max|ours - ref| / max|ref| <= 1e-4`` (README §10).
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import ConfigError
from orienmask_tf.config import load_config
from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.convert.weight_map import load_checked
from orienmask_tf.families.yolact.checkpoint import convert_state_dict
from orienmask_tf.families.yolact.checkpoint import state_dict_from_model
from orienmask_tf.families.yolact.checkpoint import torch_weight_map
from orienmask_tf.families.yolact.config import anchors_per_location
from orienmask_tf.families.yolact.config import config_anchors
from orienmask_tf.families.yolact.fpn import yolact_fpn_carafe
from orienmask_tf.families.yolact.network import Yolact
from orienmask_tf.families.yolact.ops import yolact_config_anchors
from orienmask_tf.families.yolact.resnet import MAYOLACT_DCN
from orienmask_tf.families.yolact.resnet import ResNetBackbone
from orienmask_tf.layers.deform_conv import DeformConv2D
from tests import testing
from tests.testing import reference_path

TOL = 1e-4  # README §10, network forwards
DCN_KWARGS = dict(stage_with_dcn=MAYOLACT_DCN, deformable_groups=4)
# mini_forward_mayolact_cfg.json at reduced widths.
MINI_KWARGS = dict(num_anchors=2, stem_channels=8, base_channels=4,
                   fpn_channels=16, feat_channels=16, proto_channels=16,
                   neck="fpn_carafe", carafe_compressed_channels=8,
                   **DCN_KWARGS)
DCN_MODULES = tuple(f"layer{stage}.{block}.conv2"
                    for stage, blocks in ((2, 4), (3, 6), (4, 3))
                    for block in range(blocks))


def _rel(ours, ref):
    ours = np.asarray(ours, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _load(name):
    with np.load(reference_path("mayolact", name)) as data:
        return dict(data)


def _state_dict(arrays, prefix=""):
    return {prefix + k[3:]: v for k, v in arrays.items() if k.startswith("sd.")}


def _num_trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.fixture(scope="module")
def mini():
    return _load("mini_forward_mayolact.npz")


@pytest.fixture(scope="module")
def mini_model(mini):
    height, width = mini["input_nchw"].shape[2:]
    model = Yolact(image_shape=(height, width, 3), **MINI_KWARGS)
    report = convert_state_dict(model, _state_dict(mini), layout="mmdet",
                                source="mini_forward_mayolact.npz")
    assert report["assigned"] == 400 - 53  # minus num_batches_tracked
    return model


def test_mini_config_is_what_the_fixture_was_built_with():
    with open(reference_path("mayolact", "mini_forward_mayolact_cfg.json")) as f:
        cfg = json.load(f)["model_cfg"]
    backbone, neck = cfg["backbone"], cfg["neck"]
    assert backbone["dcn"] == {"type": "DCNv2", "deformable_groups": 4,
                               "fallback_on_stride": False}
    assert tuple(backbone["stage_with_dcn"]) == MAYOLACT_DCN
    assert (backbone["stem_channels"], backbone["base_channels"]) == (8, 4)
    assert neck["type"] == "FPN_CARAFE" and neck["out_channels"] == 16
    assert neck["upsample_cfg"] == {
        "type": "carafe", "up_kernel": 5, "up_group": 1, "encoder_kernel": 3,
        "encoder_dilation": 1, "compressed_channels": 8}
    anchors = cfg["bbox_head"]["anchor_generator"]
    assert (anchors["octave_base_scale"], anchors["scales_per_octave"]) == (4, 2)


def test_resnet_dcn_forward():
    """README §7: ResNet-50 (stem 16, base 8) with DCN in layers 2-4."""
    ref = _load("resnet_dcn_forward.npz")
    images = _nhwc(ref["input_nchw"])
    backbone = ResNetBackbone(stem_channels=16, base_channels=8,
                              image_shape=images.shape[1:], **DCN_KWARGS)
    slots, counters = torch_weight_map(backbone)  # keys without "backbone."
    state_dict = _state_dict(ref)
    assert len(state_dict) == 344
    assert load_checked(slots, counters, state_dict, "resnet_dcn_forward.npz",
                        "ResNet-50 DCN backbone") == 344 - 53
    feats = backbone(images, training=False)
    for level in (2, 3, 4, 5):
        assert _rel(feats[f"C{level}"], _nhwc(ref[f"out_c{level}"])) <= TOL

    probe = keras.Model(backbone.input, {
        name: (backbone.get_layer(name).input, backbone.get_layer(name).output)
        for name in DCN_MODULES})
    taps = probe(images, training=False)
    for name in DCN_MODULES:
        layer = backbone.get_layer(name)
        assert isinstance(layer, DeformConv2D)
        assert layer.deformable_groups == 4 and layer.bias is None
        dcn_input, dcn_output = taps[name]
        offset, mask = layer.offset_and_mask(dcn_input)
        for key, ours in (("input", dcn_input), ("offset", offset),
                          ("mask", mask), ("output", dcn_output)):
            error = _rel(ours, _nhwc(ref[f"dcn.{name}.{key}"]))
            assert error <= TOL, (name, key, error)


def test_resnet_without_dcn_is_unchanged():
    plain = ResNetBackbone(stem_channels=8, base_channels=4,
                           stackwise_num_blocks=(1, 1, 1, 1))
    assert plain.stage_with_dcn == (False,) * 4
    assert not any(isinstance(layer, DeformConv2D) for layer in plain.layers)
    assert plain.get_config()["stage_with_dcn"] == [False] * 4
    with pytest.raises(ValueError, match="static image_shape"):
        ResNetBackbone(stage_with_dcn=MAYOLACT_DCN)
    with pytest.raises(ValueError, match="does not divide"):
        ResNetBackbone(base_channels=6, stage_with_dcn=MAYOLACT_DCN,
                       deformable_groups=8, image_shape=(64, 64, 3))


def test_fpn_carafe_forward():
    """README §6: the neck alone, every lateral, upsample and output."""
    ref = _load("fpn_carafe_forward.npz")
    inputs = {f"C{i}": keras.Input(shape=_nhwc(ref[f"in_c{i}"]).shape[1:],
                                   name=f"C{i}") for i in (3, 4, 5)}
    levels = yolact_fpn_carafe(inputs, channels=32, compressed_channels=16)
    neck = keras.Model(inputs, levels)
    slots, counters = torch_weight_map(neck)
    state_dict = _state_dict(ref, prefix="neck.")
    assert len(state_dict) == 36 and set(slots) == set(state_dict)
    load_checked(slots, counters, state_dict, "fpn_carafe_forward.npz",
                 "FPN_CARAFE")

    def out(name):
        return neck.get_layer(name).output

    taps = {f"lateral{i}_conv_out": out(f"neck.lateral_convs.{i}.conv")
            for i in range(5)}
    for i in range(4):
        upsample = f"neck.upsample_modules.{i}"
        taps[f"upsample{i}_in"] = neck.get_layer(upsample).input
        taps[f"upsample{i}_out"] = out(upsample)  # before the crop
        taps[f"lateral{i}_merged"] = out(f"neck.top_down.{i}")
    taps["lateral4_merged"] = out("neck.lateral_convs.4.conv")
    for i in range(5):
        taps[f"out_p{i + 3}"] = out(f"neck.fpn_convs.{i}.conv")
    result = keras.Model(inputs, taps)(
        {k: _nhwc(ref[f"in_c{k[1]}"]) for k in inputs})
    assert len(result) == 23
    for key, value in result.items():
        assert value.shape == _nhwc(ref[key]).shape, key
        assert _rel(value, _nhwc(ref[key])) <= TOL, key


def test_mini_forward_mayolact(mini, mini_model):
    """README §8: the whole detector from the 400 official keys."""
    assert mini_model.num_anchors == 2
    images = _nhwc(mini["input_nchw"])
    out = mini_model(images, training=False)
    for i in range(5):
        for key in ("cls_score", "bbox_pred", "coeff_pred"):
            # NHWC channel a * K + k is the official NCHW channel a * K + k.
            ref = _nhwc(mini[f"head_{key}_l{i}"])
            assert out[f"{key}_l{i}"].shape == ref.shape
            assert _rel(out[f"{key}_l{i}"], ref) <= TOL, (key, i)
    assert _rel(out["protos"], _nhwc(mini["protonet_out_nchw"])) <= TOL
    assert _rel(out["segm"], _nhwc(mini["segm_out_nchw"])) <= TOL

    backbone = mini_model.get_layer("backbone")
    feats = backbone(images, training=False)
    for level in (2, 3, 4, 5):
        assert _rel(feats[f"C{level}"],
                    _nhwc(mini[f"backbone_c{level}"])) <= TOL
    names = [f"neck.fpn_convs.{i}.conv" for i in range(5)]
    neck = keras.Model(mini_model.input,
                       [mini_model.get_layer(n).output for n in names])
    for i, p in enumerate(neck(images, training=False)):
        assert _rel(p, _nhwc(mini[f"neck_p{i + 3}"])) <= TOL, i


def test_mini_anchors_are_ours(mini):
    """``anchors_l{i}``: the official grid anchors (scales 4 and 4·√2)."""
    height, width = mini["input_nchw"].shape[2:]
    anchors, counts = yolact_config_anchors((height, width), assigner="atss",
                                            scales_per_octave=2)
    refs = [mini[f"anchors_l{i}"] for i in range(5)]
    assert tuple(counts) == tuple(len(r) for r in refs)
    for level, ref in zip(np.split(anchors, np.cumsum(counts)[:-1]), refs):
        np.testing.assert_allclose(level, ref, rtol=0, atol=1e-4)
    first = refs[0][:2]
    np.testing.assert_allclose(first[:, 2] - first[:, 0],
                               [32.0, 32.0 * np.sqrt(2.0)], rtol=1e-6)


def test_state_dict_roundtrip_400_keys(mini, mini_model):
    ref = _state_dict(mini)
    state_dict = state_dict_from_model(mini_model)
    assert len(state_dict) == len(ref) == 400
    assert set(state_dict) == set(ref)
    for key, value in state_dict.items():
        assert value.shape == ref[key].shape, key
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(value, ref[key], err_msg=key)
    clone = Yolact.from_config(mini_model.get_config())
    assert clone.get_config() == mini_model.get_config()
    assert mini_model.get_config()["neck"] == "fpn_carafe"
    assert mini_model.get_config()["stage_with_dcn"] == list(MAYOLACT_DCN)


def test_mmdet_conversion_stays_strict(mini):
    height, width = mini["input_nchw"].shape[2:]
    model = Yolact(image_shape=(height, width, 3), **MINI_KWARGS)
    bad = _state_dict(mini)
    del bad["backbone.layer3.2.conv2.conv_offset.weight"]
    with pytest.raises(CheckpointError,
                       match=r"backbone\.layer3\.2\.conv2\.conv_offset\.weight"):
        convert_state_dict(model, bad, layout="mmdet")
    # A plain-FPN YOLACT checkpoint does not fit FPN_CARAFE (README §11.13).
    plain = _state_dict(mini)
    plain = {k: v for k, v in plain.items()
             if not k.startswith("neck.upsample_modules.")}
    with pytest.raises(CheckpointError, match="missing keys"):
        convert_state_dict(model, plain, layout="mmdet")


def test_torchvision_weights_into_dcn_backbone(mini, mini_model):
    """``conv2.weight`` only; conv_offset zero, so DCN = 0.5 x conv."""
    height, width = mini["input_nchw"].shape[2:]
    model = Yolact(image_shape=(height, width, 3), **MINI_KWARGS)
    convert_state_dict(model, _state_dict(mini), layout="mmdet")
    torchvision = {k[len("backbone."):]: v for k, v in _state_dict(mini).items()
                   if k.startswith("backbone.") and "conv_offset" not in k}
    torchvision["fc.weight"] = np.zeros((1000, 128), np.float32)
    torchvision["fc.bias"] = np.zeros((1000,), np.float32)
    head_before = model.get_layer("bbox_head.conv_cls").kernel.numpy().copy()
    report = convert_state_dict(model, torchvision, layout="torchvision")
    assert report["part"] == "backbone"
    assert len(report["zeroed"]) == 2 * len(DCN_MODULES)
    backbone = model.get_layer("backbone")
    rng = np.random.RandomState(0)
    for name in ("layer2.0.conv2", "layer3.1.conv2"):
        layer = backbone.get_layer(name)
        assert not layer.conv_offset.kernel.numpy().any()
        assert not layer.conv_offset.bias.numpy().any()
        np.testing.assert_array_equal(
            layer.kernel.numpy(),
            torchvision[f"{name}.weight"].transpose(2, 3, 1, 0))
        x = rng.randn(1, 9, 11, layer.kernel.shape[2]).astype(np.float32)
        stride = layer.strides[0]
        conv = tf.nn.conv2d(np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]),
                            layer.kernel, stride, "VALID")
        np.testing.assert_allclose(layer(x), 0.5 * conv.numpy(), rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_array_equal(
        model.get_layer("bbox_head.conv_cls").kernel.numpy(), head_before)
    # Every other backbone key stays required.
    del torchvision["layer2.0.bn2.weight"]
    with pytest.raises(CheckpointError, match=r"layer2\.0\.bn2\.weight"):
        convert_state_dict(model, torchvision, layout="torchvision")


@pytest.mark.large
def test_mayolact_550_parameter_count():
    with open(reference_path("yolact",
                             "state_dict_mayolact_r50_550_mmdet.json")) as f:
        listing = json.load(f)
    model = Yolact(num_anchors=2, neck="fpn_carafe", image_shape=(550, 550, 3),
                   **DCN_KWARGS)
    params = sum(e["numel"] for e in listing["state_dict"]
                 if e["kind"] == "param")
    assert _num_trainable(model) == params == listing["num_parameters"] \
        == 39_985_830
    assert _num_trainable(model.get_layer("backbone")) == \
        listing["num_parameters_by_top_module"]["backbone"] == 26_993_084
    slots, counters = torch_weight_map(model)
    ref = {e["key"]: tuple(e["shape"]) for e in listing["state_dict"]}
    assert len(ref) == 400
    assert set(slots) | counters == set(ref)
    assert {k: s.torch_shape for k, s in slots.items()} == {
        k: ref[k] for k in slots}
    shapes = model.output_shapes(550, 550)
    assert [shapes[f"cls_score_l{i}"][1:] for i in range(5)] == [
        (n, n, 2 * 81) for n in (69, 35, 18, 9, 5)]
    assert shapes["coeff_pred_l0"][-1] == 2 * 32


def test_config_scales_per_octave_gives_12832_anchors():
    path = testing.CONFIGS_DIR / "yolact_r50_550_atss_maiou.yaml"
    config = load_config(path, ["targets.scales_per_octave=2"])
    anchors, counts = config_anchors(config)
    assert anchors_per_location(config) == 2
    assert len(anchors) == sum(counts) == 12_832
    assert tuple(counts) == tuple(2 * n * n for n in (69, 35, 18, 9, 5))
    assert config.family.model_kwargs(config)["num_anchors"] == 2
    mayolact = load_config(testing.CONFIGS_DIR / "mayolact_r50_550.yaml")
    assert mayolact.targets.scales_per_octave == 2
    assert mayolact.model.neck == "fpn_carafe"
    assert mayolact.model.stage_with_dcn == MAYOLACT_DCN
    assert sum(config_anchors(mayolact)[1]) == 12_832
    kwargs = mayolact.family.model_kwargs(mayolact)
    assert (kwargs["neck"], kwargs["stage_with_dcn"], kwargs["deformable_groups"],
            kwargs["carafe_compressed_channels"], kwargs["num_anchors"]) == (
                "fpn_carafe", MAYOLACT_DCN, 4, 64, 2)


def test_family_builds_a_static_dcn_network():
    overrides = ["model.neck=fpn_carafe",
                 "model.stage_with_dcn=[false,true,true,true]",
                 "model.deformable_groups=4",
                 "model.carafe_compressed_channels=8",
                 "targets.scales_per_octave=2"]
    config = load_config(testing.CONFIGS_DIR / "yolact_tiny.yaml", overrides)
    network = config.family.build_network(config)
    assert network.image_shape == (96, 128, 3)
    assert network.num_anchors == 2 and network.neck == "fpn_carafe"
    out = network(np.zeros((1, 96, 128, 3), np.float32), training=False)
    assert out["cls_score_l0"].shape == (1, 12, 16, 2 * 4)
    anchors, counts = config_anchors(config)
    assert counts[0] == 12 * 16 * 2


@pytest.mark.parametrize("overrides,message", [
    (["model.neck=bifpn"], r"model.neck: expected one of \['fpn', "
                           r"'fpn_carafe'\]"),
    (["model.stage_with_dcn=[false,true,true]"],
     r"model.stage_with_dcn: expected 4 booleans"),
    (["model.stage_with_dcn=[0,1,1,1]"], r"model.stage_with_dcn"),
    (["model.deformable_groups=0"], r"model.deformable_groups: must be >= 1"),
    (["model.stage_with_dcn=[false,true,true,true]",
      "model.deformable_groups=3"],
     r"model.deformable_groups: 3 does not divide the 8 channels of layer2"),
    (["model.carafe_compressed_channels=0"],
     r"model.carafe_compressed_channels: must be >= 1"),
    (["model.neck=fpn_carafe", "model.extra_convs_on=output"],
     r"model.neck: fpn_carafe .* model.extra_convs_on: input"),
    (["model.neck=fpn_carafe", "model.relu_fpn_outputs=true"],
     r"model.neck: fpn_carafe .* model.relu_fpn_outputs: false"),
    (["targets.scales_per_octave=0"], r"targets.scales_per_octave: must be "
                                      r">= 1"),
    (["targets.assigner=fixed_iou", "targets.scales_per_octave=2"],
     r"targets.scales_per_octave: 2 needs an ATSS targets.assigner"),
    (["targets.scales_per_octave=2", "model.num_anchors=1"],
     r"model.num_anchors: .* places 2 anchor"),
])
def test_bad_mayolact_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(testing.CONFIGS_DIR / "yolact_tiny.yaml", overrides)


def test_scales_per_octave_needs_mmdet_anchors():
    path = testing.CONFIGS_DIR / "yolact_r50_550_atss_maiou.yaml"
    with pytest.raises(ConfigError, match=r"targets.scales_per_octave"):
        load_config(path, ["decode.style=dbolya",
                           "targets.scales_per_octave=2"])


def test_mini_xla_and_keras_file_roundtrip(tmp_path, mini, mini_model):
    images = _nhwc(mini["input_nchw"])
    eager = mini_model(images, training=False)
    xla = tf.function(lambda x: mini_model(x, training=False),
                      jit_compile=True)(tf.constant(images))
    for key in ("protos", "cls_score_l0", "coeff_pred_l4"):
        np.testing.assert_allclose(xla[key], eager[key], rtol=1e-4, atol=1e-4)
    path = tmp_path / "mayolact_mini.keras"
    mini_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Yolact)
    assert loaded.get_config() == mini_model.get_config()
    again = loaded(images, training=False)
    for key in ("protos", "segm", "bbox_pred_l3"):
        np.testing.assert_allclose(again[key], eager[key], rtol=1e-6, atol=1e-6)
