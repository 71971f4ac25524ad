"""Input-pipeline throughput of the OrienMask-544 training input.

Writes COCO-like synthetic JPEGs (640x480, ~7 visible instances per image,
``make-shapes``), then times ``build_dataset`` for the official training
augmentation at 544x544, without and with the OrienMask target encoder,
on one core (tf.data private thread pool of 1, intra-op parallelism 1,
OpenCV single-threaded). Images per second on that single thread and
images per CPU-second (the rate of a fully used core) are reported.
Writes the ``benchmark_data`` section of BENCHMARKS.md (``--no-write``
prints only).

    .venv/bin/python scripts/benchmark_data.py            # lead: full run
    .venv/bin/python scripts/benchmark_data.py --num-images 8 --images 8 \\
        --no-write                                        # smoke test
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import cv2  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402
from orienmask_tf.config import DataConfig
from orienmask_tf.config import load_config  # noqa: E402
from orienmask_tf.data import pipeline  # noqa: E402
from orienmask_tf.data import shapes  # noqa: E402

CONFIG = "configs/orienmask_yolo_fpnplus_coco_544_anchor4.yaml"


def single_core(ds):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return ds.with_options(options)


def run(config, data, encoder, images, batch_size):
    ds = pipeline.build_dataset(config, "train", data=data, encoder=encoder,
                                batch_size=batch_size)
    ds = single_core(ds.unbatch())
    it = iter(ds)
    for _ in range(4):  # warm-up: tracing, first file reads
        next(it)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(images):
        next(it)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"images_per_s": images / wall, "ms_per_image": 1e3 * wall / images,
            "cpu_per_wall": cpu / wall, "images_per_cpu_s": images / cpu}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=64,
                        help="synthetic JPEGs to write")
    parser.add_argument("--images", type=int, default=96,
                        help="timed images per mode")
    parser.add_argument("--max-instances", type=int, default=100)
    parser.add_argument("--mean-instances", type=float, default=9.5,
                        help="drawn per image before occlusion (~7 remain)")
    parser.add_argument("--data-dir", help="reuse/write the images here")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    root = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="shapes"))
    ann = root / "annotations" / "instances_train.json"
    if not ann.exists():
        shapes.make_shapes(root, args.num_images, 0, (480, 640), seed=0,
                           mean_instances=args.mean_instances)
    info = json.loads(ann.read_text())
    num_images = len(info["images"])
    per_image = sum(1 for a in info["annotations"] if not a["iscrowd"]) \
        / max(num_images, 1)
    config = load_config(CONFIG)
    data = DataConfig(train_annotations=str(ann),
                               train_images=str(root / "train"),
                               max_instances=args.max_instances,
                               num_parallel_calls=1, seed=0)
    rows = [("decode + augmentation (no targets)",
             run(config, data, None, args.images, 1)),
            ("decode + augmentation + OrienMask targets",
             run(config, data, config.family.make_encoder(config), args.images, 1))]
    lines = [
        "## Input pipeline (OrienMask-544 training input, one CPU core)",
        "",
        f"`scripts/benchmark_data.py`, {timestamp()}; {describe_machine()}. "
        f"{num_images} synthetic 640x480 JPEGs (`make-shapes`, "
        f"{per_image:.1f} instances per image on average), official "
        "`transform_train_544` augmentation (colour jitter, min-IoU crop, "
        "resize with jitter / warp / random placement / mean padding, flip), "
        f"padded to max_instances={args.max_instances}; tf.data on one "
        "thread (private thread pool 1, intra-op 1, OpenCV 1 thread), "
        f"{args.images} timed images per row after 4 warm-up images.",
        "",
        "| input | images / s (one thread) | ms / image | CPU time / wall "
        "| images / CPU-second |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['images_per_s']:.1f} | "
                     f"{r['ms_per_image']:.1f} | {r['cpu_per_wall']:.2f} | "
                     f"{r['images_per_cpu_s']:.1f} |")
    lines += ["", "Per core: the one-thread rate is a lower bound on a shared "
              "machine (CPU time / wall < 1 means the thread waited for the "
              "core); images / CPU-second is the rate of a fully used core. "
              "Target: >= 20 images / s per core including targets."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("benchmark_data", text)
        print("wrote the benchmark_data section of BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
