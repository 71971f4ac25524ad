"""``train(config)``: strategy scope -> network + loss -> compile -> fit,
for OrienMask and YOLACT alike (parts from ``training.builders``).

Everything the run writes goes to its run folder: a new ``runs/<config
name>`` (``runs/<name>2``, ``runs/<name>3``, ... when it exists), or the
folder named by ``--resume`` / ``--output`` / ``train.output_dir``
(``training.runs`` says when an existing run may be continued)::

    config.yaml          the experiment (class names filled in)
    checkpoints/         last.keras, best.keras (by val mask AP),
                         epoch_NNN.keras every train.checkpoint_every epochs
                         (each the family's plain network, with the
                         experiment stored in the file)
    model.keras          the final network (with its experiment)
    backup/step-NNNNNNNNN/
                         one crash-consistent backup (``training.backup``:
                         weights, optimizer, counters, data position, RNG
                         state, completed last) every train.backup_every
                         steps and epoch; a restarted run resumes at its
                         epoch and step with the same data stream
    run.lock             held while a run trains in the folder
    logs/                TensorBoard: every loss item, learning rate, val AP;
                         logs/images: predicted masks on validation images
    history.csv          per-epoch logs (loss items, learning rate, val AP)
    results.png          those curves, redrawn every epoch
    eval.json            the last COCO evaluation
"""

import dataclasses
import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf
import yaml

from orienmask_tf.config import config_to_dict
from orienmask_tf.training import backup
from orienmask_tf.training import callbacks as cb
from orienmask_tf.saving import load_network
from orienmask_tf.saving import save_network
from orienmask_tf.training.train_model import TrainModel
from orienmask_tf.training.optimizer import make_optimizer
from orienmask_tf.training.runs import RunLock
from orienmask_tf.training.runs import prepare_run
from orienmask_tf.training.schedules import make_schedule
from orienmask_tf.training.strategy import distributed_dataset
from orienmask_tf.training.strategy import get_strategy
from orienmask_tf.training.strategy import is_chief
from orienmask_tf.training.strategy import task_info

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training stopped abnormally (non-finite loss)."""


def resolve_precision(policy):
    """``train.mixed_precision``: ``auto`` = mixed_float16 on GPU, else
    float32 (TF_NOTES: mixed precision is 1.5-22x slower on CPU)."""
    if policy == "auto":
        return ("mixed_float16" if tf.config.list_physical_devices("GPU")
                else "float32")
    return policy


def build_network(config):
    """The network of ``config``, initialised from ``train.init_weights``
    (a ``.keras`` of the same network, e.g. from ``orienmask-tf
    convert``: an official checkpoint, or a pretrained backbone with fresh
    heads), BatchNorm frozen with ``train.freeze_bn``."""
    network = config.family.build_network(config)
    if config.train.init_weights:
        path = config.train.init_weights
        source, _ = load_network(path, config, what="train.init_weights")
        network.set_weights(source.get_weights())
        logger.info("initialized from %s", path)
    if config.train.freeze_bn:
        for layer in network._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # Keras 3: also inference mode
    return network


def build_train_model(config, strategy, steps_per_epoch):
    """Network, loss wrapper and compiled optimizer under ``strategy``."""
    distributed = strategy.num_replicas_in_sync > 1 or isinstance(
        strategy, (tf.distribute.MirroredStrategy,
                   tf.distribute.MultiWorkerMirroredStrategy))
    jit = config.train.jit_compile
    if jit and distributed:
        logger.warning("train.jit_compile is ignored under %s "
                       "(keras-team/keras#19005)", type(strategy).__name__)
        jit = False
    if (strategy.num_replicas_in_sync > 1
            and config.model.synchronized_bn is True
            and not config.train.freeze_bn):
        logger.warning(
            "model.synchronized_bn=true under %s with %d replicas: Keras' "
            "cross-replica BatchNorm is exact maths, but its float32 "
            "statistics round differently for every replica count, so "
            "training is not bit-for-bit the one-device training (LeakyReLU "
            "amplifies the rounding); model.synchronized_bn=split_invariant "
            "gives the same statistics and gradients however the batch is "
            "split; see README 'Training'", type(strategy).__name__,
            strategy.num_replicas_in_sync)
    with strategy.scope():
        network = build_network(config)
        model = TrainModel(network, config.family.make_loss(config))
        model.build((None,) + tuple(config.image_size) + (3,))
        schedule = make_schedule(config.train, steps_per_epoch)
        model.compile(optimizer=make_optimizer(config.train, schedule),
                      jit_compile=bool(jit))
        model.optimizer.build(model.trainable_variables)
    model.vector_logs = isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy)
    return model


def _output_dirs(config, output_dir, resume=None, exist_ok=False,
                 force=False, strategy=None, lock=None):
    """The run folder (``runs.prepare_run``, the chief locking it with
    ``lock``); non-chief workers get their own subfolder of the chief's."""
    chief = is_chief()
    root = prepare_run(config, output_dir=output_dir, resume=resume,
                       exist_ok=exist_ok, force=force, strategy=strategy,
                       chief=chief, lock=lock)
    if not chief:
        # Non-chief workers write their (identical) backups and throw-away
        # logs apart, so that the chief's files are never overwritten.
        _, index = task_info()
        root = os.path.join(root, "workers", f"worker_{index}")
    return root


def train(config, output_dir=None, devices=None, extra_callbacks=(),
          verbose=1, evaluate=True, resume=None, exist_ok=False,
          force=False):
    """Train the network of ``config`` (its family's, by
    ``model.architecture``) as it says; returns a summary dict.

    Args:
        config: an ``Experiment``.
        output_dir: the run folder, used as it is (overrides
            ``train.output_dir``); default: a new ``runs/<name>[N]``.
        devices: device names for ``MirroredStrategy`` (default all GPUs).
        extra_callbacks: more Keras callbacks (tests).
        verbose: Keras progress bars (1), one line per epoch (2), none (0).
        evaluate: COCO evaluation every ``train.eval_every`` epochs.
        resume: ``True`` (the latest run of the config name, or
            ``output_dir``) or a run folder to continue.
        exist_ok: continue in ``runs/<name>`` even when it exists.
        force: continue although ``training.runs.SAFE_TO_CHANGE`` keys
            differ from the run's ``config.yaml``.

    Raises:
        training.runs.RunFolderError: an existing run was made with
            another experiment, or ``resume`` finds no run;
            ``runs.RunLockError`` when another run trains in the folder.
        training.backup.BackupError: a backup could not be written (disk
            full, no permission); the last complete one stays usable.
        TrainingError: a non-finite loss.
    """
    strategy = get_strategy(config.train.strategy, devices)
    keras.config.set_dtype_policy(
        resolve_precision(config.train.mixed_precision))
    keras.utils.set_random_seed(config.train.seed)
    lock = RunLock()
    root = _output_dirs(config, output_dir, resume=resume, exist_ok=exist_ok,
                        force=force, strategy=strategy, lock=lock)
    try:
        return _train_in(config, root, strategy, extra_callbacks,
                         verbose, evaluate)
    finally:
        lock.release()


def _write_config(root, config):
    """``config.yaml``, written atomically (a truncated one would block
    every rerun)."""
    path = os.path.join(root, "config.yaml")
    with open(path + ".tmp", "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _train_in(config, root, strategy, extra_callbacks, verbose,
              evaluate):
    chief = is_chief()
    os.makedirs(root, exist_ok=True)
    if chief:
        print(f"run folder {root}", flush=True)

    from orienmask_tf.data import coco as coco_lib
    from orienmask_tf.data.pipeline import build_dataset
    from orienmask_tf.data.pipeline import data_errors

    coco = None
    if config.data.train_tfrecords:
        from orienmask_tf.data.tfrecord import record_files

        record_files(config.data.train_tfrecords)  # complete shards only
    else:
        if not config.data.train_annotations:
            raise ValueError("no training data: set data.train_annotations "
                             "and data.train_images (or data.train_tfrecords)")
        coco = coco_lib.load_coco(config.data.train_annotations,
                                  config.data.train_images,
                                  on_error=config.data.on_error)
        if coco.num_classes > config.model.num_classes:
            raise ValueError(
                f"model.num_classes={config.model.num_classes}, but "
                f"{config.data.train_annotations} has {coco.num_classes} "
                "categories: the extra labels would train as background "
                f"(set model.num_classes={coco.num_classes})")
        if config.data.skip_empty:
            # Counted for the steps per epoch as mmdet counts its filtered
            # dataset; build_dataset then keeps it as it is.
            coco = coco.with_annotations_only()
        if not config.data.class_names:
            config = dataclasses.replace(config, data=dataclasses.replace(
                config.data, class_names=tuple(coco.class_names)))
    steps = config.train.steps_per_epoch
    if steps <= 0:
        if coco is None:
            raise ValueError("train.steps_per_epoch must be set when training "
                             "from data.train_tfrecords")
        steps = max(len(coco) // config.train.batch_size, 1)
    if chief:
        _write_config(root, config)

    model = build_train_model(config, strategy, steps)

    evaluator = None
    if evaluate and chief and config.train.eval_every > 0 \
            and config.data.val_annotations:
        from orienmask_tf.inference.evaluate import NetworkEvaluator

        evaluator = NetworkEvaluator(config, "val",
                                     max_images=config.train.eval_max_images)

    epochs = config.train.epochs
    backup_dir = os.path.join(root, "backup")
    found = backup.latest(backup_dir)
    start_epoch, start_step, position = 0, 0, 0
    if found is not None:
        path, state = found
        backup.restore(model, path, state)
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        position = int(state["position"])
        if start_step >= steps:
            start_epoch, start_step = start_epoch + 1, 0
        print(f"resuming from {backup_dir}: epoch {start_epoch + 1}, step "
              f"{start_step} (optimizer step {state['global_step']}; "
              f"{os.path.basename(path)})", flush=True)
    # float16 OrienMask orientation targets: half the memory per example at
    # 544; the loss computes in float32.
    encoder = config.family.make_encoder(config, orien_dtype="float16")

    def stream(start_batch):
        # The training stream from batch ``start_batch`` on: one per fit
        # call, since each call starts a new iterator (a dataset reused by
        # a second fit would replay the batches of the first).
        return distributed_dataset(strategy, lambda ctx: build_dataset(
            config, "train", input_context=ctx, encoder=encoder, coco=coco,
            start_batch=start_batch))

    def callbacks(step_offset, start_position):
        nan_guard = cb.NanGuard()
        result = [nan_guard, cb.LearningRateLogger()]
        if coco is not None and config.data.on_error == "skip":
            result.append(cb.SkipTotals(lambda: coco.skipped,
                                        coco.annotation_file))
        if evaluator is not None:
            result.append(cb.CocoEvalCallback(
                lambda: evaluator(model.network),
                every=config.train.eval_every, total_epochs=epochs))
        result.append(cb.NetworkCheckpoint(
            os.path.join(root, "checkpoints"), config,
            every=config.train.checkpoint_every, enabled=chief))
        result.append(cb.HistoryCSV(
            os.path.join(root, "history.csv"), append=True,
            extra_keys=cb.CocoEvalCallback.KEYS if evaluator else ()))
        if chief:  # results.png: losses, learning rate, val AP per epoch
            result.append(cb.TrainingPlot(os.path.join(root, "history.csv"),
                                          os.path.join(root, "results.png")))
        result.append(keras.callbacks.TensorBoard(
            os.path.join(root, "logs"), write_graph=False,
            update_freq=config.train.log_every or "epoch"))
        if chief and evaluator is not None and config.train.tensorboard_images:
            result.append(_image_callback(config, model, evaluator, root))
        # Last: an epoch's backup follows its checkpoints and logs.
        result.append(cb.TrainingBackup(
            backup_dir, steps, every=config.train.backup_every,
            start_step=step_offset, start_position=start_position))
        return nan_guard, result + list(extra_callbacks)

    history = {}
    phases = []
    if start_step > 0 and start_epoch < epochs:
        phases.append((start_epoch, start_epoch + 1, steps - start_step,
                       start_step))
        start_epoch += 1
    if start_epoch < epochs:
        phases.append((start_epoch, epochs, steps, 0))
    for first, last, phase_steps, offset in phases:
        guard, phase_callbacks = callbacks(offset, position)
        with data_errors():
            result = model.fit(stream(position), initial_epoch=first,
                               epochs=last, steps_per_epoch=phase_steps,
                               callbacks=phase_callbacks, verbose=verbose)
        position += (last - first) * phase_steps
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        if guard.stopped_at is not None:
            raise TrainingError(
                f"non-finite loss at epoch {guard.stopped_at[0] + 1}, batch "
                f"{guard.stopped_at[1]}; the last finite state is in "
                f"{backup_dir} (lower train.learning_rate or set "
                "train.clip_norm)")
    summary = {"output_dir": root, "steps_per_epoch": steps,
               "epochs": epochs, "history": history,
               "global_step": int(model.optimizer.iterations.numpy())}
    if chief:
        final = os.path.join(root, "model.keras")
        save_network(model.network, final, config)
        summary["model"] = final
        best = os.path.join(root, "checkpoints", "best.keras")
        if os.path.exists(best):
            summary["best_model"] = best
        if evaluator is not None and evaluator.last_results is not None:
            with open(os.path.join(root, "eval_results.json"), "w") as f:
                json.dump(evaluator.last_results, f)
    summary["model_object"] = model
    return summary


def _image_callback(config, model, evaluator, root):
    from orienmask_tf.export.serving import InferenceModel

    count = config.train.tensorboard_images
    images = []
    for batch, _ in evaluator.dataset:
        images.extend(np.asarray(batch))
        if len(images) >= count:
            break
    images = np.stack(images[:count])
    anchors, decode = config.family.inference_args(config)

    def detect(batch):
        inference = InferenceModel(model.network, config.image_size,
                                   anchors, decode, jit_compile=False)
        return inference.detect(batch)

    return cb.TensorBoardImages(os.path.join(root, "logs"), images, detect,
                                config.data.class_names,
                                every=config.train.eval_every)
