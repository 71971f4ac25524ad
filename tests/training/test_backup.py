import json
import logging
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from orienmask_tf import cli
from orienmask_tf.training import backup
from orienmask_tf.training import runs
from tests.testing import CONFIGS_DIR


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="mse")
    return model


def _train(model, steps):
    x = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    model.fit(x, x[:, :1], batch_size=4, epochs=1, steps_per_epoch=steps,
              verbose=0, shuffle=False)


def _all_variables(model):
    model_vars, optimizer_vars = backup.model_variables(model)
    return [np.array(v) for v in model_vars + optimizer_vars]


def _write(model, folder, position, steps_per_epoch=4):
    return backup.write(model, str(folder), position // steps_per_epoch,
                        position % steps_per_epoch, position, steps_per_epoch)


def test_restore_gives_back_every_variable_and_the_counters(tmp_path):
    model = _model()
    _train(model, 2)
    path = _write(model, tmp_path, 6)
    assert os.path.basename(path) == "step-000000006"
    assert sorted(os.listdir(path)) == ["COMPLETE", "state.json",
                                        "variables.npz"]
    other = _model(seed=5)
    other.optimizer.build(other.trainable_variables)
    before = _all_variables(other)
    found = backup.latest(str(tmp_path))
    assert found[0] == path
    state = found[1]
    assert (state["epoch"], state["step"], state["position"],
            state["global_step"]) == (1, 2, 6, 2)
    backup.restore(other, *found)
    restored = _all_variables(other)
    assert any(not np.array_equal(a, b) for a, b in zip(before, restored))
    for a, b in zip(_all_variables(model), restored):
        np.testing.assert_array_equal(a, b)  # momenta and iterations too
    # Continuing both gives the same weights.
    _train(model, 1)
    _train(other, 1)
    for a, b in zip(_all_variables(model), _all_variables(other)):
        np.testing.assert_array_equal(a, b)


def test_only_the_newest_two_complete_backups_are_kept(tmp_path):
    model = _model()
    (tmp_path / ".tmp-step-000000002-99999").mkdir()  # a dead writer's
    for position in (1, 2, 3, 4):
        _write(model, tmp_path, position)
    assert sorted(os.listdir(tmp_path)) == ["step-000000003",
                                            "step-000000004"]


@pytest.mark.parametrize("damage", [
    "truncated_variables", "flipped_byte", "no_marker", "empty_marker",
    "garbled_state", "missing_variables"])
def test_a_damaged_newest_backup_falls_back_with_a_warning(tmp_path, caplog,
                                                           damage):
    model = _model()
    _write(model, tmp_path, 3)
    newest = _write(model, tmp_path, 4)
    variables = os.path.join(newest, "variables.npz")
    if damage == "truncated_variables":
        with open(variables, "r+b") as stream:
            stream.truncate(100)
    elif damage == "flipped_byte":
        with open(variables, "r+b") as stream:
            stream.seek(-10, os.SEEK_END)
            byte = stream.read(1)
            stream.seek(-10, os.SEEK_END)
            stream.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "no_marker":
        os.remove(os.path.join(newest, "COMPLETE"))
    elif damage == "empty_marker":
        open(os.path.join(newest, "COMPLETE"), "w").close()
    elif damage == "garbled_state":
        with open(os.path.join(newest, "state.json"), "r+b") as stream:
            stream.truncate(0)
    else:
        os.remove(variables)
    with caplog.at_level(logging.WARNING):
        path, state = backup.latest(str(tmp_path))
    assert path.endswith("step-000000003") and state["position"] == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and newest in warnings[0]
    assert "Expecting value" not in warnings[0]
    # The next complete backup deletes the damaged one.
    _write(model, tmp_path, 4)
    assert backup.latest(str(tmp_path))[0] == newest


@pytest.mark.parametrize("stage", ["begin", "variables", "state", "marker"])
@pytest.mark.parametrize("action,reason", [
    ("enospc", "No space left on device"), ("eacces", "Permission denied")])
def test_a_failed_write_keeps_the_last_backup(tmp_path, monkeypatch, stage,
                                              action, reason):
    model = _model()
    _write(model, tmp_path, 3)
    _train(model, 1)
    monkeypatch.setenv(backup.FAULT_ENV, f"{action}:{stage}:4")
    with pytest.raises(backup.BackupError) as error:
        _write(model, tmp_path, 4)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(os.path.join(str(tmp_path), "step-000000004"))
    assert f"({reason})" in message
    assert f"the last complete backup, {tmp_path}/step-000000003, is kept" \
        in message
    assert os.listdir(tmp_path) == ["step-000000003"]  # no partial folder
    assert backup.latest(str(tmp_path))[1]["position"] == 3


def test_a_failed_first_write_says_there_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv(backup.FAULT_ENV, "enospc:variables:1")
    with pytest.raises(backup.BackupError, match="there is no earlier backup"):
        _write(_model(), tmp_path / "backup", 1)


def test_restore_refuses_a_backup_of_another_network(tmp_path):
    _write(_model(), tmp_path, 2)
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5),
                              keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    wider.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="mse")
    wider.optimizer.build(wider.trainable_variables)
    with pytest.raises(backup.BackupError, match="step-000000002: model "
                       "variable 0 .* has shape \\[3, 4\\]"):
        backup.restore(wider, *backup.latest(str(tmp_path)))


def test_an_old_format_backup_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "training_metadata.json").write_text("")
    with caplog.at_level(logging.WARNING):
        assert backup.latest(str(tmp_path)) is None
    assert "older format (training_metadata.json)" in caplog.text


def test_one_run_per_folder(tmp_path):
    first = runs.RunLock().acquire(str(tmp_path))
    owner = json.loads((tmp_path / runs.LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid()
    with pytest.raises(runs.RunLockError) as error:
        runs.RunLock().acquire(str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"{tmp_path}: another training run is using")
    assert f"pid {os.getpid()} on {owner['host']}" in message
    first.release()
    assert not (tmp_path / runs.LOCK_NAME).exists()
    with runs.RunLock().acquire(str(tmp_path)):
        pass


def test_a_lock_held_by_another_process_then_left_by_its_death(tmp_path,
                                                               caplog):
    # Another process takes the lock the way RunLock does (flock + owner),
    # then is killed with SIGKILL: its lock file stays, its flock goes.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(tmp_path / runs.LOCK_NAME)!r}, "
        "os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'elsewhere', "
        "'started': 'then'}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunLockError,
                           match=f"pid {holder.pid} on elsewhere"):
            runs.RunLock().acquire(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING):
        lock = runs.RunLock().acquire(str(tmp_path))
    assert f"taking over the lock of pid {holder.pid} on elsewhere" \
        in caplog.text
    lock.release()


def test_train_on_a_folder_in_use_is_refused(tmp_path, capsys):
    with runs.RunLock().acquire(str(tmp_path / "run")):
        code = cli.main(["train", "--config", str(CONFIGS_DIR / "tiny.yaml"),
                         "--output", str(tmp_path / "run"), "--quiet",
                         "--no-eval"])
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"orienmask-tf train: error: "
                                 f"{tmp_path / 'run'}: another training run")
        assert f"pid {os.getpid()}" in err[0]
        assert os.listdir(tmp_path / "run") == [runs.LOCK_NAME]
