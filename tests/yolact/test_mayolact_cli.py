"""maYOLACT (the YOLACT family with CARAFE FPN, DCNv2, two anchors and the
epoch cosine schedule) through the command line: train lowers the loss,
convert reads an mmdet checkpoint, the model file works alone."""

import csv

import numpy as np

from orienmask_tf import cli
from orienmask_tf.config import load_config
from orienmask_tf.families.yolact.checkpoint import state_dict_from_model
from tests import testing
from tests.training.helpers import make_data

TINY = str(testing.CONFIGS_DIR / "mayolact_tiny.yaml")
DATA = ["model.num_classes=5", "image_size=[96,96]", "data.max_instances=10",
        "data.shuffle_buffer=16", "data.deterministic=true",
        "data.num_parallel_calls=1"]


def _sets(overrides):
    return [arg for value in overrides for arg in ("--set", value)]


def test_cli_train_lowers_the_loss(tmp_path, monkeypatch, capsys):
    data = make_data(tmp_path, num_train=16, num_val=4, size=96)
    run = tmp_path / "run"
    assert cli.main(["train", "--config", TINY, "--output", str(run),
                     "--verbose", "0"] + _sets(DATA + data + [
                         "train.epochs=4", "train.steps_per_epoch=8",
                         "train.optimizer=adamw", "train.learning_rate=0.003",
                         "train.eval_every=0", "train.tensorboard_images=0",
                         "train.checkpoint_every=4"])) == 0
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    loss = np.array([float(r["loss"]) for r in rows])
    assert np.all(np.isfinite(loss)) and len(loss) == 4
    assert loss[-1] < 0.8 * loss[0], loss
    # The epoch cosine: one rate per epoch, falling (AdamW, no warm-up).
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    alone = tmp_path / "alone"
    alone.mkdir()
    testing.assert_model_file_travels_alone(
        run / "model.keras", alone, tmp_path / "shapes", monkeypatch, capsys)


def test_cli_convert_random_mmdet_mayolact_checkpoint(tmp_path, capsys):
    config = load_config(TINY)
    state_dict = testing.random_family_state_dict(config, seed=6)
    assert "backbone.layer2.0.conv2.conv_offset.weight" in state_dict
    assert "neck.upsample_modules.0.content_encoder.weight" in state_dict
    checkpoint = tmp_path / "mayolact_mmdet.npz"
    np.savez(checkpoint, **state_dict)
    output = tmp_path / "mayolact.keras"
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--layout", "mmdet", "--output",
                     str(output)]) == 0
    assert "into the full of YOLACT (mmdet layout)" in \
        capsys.readouterr().out
    import orienmask_tf as om

    back = state_dict_from_model(om.load(output).network)
    assert set(back) == set(state_dict)
    for key, value in state_dict.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value, err_msg=key)
    # Without the DCN offsets the mmdet checkpoint is refused, naming them.
    del state_dict["backbone.layer3.0.conv2.conv_offset.bias"]
    np.savez(checkpoint, **state_dict)
    assert cli.main(["convert", "--checkpoint", str(checkpoint), "--config",
                     TINY, "--output", str(tmp_path / "x.keras")]) == 2
    assert "backbone.layer3.0.conv2.conv_offset.bias" in \
        capsys.readouterr().err
