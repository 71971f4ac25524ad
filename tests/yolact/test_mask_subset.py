"""The YOLACT mask-loss subset is a function of (seed, optimizer step) only,
so a killed-and-resumed run draws what the uninterrupted one drew."""

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.families.yolact import loss as yl
from orienmask_tf.training.train_model import TrainModel

ANCHORS, MAX_MASKS = 60, 5


def _targets_and_outputs(seed=0):
    """Two images, 40 and 25 positives of 60 anchors (more than
    ``MAX_MASKS``), each positive with its own coefficients."""
    rng = np.random.RandomState(seed)
    matched = -np.ones((2, ANCHORS), np.int64)
    matched[0, rng.choice(ANCHORS, 40, replace=False)] = 0
    matched[1, rng.choice(ANCHORS, 25, replace=False)] = 1
    y_true = {"matched_gt": matched,
              "gt_boxes": np.array([[[0, 0, 16, 16], [4, 4, 12, 14]]] * 2,
                                   np.float32),
              "mask_targets": (rng.rand(2, 2, 4, 4) > 0.5).astype(
                  np.float32)}
    y_pred = {"protos": rng.rand(2, 4, 4, 3).astype(np.float32),
              "coeff_pred_l0": rng.uniform(-2, 2, (2, ANCHORS, 1, 3)).astype(
                  np.float32)}
    for level in range(1, 5):
        y_pred[f"coeff_pred_l{level}"] = np.zeros((2, 0, 1, 3), np.float32)
    return y_true, y_pred


def _subset(loss, positive, step):
    index, valid = loss.select(tf.constant(positive), step)
    assert bool(tf.reduce_all(valid))  # MAX_MASKS of more positives
    return [sorted(row) for row in index.numpy().tolist()]


def test_same_step_same_subset_other_step_other_subset():
    y_true, y_pred = _targets_and_outputs()
    positive = y_true["matched_gt"] >= 0
    loss = yl.YolactMaskLoss((16, 16), num_classes=2, max_masks=MAX_MASKS,
                             seed=3)
    first = _subset(loss, positive, tf.constant(7, tf.int64))
    for row, pos in zip(first, positive):
        assert len(set(row)) == MAX_MASKS and pos[row].all()
    # The same step again, eagerly or traced (nothing carried between
    # calls, unlike a stateful random op): the same subset.
    assert _subset(loss, positive, tf.constant(7, tf.int64)) == first
    traced = tf.function(lambda p, s: loss.select(p, s)[0])
    again = traced(tf.constant(positive), tf.constant(7, tf.int64)).numpy()
    assert [sorted(r) for r in again.tolist()] == first
    # Other steps, or another train.seed: other subsets.
    others = [_subset(loss, positive, tf.constant(s, tf.int64))
              for s in (8, 9, 1000)]
    assert all(other != first for other in others)
    reseeded = yl.YolactMaskLoss((16, 16), num_classes=2,
                                 max_masks=MAX_MASKS, seed=4)
    assert _subset(reseeded, positive, tf.constant(7, tf.int64)) != first
    # Over many steps every positive is drawn (a uniform subset, not a
    # fixed one).
    drawn = set()
    for s in range(40):
        drawn.update(_subset(loss, positive, tf.constant(s, tf.int64))[1])
    assert drawn == set(np.flatnonzero(positive[1]).tolist())

    # The loss value follows the subset.
    value = loss.call(y_true, y_pred, step=7)
    np.testing.assert_array_equal(loss.call(y_true, y_pred, step=7), value)
    assert float(loss.call(y_true, y_pred, step=8)) != float(value)


def test_training_loss_gets_the_optimizer_step():
    class StepLoss:
        """Loss whose only item is the step it was given."""

        item_names = ("step",)

        def loss_items(self, y, y_pred, step=None):
            value = tf.cast(step, tf.float32)
            return {"step": value}, tf.reduce_mean(y_pred) * 0.0 + value

    inputs = keras.Input((2,))
    network = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model = TrainModel(network, StepLoss())
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = np.ones((2, 2), np.float32), np.zeros((2, 1), np.float32)
    seen = []
    for _ in range(3):
        model.reset_metrics()
        seen.append(model.train_on_batch(x, y, return_dict=True)["step"])
    assert seen == [0.0, 1.0, 2.0]
    assert int(model.optimizer.iterations) == 3


def test_yolact_training_loss_passes_the_step_to_the_mask_term():
    y_true, y_pred = _targets_and_outputs(seed=1)
    mask = yl.YolactMaskLoss((16, 16), num_classes=2, max_masks=MAX_MASKS)
    # The other terms read targets these cases do not hold: zero them.
    training = yl.YolactTrainingLoss({
        "loss_mask": mask, "loss_cls": _ZeroCls(2), "loss_segm": _ZeroSegm(2),
        "loss_bbox": _ZeroBox(2)})
    values = []
    for step in (0, 5):
        items, total = training.loss_items(y_true, y_pred, step=step)
        np.testing.assert_array_equal(items["loss_mask"],
                                      mask.call(y_true, y_pred, step=step))
        np.testing.assert_array_equal(total, items["loss_mask"])
        values.append(float(total))
    assert values[0] != values[1]


def _zero(y_true, y_pred):
    return tf.constant(0.0)


class _ZeroCls(yl.YolactClassificationLoss):
    call = staticmethod(_zero)


class _ZeroSegm(yl.YolactSegmLoss):
    call = staticmethod(_zero)


class _ZeroBox(yl.YolactBoxLoss):
    call = staticmethod(_zero)
