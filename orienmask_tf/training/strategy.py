"""``get_strategy``: the tf.distribute strategy named by ``train.strategy``.

* ``"default"``: one device (the first GPU if any, else the CPU).
* ``"mirrored"``: ``MirroredStrategy`` over every visible GPU (or the given
  devices, e.g. two logical CPUs in tests); gradients all-reduced.
* ``"multi_worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from
  the ``TF_CONFIG`` environment variable of each worker (worker 0 is the
  chief: it alone writes checkpoints, TensorBoard logs and evaluations).

A strategy must be created before any other TensorFlow operation runs
(``MultiWorkerMirroredStrategy`` refuses otherwise), so ``train`` calls this
first.
"""

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def get_strategy(name="default", devices=None):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "train.strategy=multi_worker needs the TF_CONFIG environment "
                "variable ({'cluster': {'worker': [host:port, ...]}, 'task': "
                "{'type': 'worker', 'index': i}}) on every worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy must be one of {STRATEGIES}, got "
                     f"{name!r}")


def task_info():
    """``(task_type, task_index)`` from ``TF_CONFIG`` (``(None, 0)`` if unset)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    return task.get("type"), int(task.get("index", 0))


def is_chief(strategy=None):
    """True on the worker that writes files (worker 0 / the chief)."""
    task_type, index = task_info()
    if task_type is None:
        return True
    return task_type == "chief" or (task_type == "worker" and index == 0
                                    and "chief" not in json.loads(
                                        os.environ["TF_CONFIG"]).get(
                                            "cluster", {}))


def distributed_dataset(strategy, dataset_fn):
    """The training dataset of this worker, for ``model.fit`` under
    ``strategy`` (Keras distributes it over the local replicas).

    ``dataset_fn(input_context)`` builds a dataset batched by
    ``input_context.get_per_replica_batch_size(global_batch)``. Under
    ``MultiWorkerMirroredStrategy`` each worker reads its own shard of the
    images (``input_pipeline_id`` = worker index) in global-size batches,
    which ``experimental_distribute_dataset`` rebatches per replica; tf.data
    auto-sharding is turned off since the shards are already disjoint.
    One worker: the whole dataset, split over the local replicas by Keras.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _, index = task_info()
        workers = strategy.extended._num_workers  # noqa: SLF001
        context = tf.distribute.InputContext(
            num_input_pipelines=workers, input_pipeline_id=index,
            num_replicas_in_sync=1)  # batch = the global batch
        dataset = dataset_fn(context)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return dataset.with_options(options)
    return dataset_fn(None)
