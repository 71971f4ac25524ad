"""Training callbacks: COCO evaluation, checkpoints of the plain network,
step-exact backup and restore, TensorBoard images, NaN guard, skip totals.
"""

import json
import logging
import math
import os

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.inference.drawing import draw_detections
from orienmask_tf.saving import save_network
from orienmask_tf.training import backup

logger = logging.getLogger(__name__)

# BGR-free RGB palette for drawn instances (tab10).
class CocoEvalCallback(keras.callbacks.Callback):
    """Every ``every`` epochs (and after the last), run ``evaluate_fn()``
    (-> ``{"bbox": {...}, "segm": {...}}``) and add ``val_mask_AP``,
    ``val_mask_AP50``, ``val_box_AP`` ... to the epoch logs (so the best
    checkpoint and TensorBoard see them). Put it before those callbacks."""

    # The keys it adds to the epoch logs (HistoryCSV reserves their columns).
    KEYS = tuple(f"{prefix}{key}" for prefix in ("val_mask_", "val_box_")
                 for key in ("AP", "AP50", "AP75"))

    def __init__(self, evaluate_fn, every=1, total_epochs=None):
        super().__init__()
        self.evaluate_fn = evaluate_fn
        self.every = int(every)
        self.total_epochs = total_epochs
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        last = self.total_epochs is not None and epoch + 1 == self.total_epochs
        if self.every <= 0 or not ((epoch + 1) % self.every == 0 or last):
            return
        stats = self.evaluate_fn()
        values = {}
        for iou_type, prefix in (("segm", "val_mask_"), ("bbox", "val_box_")):
            for key in ("AP", "AP50", "AP75"):
                if iou_type in stats:
                    values[prefix + key] = float(stats[iou_type][key])
        self.history.append({"epoch": epoch + 1, **values})
        if logs is not None:
            logs.update(values)
        print(f"\nepoch {epoch + 1}: " + "  ".join(
            f"{k} {v:.4f}" for k, v in values.items()), flush=True)


class SkipTotals(keras.callbacks.Callback):
    """At the end of each epoch, print the totals of the training inputs
    skipped so far under ``data.on_error: skip`` and how many of them this
    epoch added (nothing while nothing was skipped).

    Args:
        counts_fn: returns ``{kind: count}`` so far (a
            ``coco.CocoDataset.skipped``: annotations dropped when the JSON
            was read, images that failed to decode while training).
        source: what is counted, e.g. the annotation file.

    The first skip of each kind was logged with its file and reason when
    it happened (``coco.SkipCounter``); tf.data reads ahead, so an epoch's
    count may include images prefetched for the next one.
    """

    def __init__(self, counts_fn, source):
        super().__init__()
        self.counts_fn = counts_fn
        self.source = source
        self.last_total = None
        self.lines = []

    def _total(self):
        return sum(dict(self.counts_fn()).values())

    def on_train_begin(self, logs=None):
        self.last_total = self._total()

    def on_epoch_end(self, epoch, logs=None):
        counts = dict(self.counts_fn())
        total = sum(counts.values())
        if not total:
            return
        added = total - (self.last_total or 0)
        self.last_total = total
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())
                          if v)
        line = (f"epoch {epoch + 1}: skipped so far in {self.source}: "
                f"{parts} ({added} during this epoch)")
        self.lines.append(line)
        print(line, flush=True)


class HistoryCSV(keras.callbacks.CSVLogger):
    """``keras.callbacks.CSVLogger`` whose columns include ``extra_keys``
    from the first row: Keras fixes the columns at the first epoch end, so
    the COCO metrics of an evaluation every N > 1 epochs would otherwise
    never reach ``history.csv`` ("NA" until they exist)."""

    def __init__(self, filename, extra_keys=(), **kwargs):
        super().__init__(filename, **kwargs)
        self.extra_keys = tuple(extra_keys)

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            self.keys = sorted(set(logs or {}) | set(self.extra_keys))
        super().on_epoch_end(epoch, logs)


class NetworkCheckpoint(keras.callbacks.Callback):
    """Save the plain network (``model.network``) with its experiment
    (``saving.save_network``) as ``.keras``:
    ``epoch_{NNN}.keras`` every ``every`` epochs, ``last.keras`` each epoch
    and ``best.keras`` when ``monitor`` (default ``val_mask_AP``) improves."""

    def __init__(self, directory, config, every=1, monitor="val_mask_AP",
                 enabled=True):
        super().__init__()
        self.directory = directory
        self.config = config
        self.every = int(every)
        self.monitor = monitor
        self.enabled = enabled
        self.best = -math.inf
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if not self.enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        network = self.model.network
        self._save(network, "last.keras")
        if self.every > 0 and (epoch + 1) % self.every == 0:
            self._save(network, f"epoch_{epoch + 1:03d}.keras")
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self._save(network, "best.keras")
            path = os.path.join(self.directory, "best.json")
            with open(path + ".tmp", "w") as f:
                json.dump({"epoch": epoch + 1, self.monitor: value}, f)
            os.replace(path + ".tmp", path)


    def _save(self, network, name):
        save_network(network, os.path.join(self.directory, name), self.config)


def read_backup_state(backup_dir):
    """``{"epoch", "step", "global_step", "position"}`` of the newest intact
    backup in ``backup_dir`` (``backup.latest``), or None."""
    found = backup.latest(backup_dir)
    if found is None:
        return None
    state = found[1]
    return {k: state[k] for k in ("epoch", "step", "global_step",
                                  "position")}


class TrainingBackup(keras.callbacks.Callback):
    """Write a crash-consistent backup (``training.backup``: weights,
    optimizer, step counters, data-stream position, RNG state, in one
    folder completed last) every ``every`` batches of the training stream
    and at every epoch end, so that a killed run continues at the exact
    step with the exact data stream.

    Args:
        directory: the run's ``backup/`` folder.
        steps_per_epoch: steps of a full epoch.
        every: backup period in batches (counted on the stream position,
            so a resumed run backs up at the same steps); 0 = epoch ends
            only.
        start_step: steps already done in the first epoch of this ``fit``
            call (a resumed run finishing its interrupted epoch).
        start_position: batches of the stream consumed before this ``fit``
            call.
        keep: complete backups kept (the newest ones).

    The last batch of an epoch is backed up by ``on_epoch_end``, after the
    epoch's checkpoints and logs (put this callback after those). After a
    non-finite loss nothing more is written: the newest backup stays the
    last finite state. A failed write raises ``backup.BackupError``.
    """

    def __init__(self, directory, steps_per_epoch, every=0, start_step=0,
                 start_position=0, keep=2):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = int(steps_per_epoch)
        self.every = int(every)
        self.start_step = int(start_step)
        self.position = int(start_position)
        self.keep = int(keep)
        self.epoch = 0
        self.step = 0
        self.diverged = False
        self.written = []
        self._first_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self.epoch = epoch
        self.step = self.start_step if epoch == self._first_epoch else 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self.position += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not np.all(np.isfinite(np.asarray(loss))):
            self.diverged = True
        if (self.every > 0 and self.position % self.every == 0
                and self.step < self.steps_per_epoch):
            self._write(self.epoch, self.step)

    def on_epoch_end(self, epoch, logs=None):
        if self.step >= self.steps_per_epoch:
            self._write(epoch + 1, 0)

    def _write(self, epoch, step):
        if self.diverged:
            return
        self.written.append(backup.write(
            self.model, self.directory, epoch, step, self.position,
            self.steps_per_epoch, keep=self.keep))


class TensorBoardImages(keras.callbacks.Callback):
    """Every ``every`` epochs, draw the predicted masks on a few validation
    images (``images`` float32 ``(N, H, W, 3)`` in [0, 1]) and write them to
    TensorBoard (``log_dir/images``) as ``val_predictions``."""

    def __init__(self, log_dir, images, detect_fn, class_names=(), every=1,
                 score_threshold=0.3):
        super().__init__()
        self.writer = tf.summary.create_file_writer(
            os.path.join(log_dir, "images"))
        self.images = np.asarray(images, np.float32)
        self.detect_fn = detect_fn
        self.class_names = tuple(class_names)
        self.every = int(every)
        self.score_threshold = score_threshold

    def on_epoch_end(self, epoch, logs=None):
        if self.every <= 0 or (epoch + 1) % self.every:
            return
        det = {k: np.asarray(v)
               for k, v in self.detect_fn(self.images).items()}
        drawn = []
        for b, image in enumerate(self.images):
            n = int(det["num_detections"][b])
            drawn.append(draw_detections(
                (image * 255).round().astype(np.uint8), det["boxes"][b][:n],
                det["scores"][b][:n], det["classes"][b][:n],
                det["masks"][b][:n], self.class_names, self.score_threshold))
        with self.writer.as_default():
            tf.summary.image("val_predictions", np.stack(drawn), step=epoch + 1,
                             max_outputs=len(drawn))
        self.writer.flush()


class TrainingPlot(keras.callbacks.Callback):
    """Re-draw ``results.png`` (``eval.plots.plot_training_results``: each
    loss item, the learning rate, val mask / box AP) from the run's
    ``history.csv`` at the end of every epoch; put it after the
    ``CSVLogger``. Epoch-log values the CSV has no column for (the
    ``CSVLogger`` fixes its columns at the first epoch, so ``val_mask_AP``
    first logged at a later epoch is not in it) are drawn from the logs
    this callback saw. A picture that fails to draw is logged, never
    stops training."""

    def __init__(self, history_csv, output_png):
        super().__init__()
        self.history_csv = history_csv
        self.output_png = output_png
        self.extra = {}

    def on_epoch_end(self, epoch, logs=None):
        try:
            from orienmask_tf.eval.plots import plot_training_results

            self.extra[int(epoch)] = {
                k: float(v) for k, v in (logs or {}).items()
                if np.ndim(v) == 0}
            plot_training_results(self.history_csv, self.output_png,
                                  extra=self.extra)
        except Exception as error:  # a picture never stops training
            logger.warning("could not draw %s: %s", self.output_png, error)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (at the current step) to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if callable(getattr(optimizer, "_learning_rate", None)):
            lr = optimizer._learning_rate(optimizer.iterations)
        logs["learning_rate"] = float(np.asarray(lr))


class NanGuard(keras.callbacks.Callback):
    """Stop training at the first non-finite loss (``stopped_at`` records
    ``(epoch, batch)``; ``train`` then reports an error). The weights of
    the last backup and checkpoint stay those of the last finite step."""

    def __init__(self):
        super().__init__()
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.stopped_at = (self._epoch, batch)
            logger.error("non-finite loss %s at epoch %d, batch %d: stopping",
                         loss, self._epoch + 1, batch)
            self.model.stop_training = True
