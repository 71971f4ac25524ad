"""One worker of the trainable-BatchNorm parity under
MultiWorkerMirroredStrategy (TF_CONFIG: two workers on localhost, one CPU
replica each): one SGD step from the batch and initial weights that
run_bn_parity.py saved (``save``), on the same config.

argv[1] is JSON: root, family, synchronized_bn, dtype, batch (as in
run_bn_parity.py; use "duplicated": each worker trains on one half), load
(the pickle), out (this worker's weights, a pickle).
"""

import json
import os
import pickle
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import tensorflow as tf  # noqa: E402

# Before any other TensorFlow operation.
strategy = tf.distribute.MultiWorkerMirroredStrategy()

import keras  # noqa: E402

from orienmask_tf.training.fit import build_train_model  # noqa: E402
from orienmask_tf.training.strategy import distributed_dataset  # noqa: E402
from tests.training.helpers import bn_parity_config  # noqa: E402

args = json.loads(sys.argv[1])
with open(args["load"], "rb") as f:
    saved = pickle.load(f)
config = bn_parity_config(args["family"], args["root"],
                          args["synchronized_bn"], args["batch"])
keras.config.set_floatx(args["dtype"])
keras.config.set_dtype_policy(args["dtype"])
model = build_train_model(config, strategy, 10)
model.set_weights(saved["initial"])
batch = saved["batch"]
# Both workers read the whole (duplicated) global batch; Keras gives each
# its per-replica half.
dataset = distributed_dataset(
    strategy, lambda ctx: tf.data.Dataset.from_tensors(batch))
model.fit(dataset, epochs=1, verbose=0)
with open(args["out"], "wb") as f:
    pickle.dump({"replicas": strategy.num_replicas_in_sync,
                 "weights": model.get_weights()}, f)
print("STEPPED", strategy.num_replicas_in_sync)
