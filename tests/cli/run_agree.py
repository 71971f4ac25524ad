"""Two workers choose a run folder (``training.runs.prepare_run`` under
``MultiWorkerMirroredStrategy``); argv[1] is the config, TF_CONFIG the
cluster. Prints ``FOLDER <path>``, then ``REFUSED <message>`` for a run
continued with a changed config."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import tensorflow as tf  # noqa: E402
import yaml  # noqa: E402

from orienmask_tf.config import config_to_dict  # noqa: E402
from orienmask_tf.config import load_config  # noqa: E402
from orienmask_tf.training import runs  # noqa: E402
from orienmask_tf.training.strategy import is_chief  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
chief = is_chief()
config = load_config(sys.argv[1])
folder = runs.prepare_run(config, strategy=strategy, chief=chief)
print("FOLDER", folder, flush=True)
if chief:
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump(config_to_dict(config), f)
longer = load_config(sys.argv[1], ["train.epochs=3"])
try:
    runs.prepare_run(longer, resume=True, strategy=strategy, chief=chief)
except runs.RunFolderError as error:
    message = str(error)
    print("REFUSED", message[message.find("train.epochs")
                             if "train.epochs" in message else 0:],
          flush=True)
