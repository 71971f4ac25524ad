# SPDX-License-Identifier: Apache-2.0
"""``predict`` on a video file or a camera: an annotated video plus one JSON
record per frame.

Frames are read with OpenCV (``cv2.VideoCapture``), grouped into batches and
sent through ``predict.detect_batch`` -- the evaluation resize, network,
decoding and mapping back that ``predict`` gives images -- then drawn with
``drawing.draw_detections`` and written with ``cv2.VideoWriter`` at the
input's frame rate and frame size.

Codec. The output keeps the input's container (its extension) and the codec
family of the input's FOURCC (``CAP_PROP_FOURCC``), when this OpenCV build
can encode it:

    MPEG-4 Part 2 (mp4v, FMP4, XVID, DIVX, ...)  -> mp4v
    H.264 (avc1, H264, X264, ...)                -> avc1, H264
    HEVC (hvc1, hev1, ...)                       -> hvc1, HEVC
    Motion JPEG (MJPG, ...)                      -> MJPG
    VP8 / VP9 / AV1                              -> VP80 / VP90 / av01
    any other code                               -> the input's own code

If none of them opens (pip OpenCV wheels, for one, carry no H.264 encoder),
the container's default is used (.mp4 / .m4v / .mov: mp4v, .avi: MJPG,
.mkv: XVID, .webm: VP80) and, last, ``.mp4`` with mp4v, which every
FFmpeg-enabled OpenCV writes. A camera has no file codec: ``.mp4``, mp4v.
The JSON records both codes. Encoders that fail to open print to the
process's stderr from C code; those probes run with stderr silenced.

Frame rate: ``CAP_PROP_FPS``, or 30 when the input reports none (0, NaN or
more than 1000). Timestamps: a file's own presentation time of each frame
(``CAP_PROP_POS_MSEC`` after reading it), or ``index / fps`` when the
backend reports none; a camera's: seconds since its first frame.

Per-frame JSON (``<output>/<name>.json``)::

    {"source", "video", "fps", "frame_size": [height, width],
     "codec": {"input", "output"}, "score_threshold", "batch_size",
     "class_names",
     "frames": [{"frame": index, "timestamp": seconds,
                 "detections": [{"class_id", "class_name", "score",
                                 "box": [x1, y1, x2, y2],
                                 "mask": COCO RLE (with rle_masks)}]}],
     "summary": {"frames", "detections", "seconds", "processing_fps",
                 "processing_fps_after_first_batch", "interrupted"}}

``processing_fps`` is frames over the wall time from the first read to the
last write (decode, resize, network, mapping back, drawing, encoding); the
first batch also compiles the network (XLA), so the second figure leaves it
out. Both files are written under temporary names and renamed when complete.
"""

import contextlib
import itertools
import json
import math
import os
import sys
import time

import cv2

from orienmask_tf.eval.coco_eval import encode_mask
from orienmask_tf.inference.drawing import draw_detections
from orienmask_tf.inference.predict import check_output_folder
from orienmask_tf.inference.predict import detect_batch
from orienmask_tf.inference.predict import make_inference
from orienmask_tf.inference.predict import write_atomically
from orienmask_tf.progress import bar

DEFAULT_FPS = 30.0
# FOURCC codes as containers report them, by codec family.
CODEC_FAMILIES = {
    "mpeg4": ("mp4v", "FMP4", "XVID", "DIVX", "DX50", "M4S2", "DIV3"),
    "h264": ("avc1", "avc3", "H264", "X264", "DAVC"),
    "hevc": ("hvc1", "hev1", "HEVC", "H265", "X265"),
    "mjpeg": ("MJPG", "MJPA", "AVRN", "JPEG"),
    "vp8": ("VP80",),
    "vp9": ("VP90", "VP09"),
    "av1": ("AV01",),
}
# What to ask cv2.VideoWriter for, per family, best first.
WRITE_CODES = {
    "mpeg4": ("mp4v",), "h264": ("avc1", "H264"), "hevc": ("hvc1", "HEVC"),
    "mjpeg": ("MJPG",), "vp8": ("VP80",), "vp9": ("VP90",), "av1": ("av01",),
}
CONTAINER_DEFAULTS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v",
                      ".avi": "MJPG", ".mkv": "XVID", ".webm": "VP80"}
FALLBACK = (".mp4", "mp4v")

_FAMILY_OF = {code.casefold(): family
              for family, codes in CODEC_FAMILIES.items() for code in codes}


def fourcc_text(value):
    """``CAP_PROP_FOURCC`` (a float holding 4 bytes) -> e.g. ``"avc1"``
    (``""`` when the backend reports none)."""
    code = int(value) if math.isfinite(value) else 0
    text = "".join(chr((code >> 8 * i) & 0xFF) for i in range(4))
    text = text.rstrip("\0 ")
    return text if len(text) == 4 and text.isprintable() else ""


def codec_family(code):
    """The family (a key of ``CODEC_FAMILIES``) of a FOURCC, or None."""
    return _FAMILY_OF.get(code.casefold()) if code else None


def writer_candidates(input_code, container):
    """``(extension, fourcc)`` pairs to try for the output, best first (see
    the module docstring)."""
    family = codec_family(input_code)
    codes = list(WRITE_CODES[family]) if family else []
    if input_code and not family:
        codes.append(input_code)
    if container in CONTAINER_DEFAULTS:
        codes.append(CONTAINER_DEFAULTS[container])
    pairs = [(container, code) for code in dict.fromkeys(codes)]
    return pairs + ([FALLBACK] if FALLBACK not in pairs else [])


@contextlib.contextmanager
def _quiet_stderr():
    # FFmpeg and OpenCV report a missing encoder, camera or demuxer on the
    # process's stderr (fd 2, from C); the caller reports one line instead.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_source(source):
    """Open a video file (a path) or a camera (an int) and read its first
    frame: ``(capture, first BGR frame)``.

    Raises:
        ValueError: one line naming the file (not decodable as a video) or
            the camera (not available).
    """
    camera = isinstance(source, int)
    with _quiet_stderr():
        capture = cv2.VideoCapture(source)
        ok, frame = (capture.read() if capture.isOpened()
                     else (False, None))
    if ok and frame is not None and frame.size:
        return capture, frame
    capture.release()
    if camera:
        raise ValueError(
            f"--source {source}: camera {source} is not available (OpenCV "
            "could not open it or read a frame; check that it is connected, "
            "not used by another program, and the index)")
    raise ValueError(
        f"{source}: cannot be opened as a video (OpenCV could not decode a "
        "frame; expected a video file such as .mp4, .avi or .mkv)")


def _open_writer(tmp_base, candidates, fps, size):
    for ext, code in candidates:
        path = tmp_base + ext
        with _quiet_stderr():
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*code),
                                     fps, size)
        if writer.isOpened():
            return writer, path, ext, code
        writer.release()
        if os.path.exists(path):
            os.remove(path)
    tried = ", ".join(f"{code} in {ext}" for ext, code in candidates)
    raise ValueError(f"OpenCV cannot write a video here (tried {tried})")


def _rgb(frame):
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    code = cv2.COLOR_BGRA2RGB if frame.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(frame, code)


def _read_frames(capture, first, camera, fps, max_frames):
    """``(index, timestamp in seconds, RGB uint8)`` of each frame, from the
    already read ``first`` on, at most ``max_frames`` (0: all)."""
    start, frame, index = None, first, 0
    while True:
        if camera:
            now = time.monotonic()
            start = now if start is None else start
            stamp = now - start
        else:
            msec = capture.get(cv2.CAP_PROP_POS_MSEC)
            stamp = msec / 1000 if msec > 0 else index / fps
        yield index, stamp, _rgb(frame)
        index += 1
        if max_frames and index >= max_frames:
            return
        ok, frame = capture.read()
        if not ok or frame is None:
            return


def _record(index, stamp, det, class_names, rle_masks):
    detections = []
    for i, k in enumerate(int(c) for c in det["classes"]):
        one = {"class_id": k,
               "class_name": (class_names[k] if k < len(class_names)
                              else str(k)),
               "score": float(det["scores"][i]),
               "box": [float(v) for v in det["boxes"][i]]}
        if rle_masks:
            one["mask"] = encode_mask(det["masks"][i])
        detections.append(one)
    return {"frame": index, "timestamp": round(float(stamp), 6),
            "detections": detections}


def predict_video(network, config, source, output_dir, class_names=(),
                  score_threshold=0.3, batch_size=8, max_frames=0,
                  rle_masks=False, jit_compile=True, progress=False):
    """Detect on every frame of a video file or camera; write the annotated
    video and the per-frame JSON (module docstring) into ``output_dir``.

    Args:
        source: a video file path, or an int: a camera index.
        output_dir: folder for ``<name>.<ext>`` and ``<name>.json``
            (``<name>``: the file's stem, or ``camera<index>``); it must not
            hold the input (``predict.check_output_folder``).
        batch_size: frames per network call (a camera always uses 1); the
            last batch of a file is padded to it (repeating its last frame)
            so the network keeps one compiled shape.
        max_frames: stop after this many frames (0: all; a camera then runs
            until Ctrl-C, which ends the recording normally).
        rle_masks: add each detection's mask as COCO RLE to the JSON.
        progress: a bar on stderr, one step per frame.

    Returns:
        ``{"video", "json", "frames", "detections", "processing_fps",
        "codec": {"input", "output"}}``.

    Raises:
        ValueError: one line for a file that is not a video, an unavailable
            camera, or an ``output_dir`` that holds the input.
    """
    camera = isinstance(source, int)
    if batch_size < 1 or max_frames < 0:
        raise ValueError(f"batch_size must be >= 1 and max_frames >= 0, "
                         f"got {batch_size} and {max_frames}")
    check_output_folder(output_dir, [] if camera else [source])
    capture, first = open_source(source)
    try:
        return _predict_capture(
            network, config, capture, first, source, output_dir,
            class_names, score_threshold, 1 if camera else batch_size,
            max_frames, rle_masks, jit_compile, progress)
    finally:
        capture.release()


def _predict_capture(network, config, capture, first, source, output_dir,
                     class_names, score_threshold, batch_size, max_frames,
                     rle_masks, jit_compile, progress):
    camera = isinstance(source, int)
    reported = capture.get(cv2.CAP_PROP_FPS)
    fps = (reported if math.isfinite(reported) and 0 < reported <= 1000
           else DEFAULT_FPS)
    height, width = first.shape[:2]
    if camera:
        stem, container, input_code = f"camera{source}", ".mp4", ""
    else:
        stem, container = os.path.splitext(os.path.basename(source))
        container = container.lower()
        input_code = fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
    candidates = ([FALLBACK] if camera
                  else writer_candidates(input_code, container))
    total = None if camera else int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    if not total or total < 0:
        total = None  # unknown (a camera, or a container without a count)
    if max_frames:
        total = min(total, max_frames) if total else max_frames

    inference = make_inference(network, config, jit_compile)
    os.makedirs(output_dir, exist_ok=True)
    writer, tmp_video, ext, code = _open_writer(
        os.path.join(output_dir, f".tmp-{os.getpid()}-{stem}"), candidates,
        fps, (width, height))
    video_path = os.path.join(output_dir, stem + ext)
    json_path = os.path.join(output_dir, stem + ".json")
    records, count, interrupted = [], 0, False
    frames = _read_frames(capture, first, camera, fps, max_frames)
    try:
        with bar(total=total, desc="predict", unit="frame",
                 enabled=progress) as line:
            start = time.perf_counter()
            first_batch = None
            try:
                while True:
                    chunk = list(itertools.islice(frames, batch_size))
                    if not chunk:
                        break
                    detections = detect_batch(
                        inference, [rgb for _, _, rgb in chunk],
                        score_threshold, pad_to=batch_size)
                    for (index, stamp, rgb), det in zip(chunk, detections):
                        drawn = draw_detections(
                            rgb, det["boxes"], det["scores"], det["classes"],
                            det["masks"], class_names,
                            score_threshold=score_threshold)
                        if drawn.shape[:2] != (height, width):
                            drawn = cv2.resize(drawn, (width, height))
                        writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                        records.append(_record(index, stamp, det, class_names,
                                               rle_masks))
                        count += len(det["scores"])
                    line.update(len(chunk))
                    if first_batch is None:
                        first_batch = (time.perf_counter(), len(chunk))
            except KeyboardInterrupt:
                if not camera:
                    raise
                interrupted = True  # how a camera recording ends
            seconds = time.perf_counter() - start
        writer.release()
        if interrupted and not records:
            raise KeyboardInterrupt  # stopped before the first frame
        after = None
        if first_batch and len(records) > first_batch[1]:
            after = (len(records) - first_batch[1]) / max(
                start + seconds - first_batch[0], 1e-9)
        summary = {"frames": len(records), "detections": count,
                   "seconds": seconds,
                   "processing_fps": len(records) / max(seconds, 1e-9),
                   "processing_fps_after_first_batch": after,
                   "interrupted": interrupted}
        document = {
            "source": f"camera {source}" if camera else str(source),
            "video": video_path, "fps": fps, "frame_size": [height, width],
            "codec": {"input": input_code, "output": code},
            "score_threshold": score_threshold, "batch_size": batch_size,
            "class_names": list(class_names), "frames": records,
            "summary": summary}
        os.replace(tmp_video, video_path)
        write_atomically(json_path, json.dumps(document))
    finally:
        writer.release()
        if os.path.exists(tmp_video):
            os.remove(tmp_video)
    return {"video": video_path, "json": json_path, "frames": len(records),
            "detections": count,
            "processing_fps": summary["processing_fps"],
            "processing_fps_after_first_batch": after,
            "codec": document["codec"]}
