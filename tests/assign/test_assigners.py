"""MaxIoUAssigner / ATSSAssigner (IoU, maIoU) against the official fixtures."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.assign import maiou
from orienmask_tf.assign.assigners import ATSSAssigner, MaxIoUAssigner
from tests.assign import official_numpy
from tests.assign.cases import CASES, load_case, levels

ATSS = {"atss_maiou": "maiou", "atss_iou": "iou"}


def _run_atss(case, overlap, anchors_key="anchors", prefix=""):
    out = ATSSAssigner(topk=int(case["topk"]), overlap=overlap)(
        case[anchors_key], levels(case, prefix), case["gt_bboxes"],
        case["gt_masks"], len(case["gt_bboxes"]), case["gt_labels"])
    return {k: np.asarray(v) for k, v in out.items()}


def _run_maxiou(case, anchors_key="anchors"):
    out = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)(
        case[anchors_key], case["gt_bboxes"], case["gt_masks"],
        len(case["gt_bboxes"]), case["gt_labels"])
    return {k: np.asarray(v) for k, v in out.items()}


def assert_max_overlaps(actual, expected, positive):
    np.testing.assert_allclose(actual[positive], expected[positive], atol=1e-6)
    np.testing.assert_array_equal(actual[~positive], expected[~positive])


@pytest.mark.parametrize("prefix", sorted(ATSS))
@pytest.mark.parametrize("index", CASES)
def test_atss_matches_official_stable(index, prefix):
    case = load_case(index)
    out = _run_atss(case, ATSS[prefix])
    inds = case[f"{prefix}_assigned_gt_inds_stable"]
    np.testing.assert_array_equal(out["assigned_gt_inds"], inds)
    np.testing.assert_array_equal(out["assigned_labels"],
                                  case[f"{prefix}_assigned_labels_stable"])
    assert_max_overlaps(out["max_overlaps"],
                        case[f"{prefix}_max_overlaps_stable"], inds > 0)
    if len(case["gt_bboxes"]) == 0:
        return
    np.testing.assert_allclose(out["thr"], case[f"{prefix}_thr_stable"],
                               rtol=1e-5, equal_nan=True)
    # Candidates: equal as per-(GT, level) sets.
    bounds = np.cumsum([0] + [min(9, n) for n in levels(case)])
    expected = case[f"{prefix}_candidate_idxs_stable"]
    assert out["candidate_idxs"].shape == expected.T.shape
    for g in range(len(case["gt_bboxes"])):
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            assert (set(out["candidate_idxs"][g, lo:hi])
                    == set(expected[lo:hi, g]))


@pytest.mark.parametrize("index", CASES)
def test_maxiou_matches_official(index):
    case = load_case(index)
    out = _run_maxiou(case)
    np.testing.assert_array_equal(out["assigned_gt_inds"],
                                  case["maxiou_assigned_gt_inds"])
    np.testing.assert_array_equal(out["max_overlaps"],
                                  case["maxiou_max_overlaps"])
    inds = out["assigned_gt_inds"]
    expected_labels = np.where(
        inds > 0, np.append(case["gt_labels"], -1)[np.maximum(inds - 1, 0)], -1)
    np.testing.assert_array_equal(out["assigned_labels"], expected_labels)


@pytest.mark.parametrize("index", [0, 1, 2, 4, 5])
def test_extras_mayolact_and_yolact_anchors(index):
    case = load_case(index)
    out = _run_atss(case, "maiou", "mayolact_anchors", "mayolact_")
    inds = case["mayolact_atss_maiou_assigned_gt_inds_stable"]
    np.testing.assert_array_equal(out["assigned_gt_inds"], inds)
    assert_max_overlaps(out["max_overlaps"],
                        case["mayolact_atss_maiou_max_overlaps_stable"],
                        inds > 0)
    np.testing.assert_array_equal(
        _run_maxiou(case, "yolact_anchors")["assigned_gt_inds"],
        case["yolact_maxiou_assigned_gt_inds"])


def test_documented_special_cases():
    # case_05: the empty-mask GT gets no ATSS-maIoU positive but one fixed-IoU
    # anchor; case_01: the duplicated GT 8 never wins ATSS (first GT on ties)
    # but takes its twin's forced anchor in the fixed-IoU assigner.
    case = load_case(5)
    empty = int(np.nonzero(case["gt_mask_area"] == 0)[0][0]) + 1
    assert not (_run_atss(case, "maiou")["assigned_gt_inds"] == empty).any()
    assert (_run_maxiou(case)["assigned_gt_inds"] == empty).sum() == 1
    case = load_case(1)
    assert not (_run_atss(case, "maiou")["assigned_gt_inds"] == 8).any()
    assert (_run_maxiou(case)["assigned_gt_inds"] == 8).sum() == 1


def _pad(case, g_max, seed=0):
    """Pad GTs to g_max rows of garbage (boxes, masks, labels)."""
    rng = np.random.RandomState(seed)
    num = len(case["gt_bboxes"])
    h, w = case["gt_masks"].shape[1:]
    extra = g_max - num
    boxes = rng.uniform(0, min(h, w), (extra, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    masks = (rng.rand(extra, h, w) < 0.3).astype(np.uint8)
    return (np.concatenate([case["gt_bboxes"], boxes]),
            np.concatenate([case["gt_masks"], masks]),
            np.concatenate([case["gt_labels"], np.full(extra, 99)]))


@pytest.mark.parametrize("index", [3, 4, 5])
def test_padded_gt_never_matches(index):
    case = load_case(index)
    num = len(case["gt_bboxes"])
    boxes, masks, labels = _pad(case, num + 3)
    for assigner, args, key in (
            (ATSSAssigner(9, "maiou"), (levels(case),), "atss_maiou_assigned_gt_inds_stable"),
            (ATSSAssigner(9, "iou"), (levels(case),), "atss_iou_assigned_gt_inds_stable"),
            (MaxIoUAssigner(), (), "maxiou_assigned_gt_inds")):
        out = assigner(case["anchors"], *args, boxes, masks, num, labels)
        np.testing.assert_array_equal(np.asarray(out["assigned_gt_inds"]),
                                      case[key])
        assert not (np.asarray(out["assigned_labels"]) == 99).any()
        if num == 0:
            np.testing.assert_array_equal(np.asarray(out["max_overlaps"]), 0)
            np.testing.assert_array_equal(np.asarray(out["assigned_labels"]), -1)


def _random_image(seed, num_gts=6, size=128):
    rng = np.random.RandomState(seed)
    masks = np.zeros((num_gts, size, size), np.uint8)
    boxes = np.zeros((num_gts, 4), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for g in range(num_gts):
        cy, cx = rng.uniform(10, size - 10, 2)
        ry, rx = rng.uniform(3, 40, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        mask &= rng.rand(size, size) < 0.8
        masks[g] = mask
        rows, cols = np.nonzero(mask)
        boxes[g] = cols.min(), rows.min(), cols.max() + 1, rows.max() + 1
    return boxes, masks, rng.randint(0, 80, num_gts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_numpy_port_random_images(seed):
    from orienmask_tf.families.yolact.anchors import atss_anchors
    anchors, counts = atss_anchors(128, scales_per_octave=2)
    boxes, masks, labels = _random_image(seed)
    m, ious, _ = official_numpy.maiou_calculator(boxes, anchors, masks)
    for overlap, matrix in (("maiou", m), ("iou", ious)):
        want = official_numpy.atss_assign(anchors, counts, boxes, matrix, labels)
        got = ATSSAssigner(9, overlap)(anchors, counts, boxes, masks, 6, labels)
        np.testing.assert_array_equal(np.asarray(got["assigned_gt_inds"]), want[0])
        np.testing.assert_array_equal(np.asarray(got["assigned_labels"]), want[2])
    want = official_numpy.max_iou_assign(ious)
    got = MaxIoUAssigner()(anchors, boxes, masks, 6)
    np.testing.assert_array_equal(np.asarray(got["assigned_gt_inds"]), want[0])


def test_overlap_parameter_accepts_callables_and_names():
    case = load_case(3)
    ref = _run_atss(case, "iou")["assigned_gt_inds"]
    out = ATSSAssigner(9, overlap=lambda a, b, m: maiou.box_iou(a, b))(
        case["anchors"], levels(case), case["gt_bboxes"], case["gt_masks"])
    np.testing.assert_array_equal(np.asarray(out["assigned_gt_inds"]), ref)
    for name in ("giou", "diou"):
        out = ATSSAssigner(9, overlap=name)(
            case["anchors"], levels(case), case["gt_bboxes"], case["gt_masks"])
        assert (np.asarray(out["assigned_gt_inds"]) > 0).sum() > 0
    with pytest.raises(ValueError):
        ATSSAssigner(9, overlap="nope")


def _assign_all(anchors, counts, boxes, masks, num_gts, labels):
    out = {}
    for name, overlap in ATSS.items():
        res = ATSSAssigner(9, overlap)(anchors, counts, boxes, masks, num_gts, labels)
        out.update({f"{name}_{k}": res[k] for k in
                    ("assigned_gt_inds", "max_overlaps", "assigned_labels")})
    res = MaxIoUAssigner()(anchors, boxes, masks, num_gts, labels)
    out.update({f"maxiou_{k}": v for k, v in res.items()})
    return out


@pytest.mark.parametrize("index", [3, 5])
def test_eager_tf_function_and_tf_data_agree(index):
    case = load_case(index)
    anchors, counts = case["anchors"], levels(case)
    h, w = case["gt_masks"].shape[1:]
    g_max = len(case["gt_bboxes"]) + 2
    boxes, masks, labels = _pad(case, g_max)
    num = len(case["gt_bboxes"])
    eager = _assign_all(anchors, counts, boxes, masks, num, labels)

    graph = tf.function(lambda b, m, n, l: _assign_all(anchors, counts, b, m, n, l))
    traced = graph(boxes, masks, tf.constant(num), labels)

    def gen():
        for n_gts in (num, 0):
            yield {"boxes": boxes, "masks": masks, "num": np.int32(n_gts),
                   "labels": labels.astype(np.int64)}

    spec = {"boxes": tf.TensorSpec([g_max, 4], tf.float32),
            "masks": tf.TensorSpec([g_max, h, w], tf.uint8),
            "num": tf.TensorSpec([], tf.int32),
            "labels": tf.TensorSpec([g_max], tf.int64)}
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec).map(
        lambda x: _assign_all(anchors, counts, x["boxes"], x["masks"],
                              x["num"], x["labels"]))
    from_data = list(ds.as_numpy_iterator())
    for key, value in eager.items():
        value = np.asarray(value)
        np.testing.assert_array_equal(np.asarray(traced[key]), value, err_msg=key)
        np.testing.assert_array_equal(from_data[0][key], value, err_msg=key)
        assert from_data[0][key].shape == (len(anchors),)
    for key in ("atss_maiou_assigned_gt_inds", "maxiou_assigned_gt_inds"):
        np.testing.assert_array_equal(from_data[1][key], 0)
    base = "atss_maiou_assigned_gt_inds_stable"
    np.testing.assert_array_equal(from_data[0]["atss_maiou_assigned_gt_inds"], case[base])


def test_picture(tmp_path):
    from orienmask_tf.assign.pictures import save_assignments_png
    import cv2
    case = load_case(0)
    assignments = {
        "fixed IoU": case["maxiou_assigned_gt_inds"],
        "ATSS-IoU": case["atss_iou_assigned_gt_inds_stable"],
        "ATSS-maIoU": case["atss_maiou_assigned_gt_inds_stable"]}
    path = tmp_path / "assign.png"
    picture = save_assignments_png(path, case["gt_masks"], case["gt_bboxes"],
                                   case["anchors"], assignments)
    assert picture.shape == (550, 3 * 550 + 2 * 6, 3)
    np.testing.assert_array_equal(cv2.imread(str(path)), picture)


def test_xla_with_static_anchors():
    # numpy anchors are graph constants: the corner grid is resolved with
    # numpy at trace time and the whole assigner compiles under XLA.
    case = load_case(5)
    assigner = ATSSAssigner(9, "maiou")

    @tf.function(jit_compile=True)
    def assign(boxes, masks, num):
        return assigner(case["anchors"], levels(case), boxes, masks,
                        num)["assigned_gt_inds"]

    np.testing.assert_array_equal(
        np.asarray(assign(case["gt_bboxes"], case["gt_masks"],
                          len(case["gt_bboxes"]))),
        case["atss_maiou_assigned_gt_inds_stable"])
