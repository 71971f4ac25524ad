"""One training step on one device and under MirroredStrategy on two logical
CPUs, from the same weights and batch; writes both weight lists (npz)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..'))

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from orienmask_tf.data.pipeline import build_dataset  # noqa: E402
from orienmask_tf.training.fit import build_train_model  # noqa: E402
from tests.training.helpers import parity_stats  # noqa: E402
from tests.training.helpers import tiny_config  # noqa: E402

args = json.loads(sys.argv[1])
results = {}
# "detection": distinct examples, orientation weights 0 (every detection
# item is a sum over examples / batch, so one device == two replicas).
# "duplicated": the full loss on a batch whose halves are equal: the
# orientation items are normalized per replica (foreground pixel count,
# positives), as in the official multi-GPU training, and agree with one
# device only when both halves have the same counts.
for variant in ("detection", "duplicated"):
    weights = ("loss.weights=[1,1,1,1,1,0,0]" if variant == "detection"
               else "loss.weights=[1,1,1,1,1,20,20]")
    # BatchNorm frozen: parity of the loss scaling, all-reduce and optimizer
    # without BN updates. Trainable BatchNorm: test_batch_norm_parity.py
    # (Keras sync BN agrees in float64 but in float32 depends on the replica
    # count by rounding, which LeakyReLU amplifies; split_invariant agrees).
    config = tiny_config(args["root"], "train.freeze_bn=true",
                         "train.batch_size=4", "train.clip_norm=0", weights)
    dataset = build_dataset(config, "train",
                            encoder=config.family.make_encoder(
                                config, orien_dtype="float16"))
    batch = next(iter(dataset))
    if variant == "duplicated":
        batch = tf.nest.map_structure(
            lambda t: tf.concat([t[:2], t[:2]], 0), batch)
    data = tf.data.Dataset.from_tensors(batch)

    keras.utils.set_random_seed(0)
    single = build_train_model(
        config, tf.distribute.OneDeviceStrategy("/cpu:0"), 10)
    initial = single.get_weights()
    single.fit(data, epochs=1, verbose=0)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored = build_train_model(config, strategy, 10)
    mirrored.set_weights(initial)
    history = mirrored.fit(data, epochs=1, verbose=0)
    results[variant] = {
        "replicas": strategy.num_replicas_in_sync,
        "loss": float(history.history["loss"][0]),
        **parity_stats(initial, single.get_weights(),
                       mirrored.get_weights())}
with open(args["out"], "w") as f:
    json.dump(results, f)
print(json.dumps(results))
