import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import DataConfig
from orienmask_tf.config import load_config
from orienmask_tf.data import coco
from orienmask_tf.data import pipeline
from orienmask_tf.data import shapes
from orienmask_tf.cli import build_parser
from orienmask_tf.data import tfrecord
from tests.testing import CONFIGS_DIR
from tests.testing import TESTS_DIR

TINY = TESTS_DIR / "fixtures" / "tiny_coco"


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    shapes.make_shapes(out, 12, 5, (72, 100), seed=1)
    return out


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIGS_DIR / "tiny.yaml",
                       ["model.num_classes=5", "train.batch_size=4"])


def data_config(root, **kwargs):
    return DataConfig(
        train_annotations=str(root / "annotations/instances_train.json"),
        train_images=str(root / "train"),
        val_annotations=str(root / "annotations/instances_val.json"),
        val_images=str(root / "val"), max_instances=6, **kwargs)


def test_static_shapes_and_padding(shapes_dir, config):
    ds = pipeline.build_dataset(config, "train", data=data_config(shapes_dir))
    spec_images, spec_gt = ds.element_spec
    assert spec_images.shape == (4, 64, 96, 3)
    assert spec_gt["masks"].shape == (4, 6, 64, 96)
    assert spec_gt["boxes"].shape == (4, 6, 4)
    assert spec_gt["classes"].shape == (4, 6)
    assert spec_gt["num_instances"].shape == (4,)
    assert spec_gt["crowd_mask"].shape == (4, 64, 96)
    for images, gt in ds.take(3):
        n = gt["num_instances"].numpy()
        assert (n <= 6).all()
        classes = gt["classes"].numpy()
        masks = gt["masks"].numpy()
        boxes = gt["boxes_xyxy"].numpy()
        for b in range(4):
            assert (classes[b, :n[b]] >= 0).all()
            assert (classes[b, n[b]:] == -1).all()
            assert masks[b, n[b]:].sum() == 0
            assert (gt["boxes"].numpy()[b, n[b]:] == 0).all()
            for k in range(n[b]):
                ys, xs = np.nonzero(masks[b, k])
                np.testing.assert_array_equal(
                    boxes[b, k], [xs.min(), ys.min(), xs.max() + 1,
                                  ys.max() + 1])
        assert 0.0 <= images.numpy().min() and images.numpy().max() <= 1.0


def test_deterministic_mode_repeats(shapes_dir, config):
    data = data_config(shapes_dir, deterministic=True, seed=5)
    a = [x for x in pipeline.build_dataset(config, "train", data=data).take(2)]
    b = [x for x in pipeline.build_dataset(config, "train", data=data).take(2)]
    for (ia, ga), (ib, gb) in zip(a, b):
        np.testing.assert_array_equal(ia.numpy(), ib.numpy())
        np.testing.assert_array_equal(ga["masks"].numpy(), gb["masks"].numpy())
    c = [x for x in pipeline.build_dataset(
        config, "train", data=dataclasses.replace(data, seed=6)).take(1)]
    assert not np.array_equal(a[0][0].numpy(), c[0][0].numpy())


def test_start_batch_continues_the_stream(shapes_dir, config):
    """A resumed run (start_batch = its global step) sees the batches the
    uninterrupted run would have seen next: same images, augmentation and
    targets, across the epoch boundary of the repeated stream."""
    data = data_config(shapes_dir, deterministic=True, seed=2)
    whole = list(pipeline.build_dataset(config, "train", data=data).take(5))
    rest = list(pipeline.build_dataset(config, "train", data=data,
                                       start_batch=3).take(2))
    for (ia, ga), (ib, gb) in zip(whole[3:], rest):
        np.testing.assert_array_equal(ia.numpy(), ib.numpy())
        np.testing.assert_array_equal(ga["masks"].numpy(), gb["masks"].numpy())
        np.testing.assert_array_equal(ga["image_id"].numpy(),
                                      gb["image_id"].numpy())
    assert not np.array_equal(whole[0][0].numpy(), rest[0][0].numpy())
    with pytest.raises(ValueError, match="training stream"):
        pipeline.build_dataset(config, "val", data=data, start_batch=1)


def test_sharding_and_per_replica_batch(shapes_dir, config):
    data = data_config(shapes_dir, deterministic=True)
    ids = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id,
            num_replicas_in_sync=2)
        ds = pipeline.build_dataset(config, "val", input_context=context,
                                    data=data)
        batches = list(ds)
        assert all(images.shape[0] <= 2 for images, _ in batches)
        ids.append({int(i) for _, gt in batches
                    for i in gt["image_id"].numpy()})
        train = pipeline.build_dataset(config, "train",
                                       input_context=context, data=data)
        assert train.element_spec[0].shape[0] == 2  # 4 global / 2 replicas
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(range(1, 6))


def test_encoder_hook_runs_in_the_pipeline(shapes_dir, config):
    encoder = config.family.make_encoder(config)
    ds = pipeline.build_dataset(config, "train", data=data_config(shapes_dir),
                                encoder=encoder)
    images, targets = next(iter(ds))
    assert images.shape == (4, 64, 96, 3)
    assert targets["cls_targets_s8"].shape == (4, 3, 8, 12)
    assert targets["orien_targets_s32"].shape == (4, 3, 2, 64, 96)
    assert targets["gt_boxes"].shape == (4, 6, 4)
    assert (targets["cls_targets_s8"].numpy() >= 0).sum() + (
        targets["cls_targets_s16"].numpy() >= 0).sum() + (
        targets["cls_targets_s32"].numpy() >= 0).sum() > 0
    seen = {}

    def spy(gt):
        seen.update(gt)
        return {"n": gt["num_instances"]}

    ds = pipeline.build_dataset(config, "train", data=data_config(shapes_dir),
                                encoder=spy)
    assert next(iter(ds))[1]["n"].shape == (4,)
    assert set(seen) == set(pipeline.GT_KEYS)
    # The encoder gets the masks unpadded, every other key padded.
    assert seen["masks"].shape.as_list() == [None, 64, 96]
    assert seen["classes"].shape.as_list() == [6]


def test_eval_split_keeps_every_image_and_its_info(shapes_dir, config):
    ds = pipeline.build_dataset(config, "val", data=data_config(shapes_dir))
    infos = np.concatenate([gt["image_info"].numpy() for _, gt in ds])
    assert len(infos) == 5
    np.testing.assert_allclose(infos[0], [64 / 72, 96 / 100, 0, 0, 72, 100])


def test_yolact_recipe(shapes_dir):
    # The augmentation recipe is the model family's.
    config = load_config(CONFIGS_DIR / "yolact_tiny.yaml", [
        "model.num_classes=5", "train.batch_size=4", "image_size=[64,96]"])
    data = data_config(shapes_dir, recipe="yolact")
    images, gt = next(iter(pipeline.build_dataset(config, "train", data=data)))
    assert images.shape == (4, 64, 96, 3)
    assert images.numpy().min() < 0  # mean/std normalized


def test_tfrecords_give_the_same_raw_examples(tmp_path):
    ds = coco.load_coco(TINY / "instances.json", TINY / "images")
    result = tfrecord.write_tfrecords(ds, tmp_path / "tiny", num_shards=2,
                                      progress=False)
    assert result["images"] == 3 and len(result["files"]) == 2
    seen = set()
    for serialized in tfrecord.record_dataset(str(tmp_path / "tiny-*")):
        f = {k: v.numpy() for k, v in
             tfrecord.parse_record(serialized).items()}
        raw = tfrecord.raw_example(
            f["image/encoded"], f["image/height"], f["image/width"],
            f["image/filename"], f["object/rle"], f["object/label"],
            f["object/is_crowd"], f["image/id"])
        index = [r["image_id"] for r in ds.records].index(raw["image_id"])
        ref = ds.load_example(index)
        for key in ("image", "masks", "classes", "crowd_mask"):
            np.testing.assert_array_equal(raw[key], ref[key])
        seen.add(raw["image_id"])
    assert seen == {1, 2, 3}


def test_tfrecord_pipeline(shapes_dir, config, tmp_path):
    train = coco.load_coco(shapes_dir / "annotations/instances_train.json",
                           shapes_dir / "train")
    tfrecord.write_tfrecords(train, tmp_path / "train", 3, progress=False)
    data = dataclasses.replace(data_config(shapes_dir),
                               train_tfrecords=str(tmp_path / "train-*"))
    images, gt = next(iter(pipeline.build_dataset(config, "train", data=data)))
    assert images.shape == (4, 64, 96, 3) and gt["masks"].shape[1] == 6


def test_corrupt_image_in_the_pipeline(tmp_path, config):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (images / name).write_bytes((TINY / "images" / name).read_bytes())
    (images / "a.jpg").write_bytes(b"garbage")
    data = DataConfig(val_annotations=str(TINY / "instances.json"),
                               val_images=str(images), max_instances=4)
    ds = pipeline.build_dataset(config, "val", data=data)
    with pytest.raises(tf.errors.OpError, match="a.jpg: cannot decode"):
        list(ds)
    ds = pipeline.build_dataset(
        config, "val", data=dataclasses.replace(data, on_error="skip"))
    ids = sorted(int(i) for _, gt in ds for i in gt["image_id"].numpy())
    assert ids == [2, 3]
    # The same through TFRecords written without verification.
    loaded = coco.load_coco(TINY / "instances.json", images)
    tfrecord.write_tfrecords(loaded, tmp_path / "val", 1, verify=False,
                             progress=False)
    data = dataclasses.replace(data, val_tfrecords=str(tmp_path / "val-*"))
    with pytest.raises(tf.errors.OpError, match="a.jpg: cannot decode"):
        list(pipeline.build_dataset(config, "val", data=data))
    ds = pipeline.build_dataset(
        config, "val", data=dataclasses.replace(data, on_error="skip"))
    assert sorted(int(i) for _, gt in ds for i in gt["image_id"].numpy()) \
        == [2, 3]


def test_prepare_data_verifies_images(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (images / name).write_bytes((TINY / "images" / name).read_bytes())
    (images / "c.jpg").write_bytes(b"\xff\xd8 truncated")
    parser = build_parser()
    argv = ["prepare-data", "--annotations", str(TINY / "instances.json"),
            "--images", str(images), "--output", str(tmp_path / "out/val"),
            "--num-shards", "2"]
    args = parser.parse_args(argv)
    with pytest.raises(coco.CocoError, match="c.jpg: cannot decode"):
        args.func(args)
    args = parser.parse_args(argv + ["--on-error", "skip"])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "wrote 2 images to 2 shards" in captured.out
    assert "corrupt_image: 1" in captured.out
    assert "2/3" in captured.err or "3/3" in captured.err  # progress bar


def test_missing_split_paths(config):
    with pytest.raises(ValueError, match="data.train_annotations"):
        pipeline.build_dataset(config, "train", data=DataConfig())
    with pytest.raises(ValueError, match="split"):
        pipeline.build_dataset(config, "test", data=DataConfig())


def test_tiny_fixture_with_crowd_and_an_empty_image_through_the_encoder():
    config = load_config(CONFIGS_DIR / "tiny.yaml",
                         ["model.num_classes=2", "train.batch_size=3"])
    data = DataConfig(train_annotations=str(TINY / "instances.json"),
                               train_images=str(TINY / "images"),
                               max_instances=4, deterministic=True)
    ds = pipeline.build_dataset(config, "train", data=data)
    images, gt = next(iter(ds))
    counts = sorted(gt["num_instances"].numpy().tolist())
    assert counts[0] == 0 and counts[-1] <= 2  # the empty image c.jpg
    assert gt["crowd_mask"].numpy().sum() > 0  # a.jpg's crowd region
    ds = pipeline.build_dataset(config, "train", data=data,
                                encoder=config.family.make_encoder(config))
    for images, targets in ds.take(3):
        assert np.isfinite(targets["box_targets_s8"].numpy()).all()


def test_skip_empty_drops_training_images_without_annotations(tmp_path):
    # data.skip_empty = mmdet filter_empty_gt: c.jpg (no annotation) leaves
    # the training stream, JSON or TFRecords; validation keeps it.
    config = load_config(CONFIGS_DIR / "tiny.yaml",
                         ["model.num_classes=2", "train.batch_size=3"])
    assert not config.data.skip_empty            # OrienMask keeps them
    data = DataConfig(train_annotations=str(TINY / "instances.json"),
                      train_images=str(TINY / "images"),
                      val_annotations=str(TINY / "instances.json"),
                      val_images=str(TINY / "images"), max_instances=4,
                      deterministic=True, skip_empty=True)
    loaded = coco.load_coco(TINY / "instances.json", TINY / "images")
    tfrecord.write_tfrecords(loaded, tmp_path / "tiny", 1, progress=False)
    for source in (data, dataclasses.replace(
            data, train_tfrecords=str(tmp_path / "tiny-*"))):
        ds = pipeline.build_dataset(config, "train", data=source)
        ids = {int(i) for _, gt in ds.take(4) for i in gt["image_id"]}
        assert ids == {1, 2}
    val = pipeline.build_dataset(config, "val", data=data)
    assert sorted(int(i) for _, gt in val for i in gt["image_id"]) == [1, 2, 3]


def test_with_annotations_only_keeps_crowd_only_images(tmp_path):
    # mmdet's _filter_imgs keeps an image with any annotation, crowd ones
    # included (its instances are then empty).
    import json
    spec = json.loads((TINY / "instances.json").read_text())
    crowd = dict(next(a for a in spec["annotations"] if a.get("iscrowd")),
                 id=999, image_id=3, bbox=[2, 2, 8, 8], area=64.0,
                 segmentation=[[2, 2, 10, 2, 10, 10, 2, 10]])
    spec["annotations"].append(crowd)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(spec))
    full = coco.load_coco(path, TINY / "images")
    assert full.with_annotations_only() is full
    plain = coco.load_coco(TINY / "instances.json", TINY / "images")
    subset = plain.with_annotations_only()
    assert [r["image_id"] for r in subset.records] == [1, 2]
    assert len(plain) == 3 and subset.num_empty == 0
