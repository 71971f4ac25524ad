import cv2
import numpy as np
import pytest

from orienmask_tf.data import augment
from orienmask_tf.data import coco
from orienmask_tf.data import shapes
from orienmask_tf.families.orienmask import augment as orienmask_augment
from orienmask_tf.families.yolact import augment as yolact_augment
from tests.testing import TESTS_DIR

TINY = TESTS_DIR / "fixtures" / "tiny_coco"

NO_JITTER = dict(brightness=0, contrast=0, saturation=0, hue=0)
NO_DISTORTION = dict(brightness_delta=0.0, contrast_range=(1.0, 1.0),
                     saturation_range=(1.0, 1.0), hue_delta=0.0)
LEVELS = (40, 80, 120, 160, 200, 240)  # gray levels: survive channel swaps


def painted_example(seed, height=90, width=120, crowd=True):
    """Image whose pixels encode the instance under them (gray level)."""
    rng = np.random.default_rng(seed)
    image, instances = shapes.make_image(rng, height, width, mean_instances=5,
                                         max_instances=len(LEVELS),
                                         crowd_probability=0.0)
    image = np.full((height, width, 3), 10, np.uint8)
    masks, classes = [], []
    for k, (label, mask, _) in enumerate(instances):
        image[mask > 0] = LEVELS[k]
        masks.append(mask)
        classes.append(k)  # class k <-> gray level k
    masks = (np.stack(masks) if masks
             else np.zeros((0, height, width), np.uint8))
    crowd_mask = np.zeros((height, width), np.uint8)
    if crowd:
        crowd_mask[: height // 6, : width // 6] = 1
        crowd_mask &= ~masks.any(0) if len(masks) else 1
        image[crowd_mask > 0] = 250
    return image, masks, np.asarray(classes, np.int32), crowd_mask


def orienmask_train(size=(64, 96), **kwargs):
    return orienmask_augment.OrienMaskTrainTransform(size, **{**NO_JITTER, **kwargs})


def yolact_train(size=(64, 96), **kwargs):
    return yolact_augment.YolactTrainTransform(size, **{**NO_DISTORTION, **kwargs})


def to_gray_0_255(out, recipe):
    image = out["image"]
    if recipe == "yolact":
        image = image * yolact_augment.YOLACT_STD + yolact_augment.YOLACT_MEAN
    else:
        image = image * 255.0
    return image


def check_invariants(out, size):
    h, w = size
    n = len(out["classes"])
    assert out["image"].shape == (h, w, 3)
    assert out["image"].dtype == np.float32
    assert out["masks"].shape == (n, h, w) and out["masks"].dtype == np.uint8
    assert out["boxes"].shape == (n, 4) and out["boxes_xyxy"].shape == (n, 4)
    assert out["crowd_mask"].shape == (h, w)
    for mask, box, cxcywh in zip(out["masks"], out["boxes_xyxy"],
                                 out["boxes"]):
        ys, xs = np.nonzero(mask)
        assert len(ys) > 0  # empty instances are dropped
        # Each box is the tight box of its mask, in pixel-edge coordinates.
        np.testing.assert_array_equal(
            box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
        np.testing.assert_allclose(
            cxcywh, [(box[0] + box[2]) / 2 / w, (box[1] + box[3]) / 2 / h,
                     (box[2] - box[0]) / w, (box[3] - box[1]) / h], atol=1e-6)


def check_alignment(out, recipe):
    """Every instance's mask lies on pixels of its own gray level."""
    gray = to_gray_0_255(out, recipe).mean(-1)
    for mask, label in zip(out["masks"], out["classes"]):
        inner = cv2.erode(mask, np.ones((3, 3), np.uint8))
        if inner.sum() < 12:
            continue
        values = gray[inner > 0]
        assert np.median(np.abs(values - LEVELS[label])) < 2.0, label
        assert np.mean(np.abs(values - LEVELS[label]) < 8) > 0.95
    crowd = cv2.erode(out["crowd_mask"], np.ones((3, 3), np.uint8))
    if crowd.sum() >= 4:
        assert np.median(gray[crowd > 0]) > 240


@pytest.mark.parametrize("recipe", ["orienmask", "yolact"])
def test_image_masks_boxes_stay_aligned_over_many_seeds(recipe):
    make = orienmask_train if recipe == "orienmask" else yolact_train
    transform = make(min_box_size=1.0) if recipe == "orienmask" else make(
        min_gt_size=0.0)
    seen = 0
    for seed in range(60):
        image, masks, classes, crowd = painted_example(seed)
        out = transform(image, masks, classes, crowd,
                        np.random.default_rng(seed))
        check_invariants(out, (64, 96))
        check_alignment(out, recipe)
        seen += len(out["classes"])
    assert seen > 100


@pytest.mark.parametrize("recipe", ["orienmask", "orienmask_official_order",
                                    "yolact"])
def test_with_photometric_augmentation_geometry_still_holds(recipe):
    transform = (yolact_augment.YolactTrainTransform((64, 64)) if recipe == "yolact"
                 else orienmask_augment.OrienMaskTrainTransform(
                     (64, 64), jitter_first=recipe != "orienmask"))
    for seed in range(30):
        image, masks, classes, crowd = painted_example(seed)
        out = transform(image, masks, classes, crowd,
                        np.random.default_rng(seed))
        check_invariants(out, (64, 64))
        assert np.isfinite(out["image"]).all()
        if recipe != "yolact":
            assert out["image"].min() >= 0 and out["image"].max() <= 1


@pytest.mark.parametrize("recipe", ["orienmask", "yolact"])
def test_flip_moves_image_masks_and_boxes_together(recipe):
    make = orienmask_train if recipe == "orienmask" else yolact_train
    plain, flipped = make(flip_p=0.0), make(flip_p=1.0)
    for seed in range(10):
        example = painted_example(seed)
        a = plain(*example, np.random.default_rng(seed))
        b = flipped(*example, np.random.default_rng(seed))
        np.testing.assert_array_equal(b["image"], a["image"][:, ::-1])
        np.testing.assert_array_equal(b["masks"], a["masks"][:, :, ::-1])
        np.testing.assert_array_equal(b["crowd_mask"],
                                      a["crowd_mask"][:, ::-1])
        np.testing.assert_array_equal(b["classes"], a["classes"])
        expected = a["boxes_xyxy"].copy()
        expected[:, [0, 2]] = 96 - a["boxes_xyxy"][:, [2, 0]]
        np.testing.assert_array_equal(b["boxes_xyxy"], expected)


def test_orienmask_crop_window_keeps_every_box_partly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        xs = np.sort(rng.uniform(0, 100, (4, 2)), axis=1)
        ys = np.sort(rng.uniform(0, 100, (4, 2)), axis=1)
        boxes = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], -1)
        top, down, left, right = orienmask_augment.orienmask_crop_window(
            boxes, 100, 100, rng)
        assert 0 <= left < right <= 100 and 0 <= top < down <= 100
        # At least 0.8 (= sqrt 0.64) of each box's width/height is kept.
        kept_w = np.minimum(boxes[:, 2], right + 1) - np.maximum(boxes[:, 0],
                                                                 left)
        # Each side cuts at most 1 - 0.8 of a box: 0.6 of it is kept.
        assert np.all(kept_w >= 0.6 * (boxes[:, 2] - boxes[:, 0]) - 1)
        assert right - left + 1 >= 0.6 * 100 - 1


def test_crop_matches_info_mapping():
    """``info`` maps original pixels to input pixels (crop+resize+pad+flip)."""
    transform = orienmask_train(size=(96, 128), crop_p=1.0, warp_p=0.0,
                                pad_p=1.0)
    for seed in range(20):
        image, masks, classes, crowd = painted_example(seed, crowd=False)
        out = transform(image, masks, classes, crowd,
                        np.random.default_rng(seed))
        sy, sx, top, left = out["info"][:4]
        for mask, label in zip(out["masks"], out["classes"]):
            if mask.sum() < 30:
                continue
            ys, xs = np.nonzero(mask)
            oy, ox = (ys + 0.5 - top) / sy, (xs + 0.5 - left) / sx
            inside = (oy >= 1) & (ox >= 1) & (oy < 89) & (ox < 119)
            hit = masks[label][oy[inside].astype(int), ox[inside].astype(int)]
            assert hit.mean() > 0.9


def test_empty_and_degenerate_instances_are_dropped_with_their_masks():
    planes = np.zeros((4, 20, 30), np.uint8)
    planes[0, 2:8, 3:9] = 1       # kept
    planes[1, 5, 10:20] = 1       # 1 pixel high: degenerate at min size 2
    planes[3, 0:4, 0:4] = 1       # crowd plane
    image = np.zeros((20, 30, 3), np.float32)
    out = augment.finalize(image, planes, [7, 8, 9], [1] * 6, min_box_size=2)
    assert out["classes"].tolist() == [7]
    assert out["masks"].shape == (1, 20, 30)
    np.testing.assert_array_equal(out["masks"][0], planes[0])
    np.testing.assert_array_equal(out["boxes_xyxy"], [[3, 2, 9, 8]])
    assert out["crowd_mask"].sum() == 16


def test_instances_cropped_away_are_dropped():
    image = np.full((100, 100, 3), 128, np.uint8)
    masks = np.zeros((2, 100, 100), np.uint8)
    masks[0, 40:60, 40:60] = 1
    masks[1, 97:100, 97:100] = 1  # tiny, centre outside most YOLACT crops
    transform = yolact_train(size=(50, 50), min_gt_size=0.0)
    counts = set()
    for seed in range(40):
        out = transform(image, masks, np.array([0, 1]), None,
                        np.random.default_rng(seed))
        check_invariants(out, (50, 50))
        counts.add(len(out["classes"]))
    assert counts >= {1, 2}


def test_yolact_drops_boxes_smaller_than_4_pixels():
    image = np.zeros((40, 40, 3), np.uint8)
    masks = np.zeros((2, 40, 40), np.uint8)
    masks[0, 5:20, 5:20] = 1
    masks[1, 30:33, 30:38] = 1  # 3 px high
    out = yolact_augment.YolactEvalTransform((40, 40))(image, masks, [0, 1], None)
    assert len(out["classes"]) == 2  # eval keeps it
    t = yolact_augment.YolactTrainTransform((40, 40), expand_p=0.0, min_ious=())
    out = t(image, masks, np.array([0, 1]), None, np.random.default_rng(0))
    assert out["classes"].tolist() == [0]


def test_seeded_and_reproducible():
    example = painted_example(3)
    for transform in (orienmask_augment.OrienMaskTrainTransform((64, 64)),
                      yolact_augment.YolactTrainTransform((64, 64))):
        a = transform(*example, np.random.default_rng(11))
        b = transform(*example, np.random.default_rng(11))
        c = transform(*example, np.random.default_rng(12))
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a["image"], c["image"])


def test_eval_transforms_match_the_official_resize():
    ds = coco.load_coco(TINY / "instances.json", TINY / "images")
    ex = ds.load_example(0)
    out = orienmask_augment.OrienMaskEvalTransform((96, 128))(
        ex["image"], ex["masks"], ex["classes"], ex["crowd_mask"])
    expected = cv2.resize(ex["image"].astype(np.float32), (128, 96)) / 255
    np.testing.assert_allclose(out["image"], expected, atol=1e-6)
    np.testing.assert_array_equal(
        out["masks"][0], cv2.resize(ex["masks"][0], (128, 96),
                                    interpolation=cv2.INTER_NEAREST))
    np.testing.assert_allclose(out["info"], [2, 2, 0, 0, 48, 64])
    out = yolact_augment.YolactEvalTransform((96, 128))(
        ex["image"], ex["masks"], ex["classes"], ex["crowd_mask"])
    np.testing.assert_allclose(
        out["image"], (expected * 255 - yolact_augment.YOLACT_MEAN)
        / yolact_augment.YOLACT_STD, atol=1e-4)


def test_color_jitter_official_ranges():
    image = np.random.default_rng(0).uniform(0, 255, (20, 30, 3)).astype(
        np.float32)
    for seed in range(20):
        out = augment.color_jitter(image.copy(), np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
    # brightness only: x * b with b in [0.8, 1.2].
    out = augment.color_jitter(image.copy(), np.random.default_rng(1), 0.2,
                               0, 0, 0)
    ratio = (out / np.maximum(image, 1e-3))[image < 200]
    assert 0.8 <= ratio.mean() <= 1.2 and ratio.std() < 1e-3


def test_unknown_recipe():
    from orienmask_tf.config import ConfigError
    from orienmask_tf.config import load_config

    with pytest.raises(ConfigError, match="data.recipe: 'mosaic' does not"):
        load_config(None, ["data.recipe=mosaic"])
