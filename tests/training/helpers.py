"""Tiny training setups for the training tests (64 px shapes data)."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.testing import CONFIGS_DIR
from tests.testing import REPO_DIR


def make_data(root, num_train=8, num_val=4, size=64):
    """Synthetic shapes (5 classes) under ``root``; returns --set overrides."""
    from orienmask_tf.data import make_shapes

    out = os.path.join(str(root), "shapes")
    if not os.path.exists(os.path.join(out, "annotations")):
        make_shapes(out, num_train=num_train, num_val=num_val,
                    image_size=(size, size), seed=0, mean_instances=3.0)
    return [f"data.train_annotations={out}/annotations/instances_train.json",
            f"data.train_images={out}/train",
            f"data.val_annotations={out}/annotations/instances_val.json",
            f"data.val_images={out}/val"]


TINY_OVERRIDES = [
    "model.num_classes=5", "image_size=[64,64]", "data.max_instances=10",
    "data.shuffle_buffer=16", "data.deterministic=true",
    "data.num_parallel_calls=1", "train.batch_size=2",
    "train.learning_rate=0.002", "train.warmup_iters=0",
    "train.eval_every=0", "train.tensorboard_images=0"]


def tiny_config(root, *overrides):
    from orienmask_tf.config import load_config

    return load_config(CONFIGS_DIR / "tiny.yaml",
                       TINY_OVERRIDES + make_data(root) + list(overrides))


def run_script(script, args, env=None, timeout=300):
    """Run ``tests/training/<script>`` in a fresh Python (own TF devices)."""
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                    PYTHONPATH=str(REPO_DIR), **(env or {}))
    return subprocess.Popen(
        [sys.executable, str(REPO_DIR / "tests" / "training" / script),
         json.dumps(args)], env=full_env, cwd=str(REPO_DIR),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def parity_stats(initial, single, mirrored):
    """One step from ``initial`` weights on one device vs. under a
    strategy: the largest update and the largest difference between the two
    results, absolute and relative to the update of its weight.

    The relative difference divides by the weight's own update, but by no
    less than 1 % of the largest update of the step: a weight that barely
    moves (e.g. 1e-6 against 0.07 elsewhere) differs by float32 rounding of
    its gradient sum (~1e-9), which says nothing about the loss scaling this
    measures (a 2x-gradient bug gives ~1 on every weight).
    """
    pairs = list(zip(initial, single, mirrored))
    max_change = max(float(np.abs(s - i).max()) for i, s, _ in pairs)
    floor = 1e-2 * max_change + 1e-12
    return {
        "max_change": max_change,
        "max_diff": max(float(np.abs(s - m).max()) for _, s, m in pairs),
        "max_rel_diff": max(float(np.abs(s - m).max()
                                  / max(np.abs(s - i).max(), floor))
                            for i, s, m in pairs),
        # The same beyond 2 ulps of the updated weight: a gradient that
        # differs by float32 summation order (~1e-7) can round w - lr * g
        # to the neighbouring float, one ulp of w (6e-8 at 0.5) against an
        # update of a few 1e-3.
        "max_rel_diff_past_rounding": max(
            float(np.maximum(np.abs(s - m) - 2 * np.spacing(np.abs(s)),
                             0).max() / max(np.abs(s - i).max(), floor))
            for i, s, m in pairs)}


def bn_parity_config(family, root, synchronized_bn, batch="distinct",
                     overrides=()):
    """Tiny OrienMask / YOLACT with trainable BatchNorm of the given
    ``synchronized_bn`` mode, batch 4, plain SGD step (no clipping):
    the configs of the BatchNorm parity scripts (run_bn_parity.py,
    run_bn_worker.py). ``batch="distinct"`` gives OrienMask the detection
    terms only (every one a sum over examples); YOLACT's terms are
    normalized per replica and are compared on duplicated halves.
    ``overrides``: more ``--set`` values (appended)."""
    from orienmask_tf.config import load_config

    mode = {True: "true", False: "false"}.get(synchronized_bn,
                                               synchronized_bn)
    common = ["train.freeze_bn=false", "train.batch_size=4",
              "train.clip_norm=0", "train.optimizer=sgd",
              f"model.synchronized_bn={mode}", *overrides]
    if family == "orienmask":
        weights = ("loss.weights=[1,1,1,1,1,0,0]" if batch == "distinct"
                   else "loss.weights=[1,1,1,1,1,20,20]")
        return tiny_config(root, weights, *common)
    return load_config(
        CONFIGS_DIR / "yolact_tiny.yaml",
        make_data(os.path.join(str(root), "yolact"), num_train=8, num_val=2,
                  size=96)
        + ["model.num_classes=5", "data.max_instances=10",
           "data.deterministic=true", "data.num_parallel_calls=1",
           "train.learning_rate=0.01"] + common)


def free_ports(count):
    """``count`` free localhost TCP ports (for multi-worker test clusters)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports
