"""Per-image anchor-assignment time: fixed IoU, ATSS-IoU, ATSS-maIoU.

Workload of the official CPU figures (tests/fixtures/reference/maiou/
cpu_timings.json): one 550x550 image, the 6,416 ATSS-550 anchors and 20 GTs
(the 12 GTs of fixture case_00 plus 8 of them mirrored left-right). Each
assigner runs as a ``tf.function`` with the anchors as a graph constant,
as in a tf.data map. Writes a table into BENCHMARKS.md (between this
script's markers) and prints it.

    .venv/bin/python scripts/benchmark_assign.py              # full run
    .venv/bin/python scripts/benchmark_assign.py --runs 3 --no-write
"""

import argparse
import json
import os
import resource

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from orienmask_tf.families.yolact.anchors import atss_anchors # noqa: E402
from orienmask_tf.assign.assigners import ATSSAssigner # noqa: E402
from orienmask_tf.assign.assigners import MaxIoUAssigner # noqa: E402
from orienmask_tf.assign.maiou import mask_aware_iou # noqa: E402

from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import measure  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

FIXTURES = REPO / "tests/fixtures/reference/maiou"
MARK = "benchmark_assign"
NUM_GTS = 20


def workload():
    """550x550, 6,416 anchors, 20 GTs (case_00's 12 + 8 mirrored)."""
    with np.load(FIXTURES / "case_00.npz") as case:
        boxes, masks = case["gt_bboxes"], case["gt_masks"]
        labels = case["gt_labels"]
    width = masks.shape[2]
    extra = NUM_GTS - len(boxes)
    flipped = boxes[:extra].copy()
    flipped[:, 0] = width - boxes[:extra, 2]
    flipped[:, 2] = width - boxes[:extra, 0]
    boxes = np.concatenate([boxes, flipped]).astype(np.float32)
    masks = np.concatenate([masks, masks[:extra, :, ::-1]]).astype(np.uint8)
    labels = np.concatenate([labels, labels[:extra]]).astype(np.int32)
    anchors, counts = atss_anchors(550)
    return anchors, counts, boxes, masks, labels


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2,
                        help="TF intra/inter-op threads (official: 2)")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    anchors, counts, boxes, masks, labels = workload()
    inputs = (tf.constant(boxes), tf.constant(masks), tf.constant(NUM_GTS),
              tf.constant(labels))
    atss_maiou, atss_iou = ATSSAssigner(9, "maiou"), ATSSAssigner(9, "iou")
    fixed = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)

    @tf.function
    def run_fixed(b, m, n, l):
        return fixed(anchors, b, m, n, l)

    @tf.function
    def run_atss_iou(b, m, n, l):
        return atss_iou(anchors, counts, b, m, n, l)

    @tf.function
    def run_atss_maiou(b, m, n, l):
        return atss_maiou(anchors, counts, b, m, n, l)

    @tf.function
    def run_maiou(b, m, n, l):
        return mask_aware_iou(anchors, b, m)

    methods = {
        "fixed IoU (`MaxIoUAssigner`)": run_fixed,
        "ATSS-IoU (`ATSSAssigner(overlap='iou')`)": run_atss_iou,
        "ATSS-maIoU (`ATSSAssigner(overlap='maiou')`)": run_atss_maiou,
        "maIoU matrix alone (`mask_aware_iou`)": run_maiou,
    }
    official_keys = [
        "official_MaxIoUAssigner_assign", "official_ATSSAssigner_iou_assign",
        "official_ATSSmaIoUAssigner_assign", "official_maiou_calculator_only"]
    with open(FIXTURES / "cpu_timings.json") as f:
        official = json.load(f)["median_wall_ms"]

    # The numpy anchors become graph constants, so the maIoU corner grid is
    # resolved once at trace time.
    rows, peaks = [], {}
    for (name, fn), key in zip(methods.items(), official_keys):
        before = _rss_mb()

        def run(fn=fn):
            tf.nest.map_structure(lambda t: t.numpy(), fn(*inputs))

        run()
        peaks[name] = _rss_mb() - before
        stats = measure(run, args.warmup, args.runs)
        rows.append((name, stats, official[key]))

    g, (h, w), n = NUM_GTS, masks.shape[1:], len(anchors)
    kx = len(np.unique(np.clip(np.round(anchors[:, [0, 2]]), 0, w))) + 1
    ky = len(np.unique(np.clip(np.round(anchors[:, [1, 3]]), 0, h))) + 1
    est_mb = (g * h * w * (1 + 1 + 4)          # uint8 in, bool, float32 mask
              + g * h * kx * 4 + g * ky * kx * 4  # column prefix, table
              + 12 * g * n * 4) / 2 ** 20        # ~12 live (G, N) matrices
    full_mb = g * (h + 1) * (w + 1) * 4 / 2 ** 20

    lines = [
        "## Anchor assignment per image (maIoU, BMVC 2021)",
        "",
        f"{timestamp()}; {describe_machine()}; {args.threads} TF threads; "
        f"{args.runs} runs after {args.warmup} warm-up, `tf.function`, "
        "eager tensors in, numpy out.",
        f"Workload: one {h}x{w} image, {n:,} ATSS-550 anchors, {g} GTs "
        "(fixture case_00's 12 plus 8 mirrored). Official: the authors' "
        "PyTorch code on 2 CPU cores, median wall "
        "(`tests/fixtures/reference/maiou/cpu_timings.json`).",
        "",
        "| assigner | median ms | min ms | CPU/wall | official median ms "
        "| speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for name, stats, ref in rows:
        lines.append(
            f"| {name} | {stats['median_ms']:.2f} | {stats['min_ms']:.2f} "
            f"| {stats['cpu_per_wall']:.2f} | {ref:.1f} "
            f"| {ref / stats['median_ms']:.1f}x |")
    brute = official["bruteforce_maiou_iou_pos_pairs"]
    lines += [
        "",
        f"Official brute-force maIoU (pixel sums per IoU>0 pair): {brute:.1f} "
        "ms; target for ATSS-maIoU: <= 30 ms.",
        "",
        f"Peak memory per image (ATSS-maIoU): about {est_mb:.0f} MB of live "
        f"tensors (the float32 masks dominate; the integral image is only "
        f"evaluated on the {ky}x{kx} anchor-corner grid instead of the full "
        f"{g}x{h + 1}x{w + 1} table, {full_mb:.0f} MB as int32). Process "
        "peak-RSS increase on the first call of each function (includes "
        "tracing): "
        + ", ".join(f"{k.split(' (')[0]} {v:.0f} MB" for k, v in peaks.items())
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(MARK, text)


if __name__ == "__main__":
    main()
