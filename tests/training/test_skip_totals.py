import collections
import os

import keras
import numpy as np

from orienmask_tf import cli
from orienmask_tf.training.callbacks import SkipTotals
from tests.testing import CONFIGS_DIR
from tests.training.helpers import TINY_OVERRIDES
from tests.training.helpers import make_data


def test_totals_after_every_epoch_with_what_the_epoch_added(capsys):
    counts = collections.Counter(zero_area=2)  # skipped when the JSON was read
    skips = {1: 1, 3: 2}  # epoch -> images that fail to decode in it
    epochs = []
    reader = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epochs.append(epoch),
        on_train_batch_end=lambda batch, logs: counts.update(
            corrupt_image=skips.get(epochs[-1], 0) if batch == 0 else 0))

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    totals = SkipTotals(lambda: counts, "instances_train.json")
    model.fit(np.ones((4, 3), np.float32), np.zeros((4, 1)), batch_size=2,
              epochs=4, verbose=0, callbacks=[reader, totals])
    source = "epoch {}: skipped so far in instances_train.json: "
    assert totals.lines == [
        source.format(1) + "zero_area: 2 (0 during this epoch)",
        source.format(2) + "corrupt_image: 1, zero_area: 2 (1 during this "
                           "epoch)",
        source.format(3) + "corrupt_image: 1, zero_area: 2 (0 during this "
                           "epoch)",
        source.format(4) + "corrupt_image: 3, zero_area: 2 (2 during this "
                           "epoch)"]
    assert capsys.readouterr().out.splitlines() == totals.lines


def test_nothing_printed_while_nothing_is_skipped(capsys):
    totals = SkipTotals(lambda: {}, "x.json")
    totals.on_train_begin()
    totals.on_epoch_end(0)
    assert totals.lines == [] and capsys.readouterr().out == ""


def test_cli_train_prints_the_totals_of_each_epoch(tmp_path, capsys):
    data = make_data(tmp_path, num_train=4, num_val=1)
    train_images = data[1].split("=", 1)[1]
    victim = sorted(os.listdir(train_images))[1]
    open(os.path.join(train_images, victim), "wb").close()  # 0 bytes
    argv = ["train", "--config", str(CONFIGS_DIR / "tiny.yaml"), "--quiet",
            "--verbose", "0", "--no-eval", "--output", str(tmp_path / "run")]
    for value in TINY_OVERRIDES + data + [
            "train.steps_per_epoch=1", "train.epochs=2",
            "data.on_error=skip", "train.checkpoint_every=0"]:
        argv += ["--set", value]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    annotations = data[0].split("=", 1)[1]
    lines = [line for line in out.splitlines() if "skipped so far" in line]
    assert [line.split(":")[0] for line in lines] == ["epoch 1", "epoch 2"]
    # tf.data reads ahead: the 0-byte image is met once per pass over the
    # 4 images, not necessarily within the epoch that consumed it.
    totals = []
    for epoch, line in enumerate(lines, 1):
        head = (f"epoch {epoch}: skipped so far in {annotations}: "
                "corrupt_image: ")
        assert line.startswith(head) and line.endswith(" during this epoch)")
        total, added = line[len(head):].split(" (")
        totals.append(int(total))
        assert int(added.split()[0]) == totals[-1] - (
            totals[-2] if epoch > 1 else 0)
    assert 1 <= totals[0] <= totals[1]
