import json
import logging
import re

import cv2
import numpy as np
import pytest

from orienmask_tf.data import coco
from tests.testing import TESTS_DIR

TINY = TESTS_DIR / "fixtures" / "tiny_coco"
ANNOTATIONS = TINY / "instances.json"
IMAGES = TINY / "images"


def _tiny_json():
    return json.loads(ANNOTATIONS.read_text())


def _write(tmp_path, data):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_tiny_fixture_polygons_rle_crowd_and_empty_image():
    ds = coco.load_coco(ANNOTATIONS, IMAGES)
    assert len(ds) == 3 and ds.num_empty == 1
    assert ds.category_ids == [3, 7] and ds.class_names == ["box", "blob"]
    assert not ds.skipped
    a, b, c = (ds.load_example(i) for i in range(3))
    # Polygon instances; the crowd annotation (id 103) is an ignore region.
    assert a["image"].shape == (48, 64, 3) and a["image"].dtype == np.uint8
    assert a["masks"].shape == (2, 48, 64)
    assert a["classes"].tolist() == [0, 1]
    assert a["ann_ids"].tolist() == [101, 102]
    assert a["crowd_mask"].sum() == 180
    assert a["crowd_mask"][36:46, 2:20].all()
    assert a["masks"][0].sum() == 480 and a["masks"][0][6:30, 4:24].all()
    # Compressed RLE and a two-part polygon.
    assert b["masks"].shape == (2, 40, 56)
    assert b["classes"].tolist() == [1, 0]
    assert b["masks"][1][2:12, 40:52].all()
    assert b["masks"][1][28:38, 44:54].all()
    assert b["crowd_mask"].sum() == 0
    # Image without annotations.
    assert c["masks"].shape == (0, 32, 32) and c["classes"].shape == (0,)
    # Image pixels and masks line up: the red rectangle is under mask 0.
    assert a["image"][10:26, 8:20, 0].min() > 200


def test_skip_empty_images():
    ds = coco.load_coco(ANNOTATIONS, IMAGES, skip_empty=True)
    assert [r["file_name"] for r in ds.records] == ["a.jpg", "b.png"]


def test_decode_grayscale_rgba_cmyk_and_exif(tmp_path):
    gray = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    ok, data = cv2.imencode(".png", gray)
    image = coco.decode_image(data.tobytes(), "gray.png")
    assert image.shape == (12, 20, 3)
    np.testing.assert_array_equal(image[..., 0], gray)
    rgba = np.zeros((10, 14, 4), np.uint8)
    rgba[..., 2] = 255  # red in BGRA
    rgba[..., 3] = 7
    ok, data = cv2.imencode(".png", rgba)
    image = coco.decode_image(data.tobytes(), "rgba.png")
    assert image.shape == (10, 14, 3)
    assert (image[..., 0] == 255).all() and (image[..., 1:] == 0).all()
    # CMYK JPEG (written by Pillow): left half red, right half blue.
    image = coco.read_image(IMAGES / "cmyk.jpg")
    assert image.shape == (16, 24, 3)
    assert image[:, :10, 0].min() > 200 and image[:, :10, 2].max() < 50
    assert image[:, 14:, 2].min() > 200 and image[:, 14:, 0].max() < 50
    # EXIF orientation 6: stored 16x24, displayed 24x16 rotated clockwise.
    image = coco.read_image(IMAGES / "exif6.jpg")
    assert image.shape == (24, 16, 3)
    assert image[:10, :, 0].min() > 200 and image[14:, :, 2].min() > 200
    # The annotation frame wins when it matches the stored pixels.
    image = coco.read_image(IMAGES / "exif6.jpg", expected_size=(16, 24))
    assert image.shape == (16, 24, 3) and image[:, :10, 0].min() > 200
    with pytest.raises(coco.CocoError, match="exif6.jpg.*differs"):
        coco.read_image(IMAGES / "exif6.jpg", expected_size=(30, 30))


# ---------------------------------------------------------------- bad input


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(coco.CocoError, match="broken.json: malformed JSON"):
        coco.load_coco(path, IMAGES)
    path.write_text('{"images": {}, "annotations": [], "categories": []}')
    with pytest.raises(coco.CocoError, match="broken.json.*'images'"):
        coco.load_coco(path, IMAGES, on_error="skip")
    with pytest.raises(coco.CocoError, match="cannot read"):
        coco.load_coco(tmp_path / "missing.json", IMAGES)


@pytest.mark.parametrize("kind, edit, match", [
    ("unknown_category",
     lambda a: a.update(category_id=99), "unknown category_id 99"),
    ("zero_area",
     lambda a: a.update(segmentation=[[5, 5, 20, 5, 30, 5]]),
     "zero area"),
    ("zero_area",
     lambda a: a.update(segmentation=[[5, 5, 20, 5]]), "2 points"),
    ("outside_image",
     lambda a: a.update(segmentation=[[100, 100, 120, 100, 120, 130]]),
     "outside|spans"),
    ("malformed",
     lambda a: a.update(segmentation="nope"), "neither polygons nor RLE"),
    ("zero_area", lambda a: a.update(bbox=[5, 5, -3, 10]),
     r"width or height <= 0"),
    ("outside_image", lambda a: a.update(bbox=[50, 5, 100, 10]),
     r"bbox .* leaves the"),
    ("malformed", lambda a: a.update(bbox=[1, 2, 3]),
     r"is not \[x, y, width, height\]"),
])
def test_bad_annotation_raises_or_is_skipped(tmp_path, caplog, kind, edit,
                                             match):
    data = _tiny_json()
    edit(data["annotations"][1])  # id 102 on a.jpg
    path = _write(tmp_path, data)
    with pytest.raises(coco.CocoError) as info:
        coco.load_coco(path, IMAGES)
    message = str(info.value)
    assert str(path) in message and "annotation id 102" in message
    assert "a.jpg" in message
    assert re.search(match, message)
    with caplog.at_level(logging.WARNING):
        ds = coco.load_coco(path, IMAGES, on_error="skip")
    assert ds.skipped[kind] == 1 and sum(ds.skipped.values()) == 1
    assert "annotation id 102" in caplog.text
    assert [a["id"] for a in ds.records[0]["annotations"]] == [101, 103]
    assert ds.load_example(0)["masks"].shape[0] == 1


def test_slight_overflow_is_clipped_not_an_error(tmp_path):
    data = _tiny_json()
    data["annotations"][0]["segmentation"] = [[-1, -1, 65, -1, 65, 10, -1, 10]]
    ds = coco.load_coco(_write(tmp_path, data), IMAGES)
    mask = ds.load_example(0)["masks"][0]
    assert mask[:10].all() and mask.sum() == 64 * 10


def test_rle_of_the_wrong_size_is_outside_the_image(tmp_path):
    data = _tiny_json()
    data["annotations"][3]["segmentation"]["size"] = [41, 56]
    path = _write(tmp_path, data)
    with pytest.raises(coco.CocoError, match="annotation id 201.*RLE size"):
        coco.load_coco(path, IMAGES)


def test_unknown_image_id(tmp_path):
    data = _tiny_json()
    data["annotations"][0]["image_id"] = 42
    path = _write(tmp_path, data)
    with pytest.raises(coco.CocoError, match="annotation id 101.*image_id 42"):
        coco.load_coco(path, IMAGES)
    assert coco.load_coco(path, IMAGES, on_error="skip").skipped[
        "unknown_image"] == 1


def test_missing_image(tmp_path):
    data = _tiny_json()
    data["images"][1]["file_name"] = "nowhere.png"
    path = _write(tmp_path, data)
    with pytest.raises(coco.CocoError, match="nowhere.png: image file not "
                                             "found.*image id 2"):
        coco.load_coco(path, IMAGES)
    ds = coco.load_coco(path, IMAGES, on_error="skip")
    assert ds.skipped["missing_image"] == 1 and len(ds) == 2


def test_corrupt_image(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (images / name).write_bytes((IMAGES / name).read_bytes())
    (images / "b.png").write_bytes(b"\x89PNG not really")
    ds = coco.load_coco(ANNOTATIONS, images)
    with pytest.raises(coco.CocoError, match="b.png: cannot decode image"):
        ds.load_example(1)
    ds = coco.load_coco(ANNOTATIONS, images, on_error="skip")
    assert ds.load_example(1) is None and ds.skipped["corrupt_image"] == 1
    assert ds.load_example(0) is not None
    # A truncated JPEG is also corrupt.
    (images / "c.jpg").write_bytes((IMAGES / "c.jpg").read_bytes()[:20])
    with pytest.raises(coco.CocoError, match="c.jpg"):
        coco.load_coco(ANNOTATIONS, images).load_example(2)


def test_image_size_mismatch_names_the_file(tmp_path):
    data = _tiny_json()
    data["images"][0]["height"] = 50
    for ann in data["annotations"]:
        if ann["image_id"] == 1 and ann["iscrowd"]:
            ann["segmentation"]["size"] = [50, 64]
            ann["segmentation"]["counts"] = [50 * 64]
    ds = coco.load_coco(_write(tmp_path, data), IMAGES, on_error="skip")
    with pytest.raises(coco.CocoError, match="a.jpg: decoded size"):
        coco.CocoDataset.read_image(ds, 0)
