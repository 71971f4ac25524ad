import numpy as np
import pytest

from orienmask_tf.assign import anchor_fit

PLANTED = np.array([[10.0, 20.0], [40.0, 40.0], [90.0, 30.0]])


def _planted_boxes(per_cluster=200, noise=0.04, seed=1):
    rng = np.random.default_rng(seed)
    factors = np.exp(rng.normal(0.0, noise, (len(PLANTED), per_cluster, 2)))
    return (PLANTED[:, None] * factors).reshape(-1, 2)


def test_shape_iou_of_centred_boxes():
    iou = anchor_fit.shape_iou([[4, 4], [2, 6]], [[2, 2], [4, 4], [2, 8]])
    # [4,4] vs [2,2]: 4 / 16; vs itself 1; vs [2,8]: 8 / (16 + 16 - 8).
    # [2,6] vs [2,2]: 4 / 12; vs [4,4]: 8 / (12 + 16 - 8); vs [2,8]: 12 / 16.
    np.testing.assert_allclose(iou, [[0.25, 1.0, 8 / 24],
                                     [4 / 12, 8 / 20, 0.75]])


def test_stats_by_hand():
    boxes = [[2, 2], [4, 4], [1, 8]]
    anchors = [[2, 2], [2, 4]]
    # Best IoUs: [2,2] -> 1 (anchor 0); [4,4] -> 8/16 = 0.5 (anchor 1);
    # [1,8] -> [2,4]: 4 / (8 + 8 - 4) = 1/3 (anchor 1; anchor 0: 2/10).
    stats = anchor_fit.anchor_stats(boxes, anchors, threshold=0.5,
                                    per_scale=1)
    assert stats["num_boxes"] == 3
    assert stats["mean_iou"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert stats["bpr"] == pytest.approx(2 / 3)
    assert stats["boxes_per_anchor"] == [1, 2]
    assert stats["boxes_per_scale"] == [1, 2]
    assert anchor_fit.anchor_stats(boxes, anchors, 0.51)["bpr"] == \
        pytest.approx(1 / 3)
    # Fitness counts a box under the threshold as 0.
    assert anchor_fit.fitness(np.array(boxes, float), np.array(anchors, float),
                              0.5) == pytest.approx((1 + 0.5) / 3)


def test_ties_go_to_the_first_anchor_and_scales_sum_their_anchors():
    stats = anchor_fit.anchor_stats([[4, 4]], [[2, 8], [8, 2], [4, 4], [4, 4]],
                                    threshold=0.5, per_scale=2)
    assert stats["boxes_per_anchor"] == [0, 0, 1, 0]
    assert stats["boxes_per_scale"] == [0, 1]
    with pytest.raises(ValueError, match="do not split into scales of 3"):
        anchor_fit.anchor_stats([[4, 4]], [[1, 1], [2, 2]], 0.5, per_scale=3)


def test_kmeans_recovers_planted_clusters():
    boxes = _planted_boxes()
    anchors = anchor_fit.kmeans_anchors(boxes, 3, seed=0)
    np.testing.assert_allclose(anchors, PLANTED, rtol=0.03)
    stats = anchor_fit.anchor_stats(boxes, anchors, 0.5)
    assert stats["boxes_per_anchor"] == [200, 200, 200]
    assert stats["mean_iou"] > 0.9


def test_fit_is_deterministic_sorted_and_grouped_per_scale():
    rng = np.random.default_rng(3)
    boxes = np.exp(rng.uniform(np.log(4), np.log(150), (800, 2)))
    first = anchor_fit.fit_anchors(boxes, 3, 3, 0.5, seed=7, generations=200)
    again = anchor_fit.fit_anchors(boxes, 3, 3, 0.5, seed=7, generations=200)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3, 3, 2)
    areas = first.prod(-1).reshape(-1)
    assert np.all(np.diff(areas) >= 0)
    # Rounded to what a config holds (one decimal).
    np.testing.assert_array_equal(first, np.round(first, 1))
    # The smallest third of the boxes goes mostly to the first (finest)
    # scale: the fitted anchors spread the boxes over the scales.
    stats = anchor_fit.anchor_stats(boxes, first.reshape(-1, 2), 0.5, 3)
    assert min(stats["boxes_per_scale"]) > 0.15 * len(boxes)


def test_fitted_anchors_beat_ill_scaled_ones():
    boxes = _planted_boxes()
    bad = PLANTED / 6.0
    fitted = anchor_fit.fit_anchors(boxes, 1, 3, 0.5, generations=100)
    before = anchor_fit.anchor_stats(boxes, bad, 0.5)
    after = anchor_fit.anchor_stats(boxes, fitted.reshape(-1, 2), 0.5)
    assert before["bpr"] == 0.0 and after["bpr"] == 1.0
    assert after["mean_iou"] > before["mean_iou"] + 0.5


def test_evolution_only_keeps_improvements():
    boxes = _planted_boxes()
    start = PLANTED * np.array([[1.3, 0.8], [0.8, 1.2], [1.2, 1.2]])
    anchors, before, after = anchor_fit.evolve_anchors(
        boxes, start, 0.5, generations=300, seed=0)
    assert before == pytest.approx(anchor_fit.fitness(boxes, start, 0.5))
    assert after == pytest.approx(anchor_fit.fitness(boxes, anchors, 0.5))
    assert after > before + 0.05
    # Zero generations: nothing changes.
    same, b0, a0 = anchor_fit.evolve_anchors(boxes, start, 0.5, generations=0)
    assert a0 == b0
    np.testing.assert_array_equal(same, anchor_fit.sort_anchors(start))


def test_resized_box_sizes_warp_each_axis_and_drop_small_boxes():
    sizes = anchor_fit.resized_box_sizes(
        [[100, 50], [4, 2], [320, 240]], [[200, 400], [200, 400], [480, 640]],
        input_size=(100, 200), min_size=2)
    # Scale x by 200 / width, y by 100 / height; [4, 2] -> [2, 1]: dropped.
    np.testing.assert_allclose(sizes, [[50, 25], [100, 50]])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"boxes: expected an \(n, 2\)"):
        anchor_fit.shape_iou([1, 2, 3], [[1, 1]])
    with pytest.raises(ValueError, match="anchors: widths and heights"):
        anchor_fit.anchor_stats([[1, 1]], [[0, 1]], 0.5)
    with pytest.raises(ValueError, match="no box"):
        anchor_fit.anchor_stats(np.zeros((0, 2)), [[1, 1]], 0.5)
    with pytest.raises(ValueError, match="2 distinct sizes.*cannot make 3"):
        anchor_fit.kmeans_anchors([[1, 1], [2, 2], [2, 2]], 3)
