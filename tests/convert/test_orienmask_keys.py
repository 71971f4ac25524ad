import numpy as np
import pytest

from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.families.orienmask.checkpoint import check_official_config
from orienmask_tf.families.orienmask.checkpoint import convert_state_dict
from orienmask_tf.families.orienmask.checkpoint import state_dict_from_model
from orienmask_tf.families.orienmask.checkpoint import torch_weight_map
from orienmask_tf.families.orienmask.network import OrienMask
from tests import testing


@pytest.fixture(scope="module", params=sorted(testing.OFFICIAL_VARIANTS))
def full_size(request):
    listing = testing.official_model_listing(request.param)
    model = OrienMask(num_classes=80,
                      variant=testing.OFFICIAL_VARIANTS[request.param])
    return listing, model


@pytest.mark.large
def test_every_official_key_maps_to_exactly_one_keras_weight(full_size):
    listing, model = full_size
    slots, counters = torch_weight_map(model)
    official = {e["key"]: tuple(e["shape"]) for e in listing["state_dict"]}
    assert len(official) == listing["num_state_dict_entries"]
    expected_counters = {k for k in official if k.endswith("num_batches_tracked")}
    assert counters == expected_counters
    assert set(slots) == set(official) - expected_counters
    for key, slot in slots.items():
        assert slot.torch_shape == official[key], key
    # Injective and complete: each Keras variable is filled by one key only.
    mapped = [id(slot.variable) for slot in slots.values()]
    assert len(set(mapped)) == len(mapped)
    assert set(mapped) == {id(v) for v in model.weights}


@pytest.mark.large
def test_random_state_dict_round_trips_exactly(full_size):
    listing, model = full_size
    state_dict = testing.random_official_state_dict(listing, seed=3)
    report = convert_state_dict(model, state_dict)
    assert report["part"] == "full"
    assert report["assigned"] == len(state_dict) - listing["num_batchnorm2d"]
    back = state_dict_from_model(model)
    assert list(back) != [] and set(back) == set(state_dict)
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            assert back[key].dtype == np.int64 and back[key].shape == ()
        else:
            assert back[key].dtype == np.float32
            np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.large
def test_backbone_only_checkpoint_fills_only_the_backbone(full_size):
    listing, model = full_size
    state_dict = testing.random_official_state_dict(listing, seed=4)
    backbone = {k[len("backbone."):]: v for k, v in state_dict.items()
                if k.startswith("backbone.")}
    head_before = model.get_layer("bbox_head8.1").kernel.numpy().copy()
    report = convert_state_dict(model, backbone)
    assert report["part"] == "backbone"
    back = state_dict_from_model(model, part="backbone")
    for key, value in backbone.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)
    np.testing.assert_array_equal(
        model.get_layer("bbox_head8.1").kernel.numpy(), head_before)


def test_conv_kernel_is_transposed_from_oihw():
    model = OrienMask(**testing.TINY_KWARGS)
    state_dict = state_dict_from_model(model)
    weight = state_dict["neck32.1.conv_block.0.weight"]  # (O, I, 3, 3)
    weight[...] = np.random.RandomState(0).standard_normal(weight.shape)
    convert_state_dict(model, state_dict)
    kernel = model.get_layer("neck32.1.conv_block.0").kernel.numpy()
    o, i, y, x = 5, 2, 0, 1
    assert kernel[y, x, i, o] == weight[o, i, y, x]


@pytest.fixture()
def tiny():
    return OrienMask(**testing.TINY_KWARGS), testing.tiny_state_dict(seed=5)


def _assert_nothing_loaded(model, state_dict):
    back = state_dict_from_model(model)
    key = "neck32.0.conv_block.0.weight"
    assert not np.array_equal(back[key], state_dict[key])


def test_missing_key_is_refused_by_name(tiny):
    model, state_dict = tiny
    del state_dict["orien_head.5.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): orien_head.5.bias"):
        convert_state_dict(model, state_dict, source="x.pth")
    _assert_nothing_loaded(model, state_dict)


def test_unexpected_key_is_refused_by_name(tiny):
    model, state_dict = tiny
    state_dict["neck2.0.conv_block.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(CheckpointError,
                       match=r"x.pth.*\n.*unexpected keys \(1\): neck2.0"):
        convert_state_dict(model, state_dict, source="x.pth")
    _assert_nothing_loaded(model, state_dict)


def test_wrong_shape_is_refused_by_name(tiny):
    model, state_dict = tiny
    state_dict["bbox_head16.1.weight"] = state_dict["bbox_head16.1.weight"][:-1]
    with pytest.raises(CheckpointError,
                       match=r"wrong shapes \(1\): bbox_head16.1.weight \(23, 64, 1, 1\)"
                             r" != expected \(24, 64, 1, 1\)"):
        convert_state_dict(model, state_dict)
    _assert_nothing_loaded(model, state_dict)


def test_non_float_tensor_is_refused(tiny):
    model, state_dict = tiny
    state_dict["skip4.conv_block.1.running_var"] = np.ones(8, np.int64)
    with pytest.raises(CheckpointError, match="non-float tensors"):
        convert_state_dict(model, state_dict)


def test_skip_keys_drops_only_matching_keys(tiny):
    model, state_dict = tiny
    state_dict["fc.weight"] = np.zeros((10, 4), np.float32)
    report = convert_state_dict(model, state_dict, skip_keys=r"^fc\.")
    assert report["skipped"] == ["fc.weight"]


def test_other_variant_checkpoint_is_refused():
    base = OrienMask(variant="base", **testing.TINY_KWARGS)
    plus = OrienMask(variant="fpn_plus", **testing.TINY_KWARGS)
    with pytest.raises(CheckpointError, match="unexpected keys.*route8") as error:
        convert_state_dict(plus, state_dict_from_model(base))
    assert "missing keys" in str(error.value) and "skip32" in str(error.value)
    with pytest.raises(CheckpointError, match="set model.variant=base"):
        check_official_config(plus, {"model": {"type": "OrienMaskYOLO",
                                               "num_classes": 3}})
    with pytest.raises(CheckpointError, match="set model.num_classes=80"):
        check_official_config(plus, {"model": {"type": "OrienMaskYOLOFPNPlus",
                                               "num_classes": 80}})
    check_official_config(plus, {"model": {"type": "OrienMaskYOLOFPNPlus",
                                           "num_anchors": 3, "num_classes": 3}})
