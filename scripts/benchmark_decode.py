"""Decode (post-processing) latency: eager / tf.function / XLA, both NMS modes.

Random raw outputs at 544x544 with 80 classes and the YOLOv4 anchors, drawn
so that (as in the official timing with random weights) nearly every
(box, class) pair passes conf_thresh: the nms_pre = 400 and nms_post = 100
caps are always hit. Writes a table into BENCHMARKS.md (between this
script's markers) and prints it. The reference is the official PyTorch
post-processing recorded on the same kind of machine
(tests/fixtures/reference/orienmask/timing_cpu.json).

    .venv/bin/python scripts/benchmark_decode.py                  # full run
    .venv/bin/python scripts/benchmark_decode.py --size 96 --batches 1 \
        --runs 1 --warmup 1 --modes xla --no-write                # smoke test
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from orienmask_tf.families.orienmask.decode import decode_orienmask # noqa: E402
from orienmask_tf.families.orienmask.anchors import ANCHOR_MASK # noqa: E402
from orienmask_tf.families.orienmask.anchors import ORIENTATION_STRIDE # noqa: E402
from orienmask_tf.families.orienmask.anchors import STRIDES # noqa: E402
from orienmask_tf.families.orienmask.anchors import resolve_anchors # noqa: E402

from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import measure  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

OFFICIAL_TIMING = REPO / "tests/fixtures/reference/orienmask/timing_cpu.json"
MARK = "benchmark_decode"
MODES = ("eager", "function", "xla")
NMS_MODES = ("greedy", "fast")


def random_outputs(batch, size, num_classes, seed=0):
    """Raw outputs shaped like the model's; logits ~ N(0, 1) so scores are
    ~0.25 and every pair passes conf_thresh = 0.005."""
    rng = np.random.RandomState(seed)
    outputs = {}
    for stride, mask in zip(STRIDES, ANCHOR_MASK):
        grid = size // stride
        outputs[f"box_s{stride}"] = rng.standard_normal(
            (batch, grid, grid, len(mask) * (5 + num_classes))).astype(
                np.float32)
        orien = size // ORIENTATION_STRIDE
        outputs[f"orien_s{stride}"] = rng.standard_normal(
            (batch, orien, orien, 2 * len(mask))).astype(np.float32)
    return {k: tf.constant(v) for k, v in outputs.items()}


def mask_memory(size, nms_post, num_anchors=9):
    """Bytes per image of the tensors of mask construction (float32 maps)."""
    low = (size // ORIENTATION_STRIDE) ** 2 * 2 * num_anchors * 4
    full = size * size * 2 * num_anchors * 4
    masks = nms_post * size * size
    return low, full, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=544)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=list(MODES),
                        choices=MODES)
    parser.add_argument("--nms", nargs="+", default=list(NMS_MODES),
                        choices=NMS_MODES)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-write", action="store_true",
                        help="print the table without touching BENCHMARKS.md")
    args = parser.parse_args()

    anchors = resolve_anchors("yolov4")
    rows = []
    for batch in args.batches:
        outputs = random_outputs(batch, args.size, args.num_classes)
        for nms in args.nms:
            def fn(o, nms=nms):
                return decode_orienmask(
                    o, anchors, (args.size, args.size), args.num_classes,
                    nms=nms, conf_thresh=0.005, nms_threshold=0.5,
                    nms_pre=400, nms_post=100, orien_thresh=0.3)
            variants = {"eager": fn,
                        "function": tf.function(fn, jit_compile=False),
                        "xla": tf.function(fn, jit_compile=True)}
            for mode in args.modes:
                decode = variants[mode]

                def run(decode=decode):
                    for value in decode(outputs).values():
                        np.asarray(value)
                stats = measure(run, args.warmup, args.runs)
                dets = decode(outputs)["num_detections"].numpy().tolist()
                rows.append((batch, nms, mode, stats, dets))
                print(batch, nms, mode, f"{stats['median_ms']:.1f} ms",
                      f"{stats['median_ms'] / batch:.1f} ms/image",
                      dets, flush=True)

    official = 426.5  # README of the fixtures, if the JSON is absent
    if OFFICIAL_TIMING.exists():
        with open(OFFICIAL_TIMING) as f:
            timing = json.load(f)
        official = timing["median_postprocess_ms"]

    low, full, masks = mask_memory(args.size, 100)
    lines = [
        f"Decode of random raw outputs at {args.size}x{args.size}, "
        f"{args.num_classes} classes, YOLOv4 anchors, conf_thresh 0.005 "
        "(every pair passes: the nms_pre 400 / nms_post 100 caps are hit), "
        f"{args.warmup} warm-up + {args.runs} timed runs, median. "
        f"{describe_machine()}; {timestamp()}. Command: "
        "`.venv/bin/python scripts/benchmark_decode.py`.",
        "",
        "| batch | NMS | mode | median ms | ms / image | speed-up vs official "
        f"({official:.1f} ms / image) | CPU/wall | detections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, nms, mode, stats, dets in rows:
        per_image = stats["median_ms"] / batch
        lines.append(
            f"| {batch} | {nms} | {mode} | {stats['median_ms']:.1f} | "
            f"{per_image:.1f} | {official / per_image:.1f}x | "
            f"{stats['cpu_per_wall']:.2f} | {dets[0]} |")
    lines += [
        "",
        "Mask construction memory per image (float32 maps, 9 anchors x 2 "
        "components): stride-4 orientation maps "
        f"{low / 2**20:.2f} MiB (the paper's \"space\" column, 1.27 MB at "
        f"544), upsampled x4 maps {full / 2**20:.2f} MiB, bool output masks "
        f"({100} x {args.size} x {args.size}) {masks / 2**20:.2f} MiB. "
        "Under XLA the per-detection gather, subtraction and comparison fuse "
        "into the mask output; eagerly each (100, H, W) float32 "
        f"intermediate costs {4 * masks / 2**20:.1f} MiB.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(MARK, "## Decode (post-processing)\n\n" + text)


if __name__ == "__main__":
    main()
