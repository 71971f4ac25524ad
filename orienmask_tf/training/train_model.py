"""Training wrappers for ``fit``: the plain network plus its loss.

The exported network stays the plain ``OrienMask`` / ``Yolact``
(``self.network``); a wrapper only adds ``compute_loss`` and one ``Mean``
tracker per loss item, which appear in the progress bar, the history and
TensorBoard.
"""

import keras
import tensorflow as tf

from orienmask_tf.losses import LOSS_ITEM_NAMES
from orienmask_tf.losses import OrienMaskLoss
from orienmask_tf.losses.yolact_loss import YolactClassificationLoss
from orienmask_tf.losses.yolact_loss import YolactSegmLoss


class _TrainModel(keras.Model):
    """``fit`` plumbing shared by both architectures.

    Subclasses set ``item_names`` and implement ``loss_items(y, y_pred)``
    -> ``(items {name: scalar}, total scalar)``; both are means over the
    per-replica batch.
    """

    item_names = ()

    def __init__(self, network, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.item_trackers = [keras.metrics.Mean(name=name)
                              for name in self.item_names]
        # Under MultiWorkerMirroredStrategy Keras 3.15 reduces the step logs
        # with strategy.reduce("MEAN", v, axis=0), which fails on scalars;
        # shape (1,) logs reduce to the mean over all replicas.
        self.vector_logs = False

    def train_step(self, data):
        logs = super().train_step(data)
        if self.vector_logs:
            logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # build_train_model builds the network and the optimizer before
        # fit. Keras 3.15's version would take one batch off the iterator at
        # every fit call and, under MultiWorkerMirroredStrategy, fails to
        # all-reduce it ("Attempt to convert a value (PerReplica...)").
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def call(self, images, training=False):
        return self.network(images, training=training)

    def loss_items(self, y, y_pred):
        raise NotImplementedError

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        items, total = self.loss_items(y, y_pred)
        for name, tracker in zip(self.item_names, self.item_trackers):
            tracker.update_state(items[name])
        # The items are means over the per-replica batch, and gradients are
        # summed over replicas: scale by 1 / replicas, as Loss.__call__ does
        # (TF_NOTES "2x gradients trap"). One pass gives both the total and
        # the logged items, where separate Loss calls by Keras would compute
        # the terms twice.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            total = total / float(replicas)
        losses = self.losses
        if losses:
            total = total + tf.add_n(losses) / float(replicas)
        return total


class OrienMaskTrainModel(_TrainModel):
    """Training wrapper (paper Sec. 3.3 loss, Eq. 4-5).

    Args:
        network: an ``OrienMask``.
        loss: an ``OrienMaskLoss`` (all seven items).

    ``fit`` data: ``(images (B, H, W, 3), targets)`` with the batched
    ``OrienMaskTargetEncoder`` output as targets. Each item is logged
    summed over the three scales.
    """

    item_names = LOSS_ITEM_NAMES

    def __init__(self, network, loss, **kwargs):
        if not isinstance(loss, OrienMaskLoss):
            raise TypeError(f"loss must be an OrienMaskLoss, got {loss!r}")
        super().__init__(network, **kwargs)
        self.orienmask_loss = loss

    def loss_items(self, y, y_pred):
        items = self.orienmask_loss.loss_items(y, y_pred)
        logged = {name: tf.add_n([items[s][name]
                                  for s in self.orienmask_loss.names])
                  for name in self.item_names}
        return logged, items["loss_total"]


class YolactTrainModel(_TrainModel):
    """Training wrapper of YOLACT (maIoU paper, mmdet ``YOLACT.forward_train``).

    Args:
        network: a ``Yolact``.
        losses: ``{"loss_cls", "loss_bbox", "loss_mask", "loss_segm"}``
            ``keras.losses.Loss`` terms (``losses.yolact_loss``); the total
            is their sum, as mmdet's.

    ``fit`` data: ``(images (B, H, W, 3) normalised, targets)`` with the
    batched ``YolactTargetEncoder`` output as targets.
    """

    item_names = ("loss_cls", "loss_bbox", "loss_mask", "loss_segm")

    def __init__(self, network, losses, **kwargs):
        if set(losses) != set(self.item_names):
            raise ValueError(f"losses must have the keys {self.item_names}, "
                             f"got {sorted(losses)}")
        if not isinstance(losses["loss_cls"], YolactClassificationLoss) or \
                not isinstance(losses["loss_segm"], YolactSegmLoss):
            raise TypeError("losses must be the yolact_loss terms")
        super().__init__(network, **kwargs)
        self.yolact_losses = dict(losses)

    def loss_items(self, y, y_pred):
        # ``call`` directly: each term is already the normalised batch
        # total, and Loss.__call__ would cast the integer targets to float.
        items = {name: self.yolact_losses[name].call(y, y_pred)
                 for name in self.item_names}
        return items, tf.add_n(list(items.values()))
