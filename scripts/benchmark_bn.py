"""Cost of the BatchNorm modes: CPU training-step time on one device with
``model.synchronized_bn`` false (plain BatchNorm), true (Keras cross-replica
BatchNorm) and ``split_invariant`` (``SplitInvariantBatchNorm``: two-pass
float64 statistics and backward sums).

A step is forward + backward + SGD update of the whole network in
``tf.function`` (training mode: batch statistics and moving averages) with a
sum-of-squares loss on every output, so the time is the network's and the
differences are the BatchNorm layers'. Writes the ``benchmark_bn`` section
of BENCHMARKS.md (or ``--output``) and prints it.

    .venv/bin/python scripts/benchmark_bn.py --output /tmp/bn.md
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from orienmask_tf.config import load_config  # noqa: E402

from benchmark_utils import BENCHMARKS_MD  # noqa: E402
from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

MARK = "benchmark_bn"
MODES = (False, True, "split_invariant")
# name -> (config, overrides, batch)
SETUPS = {
    "OrienMask tiny (width 4, 64x96)": ("tiny.yaml", [], 4),
    "OrienMask mid (width 16, blocks 1-2-2-2-1, 256x256)": (
        "tiny.yaml", ["model.width=16", "model.stackwise_num_blocks=[1,2,2,2,1]",
                      "image_size=[256,256]"], 4),
    "YOLACT tiny (96x128)": ("yolact_tiny.yaml", [], 4),
    "YOLACT mid (stem 32, base 16, blocks 1-2-2-1, FPN 64, 256x256)": (
        "yolact_tiny.yaml", ["model.stem_channels=32", "model.base_channels=16",
                             "model.stackwise_num_blocks=[1,2,2,1]",
                             "model.fpn_channels=64", "model.feat_channels=64",
                             "model.proto_channels=64", "image_size=[256,256]"],
        4),
    "OrienMask paper network (fpn_plus, width 32, 128x128)": (
        "orienmask_yolo_fpnplus_coco_544_anchor4.yaml", ["image_size=[128,128]"],
        2),
    "YOLACT ResNet-50 paper network (128x128)": (
        "yolact_r50_550_atss_maiou.yaml", ["image_size=[128,128]"], 2),
}


def _step_fn(network):
    optimizer = keras.optimizers.SGD(1e-5)
    optimizer.build(network.trainable_variables)

    @tf.function
    def step(images):
        with tf.GradientTape() as tape:
            outputs = network(images, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(tf.cast(v, tf.float32)))
                             for v in tf.nest.flatten(outputs)])
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply(grads, network.trainable_variables)
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", nargs="+", choices=range(len(SETUPS)),
                        type=int, default=list(range(len(SETUPS))),
                        help="indices into the setups (default: all)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--output", default=str(BENCHMARKS_MD))
    args = parser.parse_args()

    rows = []
    for index, (name, (config_name, overrides, batch)) in enumerate(
            SETUPS.items()):
        if index not in args.setups:
            continue
        steps = {}
        for mode in MODES:
            value = {False: "false", True: "true"}.get(mode, mode)
            config = load_config(REPO / "configs" / config_name,
                                 overrides + [f"model.synchronized_bn={value}"])
            height, width = config.image_size
            keras.utils.set_random_seed(0)
            network = config.family.build_network(config)
            images = tf.constant(np.random.default_rng(0).uniform(
                0, 1, (batch, height, width, 3)).astype(np.float32))
            step = _step_fn(network)
            steps[mode] = (lambda s=step, x=images: s(x).numpy())
            for _ in range(args.warmup):
                steps[mode]()
        # Interleaved rounds (one step of each mode per round), so that a
        # change of machine load hits every mode alike.
        samples = {mode: [] for mode in MODES}
        for _ in range(args.runs):
            for mode in MODES:
                start = time.perf_counter()
                steps[mode]()
                samples[mode].append(time.perf_counter() - start)
        times = {mode: 1e3 * statistics.median(samples[mode])
                 for mode in MODES}
        for mode in MODES:
            print(f"{name} synchronized_bn={mode}: {times[mode]:.1f} ms",
                  flush=True)
        base = times[False]
        rows.append(f"| {name} | {batch} | {times[False]:.1f} | "
                    f"{times[True]:.1f} ({times[True] / base - 1:+.0%}) | "
                    f"{times['split_invariant']:.1f} "
                    f"({times['split_invariant'] / base - 1:+.0%}) |")
    text = "\n".join([
        "## BatchNorm modes: training-step cost (`scripts/benchmark_bn.py`)",
        "",
        f"{describe_machine()}; {timestamp()}. One device, float32, "
        "`tf.function` forward + backward + SGD update in training mode "
        "(sum-of-squares loss on every output), median of "
        f"{args.runs} steps (the modes interleaved) after {args.warmup} "
        "warm-up steps. On one device "
        "the synchronized modes all-reduce nothing; `split_invariant` pays "
        "for its float64 two-pass statistics and float64 backward sums.",
        "",
        "| network | batch | `synchronized_bn: false` (ms) | `true` (ms) | "
        "`split_invariant` (ms) |",
        "|---|---|---|---|---|",
        *rows])
    write_section(MARK, text, args.output)
    print(text)


if __name__ == "__main__":
    main()
