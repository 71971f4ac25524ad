"""YOLACT targets and losses: hand-computed cases and a tiny training loop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.yolact import loss as yl
from orienmask_tf.families.yolact.network import Yolact
from orienmask_tf.families.yolact import anchors as anchors_mmdet
from orienmask_tf.families.yolact.encoder import YolactTargetEncoder
from orienmask_tf.families.yolact.encoder import delta_xywh_encode


def _gt(boxes_xyxy, classes, size, max_gts=4):
    """Padded gt dict (normalised cx, cy, w, h) with box-shaped masks."""
    h, w = size
    boxes = np.zeros((max_gts, 4), np.float32)
    cls = -np.ones((max_gts,), np.int64)
    masks = np.zeros((max_gts, h, w), np.uint8)
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(boxes_xyxy, classes)):
        boxes[i] = [(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w,
                    (y2 - y1) / h]
        cls[i] = c
        masks[i, int(y1):int(y2), int(x1):int(x2)] = 1
    return {"boxes": boxes, "classes": cls, "masks": masks,
            "num_instances": np.int64(len(classes))}


def test_encoder_max_iou_hand_case():
    # Anchor 0 equals the GT (IoU 1), anchor 1 has IoU 0.45 (ignored),
    # anchor 2 is far away (negative).
    anchors = np.array([[0, 0, 20, 20], [0, 0, 20, 9], [40, 40, 60, 60]],
                       np.float32)
    enc = YolactTargetEncoder(anchors, [3], (64, 64), num_classes=3,
                              assigner="max_iou", proto_size=(16, 16),
                              segm_size=(8, 8))
    out = enc(_gt([(0, 0, 20, 20)], [2], (64, 64)))
    np.testing.assert_array_equal(out["labels"], [2, 3, 3])
    np.testing.assert_array_equal(out["label_weights"], [1, 0, 1])
    np.testing.assert_array_equal(out["matched_gt"], [0, -1, -1])
    np.testing.assert_allclose(out["box_targets"], np.zeros((3, 4)), atol=1e-6)
    assert int(out["num_gts"]) == 1
    np.testing.assert_allclose(out["gt_boxes"][0], [0, 0, 20, 20], atol=1e-5)
    # 20 px of 64 -> 5 of 16 prototype pixels (bilinear then > 0.5).
    assert out["mask_targets"].shape == (4, 16, 16)
    np.testing.assert_array_equal(out["mask_targets"][0, :5, :5], 1)
    assert float(tf.reduce_sum(out["mask_targets"][0])) == 25
    assert float(tf.reduce_sum(out["mask_targets"][1:])) == 0
    # Official channel quirk: label 2 -> channel 1.
    segm = out["segm_targets"].numpy()
    assert segm.shape == (8, 8, 3)
    assert segm[..., 1].sum() > 0 and segm[..., [0, 2]].sum() == 0


def test_encoder_atss_maiou_and_box_targets():
    anchors, counts = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    gt = _gt([(4, 6, 40, 30), (30, 30, 62, 60)], [0, 1], (64, 64))
    for overlap in ("iou", "maiou"):
        enc = YolactTargetEncoder(anchors, counts, (64, 64), num_classes=2,
                                  overlap=overlap)
        assert enc.proto_size == (16, 16) and enc.segm_size == (8, 8)
        out = tf.function(enc)(gt)
        pos = out["matched_gt"].numpy() >= 0
        assert pos.sum() >= 2
        labels = out["labels"].numpy()
        np.testing.assert_array_equal(labels[~pos], 2)
        gt_px = out["gt_boxes"].numpy()[out["matched_gt"].numpy()[pos]]
        np.testing.assert_array_equal(labels[pos],
                                      np.array([0, 1])[out["matched_gt"]
                                                       .numpy()[pos]])
        expected = delta_xywh_encode(anchors[pos], gt_px).numpy()
        np.testing.assert_allclose(out["box_targets"].numpy()[pos], expected,
                                   atol=1e-5)
        # Decoding the targets gives the GT back.
        from orienmask_tf.families.yolact.decode import delta_xywh_decode
        np.testing.assert_allclose(
            delta_xywh_decode(anchors[pos], expected), gt_px, atol=1e-3)


def test_encoder_no_instances():
    anchors, counts = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    enc = YolactTargetEncoder(anchors, counts, (64, 64), num_classes=2)
    out = enc(_gt([], [], (64, 64)))
    assert np.all(out["labels"].numpy() == 2)
    assert np.all(out["matched_gt"].numpy() == -1)
    assert float(tf.reduce_sum(out["segm_targets"])) == 0


def _pred_from_rows(rows, key):
    """Put ``(B, N, K)`` rows into level 0 of a 5-level output dict."""
    rows = np.asarray(rows, np.float32)
    b, n, k = rows.shape
    out = {f"{key}_l0": rows.reshape(b, n, 1, k)}
    for i in range(1, 5):
        out[f"{key}_l{i}"] = np.zeros((b, 0, 1, k), np.float32)
    return out


def _np_ce(logits, labels):
    m = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
    return lse - np.take_along_axis(logits, labels[..., None], -1)[..., 0]


def test_ohem_classification_hand_case():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 10, 3).astype(np.float32)
    # Image 0: 1 positive -> the 3 hardest of 8 negatives (+1 ignored).
    # Image 1: no positive -> every negative.
    labels = np.array([[0] + [2] * 9, [2] * 10])
    weights = np.ones((2, 10), np.float32)
    weights[0, 5] = 0.0
    loss = yl.YolactClassificationLoss(num_classes=2)
    y_true = {"labels": labels, "label_weights": weights}
    value = float(loss(y_true, _pred_from_rows(logits, "cls_score")))
    ce = _np_ce(logits, labels) * weights
    hard0 = np.sort(ce[0, 1:])[::-1][:3].sum()
    expected = (ce[0, 0] + hard0 + ce[1].sum()) / (1 + 1)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_box_loss_hand_case():
    deltas = np.zeros((1, 3, 4), np.float32)
    targets = np.array([[[0.5, -2.0, 0, 0], [9, 9, 9, 9], [0, 0, 0, 1.0]]],
                       np.float32)
    labels = np.array([[1, 2, 0]])
    loss = yl.YolactBoxLoss(num_classes=2)
    value = float(loss({"labels": labels, "box_targets": targets},
                       _pred_from_rows(deltas, "bbox_pred")))
    # smooth_l1: 0.125 + 1.5 + 0.5; two positives; weight 1.5.
    np.testing.assert_allclose(value, 1.5 * (0.125 + 1.5 + 0.5) / 2,
                               rtol=1e-6)


def test_mask_loss_hand_case():
    rng = np.random.RandomState(1)
    protos = rng.rand(1, 8, 8, 4).astype(np.float32)
    coeffs = rng.uniform(-1, 1, (1, 3, 4)).astype(np.float32)
    gt_boxes = np.array([[[0, 0, 16, 16], [8, 4, 32, 28]]], np.float32)
    targets = np.zeros((1, 2, 8, 8), np.float32)
    targets[0, 0, :4, :4] = 1
    targets[0, 1, 1:7, 2:8] = 1
    matched = np.array([[1, -1, 0]])
    y_true = {"matched_gt": matched, "gt_boxes": gt_boxes,
              "mask_targets": targets}
    y_pred = {"protos": protos, **_pred_from_rows(coeffs, "coeff_pred")}
    loss = yl.YolactMaskLoss((32, 32), num_classes=2, loss_weight=8.0)
    value = float(loss(y_true, y_pred))
    total = 0.0
    for anchor, g in ((0, 1), (2, 0)):
        p = 1 / (1 + np.exp(-(protos[0] @ coeffs[0, anchor])))
        x1, y1, x2, y2 = gt_boxes[0, g] / 32 * 8
        keep = np.zeros((8, 8), bool)
        keep[max(int(np.ceil(y1 - 1)), 0):int(np.ceil(min(y2 + 1, 8))),
             max(int(np.ceil(x1 - 1)), 0):int(np.ceil(min(x2 + 1, 8)))] = True
        p = np.where(keep, p, 0.0)
        t = targets[0, g]
        bce = -(t * np.maximum(np.log(np.maximum(p, 1e-45)), -100)
                + (1 - t) * np.maximum(np.log(np.maximum(1 - p, 1e-45)), -100))
        w = (x2 - x1) / 8 * (y2 - y1) / 8
        total += 8.0 * bce.mean() / w
    np.testing.assert_allclose(value, total / 2, rtol=1e-5)


def test_mask_loss_subset_and_empty():
    protos = np.ones((1, 4, 4, 2), np.float32)
    coeffs = np.zeros((1, 6, 2), np.float32)
    y_true = {"matched_gt": np.array([[0, 0, 0, 0, 0, -1]]),
              "gt_boxes": np.array([[[0, 0, 16, 16]]], np.float32),
              "mask_targets": np.ones((1, 1, 4, 4), np.float32)}
    y_pred = {"protos": protos, **_pred_from_rows(coeffs, "coeff_pred")}
    loss = yl.YolactMaskLoss((16, 16), num_classes=2, max_masks=2)
    # Every mask is sigmoid(0) = 0.5 against 1: BCE log 2 per pixel, area 1.
    np.testing.assert_allclose(float(loss(y_true, y_pred)), 8 * np.log(2),
                               rtol=1e-5)
    y_true["matched_gt"] = -np.ones((1, 6), np.int64)
    assert float(loss(y_true, y_pred)) == 0.0


def test_segm_loss_hand_case():
    logits = np.array([[[[0.0, 2.0]]]], np.float32)
    targets = np.array([[[[1.0, 0.0]]]], np.float32)
    value = float(yl.YolactSegmLoss(num_classes=2)(
        {"segm_targets": targets}, {"segm": logits}))
    np.testing.assert_allclose(value, np.log(2) + np.log1p(np.exp(2.0)),
                               rtol=1e-6)


@pytest.mark.parametrize("assigner,overlap", [("atss", "maiou"),
                                              ("max_iou", "iou")])
def test_tiny_model_loss_decreases(assigner, overlap):
    keras.utils.set_random_seed(0)
    size = (64, 64)
    num_anchors = 1 if assigner == "atss" else 3
    if assigner == "atss":
        anchors, counts = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    else:
        anchors, counts = anchors_mmdet.mmdet_anchors(
            [8, 4, 2, 1, 1], octave_base_scale=3, ratios=(0.5, 1.0, 2.0))
    model = Yolact(num_classes=2, num_anchors=num_anchors, stem_channels=8,
                   base_channels=4, stackwise_num_blocks=(1, 1, 1, 1),
                   fpn_channels=16, feat_channels=16, proto_channels=16,
                   image_shape=(64, 64, 3))
    enc = YolactTargetEncoder(anchors, counts, size, num_classes=2,
                              assigner=assigner, overlap=overlap)
    examples = [enc(_gt([(8, 8, 40, 36), (30, 20, 60, 60)], [0, 1], size)),
                enc(_gt([(10, 30, 50, 60)], [1], size))]
    y_true = {k: tf.stack([e[k] for e in examples]) for k in examples[0]}
    images = tf.constant(np.random.RandomState(0).randn(2, 64, 64, 3),
                         tf.float32)
    losses = yl.yolact_losses(size, num_classes=2, num_anchors=num_anchors,
                              seed=0)
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y_pred = model(images, training=True)
            items = {k: fn(y_true, y_pred) for k, fn in losses.items()}
            total = tf.add_n(list(items.values()))
        grads = tape.gradient(total, model.trainable_weights)
        optimizer.apply_gradients(zip(grads, model.trainable_weights))
        return total, items

    history = []
    for _ in range(8):
        total, items = step()
        assert all(np.isfinite(float(v)) for v in items.values())
        history.append(float(total))
    assert history[-1] < history[0], history


def test_mask_loss_gradient_is_finite_for_an_image_without_instances():
    # Unused mask slots of an image with no instance point at a zero padding
    # box; its area must not reach a division (NaN through tf.where).
    protos = tf.constant(np.random.RandomState(2).rand(2, 4, 4, 2),
                         tf.float32)
    coeffs = tf.constant(np.random.RandomState(3).randn(2, 6, 2), tf.float32)
    y_true = {"matched_gt": np.array([[0, -1, -1, -1, -1, -1], [-1] * 6]),
              "gt_boxes": np.array([[[0, 0, 8, 8]], [[0, 0, 0, 0]]],
                                   np.float32),
              "mask_targets": np.ones((2, 1, 4, 4), np.float32)}
    loss = yl.YolactMaskLoss((16, 16), num_classes=2)
    with tf.GradientTape() as tape:
        tape.watch([protos, coeffs])
        y_pred = {"protos": protos,
                  "coeff_pred_l0": tf.reshape(coeffs, (2, 6, 1, 2))}
        for i in range(1, 5):
            y_pred[f"coeff_pred_l{i}"] = tf.zeros((2, 0, 1, 2))
        value = loss(y_true, y_pred)
    grads = tape.gradient(value, [protos, coeffs])
    assert np.isfinite(float(value)) and float(value) > 0
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy()))
    assert float(tf.reduce_sum(tf.abs(grads[1][1]))) == 0.0


@pytest.mark.parametrize("assigner,overlap", [("atss", "maiou"),
                                              ("max_iou", "iou")])
def test_encoder_takes_unpadded_masks_with_static_outputs(assigner, overlap):
    # build_dataset hands the encoder only the instances' masks; the result
    # must equal that of fully padded masks and keep static shapes.
    anchors, counts = anchors_mmdet.mmdet_anchors([8, 4, 2, 1, 1])
    enc = YolactTargetEncoder(anchors, counts, (64, 64), num_classes=2,
                              assigner=assigner, overlap=overlap)
    padded = _gt([(4, 6, 40, 30), (30, 30, 62, 60)], [0, 1], (64, 64),
                 max_gts=5)
    unpadded = dict(padded, masks=padded["masks"][:2])
    spec = {"boxes": tf.TensorSpec((5, 4), tf.float32),
            "classes": tf.TensorSpec((5,), tf.int64),
            "masks": tf.TensorSpec((None, 64, 64), tf.uint8),
            "num_instances": tf.TensorSpec((), tf.int64)}
    graph = tf.function(enc, input_signature=[spec])
    out = graph(unpadded)
    ref = enc(padded)
    for key in ref:  # graph vs eager float rounding only
        np.testing.assert_allclose(out[key].numpy(), ref[key].numpy(),
                                   atol=1e-5, err_msg=key)
    traced = graph.get_concrete_function().structured_outputs
    assert traced["mask_targets"].shape == (5, 16, 16)
    assert traced["labels"].shape == (len(anchors),)
    empty = graph(dict(unpadded, masks=padded["masks"][:0],
                       num_instances=np.int64(0)))
    assert np.all(empty["labels"].numpy() == 2)
    assert float(tf.reduce_sum(empty["mask_targets"])) == 0
    assert float(tf.reduce_sum(empty["segm_targets"])) == 0
