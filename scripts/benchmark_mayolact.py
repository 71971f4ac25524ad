"""maYOLACT-550 vs YOLACT-550 (ATSS-maIoU, fixed IoU): end-to-end CPU latency
of the exported SavedModels, measured in one run -> BENCHMARKS.md.

The three presets (``mayolact_r50_550``, ``yolact_r50_550_atss_maiou``,
``yolact_r50_550_fixed_iou``; 80 classes, random weights: latency does not
depend on them) are exported as the XLA SavedModel that `orienmask-tf export`
writes and timed on the same 640x480 uint8 image (resize, normalisation,
network, decoding and masks inside the graph), in alternating blocks so that
load changes hit every model alike. The paper reports maYOLACT-550 faster
than fixed-IoU YOLACT-550 on a V100 (30 vs 27 fps, Table 4) because it has
fewer anchors (12.8K vs 19.2K) despite DCNv2 and CARAFE.

    .venv/bin/python scripts/benchmark_mayolact.py [--blocks 5 --runs 3] [--output FILE]
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import orienmask_tf as om  # noqa: E402

from benchmark_utils import BENCHMARKS_MD  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

PRESETS = ("mayolact_r50_550", "yolact_r50_550_atss_maiou",
           "yolact_r50_550_fixed_iou")
PAPER_FPS = {"mayolact_r50_550": 30, "yolact_r50_550_atss_maiou": 33,
             "yolact_r50_550_fixed_iou": 27}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5,
                        help="alternating rounds over the models")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed calls per model per round")
    parser.add_argument("--output", default=str(BENCHMARKS_MD))
    args = parser.parse_args()

    image = np.random.RandomState(0).randint(0, 256, (1, 480, 640, 3),
                                             dtype=np.uint8)
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in PRESETS:
            seg = om.from_preset(name)
            anchors = len(seg.config.anchor_array())
            params = int(sum(np.prod(w.shape)
                             for w in seg.network.trainable_weights))
            start = time.perf_counter()
            path = seg.export("saved_model", output=tmp, model_name=name)
            serve = tf.saved_model.load(path).signatures["serving_default"]
            serve(images=tf.constant(image))  # compile
            models[name] = dict(serve=serve, anchors=anchors, params=params,
                                prepare=time.perf_counter() - start,
                                times=[])
            print(f"{name}: exported and compiled in "
                  f"{models[name]['prepare']:.0f} s", flush=True)
        for block in range(args.blocks):
            for name, model in models.items():
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    out = model["serve"](images=tf.constant(image))
                    _ = {k: v.numpy() for k, v in out.items()}
                    model["times"].append(1e3 * (time.perf_counter() - t0))
            print(f"block {block + 1}/{args.blocks}", flush=True)

    reference = statistics.median(models["yolact_r50_550_fixed_iou"]["times"])
    lines = [
        "## maYOLACT-550 vs YOLACT-550, end to end on the CPU "
        "(XLA SavedModel)",
        "",
        f"`scripts/benchmark_mayolact.py`, {timestamp()}; "
        f"{describe_machine()}; 80 classes, random weights, batch 1, one "
        "640x480 uint8 image in (resize, normalisation, network, decoding, "
        f"masks inside the graph); {args.blocks} alternating blocks x "
        f"{args.runs} runs per model, medians.",
        "",
        "| model | anchors at 550 | parameters | median ms | min ms | "
        "vs fixed-IoU YOLACT-550 | paper fps (V100) |",
        "|---|---|---|---|---|---|---|"]
    for name, model in models.items():
        median = statistics.median(model["times"])
        lines.append(
            f"| `{name}` | {model['anchors']:,} | {model['params']:,} | "
            f"{median:.0f} | {min(model['times']):.0f} | "
            f"{median / reference:.2f}x | {PAPER_FPS[name]} |")
    lines += ["", "The ratio column divides by the fixed-IoU model's median "
              "measured in the same run."]
    text = "\n".join(lines)
    print(text)
    write_section("benchmark_mayolact", text, path=args.output)


if __name__ == "__main__":
    main()
