"""``predict --source`` a video file or a camera: the annotated video keeps
the input's frame count, size, rate and codec family, and the per-frame
JSON holds what the image path detects on the same frames."""

import json
import os

import cv2
import numpy as np
import pytest

import orienmask_tf as om
from orienmask_tf import cli
from orienmask_tf.inference import video

FPS = 12.5
SIZE = 96  # frames are SIZE x SIZE, the tiny network takes 64 x 96
OPEN = cv2.VideoCapture  # the real one; some tests patch cv2's


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The tiny OrienMask with random weights, 2 classes."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    return str(om.from_preset("tiny", overrides=[
        "model.num_classes=2"]).save(path))


@pytest.fixture(scope="module")
def segmenter(model):
    return om.load(model)


def _write_video(path, fourcc="mp4v", frames=10, fps=FPS):
    """Moving shapes on a grey background, ``frames`` frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps,
                             (SIZE, SIZE))
    assert writer.isOpened(), (path, fourcc)
    for i in range(frames):
        frame = np.full((SIZE, SIZE, 3), 40, np.uint8)
        cv2.rectangle(frame, (10 + 3 * i, 20), (50 + 3 * i, 70),
                      (0, 200, 255), -1)
        cv2.circle(frame, (70, 30 + 2 * i), 12, (255, 80, 0), -1)
        writer.write(frame)
    writer.release()
    return str(path)


def _read_video(path):
    capture = OPEN(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    info = (capture.get(cv2.CAP_PROP_FPS),
            video.fourcc_text(capture.get(cv2.CAP_PROP_FOURCC)))
    capture.release()
    return frames, info


def _key(class_id, score, box):
    return (class_id, round(score, 4), tuple(round(v, 2) for v in box))


def test_video_keeps_its_format_and_matches_the_image_path(model, tmp_path,
                                                           capsys):
    source = _write_video(tmp_path / "clips" / "walk.mp4")
    out = tmp_path / "out"
    assert cli.main(["predict", "--model", model, "--source", source,
                     "--output", str(out), "--batch-size", "4",
                     "--score-threshold", "0.2", "--rle-masks"]) == 0
    printed = capsys.readouterr()
    assert "predict: 100%" in printed.err and "10/10" in printed.err
    assert "frames/s" in printed.out
    assert sorted(os.listdir(out)) == ["walk.json", "walk.mp4"]  # no temp

    frames, (fps, fourcc) = _read_video(out / "walk.mp4")
    assert len(frames) == 10 and frames[0].shape == (SIZE, SIZE, 3)
    assert fps == pytest.approx(FPS)
    assert video.codec_family(fourcc) == "mpeg4"
    inputs, _ = _read_video(source)
    # Drawn on: the frames differ from the input's (beyond codec noise).
    assert np.abs(frames[3].astype(int) - inputs[3].astype(int)).mean() > 5

    document = json.loads((out / "walk.json").read_text())
    assert document["codec"]["output"] == "mp4v"
    assert video.codec_family(document["codec"]["input"]) == "mpeg4"
    assert document["fps"] == pytest.approx(FPS)
    assert document["frame_size"] == [SIZE, SIZE]
    records = document["frames"]
    assert [r["frame"] for r in records] == list(range(10))
    np.testing.assert_allclose([r["timestamp"] for r in records],
                               np.arange(10) / FPS, atol=1e-3)
    summary = document["summary"]
    assert summary["frames"] == 10 and not summary["interrupted"]
    assert summary["processing_fps"] == pytest.approx(
        10 / summary["seconds"])
    assert summary["detections"] == sum(len(r["detections"])
                                        for r in records) > 0

    # The same decoded frames as PNG files through the image path.
    images = tmp_path / "frames"
    images.mkdir()
    for i, frame in enumerate(inputs):
        cv2.imwrite(str(images / f"{i:02d}.png"), frame)
    coco = tmp_path / "images.json"
    assert cli.main(["predict", "--quiet", "--model", model, "--source",
                     str(images), "--output", str(tmp_path / "drawn"),
                     "--score-threshold", "0.2", "--coco-json",
                     str(coco)]) == 0
    by_image = {}
    for r in json.loads(coco.read_text()):
        x, y, w, h = r["bbox"]
        by_image.setdefault(r["image_id"], []).append(
            (_key(r["category_id"], r["score"], (x, y, x + w, y + h)),
             r["segmentation"]))
    for record in records:
        got = sorted(((_key(d["class_id"], d["score"], d["box"]), d["mask"])
                      for d in record["detections"]), key=lambda p: p[0])
        expected = sorted(by_image[record["frame"]], key=lambda p: p[0])
        assert [k for k, _ in got] == [k for k, _ in expected]
        assert [m for _, m in got] == [m for _, m in expected]


@pytest.mark.parametrize("fourcc,family", [("MJPG", "mjpeg"),
                                           ("XVID", "mpeg4")])
def test_avi_keeps_its_codec_family(segmenter, tmp_path, fourcc, family):
    source = _write_video(tmp_path / "in" / "clip.avi", fourcc, frames=3)
    report = video.predict_video(segmenter.network, segmenter.config, source,
                                 str(tmp_path / "out"), batch_size=2,
                                 jit_compile=False)
    assert report["video"] == str(tmp_path / "out" / "clip.avi")
    frames, (fps, written) = _read_video(report["video"])
    assert len(frames) == 3 and fps == pytest.approx(FPS)
    assert video.codec_family(written) == family
    assert report["codec"]["output"] in video.WRITE_CODES[family]


def test_writer_candidates_fall_back_to_mp4v():
    # H.264 in .mp4: avc1 first, mp4v when this OpenCV has no encoder.
    assert video.writer_candidates("avc1", ".mp4") == [
        (".mp4", "avc1"), (".mp4", "H264"), (".mp4", "mp4v")]
    assert video.writer_candidates("MJPG", ".avi") == [(".avi", "MJPG"),
                                                       (".mp4", "mp4v")]
    # An unknown code is tried as it is, in its own container, first.
    assert video.writer_candidates("WMV2", ".wmv") == [(".wmv", "WMV2"),
                                                       (".mp4", "mp4v")]
    assert video.writer_candidates("", ".mkv") == [(".mkv", "XVID"),
                                                   (".mp4", "mp4v")]
    assert video.fourcc_text(float(cv2.VideoWriter_fourcc(*"XVID"))) \
        == "XVID"
    assert video.fourcc_text(0.0) == ""


def test_max_frames_and_the_camera_path(model, tmp_path, monkeypatch,
                                        capsys):
    clip = _write_video(tmp_path / "clip.mp4")
    opened = []

    def fake_capture(source, *args):
        opened.append(source)
        return OPEN(clip if isinstance(source, int) else source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    out = tmp_path / "out"
    assert cli.main(["predict", "--quiet", "--model", model, "--source", "0",
                     "--output", str(out), "--max-frames", "4",
                     "--batch-size", "8"]) == 0
    assert opened == [0]  # a camera index, not a file named "0"
    assert "camera 0 -> " in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["camera0.json", "camera0.mp4"]
    frames, _ = _read_video(out / "camera0.mp4")
    assert len(frames) == 4
    document = json.loads((out / "camera0.json").read_text())
    assert document["batch_size"] == 1  # a camera is never batched
    assert document["source"] == "camera 0"
    stamps = [r["timestamp"] for r in document["frames"]]
    assert len(stamps) == 4 and stamps[0] == 0.0
    assert stamps == sorted(stamps)  # seconds since the first frame


class _InterruptedCapture:
    """A capture whose ``read`` raises KeyboardInterrupt (Ctrl-C) after
    ``frames`` frames."""

    def __init__(self, path, frames):
        self._capture, self._left = OPEN(path), frames

    def read(self):
        if self._left == 0:
            raise KeyboardInterrupt
        self._left -= 1
        return self._capture.read()

    def __getattr__(self, name):
        return getattr(self._capture, name)


def test_ctrl_c_ends_a_camera_recording_but_aborts_a_file(
        segmenter, tmp_path, monkeypatch):
    clip = _write_video(tmp_path / "clip.mp4")
    monkeypatch.setattr(cv2, "VideoCapture",
                        lambda source: _InterruptedCapture(clip, 3))
    out = tmp_path / "out"
    report = video.predict_video(segmenter.network, segmenter.config, 0,
                                 str(out), jit_compile=False)
    assert report["frames"] == 3
    assert sorted(os.listdir(out)) == ["camera0.json", "camera0.mp4"]
    assert json.loads((out / "camera0.json").read_text())["summary"][
        "interrupted"] is True
    assert len(_read_video(out / "camera0.mp4")[0]) == 3

    # A file interrupted halfway leaves nothing, not even a temporary.
    with pytest.raises(KeyboardInterrupt):
        video.predict_video(segmenter.network, segmenter.config, clip,
                            str(tmp_path / "aborted"), batch_size=2,
                            jit_compile=False)
    assert os.listdir(tmp_path / "aborted") == []


def _one_line_error(capfd):
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("orienmask-tf predict: error: ")
    return err[0]


def test_a_file_that_is_not_a_video_is_one_line(model, tmp_path, capfd):
    for name, data in (("notes.txt", b"not a video\n"),
                       ("broken.mp4", b"\x00" * 2048)):
        path = tmp_path / name
        path.write_bytes(data)
        assert cli.main(["predict", "--model", model, "--source", str(path),
                         "--output", str(tmp_path / "out")]) == 2
        err = _one_line_error(capfd)
        assert f"{path}: cannot be opened as a video" in err
    assert not (tmp_path / "out").exists()


def test_an_unavailable_camera_is_one_line(model, tmp_path, capfd):
    assert cli.main(["predict", "--model", model, "--source", "97",
                     "--output", str(tmp_path / "out")]) == 2
    assert "camera 97 is not available" in _one_line_error(capfd)


def test_video_options_that_do_not_apply(model, tmp_path, capsys):
    source = _write_video(tmp_path / "clip.mp4", frames=2)
    assert cli.main(["predict", "--model", model, "--source", source,
                     "--output", str(tmp_path / "out"), "--coco-json",
                     str(tmp_path / "d.json")]) == 2
    assert "--coco-json is for images" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit:
        cli.main(["predict", "--model", model, "--source", source,
                  "--output", str(tmp_path / "out"), "--batch-size", "0"])
    assert exit.value.code == 2
    assert "--batch-size: expected an integer >= 1, got '0'" in \
        capsys.readouterr().err
