import glob
import json
import os
import shutil

import pytest

from orienmask_tf import cli
from orienmask_tf.config import DataConfig
from orienmask_tf.config import load_config
from orienmask_tf.data import coco
from orienmask_tf.data import pipeline
from orienmask_tf.data import tfrecord
from tests.testing import CONFIGS_DIR
from tests.testing import TESTS_DIR

TINY = TESTS_DIR / "fixtures" / "tiny_coco"


def _images(tmp_path, corrupt=None):
    """A copy of the tiny COCO images, ``corrupt`` overwritten."""
    folder = tmp_path / "images"
    shutil.copytree(TINY / "images", folder)
    if corrupt:
        (folder / corrupt).write_bytes(b"not an image")
    return folder


def _shards(prefix):
    return sorted(glob.glob(f"{prefix}-*"))


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("orienmask-tf ")
    return err[0]


def test_failed_prepare_data_leaves_no_shard_and_no_manifest(tmp_path,
                                                            capsys):
    # c.jpg is the last of the 3 images: the failure comes after the other
    # shards were written to.
    images = _images(tmp_path, corrupt="c.jpg")
    prefix = tmp_path / "out" / "train"
    code = cli.main(["prepare-data", "--annotations",
                     str(TINY / "instances.json"), "--images", str(images),
                     "--output", str(prefix), "--num-shards", "2",
                     "--quiet"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "c.jpg" in line and "decode" in line
    assert _shards(prefix) == []  # no shard, temporary or final
    assert os.listdir(tmp_path / "out") == []


def test_manifest_lists_every_shard(tmp_path):
    loaded = coco.load_coco(TINY / "instances.json", TINY / "images")
    result = tfrecord.write_tfrecords(loaded, tmp_path / "tiny", 2,
                                      progress=False)
    manifest = json.loads(open(result["manifest"]).read())
    assert [s["file"] for s in manifest["shards"]] == [
        os.path.basename(f) for f in result["files"]]
    assert sum(s["records"] for s in manifest["shards"]) == 3
    for entry, path in zip(manifest["shards"], result["files"]):
        assert entry["bytes"] == os.path.getsize(path)
        assert entry["sha256"] == tfrecord._sha256_file(path)
    tfrecord.check_shards(result["files"], checksums=True)
    # A rerun with fewer shards removes the two old ones.
    result = tfrecord.write_tfrecords(loaded, tmp_path / "tiny", 1,
                                      progress=False)
    assert [p for p in _shards(tmp_path / "tiny")
            if p.endswith(".tfrecord")] == result["files"]
    assert len(tfrecord.record_files(str(tmp_path / "tiny-*"))) == 1


@pytest.mark.parametrize("damage", ["no_manifest", "truncated", "unlisted",
                                    "missing", "bad_manifest"])
def test_readers_refuse_incomplete_shards(tmp_path, damage):
    loaded = coco.load_coco(TINY / "instances.json", TINY / "images")
    result = tfrecord.write_tfrecords(loaded, tmp_path / "val", 2,
                                      progress=False)
    first, second = result["files"]
    if damage == "no_manifest":  # killed between the renames and the manifest
        os.remove(result["manifest"])
        expected = "have no prepare-data manifest"
    elif damage == "truncated":
        with open(second, "r+b") as stream:
            stream.truncate(os.path.getsize(second) // 2)
        expected = "val-00001-of-00002.tfrecord has"
    elif damage == "unlisted":
        shutil.copy(first, tmp_path / "val-00000-of-00003.tfrecord")
        expected = "val-00000-of-00003.tfrecord is not in val-manifest.json"
    elif damage == "missing":
        os.remove(second)
        expected = "val-00001-of-00002.tfrecord, listed in val-manifest.json"
    else:
        open(result["manifest"], "w").write('{"shards": [')
        expected = "unreadable manifest val-manifest.json"
    config = load_config(CONFIGS_DIR / "tiny.yaml", ["model.num_classes=5"])
    data = DataConfig(val_tfrecords=str(tmp_path / "val-*"), max_instances=4)
    with pytest.raises(tfrecord.TFRecordError) as error:
        pipeline.build_dataset(config, "val", data=data)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path}: ") and expected in message
    assert "run prepare-data again" in message


def test_train_refuses_partial_shards_before_building(tmp_path, capsys,
                                                      monkeypatch):
    loaded = coco.load_coco(TINY / "instances.json", TINY / "images")
    result = tfrecord.write_tfrecords(loaded, tmp_path / "train", 1,
                                      progress=False)
    os.remove(result["manifest"])
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--config", str(CONFIGS_DIR / "tiny.yaml"),
                     "--quiet", "--no-eval", "--output", str(tmp_path / "run"),
                     "--set", "data.train_tfrecords=" + str(tmp_path
                                                          / "train-*"),
                     "--set", "train.steps_per_epoch=1"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "have no prepare-data manifest" in line and str(tmp_path) in line
    assert not (tmp_path / "run" / "run.lock").exists()  # released
