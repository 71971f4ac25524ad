import numpy as np
import pytest

from orienmask_tf.training.optimizer import CoupledSGD
from orienmask_tf.training.schedules import WarmupCosineDecay
from orienmask_tf.training.schedules import WarmupStepDecay


def test_warmup_step_schedule_matches_official_rule():
    schedule = WarmupStepDecay(1e-3, milestones=(100, 200), gamma=0.1,
                               warmup_iters=10, warmup_ratio=0.1)
    lr = [float(schedule(s)) for s in (0, 5, 10, 99, 100, 199, 200)]
    assert lr == pytest.approx([1e-4, 5.5e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5],
                               rel=1e-5)


def test_cosine_schedule_ends_at_min_ratio():
    schedule = WarmupCosineDecay(1e-2, total_iters=100, min_lr_ratio=0.1,
                                 warmup_iters=0)
    assert float(schedule(0)) == pytest.approx(1e-2)
    assert float(schedule(50)) == pytest.approx(5.5e-3, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(1e-3, rel=1e-5)


def test_coupled_sgd_is_pytorch_weight_decay():
    import keras

    w = keras.Variable(np.array([1.0, -2.0], np.float32))
    grad = np.array([0.5, 0.5], np.float32)
    opt = CoupledSGD(l2=0.1, learning_rate=0.1, momentum=0.9)
    buf = np.zeros(2)
    ref = np.array([1.0, -2.0])
    for _ in range(3):
        opt.apply_gradients([(keras.ops.convert_to_tensor(grad), w)])
        # torch.optim.SGD: d = g + wd * w; buf = m * buf + d; w -= lr * buf
        d = grad + 0.1 * ref
        buf = 0.9 * buf + d
        ref = ref - 0.1 * buf
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5)


def test_coupled_sgd_momentum_is_pytorch_when_the_rate_changes():
    """torch.optim.SGD applies the current rate to the whole momentum
    buffer (w -= lr_t * buf); Keras' SGD folds each step's rate into the
    buffer. They differ in a warm-up; ours is PyTorch's."""
    import keras

    rates = WarmupStepDecay(0.1, milestones=(3,), gamma=0.1, warmup_iters=2,
                            warmup_ratio=0.1)
    w = keras.Variable(np.array([1.0, -2.0], np.float64))
    opt = CoupledSGD(l2=0.1, learning_rate=rates, momentum=0.9)
    buf, ref = np.zeros(2), np.array([1.0, -2.0])
    for step in range(5):
        grad = np.array([0.5, -0.25]) * (step + 1)
        opt.apply_gradients([(keras.ops.convert_to_tensor(grad), w)])
        buf = 0.9 * buf + grad + 0.1 * ref
        ref = ref - float(rates(step)) * buf
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6)


def test_epoch_milestones_follow_steps_per_epoch():
    from orienmask_tf.config import load_config
    from orienmask_tf.training.schedules import make_schedule
    from tests import testing

    # The mmdet YOLACT configs step at epochs 20, 42, 49, 52.
    train = load_config(testing.CONFIGS_DIR
                        / "yolact_r50_550_atss_maiou.yaml").train
    schedule = make_schedule(train, steps_per_epoch=100)
    assert schedule.milestones == (2000, 4200, 4900, 5200)
    lr = [float(schedule(s)) for s in (0, 500, 1999, 2000, 5200)]
    assert lr == pytest.approx([4e-4, 4e-3, 4e-3, 4e-4, 4e-7], rel=1e-4)


def test_epoch_cosine_matches_the_official_mayolact_schedule():
    """mmcv CosineAnnealing(by_epoch=True) with linear warm-up: the values
    the maYOLACT fixture records (mayolact_config.json, derived.lr_examples)."""
    import json

    from orienmask_tf.config import load_config
    from orienmask_tf.training.schedules import make_schedule
    from tests import testing

    recorded = json.loads(testing.reference_path(
        "mayolact", "mayolact_config.json").read_text())
    official = recorded["mayolact_550"]
    train = load_config(None, [
        "train.schedule=cosine_epoch", "train.epochs=55",
        f"train.learning_rate={official['optimizer']['lr']}",
        "train.warmup_iters=500", "train.warmup_ratio=0.1"]).train
    steps_per_epoch = 3665  # COCO train2017 at batch 32
    schedule = make_schedule(train, steps_per_epoch)
    for example in official["derived"]["lr_examples"]:
        epoch = example["epoch"]
        step = example["iter"] if epoch == 0 else epoch * steps_per_epoch + 7
        assert float(schedule(step)) == pytest.approx(example["lr"],
                                                      rel=1e-5), example
    # Constant within an epoch, after the warm-up.
    assert float(schedule(3 * steps_per_epoch)) == float(
        schedule(4 * steps_per_epoch - 1))


def test_training_refuses_more_categories_than_classes(tmp_path):
    from orienmask_tf.training import train
    from tests.training.helpers import tiny_config

    config = tiny_config(tmp_path, "model.num_classes=3")  # the data has 5
    with pytest.raises(ValueError, match=r"model.num_classes=3, but .* has "
                       r"5 categories.*set model.num_classes=5"):
        train(config, output_dir=str(tmp_path / "run"), verbose=0)


def test_history_csv_reserves_the_evaluation_columns(tmp_path):
    import csv

    from orienmask_tf.training.callbacks import CocoEvalCallback
    from orienmask_tf.training.callbacks import HistoryCSV

    path = tmp_path / "history.csv"
    logger = HistoryCSV(str(path), append=True,
                        extra_keys=CocoEvalCallback.KEYS)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 2.0})
    logger.on_epoch_end(1, {"loss": 1.0, "val_mask_AP": 0.5})
    logger.on_train_end()
    rows = list(csv.DictReader(path.open()))
    assert rows[0]["val_mask_AP"] == "NA" and rows[1]["val_mask_AP"] == "0.5"
    assert "val_loss" not in rows[0]
