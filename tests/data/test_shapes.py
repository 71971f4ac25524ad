import argparse
import hashlib
import json

import numpy as np

from orienmask_tf.data import coco
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
    parser = argparse.ArgumentParser()
    shapes.add_parser(parser.add_subparsers())
    args = parser.parse_args(["make-shapes", "--out", str(tmp_path),
                              "--num-train", "2", "--num-val", "1",
                              "--image-size", "32", "48"])
    assert args.func(args) == 0
    assert (tmp_path / "annotations" / "instances_val.json").exists()
    assert len(list((tmp_path / "train").glob("*.jpg"))) == 2
    assert "instances_train.json" in capsys.readouterr().out
