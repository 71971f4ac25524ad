import csv
import json
import os

import numpy as np
import pytest

from tests.testing import assert_drawn_predictions
from tests.training.helpers import finish
from tests.training.helpers import run_script
from tests import testing
from tests.training.helpers import tiny_config
from tests.training.helpers import free_ports


def test_one_device_equals_mirrored_two_cpus(tmp_path):
    out = tmp_path / "parity.json"
    code, log = finish(run_script("run_parity.py", {
        "root": str(tmp_path), "out": str(out)}), timeout=600)
    assert code == 0, log[-3000:]
    results = json.loads(out.read_text())
    for variant, r in results.items():
        assert r["replicas"] == 2
        assert r["max_change"] > 1e-4, variant  # the step did something
        # Relative to the update: a 2x-gradient bug would give ~1.
        assert r["max_rel_diff"] < 1e-3, (variant, r)


def test_multi_worker_two_processes_on_localhost(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        tf_config = {"cluster": cluster,
                     "task": {"type": "worker", "index": index}}
        processes.append(run_script("run_train.py", {
            "root": str(tmp_path), "output_dir": str(tmp_path / "run"),
            "overrides": ["train.strategy=multi_worker", "train.epochs=1",
                          "train.steps_per_epoch=3"]},
            env={"TF_CONFIG": json.dumps(tf_config)}))
    for process in processes:
        code, log = finish(process, timeout=600)
        assert code == 0, log[-3000:]
        assert "TRAINED 3" in log
    assert (tmp_path / "run" / "model.keras").exists()  # chief only
    assert not (tmp_path / "run" / "workers" / "worker_1"
                / "model.keras").exists()


def test_killed_run_resumes_at_epoch_and_step(tmp_path):
    common = {"root": str(tmp_path), "output_dir": str(tmp_path / "run"),
              "overrides": ["train.epochs=2", "train.steps_per_epoch=4",
                            "train.backup_every=1"]}
    killed = dict(common, kill_at_step=6, record=str(tmp_path / "kill.json"))
    # The same run, never interrupted (in parallel, its own folder).
    whole = run_script("run_train.py", dict(
        common, output_dir=str(tmp_path / "whole"),
        record=str(tmp_path / "whole.json")))
    code, log = finish(run_script("run_train.py", killed))
    assert code != 0 and "TRAINED" not in log  # SIGKILLed mid-epoch 2
    kill = json.loads((tmp_path / "kill.json").read_text())
    assert kill["killed_at"] == 6
    from orienmask_tf.training.callbacks import read_backup_state

    state = read_backup_state(str(tmp_path / "run" / "backup"))
    assert state == {"epoch": 1, "step": 2, "global_step": 6, "position": 6}

    resumed = dict(common, record=str(tmp_path / "resume.json"))
    code, log = finish(run_script("run_train.py", resumed))
    assert code == 0, log[-3000:]
    assert "resuming from" in log and "epoch 2, step 2" in log
    record = json.loads((tmp_path / "resume.json").read_text())
    assert record["start"]["epoch"] == 1
    assert record["start"]["global_step"] == 6
    # The weights (and optimizer) of the killed step, not an epoch start.
    assert record["start"]["weights"] == pytest.approx(kill["weights"],
                                                       rel=1e-6)
    assert record["steps_run"] == 2  # only the two missing steps of epoch 2
    assert record["global_step"] == 8
    with open(tmp_path / "run" / "history.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1]
    # Nothing lost: weights, optimizer state and the data stream (the
    # resumed run continues at batch 6 of the same deterministic stream)
    # end where the uninterrupted run ends.
    code, log = finish(whole)
    assert code == 0, log[-3000:]
    reference = json.loads((tmp_path / "whole.json").read_text())
    assert reference["global_step"] == 8
    np.testing.assert_allclose(record["final_weights"],
                               reference["final_weights"], rtol=1e-5)


def test_short_run_lowers_the_loss(tmp_path, monkeypatch, capsys):
    from orienmask_tf.training import train

    config = tiny_config(tmp_path, "train.epochs=4",
                         "train.steps_per_epoch=6", "train.optimizer=adamw",
                         "train.learning_rate=0.003", "train.clip_norm=10",
                         "train.eval_every=2", "train.tensorboard_images=2")
    summary = train(config, output_dir=str(tmp_path / "run"), verbose=0)
    losses = summary["history"]["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses
    for name in ("loss_xy", "loss_orien_pos", "learning_rate"):
        assert name in summary["history"]
    assert "val_mask_AP" in summary["history"]  # COCO evaluation ran
    for name in ("model.keras", "checkpoints/best.keras", "config.yaml",
                 "history.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert os.listdir(tmp_path / "run" / "logs" / "train")
    assert os.listdir(tmp_path / "run" / "logs" / "images")
    alone = tmp_path / "alone"
    alone.mkdir()
    testing.assert_model_file_travels_alone(
        tmp_path / "run" / "model.keras", alone, tmp_path / "shapes",
        monkeypatch, capsys)


def test_predict_draws_masks(tmp_path):
    from orienmask_tf import cli
    from orienmask_tf.config import config_to_dict
    from orienmask_tf.families.orienmask.network import OrienMask
    import yaml

    config = tiny_config(tmp_path)
    model = OrienMask(**config.model_kwargs())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model.save(model_dir / "model.keras")
    with open(model_dir / "config.yaml", "w") as f:
        yaml.safe_dump(config_to_dict(config), f)
    images = tmp_path / "shapes" / "val"
    out = tmp_path / "drawn"
    code = cli.main(["predict", "--model", str(model_dir / "model.keras"),
                     "--images", str(images), "--output", str(out),
                     "--score-threshold", "0", "--coco-json",
                     str(tmp_path / "dets.json")])
    assert code == 0
    assert_drawn_predictions(images, out, tmp_path / "dets.json",
                             ("segmentation", "bbox", "score", "file_name"))
