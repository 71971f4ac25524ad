import hashlib
import json

import numpy as np

from orienmask_tf.data import coco
from orienmask_tf.cli import build_parser
from orienmask_tf.data import shapes


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    shapes.make_shapes(tmp_path / "a", 4, 2, (48, 64), seed=3)
    shapes.make_shapes(tmp_path / "b", 4, 2, (48, 64), seed=3)
    shapes.make_shapes(tmp_path / "c", 4, 2, (48, 64), seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_coco_like_dataset(tmp_path):
    paths = shapes.make_shapes(tmp_path, 60, 10, (120, 160), seed=0)
    data = json.loads(open(paths["train"]).read())
    anns = data["annotations"]
    assert len(data["images"]) == 60
    assert {c["id"] for c in data["categories"]} == {1, 2, 3, 5, 8}
    assert len({a["category_id"] for a in anns}) == 5
    crowd = [a for a in anns if a["iscrowd"]]
    assert crowd and all(isinstance(a["segmentation"]["counts"], list)
                         for a in crowd)
    kinds = {type(a["segmentation"]).__name__ for a in anns
             if not a["iscrowd"]}
    assert kinds == {"list", "dict"}  # polygons and compressed RLE
    # A spread of sizes, relative to the image (COCO: 41/34/24 % at 640).
    scale = (160 * 120) / (640 * 480)
    area = np.array([a["area"] for a in anns if not a["iscrowd"]]) / scale
    small, large = (area < 32 ** 2).mean(), (area >= 96 ** 2).mean()
    assert 0.2 < small < 0.65 and 0.1 < large < 0.45
    # Occlusion: some visible masks are smaller than their shape's box.
    fill = [a["area"] / (a["bbox"][2] * a["bbox"][3]) for a in anns]
    assert min(fill) < 0.5
    # Several instances per image on average, and the reader takes it all.
    assert 3 < len(anns) / 60 < 10
    for split in ("train", "val"):
        ds = coco.load_coco(paths[split], tmp_path / split)
        assert not ds.skipped
        ex = ds.load_example(0)
        assert ex["image"].shape == (120, 160, 3)


def test_cli_parser(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["make-shapes", "--output", str(tmp_path),
                              "--num-train", "2", "--num-val", "1",
                              "--image-size", "32", "48"])
    assert args.func(args) == 0
    assert (tmp_path / "annotations" / "instances_val.json").exists()
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 2
    assert "instances_train.json" in capsys.readouterr().out


def test_simple_style(tmp_path):
    """The quickstart's style: few large, whole, barely overlapping shapes."""
    from pycocotools import mask as mask_utils

    size = (96, 128)
    paths = shapes.make_shapes(tmp_path, 40, 4, size, seed=0,
                               mean_instances=3, style="simple")
    data = json.loads(open(paths["train"]).read())
    anns = data["annotations"]
    assert "style simple" in data["info"]["description"]
    assert not any(a["iscrowd"] for a in anns)
    assert len({a["category_id"] for a in anns}) == 5
    per_image = np.bincount([a["image_id"] for a in anns], minlength=41)[1:]
    assert per_image.min() >= 1
    assert per_image.max() <= shapes.SIMPLE_MAX_INSTANCES
    side = min(size)
    lo, hi = shapes.SIMPLE_SIZE_RANGE
    for a in anns:
        x, y, w, h = a["bbox"]
        # Whole shapes: inside the image, never clipped by its border
        # (a pixel of rasterisation slack).
        assert x >= 0 and y >= 0 and x + w <= size[1] and y + h <= size[0]
        assert max(w, h) <= 1.75 * hi * side + 2, a  # long ellipses
        # Large: even a triangle of the smallest size keeps ~1/5 of its
        # circumscribed square after at most 10 % occlusion.
        assert a["area"] >= 0.15 * (lo * side) ** 2, a
    # Ellipses are visibly elongated, so that no ellipse is a circle.
    ellipses = [a for a in anns if a["category_id"] == 5]
    assert ellipses
    for a in ellipses:
        rle = mask_utils.frPyObjects(a["segmentation"], *size) \
            if isinstance(a["segmentation"], list) else None
        if rle is None:
            continue
        m = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
        ys, xs = np.nonzero(m)
        eig = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
        assert np.sqrt(eig[1] / eig[0]) > 1.4, a["id"]
    # Everything is readable, and the coco style is still the default.
    ds = coco.load_coco(paths["train"], tmp_path / "train")
    assert not ds.skipped and len(ds) == 40
    other = shapes.make_shapes(tmp_path / "coco", 1, 1, size, seed=0)
    assert "style coco" in json.loads(open(other["val"]).read())["info"][
        "description"]


def test_unknown_style_is_an_error(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="style must be one of"):
        shapes.make_shapes(tmp_path, 1, 1, (32, 32), style="hard")
