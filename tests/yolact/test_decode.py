"""YOLACT post-processing against official mmdet outputs (decode_cases)."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.yolact import decode as yd
from orienmask_tf.families.yolact import anchors as anchors_mmdet
from tests.testing import reference_path


@pytest.fixture(scope="module")
def cases():
    return dict(np.load(reference_path("yolact", "decode_cases.npz")))


def _xla(fn):
    return tf.function(fn, jit_compile=True)


def test_coder_decode(cases):
    anchors, deltas = cases["coder_anchors"], cases["coder_deltas"]
    h, w = cases["coder_max_shape"][:2]
    unclipped = yd.delta_xywh_decode(anchors, deltas).numpy()
    np.testing.assert_allclose(unclipped, cases["coder_decoded_unclipped"],
                               rtol=1e-5, atol=1e-3)
    clipped = _xla(lambda a, d: yd.delta_xywh_decode(a, d, max_shape=(h, w)))(
        anchors, deltas).numpy()
    np.testing.assert_allclose(clipped, cases["coder_decoded_clipped"],
                               rtol=1e-5, atol=1e-3)


def test_coder_encode_roundtrip(cases):
    from orienmask_tf.families.yolact.encoder import delta_xywh_encode

    deltas = delta_xywh_encode(cases["coder_encode_anchors"],
                               cases["coder_encode_gt"]).numpy()
    np.testing.assert_allclose(deltas, cases["coder_encode_deltas"],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["small", "coco"])
def test_fast_nms(cases, case):
    p = f"nms_{case}_"
    thr, iou, top_k, max_num = cases[p + "params"]
    out = _xla(lambda b, s, c: yd.fast_nms(
        b, s, c, float(thr), float(iou), int(top_k), int(max_num)))(
            cases[p + "multi_bboxes"][None], cases[p + "multi_scores"][None],
            cases[p + "multi_coeffs"][None])
    ref_boxes = cases[p + "det_bboxes"]
    n = len(ref_boxes)
    assert int(out["num_detections"][0]) == n
    np.testing.assert_array_equal(out["labels"][0, :n], cases[p + "det_labels"])
    assert np.all(out["labels"][0, n:].numpy() == -1)
    np.testing.assert_allclose(out["boxes"][0, :n], ref_boxes[:, :4], rtol=1e-5)
    np.testing.assert_allclose(out["scores"][0, :n], ref_boxes[:, 4], rtol=1e-5)
    np.testing.assert_allclose(out["coeffs"][0, :n], cases[p + "det_coeffs"],
                               rtol=1e-5, atol=1e-7)


def test_crop(cases):
    out = yd.crop_masks(cases["crop_masks_hwn"][None],
                        cases["crop_boxes_rel"][None]).numpy()[0]
    np.testing.assert_allclose(out, cases["crop_out_hwn"], atol=1e-6)
    boxes = cases["crop_boxes_rel"]
    x1, x2 = yd.sanitize_coordinates(boxes[:, 0], boxes[:, 2], 24)
    y1, y2 = yd.sanitize_coordinates(boxes[:, 1], boxes[:, 3], 20)
    np.testing.assert_allclose(np.stack([x1, x2, y1, y2], 1),
                               cases["crop_sanitized_x1x2y1y2"], atol=1e-6)


@pytest.mark.parametrize("rescale", [True, False])
def test_mask_assembly(cases, rescale):
    scale = cases["mask_scale_factor"]
    img_h, img_w = cases["mask_img_shape"][:2]
    ori_h, ori_w = cases["mask_ori_shape"][:2]
    if rescale:
        boxes = cases["mask_det_bboxes_ori"][:, :4] * scale
        out_size, suffix = (ori_h, ori_w), "rescale"
        cropped_ref = cases["mask_cropped_nhw"]
    else:
        boxes = cases["mask_det_bboxes_img"][:, :4]
        out_size = (int(round(ori_h * scale[1])), int(round(ori_w * scale[0])))
        suffix = "norescale"
        cropped_ref = cases["mask_cropped_nhw_norescale"]
    protos = cases["mask_prototypes_hwc"][None]
    coeffs = cases["mask_coeffs"][None]
    lincomb = yd.lincomb_masks(protos, coeffs).numpy()[0]
    np.testing.assert_allclose(lincomb, cases["mask_lincomb_sigmoid_hwn"],
                               atol=1e-6)
    if rescale:
        rel = boxes / np.array([img_w, img_h, img_w, img_h], np.float32)
        np.testing.assert_allclose(rel, cases["mask_crop_boxes_rel"],
                                   atol=1e-6)
    rel = boxes / np.array([img_w, img_h, img_w, img_h], np.float32)
    cropped = yd.crop_masks(lincomb[None], rel[None]).numpy()[0]
    np.testing.assert_allclose(cropped.transpose(2, 0, 1), cropped_ref,
                               atol=1e-6)
    soft, binary = _xla(lambda p, c, b: yd.assemble_masks(
        p, c, b, (img_h, img_w), out_size))(protos, coeffs, boxes[None])
    soft_ref = cases[f"mask_resized_float_{suffix}"]
    np.testing.assert_allclose(soft[0], soft_ref, atol=1e-5)
    sure = np.abs(soft_ref - 0.5) > 1e-4
    np.testing.assert_array_equal(binary.numpy()[0][sure],
                                  cases[f"mask_seg_{suffix}"][sure])


@pytest.mark.parametrize("case,num_anchors", [("atss", 1), ("mayolact", 2)])
@pytest.mark.parametrize("rescale", [True, False])
def test_get_bboxes(cases, case, num_anchors, rescale):
    p = f"getbboxes_{case}_"
    nchw = lambda x: np.transpose(x, (0, 2, 3, 1))  # noqa: E731
    cls = [nchw(cases[f"{p}cls_score_l{i}"]) for i in range(5)]
    reg = [nchw(cases[f"{p}bbox_pred_l{i}"]) for i in range(5)]
    coeff = [nchw(cases[f"{p}coeff_pred_l{i}"]) for i in range(5)]
    sizes = cases[p + "featmap_sizes"]
    counts = [int(s) * int(s) * num_anchors for s in sizes]
    anchors = yd.split_levels(cases[p + "anchors"], counts)
    nms_pre, thr, iou, top_k, max_num = cases[p + "test_cfg"]
    img_shape = tuple(int(v) for v in cases[p + "img_shape"][:2])
    scale = cases[p + "scale_factor"] if rescale else None

    def run(cls, reg, coeff):
        return yd.get_bboxes(cls, reg, coeff, anchors, img_shape,
                             scale_factor=scale, num_anchors=num_anchors,
                             nms_pre=int(nms_pre), score_thr=float(thr),
                             iou_thr=float(iou), top_k=int(top_k),
                             max_per_img=int(max_num))

    out = _xla(run)(cls, reg, coeff)
    suffix = "rescale" if rescale else "norescale"
    ref_boxes = cases[f"{p}det_bboxes_{suffix}"]
    n = len(ref_boxes)
    assert int(out["num_detections"][0]) == n
    np.testing.assert_array_equal(out["labels"][0, :n],
                                  cases[f"{p}det_labels_{suffix}"])
    np.testing.assert_allclose(out["boxes"][0, :n], ref_boxes[:, :4],
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["scores"][0, :n], ref_boxes[:, 4],
                               rtol=1e-5)
    np.testing.assert_allclose(out["coeffs"][0, :n],
                               cases[f"{p}det_coeffs_{suffix}"], rtol=1e-5,
                               atol=1e-7)


def test_anchors_550():
    ref = np.load(reference_path("yolact", "anchors_550.npz"))
    sizes = tuple(int(s) for s in ref["featmap_sizes_550"])
    assert sizes == anchors_mmdet.resnet_fpn_featmap_sizes(550)
    for tag, (anchors, counts) in {
            "atss": anchors_mmdet.atss_anchors(550),
            "mayolact": anchors_mmdet.atss_anchors(550, scales_per_octave=2),
            "yolact_mmdet_base": anchors_mmdet.yolact_mmdet_anchors(550),
    }.items():
        levels = yd.split_levels(anchors, counts)
        for i in range(5):
            np.testing.assert_allclose(levels[i], ref[f"{tag}_anchors_l{i}"],
                                       atol=1e-4, rtol=1e-6)
    priors = anchors_mmdet.yolact_priors(550)
    counts = [s * s * 3 for s in sizes]
    for i, level in enumerate(yd.split_levels(priors, counts)):
        np.testing.assert_allclose(level, ref[f"dbolya_priors_cxcywh_rel_l{i}"],
                                   atol=1e-6)


def test_config_anchors():
    from orienmask_tf.families.yolact.ops import yolact_config_anchors

    ref = np.load(reference_path("yolact", "anchors_550.npz"))
    for tag, kwargs in (("atss", {}), ("yolact_mmdet_base",
                                       {"assigner": "max_iou"}),
                        ("mayolact", {"scales_per_octave": 2})):
        anchors, counts = yolact_config_anchors(550, **kwargs)
        expected = np.concatenate([ref[f"{tag}_anchors_l{i}"]
                                   for i in range(5)])
        np.testing.assert_allclose(anchors, expected, atol=1e-4, rtol=1e-6)
    # 400 px: P3..P7 = 50, 25, 13, 7, 4 with the 550 strides (official).
    anchors, counts = yolact_config_anchors(400, assigner="max_iou")
    assert counts == (50 * 50 * 3, 25 * 25 * 3, 13 * 13 * 3, 7 * 7 * 3,
                      4 * 4 * 3)
    np.testing.assert_allclose(anchors[3 * 49, :2] - anchors[0, :2],
                               [550.0 / 69 * 49, 0.0], rtol=1e-5)
    anchors, counts = yolact_config_anchors(700)
    assert counts == (88 * 88, 44 * 44, 22 * 22, 11 * 11, 6 * 6)


def _dbolya_detect_numpy(priors_rel, loc, conf, coeff, thr=0.05, iou_thr=0.5,
                         top_k=200, max_num=100):
    """numpy transcription of dbolya ``Detect`` (bg first) for one image."""
    boxes = np.concatenate([priors_rel[:, :2] + loc[:, :2] * 0.1
                            * priors_rel[:, 2:],
                            priors_rel[:, 2:] * np.exp(loc[:, 2:] * 0.2)], 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    e = np.exp(conf - conf.max(1, keepdims=True))
    probs = (e / e.sum(1, keepdims=True)).T                   # (C+1, n)
    cur = probs[1:]
    keep = cur.max(0) > thr
    scores, boxes, coeff = cur[:, keep], boxes[keep], coeff[keep]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    scores = np.take_along_axis(scores, order, 1)
    cls_boxes = boxes[order]                                  # (C, k, 4)
    lt = np.maximum(cls_boxes[:, :, None, :2], cls_boxes[:, None, :, :2])
    rb = np.minimum(cls_boxes[:, :, None, 2:], cls_boxes[:, None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = (cls_boxes[..., 2] - cls_boxes[..., 0]) * (
        cls_boxes[..., 3] - cls_boxes[..., 1])
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    iou = np.triu(iou, 1).max(1)
    kept = iou <= iou_thr
    classes = np.broadcast_to(np.arange(len(scores))[:, None], kept.shape)
    s, c = scores[kept], classes[kept]
    b, m = cls_boxes[kept], coeff[order][kept]
    top = np.argsort(-s, kind="stable")[:max_num]
    return b[top] * 550, s[top], c[top], m[top]


def test_get_bboxes_dbolya_style_matches_transcription():
    rng = np.random.RandomState(5)
    sizes = (6, 3, 2, 1, 1)
    priors = anchors_mmdet.yolact_priors(550, conv_sizes=sizes)
    counts = [s * s * 3 for s in sizes]
    n = sum(counts)
    conf = (rng.randn(n, 5) * 2).astype(np.float32)           # bg + 4 fg
    loc = rng.randn(n, 4).astype(np.float32)
    coeff = rng.uniform(-1, 1, (n, 8)).astype(np.float32)
    ref_boxes, ref_scores, ref_classes, ref_coeff = _dbolya_detect_numpy(
        priors, loc, conf, coeff)
    # Our layout: background last (the converter rolls the channels).
    ours_conf = np.concatenate([conf[:, 1:], conf[:, :1]], 1)
    anchors = yd.split_levels(
        anchors_mmdet.center_size_to_corners(priors, 550), counts)
    maps = []
    for rows, width in ((ours_conf, 5), (loc, 4), (coeff, 8)):
        levels, start = [], 0
        for s, count in zip(sizes, counts):
            levels.append(rows[start:start + count].reshape(1, s, s, 3 * width))
            start += count
        maps.append(levels)
    out = yd.get_bboxes(*maps, anchors, (550, 550), num_anchors=3,
                        style="dbolya")
    num = int(out["num_detections"][0])
    assert num == len(ref_scores) > 0
    np.testing.assert_array_equal(out["labels"][0, :num], ref_classes)
    np.testing.assert_allclose(out["scores"][0, :num], ref_scores, rtol=1e-5)
    np.testing.assert_allclose(out["boxes"][0, :num], ref_boxes, atol=1e-2,
                               rtol=1e-4)
    np.testing.assert_allclose(out["coeffs"][0, :num], ref_coeff, rtol=1e-6)


def test_crop_true_swap():
    masks = np.ones((1, 10, 10, 1), np.float32)
    inverted = np.array([[[0.8, 0.8, 0.2, 0.2]]], np.float32)
    mmdet = yd.crop_masks(masks, inverted).numpy()[0, ..., 0]
    dbolya = yd.crop_masks(masks, inverted, true_swap=True).numpy()[0, ..., 0]
    # mmdet: [x2 - 1, x2 + 1) = columns 1, 2; dbolya: [1, 9).
    assert mmdet[1:3, 1:3].all() and mmdet.sum() == 4
    assert dbolya[1:9, 1:9].all() and dbolya.sum() == 64
