"""MaxIoUAssigner ignore regions (mmdet ``ignore_iof_thr`` /
``gt_bboxes_ignore``) and the one-image shape contract of ``assign.maiou``."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.assign import maiou
from orienmask_tf.assign.assigners import MaxIoUAssigner
from orienmask_tf.ops import box_ops

# mmdet tests/test_utils/test_assigner.py, test_max_iou_assigner_with_ignore
# (v2 numbers: the fourth box is [30, 32, 40, 42]).
MMDET_BBOXES = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15],
                         [30, 32, 40, 42]], np.float32)
MMDET_GTS = np.array([[0, 0, 10, 9], [0, 10, 10, 19]], np.float32)
MMDET_IGNORE = np.array([[30, 30, 40, 40]], np.float32)


def _mmdet_assigner(**kwargs):
    # mmdet's defaults (gt_max_assign_all=True, min_pos_iou=0) with the
    # test's thresholds.
    return MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5,
                          gt_max_assign_all=True, **kwargs)


@pytest.mark.parametrize("wrt_candidates", [False, True])
def test_mmdet_max_iou_assigner_with_ignore(wrt_candidates):
    assigner = _mmdet_assigner(ignore_iof_thr=0.5,
                               ignore_wrt_candidates=wrt_candidates)
    out = assigner(MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=MMDET_IGNORE)
    np.testing.assert_array_equal(out["assigned_gt_inds"], [1, 0, 2, -1])
    # The ignored anchor's overlaps were set to -1 (mmdet max_overlaps).
    assert float(out["max_overlaps"][3]) == -1.0
    # Without the ignore box (or with the test off) it is a negative.
    for off in (assigner(MMDET_BBOXES, MMDET_GTS),
                _mmdet_assigner()(MMDET_BBOXES, MMDET_GTS,
                                  gt_bboxes_ignore=MMDET_IGNORE),
                _mmdet_assigner(ignore_iof_thr=0.0)(
                    MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=MMDET_IGNORE)):
        np.testing.assert_array_equal(off["assigned_gt_inds"], [1, 0, 2, 0])


def test_iof_is_over_the_anchor_or_over_the_ignore_box():
    # Anchor 0 (10x10) lies inside the 40x40 ignore box: IoF 1 over the
    # anchor, 100 / 1600 over the box. Anchor 1 covers the box: the
    # reverse. Hand values of mmdet bbox_overlaps(mode='iof').
    anchors = np.array([[0, 0, 10, 10], [-20, -20, 60, 60]], np.float32)
    ignore = np.array([[0, 0, 40, 40]], np.float32)
    np.testing.assert_allclose(box_ops.pairwise_iof(anchors, ignore),
                               [[1.0], [1600.0 / 6400.0]])
    np.testing.assert_allclose(box_ops.pairwise_iof(ignore, anchors),
                               [[100.0 / 1600.0, 1.0]])
    gts = np.array([[100, 100, 120, 120]], np.float32)
    over_anchor = _mmdet_assigner(ignore_iof_thr=0.5)(
        anchors, gts, gt_bboxes_ignore=ignore)["assigned_gt_inds"]
    over_box = _mmdet_assigner(ignore_iof_thr=0.5,
                               ignore_wrt_candidates=False)(
        anchors, gts, gt_bboxes_ignore=ignore)["assigned_gt_inds"]
    # The GT's best anchor (IoU 0 everywhere, min_pos_iou 0) is forced
    # positive only where it is not ignored.
    np.testing.assert_array_equal(over_anchor, [-1, 1])
    np.testing.assert_array_equal(over_box, [1, -1])


def test_ignored_anchor_is_not_a_gts_forced_best_anchor():
    # Anchor 0 is the GT's best (IoU 0.45) but ignored; mmdet's low-quality
    # step then picks the best remaining anchor (IoU 0.3 < pos 0.5).
    anchors = np.array([[0, 0, 10, 9], [0, 5, 10, 11], [50, 50, 60, 60]],
                       np.float32)
    gts = np.array([[0, 0, 10, 20]], np.float32)
    ignore = np.array([[0, 0, 10, 9]], np.float32)
    base = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4)
    np.testing.assert_array_equal(
        base(anchors, gts)["assigned_gt_inds"], [1, 0, 0])
    out = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4,
                         ignore_iof_thr=0.9)(anchors, gts,
                                             gt_bboxes_ignore=ignore)
    # Anchor 1 is 40 / 60 inside the ignore box: IoF 0.667 <= 0.9, kept.
    np.testing.assert_array_equal(out["assigned_gt_inds"], [-1, 1, 0])
    np.testing.assert_allclose(out["max_overlaps"], [-1.0, 0.3, 0.0],
                               atol=1e-6)


def test_padded_ignore_boxes_and_no_gt():
    assigner = _mmdet_assigner(ignore_iof_thr=0.5)
    padded = np.concatenate([MMDET_IGNORE, np.zeros((3, 4), np.float32)])
    ref = assigner(MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=MMDET_IGNORE)
    out = assigner(MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=padded,
                   num_ignores=1)
    for key in ref:
        np.testing.assert_array_equal(out[key], ref[key], err_msg=key)
    # Padding rows never ignore anything, even one covering an anchor.
    cover = np.array([[0, 0, 0, 0], [30, 30, 40, 40]], np.float32)
    out = assigner(MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=cover,
                   num_ignores=1)
    np.testing.assert_array_equal(out["assigned_gt_inds"], [1, 0, 2, 0])
    out = assigner(MMDET_BBOXES, MMDET_GTS,
                   gt_bboxes_ignore=np.zeros((0, 4), np.float32))
    np.testing.assert_array_equal(out["assigned_gt_inds"], [1, 0, 2, 0])
    # mmdet: with no GT every anchor is background, ignored or not.
    out = assigner(MMDET_BBOXES, np.zeros((2, 4), np.float32), num_gts=0,
                   gt_bboxes_ignore=MMDET_IGNORE)
    np.testing.assert_array_equal(out["assigned_gt_inds"], [0, 0, 0, 0])
    np.testing.assert_array_equal(out["max_overlaps"], [0, 0, 0, 0])


def test_region_iof_equals_box_iof_for_rectangles():
    rng = np.random.default_rng(0)
    xy = rng.integers(-8, 40, (64, 2))
    wh = rng.integers(1, 24, (64, 2))
    anchors = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    mask = np.zeros((48, 40), np.uint8)
    mask[10:30, 5:25] = 1                        # box (5, 10, 25, 30)
    box = np.array([[5, 10, 25, 30]], np.float32)
    np.testing.assert_array_equal(
        maiou.region_iof(anchors, mask).numpy(),
        box_ops.pairwise_iof(tf.constant(anchors), tf.constant(box))
        .numpy()[:, 0])
    # Two disjoint regions: each anchor's covered fraction of the union.
    mask[35:45, 30:40] = 1
    iof = maiou.region_iof(np.array([[30, 35, 40, 45], [20, 25, 40, 45]],
                                    np.float32), mask).numpy()
    np.testing.assert_allclose(iof, [1.0, (25 + 100) / 400.0])


def test_ignore_mask_matches_ignore_boxes_and_runs_under_xla():
    anchors = np.array([[0, 0, 10, 10], [10, 10, 20, 20], [5, 5, 15, 15],
                        [30, 32, 40, 42], [28, 28, 44, 44]], np.float32)
    mask = np.zeros((48, 48), np.uint8)
    mask[30:40, 30:40] = 1
    assigner = _mmdet_assigner(ignore_iof_thr=0.5)
    by_box = assigner(anchors, MMDET_GTS, gt_bboxes_ignore=MMDET_IGNORE)
    by_mask = assigner(anchors, MMDET_GTS, ignore_mask=mask)
    np.testing.assert_array_equal(by_mask["assigned_gt_inds"],
                                  by_box["assigned_gt_inds"])
    np.testing.assert_array_equal(by_mask["assigned_gt_inds"],
                                  [1, 0, 2, -1, 0])   # 100 / 256 <= 0.5

    def run(gts, num, crowd, ignore, num_ignores):
        return assigner(anchors, gts, num_gts=num, ignore_mask=crowd,
                        gt_bboxes_ignore=ignore, num_ignores=num_ignores)

    padded_gts = np.concatenate([MMDET_GTS, np.zeros((2, 4), np.float32)])
    padded_ign = np.concatenate([MMDET_IGNORE, np.zeros((1, 4), np.float32)])
    args = (padded_gts, np.int32(2), mask, padded_ign, np.int32(1))
    eager = run(*args)
    graph = tf.function(run)(*args)
    xla = tf.function(run, jit_compile=True)(*args)
    for key in eager:
        np.testing.assert_array_equal(graph[key], eager[key], err_msg=key)
        np.testing.assert_array_equal(xla[key], eager[key], err_msg=key)
    np.testing.assert_array_equal(eager["assigned_gt_inds"],
                                  [1, 0, 2, -1, 0])


def test_ignore_mask_needs_iof_over_the_anchor():
    assigner = _mmdet_assigner(ignore_iof_thr=0.5,
                               ignore_wrt_candidates=False)
    with pytest.raises(ValueError, match="ignore_mask"):
        assigner(MMDET_BBOXES, MMDET_GTS,
                 ignore_mask=np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="gt_bboxes_ignore"):
        _mmdet_assigner(ignore_iof_thr=0.5)(
            MMDET_BBOXES, MMDET_GTS, gt_bboxes_ignore=MMDET_IGNORE[0])


@pytest.mark.parametrize("name", sorted(maiou.OVERLAPS))
def test_overlap_functions_take_one_image(name):
    fn = maiou.OVERLAPS[name]
    anchors = MMDET_BBOXES
    masks = np.ones((2, 48, 48), np.uint8)
    fn(anchors, MMDET_GTS, masks)             # (N, 4), (G, 4): fine
    with pytest.raises(ValueError, match=r"anchors: .*\(2, 4, 4\)"):
        fn(np.stack([anchors, anchors]), MMDET_GTS, masks)
    with pytest.raises(ValueError, match=r"gt_boxes: .*\(1, 2, 4\)"):
        fn(anchors, MMDET_GTS[None], masks)
    with pytest.raises(ValueError, match="gt_boxes"):
        fn(anchors, MMDET_GTS[:, :3], masks)
    if name == "maiou":
        with pytest.raises(ValueError, match="gt_masks"):
            fn(anchors, MMDET_GTS, masks[None])
