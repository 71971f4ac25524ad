import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import ConfigError
from orienmask_tf.config import load_config
from orienmask_tf.families.orienmask import atss_targets
from orienmask_tf.families.orienmask.encoder import ORIEN_IGNORE
from orienmask_tf.families.orienmask.encoder import ORIEN_NEGATIVE
from orienmask_tf.families.orienmask.encoder import ORIEN_POSITIVE
from orienmask_tf.families.orienmask.encoder import OrienMaskTargetEncoder
from tests import testing
from tests.assign import official_numpy
from tests.targets.test_orienmask_encoder import _encoder
from tests.targets.test_orienmask_encoder import _example

# Hand-checkable priors for a 64x64 input (global ids 0-8; stride 8 uses
# 0-2, stride 16 uses 3-5, stride 32 uses 6-8).
ANCHORS = np.array([(8, 8), (16, 16), (8, 16), (24, 24), (32, 32), (24, 48),
                    (40, 40), (48, 48), (56, 28)], np.float32)
ATSS = ("atss_iou", "atss_maiou")


def _small(assigner="atss_iou", **kwargs):
    return OrienMaskTargetEncoder((64, 64), ANCHORS, 3, assigner=assigner,
                                  **kwargs)


def _boxes(boxes, size=64, max_instances=4):
    """Rectangle instances from pixel x1, y1, x2, y2 (mask = the box)."""
    gt = {"boxes": np.zeros((max_instances, 4), np.float32),
          "classes": np.full((max_instances,), -1, np.int32),
          "masks": np.zeros((max_instances, size, size), np.uint8),
          "num_instances": np.int32(len(boxes))}
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        gt["boxes"][i] = [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size,
                          (x2 - x1) / size, (y2 - y1) / size]
        gt["classes"][i] = i
        gt["masks"][i, y1:y2, x1:x2] = 1
    return gt


def _positives(encoder, out):
    """``{(scale name, anchor, row, col): (class, [tx, ty, tw, th, w])}``."""
    found = {}
    for name in encoder.names:
        cls = np.asarray(out[f"cls_targets_{name}"])
        box = np.asarray(out[f"box_targets_{name}"])
        for a, r, c in np.argwhere(cls >= 0):
            found[(name, int(a), int(r), int(c))] = (int(cls[a, r, c]),
                                                     box[a, r, c])
    return found


def _stats(stats):
    return {k: int(v) for k, v in stats.items()}


def test_anchor_boxes_cover_every_cell_of_each_scale():
    boxes, counts = atss_targets.anchor_boxes((64, 96), ANCHORS)
    assert counts == (2 * 3 * 3, 4 * 6 * 3, 8 * 12 * 3)
    assert boxes.shape == (sum(counts), 4)
    # First row: stride 32, cell (0, 0), anchor 6 (40x40) centred at 16, 16.
    np.testing.assert_array_equal(boxes[0], [-4, -4, 36, 36])
    # Stride 16, row 1, column 2, local anchor 1 (32x32): centre (40, 24).
    row = counts[0] + (1 * 6 + 2) * 3 + 1
    np.testing.assert_array_equal(boxes[row], [24, 8, 56, 40])
    # Last row: stride 8, cell (7, 11), anchor 2 (8x16): centre (92, 60).
    np.testing.assert_array_equal(boxes[-1], [88, 52, 96, 68])


@pytest.mark.parametrize("assigner", ATSS)
def test_instance_on_a_cell_boundary(assigner):
    # 16x16 box centred at (32, 32): on the cell corner at every stride. At
    # stride 8 the four cells around it (anchor centres at 28 and 36) are
    # equally near; the ATSS top-9 takes three of them (ties: lower index,
    # i.e. cells (3, 3), (3, 4), (4, 3)). Their 16x16 anchor has IoU
    # 144/368 = 0.39 and the 8x16 one 96/288 = 0.33 with the box, above the
    # threshold; the 8x8 ones (0.25) and every other scale are below.
    encoder = _small(assigner)
    out, stats = encoder.encode_with_stats(_boxes([(24, 24, 40, 40)]))
    found = _positives(encoder, out)
    cells = [(3, 3), (3, 4), (4, 3)]
    assert set(found) == {("s8", a, r, c) for a in (1, 2) for r, c in cells}
    for (_, a, r, c), (cls, box) in found.items():
        assert cls == 0
        # Centre 4.0 cells: offset 1 from the cells left / above it, 0 from
        # the cells right / below it (the boundary itself: nothing clamped).
        np.testing.assert_array_equal(box[:2], [4.0 - c, 4.0 - r])
        np.testing.assert_allclose(
            box[2:4], np.log([16 / ANCHORS[a, 0], 16 / ANCHORS[a, 1]]),
            rtol=1e-6)
        assert box[4] == pytest.approx(2 - 0.25 * 0.25)
    assert _stats(stats) == {"instances": 1, "positives": 6, "fallbacks": 0,
                             "unassigned": 0, "clamped": 0, "maps": 2}
    # Drawn on the two maps with positives (stride 8, anchors 1 and 2) only.
    labels = out["orien_labels_s8"].numpy()
    assert (labels[1:] == ORIEN_POSITIVE).sum() == 2 * 16 * 16
    assert np.all(labels[0] == ORIEN_IGNORE)
    for name in ("s16", "s32"):
        assert np.all(out[f"orien_labels_{name}"].numpy() == ORIEN_IGNORE)
    # The official YOLO rule: one positive, cell floor(4.0) = 4.
    yolo = _small("yolo")
    assert set(_positives(yolo, yolo(_boxes([(24, 24, 40, 40)])))) == {
        ("s8", 1, 4, 4)}


@pytest.mark.parametrize("assigner", ATSS)
def test_two_instances_sharing_their_best_anchor(assigner):
    # 14x14 and 12x12 boxes centred at (27, 27): both best match the 16x16
    # prior at stride-8 cell (3, 3) (w/h IoU 0.77 and 0.56), where the YOLO
    # rule puts both. ATSS resolves it by overlap: that anchor (box 20..36)
    # has IoU 196/256 = 0.77 with instance 0 and 0.56 with instance 1, so
    # it regresses instance 0; the 8x16 anchor (24..32 x 20..36) has IoU
    # 112/212 = 0.528 with instance 0 and 96/176 = 0.545 with instance 1,
    # so it regresses instance 1, as does the 8x8 one (0.44 vs 0.33).
    encoder = _small(assigner)
    gt = _boxes([(20, 20, 34, 34), (21, 21, 33, 33)])
    out, stats = encoder.encode_with_stats(gt)
    found = _positives(encoder, out)
    assert {k: v[0] for k, v in found.items()} == {
        ("s8", 0, 3, 3): 1, ("s8", 1, 3, 3): 0, ("s8", 2, 3, 3): 1}
    np.testing.assert_allclose(found[("s8", 1, 3, 3)][1][:4],
                               [0.375, 0.375, np.log(14 / 16), np.log(14 / 16)],
                               rtol=1e-6)
    np.testing.assert_allclose(found[("s8", 2, 3, 3)][1][:4],
                               [0.375, 0.375, np.log(12 / 8), np.log(12 / 16)],
                               rtol=1e-6)
    assert _stats(stats)["maps"] == 3
    # Instance grouping: each instance on the maps of its own anchors, so
    # the nested masks no longer share a map (instance 1's pixels are
    # foreground of instance 1 on maps 0 and 2, of instance 0 on map 1).
    labels = out["orien_labels_s8"].numpy()
    targets = out["orien_targets_s8"].numpy()
    assert (labels[1] == ORIEN_POSITIVE).sum() == 14 * 14
    assert (labels[0] == ORIEN_POSITIVE).sum() == 12 * 12
    # Foreground vectors point to the instance's own centre (27, 27), in
    # units of half the map's anchor (Eq. 1).
    np.testing.assert_allclose(targets[2, :, 21, 21],
                               [(27 - 21) / 4, (27 - 21) / 8], rtol=1e-6)


def test_yolo_keeps_the_official_collision():
    # The same pair under the official rule: one anchor, both instances.
    yolo = _small("yolo")
    found = _positives(yolo, yolo(_boxes([(20, 20, 34, 34),
                                          (21, 21, 33, 33)])))
    assert list(found) == [("s8", 1, 3, 3)]


def test_instance_larger_than_every_anchor():
    # 60x62 box at the top-left corner, wider and taller than every prior.
    # The 27 candidates (3 nearest cells x 3 priors per scale) have mean +
    # std of IoU 0.3229; only the 48x48 prior passes: at stride-32 cell
    # (0, 0) (box -8..40: IoU 1600/4424 = 0.362) and cell (1, 0) (rows
    # 24..72: 1520/4504 = 0.337); the 40x40 one at (0, 0) has 0.322. The
    # centre (30, 31) lies in cell (0, 0); for cell (1, 0) its row offset
    # 31/32 - 1 < 0 is clamped to 0 (the nearest reachable point).
    encoder = _small("atss_iou")
    out, stats = encoder.encode_with_stats(_boxes([(0, 0, 60, 62)]))
    found = _positives(encoder, out)
    assert set(found) == {("s32", 1, 0, 0), ("s32", 1, 1, 0)}
    for (_, _, row, _), (cls, box) in found.items():
        assert cls == 0
        np.testing.assert_allclose(
            box[:4], [30 / 32, 31 / 32 if row == 0 else 0.0,
                      np.log(60 / 48), np.log(62 / 48)], rtol=1e-6)
        assert box[4] == pytest.approx(2 - (60 / 64) * (62 / 64), rel=1e-6)
    assert _stats(stats) == {"instances": 1, "positives": 2, "fallbacks": 0,
                             "unassigned": 0, "clamped": 1, "maps": 1}
    labels = out["orien_labels_s32"].numpy()
    assert list((labels == ORIEN_POSITIVE).sum((1, 2))) == [0, 60 * 62, 0]


def test_centred_large_instance_falls_back_to_its_yolo_anchor():
    # 56x56 box centred on the image: every candidate comes in symmetric
    # copies and the threshold, mean + std of the 27 candidate IoUs, is
    # 0.3279 while the best IoU is 0.3267 (the 24x48 prior at stride 16:
    # 1056 / 3232), so ATSS gives no positive. The fallback takes the YOLO
    # anchor (48x48, w/h IoU 0.73, at stride-32 cell (1, 1)); without it
    # the instance would never be learned.
    gt = _boxes([(4, 4, 60, 60)])
    encoder = _small()
    pix = tf.constant([[4.0, 4.0, 60.0, 60.0]])
    raw = encoder.atss.assigner(tf.constant(encoder.atss.anchors),
                                encoder.atss.num_level_anchors, pix)
    assert float(raw["thr"][0]) == pytest.approx(0.3279, abs=1e-4)
    assert int(tf.reduce_max(raw["assigned_gt_inds"])) == 0
    out, stats = encoder.encode_with_stats(gt)
    assert list(_positives(encoder, out)) == [("s32", 1, 1, 1)]
    assert _stats(stats)["fallbacks"] == 1
    yolo = _small("yolo")
    assert list(_positives(yolo, yolo(gt))) == [("s32", 1, 1, 1)]
    plain = _small(yolo_fallback=False)
    out, stats = plain.encode_with_stats(gt)
    assert not _positives(plain, out)
    assert _stats(stats)["unassigned"] == 1
    for name in plain.names:  # drawn on no map
        assert np.all(out[f"orien_labels_{name}"].numpy() == ORIEN_IGNORE)


def test_tiny_instance_between_anchor_centres_falls_back():
    # A 2x2 box at (8, 8): stride-8 anchor centres are at 4 and 12, so no
    # candidate centre lies inside it. Fallback: the 8x8 prior at cell
    # (1, 1) (YOLO: w/h IoU 4/64 is best there), offset 0 (centre 1.0).
    gt = _boxes([(7, 7, 9, 9)])
    encoder = _small()
    out, stats = encoder.encode_with_stats(gt)
    found = _positives(encoder, out)
    assert list(found) == [("s8", 0, 1, 1)]
    np.testing.assert_allclose(found[("s8", 0, 1, 1)][1][:4],
                               [0, 0, np.log(2 / 8), np.log(2 / 8)],
                               rtol=1e-6)
    assert _stats(stats) == {"instances": 1, "positives": 1, "fallbacks": 1,
                             "unassigned": 0, "clamped": 0, "maps": 1}


def test_fallback_never_takes_an_atss_positive():
    # Instance 0 (tiny, centre (24, 24)) would fall back to the 8x8 prior at
    # stride-8 cell (3, 3); instance 1 (8x8 box 24..32) holds it by ATSS.
    gt = _boxes([(23, 23, 25, 25), (24, 24, 32, 32)])
    out, stats = _small().encode_with_stats(gt)
    found = _positives(_small(), out)
    assert found[("s8", 0, 3, 3)][0] == 1
    assert all(cls == 1 for cls, _ in found.values())
    assert _stats(stats)["unassigned"] == 1


@pytest.mark.parametrize("assigner", ("yolo",) + ATSS)
def test_image_without_instances(assigner):
    encoder = _small(assigner)
    gt = _boxes([])
    out = encoder(gt)
    for name in encoder.names:
        assert np.all(out[f"cls_targets_{name}"].numpy() == -1)
        assert np.all(out[f"box_targets_{name}"].numpy() == 0)
        assert np.all(out[f"orien_labels_{name}"].numpy() == ORIEN_IGNORE)
        assert np.all(out[f"orien_targets_{name}"].numpy() == 0)
    assert np.all(out["gt_boxes"].numpy() == 0)
    if assigner != "yolo":
        assert set(_stats(encoder.encode_with_stats(gt)[1]).values()) == {0}


@pytest.mark.parametrize("assigner", ATSS)
def test_invalid_instances_get_nothing(assigner):
    encoder = _small(assigner)
    gt = _boxes([(8, 8, 30, 30), (30, 30, 50, 50)])
    gt["classes"][0] = -1       # no class: ignored like padding
    gt["boxes"][1, 2] = 0.0     # zero width
    out, stats = encoder.encode_with_stats(gt)
    assert not _positives(encoder, out)
    assert _stats(stats)["instances"] == 0
    for value in out.values():
        assert np.all(np.isfinite(np.asarray(value, np.float32)))


# --- against independent numpy references ---------------------------------


def _numpy_assignment(encoder, gt):
    """Official ATSS (tests/assign/official_numpy) on the anchor layout,
    plus the YOLO fallback, per the module docstring."""
    n = int(gt["num_instances"])
    height, width = encoder.image_size
    boxes = gt["boxes"][:n].astype(np.float32)
    xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2,
                           boxes[:, :2] + boxes[:, 2:] / 2], 1)
    xyxy = (xyxy * np.array([width, height] * 2, np.float32)).astype(
        np.float32)
    anchors, counts = atss_targets.anchor_boxes(
        encoder.image_size, encoder.anchors, encoder.anchor_mask,
        encoder.strides)
    maiou, iou, _ = official_numpy.maiou_calculator(
        xyxy, anchors, gt["masks"][:n])
    overlaps = maiou if encoder.atss.overlap == "maiou" else iou
    assigned = official_numpy.atss_assign(anchors, counts, xyxy, overlaps,
                                          topk=encoder.atss.topk)[0]
    offsets = np.cumsum((0,) + counts)
    claims = {}
    for i in range(n):
        if (assigned == i + 1).any():
            continue
        for s, mask in enumerate(encoder.anchor_mask):
            grid_wh, _, grid_anchors = encoder.scale_constants(s)
            g = boxes[i] * np.concatenate([grid_wh, grid_wh])
            inter = (np.minimum(g[2], grid_anchors[:, 0])
                     * np.minimum(g[3], grid_anchors[:, 1]))
            shape_iou = inter / ((g[2] * g[3] + grid_anchors[:, 0]
                                  * grid_anchors[:, 1]) - inter)
            best = int(np.argmax(shape_iou))
            if best in mask:
                gh, gw = encoder.grid_sizes[s]
                col = int(np.clip(np.floor(g[0]), 0, gw - 1))
                row = int(np.clip(np.floor(g[1]), 0, gh - 1))
                claims[offsets[s] + (row * gw + col) * 3
                       + mask.index(best)] = i + 1   # later one wins
                break
    for index, gt_id in claims.items():
        if assigned[index] == 0:
            assigned[index] = gt_id
    return assigned, anchors, counts


def _numpy_orientation(encoder, gt, member):
    """The official sequential rule (paper Eq. 1-2) per map, each instance
    visited on every map it is a member of, in ground-truth order."""
    height, width = encoder.image_size
    f32 = np.float32
    count = np.zeros((9, height, width), np.int64)
    vec = np.zeros((9, height, width, 2), np.float32)
    cols = np.arange(width, dtype=f32)[None, :]
    rows = np.arange(height, dtype=f32)[:, None]
    vr, cr = f32(encoder.valid_region), f32(encoder.center_region)
    for m in range(9):
        s = m // 3
        grid_wh, scale_wh, _ = encoder.scale_constants(s)
        for i in np.nonzero(member[:, m])[0]:
            g = gt["boxes"][i] * np.concatenate([grid_wh, grid_wh])
            cx, cy = g[0] * scale_wh[0], g[1] * scale_wh[1]
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
            inst = gt["masks"][i] > 0
            fg = roi & inst
            count[m][fg] = -1
            vec[m][fg] = np.stack([dx, dy], -1)[fg]
            bg = roi & ~inst & (count[m] >= 0)
            lx = np.maximum(np.abs(dx), f32(1e-8))
            ly = np.maximum(np.abs(dy), f32(1e-8))
            k = np.minimum(np.maximum(cw / lx, 1), np.maximum(ch / ly, 1)) - 1
            count[m][bg] += 1
            vec[m][bg] += np.stack([k * np.sign(dx) * lx,
                                    k * np.sign(dy) * ly], -1)[bg]
    half = np.stack([encoder.anchors[list(mk)] for mk in encoder.anchor_mask])
    half = half.reshape(9, 1, 1, 2) / f32(2)
    denom = np.where(count == 0, 1000, count).astype(np.float32)
    return count, vec / half / denom[..., None]


def _random_example(rng, height, width, count, max_instances=10):
    shapes = [(rng.uniform(0, width), rng.uniform(0, height),
               rng.uniform(1.5, 40), rng.uniform(1.5, 30))
              for _ in range(count)]
    return _example(height, width, shapes, max_instances=max_instances)


@pytest.mark.parametrize("assigner", ATSS)
def test_random_crowded_examples_match_the_numpy_references(assigner):
    rng = np.random.RandomState(1)
    encoder = _encoder(64, 96, assigner=assigner)
    seen_fallback = seen_clamped = seen_shared_map = False
    for _ in range(4):
        gt = _random_example(rng, 64, 96, 8)
        out, stats = encoder.encode_with_stats(gt)
        n = int(gt["num_instances"])
        got, _ = encoder.atss.assign(tf.constant(gt["boxes"][:n]),
                                     tf.constant(gt["masks"][:n]),
                                     tf.ones([n], tf.bool))
        assigned, _, counts = _numpy_assignment(encoder, gt)
        np.testing.assert_array_equal(got.numpy(), assigned)
        # Box targets of every anchor, from the assignment.
        start = 0
        member = np.zeros((n, 9), bool)
        for s, name in enumerate(encoder.names):
            gh, gw = encoder.grid_sizes[s]
            ids = assigned[start:start + counts[s]].reshape(gh, gw, 3)
            start += counts[s]
            grid_wh, _, grid_anchors = encoder.scale_constants(s)
            anchors = grid_anchors[list(encoder.anchor_mask[s])]
            cls = out[f"cls_targets_{name}"].numpy()
            box = out[f"box_targets_{name}"].numpy()
            for r, c, a in np.ndindex(gh, gw, 3):
                k = ids[r, c, a] - 1
                if k < 0:
                    assert cls[a, r, c] == -1 and not box[a, r, c].any()
                    continue
                member[k, s * 3 + a] = True
                g = gt["boxes"][k] * np.concatenate([grid_wh, grid_wh])
                offset = g[:2] - [c, r]
                seen_clamped |= bool(((offset < 0) | (offset > 1)).any())
                expected = np.concatenate([
                    np.clip(offset, 0, 1), np.log(g[2:] / anchors[a]),
                    [2 - g[2] * g[3] / (gw * gh)]])
                assert cls[a, r, c] == gt["classes"][k]
                np.testing.assert_allclose(box[a, r, c], expected, rtol=1e-5,
                                           atol=1e-6)
        seen_fallback |= int(stats["fallbacks"]) > 0
        seen_shared_map |= bool((member.sum(0) > 1).any())
        assert int(stats["maps"]) == member.sum()
        count, vectors = _numpy_orientation(encoder, gt, member)
        labels = np.concatenate([out[f"orien_labels_{k}"].numpy()
                                 for k in encoder.names])
        targets = np.concatenate([out[f"orien_targets_{k}"].numpy()
                                  for k in encoder.names]).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(labels == ORIEN_POSITIVE, count < 0)
        np.testing.assert_array_equal(labels == ORIEN_NEGATIVE, count > 0)
        np.testing.assert_allclose(targets, vectors, atol=1e-5, rtol=0)
    # The cases the design is about did occur.
    assert seen_fallback and seen_clamped and seen_shared_map


def test_one_map_per_instance_gives_the_official_orientation_targets():
    # The multi-map rule with the YOLO membership (one map per instance)
    # equals the official-parity encoder, to float rounding of the
    # background sums (divided by the anchor after summing).
    rng = np.random.RandomState(0)
    yolo = _encoder(64, 96)
    for _ in range(3):
        gt = _random_example(rng, 64, 96, 8)
        n = int(gt["num_instances"])
        expected = yolo(gt)
        boxes = tf.constant(gt["boxes"][:n])
        member = np.zeros((n, 9), bool)
        for s, (assigned, local, _) in enumerate(
                yolo.assign(boxes, tf.ones([n], tf.bool))):
            for i in np.nonzero(assigned.numpy())[0]:
                if not member[i].any():   # the first scale that claims it
                    member[i, s * 3 + int(local[i])] = True
        consts = [yolo.scale_constants(s) for s in range(3)]
        half = np.stack([yolo.anchors[list(m)] for m in yolo.anchor_mask])
        labels, targets = atss_targets.multi_map_orientation_targets(
            boxes, tf.constant(gt["masks"][:n]), member,
            [c[0] for c in consts], [c[1] for c in consts],
            half.reshape(-1, 2) / np.float32(2), yolo.image_size,
            yolo.center_region, yolo.valid_region, 3)
        for s, name in enumerate(yolo.names):
            np.testing.assert_array_equal(
                labels[s].numpy(), expected[f"orien_labels_{name}"].numpy())
            np.testing.assert_allclose(
                targets[s].numpy(), expected[f"orien_targets_{name}"].numpy(),
                rtol=1e-5, atol=1e-6)


# --- graph modes, tf.data, config, training ------------------------------


@pytest.mark.parametrize("assigner", ATSS)
def test_identical_eager_tf_function_and_tf_data(assigner):
    rng = np.random.RandomState(2)
    encoder = _encoder(64, 96, assigner=assigner)
    examples = [_random_example(rng, 64, 96, k, max_instances=6)
                for k in (0, 3, 6)]
    eager = [encoder(gt) for gt in examples]
    traced = tf.function(encoder)
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([e[k] for e in examples]) for k in examples[0]})
    batch = next(iter(ds.map(encoder).batch(len(examples))))
    for spec in ds.map(encoder).element_spec.values():
        assert spec.shape.is_fully_defined()
    for b, (gt, expected) in enumerate(zip(examples, eager)):
        graph = traced(gt)
        for key, value in expected.items():
            np.testing.assert_array_equal(graph[key].numpy(), value.numpy(),
                                          err_msg=key)
            np.testing.assert_array_equal(batch[key][b].numpy(),
                                          value.numpy(), err_msg=key)


def test_build_dataset_runs_the_configured_assigner(tmp_path):
    from orienmask_tf.data.pipeline import build_dataset
    from tests.training.helpers import make_data

    config = load_config(testing.CONFIGS_DIR / "tiny.yaml", [
        "model.num_classes=5", "image_size=[64,64]", "data.max_instances=10",
        "data.deterministic=true", "data.num_parallel_calls=1",
        "targets.assigner=atss_maiou"] + make_data(tmp_path, size=64))
    encoder = config.family.make_encoder(config)
    assert encoder.assigner == "atss_maiou"
    assert encoder.atss.overlap == "maiou"
    targets = build_dataset(config, "val", encoder=encoder, batch_size=4,
                            training=False)
    raw = build_dataset(config, "val", batch_size=4, training=False)
    (_, from_data), (_, gt) = next(iter(targets)), next(iter(raw))
    positives = 0
    for b in range(4):
        example = {k: gt[k][b] for k in ("boxes", "classes", "masks",
                                         "num_instances")}
        eager = encoder(example)
        for key, value in eager.items():
            np.testing.assert_array_equal(from_data[key][b].numpy(),
                                          value.numpy(), err_msg=key)
        positives += sum(int((eager[f"cls_targets_{k}"].numpy() >= 0).sum())
                         for k in encoder.names)
    instances = int(tf.reduce_sum(gt["num_instances"]))
    assert instances > 0 and positives > instances  # several per instance


def test_config_targets_section():
    tiny = testing.CONFIGS_DIR / "tiny.yaml"
    config = load_config(tiny)
    assert config.targets.assigner == "yolo"
    encoder = config.family.make_encoder(config)
    assert encoder.assigner == "yolo" and encoder.atss is None
    config = load_config(tiny, ["targets.assigner=atss_iou",
                                "targets.topk=6",
                                "targets.yolo_fallback=false"])
    encoder = config.family.make_encoder(config)
    assert (encoder.atss.overlap, encoder.atss.topk,
            encoder.atss.yolo_fallback) == ("iou", 6, False)
    for overrides, message in (
            (["targets.assigner=fixed_iou"],
             r"targets.assigner: expected one of \['yolo', 'atss_iou', "
             r"'atss_maiou'\], got 'fixed_iou'"),
            (["targets.topk=0"], r"targets.topk: must be >= 1"),
            (["targets.pos_iou_thr=0.5"],
             r"'targets.pos_iou_thr' is a YOLACT setting")):
        with pytest.raises(ConfigError, match=message):
            load_config(tiny, overrides)
    with pytest.raises(ValueError, match="base_position 'grid_center'"):
        _small(base_position="grid_center")
    with pytest.raises(ValueError, match="assigner must be one of"):
        _small("atss")


@pytest.mark.parametrize("assigner", ("yolo",) + ATSS)
def test_tiny_model_trains_with_each_assigner(tmp_path, assigner):
    from orienmask_tf.training import train
    from tests.training.helpers import tiny_config

    config = tiny_config(tmp_path, f"targets.assigner={assigner}",
                         "train.epochs=3", "train.steps_per_epoch=5",
                         "train.optimizer=adamw", "train.learning_rate=0.003",
                         "train.clip_norm=10", "train.backup_every=0",
                         "train.checkpoint_every=0")
    summary = train(config, output_dir=str(tmp_path / "run"), verbose=0,
                    evaluate=False)
    losses = summary["history"]["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
