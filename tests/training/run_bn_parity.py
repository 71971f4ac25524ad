"""Trainable BatchNorm: one SGD step on one device and under
MirroredStrategy on two logical CPUs, from the same weights and batch.

argv[1] is JSON:
    root: data folder; out: result JSON;
    family: "orienmask" (tiny config) or "yolact" (yolact_tiny);
    variants: list of [synchronized_bn, dtype] (dtype "float32" or
        "float64": the whole network, heads included, in float64);
    batch: "distinct" (4 different images; OrienMask: detection terms only,
        every one a sum over examples) or "duplicated" (halves equal: the
        terms normalized per replica agree with one device; the full loss);
    overrides: optional extra config overrides;
    save: optional pickle path: the batch, the initial and the one-device
        weights of the first variant (for run_bn_worker.py), and the
        mirrored ones.

Writes {"<synchronized_bn>/<dtype>": parity stats} (``parity_stats`` plus
``max_weight_rel_diff``, the difference relative to the weight itself).
"""

import json
import os
import pickle
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from orienmask_tf.data.pipeline import build_dataset  # noqa: E402
from orienmask_tf.training.fit import build_train_model  # noqa: E402
from tests.training.helpers import bn_parity_config  # noqa: E402
from tests.training.helpers import parity_stats  # noqa: E402


def one_step(config, strategy, data, initial=None):
    model = build_train_model(config, strategy, 10)
    if initial is None:
        initial = model.get_weights()
    else:
        model.set_weights(initial)
    model.fit(data, epochs=1, verbose=0)
    return initial, model.get_weights()


args = json.loads(sys.argv[1])
# One strategy for every variant: a second MirroredStrategy in the process
# would reuse the collective instance keys of the first (with another dtype).
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {}
batch = None
for index, (mode, dtype) in enumerate(args["variants"]):
    config = bn_parity_config(args["family"], args["root"], mode,
                              args["batch"], args.get("overrides", ()))
    if batch is None:
        encoder = config.family.make_encoder(config, orien_dtype="float16")
        batch = next(iter(build_dataset(config, "train", encoder=encoder)))
        if args["batch"] == "duplicated":
            batch = tf.nest.map_structure(
                lambda t: tf.concat([t[:2], t[:2]], 0), batch)
    data = tf.data.Dataset.from_tensors(batch)
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    keras.utils.set_random_seed(0)
    initial, single = one_step(
        config, tf.distribute.OneDeviceStrategy("/cpu:0"), data)
    _, mirrored = one_step(config, strategy, data, initial)
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
    assert all(w.dtype == np.dtype(dtype) for w in single)
    stats = parity_stats(initial, single, mirrored)
    stats["max_weight_rel_diff"] = max(
        float(np.abs(s - m).max() / max(np.abs(s).max(), 1e-12))
        for s, m in zip(single, mirrored))
    stats["replicas"] = strategy.num_replicas_in_sync
    results[f"{mode}/{dtype}"] = stats
    print(mode, dtype, json.dumps(stats), flush=True)
    if index == 0 and args.get("save"):
        with open(args["save"], "wb") as f:
            pickle.dump({"batch": tf.nest.map_structure(np.asarray, batch),
                         "initial": initial, "single": single,
                         "mirrored": mirrored}, f)
with open(args["out"], "w") as f:
    json.dump(results, f)
