"""DCNv2 `DeformConv2D` vs a plain 3x3 Conv2D of the same shape: CPU latency.

Each row times, in the same run and interleaved (so load changes hit both):

* ``conv``: a plain 3x3 ``Conv2D`` (torch-style symmetric padding, no bias);
* ``DCNv2 layer``: ``DeformConv2D`` = offset conv (``3·G·9`` channels) +
  sampling + the main contraction, i.e. what a ResNet DCN block costs;
* ``DCNv2 op``: ``modulated_deform_conv2d`` alone, given offsets and mask;
* with ``--backward`` (default on): a training step of the layer and of the
  conv, i.e. forward plus the gradients of ``sum(y²)`` w.r.t. the input and
  every weight.

under ``tf.function(jit_compile=True)`` (XLA) and plain ``tf.function``. The
``conv_offset`` weights are random (offsets with std ~1.5 px, like the
reference fixtures), so sampling really is deformed. The shapes include the
maYOLACT ResNet-50 DCNs at 550 (``deformable_groups=4``; the first block of a
stage has stride 2). Writes a table between this script's markers in
``--output`` (default BENCHMARKS.md) and prints it.

    .venv/bin/python scripts/benchmark_dcn.py --output /tmp/dcn_bench.md
    .venv/bin/python scripts/benchmark_dcn.py --shapes layer2 --runs 3 \\
        --rounds 1 --output /tmp/smoke.md                       # smoke test
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from orienmask_tf.layers.deform_conv import DeformConv2D  # noqa: E402
from orienmask_tf.layers.deform_conv import modulated_deform_conv2d  # noqa: E402

from benchmark_utils import BENCHMARKS_MD  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import measure  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

MARK = "benchmark_dcn"
MODES = ("xla", "function")
# name: (H, W, C, Cout, deformable_groups, stride, note)
SHAPES = {
    "layer2": (69, 69, 128, 128, 4, 1, "maYOLACT-550 layer2.1-3 conv2"),
    "layer2.0": (138, 138, 128, 128, 4, 2,
                 "maYOLACT-550 layer2.0 conv2 (stride 2)"),
    "layer3": (35, 35, 256, 256, 4, 1, "maYOLACT-550 layer3.1-5 conv2"),
    "layer3.0": (69, 69, 256, 256, 4, 2,
                 "maYOLACT-550 layer3.0 conv2 (stride 2)"),
    "layer4": (18, 18, 512, 512, 4, 1, "maYOLACT-550 layer4.1-2 conv2"),
    "64x64": (64, 64, 128, 128, 4, 1, "generic"),
    "64x64-G1": (64, 64, 256, 256, 1, 1, "generic, one deformable group"),
}


def build(shape, batch, seed=0):
    height, width, channels, filters, dgroups, stride, _ = shape
    rng = np.random.RandomState(seed)
    x = tf.constant(rng.standard_normal(
        (batch, height, width, channels)).astype(np.float32))
    dcn = DeformConv2D(filters, 3, strides=stride, padding=1,
                       deformable_groups=dgroups, use_bias=False)
    dcn.build(x.shape)
    # Offsets with std ~1.5 px (inputs ~N(0, 1), 9·C inputs per output).
    fan_in = 9 * channels
    dcn.conv_offset.kernel.assign(
        rng.standard_normal(dcn.conv_offset.kernel.shape).astype(np.float32)
        * 1.5 / np.sqrt(fan_in))
    conv = keras.layers.Conv2D(filters, 3, strides=stride, padding="valid",
                               use_bias=False)
    conv.build((batch, height + 2, width + 2, channels))
    conv.kernel.assign(dcn.kernel)
    offset, mask = dcn.offset_and_mask(x)
    return x, dcn, conv, offset, mask


def pad1(x):
    return tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])


def train_step(layer, forward):
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x] + layer.trainable_weights)
    return step


def time_row(shape, batch, mode, warmup, runs, rounds, backward):
    x, dcn, conv, offset, mask = build(shape, batch)
    jit = mode == "xla"
    stride = shape[5]
    fns = {
        "conv": tf.function(lambda t: conv(pad1(t)), jit_compile=jit),
        "layer": tf.function(lambda t: dcn(t), jit_compile=jit),
        "op": tf.function(
            lambda t, o, m: modulated_deform_conv2d(
                t, o, m, dcn.kernel, None, strides=stride, padding=1,
                deformable_groups=shape[4]), jit_compile=jit),
    }
    calls = {
        "conv": lambda: fns["conv"](x).numpy(),
        "layer": lambda: fns["layer"](x).numpy(),
        "op": lambda: fns["op"](x, offset, mask).numpy(),
    }
    if backward:
        steps = {
            "conv_train": tf.function(
                train_step(conv, lambda t: conv(pad1(t))), jit_compile=jit),
            "layer_train": tf.function(train_step(dcn, dcn), jit_compile=jit),
        }
        for name, step in steps.items():
            calls[name] = (lambda step=step: [g.numpy() for g in step(x)])
    # Sanity: the op and the layer agree, and the output is deformed.
    np.testing.assert_allclose(calls["layer"](), calls["op"](), rtol=1e-4,
                               atol=1e-4)
    medians = {name: [] for name in calls}
    for name, call in calls.items():  # compile + warm up
        measure(call, warmup, 1)
    for _ in range(rounds):  # interleaved, so load changes hit all three
        for name, call in calls.items():
            medians[name].append(measure(call, 0, runs)["median_ms"])
    return {name: statistics.median(v) for name, v in medians.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES),
                        choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=list(MODES),
                        choices=MODES)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of --runs calls each; the "
                             "table shows the median of the round medians")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-backward", dest="backward",
                        action="store_false",
                        help="skip the training-step (forward + backward) "
                             "columns")
    parser.add_argument("--output", default=str(BENCHMARKS_MD),
                        help="markdown file whose benchmark_dcn section is "
                             "replaced (default: BENCHMARKS.md)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table without writing --output")
    args = parser.parse_args()

    lines = [
        "## DCNv2 (DeformConv2D) vs plain 3x3 Conv2D, CPU",
        "",
        f"{describe_machine()}; {timestamp()}. Batch {args.batch}, float32, "
        f"median ms (median of {args.rounds} interleaved rounds of "
        f"{args.runs} calls). `layer` = `DeformConv2D` with its offset conv "
        "(3·G·9 channels); `op` = `modulated_deform_conv2d` given offsets "
        "and mask. Ratios are against the plain conv of the same shape in the "
        "same mode. `xla` = `tf.function(jit_compile=True)`, `function` = "
        "plain `tf.function`."
        + (" `train` = forward + gradients of sum(y²) w.r.t. the input and "
           "all weights." if args.backward else ""),
        "",
        "| shape | in → out | G | s | mode | conv ms | layer ms | layer / conv "
        "| op ms | op / conv |"
        + (" conv train ms | layer train ms | train ratio |"
           if args.backward else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        + (" --- | --- | --- |" if args.backward else ""),
    ]
    for name in args.shapes:
        shape = SHAPES[name]
        height, width, channels, filters, dgroups, stride, note = shape
        out_h = (height + 2 - 3) // stride + 1
        out_w = (width + 2 - 3) // stride + 1
        for mode in args.modes:
            t = time_row(shape, args.batch, mode, args.warmup, args.runs,
                         args.rounds, args.backward)
            row = (f"| {name} | {height}×{width}×{channels} → "
                   f"{out_h}×{out_w}×{filters} | {dgroups} | {stride} | {mode} "
                   f"| {t['conv']:.2f} | {t['layer']:.2f} "
                   f"| {t['layer'] / t['conv']:.2f} | {t['op']:.2f} "
                   f"| {t['op'] / t['conv']:.2f} |")
            if args.backward:
                row += (f" {t['conv_train']:.2f} | {t['layer_train']:.2f} "
                        f"| {t['layer_train'] / t['conv_train']:.2f} |")
            print(row, flush=True)
            lines.append(row)
    lines += ["", "Shapes: " + "; ".join(
        f"{n}: {SHAPES[n][6]}" for n in args.shapes) + "."]
    text = "\n".join(lines)
    print()
    print(text)
    if not args.no_write:
        write_section(MARK, text, args.output)
        print(f"\nwrote section {MARK} of {args.output}")


if __name__ == "__main__":
    main()
