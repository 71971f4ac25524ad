import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from orienmask_tf import cli
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config
from orienmask_tf.training import runs
from tests import testing
from tests.training.helpers import TINY_OVERRIDES
from tests.training.helpers import make_data
from tests.training.helpers import free_ports

TINY = str(testing.CONFIGS_DIR / "tiny.yaml")


def _save_run(folder, config):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)


def test_new_runs_are_numbered_and_resume_picks_the_latest(tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(TINY)
    assert runs.prepare_run(config) == os.path.join("runs", "tiny")
    assert runs.prepare_run(config) == os.path.join("runs", "tiny2")
    (tmp_path / "runs" / "tiny_other").mkdir()  # another config's runs
    (tmp_path / "runs" / "tiny01").mkdir()
    assert runs.prepare_run(config) == os.path.join("runs", "tiny3")
    assert [i for i, _ in runs.existing_runs("runs/tiny")] == [1, 2, 3]
    # --exist-ok: runs/tiny itself; --resume: the latest, which must be a run.
    assert runs.prepare_run(config, exist_ok=True) == os.path.join(
        "runs", "tiny")
    with pytest.raises(runs.RunFolderError,
                       match="--resume runs/tiny3: not a run folder"):
        runs.prepare_run(config, resume=True)
    _save_run("runs/tiny3", config)
    assert runs.prepare_run(config, resume=True) == os.path.join(
        "runs", "tiny3")
    assert runs.prepare_run(config, resume="runs/tiny3") == "runs/tiny3"
    # An explicit folder is used as it is, new or not.
    assert runs.prepare_run(config, output_dir="elsewhere") == "elsewhere"
    assert runs.prepare_run(config, output_dir="elsewhere") == "elsewhere"
    assert sorted(os.listdir("runs")) == ["tiny", "tiny01", "tiny2", "tiny3",
                                          "tiny_other"]


def test_resume_without_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(runs.RunFolderError, match="no run of 'tiny' to "
                       "resume"):
        runs.prepare_run(load_config(TINY), resume=True)


def test_a_changed_config_is_refused_naming_the_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = load_config(TINY)
    _save_run("runs/tiny", saved)
    longer = load_config(TINY, ["train.epochs=5", "train.eval_every=2"])
    with pytest.raises(runs.RunFolderError) as error:
        runs.prepare_run(longer, resume=True)
    message = str(error.value)
    assert "train.epochs (saved 1, requested 5)" in message
    assert "train.eval_every (saved 1, requested 2)" in message
    assert "add --force" in message
    assert runs.prepare_run(longer, resume=True, force=True) == os.path.join(
        "runs", "tiny")
    wider = load_config(TINY, ["model.width=8", "train.epochs=5"])
    for force in (False, True):
        with pytest.raises(runs.RunFolderError) as error:
            runs.prepare_run(wider, exist_ok=True, force=force)
        message = str(error.value)
        assert "model.width (saved 4, requested 8)" in message
        assert "model.width cannot change in a continued run; the others " \
            "could with --force" in message
    # Class names that training fills in are not a difference.
    named = load_config(TINY, ["data.class_names=[a,b,c]"])
    _save_run("runs/named", named)
    assert runs.prepare_run(saved, output_dir="runs/named") == "runs/named"


def _sets(values):
    return [arg for value in values for arg in ("--set", value)]


def test_train_never_clobbers_and_continues_on_purpose(tmp_path, monkeypatch,
                                                       capsys):
    data = make_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    common = ["train", "--config", TINY, "--verbose", "0", "--quiet",
              "--device", "cpu"] + _sets(TINY_OVERRIDES + data + [
                  "train.epochs=1", "train.steps_per_epoch=1"])
    assert cli.main(common) == 0
    assert cli.main(common) == 0
    first, second = tmp_path / "runs" / "tiny", tmp_path / "runs" / "tiny2"
    assert (first / "model.keras").exists()
    assert (second / "model.keras").exists()
    assert "outputs in runs/tiny2" in capsys.readouterr().out

    # More epochs: refused without --force (nothing trained), then the
    # latest run continues for the one new epoch.
    assert cli.main(common + ["--resume", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orienmask-tf train: error: ")
    assert "train.epochs (saved 1, requested 2)" in err[0]
    assert cli.main(common + ["--resume", "--force", "--set",
                              "train.epochs=2"]) == 0
    assert "resuming from runs/tiny2/backup: epoch 2" in capsys.readouterr(
        ).out
    with open(second / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1]
    with open(first / "history.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0]
    assert yaml.safe_load((second / "config.yaml").read_text())[
        "train"]["epochs"] == 2

    # A key that changes what the saved state means: refused even forced.
    assert cli.main(common + ["--resume", "runs/tiny", "--force", "--set",
                              "model.width=8"]) == 2
    assert "model.width (saved 4, requested 8)" in capsys.readouterr().err
    # --exist-ok continues runs/tiny (finished: nothing left to fit).
    assert cli.main(common + ["--exist-ok"]) == 0
    assert sorted(os.listdir(tmp_path / "runs")) == ["tiny", "tiny2"]


def test_workers_take_the_folder_of_the_chief(tmp_path):
    # runs/tiny exists: the chief claims runs/tiny2 before the other worker
    # could list runs/, and both must still agree on it; then a refusal on
    # the chief (changed config) stops the other worker too.
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(testing.REPO_DIR))
    script = str(testing.TESTS_DIR / "cli" / "run_agree.py")
    processes = []
    for index in range(2):
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, script, TINY], cwd=tmp_path, env=dict(env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in processes]
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
    assert "FOLDER runs/tiny2" in logs[0] and "FOLDER runs/tiny2" in logs[1]
    assert "REFUSED train.epochs (saved 1, requested 3)" in logs[0]
    assert "REFUSED the chief refused the run folder" in logs[1]
    assert sorted(os.listdir(tmp_path / "runs")) == ["tiny", "tiny2"]
