"""``OrienMaskTrainModel``: the OrienMask network plus its loss, for ``fit``.

The exported network stays the plain ``OrienMask`` (``self.network``); this
wrapper only adds ``compute_loss`` and one ``Mean`` tracker per loss item
(summed over the three scales), which appear in the progress bar, the
history and TensorBoard.
"""

import keras
import tensorflow as tf

from orienmask_tf.losses import LOSS_ITEM_NAMES
from orienmask_tf.losses import OrienMaskLoss


class OrienMaskTrainModel(keras.Model):
    """Training wrapper (paper Sec. 3.3 loss, Eq. 4-5).

    Args:
        network: an ``OrienMask``.
        loss: an ``OrienMaskLoss`` (all seven items).

    ``fit`` data: ``(images (B, H, W, 3), targets)`` with the batched
    ``OrienMaskTargetEncoder`` output as targets.
    """

    def __init__(self, network, loss, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(loss, OrienMaskLoss):
            raise TypeError(f"loss must be an OrienMaskLoss, got {loss!r}")
        self.network = network
        self.orienmask_loss = loss
        self.item_trackers = [keras.metrics.Mean(name=name)
                              for name in LOSS_ITEM_NAMES]
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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        items = self.orienmask_loss.loss_items(y, y_pred)
        for k, tracker in enumerate(self.item_trackers):
            name = LOSS_ITEM_NAMES[k]
            tracker.update_state(tf.add_n(
                [items[s][name] for s in self.orienmask_loss.names]))
        total = items["loss_total"]
        # The items are means over the per-replica batch, and gradients are
        # summed over replicas: scale by 1 / replicas, as Loss.__call__ does
        # (TF_NOTES "2x gradients trap"). One loss_items pass gives both the
        # total and the logged items, where two Loss objects would compute
        # the detection terms twice.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            total = total / float(replicas)
        losses = self.losses
        if losses:
            total = total + tf.add_n(losses) / float(replicas)
        return total
