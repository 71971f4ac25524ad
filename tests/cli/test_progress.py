"""Progress bars (stderr) on make-shapes and prepare-data; off with
--quiet."""

from orienmask_tf import cli
from tests import testing

TINY_COCO = testing.TESTS_DIR / "fixtures" / "tiny_coco"


def _shapes(folder, *extra):
    return ["make-shapes", "--output", str(folder), "--num-train", "3",
            "--num-val", "2", "--image-size", "32", "48", *extra]


def test_make_shapes_bars_and_quiet(tmp_path, capsys):
    assert cli.main(_shapes(tmp_path / "a")) == 0
    out = capsys.readouterr()
    assert "train: 100%" in out.err and "3/3" in out.err
    assert "val: 100%" in out.err and "2/2" in out.err
    assert "\r" not in out.out  # stdout keeps the result lines only
    assert "instances_train.json" in out.out
    for argv in (["--quiet"] + _shapes(tmp_path / "b"),
                 _shapes(tmp_path / "c", "--quiet")):
        assert cli.main(argv) == 0
        out = capsys.readouterr()
        assert out.err == "" and "instances_val.json" in out.out
    # The same bytes either way.
    assert (tmp_path / "a" / "train" / "000002.jpg").read_bytes() == (
        tmp_path / "b" / "train" / "000002.jpg").read_bytes()


def test_prepare_data_bar_and_quiet(tmp_path, capsys):
    argv = ["prepare-data", "--annotations",
            str(TINY_COCO / "instances.json"), "--images",
            str(TINY_COCO / "images"), "--num-shards", "1", "--output"]
    assert cli.main(argv + [str(tmp_path / "loud")]) == 0
    assert "loud: 100%" in capsys.readouterr().err
    assert cli.main(["--quiet"] + argv + [str(tmp_path / "quiet")]) == 0
    out = capsys.readouterr()
    assert "100%" not in out.err and "wrote 3 images" in out.out
