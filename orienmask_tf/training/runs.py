# SPDX-License-Identifier: Apache-2.0
"""Run folders: a new training run never writes into another run's folder.

Where ``train`` writes (``prepare_run``):

* by default a new folder: ``runs/<name>``, or ``runs/<name>2``,
  ``runs/<name>3``, ... (one past the highest number) when it exists; the
  folder is claimed with an atomic ``mkdir``, so two runs started at once
  get two folders;
* ``resume=True`` (``--resume``): the latest run of the config name (the
  highest number); ``resume="runs/x2"`` (``--resume DIR``): that folder. It
  must hold the ``config.yaml`` of a run;
* ``exist_ok=True`` (``--exist-ok``): ``runs/<name>`` itself, whether or
  not it exists;
* an explicit folder (``train(output_dir=...)``, ``--output DIR`` or
  ``train.output_dir``) is used as it is, like ``exist_ok``.

Continuing in a folder that holds a ``config.yaml`` (all but the first
case) compares it with the requested experiment and refuses any
difference, naming the keys. With ``force=True`` (``--force``) the keys of
``SAFE_TO_CHANGE`` may differ (the new values are used and written to
``config.yaml``); any other difference is refused even then. The run then
continues from its ``backup/`` at the epoch and step it stopped (a
finished run only writes its model again), or starts in that folder when
there is no backup yet.

One run per folder: the chief holds ``run.lock`` in it (an exclusive
``flock`` on a file naming its pid, host and start time) from the choice
of the folder to the end of training. A second ``train`` on the folder
while the first runs fails with ``RunLockError`` naming the owner; the
lock file of a run killed without releasing it is taken over with a
warning (the kernel released its ``flock`` when it died).

Multi-worker training: only the chief looks at and creates folders. The
number it chose (0 for an explicit folder, -1 for a refusal) is summed
over the replicas of every worker (one collective, ``agree``), so all
workers use the folder of the chief, even when the chief has already
created ``runs/<name>2`` before another worker would have listed
``runs/``, and a refusal on the chief stops every worker instead of
leaving them waiting for it.
"""

import fcntl
import json
import logging
import os
import re
import socket
import time

import yaml

from orienmask_tf.config import ConfigError
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"

# Keys a resumed run may change with --force: how long it runs, how often
# it evaluates, saves and logs, how it is distributed, and where the same
# data lives. Everything else (model, loss, targets, data recipe, batch,
# optimizer, schedule, steps per epoch, seeds) defines what the saved
# weights and optimizer state mean, or where the data stream resumes.
# With a cosine schedule, train.epochs also reshapes the remaining
# learning-rate curve (its end moves); the step schedule counts iterations.
SAFE_TO_CHANGE = (
    "train.epochs",
    "train.eval_every",
    "train.eval_max_images",
    "train.checkpoint_every",
    "train.backup_every",
    "train.log_every",
    "train.tensorboard_images",
    "train.strategy",
    "train.jit_compile",
    "data.train_annotations",
    "data.train_images",
    "data.val_annotations",
    "data.val_images",
    "data.train_tfrecords",
    "data.val_tfrecords",
)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says why."""


class RunLockError(RunFolderError):
    """Another training run holds the run folder."""


class RunLock:
    """The lock of one run folder (``run.lock``): ``acquire(folder)`` takes
    it or raises ``RunLockError`` naming the owner's pid and host;
    ``release()`` deletes the file and lets it go. A lock file left by a
    dead run (its ``flock`` is gone with the process) is taken over with
    a warning. Also a context manager (releases on exit)."""

    def __init__(self):
        self.path = None
        self._fd = None

    def acquire(self, folder):
        if self._fd is not None:
            raise RuntimeError(f"RunLock already holds {self.path}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, LOCK_NAME)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunLockError(
                    f"{folder}: another training run is using this folder "
                    f"(pid {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')}, started "
                    f"{owner.get('started', '?')}; {path}): wait for it to "
                    "end, or train into another folder (--output DIR, or "
                    "no --resume / --exist-ok for a new runs/<name>N)"
                ) from None
            except OSError:
                os.close(fd)
                raise
            # The file may have been deleted by its releasing owner between
            # our open and flock: then lock the new one.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_owner(fd)
        if previous:
            logger.warning(
                "%s: taking over the lock of pid %s on %s (started %s), "
                "which is no longer running", path, previous.get("pid", "?"),
                previous.get("host", "?"), previous.get("started", "?"))
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
        os.fsync(fd)
        self.path, self._fd = path, fd
        return self

    def release(self):
        if self._fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _read_owner(fd):
    try:
        data = os.pread(fd, 4096, 0)
        owner = json.loads(data.decode("utf-8")) if data else {}
    except (OSError, ValueError):
        return {"pid": "?"}
    return owner if isinstance(owner, dict) else {"pid": "?"}


def default_base(config):
    """``runs/<name>``: the first folder of a config's runs."""
    return os.path.join("runs", config.name or "run")


def numbered(base, index):
    """``base`` for index 1, else ``base`` + index (``runs/x2``)."""
    return base if index == 1 else f"{base}{index}"


def existing_runs(base):
    """``[(index, path)]`` of the existing folders ``base``, ``base2``,
    ... in increasing index."""
    parent = os.path.dirname(base) or "."
    name = os.path.basename(base)
    pattern = re.compile(re.escape(name) + r"([2-9]|[1-9][0-9]+)?")
    found = []
    if os.path.isdir(parent):
        for entry in os.listdir(parent):
            match = pattern.fullmatch(entry)
            path = os.path.join(os.path.dirname(base), entry)
            if match and os.path.isdir(path):
                found.append((int(match.group(1) or 1), path))
    return sorted(found)


def claim_next(base):
    """Create and return ``(index, path)`` of the next new run folder."""
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    while True:
        index = max((i for i, _ in existing_runs(base)), default=0) + 1
        path = numbered(base, index)
        try:
            os.mkdir(path)
        except FileExistsError:  # another run claimed it first
            continue
        return index, path


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def saved_experiment(folder):
    """The experiment in ``folder/config.yaml`` as a flat ``{key: value}``
    (normalised through ``load_config``: defaults added since are
    filled in)."""
    path = os.path.join(folder, "config.yaml")
    try:
        return _flatten(config_to_dict(load_config(path)))
    except ConfigError as error:
        # Written by another version of the package: compare the raw file.
        try:
            with open(path, encoding="utf-8") as stream:
                return _flatten(yaml.safe_load(stream) or {})
        except (OSError, yaml.YAMLError):
            raise RunFolderError(f"{path}: cannot read the saved experiment "
                                 f"({error})") from None


def differences(saved, config):
    """``{key: (saved value, requested value)}`` between a flat saved
    experiment and the ``Experiment`` ``config``. ``train.output_dir``
    (where the run is) never counts, nor ``data.class_names`` when
    ``config`` leaves them to training (filled in from the COCO file)."""
    requested = _flatten(config_to_dict(config))
    missing = object()
    out = {}
    for key in sorted(set(saved) | set(requested)):
        if key == "train.output_dir":
            continue
        if key == "data.class_names" and not requested.get(key):
            continue
        old, new = saved.get(key, missing), requested.get(key, missing)
        if old != new:
            out[key] = (None if old is missing else old,
                        None if new is missing else new)
    return out


def check_continuation(folder, config, force=False):
    """Refuse to continue the run in ``folder`` with another experiment.

    Raises:
        RunFolderError: naming every differing key with both values, and
            saying which ones ``force`` would accept.
    """
    changed = differences(saved_experiment(folder), config)
    if not changed:
        return
    unsafe = [k for k in changed if k not in SAFE_TO_CHANGE]
    listing = ", ".join(f"{k} (saved {changed[k][0]!r}, requested "
                        f"{changed[k][1]!r})" for k in changed)
    where = os.path.join(folder, "config.yaml")
    if unsafe:
        hint = (f"{', '.join(unsafe)} cannot change in a continued run"
                + ("" if len(unsafe) == len(changed) else
                   "; the others could with --force")
                + ": start a new run (without --resume / --exist-ok) or "
                  "pick another --output")
        raise RunFolderError(f"{where}: the run was made with another "
                             f"config: {listing}; {hint}")
    if not force:
        raise RunFolderError(
            f"{where}: the run was made with another config: {listing}; "
            "add --force to continue it with the new values (safe to "
            "change: " + ", ".join(SAFE_TO_CHANGE) + ")")


def _has_run(folder):
    return os.path.isfile(os.path.join(folder, "config.yaml"))


def choose(config, output_dir=None, resume=None, exist_ok=False):
    """The chief's choice: ``(index, folder, continuing)``; index 0 for a
    folder given by name (``resume`` path, ``output_dir``,
    ``train.output_dir``), else the number of ``runs/<name><number>``.
    Creates a new folder (only that)."""
    explicit = output_dir or config.train.output_dir or None
    base = default_base(config)
    if resume:
        if isinstance(resume, (str, os.PathLike)):
            index, folder = 0, os.fspath(resume)
        elif explicit:
            index, folder = 0, os.fspath(explicit)
        else:
            runs = existing_runs(base)
            if not runs:
                raise RunFolderError(f"--resume: no run of {config.name!r} "
                                     f"to resume ({base} does not exist)")
            index, folder = runs[-1]
        if not _has_run(folder):
            raise RunFolderError(f"--resume {folder}: not a run folder (no "
                                 "config.yaml in it)")
        return index, folder, True
    if explicit:
        folder = os.fspath(explicit)
        return 0, folder, _has_run(folder)
    if exist_ok:
        return 1, base, _has_run(base)
    index, folder = claim_next(base)
    return index, folder, False


def folder_of(config, index, output_dir=None, resume=None):
    """The folder of the chief's ``index`` (``choose``), on any worker."""
    if index == 0:
        if isinstance(resume, (str, os.PathLike)):
            return os.fspath(resume)
        return os.fspath(output_dir or config.train.output_dir)
    return numbered(default_base(config), index)


def agree(strategy, value, chief):
    """The chief's integer ``value`` on every worker of a
    ``MultiWorkerMirroredStrategy`` (one all-reduce); ``value`` itself
    otherwise."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return value
    local = max(len(strategy.extended.worker_devices), 1)
    # Every local replica of the chief adds value / local, the others 0.
    share = float(value) / local if chief else 0.0

    @tf.function
    def reduce():
        per_replica = strategy.run(lambda: tf.constant(share, tf.float64))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                               axis=None)

    return int(round(float(reduce())))


def prepare_run(config, output_dir=None, resume=None, exist_ok=False,
                force=False, strategy=None, chief=True, lock=None):
    """Choose (and on the chief create) the run folder; returns it.

    Args:
        config: the requested ``Experiment``.
        output_dir: an explicit folder (else ``train.output_dir``, else
            ``runs/<name>``, numbered).
        resume: ``True`` (the latest run of the config name, or the
            explicit folder) or a folder to continue.
        exist_ok: use ``runs/<name>`` even when it exists.
        force: continue although ``SAFE_TO_CHANGE`` keys differ.
        strategy, chief: under ``MultiWorkerMirroredStrategy`` the chief
            decides and the other workers take its folder (``agree``).
        lock: a ``RunLock``: the chief acquires it on the folder before
            looking at the run in it (the caller releases it).

    Raises:
        RunFolderError: see ``choose`` and ``check_continuation``;
            ``RunLockError`` when another run holds the folder.
    """
    error, index, folder = None, -1, None
    if chief:
        try:
            index, folder, continuing = choose(config, output_dir, resume,
                                               exist_ok)
            if lock is not None:
                lock.acquire(folder)
            if continuing:
                check_continuation(folder, config, force)
            os.makedirs(folder, exist_ok=True)
        except (RunFolderError, OSError) as caught:
            error, index = caught, -1
            if lock is not None:
                lock.release()
    index = agree(strategy, index, chief) if strategy is not None else index
    if error is not None:
        raise error
    if index < 0:
        raise RunFolderError("the chief refused the run folder (its log "
                             "says why)")
    return folder if chief else folder_of(config, index, output_dir, resume)
