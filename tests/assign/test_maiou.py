"""maIoU / IoU / anchors against the official maYOLACT fixtures."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.yolact import anchors as anchors_mmdet
from orienmask_tf.assign import maiou
from tests.assign import official_numpy
from tests.assign.cases import CASES, FIXTURE_FILES, load_case, levels
from tests.testing import reference_path


def _np(values):
    return tuple(np.asarray(v) for v in values)


def assert_maiou_close(actual, expected):
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(actual == 0, expected == 0)
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7,
                               equal_nan=True)


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_fixture_present(name):
    assert reference_path("maiou", name).stat().st_size > 0


def test_missing_fixture_fails():
    with pytest.raises(FileNotFoundError):
        reference_path("maiou", "case_99.npz")


@pytest.mark.parametrize("index", CASES)
def test_atss_anchors(index):
    case = load_case(index)
    size = int(case["image_hw"][0])
    anchors, counts = anchors_mmdet.atss_anchors(size)
    np.testing.assert_array_equal(anchors, case["anchors"])
    assert counts == tuple(levels(case))
    assert anchors_mmdet.resnet_fpn_featmap_sizes(size) == tuple(
        int(n) for n in case["featmap_sizes"])


def test_mayolact_and_yolact_anchors():
    case = load_case(0)
    anchors, counts = anchors_mmdet.atss_anchors(550, scales_per_octave=2)
    np.testing.assert_array_equal(anchors, case["mayolact_anchors"])
    assert counts == tuple(levels(case, "mayolact_"))
    anchors, counts = anchors_mmdet.yolact_mmdet_anchors(550)
    np.testing.assert_allclose(anchors, case["yolact_anchors"], atol=1e-4)
    assert counts == tuple(levels(case, "yolact_"))
    np.testing.assert_array_equal(anchors_mmdet.atss_anchors(550)[0][0],
                                  [-16, -16, 16, 16])


def test_yolact_priors():
    priors = anchors_mmdet.yolact_priors(550)
    assert priors.shape == (19248, 4)
    # First location of P3: centre (0.5 / 69, 0.5 / 69); ratios 1, 1/2, 2
    # with the official square-anchor bug (h = w = 24 sqrt(ar) / 550).
    np.testing.assert_allclose(priors[:3, :2], 0.5 / 69, rtol=1e-6)
    np.testing.assert_allclose(priors[:3, 2], 24 * np.sqrt([1, .5, 2]) / 550,
                               rtol=1e-6)
    np.testing.assert_array_equal(priors[:, 2], priors[:, 3])
    boxes = anchors_mmdet.center_size_to_corners(priors[:1], 550)
    np.testing.assert_allclose(boxes, [[275 / 69 - 12, 275 / 69 - 12,
                                        275 / 69 + 12, 275 / 69 + 12]],
                               rtol=1e-5)


@pytest.mark.parametrize("index", CASES)
def test_iou_mob_maiou_match_official(index):
    case = load_case(index)
    maious, ious, mob = _np(maiou.mask_aware_overlaps(
        case["anchors"], case["gt_bboxes"], case["gt_masks"]))
    np.testing.assert_allclose(ious, case["ious"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ious > 0, case["ious"] > 0)
    np.testing.assert_allclose(mob, case["mob_ratio"], rtol=1e-6)
    assert_maiou_close(maious, case["maious"])
    np.testing.assert_allclose(_np([maiou.box_iou(
        case["anchors"], case["gt_bboxes"])])[0], case["ious"], atol=1e-6)


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5])
def test_maiou_rounding_on_mayolact_anchors(index):
    case = load_case(index)
    assert_maiou_close(np.asarray(maiou.mask_aware_iou(
        case["mayolact_anchors"], case["gt_bboxes"], case["gt_masks"])),
        case["mayolact_maious"])


def test_empty_mask_gives_nan_only_where_iou_positive():
    case = load_case(5)
    maious, ious, mob = _np(maiou.mask_aware_overlaps(
        case["anchors"], case["gt_bboxes"], case["gt_masks"]))
    last = case["gt_mask_area"] == 0
    assert last.sum() == 1 and mob[last] == 0
    np.testing.assert_array_equal(np.isnan(maious[last]), ious[last] > 0)
    assert not np.isnan(maious[~last]).any()


def test_dynamic_anchors_path_equals_static():
    # Inside tf.function with unknown shapes the corner grid is built with
    # tf.unique instead of numpy; the values must not change.
    case = load_case(2)
    spec = [tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None, None, None], tf.uint8)]
    fn = tf.function(maiou.mask_aware_iou, input_signature=spec)
    for anchors, key in (("anchors", "maious"),
                         ("mayolact_anchors", "mayolact_maious")):
        assert_maiou_close(np.asarray(fn(case[anchors], case["gt_bboxes"],
                                         case["gt_masks"])), case[key])


def _random_case(seed, num_gts=5, size=(61, 47)):
    rng = np.random.RandomState(seed)
    h, w = size
    masks = np.zeros((num_gts, h, w), np.uint8)
    boxes = np.zeros((num_gts, 4), np.float32)
    for g in range(num_gts):
        y0, x0 = rng.randint(0, h - 8), rng.randint(0, w - 8)
        y1, x1 = rng.randint(y0 + 2, h + 1), rng.randint(x0 + 2, w + 1)
        masks[g, y0:y1, x0:x1] = rng.rand(y1 - y0, x1 - x0) < 0.6
        masks[g, y0, x0] = masks[g, y1 - 1, x1 - 1] = 7   # non-zero is "on"
        boxes[g] = (x0 + rng.uniform(-1, 1), y0 + rng.uniform(-1, 1),
                    x1 + rng.uniform(-1, 1), y1 + rng.uniform(-1, 1))
    centres = rng.uniform(-10, [w + 10, h + 10], (300, 2))
    sides = rng.uniform(1, 40, (300, 2))
    anchors = np.concatenate([centres - sides / 2, centres + sides / 2], 1)
    anchors[:20] = np.round(anchors[:20] * 2) / 2          # exact .5 ties
    return anchors.astype(np.float32), boxes, masks


@pytest.mark.parametrize("seed", [0, 1])
def test_maiou_against_numpy_port_and_brute_force(seed):
    anchors, boxes, masks = _random_case(seed)
    expected, ious, _ = official_numpy.maiou_calculator(boxes, anchors, masks)
    actual = np.asarray(maiou.mask_aware_iou(anchors, boxes, masks))
    assert_maiou_close(actual, expected)
    assert_maiou_close(actual, official_numpy.brute_force_maiou(
        boxes, anchors, masks))
    assert (ious > 0).sum() > 100


def test_integral_image_definition():
    _, _, masks = _random_case(3)
    table = np.asarray(maiou.integral_images(masks))
    padded = np.pad((masks != 0).astype(np.int64), [(0, 0), (1, 0), (1, 0)])
    np.testing.assert_array_equal(
        table, np.cumsum(np.cumsum(padded, 1), 2))
    xs = tf.constant([0, 5, 47, 3], tf.int32)
    ys = tf.constant([61, 0, 10], tf.int32)
    sparse = np.asarray(maiou.sparse_integral_image(masks, xs, ys))
    np.testing.assert_array_equal(sparse, table[:, [61, 0, 10]][:, :, [0, 5, 47, 3]])


def test_no_plus_one_in_lookup():
    # One mask pixel at (row 2, col 3) inside a loose GT box. The anchor
    # [2, 1, 3, 2] covers pixel (1, 2) only: the code's lookup counts 0,
    # Alg. 1's +1 would count rows 1..2 and cols 2..3, i.e. 1.
    masks = np.zeros((1, 6, 6), np.uint8)
    masks[0, 2, 3] = 1
    boxes = np.array([[2, 1, 5, 4]], np.float32)
    anchors = np.array([[2, 1, 3, 2], [3, 2, 4, 3], [2.5, 1.5, 3.5, 2.5]],
                       np.float32)
    values = np.asarray(maiou.mask_aware_iou(anchors, boxes, masks))[0]
    mob = np.float32(1) / np.float32(9 + 1e-6)
    # Third anchor rounds half to even to [2, 2, 4, 2]: no rows, count 0.
    np.testing.assert_allclose(values, [0.0, (1 / mob) / 9, 0.0], rtol=1e-6)
    assert np.asarray(maiou.box_iou(anchors, boxes)).min() > 0


def test_giou_diou():
    anchors, boxes, _ = _random_case(4)
    iou = np.asarray(maiou.box_iou(anchors, boxes))
    giou = np.asarray(maiou.box_giou(anchors, boxes))
    diou = np.asarray(maiou.box_diou(anchors, boxes))
    a = anchors.astype(np.float64)[None]
    g = boxes.astype(np.float64)[:, None]
    lo, hi = np.maximum(g[..., :2], a[..., :2]), np.minimum(g[..., 2:],
                                                            a[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])
    union = area(g) + area(a) - inter
    ewh = np.maximum(g[..., 2:], a[..., 2:]) - np.minimum(g[..., :2],
                                                          a[..., :2])
    enclose = np.prod(ewh, -1)
    rho2 = np.sum(((a[..., :2] + a[..., 2:]) - (g[..., :2] + g[..., 2:]))
                  ** 2, -1) / 4
    np.testing.assert_allclose(iou, inter / union, atol=1e-6)
    np.testing.assert_allclose(giou, inter / union
                               - (enclose - union) / enclose, atol=1e-5)
    np.testing.assert_allclose(diou, inter / union
                               - rho2 / np.sum(ewh ** 2, -1), atol=1e-5)
    assert (giou <= iou + 1e-6).all() and (diou <= iou + 1e-6).all()
    with pytest.raises(ValueError, match="unknown overlap"):
        maiou.get_overlap_fn("ciou")
