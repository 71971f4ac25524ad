"""The training wrapper for ``fit``: the plain network plus its loss.

The exported network stays the family's plain network (``self.network``);
the wrapper only adds ``compute_loss`` and one ``Mean`` tracker per loss
item, which appear in the progress bar, the history and TensorBoard. The
loss is the family's (``Family.make_loss``): an object with ``item_names``
and ``loss_items(y, y_pred) -> (items, total)``; a ``loss_items`` with a
``step`` argument also gets the optimizer step (``optimizer.iterations``,
part of every backup), to seed random choices statelessly so that a resumed
run makes the uninterrupted run's draws.
"""

import inspect

import keras
import tensorflow as tf



class TrainModel(keras.Model):
    """``fit`` wrapper of a family's network and its loss.

    Args:
        network: the plain network (what is saved and exported).
        loss: the family's training loss: ``item_names`` and
            ``loss_items(y, y_pred)`` -> ``(items {name: scalar}, total
            scalar)``, both means over the per-replica batch.

    ``fit`` data: ``(images, targets)`` with the family's batched target
    encoder output as targets.
    """

    def __init__(self, network, loss, **kwargs):
        super().__init__(**kwargs)
        if not callable(getattr(loss, "loss_items", None)):
            raise TypeError(f"loss must have loss_items(y, y_pred), got "
                            f"{loss!r}")
        self.network = network
        self.training_loss = loss
        self._loss_takes_step = "step" in inspect.signature(
            loss.loss_items).parameters
        self.item_names = tuple(loss.item_names)
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

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        extra = {}
        if self._loss_takes_step:
            extra["step"] = (None if self.optimizer is None
                             else self.optimizer.iterations)
        items, total = self.training_loss.loss_items(y, y_pred, **extra)
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
