"""Six training steps of the project's ``fit`` path equal the official
OrienMask trainer's, in float64.

The fixture (``tests/fixtures/reference/orienmask_trajectory``, recorded by
``scripts/record_official_trajectory.py``, see its README) holds what the
official trainer did from a known initial state_dict on three fixed batches
(steps A B C A B C): the learning rate and every loss item of each step, and
the final state_dict (weights, BN running statistics). Here the same
initial weights go through the family's checkpoint converter into the
network of a config, the same annotations through the family's target
encoder (``build_dataset``'s output format), and ``build_train_model`` +
``fit`` (coupled-L2 SGD, linear warm-up + step schedule, trainable BN) run
the six steps in float64.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import load_config
from orienmask_tf.training.fit import build_train_model
from tests.testing import CONFIGS_DIR
from tests.testing import random_official_state_dict
from tests.testing import reference_path

MAX_INSTANCES = 4
# Our item name -> the official one (``eval/orienmask_yolo_loss.py``).
ITEMS = {"loss_xy": "loss_xy", "loss_wh": "loss_wh", "loss_obj_pos": "loss_obj",
         "loss_obj_neg": "loss_noobj", "loss_cls": "loss_cls",
         "loss_orien_pos": "loss_orien_pos",
         "loss_orien_neg": "loss_orien_neg"}


def _fixture():
    meta = json.loads(reference_path("orienmask_trajectory",
                                     "trajectory.json").read_text())
    arrays = np.load(reference_path("orienmask_trajectory",
                                    "trajectory.npz"))
    return meta, {k: arrays[k] for k in arrays.files}


def _config(meta, tmp_path):
    height, width = meta["image_size"]
    opt, schedule, loss = meta["optimizer"], meta["schedule"], meta["loss"]
    overrides = [
        f"image_size=[{height},{width}]",
        f"anchors={json.dumps(meta['anchors'])}",
        f"model.num_classes={meta['num_classes']}",
        f"model.width={32 // meta['width_divisor']}",
        "model.stackwise_num_blocks=[1,2,8,8,4]",
        f"loss.center_region={loss['center_region']}",
        f"loss.valid_region={loss['valid_region']}",
        f"loss.obj_ignore_threshold={loss['obj_ignore_threshold']}",
        f"loss.weights={json.dumps(loss['weight'])}",
        f"loss.scales_weight={json.dumps(loss['scales_weight'])}",
        f"data.max_instances={MAX_INSTANCES}",
        "train.batch_size=2", "train.epochs=1", "train.optimizer=sgd",
        f"train.learning_rate={opt['lr']}",
        f"train.momentum={opt['momentum']}",
        f"train.weight_decay={opt['weight_decay']}",
        "train.weight_decay_mode=l2", "train.schedule=step",
        f"train.warmup_iters={schedule['warmup_iter']}",
        f"train.warmup_ratio={schedule['warmup_ratio']}",
        f"train.milestones={json.dumps(schedule['milestones'])}",
        f"train.gamma={schedule['gamma']}",
        "train.clip_norm=0", "train.freeze_bn=false",
        "train.jit_compile=false", f"train.output_dir={tmp_path}"]
    return load_config(CONFIGS_DIR / "tiny.yaml", overrides)


def _batches(config, meta, arrays):
    """The fixture's six batches in ``build_dataset``'s output format:
    (images, the family encoder's targets), batch 2."""
    height, width = meta["image_size"]
    encoder = config.family.make_encoder(config)
    examples = []
    for i in range(len(arrays["pixels"])):
        boxes = arrays[f"image{i}/boxes"]
        n = len(boxes)
        gt = {"boxes": np.zeros((MAX_INSTANCES, 4), np.float32),
              "classes": np.full((MAX_INSTANCES,), -1, np.int32),
              "masks": np.zeros((MAX_INSTANCES, height, width), np.uint8),
              "num_instances": np.int32(n)}
        gt["boxes"][:n] = boxes
        gt["classes"][:n] = arrays[f"image{i}/classes"]
        gt["masks"][:n] = arrays[f"image{i}/masks"]
        examples.append({k: np.asarray(v) for k, v in encoder(gt).items()})
    images = arrays["pixels"].astype(np.float64) / 255.0
    batches = []
    for batch in arrays["step_batches"]:
        ids = [2 * int(batch), 2 * int(batch) + 1]
        targets = {k: np.stack([examples[i][k] for i in ids])
                   for k in examples[0]}
        batches.append((images[ids], targets))
    stacked = tf.nest.map_structure(lambda *xs: np.stack(xs), *batches)
    return tf.data.Dataset.from_tensor_slices(stacked)


class _StepRecorder(keras.callbacks.Callback):
    """Per-step learning rate and loss items (``fit`` logs running means
    over the epoch: item_k = k * mean_k - (k - 1) * mean_(k-1))."""

    def __init__(self):
        super().__init__()
        self.lrs, self.means = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.means.append({k: float(v) for k, v in logs.items()})

    def items(self):
        out, previous = [], None
        for k, means in enumerate(self.means, start=1):
            out.append({key: k * value - (k - 1) * previous[key]
                        if previous else value
                        for key, value in means.items()})
            previous = means
        return out


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    meta, arrays = _fixture()
    config = _config(meta, tmp_path_factory.mktemp("trajectory"))
    initial = random_official_state_dict(
        {"state_dict": meta["state_dict_listing"]},
        seed=meta["state_dict_seed"])
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        steps = len(arrays["step_batches"])
        model = build_train_model(config, tf.distribute.OneDeviceStrategy(
            "/cpu:0"), steps)
        config.family.convert_checkpoint(model.network, initial,
                                         config=config, source="fixture")
        recorder = _StepRecorder()
        model.fit(_batches(config, meta, arrays), epochs=1, verbose=0,
                  callbacks=[recorder], shuffle=False)
        final = config.family.state_dict_from_model(model.network)
        final = {k: np.asarray(v) for k, v in final.items()}
        dtypes = {w.dtype for w in model.network.weights}
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    return dict(meta=meta, arrays=arrays, initial=initial, final=final,
                lrs=recorder.lrs, items=recorder.items(), dtypes=dtypes)


def test_runs_in_float64(trajectory):
    assert trajectory["dtypes"] == {"float64"}


def test_learning_rates_equal_official(trajectory):
    official = [s["lr"] for s in trajectory["meta"]["steps"]]
    np.testing.assert_allclose(trajectory["lrs"], official, rtol=1e-6)


def test_loss_items_of_every_step_equal_official(trajectory):
    weights = dict(zip(ITEMS, trajectory["meta"]["loss"]["weight"]))
    for step, (ours, theirs) in enumerate(zip(
            trajectory["items"], trajectory["meta"]["steps"])):
        log = theirs["loss_log"]
        np.testing.assert_allclose(ours["loss"], theirs["loss"], rtol=1e-6,
                                   err_msg=f"step {step} total")
        for item in ITEMS:
            # official cross-scale items are weighted, ours are not
            np.testing.assert_allclose(
                ours[item], log[f"cross_scale_{ITEMS[item]}"] / weights[item],
                rtol=1e-6, atol=1e-9, err_msg=f"step {step} {item}")


def _official_final(arrays, key):
    if f"final/{key}" in arrays:
        return None, arrays[f"final/{key}"].reshape(-1)
    return arrays[f"final/{key}/index"], arrays[f"final/{key}/value"]


def test_final_weights_and_bn_statistics_equal_official(trajectory):
    arrays, final, initial = (trajectory["arrays"], trajectory["final"],
                              trajectory["initial"])
    checked = 0
    for entry in trajectory["meta"]["state_dict_listing"]:
        key = entry["key"]
        if key.endswith("num_batches_tracked"):
            continue
        ours = final[key].reshape(-1).astype(np.float64)
        start = np.asarray(initial[key], np.float64).reshape(-1)
        index, theirs = _official_final(arrays, key)
        if index is not None:
            ours, start = ours[index], start[index]
        # rtol 1e-6 of the tensor's scale (a running mean of 2e-4 next to
        # values of 2 is not compared to 1e-6 of itself)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6,
                                   atol=1e-6 * np.abs(theirs).max(),
                                   err_msg=key)
        # The update itself (final - initial), relative to its largest
        # element: what six steps changed, not only where they ended.
        update, official_update = ours - start, theirs - start
        scale = max(np.abs(official_update).max(), 1e-12)
        assert np.abs(update - official_update).max() / scale < 1e-5, key
        full = final[key].reshape(-1) - np.asarray(
            initial[key], np.float64).reshape(-1)
        np.testing.assert_allclose(np.sum(full ** 2),
                                   arrays[f"final/{key}/sum_sq_update"],
                                   rtol=1e-5, atol=1e-24, err_msg=key)
        checked += 1
    assert checked > 400
