"""One YOLACT training step on one device and under MirroredStrategy on two
logical CPUs, from the same weights and batch (tiny config, ATSS-maIoU
targets from the shapes pipeline); writes the weight differences (JSON).

The batch's halves are equal: the YOLACT terms are normalised per replica
(positives, masks, pixels), as in the official multi-GPU training, so they
agree with one device when both replicas see the same counts. BatchNorm is
frozen (see tests/training/run_parity.py).
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from orienmask_tf.config import load_config  # noqa: E402
from orienmask_tf.data.pipeline import build_dataset  # noqa: E402
from orienmask_tf.training.fit import build_train_model  # noqa: E402
from tests.testing import CONFIGS_DIR  # noqa: E402
from tests.training.helpers import parity_stats  # noqa: E402
from tests.training.helpers import make_data  # noqa: E402

args = json.loads(sys.argv[1])
config = load_config(
    CONFIGS_DIR / "yolact_tiny.yaml",
    make_data(args["root"], num_train=8, num_val=2, size=96)
    + ["model.num_classes=5", "data.max_instances=10",
       "data.deterministic=true", "data.num_parallel_calls=1",
       "train.freeze_bn=true", "train.batch_size=4", "train.clip_norm=0",
       "train.optimizer=sgd", "train.learning_rate=0.01"])
encoder = config.family.make_encoder(config, orien_dtype="float16")
dataset = build_dataset(config, "train", encoder=encoder)
batch = tf.nest.map_structure(lambda t: tf.concat([t[:2], t[:2]], 0),
                              next(iter(dataset)))
data = tf.data.Dataset.from_tensors(batch)

keras.utils.set_random_seed(0)
single = build_train_model(config, tf.distribute.OneDeviceStrategy("/cpu:0"),
                           10)
initial = single.get_weights()
single.fit(data, epochs=1, verbose=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored = build_train_model(config, strategy, 10)
mirrored.set_weights(initial)
mirrored.fit(data, epochs=1, verbose=0)
result = {"replicas": strategy.num_replicas_in_sync,
          **parity_stats(initial, single.get_weights(),
                         mirrored.get_weights())}
with open(args["out"], "w") as f:
    json.dump(result, f)
print(json.dumps(result))
