"""Fault injection on a tiny ``orienmask-tf train`` run (used by
test_fault_injection.py and scripts/fault_injection.py).

A run is the CLI in a fresh process on the 64 px shapes data, 3 epochs of
3 steps, a backup after every step. Faults: ``fault`` sets
``ORIENMASK_TF_FAULT`` (``training.backup.fault_point``: SIGKILL or an
``OSError`` at a stage of the backup of a chosen position);
``kill_after`` sends SIGKILL from outside after that many seconds from
the process's "run folder" line (any moment: tracing, a step, a write).
"""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from tests.testing import CONFIGS_DIR
from tests.testing import REPO_DIR
from tests.training.helpers import TINY_OVERRIDES
from tests.training.helpers import make_data

EPOCHS, STEPS = 3, 3
TOTAL = EPOCHS * STEPS


def train_argv(root, output):
    overrides = TINY_OVERRIDES + make_data(root) + [
        f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}",
        "train.backup_every=1"]
    argv = [sys.executable, "-m", "orienmask_tf.cli", "train", "--config",
            str(CONFIGS_DIR / "tiny.yaml"), "--output", str(output),
            "--verbose", "2", "--quiet", "--no-eval", "--device", "cpu"]
    for value in overrides:
        argv += ["--set", value]
    return argv


class Run:
    """One ``train`` process: ``code``, ``out`` (stdout), ``err``
    (stderr), ``seconds`` (wall time from start), ``killed_at`` (seconds
    after "run folder" when ``kill_after`` fired, else None)."""

    def __init__(self, root, output, fault=None, kill_after=None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=str(REPO_DIR))
        env.pop("ORIENMASK_TF_FAULT", None)
        if fault:
            env["ORIENMASK_TF_FAULT"] = fault
        self.kill_after = kill_after
        self.killed_at = None
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            train_argv(root, output), cwd=str(REPO_DIR), env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out, self._err = [], []
        self._began = threading.Event()
        readers = [threading.Thread(target=self._read, args=(
            self.process.stdout, self._out, True), daemon=True),
            threading.Thread(target=self._read, args=(
                self.process.stderr, self._err, False), daemon=True)]
        for reader in readers:
            reader.start()
        self._readers = readers
        if kill_after is not None:
            threading.Thread(target=self._kill, daemon=True).start()

    def _read(self, stream, lines, watch):
        for line in stream:
            lines.append(line)
            if watch and line.startswith("run folder"):
                self._began.set()

    def _kill(self):
        if not self._began.wait(600):
            return
        began = time.monotonic()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=self.kill_after)
            except subprocess.TimeoutExpired:
                self.killed_at = time.monotonic() - began
                self.process.send_signal(signal.SIGKILL)

    def wait(self, timeout=600):
        self.code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(10)
        self.seconds = time.monotonic() - self.started
        self.out, self.err = "".join(self._out), "".join(self._err)
        return self


def final_variables(run_dir):
    """Every model and optimizer variable of the newest backup of a run
    (the end of training once it finished), checksums checked."""
    from orienmask_tf.training import backup

    path, state = backup.latest(os.path.join(str(run_dir), "backup"))
    assert state["position"] == TOTAL, (path, state)
    return backup.read_variables(path, state)


def identical(a, b):
    """Whether two runs' variables are bit-identical; ``(bool, detail)``."""
    if sorted(a) != sorted(b):
        return False, "different variable lists"
    worst = max(float(np.max(np.abs(a[k].astype(np.float64)
                                    - b[k].astype(np.float64)), initial=0))
                for k in a)
    same = all(np.array_equal(a[k], b[k]) for k in a)
    return same, f"max |diff| {worst:.3g} over {len(a)} variables"


def backup_listing(run_dir):
    folder = os.path.join(str(run_dir), "backup")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
