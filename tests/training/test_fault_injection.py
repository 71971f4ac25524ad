"""Fast fault-injection subset: one tiny run (3 epochs x 3 steps, a backup
after every step) hit by a kill -9 during a backup write in the middle of
epoch 2, a full disk at a later write and a kill at a random moment, each
resumed with the same ``train`` command, ends bit-identical (every weight
and optimizer variable) to the same run never interrupted.
scripts/fault_injection.py runs many more cases (BENCHMARKS.md)."""

import os
import random

from orienmask_tf import cli
from tests.training import faults


def test_killed_and_failed_runs_resume_to_identical_weights(tmp_path,
                                                           capsys):
    root, run = tmp_path, tmp_path / "run"
    faults.make_data(root)
    whole = faults.Run(root, tmp_path / "whole")  # in parallel

    # kill -9 while writing the backup of step 5 (epoch 2, step 2 of 3).
    first = faults.Run(root, run, fault="kill:variables:5")
    assert first._began.wait(600), first.wait().err[-3000:]
    # A second train on the folder while the first runs: refused.
    assert cli.main(train_args(root, run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another training run is using this folder " \
        f"(pid {first.process.pid}" in err[0], err
    first.wait()
    assert first.code == -9, first.err[-3000:]
    assert faults.backup_listing(run) == [
        f".tmp-step-000000005-{first.process.pid}", "step-000000003",
        "step-000000004"]

    # Resumed mid-epoch 2; the disk is full at the write of step 7.
    full = faults.Run(root, run, fault="enospc:state:7").wait()
    assert "resuming from" in full.out and "epoch 2, step 1 (optimizer " \
        "step 4; step-000000004)" in full.out, full.out
    assert f"taking over the lock of pid {first.process.pid}" in full.err
    assert full.code == 2 and "Traceback" not in full.err, full.err[-3000:]
    assert full.err.strip().splitlines()[-1] == (
        f"orienmask-tf train: error: {run}/backup/step-000000007: cannot "
        "write the backup (No space left on device); the last complete "
        f"backup, {run}/backup/step-000000006, is kept (free space or fix "
        "the permissions, then continue with --resume)")
    assert faults.backup_listing(run) == ["step-000000005", "step-000000006"]

    # Killed at a random moment of the next attempt (or not, if it ends
    # first), then continued to the end.
    delay = random.Random(os.getpid()).uniform(0.3, 1.0) * full.seconds
    again = faults.Run(root, run, kill_after=delay).wait()
    if again.code != 0:
        assert again.code == -9, again.err[-3000:]
        last = faults.Run(root, run).wait()
        assert last.code == 0, last.err[-3000:]
    assert not os.path.exists(run / "run.lock")
    assert faults.backup_listing(run) == ["step-000000008", "step-000000009"]

    assert whole.wait().code == 0, whole.err[-3000:]
    same, detail = faults.identical(faults.final_variables(tmp_path / "whole"),
                                    faults.final_variables(run))
    assert same, detail


def train_args(root, run):
    # The CLI arguments of faults.train_argv, for an in-process call.
    argv = faults.train_argv(root, run)
    return argv[argv.index("train"):]
