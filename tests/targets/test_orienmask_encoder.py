import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.families.orienmask.encoder import ORIEN_IGNORE
from orienmask_tf.families.orienmask.encoder import ORIEN_NEGATIVE
from orienmask_tf.families.orienmask.encoder import ORIEN_POSITIVE
from orienmask_tf.families.orienmask.encoder import OrienMaskTargetEncoder
from tests.targets.fixture_utils import LOSS_CASES
from tests.targets.fixture_utils import batched_targets
from tests.targets.fixture_utils import encoder_for
from tests.targets.fixture_utils import load_case
from tests.targets.fixture_utils import padded_examples

ANCHORS_544 = np.array([(12, 16), (19, 36), (40, 28), (36, 75), (76, 55),
                        (72, 146), (142, 110), (192, 243), (459, 401)],
                       np.float32)


def _check_against_fixture(z, out):
    for s, name in enumerate(("s32", "s16", "s8")):
        box = out[f"box_targets_{name}"]
        cls = out[f"cls_targets_{name}"]
        labels = out[f"orien_labels_{name}"]
        np.testing.assert_array_equal(cls >= 0, z[f"bbox_pos_mask_s{s}"] > 0)
        onehot = np.where(cls[..., None] >= 0,
                          np.eye(int(z["num_classes"]))[np.maximum(cls, 0)], 0)
        np.testing.assert_array_equal(onehot, z[f"tcls_s{s}"])
        np.testing.assert_allclose(box[..., 0:2], z[f"txy_s{s}"], atol=1e-5)
        np.testing.assert_allclose(box[..., 2:4], z[f"twh_s{s}"], atol=1e-5)
        np.testing.assert_allclose(box[..., 4], z[f"bbox_pos_scale_s{s}"],
                                   atol=1e-5)
        np.testing.assert_array_equal(labels == ORIEN_POSITIVE,
                                      z[f"orien_pos_mask_s{s}"] > 0)
        np.testing.assert_array_equal(labels == ORIEN_NEGATIVE,
                                      z[f"orien_neg_mask_s{s}"] > 0)
        np.testing.assert_allclose(
            np.moveaxis(out[f"orien_targets_{name}"], -3, -1),
            z[f"torien_s{s}"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", LOSS_CASES)
def test_fixture_parity_eager(case):
    z = load_case(case)
    _check_against_fixture(z, batched_targets(encoder_for(z), z))


@pytest.mark.parametrize("case", LOSS_CASES)
def test_fixture_parity_tf_function_and_tf_data(case):
    z = load_case(case)
    encoder = encoder_for(z)
    eager = batched_targets(encoder, z)
    traced = batched_targets(encoder, z, tf.function(encoder))
    examples = padded_examples(z)
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([e[k] for e in examples]) for k in examples[0]})
    ds = ds.map(encoder).batch(len(examples))
    from_data = {k: v.numpy() for k, v in next(iter(ds)).items()}
    for key in eager:
        np.testing.assert_array_equal(traced[key], eager[key], err_msg=key)
        np.testing.assert_array_equal(from_data[key], eager[key], err_msg=key)
    # Static shapes out of tf.data.
    for key, spec in ds.element_spec.items():
        assert spec.shape[1:].is_fully_defined(), key
    _check_against_fixture(z, from_data)


# --- independent numpy port of the specification (README section 2) ------


def _reference(encoder, gt):
    """Sequential per-instance rule of the spec, in float32 numpy."""
    height, width = encoder.image_size
    n = int(gt["num_instances"])
    n_a = encoder.num_anchors
    maps_m = np.zeros((9, height, width), np.int64)
    maps_t = np.zeros((9, height, width, 2), np.float32)
    cols = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    f32 = np.float32
    for i in range(n):
        box = gt["boxes"][i].astype(np.float32)
        if box[2] <= 0 or box[3] <= 0:
            continue
        for s in range(3):
            grid_wh, scale_wh, grid_anchors = encoder.scale_constants(s)
            g = box * np.concatenate([grid_wh, grid_wh])
            inter = (np.minimum(g[2], grid_anchors[:, 0])
                     * np.minimum(g[3], grid_anchors[:, 1]))
            iou = inter / ((g[2] * g[3] + grid_anchors[:, 0]
                            * grid_anchors[:, 1]) - inter)
            best = int(np.argmax(iou))
            if best in encoder.anchor_mask[s]:
                break
        else:
            continue
        a = encoder.anchor_mask[s].index(best)
        m = s * n_a + a
        cx, cy = g[0] * scale_wh[0], g[1] * scale_wh[1]
        vr, cr = f32(encoder.valid_region), f32(encoder.center_region)
        vw = (g[2] * vr + f32(0.5)) * scale_wh[0]
        vh = (g[3] * vr + f32(0.5)) * scale_wh[1]
        cw, ch = vw / vr * cr, vh / vr * cr
        x1 = np.round(np.clip(cx - vw, 0, width - 1))
        x2 = np.round(np.clip(cx + vw, 0, width - 1)) + 1
        y1 = np.round(np.clip(cy - vh, 0, height - 1))
        y2 = np.round(np.clip(cy + vh, 0, height - 1)) + 1
        roi = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        dx = np.broadcast_to(cols - cx, (height, width))
        dy = np.broadcast_to(rows - cy, (height, width))
        mask = gt["masks"][i] > 0
        fg = roi & mask
        maps_m[m][fg] = -1
        maps_t[m][fg] = np.stack([dx, dy], -1)[fg]
        bg = roi & ~mask & (maps_m[m] >= 0)
        lx = np.maximum(np.abs(dx), f32(1e-8))
        ly = np.maximum(np.abs(dy), f32(1e-8))
        k = np.minimum(np.maximum(cw / lx, 1), np.maximum(ch / ly, 1)) - 1
        vec = np.stack([k * np.sign(dx) * lx, k * np.sign(dy) * ly], -1)
        maps_m[m][bg] += 1
        maps_t[m][bg] += vec[bg]
    half = np.stack([encoder.anchors[list(mk)] for mk in encoder.anchor_mask])
    half = half.reshape(9, 1, 1, 2) / f32(2)
    denom = np.where(maps_m == 0, 1000, maps_m).astype(np.float32)
    return maps_m, maps_t / half / denom[..., None]


def _ellipse(height, width, cx, cy, rx, ry):
    yy, xx = np.mgrid[0:height, 0:width]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1


def _example(height, width, shapes, max_instances=8, classes=None):
    """Masks from (cx, cy, rx, ry) pixel ellipses; boxes = tight boxes."""
    gt = {"boxes": np.zeros((max_instances, 4), np.float32),
          "classes": np.full((max_instances,), -1, np.int32),
          "masks": np.zeros((max_instances, height, width), bool),
          "num_instances": np.int32(len(shapes))}
    for i, shape in enumerate(shapes):
        mask = _ellipse(height, width, *shape)
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gt["boxes"][i] = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height,
                          (x1 - x0) / width, (y1 - y0) / height]
        gt["classes"][i] = i % 3 if classes is None else classes[i]
        gt["masks"][i] = mask
    return gt


def _encoder(height=96, width=160, **kwargs):
    anchors = ANCHORS_544 * np.array([width / 544, height / 544], np.float32)
    return OrienMaskTargetEncoder((height, width), anchors, 3, **kwargs)


def _compare_reference(encoder, gt):
    out = encoder(gt)
    maps_m, maps_t = _reference(encoder, gt)
    labels = np.concatenate([out[f"orien_labels_{k}"].numpy()
                             for k in encoder.names])
    targets = np.concatenate([out[f"orien_targets_{k}"].numpy()
                              for k in encoder.names]).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(labels == ORIEN_POSITIVE, maps_m < 0)
    np.testing.assert_array_equal(labels == ORIEN_NEGATIVE, maps_m > 0)
    np.testing.assert_allclose(targets, maps_t, atol=1e-5, rtol=0)
    for value in out.values():
        assert np.all(np.isfinite(np.asarray(value, np.float32)))
    return out, maps_m


def test_image_without_instances():
    encoder = _encoder()
    gt = _example(96, 160, [])
    out = encoder(gt)
    for name in encoder.names:
        assert np.all(out[f"cls_targets_{name}"].numpy() == -1)
        assert np.all(out[f"box_targets_{name}"].numpy() == 0)
        assert np.all(out[f"orien_labels_{name}"].numpy() == ORIEN_IGNORE)
        assert np.all(out[f"orien_targets_{name}"].numpy() == 0)
    assert np.all(out["gt_boxes"].numpy() == 0)


def test_instances_touching_the_border():
    encoder = _encoder()
    gt = _example(96, 160, [(4, 5, 14, 9), (150, 90, 20, 12),
                            (80, 94, 30, 8), (0, 48, 12, 30)])
    out, maps_m = _compare_reference(encoder, gt)
    assert (maps_m < 0).any() and (maps_m > 0).any()
    assert sum(int((out[f"cls_targets_{k}"].numpy() >= 0).sum())
               for k in encoder.names) == 4


def test_overlapping_instances_same_anchor_map():
    encoder = _encoder()
    # Same size -> same anchor; shifted so ROIs and masks overlap. The
    # middle one is foreground where the others had background (before and
    # after it), exercising the override order.
    shapes = [(60, 40, 14, 10), (72, 44, 14, 10), (84, 40, 14, 10)]
    gt = _example(96, 160, shapes)
    _, maps_m = _compare_reference(encoder, gt)
    claimed = [(s, local.numpy().tolist()) for s, (assigned, local, _) in
               enumerate(encoder.assign(tf.constant(gt["boxes"][:3]),
                                        tf.constant([True] * 3)))
               if assigned.numpy().all()]
    assert len(claimed) == 1 and len(set(claimed[0][1])) == 1  # one map
    assert (maps_m < 0).sum() > 0
    # Some pixel is background of several instances (averaging).
    assert (maps_m > 1).any()


def test_overlapping_instances_different_anchor_maps():
    encoder = _encoder()
    shapes = [(80, 48, 40, 30), (80, 48, 6, 5), (84, 50, 14, 10)]
    gt = _example(96, 160, shapes)
    out, _ = _compare_reference(encoder, gt)
    positives = [int((out[f"cls_targets_{k}"].numpy() >= 0).sum())
                 for k in encoder.names]
    assert sum(positives) == 3 and max(positives) < 3


def test_random_crowded_examples_match_reference():
    rng = np.random.RandomState(0)
    encoder = _encoder(64, 96)
    for _ in range(3):
        shapes = [(rng.uniform(0, 96), rng.uniform(0, 64),
                   rng.uniform(2, 30), rng.uniform(2, 20)) for _ in range(8)]
        gt = _example(64, 96, shapes, max_instances=10)
        _compare_reference(encoder, gt)


def test_zero_area_box_is_ignored_without_nan():
    encoder = _encoder()
    gt = _example(96, 160, [(80, 48, 14, 10)])
    gt["boxes"][1] = [0.5, 0.5, 0.0, 0.1]
    gt["classes"][1] = 1
    gt["masks"][1, 40:50, 80] = True
    gt["num_instances"] = np.int32(2)
    out = encoder(gt)
    for value in out.values():
        assert np.all(np.isfinite(np.asarray(value, np.float32)))
    assert sum(int((out[f"cls_targets_{k}"].numpy() >= 0).sum())
               for k in encoder.names) == 1
    np.testing.assert_array_equal(out["gt_boxes"].numpy()[1], 0)


def test_grid_center_base_position():
    encoder = _encoder(base_position="grid_center")
    gt = _example(96, 160, [(70, 45, 14, 10)])
    out = encoder(gt)
    for name, (gh, gw) in zip(encoder.names, encoder.grid_sizes):
        labels = out[f"orien_labels_{name}"].numpy()
        if not (labels == ORIEN_POSITIVE).any():
            continue
        a, i, j = [v[0] for v in np.nonzero(labels == ORIEN_POSITIVE)]
        sw, sh = 160 / gw, 96 / gh
        col, row = int(70 / 160 * gw), int(45 / 96 * gh)
        anchor = encoder.anchors[list(encoder.anchor_mask[encoder.names.index(
            name)])][a]
        expected = [((col + 0.5) * sw - j) / (anchor[0] / 2),
                    ((row + 0.5) * sh - i) / (anchor[1] / 2)]
        np.testing.assert_allclose(
            out[f"orien_targets_{name}"].numpy()[a, :, i, j], expected,
            rtol=1e-5)


def test_float16_storage():
    encoder = _encoder(orien_dtype="float16")
    out = encoder(_example(96, 160, [(70, 45, 14, 10)]))
    assert out["orien_targets_s8"].dtype == tf.float16
    assert out["orien_labels_s8"].dtype == tf.int8


def test_render_orientation_targets(tmp_path):
    from orienmask_tf.families.orienmask.orientation import render_orientation_targets

    encoder = _encoder()
    gt = _example(96, 160, [(60, 40, 14, 10), (100, 50, 40, 30)])
    image = np.random.RandomState(0).rand(96, 160, 3)
    path = tmp_path / "targets.png"
    canvas = render_orientation_targets(image, gt["masks"], encoder(gt),
                                        path=path)
    assert canvas.shape == (4 * 98, 3 * 162, 3) and canvas.dtype == np.uint8
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
