"""``predict`` never writes over or among its inputs, and never gives two
inputs the same output name."""

import os

import cv2
import numpy as np
import pytest

import orienmask_tf as om
from orienmask_tf import cli
from orienmask_tf.inference.predict import output_names


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    return str(om.from_preset("tiny", overrides=[
        "model.num_classes=2"]).save(path))


def _image(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3))
    assert cv2.imwrite(str(path), pixels.astype(np.uint8))
    return path


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("orienmask-tf predict: error: ")
    return err[0]


def _tree(root):
    return sorted((os.path.relpath(os.path.join(d, f), root),
                   os.path.getsize(os.path.join(d, f)))
                  for d, _, files in os.walk(root) for f in files)


def test_output_names_keep_relative_paths_and_formats(tmp_path):
    paths = [str(tmp_path / p) for p in (
        "a/x.jpg", "b/x.jpg", "a/x.png", "a/x.bmp", "a/x.bmp.png",
        "a/X.JPG", "a/sub/x.jpeg")]
    out = str(tmp_path / "out")
    names = output_names(paths, out)
    assert [os.path.relpath(n, out) for n in names] == [
        "a/x.jpg", "b/x.jpg", "a/x.png", "a/x.bmp.png",
        "a/x.bmp-2.png",  # x.bmp's drawing took x.bmp.png first
        "a/X-2.JPG",      # same name as a/x.jpg on a case-insensitive disk
        "a/sub/x.jpeg"]
    assert len({n.casefold() for n in names}) == len(names)
    assert output_names(paths, out) == names  # deterministic
    # One folder of inputs: flat names, as before.
    flat = [str(tmp_path / "a" / n) for n in ("p.jpg", "q.png", "r.bmp")]
    assert [os.path.basename(n) for n in output_names(flat, out)] == [
        "p.jpg", "q.png", "r.bmp.png"]
    assert os.path.dirname(output_names(flat, out)[0]) == out


def test_same_stems_get_their_own_drawings(model, tmp_path, capsys):
    root = tmp_path / "in"
    sizes = {"a/x.jpg": (40, 50), "b/x.jpg": (60, 70), "a/x.png": (50, 40),
             "a/x.bmp": (30, 80)}
    for seed, (name, (h, w)) in enumerate(sizes.items()):
        _image(root / name, h, w, seed)
    out = tmp_path / "out"
    assert cli.main(["predict", "--quiet", "--model", model, "--source",
                     str(root / "*" / "x.*"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    expected = {"a/x.jpg": "a/x.jpg", "b/x.jpg": "b/x.jpg",
                "a/x.png": "a/x.png", "a/x.bmp": "a/x.bmp.png"}
    assert sorted(name for name, _ in _tree(out)) == sorted(
        expected.values())
    for source, written in expected.items():
        drawn = cv2.imread(str(out / written))
        assert drawn.shape[:2] == sizes[source]  # its own input's drawing
        assert f"{root / source} -> {out / written} (" in printed


def test_an_output_folder_holding_inputs_is_refused(model, tmp_path, capsys):
    images = tmp_path / "photos"
    for i in range(2):
        _image(images / f"{i}.jpg", 32, 48, i)
    before = _tree(tmp_path)

    # The input folder itself, or a folder above it.
    for output in (images, tmp_path):
        assert cli.main(["predict", "--model", model, "--source",
                         str(images), "--output", str(output)]) == 2
        err = _one_line_error(capsys)
        assert f"--output {output}: holds the input {images / '0.jpg'}" \
            in err and "overwrite or mix with the inputs" in err
    # The same folder named another way (a relative path, a link).
    os.symlink(images, tmp_path / "link")
    assert cli.main(["predict", "--model", model, "--images",
                     str(images / "*.jpg"), "--output",
                     str(tmp_path / "link")]) == 2
    assert "holds the input" in _one_line_error(capsys)
    assert [e for e in _tree(tmp_path) if e[0] != "link"] == before

    # A folder inside the input folder is fine: a folder lists its own
    # images only ...
    drawn = images / "drawn"
    assert cli.main(["predict", "--quiet", "--model", model, "--source",
                     str(images), "--output", str(drawn)]) == 0
    assert sorted(os.listdir(drawn)) == ["0.jpg", "1.jpg"]
    # ... but a recursive pattern now takes the drawings as inputs too.
    assert cli.main(["predict", "--model", model, "--source",
                     str(images / "**" / "*.jpg"), "--output",
                     str(drawn)]) == 2
    assert f"holds the input {drawn / '0.jpg'}" in _one_line_error(capsys)


def test_a_video_inside_the_output_or_a_file_as_output(model, tmp_path,
                                                       capsys):
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5,
                             (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    assert cli.main(["predict", "--model", model, "--source", str(clip),
                     "--output", str(tmp_path)]) == 2
    assert f"holds the input {clip}" in _one_line_error(capsys)
    image = _image(tmp_path / "im" / "a.png", 16, 16)
    assert cli.main(["predict", "--model", model, "--source", str(image),
                     "--output", str(clip)]) == 2
    assert f"--output {clip}: is a file" in _one_line_error(capsys)
    assert cli.main(["predict", "--model", model, "--source",
                     str(tmp_path / "missing.jpg"), "--output",
                     str(tmp_path / "o")]) == 2
    assert "missing.jpg: no such file or folder" in _one_line_error(capsys)


def test_source_and_images_are_one_option(capsys):
    parser = cli.build_parser()
    for flag in ("--source", "--images"):
        args = parser.parse_args(["predict", "--model", "m", flag, "x",
                                  "--output", "o"])
        assert args.source == "x" and args.batch_size == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--model", "m", "--source", "x",
                           "--images", "y", "--output", "o"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["predict", "--model", "m", "--output", "o"])
    assert "one of the arguments --source --images is required" in \
        capsys.readouterr().err
