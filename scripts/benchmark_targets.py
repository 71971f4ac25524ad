"""Throughput and size of the OrienMask target encoder inside tf.data.

Encodes a COCO-like synthetic workload (instances per image ~ Poisson(7),
clipped to [0, max], padded to --max-instances; elliptic masks) with one
thread (intra/inter-op and the tf.data pool all 1), so the figure is
examples/s per CPU core. Also reports the bytes of one encoded example with
float32 and float16 orientation vectors. Writes a table into BENCHMARKS.md.

    .venv/bin/python scripts/benchmark_targets.py                 # 544, 40 max
    .venv/bin/python scripts/benchmark_targets.py --size 128 --examples 10 \
        --no-write
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from orienmask_tf.families.orienmask.anchors import ANCHORS_YOLOV4 # noqa: E402
from orienmask_tf.families.orienmask.encoder import OrienMaskTargetEncoder # noqa: E402

from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

MARK = "benchmark_targets"


def synthetic_pool(size, pool, max_instances, mean_instances, num_classes,
                   seed=0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    boxes = np.zeros((pool, max_instances, 4), np.float32)
    classes = np.full((pool, max_instances), -1, np.int32)
    masks = np.zeros((pool, max_instances, size, size), np.uint8)
    counts = np.clip(rng.poisson(mean_instances, pool), 0, max_instances)
    for p, n in enumerate(counts):
        for i in range(n):
            # COCO-like log-uniform sizes from ~1% to ~60% of the side.
            rx, ry = np.exp(rng.uniform(np.log(0.005), np.log(0.3), 2)) * size
            cx, cy = rng.uniform(0, size, 2)
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            if not mask.any():
                mask[int(min(cy, size - 1)), int(min(cx, size - 1))] = True
            ys, xs = np.nonzero(mask)
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            boxes[p, i] = [(x0 + x1) / 2 / size, (y0 + y1) / 2 / size,
                           (x1 - x0) / size, (y1 - y0) / size]
            classes[p, i] = rng.randint(num_classes)
            masks[p, i] = mask
    return {"boxes": boxes, "classes": classes, "masks": masks,
            "num_instances": counts.astype(np.int32)}, counts


def run(size, examples, pool, max_instances, mean_instances, orien_dtype):
    anchors = np.asarray(ANCHORS_YOLOV4, np.float32) * np.float32(size / 544)
    encoder = OrienMaskTargetEncoder((size, size), anchors, 80,
                                     orien_dtype=orien_dtype)
    data, counts = synthetic_pool(size, pool, max_instances, mean_instances,
                                  80)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = (tf.data.Dataset.from_tensor_slices(data).repeat()
          .map(encoder).take(examples).with_options(options))
    first = next(iter(ds))  # trace + warm up
    nbytes = sum(int(np.asarray(v).nbytes) for v in first.values())
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in ds:
        pass
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"per_s": examples / wall, "cpu_per_wall": cpu / wall,
            "per_cpu_s": examples / cpu,
            "bytes": nbytes, "mean_instances": float(counts.mean())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=544)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--pool", type=int, default=8,
                        help="distinct synthetic examples cycled through")
    parser.add_argument("--max-instances", type=int, default=40)
    parser.add_argument("--mean-instances", type=float, default=7.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    rows = []
    for dtype in ("float32", "float16"):
        r = run(args.size, args.examples, args.pool, args.max_instances,
                args.mean_instances, dtype)
        rows.append(
            f"| {dtype} | {r['per_s']:.1f} | {r['per_cpu_s']:.1f} | "
            f"{r['cpu_per_wall']:.2f} | "
            f"{r['bytes'] / 2 ** 20:.2f} |")
    text = "\n".join([
        f"## Target encoder throughput ({timestamp()})",
        "",
        f"`scripts/benchmark_targets.py --size {args.size} --examples "
        f"{args.examples} --max-instances {args.max_instances} "
        f"--mean-instances {args.mean_instances}`: "
        f"`OrienMaskTargetEncoder` at {args.size}x{args.size}, 80 classes, "
        f"in `Dataset.map` with one thread (examples/s per CPU core), "
        f"{args.pool} synthetic examples cycled (mean "
        f"{r['mean_instances']:.1f} instances, padded to "
        f"{args.max_instances}). Targets: >= 20 examples/s/core, <= 16 MiB "
        f"per example. Machine: {describe_machine()}.",
        "",
        "examples/s is wall-clock with one thread; examples per CPU-second "
        "(process CPU time) is robust to other load on the machine.",
        "",
        "| orientation dtype | examples/s (1 thread) | examples / CPU-s | "
        "CPU/wall | MiB per example |",
        "|---|---|---|---|---|",
        *rows,
    ])
    print(text)
    if not args.no_write:
        write_section(MARK, text)


if __name__ == "__main__":
    main()
