"""Yolact network: parameter counts, layout, mini_forward parity, XLA."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.yolact.checkpoint import convert_state_dict
from orienmask_tf.families.yolact.checkpoint import state_dict_from_model
from orienmask_tf.families.yolact.checkpoint import torch_weight_map
from orienmask_tf.ops.resize import resize_bilinear
from orienmask_tf.families.yolact.network import Yolact
from tests.testing import reference_path

MINI_KWARGS = dict(stem_channels=8, base_channels=4, fpn_channels=16,
                   feat_channels=16, proto_channels=16)


def _num_trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _listing(name):
    with open(reference_path("yolact", name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mini():
    return dict(np.load(reference_path("yolact", "mini_forward.npz")))


@pytest.fixture(scope="module")
def mini_model(mini):
    model = Yolact(**MINI_KWARGS)
    state_dict = {k[3:]: v for k, v in mini.items() if k.startswith("sd.")}
    report = convert_state_dict(model, state_dict, source="mini_forward.npz")
    assert report["layout"] == "mmdet"
    return model


@pytest.mark.parametrize("num_anchors,expected", [(1, 34_754_341),
                                                  (3, 35_293_711)])
def test_parameter_counts(num_anchors, expected):
    model = Yolact(num_anchors=num_anchors)
    assert _num_trainable(model) == expected
    if num_anchors == 1:
        listing = _listing("state_dict_yolact_r50_550_mmdet.json")
        assert listing["num_parameters"] == expected
        slots, counters = torch_weight_map(model)
        ref = {e["key"]: tuple(e["shape"]) for e in listing["state_dict"]}
        assert set(slots) | counters == set(ref)
        assert {k: s.torch_shape for k, s in slots.items()} == {
            k: ref[k] for k in slots}
        shapes = model.output_shapes(550, 550)
        assert shapes["protos"] == (1, 138, 138, 32)
        assert [shapes[f"cls_score_l{i}"][1] for i in range(5)] == [
            69, 35, 18, 9, 5]
        assert shapes["segm"] == (1, 69, 69, 80)


def test_mini_forward_parity(mini, mini_model):
    assert _num_trainable(mini_model) == 157_997
    images = np.transpose(mini["input_nchw"], (0, 2, 3, 1))
    out = mini_model(images, training=False)
    nchw = lambda x: np.transpose(np.asarray(x), (0, 3, 1, 2))  # noqa: E731
    for i in range(5):
        for key in ("cls_score", "bbox_pred", "coeff_pred"):
            np.testing.assert_allclose(nchw(out[f"{key}_l{i}"]),
                                       mini[f"head_{key}_l{i}"],
                                       rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nchw(out["protos"]), mini["protonet_out_nchw"],
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nchw(out["segm"]), mini["segm_out_nchw"],
                               rtol=1e-4, atol=1e-4)


def test_mini_intermediates(mini, mini_model):
    images = np.transpose(mini["input_nchw"], (0, 2, 3, 1))
    backbone = mini_model.get_layer("backbone")
    feats = backbone(images, training=False)
    for level in (2, 3, 4, 5):
        np.testing.assert_allclose(
            np.transpose(feats[f"C{level}"], (0, 3, 1, 2)),
            mini[f"backbone_c{level}"], rtol=1e-4, atol=1e-4)
    names = [f"neck.fpn_convs.{i}.conv" for i in range(5)]
    neck = keras.Model(mini_model.input,
                       [mini_model.get_layer(n).output for n in names])
    for i, p in enumerate(neck(images, training=False)):
        np.testing.assert_allclose(np.transpose(p, (0, 3, 1, 2)),
                                   mini[f"neck_p{i + 3}"], rtol=1e-4,
                                   atol=1e-4)


def test_mini_forward_xla_matches_eager(mini, mini_model):
    images = np.transpose(mini["input_nchw"], (0, 2, 3, 1))
    eager = mini_model(images, training=False)
    xla = tf.function(lambda x: mini_model(x, training=False),
                      jit_compile=True)(tf.constant(images))
    for key in ("protos", "cls_score_l0", "coeff_pred_l2"):
        np.testing.assert_allclose(xla[key], eager[key], rtol=1e-4, atol=1e-4)


def test_state_dict_roundtrip_and_config(mini, mini_model):
    state_dict = state_dict_from_model(mini_model)
    assert len(state_dict) == 354
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(value, mini["sd." + key])
    clone = Yolact.from_config(mini_model.get_config())
    assert clone.get_config() == mini_model.get_config()


def test_resize_bilinear_matches_eager_tf():
    x = np.random.RandomState(0).rand(2, 7, 9, 3).astype(np.float32)
    for size in ((13, 17), (14, 18), (4, 5), (100, 150)):
        ref = tf.image.resize(x, size, method="bilinear").numpy()
        np.testing.assert_allclose(resize_bilinear(tf.constant(x), size), ref,
                                   atol=1e-6)


def test_decoder_end_to_end_xla(mini, mini_model):
    from orienmask_tf.families.yolact.decode import YolactDecoder
    from orienmask_tf.families.yolact.decode import split_levels
    from orienmask_tf.families.yolact.anchors import mmdet_anchors

    images = np.transpose(mini["input_nchw"], (0, 2, 3, 1))
    images = np.concatenate([images, images[:, :, ::-1]], axis=0)
    sizes = [tuple(mini[f"neck_p{i}"].shape[2:]) for i in range(3, 8)]
    anchors, counts = mmdet_anchors(sizes)
    decoder = YolactDecoder(split_levels(anchors, counts), (100, 132),
                            score_thr=0.0)

    @tf.function(jit_compile=True)
    def run(x):
        return decoder(mini_model(x, training=False))

    out = run(tf.constant(images))
    assert out["masks"].shape == (2, 100, 100, 132)
    assert out["boxes"].shape == (2, 100, 4)
    num = out["num_detections"].numpy()
    assert np.all(num > 0) and np.all(num <= 100)
    labels = out["labels"].numpy()
    for b in range(2):
        assert np.all(labels[b, :num[b]] >= 0)
        assert np.all(labels[b, num[b]:] == -1)
        assert np.all(np.diff(out["scores"][b, :num[b]]) <= 0)
        assert not out["masks"][b, num[b]:].numpy().any()
    boxes = out["boxes"].numpy()
    assert boxes.min() >= 0 and boxes[..., 2].max() <= 132
    assert boxes[..., 3].max() <= 100


def test_keras_file_roundtrip(tmp_path, mini, mini_model):
    path = tmp_path / "yolact_mini.keras"
    mini_model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Yolact)
    images = np.transpose(mini["input_nchw"], (0, 2, 3, 1))
    a = mini_model(images, training=False)
    b = loaded(images, training=False)
    for key in ("protos", "segm", "cls_score_l4"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)
