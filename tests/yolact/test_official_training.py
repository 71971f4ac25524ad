"""YOLACT training as the official (mmdet) trainer: the semantic loss of an
image without instances, crowd regions in the fixed-IoU assigner, empty
images in the data, and the mmdet anchor generator's stride pairs."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import ConfigError
from orienmask_tf.config import load_config
from orienmask_tf.families.yolact import anchors as anchors_mmdet
from orienmask_tf.families.yolact import loss as yl
from orienmask_tf.families.yolact.encoder import YolactTargetEncoder
from tests.testing import CONFIGS_DIR
from tests.yolact.test_targets_losses import _gt


def _segm(logits, targets, num_gts=None):
    y_true = {"segm_targets": targets}
    if num_gts is not None:
        y_true["num_gts"] = np.asarray(num_gts)
    return yl.YolactSegmLoss(num_classes=logits.shape[-1]).call(
        y_true, {"segm": tf.constant(logits)})


def test_segm_loss_is_zero_for_an_image_without_instances():
    # mmdet test_yolact_head_loss: empty ground truth -> loss_segm == 0
    # (it was 56.8 here: the BCE of 80 channels against all-zero targets).
    rng = np.random.RandomState(0)
    logits = rng.randn(1, 8, 8, 80).astype(np.float32)
    zeros = np.zeros_like(logits)
    assert float(_segm(logits, zeros)) > 50.0     # without num_gts
    assert float(_segm(logits, zeros, [0])) == 0.0
    with tf.GradientTape() as tape:
        x = tf.constant(logits)
        tape.watch(x)
        value = yl.YolactSegmLoss(num_classes=80).call(
            {"segm_targets": zeros, "num_gts": np.array([0])}, {"segm": x})
    assert float(tf.reduce_sum(tf.abs(tape.gradient(value, x)))) == 0.0


def test_segm_loss_sums_images_with_instances_over_the_whole_batch():
    # mmdet: per image with GT, BCE sum / (num_imgs * H * W); an image
    # without GT adds 0 but still counts in num_imgs.
    rng = np.random.RandomState(1)
    logits = rng.randn(2, 4, 5, 3).astype(np.float32)
    targets = (rng.rand(2, 4, 5, 3) > 0.7).astype(np.float32)
    bce = (np.maximum(logits, 0) - logits * targets
           + np.log1p(np.exp(-np.abs(logits))))
    np.testing.assert_allclose(float(_segm(logits, targets, [3, 0])),
                               bce[0].sum() / (2 * 4 * 5), rtol=1e-6)
    # Every image with instances: bit-identical to the plain batch mean.
    assert float(_segm(logits, targets, [3, 1])) == \
        float(_segm(logits, targets))


def test_segm_loss_through_the_encoder_targets():
    anchors, counts = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    enc = YolactTargetEncoder(anchors, counts, (64, 64), num_classes=2)
    full = enc(_gt([(4, 6, 40, 30)], [1], (64, 64)))
    empty = enc(_gt([], [], (64, 64)))
    y_true = {k: tf.stack([full[k], empty[k]]) for k in full}
    logits = np.random.RandomState(2).randn(2, 8, 8, 2).astype(np.float32)
    value = float(yl.YolactSegmLoss(num_classes=2).call(
        y_true, {"segm": tf.constant(logits)}))
    only_full = float(_segm(logits[:1], full["segm_targets"][None], [1]))
    np.testing.assert_allclose(value, only_full / 2, rtol=1e-6)


# -- crowd regions --------------------------------------------------------

ANCHORS = np.array([[0, 0, 20, 20], [40, 40, 60, 60], [40, 0, 60, 20]],
                   np.float32)


def _crowd_gt(size=(64, 64)):
    gt = _gt([(0, 0, 20, 20)], [1], size)
    crowd = np.zeros(size, np.uint8)
    crowd[40:60, 40:56] = 1          # covers 16 / 20 of anchor 1
    gt["crowd_mask"] = crowd
    return gt


def _encoder(**kwargs):
    return YolactTargetEncoder(ANCHORS, [3], (64, 64), num_classes=3,
                               assigner="max_iou", proto_size=(16, 16),
                               segm_size=(8, 8), **kwargs)


def test_encoder_ignores_anchors_covered_by_crowd_pixels():
    off = _encoder()(_crowd_gt())
    np.testing.assert_array_equal(off["label_weights"], [1, 1, 1])
    on = _encoder(ignore_iof_thr=0.5)(_crowd_gt())
    np.testing.assert_array_equal(on["labels"], [1, 3, 3])
    np.testing.assert_array_equal(on["label_weights"], [1, 0, 1])
    np.testing.assert_array_equal(on["matched_gt"], [0, -1, -1])
    # IoF 0.8: kept at a threshold of 0.8 (mmdet: strictly greater).
    kept = _encoder(ignore_iof_thr=0.8)(_crowd_gt())
    np.testing.assert_array_equal(kept["label_weights"], [1, 1, 1])
    # Graph mode, as in tf.data.
    graph = tf.function(_encoder(ignore_iof_thr=0.5))(_crowd_gt())
    for key in on:
        np.testing.assert_array_equal(graph[key], on[key], err_msg=key)


def test_encoder_refuses_ignore_without_crowd_mask_or_with_atss():
    gt = _crowd_gt()
    del gt["crowd_mask"]
    with pytest.raises(ValueError, match="crowd_mask"):
        _encoder(ignore_iof_thr=0.5)(gt)
    with pytest.raises(ValueError, match="max_iou"):
        YolactTargetEncoder(ANCHORS, [3], (64, 64), num_classes=3,
                            assigner="atss", ignore_iof_thr=0.5)


def test_config_key_reaches_the_encoder_and_paper_configs_keep_it_off():
    base = ["model.architecture=yolact", "targets.assigner=fixed_iou"]
    config = load_config(overrides=base + ["targets.ignore_iof_thr=0.5"])
    assert config.family.make_encoder(config).ignore_iof_thr == 0.5
    for bad in (["targets.ignore_iof_thr=1.0"],
                ["targets.assigner=atss_maiou",
                 "targets.ignore_iof_thr=0.5"]):
        with pytest.raises(ConfigError, match="targets.ignore_iof_thr"):
            load_config(overrides=base + bad)
    for path in sorted(CONFIGS_DIR.glob("*yolact*.yaml")):
        config = load_config(path)
        assert config.targets.ignore_iof_thr == -1.0, path
        assert config.family.make_encoder(config).ignore_iof_thr == -1.0
        # The official mmdet dataset drops images without annotations.
        assert config.data.skip_empty, path


# -- mmdet AnchorGenerator strides ------------------------------------------

def test_stride_pairs_follow_mmdet():
    # mmdet AnchorGenerator docstring: strides [16], ratios [1], scales [1],
    # base_sizes [9] on a 2 x 2 grid.
    anchors, counts = anchors_mmdet.mmdet_anchors(
        [(2, 2)], strides=[(16, 16)], octave_base_scale=1, base_sizes=[9])
    np.testing.assert_array_equal(anchors, [
        [-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5],
        [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]])
    assert counts == (4,)
    # A square pair is the number, bit for bit.
    pairs, _ = anchors_mmdet.mmdet_anchors(
        [8, 4, 2, 1, 1], strides=[(s, s) for s in (8, 16, 32, 64, 128)])
    plain, _ = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    np.testing.assert_array_equal(pairs, plain)
    # (stride_w, stride_h) = (8, 16) on a 2 x 3 (h x w) map: x steps 8,
    # y steps 16, base size min(8, 16) = 8 (x4 octave scale = 32 px).
    anchors, _ = anchors_mmdet.mmdet_anchors([(2, 3)], strides=[(8, 16)])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    np.testing.assert_array_equal(centres, [[0, 0], [8, 0], [16, 0],
                                            [0, 16], [8, 16], [16, 16]])
    np.testing.assert_array_equal(anchors[:, 2:] - anchors[:, :2], 32)


@pytest.mark.parametrize("kwargs,name", [
    (dict(strides=[(8,), 16]), "strides"),
    (dict(strides=[(8, 8, 8), 16]), "strides"),
    (dict(strides=[(8, -8), 16]), "strides"),
    (dict(strides=[None, 16]), "strides"),
    (dict(strides=8), "strides"),
    (dict(strides=[8]), "strides"),          # 2 levels, 1 stride
    (dict(strides=[8, 16], base_sizes=[(8, 8), 16]), "base_sizes"),
])
def test_bad_strides_are_refused_naming_the_argument(kwargs, name):
    sizes = [(2, 2), (1, 1)]
    with pytest.raises(ValueError, match=f"^{name}:"):
        anchors_mmdet.mmdet_anchors(sizes, **kwargs)
