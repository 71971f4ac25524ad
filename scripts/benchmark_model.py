"""Forward-pass latency of the OrienMask network: eager vs tf.function vs XLA.

Writes a table into BENCHMARKS.md (between this script's markers) and prints
it. The reference is the official PyTorch forward recorded on the same kind
of machine (tests/fixtures/reference/orienmask/timing_cpu.json).

    .venv/bin/python scripts/benchmark_model.py            # full 544 model
    .venv/bin/python scripts/benchmark_model.py --runs 3 --config configs/tiny.yaml --no-write
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from orienmask_tf.config import load_config  # noqa: E402
from orienmask_tf.families.orienmask.network import OrienMask # noqa: E402

from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import measure  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

OFFICIAL_TIMING = REPO / "tests/fixtures/reference/orienmask/timing_cpu.json"
MARK = "benchmark_model"


def _forward(fn, images):
    def run():
        for value in fn(images).values():
            np.asarray(value)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(
        REPO / "configs/orienmask_yolo_fpnplus_coco_544_anchor4.yaml"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--reference-ms", type=float,
        help="official PyTorch forward median (ms) measured on THIS machine; "
             "default: the recorded timing_cpu.json figure")
    parser.add_argument("--reference-note", default="",
                        help="how --reference-ms was measured")
    args = parser.parse_args()

    config = load_config(args.config)
    height, width = config.image_size
    model = OrienMask(**config.model_kwargs())
    params = model.count_params()
    fns = {
        "Keras eager (`model(x)`)": lambda x: model(x, training=False),
        "`tf.function`": tf.function(
            lambda x: model(x, training=False), reduce_retracing=True),
        "`tf.function(jit_compile=True)` (XLA)": tf.function(
            lambda x: model(x, training=False), jit_compile=True),
    }
    official = json.loads(OFFICIAL_TIMING.read_text())
    ref_ms = args.reference_ms or official["median_forward_ms"]
    rows = []
    for batch in args.batch_sizes:
        images = np.random.RandomState(0).uniform(
            0, 1, (batch, height, width, 3)).astype(np.float32)
        for name, fn in fns.items():
            result = measure(_forward(fn, images), args.warmup, args.runs)
            per_image = result["median_ms"] / batch
            rows.append(
                f"| {name} | {batch} | {result['median_ms']:.1f} | "
                f"{result['min_ms']:.1f} | {per_image:.1f} | "
                f"{1e3 / per_image:.2f} | {result['cpu_per_wall']:.2f} | "
                + (f"{per_image / ref_ms:.2f} |" if batch == 1 else "- |"))
            print(rows[-1], flush=True)
    text = "\n".join([
        f"## Network forward pass ({config.name}, {height}x{width}, float32)",
        "",
        f"`scripts/benchmark_model.py`, {timestamp()}"
        f"; {describe_machine()}; {params:,} parameters; "
        f"{args.warmup} warm-up + {args.runs} timed runs, random weights.",
        "",
        "| mode | batch | median ms | min ms | ms / image | images / s | "
        "CPU time / wall | vs official PyTorch forward |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        (f"Reference: official PyTorch forward measured on this machine: "
         f"median {ref_ms:.1f} ms at batch 1 ({args.reference_note}). "
         if args.reference_ms else "")
        + f"Recorded official figure (`timing_cpu.json`: {official['machine']}, "
        f"torch {official['torch_version']}): median "
        f"{official['median_forward_ms']:.1f} ms forward. The last column "
        f"divides our median by {ref_ms:.1f} ms (< 1 is faster).",
    ])
    print(text)
    if not args.no_write:
        write_section(MARK, text)
        print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
