# SPDX-License-Identifier: Apache-2.0
"""Crash-consistent training backups: one directory per backup, whole or
absent.

A backup holds everything a killed run needs to continue at the exact
step with the exact data stream::

    backup/
      step-000000006/        6 = batches of the training stream consumed
        variables.npz        every model variable (weights, BatchNorm
                             statistics, seed-generator states) and every
                             optimizer variable (step count, momenta), in
                             build order
        state.json           epoch, steps done in it, stream position,
                             optimizer step, steps per epoch, python /
                             numpy RNG states, the variables' shapes and
                             the size and SHA-256 of variables.npz
        COMPLETE             written last: the SHA-256 of state.json

A backup is written into ``backup/.tmp-step-...-<pid>/`` (every file
fsync'd), its ``COMPLETE`` marker last, then renamed to ``step-NNNNNNNNN``
(and the folder fsync'd). Only then are older backups deleted, keeping
the newest ``keep`` (2: a backup found damaged later still has a
predecessor). ``latest`` takes the newest backup whose marker, state and
variables all check out; a damaged one is skipped with a warning naming
it. A write that fails (disk full, no permission) removes its temporary
folder and raises ``BackupError`` (one line, naming the last complete
backup, which stays usable).

The data-stream position is the number of batches consumed: the training
stream is one seeded, shuffled, repeated sequence whose augmentation is
seeded per element (``data.pipeline``), so ``build_dataset(start_batch=
position)`` gives the batches the uninterrupted run saw next.

Fault injection (tests and ``scripts/fault_injection.py``):
``ORIENMASK_TF_FAULT=ACTION:STAGE:POSITION[,...]`` makes the backup of
``POSITION`` fail at ``STAGE`` (``begin``, ``variables`` -- half of the
file written --, ``state``, ``marker``, ``rename``, ``cleanup``) with
ACTION ``kill`` (SIGKILL, as ``kill -9``), ``enospc`` or ``eacces``
(the ``OSError`` a full disk / a read-only folder raises).
"""

import errno
import hashlib
import io
import json
import logging
import os
import random
import re
import shutil
import signal
import time

import numpy as np

logger = logging.getLogger(__name__)

FORMAT = 1
MARKER = "COMPLETE"
STATE = "state.json"
VARIABLES = "variables.npz"
FAULT_ENV = "ORIENMASK_TF_FAULT"
_NAME = re.compile(r"step-(\d{9})")
# What Keras' BackupAndRestore and earlier versions of this package wrote.
_LEGACY = ("latest.weights.h5", "training_state.json",
           "training_metadata.json")


class BackupError(RuntimeError):
    """A backup could not be written; the message says why and which
    complete backup is kept."""


def fault_point(stage, position, path=""):
    """The fault-injection hook (``ORIENMASK_TF_FAULT``, see the module
    docstring); does nothing when the variable is unset."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        action, _, rest = item.strip().partition(":")
        where, _, at = rest.partition(":")
        if where != stage or not at or int(at) != int(position):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = {"enospc": errno.ENOSPC, "eacces": errno.EACCES}.get(action)
        if code is not None:
            raise OSError(code, os.strerror(code), path)


def backup_name(position):
    return f"step-{int(position):09d}"


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd, view):
    while len(view):
        view = view[os.write(fd, view):]


def _write_file(path, data, stage, position):
    """Write ``data`` to the new file ``path`` and fsync it; the fault
    hook fires half-way, so an injected kill leaves a truncated file."""
    view = memoryview(data)
    half = len(view) // 2
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, view[:half])
        fault_point(stage, position, path)
        _write_all(fd, view[half:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_numpy(variable):
    return np.asarray(variable.numpy() if hasattr(variable, "numpy")
                      else variable)


def model_variables(model):
    """The variables a backup holds, in build order: the model's (trainable
    and non-trainable weights, seed-generator states; not the metrics,
    which restart every epoch) and the optimizer's."""
    model_vars = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    optimizer_vars = list(optimizer.variables) if optimizer is not None \
        else []
    return model_vars, optimizer_vars


def _rng_state():
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, keys.tolist(), int(pos), int(has_gauss),
                      float(cached)]}


def _set_rng_state(state):
    if not state:
        return
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss,
                         cached))


def _describe(variables):
    return [[getattr(v, "path", getattr(v, "name", "?")),
             list(v.shape), str(np.dtype(v.dtype))] for v in variables]


def list_backups(directory):
    """``[(position, path)]`` of the ``step-*`` folders, newest first
    (complete or not: ``check`` tells)."""
    if not os.path.isdir(directory):
        return []
    found = []
    for entry in os.listdir(directory):
        match = _NAME.fullmatch(entry)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, entry)))
    return sorted(found, reverse=True)


def check(path):
    """The state of the backup folder ``path`` when it is complete and
    intact (marker, state and variables checksums); else raises
    ``ValueError`` saying what is wrong."""
    try:
        with open(os.path.join(path, MARKER), "rb") as stream:
            marker = json.loads(stream.read().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError("incomplete (no COMPLETE marker)") from None
    except OSError as error:
        raise ValueError(f"unreadable COMPLETE marker ({error.strerror})"
                         ) from None
    except ValueError:
        raise ValueError("damaged COMPLETE marker (empty or not JSON)"
                         ) from None
    try:
        with open(os.path.join(path, STATE), "rb") as stream:
            raw = stream.read()
    except OSError as error:
        raise ValueError(f"unreadable {STATE} ({error.strerror})") from None
    if not isinstance(marker, dict) or marker.get("state_sha256") != \
            _sha256(raw):
        raise ValueError(f"{STATE} does not match its COMPLETE marker")
    try:
        state = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise ValueError(f"damaged {STATE} (not JSON)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{STATE} is not a backup state of format "
                         f"{FORMAT}")
    variables = os.path.join(path, state["variables"]["file"])
    try:
        size = os.path.getsize(variables)
    except OSError:
        raise ValueError(f"{VARIABLES} is missing") from None
    if size != state["variables"]["size"]:
        raise ValueError(f"{VARIABLES} has {size} bytes, expected "
                         f"{state['variables']['size']} (truncated?)")
    return state


def latest(directory):
    """``(path, state)`` of the newest intact backup in ``directory``, or
    None. Damaged or incomplete ``step-*`` folders are skipped with a
    warning naming them (they are deleted after the next complete
    backup); a backup in the format of an older version is ignored with a
    warning."""
    for _, path in list_backups(directory):
        try:
            state = check(path)
            read_variables(path, state)  # SHA-256 of the payload
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring the backup %s: %s", path, error)
            continue
        return path, state
    legacy = [n for n in _LEGACY
              if os.path.exists(os.path.join(directory, n))]
    if legacy:
        logger.warning("%s holds a backup in an older format (%s): it is "
                       "ignored, the run starts from its first step",
                       directory, ", ".join(legacy))
    return None


def read_variables(path, state):
    """``{"model_00000": array, ..., "optimizer_00000": ...}`` of the
    backup ``path`` (``state`` from ``check`` / ``latest``), after checking
    the SHA-256 of the file."""
    info = state["variables"]
    with open(os.path.join(path, info["file"]), "rb") as stream:
        data = stream.read()
    if _sha256(data) != info["sha256"]:
        raise ValueError(f"{VARIABLES} does not match its SHA-256 "
                         "(damaged)")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def restore(model, path, state):
    """Assign the variables of the backup ``path`` (``state`` from
    ``latest``) to ``model`` and its optimizer, and the python / numpy
    RNG states.

    Raises:
        BackupError: the backup was made for other variables (count or
            shapes differ), naming the first difference.
    """
    arrays = read_variables(path, state)
    model_vars, optimizer_vars = model_variables(model)
    for group, variables in (("model", model_vars),
                             ("optimizer", optimizer_vars)):
        saved = state["variables"][group]
        if len(saved) != len(variables):
            raise BackupError(
                f"{path}: {len(saved)} {group} variables, the model has "
                f"{len(variables)}: the backup belongs to another network "
                "or optimizer")
        for i, (variable, (name, shape, _)) in enumerate(
                zip(variables, saved)):
            if list(variable.shape) != list(shape):
                raise BackupError(
                    f"{path}: {group} variable {i} ({name}) has shape "
                    f"{shape}, the model's has {list(variable.shape)}")
    for group, variables in (("model", model_vars),
                             ("optimizer", optimizer_vars)):
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{group}_{i:05d}"])
    _set_rng_state(state.get("rng"))


def write(model, directory, epoch, step, position, steps_per_epoch,
          keep=2):
    """Write the backup of ``position`` (see the module docstring), then
    delete all but the newest ``keep`` complete backups and any leftover
    temporary folder. Returns its path.

    Raises:
        BackupError: the write failed (``OSError``: disk full, no
            permission, ...); nothing under ``step-*`` was changed.
    """
    final = os.path.join(directory, backup_name(position))
    tmp = os.path.join(directory,
                       f".tmp-{backup_name(position)}-{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.mkdir(tmp)
        fault_point("begin", position, tmp)
        model_vars, optimizer_vars = model_variables(model)
        arrays = {f"model_{i:05d}": _to_numpy(v)
                  for i, v in enumerate(model_vars)}
        arrays.update({f"optimizer_{i:05d}": _to_numpy(v)
                       for i, v in enumerate(optimizer_vars)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
        _write_file(os.path.join(tmp, VARIABLES), payload, "variables",
                    position)
        state = {
            "format": FORMAT, "epoch": int(epoch), "step": int(step),
            "position": int(position),
            "global_step": int(_to_numpy(model.optimizer.iterations)),
            "steps_per_epoch": int(steps_per_epoch),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rng": _rng_state(),
            "variables": {"file": VARIABLES, "size": len(payload),
                          "sha256": _sha256(payload),
                          "model": _describe(model_vars),
                          "optimizer": _describe(optimizer_vars)}}
        raw = json.dumps(state).encode("utf-8")
        _write_file(os.path.join(tmp, STATE), raw, "state", position)
        marker = json.dumps({"state_sha256": _sha256(raw)}).encode("utf-8")
        _write_file(os.path.join(tmp, MARKER), marker, "marker", position)
        _fsync_dir(tmp)
        if os.path.exists(final):  # the same position written again
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(directory)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = [p for p in _complete(directory) if p != final]
        what = (f"the last complete backup, {kept[0]}, is kept" if kept
                else "there is no earlier backup")
        reason = error.strerror or str(error)
        raise BackupError(
            f"{final}: cannot write the backup ({reason}); {what} (free "
            "space or fix the permissions, then continue with --resume)"
        ) from None
    fault_point("rename", position, final)
    _cleanup(directory, final, keep, position)
    return final


def _complete(directory):
    out = []
    for _, path in list_backups(directory):
        try:
            check(path)
        except (ValueError, KeyError, TypeError):
            continue
        out.append(path)
    return out


def _cleanup(directory, newest, keep, position):
    """Delete leftover temporary folders, damaged backups and all but the
    newest ``keep`` complete ones (``newest``, just written, among them);
    a failure is logged, never raised (the new backup is complete)."""
    kept = 0
    try:
        for entry in os.listdir(directory):
            if entry.startswith(".tmp-step-"):
                shutil.rmtree(os.path.join(directory, entry),
                              ignore_errors=True)
        for _, path in list_backups(directory):
            try:
                check(path)
                complete = True
            except (ValueError, KeyError, TypeError):
                complete = False
            if complete and kept < keep and (kept or path == newest):
                kept += 1
                continue
            if path == newest:
                continue
            shutil.rmtree(path)
            fault_point("cleanup", position, path)
        for name in _LEGACY:
            legacy = os.path.join(directory, name)
            if os.path.exists(legacy):
                os.remove(legacy)
    except OSError as error:
        logger.warning("could not delete old backups in %s: %s", directory,
                       error)
