"""``train()`` on the tiny shapes config in a fresh process.

argv[1] is JSON: ``root`` (data folder), ``output_dir``, ``overrides``,
optional ``kill_at_step`` (SIGKILL itself after that global step, once the
backup of the step is written) and ``record`` (a JSON file: the epoch and
step at which training (re)started, the optimizer step then and at the end,
and the losses).
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from orienmask_tf.training import train  # noqa: E402
from tests.training.helpers import tiny_config  # noqa: E402


class Probe(keras.callbacks.Callback):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.start = None
        self.steps = 0

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = {
                "global_step": int(self.model.optimizer.iterations.numpy()),
                "weights": float(sum(np.abs(w).sum()
                                     for w in self.model.get_weights()))}

    def on_epoch_begin(self, epoch, logs=None):
        self.start.setdefault("epoch", epoch)

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        step = int(self.model.optimizer.iterations.numpy())
        if step == self.args.get("kill_at_step"):
            with open(self.args["record"], "w") as f:
                json.dump({"killed_at": step, "weights": float(sum(
                    np.abs(w).sum() for w in self.model.get_weights()))}, f)
            os.kill(os.getpid(), signal.SIGKILL)


keras.config.disable_traceback_filtering()
args = json.loads(sys.argv[1])
config = tiny_config(args["root"], *args.get("overrides", []))
probe = Probe(args)
summary = train(config, output_dir=args["output_dir"],
                extra_callbacks=[probe], verbose=args.get("verbose", 2))
if args.get("record"):
    with open(args["record"], "w") as f:
        model = summary["model_object"]
        json.dump({"start": probe.start, "steps_run": probe.steps,
                   "global_step": summary["global_step"],
                   "final_weights": [float(np.abs(w).sum())
                                     for w in model.get_weights()],
                   "history": summary["history"]}, f)
print("TRAINED", summary["global_step"])
