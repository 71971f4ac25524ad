"""Deployment formats of the full-size model on this machine -> BENCHMARKS.md.

Runs ``orienmask_tf.export.benchmark.benchmark_formats`` (what
``orienmask-tf benchmark`` runs) on the 544x544 FPN-plus config with random
weights, and compares the XLA SavedModel's end-to-end latency (uint8 image
in, masks out) with the official PyTorch forward + post-processing recorded
in tests/fixtures/reference/orienmask/timing_cpu.json.

    .venv/bin/python scripts/benchmark_export.py [--runs 5] [--no-write]

``--arch yolact`` runs the same formats on the full-size YOLACT (ResNet-50,
550x550, ATSS anchors, mmdet test_cfg: ``configs/yolact_r50_550_atss_maiou.yaml``
unless ``--config`` names another) and writes its own BENCHMARKS.md section
(no official timing to compare).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from orienmask_tf.config import load_config  # noqa: E402
from orienmask_tf.export.benchmark import BATCHED  # noqa: E402
from orienmask_tf.export.benchmark import FORMATS  # noqa: E402
from orienmask_tf.export.benchmark import benchmark_formats  # noqa: E402
from orienmask_tf.export.benchmark import format_table  # noqa: E402

from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="default: the FPN-plus 544 config "
                        "(--arch orienmask) or YOLACT-550 ATSS-maIoU")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--arch", choices=("orienmask", "yolact"),
                        default="orienmask")
    parser.add_argument("--image-size", type=int, default=550,
                        help="YOLACT input side (default 550)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()
    args.config = args.config or str(REPO / "configs" / (
        "yolact_r50_550_atss_maiou.yaml" if args.arch == "yolact"
        else "orienmask_yolo_fpnplus_coco_544_anchor4.yaml"))

    if args.rows_out:  # one group of formats, in its own process
        overrides = ([f"image_size=[{args.image_size},{args.image_size}]"]
                     if args.arch == "yolact" else [])
        config = load_config(args.config, overrides)
        setup = (config.family.build_network(config), config.image_size,
                 *config.family.inference_args(config))
        rows = benchmark_formats(
            *setup, formats=args.formats, batch_sizes=args.batch_sizes,
            warmup=args.warmup, runs=args.runs)
        with open(args.rows_out, "w") as f:
            json.dump(rows, f)
        return
    # Each group runs in a fresh process: converting the 63M-parameter model
    # to ONNX alone peaks at ~11 GB, too much on top of the other formats.
    groups = [[f for f in args.formats if f in BATCHED],
              [f for f in args.formats if f.startswith("tflite")],
              [f for f in args.formats if f == "onnx"]]
    rows = []
    for group in filter(None, groups):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            subprocess.run(
                [sys.executable, __file__, "--config", args.config,
                 "--arch", args.arch, "--image-size", str(args.image_size),
                 "--formats", *group, "--batch-sizes",
                 *map(str, args.batch_sizes), "--warmup", str(args.warmup),
                 "--runs", str(args.runs), "--rows-out", out.name],
                check=True)
            rows += json.loads(pathlib.Path(out.name).read_text())
    if args.arch == "yolact":
        return _write_yolact(args, rows)
    config = load_config(args.config)
    official = json.loads((REPO / "tests/fixtures/reference/orienmask/"
                           "timing_cpu.json").read_text())
    ref = official["median_total_ms"]
    xla = [r for r in rows if r["format"] == "saved_model_xla"
           and r["batch"] == 1]
    ratio = (f"**XLA SavedModel end to end (640x480 uint8 image in, resize, "
             f"network, decoding, masks out), batch 1: "
             f"{xla[0]['median_ms']:.0f} ms = {xla[0]['median_ms'] / ref:.2f}x "
             f"the official PyTorch forward + post-processing "
             f"({ref:.0f} ms, `timing_cpu.json`: {official['machine']}).** "
             "Target: <= 0.5x." if xla else "")
    height, width = config.image_size
    text = "\n".join([
        f"## Deployment formats ({config.name}, {height}x{width}, "
        "end to end with decoding and masks)",
        "",
        f"`scripts/benchmark_export.py` (= `orienmask-tf benchmark`), "
        f"{timestamp()}; {describe_machine()}; random weights; "
        f"{args.warmup} warm-up + {args.runs} timed runs; the last column "
        f"divides ms / image by the official {ref:.0f} ms.",
        "",
        format_table(rows, reference_ms=ref),
        "",
        ratio,
        "",
        "`saved_model_xla` starts from uint8 pixels of a 640x480 image "
        "(resize inside the graph); every other row starts from the "
        "resized float input. `tflite_int8` is the calibrated int8 network "
        "plus the float TF decoder (TFLite's calibrator cannot take the "
        "decoding graph). Conversion / load time is the one-off cost.",
    ])
    print(text)
    if not args.no_write:
        write_section("benchmark_export", text)
        print("wrote BENCHMARKS.md")


def _write_yolact(args, rows):
    size = args.image_size
    text = "\n".join([
        f"## Deployment formats (YOLACT ResNet-50, {size}x{size}, end to end "
        "with decoding and masks)",
        "",
        f"`scripts/benchmark_export.py --arch yolact`, {timestamp()}; "
        f"{describe_machine()}; random weights, 80 classes, ATSS anchors "
        "(1 per location), mmdet test_cfg (nms_pre 1000, Fast NMS top_k "
        f"200, 100 detections); {args.warmup} warm-up + {args.runs} timed "
        "runs.",
        "",
        format_table(rows),
        "",
        "`saved_model_xla` starts from uint8 pixels of a 640x480 image "
        "(resize and mean / std normalisation inside the graph); every "
        "other row starts from the resized [0, 1] float input. "
        "`tflite_int8` is the calibrated int8 network plus the float TF "
        "decoder (the int8 graph with the decoding converts but fails at "
        "run time in a quantized DIV). Conversion / load time is the "
        "one-off cost.",
    ])
    print(text)
    if not args.no_write:
        write_section("benchmark_export_yolact", text)
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
