import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.orienmask.decode import OrienMaskDecoder
from orienmask_tf.families.orienmask.decode import decode_orienmask
from orienmask_tf.ops.nms import fast_nms_mask
from orienmask_tf.ops.frames import to_original_frame
from orienmask_tf.ops.nms import greedy_nms_mask
from orienmask_tf.ops.resize import upsample_bilinear
from tests.testing import reference_path

STRIDES = (32, 16, 8)
CASES = range(4)
MODES = ("eager", "xla")


def load_case(case):
    z = np.load(reference_path("orienmask", f"postprocess_case{case}.npz"))
    outputs = {}
    for s, stride in enumerate(STRIDES):
        outputs[f"box_s{stride}"] = z[f"pred_bbox_s{s}"].transpose(0, 2, 3, 1)
        outputs[f"orien_s{stride}"] = z[f"pred_orien_s{s}"].transpose(
            0, 2, 3, 1)
    kwargs = dict(
        anchors=z["anchors"], image_size=tuple(int(v) for v in z["image_size"]),
        num_classes=int(z["num_classes"]),
        anchor_mask=z["anchor_mask"].tolist(),
        conf_thresh=float(z["conf_thresh"]), nms="greedy",
        nms_threshold=float(z["nms_threshold"]), nms_pre=int(z["nms_pre"]),
        nms_post=int(z["nms_post"]), orien_thresh=float(z["orien_thresh"]))
    return z, outputs, kwargs


def run(outputs, mode, **kwargs):
    fn = lambda o: decode_orienmask(o, **kwargs)  # noqa: E731
    if mode == "xla":
        fn = tf.function(fn, jit_compile=True)
    return {k: v.numpy() for k, v in fn(outputs).items()}


_CACHE = {}


def decoded(case, mode):
    if (case, mode) not in _CACHE:
        z, outputs, kwargs = load_case(case)
        _CACHE[case, mode] = (z, run(outputs, mode, return_candidates=True,
                                     **kwargs))
    return _CACHE[case, mode]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_candidates_and_nms_keep(case, mode):
    z, r = decoded(case, mode)
    for b in range(r["num_detections"].shape[0]):
        valid = r["candidate_valid"][b]
        n = len(z[f"cand_cls_b{b}"])
        assert valid.sum() == n and valid[:n].all()
        dets = np.concatenate([r["candidate_boxes"][b][:n],
                               r["candidate_scores"][b][:n, None]], axis=1)
        np.testing.assert_allclose(dets, z[f"cand_dets_b{b}"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(r["candidate_classes"][b][:n],
                                      z[f"cand_cls_b{b}"])
        np.testing.assert_array_equal(r["candidate_anchor_ids"][b][:n],
                                      z[f"cand_anchor_b{b}"])
        np.testing.assert_array_equal(np.nonzero(r["nms_keep"][b])[0],
                                      z[f"nms_keep_b{b}"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES)
def test_detections_match_official(case, mode):
    z, r = decoded(case, mode)
    batch, nms_post = r["scores"].shape
    for b in range(batch):
        k = len(z[f"det_cls_b{b}"])
        assert r["num_detections"][b] == k
        np.testing.assert_allclose(r["boxes"][b][:k],
                                   z[f"det_bbox_b{b}"][:, :4],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["scores"][b][:k],
                                   z[f"det_bbox_b{b}"][:, 4],
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(r["classes"][b][:k], z[f"det_cls_b{b}"])
        np.testing.assert_array_equal(r["candidate_indices"][b][:k],
                                      z[f"det_cand_index_b{b}"])
        np.testing.assert_array_equal(
            r["anchor_ids"][b][:k],
            z[f"cand_anchor_b{b}"][z[f"det_cand_index_b{b}"]])
        # Masks identical pixel for pixel.
        np.testing.assert_array_equal(r["masks"][b][:k], z[f"det_mask_b{b}"])
        # Padding.
        assert not r["masks"][b][k:].any()
        assert (r["classes"][b][k:] == -1).all()
        assert (r["anchor_ids"][b][k:] == -1).all()
        assert (r["candidate_indices"][b][k:] == -1).all()
        assert (r["scores"][b][k:] == 0).all()
        assert (r["boxes"][b][k:] == 0).all()
    assert r["masks"].shape == (batch, nms_post, *z["image_size"])
    assert r["masks"].dtype == bool
    assert r["classes"].dtype == np.int32
    assert r["num_detections"].dtype == np.int32


def test_boxes_xyxy_are_pixel_corners():
    z, r = decoded(1, "eager")
    height, width = z["image_size"]
    k = r["num_detections"][0]
    cx, cy, w, h = r["boxes"][0][:k].T
    expected = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                         (cx + w / 2) * width, (cy + h / 2) * height], 1)
    np.testing.assert_allclose(r["boxes_xyxy"][0][:k], expected,
                               rtol=1e-5, atol=1e-4)


def test_upsample_matches_torch_interpolate():
    z = np.load(reference_path("orienmask", "upsample_check.npz"))
    x = z["input"].transpose(0, 2, 3, 1)
    y = z["output"].transpose(0, 2, 3, 1)
    for fn in (upsample_bilinear,
               tf.function(upsample_bilinear, jit_compile=True)):
        np.testing.assert_allclose(fn(tf.constant(x), 4).numpy(), y, rtol=0,
                                   atol=1e-6)


def test_decoder_class_eager_function_xla_agree():
    _, outputs, kwargs = load_case(2)
    results = [OrienMaskDecoder(jit_compile=jit, **kwargs)(outputs)
               for jit in (None, False, True)]
    for other in results[1:]:
        for key in results[0]:
            # Floats may differ by an ulp (XLA's sigmoid, FMA contraction);
            # integer outputs and masks are identical.
            np.testing.assert_allclose(other[key].numpy(),
                                       results[0][key].numpy(),
                                       rtol=1e-6, atol=1e-5)


def test_fast_nms_runs_and_is_a_subset_of_greedy():
    _, outputs, kwargs = load_case(2)
    kwargs.update(return_candidates=True)
    greedy = run(outputs, "eager", **kwargs)
    fast = run(outputs, "xla", **{**kwargs, "nms": "fast"})
    # Fast NMS suppresses at least what greedy suppresses.
    assert not (fast["nms_keep"] & ~greedy["nms_keep"]).any()
    assert (fast["num_detections"] <= greedy["num_detections"]).all()


def test_unknown_nms_raises():
    _, outputs, kwargs = load_case(3)
    with pytest.raises(ValueError, match="nms"):
        decode_orienmask(outputs, **{**kwargs, "nms": "soft"})


# ---- synthetic edge cases -------------------------------------------------

SIZE = (64, 96)
NUM_CLASSES = 3
ANCHORS = np.array([[4, 5], [6, 8], [9, 7], [10, 14], [16, 12], [15, 22],
                    [24, 20], [30, 34], [50, 44]], np.float32)


def synthetic_outputs(batch=2, box_logit=-20.0, seed=0):
    rng = np.random.RandomState(seed)
    height, width = SIZE
    outputs = {}
    for stride in STRIDES:
        shape = (batch, height // stride, width // stride,
                 3 * (5 + NUM_CLASSES))
        box = rng.standard_normal(shape).astype(np.float32)
        box = box.reshape(shape[:3] + (3, 5 + NUM_CLASSES))
        box[..., 4:] = box_logit
        outputs[f"box_s{stride}"] = box.reshape(shape)
        outputs[f"orien_s{stride}"] = rng.standard_normal(
            (batch, height // 4, width // 4, 6)).astype(np.float32)
    return outputs


def set_pair(outputs, stride, row, col, anchor, cls, logit, b=0,
             txy=(0.0, 0.0), twh=(0.0, 0.0)):
    channels = 5 + NUM_CLASSES
    box = outputs[f"box_s{stride}"]
    base = anchor * channels
    box[b, row, col, base:base + 4] = (*txy, *twh)
    box[b, row, col, base + 4] = 20.0          # objectness ~ 1
    box[b, row, col, base + 5 + cls] = logit


def edge_kwargs(**overrides):
    kwargs = dict(anchors=ANCHORS, image_size=SIZE, num_classes=NUM_CLASSES,
                  nms_pre=12, nms_post=5)
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize("nms", ["greedy", "fast"])
@pytest.mark.parametrize("mode", MODES)
def test_no_candidate_above_threshold(mode, nms):
    r = run(synthetic_outputs(), mode, **edge_kwargs(nms=nms))
    np.testing.assert_array_equal(r["num_detections"], [0, 0])
    assert r["boxes"].shape == (2, 5, 4)
    assert r["masks"].shape == (2, 5, *SIZE)
    assert not r["masks"].any()
    assert (r["classes"] == -1).all() and (r["anchor_ids"] == -1).all()
    assert (r["scores"] == 0).all() and (r["boxes"] == 0).all()
    assert np.isfinite(r["boxes_xyxy"]).all()


@pytest.mark.parametrize("mode", MODES)
def test_more_candidates_than_both_caps(mode):
    # Every pair passes: 3 * (2*3 + 4*6 + 8*12) * 3 classes >> nms_pre.
    outputs = synthetic_outputs(box_logit=0.5)
    kwargs = edge_kwargs(return_candidates=True, nms_threshold=1.1)
    r = run(outputs, mode, **kwargs)
    # Threshold > 1: nothing is suppressed, so nms_post truncates.
    assert (r["candidate_valid"]).all()
    for b in range(2):
        scores = r["candidate_scores"][b]
        assert (np.diff(scores) <= 0).all()      # truncated: descending
        # The nms_pre best of all pairs.
        z = np.concatenate([
            _all_scores(outputs, stride, b) for stride in STRIDES])
        np.testing.assert_allclose(scores, np.sort(z)[::-1][:12], rtol=1e-6)
    np.testing.assert_array_equal(r["num_detections"], [5, 5])
    for b in range(2):
        assert (np.diff(r["scores"][b]) <= 0).all()
        np.testing.assert_allclose(r["scores"][b],
                                   r["candidate_scores"][b][:5])
        np.testing.assert_array_equal(r["candidate_indices"][b], range(5))


def _all_scores(outputs, stride, b):
    box = outputs[f"box_s{stride}"][b]
    box = box.reshape(box.shape[:2] + (3, 5 + NUM_CLASSES))
    sig = lambda v: 1 / (1 + np.exp(-v.astype(np.float64)))  # noqa: E731
    return (sig(box[..., 5:]) * sig(box[..., 4:5])).ravel()


@pytest.mark.parametrize("mode", MODES)
def test_ascending_order_when_not_truncated(mode):
    outputs = synthetic_outputs()
    # Scores 0.6, 0.9, 0.7 at well separated places, box-major order:
    # (s32, anchor 0) < (s16 ...) < (s8 ...).
    set_pair(outputs, 32, 0, 0, 0, 1, np.log(0.6 / 0.4))
    set_pair(outputs, 16, 2, 4, 1, 2, np.log(0.9 / 0.1))
    set_pair(outputs, 8, 6, 10, 2, 0, np.log(0.7 / 0.3))
    r = run(outputs, mode, **edge_kwargs())
    assert r["num_detections"].tolist() == [3, 0]
    np.testing.assert_allclose(r["scores"][0][:3], [0.6, 0.9, 0.7],
                               rtol=1e-5)
    np.testing.assert_array_equal(r["classes"][0][:3], [1, 2, 0])
    np.testing.assert_array_equal(r["anchor_ids"][0][:3], [6, 4, 2])


@pytest.mark.parametrize("nms", ["greedy", "fast"])
@pytest.mark.parametrize("mode", MODES)
def test_equal_scores_keep_lower_candidate_index(mode, nms):
    outputs = synthetic_outputs()
    # Two identical boxes (same cell, two anchors with equal sizes would
    # differ, so use the same anchor/cell and two classes for the
    # class-aware check, and two cells with identical boxes otherwise).
    set_pair(outputs, 16, 1, 1, 0, 0, 2.0)      # candidate 0
    set_pair(outputs, 16, 1, 1, 0, 1, 2.0)      # candidate 1: other class
    anchors = ANCHORS.copy()
    anchors[4] = anchors[3]                     # anchor 1 of S16 = anchor 0
    set_pair(outputs, 16, 1, 1, 1, 0, 2.0)      # candidate 2: same box/cls
    r = run(outputs, mode, **edge_kwargs(nms=nms, anchors=anchors,
                                         return_candidates=True))
    np.testing.assert_array_equal(r["nms_keep"][0][:3], [True, True, False])
    assert r["num_detections"][0] == 2
    np.testing.assert_array_equal(r["candidate_indices"][0][:2], [0, 1])


def test_nms_suppresses_at_iou_equal_threshold():
    # IoU of [0,1]x[0,1] and [0.5,1.5]x[0,1] is 0.5/1.5 = 1/3.
    boxes = tf.constant([[[0.5, 0.5, 1.0, 1.0], [1.0, 0.5, 1.0, 1.0],
                          [5.0, 5.0, 1.0, 1.0]]])
    scores = tf.constant([[0.9, 0.8, 0.7]])
    valid = tf.constant([[True, True, True]])
    for fn in (greedy_nms_mask, fast_nms_mask):
        keep = fn(boxes, scores, valid, np.float32(1.0 / 3.0)).numpy()
        np.testing.assert_array_equal(keep, [[True, False, True]])
        keep = fn(boxes, scores, valid, 0.34).numpy()
        np.testing.assert_array_equal(keep, [[True, True, True]])


def test_greedy_differs_from_fast_on_a_chain():
    # a suppresses b, b would suppress c, but a and c do not overlap:
    # greedy keeps a and c, Fast NMS keeps only a.
    boxes = tf.constant([[[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0],
                          [2.0, 0.0, 2.0, 2.0]]])
    scores = tf.constant([[0.9, 0.8, 0.7]])
    valid = tf.constant([[True, True, True]])
    greedy = greedy_nms_mask(boxes, scores, valid, 0.3).numpy()
    fast = fast_nms_mask(boxes, scores, valid, 0.3).numpy()
    np.testing.assert_array_equal(greedy, [[True, False, True]])
    np.testing.assert_array_equal(fast, [[True, False, False]])
    xla = tf.function(greedy_nms_mask, jit_compile=True)(
        boxes, scores, valid, 0.3).numpy()
    np.testing.assert_array_equal(xla, greedy)


def test_to_original_frame_hand_computed():
    # Original 4x6 image, scaled by 2 to 8x12, padded top 2, left 1 into a
    # 12x14 input.
    boxes = tf.constant([[[3.0, 4.0, 9.0, 10.0], [0.0, 0.0, 14.0, 12.0]]])
    masks = np.zeros((1, 2, 12, 14), bool)
    masks[0, 0, 2:4, 1:3] = True      # original pixel (0, 0)
    masks[0, 0, 8:10, 11:13] = True   # original pixel (3, 5)
    masks[0, 1, 4, 5] = True          # centre sample of original (1, 2)
    # image_info [scale_y, scale_x, pad_top, pad_left, h0, w0]
    out_boxes, out_masks = to_original_frame(boxes, tf.constant(masks),
                                             [2.0, 2.0, 2.0, 1.0, 4, 6])
    np.testing.assert_allclose(out_boxes.numpy(),
                               [[[1.0, 1.0, 4.0, 4.0],
                                 [0.0, 0.0, 6.0, 4.0]]])
    expected = np.zeros((1, 2, 4, 6), bool)
    expected[0, 0, 0, 0] = expected[0, 0, 3, 5] = True
    # Original pixel (i, j) samples input (floor((i+0.5)*2+2),
    # floor((j+0.5)*2+1)) = (2i+3, 2j+2): (1, 2) -> (5, 6), not (4, 5).
    np.testing.assert_array_equal(out_masks.numpy(), expected)
    masks[0, 1, 5, 6] = True
    _, out_masks = to_original_frame(boxes, tf.constant(masks),
                                     tf.constant([2.0, 2.0, 2.0, 1.0, 4, 6]),
                                     original_size=(4, 6))
    expected[0, 1, 1, 2] = True
    np.testing.assert_array_equal(out_masks.numpy(), expected)
