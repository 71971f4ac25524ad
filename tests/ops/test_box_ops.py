"""The shared IoU (``ops.box_ops``): one operation order, two documented
treatments of a zero union, numpy and TF alike."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.ops import box_ops
from orienmask_tf.ops.nms import fast_nms_mask
from orienmask_tf.ops.nms import greedy_nms_mask


def _random_xyxy(rng, n, scale=20.0):
    xy = rng.uniform(0, scale, (n, 2)).astype(np.float32)
    wh = rng.uniform(0, scale / 2, (n, 2)).astype(np.float32)
    return np.concatenate([xy, xy + wh], -1)


def _official_order(b1, b2, eps=None):
    """mmdet ``bbox_overlaps`` / official ``bbox_ious`` in numpy float32."""
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.maximum(rb - lt, np.float32(0))
    inter = wh[..., 0] * wh[..., 1]
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    if eps:
        union = np.maximum(union, np.float32(eps))
    return inter / union


def test_pairwise_iou_is_bit_identical_to_the_official_order():
    rng = np.random.default_rng(0)
    b1, b2 = _random_xyxy(rng, 7), _random_xyxy(rng, 11)
    for eps in (None, 1e-6):
        ref = _official_order(b1, b2, eps)
        tf_iou = box_ops.pairwise_iou(tf.constant(b1), tf.constant(b2),
                                      eps=eps).numpy()
        np_iou = box_ops.pairwise_iou(b1, b2, eps=eps)
        assert isinstance(np_iou, np.ndarray) and np_iou.dtype == np.float32
        np.testing.assert_array_equal(tf_iou, ref)
        np.testing.assert_array_equal(np_iou, ref)


def test_cxcywh_equals_corners_computed_first():
    rng = np.random.default_rng(1)
    corners = _random_xyxy(rng, 9)
    centre = np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2,
                             corners[:, 2:] - corners[:, :2]], -1)
    batched = tf.constant(np.stack([centre, centre[::-1]]))   # (2, 9, 4)
    got = box_ops.pairwise_iou(batched, batched, box_format="cxcywh")
    xyxy = box_ops.cxcywh_to_xyxy(batched)
    np.testing.assert_array_equal(got.numpy(),
                                  box_ops.pairwise_iou(xyxy, xyxy).numpy())
    assert got.shape == (2, 9, 9)


def test_zero_union_zero_nan_and_eps():
    # Row 0: an empty box; row 1: a zero-width box; row 2: a real box.
    boxes = np.array([[0, 0, 0, 0], [5, 5, 5, 9], [1, 1, 3, 3]], np.float32)
    for backend in (np.asarray, tf.constant):
        zero = np.asarray(box_ops.pairwise_iou(backend(boxes), backend(boxes)))
        nan = np.asarray(box_ops.pairwise_iou(backend(boxes), backend(boxes),
                                              zero_union="nan"))
        eps = np.asarray(box_ops.pairwise_iou(backend(boxes), backend(boxes),
                                              eps=1e-6, zero_union="nan"))
        # 0 / 0 (union of two zero-area boxes): 0, NaN, 0 (clamped).
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            assert zero[i, j] == 0.0 and eps[i, j] == 0.0
            assert np.isnan(nan[i, j])
        # A zero-area box against a real box has a positive union: 0.
        for i, j in ((0, 2), (2, 0), (1, 2), (2, 1)):
            assert zero[i, j] == nan[i, j] == eps[i, j] == 0.0
        assert zero[2, 2] == nan[2, 2] == eps[2, 2] == 1.0


def test_bad_options_are_refused():
    boxes = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="box_format"):
        box_ops.pairwise_iou(boxes, boxes, box_format="xywh")
    with pytest.raises(ValueError, match="zero_union"):
        box_ops.pairwise_iou(boxes, boxes, zero_union="one")


def test_intersection_union_eps_and_numpy_promotion():
    # data.augment's MinIoU crop: an int patch against float32 boxes,
    # union clamped to 1e-6, computed in numpy (float64 by promotion).
    patch = np.array([2, 2, 10, 10])
    boxes = np.array([[0, 0, 4, 4], [3, 3, 3, 3], [20, 20, 30, 30]],
                     np.float32)
    iou = box_ops.pairwise_iou(patch[None], boxes, eps=1e-6)[0]
    inter = np.array([4.0, 0.0, 0.0])
    union = np.maximum(64.0 + np.array([16.0, 0.0, 100.0]) - inter, 1e-6)
    np.testing.assert_array_equal(iou, inter / union)
    assert iou.dtype == np.float64
    inter_t, union_t = box_ops.pairwise_intersection_union(
        tf.constant(boxes), tf.constant(boxes), eps=1e-6)
    assert union_t.numpy()[1, 1] == np.float32(1e-6)
    assert inter_t.numpy()[0, 0] == 16.0


def test_nms_ignores_nan_overlaps_of_empty_boxes():
    # Two identical zero-size boxes: IoU 0 / 0 = NaN never suppresses
    # (nms_cpu.cpp); a real duplicate is suppressed.
    boxes = tf.constant([[[0.5, 0.5, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0],
                          [0.2, 0.2, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]])
    scores = tf.constant([[0.9, 0.8, 0.7, 0.6]])
    valid = tf.ones((1, 4), tf.bool)
    for nms in (greedy_nms_mask, fast_nms_mask):
        keep = nms(boxes, scores, valid, 0.5).numpy()
        np.testing.assert_array_equal(keep, [[True, True, True, False]])


def test_first_argmax_takes_the_first_of_ties():
    values = tf.constant([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0], [2.0, 3.0, 3.0]])
    np.testing.assert_array_equal(box_ops.first_argmax(values, axis=1),
                                  [1, 0, 1])
    np.testing.assert_array_equal(box_ops.first_argmax(values, axis=0),
                                  [1, 0, 0])
    np.testing.assert_array_equal(box_ops.first_argmax(values, axis=-1),
                                  [1, 0, 1])


def test_batched_boxes_give_per_image_results():
    # Leading axes are batch axes: (B, n1, 4) x (B, n2, 4) -> (B, n1, n2),
    # image b against image b; a 2-D side broadcasts over the batch.
    rng = np.random.default_rng(2)
    a = np.stack([_random_xyxy(rng, 3) for _ in range(2)])
    b = np.stack([_random_xyxy(rng, 5) for _ in range(2)])
    for backend in (np.asarray, tf.constant):
        for fn in (box_ops.pairwise_iou, box_ops.pairwise_iof):
            got = np.asarray(fn(backend(a), backend(b)))
            assert got.shape == (2, 3, 5)
            for i in range(2):
                np.testing.assert_array_equal(
                    got[i], np.asarray(fn(backend(a[i]), backend(b[i]))))
            shared = np.asarray(fn(backend(a), backend(b[0])))
            for i in range(2):
                np.testing.assert_array_equal(
                    shared[i], np.asarray(fn(backend(a[i]), backend(b[0]))))


def test_boxes_of_the_wrong_shape_are_refused_naming_the_argument():
    boxes = np.zeros((3, 4), np.float32)
    for backend in (np.asarray, tf.constant):
        with pytest.raises(ValueError, match=r"boxes1: .*shape \(4,\)"):
            box_ops.pairwise_iou(backend(boxes[0]), backend(boxes))
        with pytest.raises(ValueError, match=r"boxes2: .*shape \(4,\)"):
            box_ops.pairwise_iou(backend(boxes), backend(boxes[0]))
        with pytest.raises(ValueError, match=r"boxes2: .*shape \(3, 5\)"):
            box_ops.pairwise_iou(backend(boxes),
                                 backend(np.zeros((3, 5), np.float32)))
        with pytest.raises(ValueError, match="do not broadcast"):
            box_ops.pairwise_intersection_union(
                backend(np.zeros((2, 3, 4), np.float32)),
                backend(np.zeros((3, 3, 4), np.float32)))
        with pytest.raises(ValueError, match="boxes1"):
            box_ops.pairwise_iof(backend(boxes[:, :2]), backend(boxes))
    # Unknown dimensions pass (graph inputs of dynamic size).
    fn = tf.function(lambda x: box_ops.pairwise_iou(x, x),
                     input_signature=[tf.TensorSpec([None, None, 4])])
    assert fn(tf.zeros((2, 3, 4))).shape == (2, 3, 3)


def test_pairwise_iof_hand_case_and_mmdet_eps():
    anchors = np.array([[0, 0, 10, 10], [5, 5, 5, 5]], np.float32)
    ignore = np.array([[5, 0, 25, 10], [0, 0, 0, 0]], np.float32)
    for backend in (np.asarray, tf.constant):
        iof = np.asarray(box_ops.pairwise_iof(backend(anchors),
                                              backend(ignore)))
        # 50 / 100; a zero-area box: 0 / max(0, 1e-6) = 0 (mmdet eps).
        np.testing.assert_array_equal(iof, [[0.5, 0.0], [0.0, 0.0]])


def test_shape_iou_refuses_batched_input():
    wh = tf.constant([[10.0, 13.0], [16.0, 30.0]])
    assert box_ops.shape_iou(wh, wh).shape == (2, 2)
    with pytest.raises(ValueError, match=r"wh1: .*\(1, 2, 2\)"):
        box_ops.shape_iou(wh[None], wh)
    with pytest.raises(ValueError, match="wh2"):
        box_ops.shape_iou(wh, tf.zeros((2, 4)))
