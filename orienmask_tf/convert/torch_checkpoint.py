"""Read PyTorch checkpoints as ``{key: numpy array}`` without unpickling code.

``.pth`` / ``.pt`` files go through ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers and refuses any other pickled
object. ``.npz`` files (``np.savez`` of a state_dict) need no torch at all.

Official training checkpoints: the OrienMask trainer (duwt/OrienMask
``trainer/base.py``, ``BaseTrainer._save_checkpoint``) saves ``{"epoch",
"state_dict", "optimizer", "lr_scheduler", "monitor_best", "config"}``
with ``lr_scheduler = StepWarmUpLR.state_dict()``: the scheduler's
``__dict__``, whose ``warmup`` entry is an ``optim.lr_scheduler.WarmupLR``
object of the official code (and ``milestones`` a ``collections.Counter``,
which torch allows). ``weights_only=True`` refuses that class. The globals
of ``OFFICIAL_TRAINING_GLOBALS`` are therefore allow-listed for the load as
inert stand-ins (:class:`OfficialObject`): an instance is created with
``object.__new__`` and its pickled state stored as data; no official code
is imported and nothing is called. Any other global is still refused, and
the refusal names it.
"""

import os
import pickle
import re
import zipfile

import numpy as np

# "module.qualname" of the classes the official trainers pickle next to the
# weights (scheduler / optimizer state), read as inert stand-ins.
OFFICIAL_TRAINING_GLOBALS = (
    # duwt/OrienMask optim/lr_scheduler.py: StepWarmUpLR.warmup.
    "optim.lr_scheduler.WarmupLR",
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class OfficialObject:
    """Inert stand-in for an object of an official training code base.

    Unpickling creates it with ``object.__new__`` and ``BUILD`` hands its
    pickled ``__dict__`` to ``__setstate__``, which only stores it:
    ``official_name`` says which class it stood for, ``state`` holds the
    pickled attributes (plain data, read with the same weights-only rules).
    """

    official_name = ""

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __repr__(self):
        return (f"<stand-in for {self.official_name}: "
                f"{self.__dict__.get('state')!r}>")


def _stand_ins():
    """One ``OfficialObject`` subclass per official global, carrying the
    official module / qualname (so torch maps the pickled name to it)."""
    classes = []
    for full_name in OFFICIAL_TRAINING_GLOBALS:
        module, _, name = full_name.rpartition(".")
        classes.append(type(name, (OfficialObject,), {
            "__module__": module, "__qualname__": name,
            "official_name": full_name}))
    return classes


_STAND_INS = _stand_ins()


class _AllowOfficialGlobals:
    """``torch.serialization.safe_globals`` of the stand-ins (torch >= 2.5),
    else ``add_safe_globals`` (2.4: registered for good, they are inert),
    else nothing (older torch refuses them, naming the global)."""

    def __init__(self, torch):
        serialization = torch.serialization
        pairs = [(cls, cls.official_name) for cls in _STAND_INS]
        self._context = None
        if hasattr(serialization, "safe_globals"):
            self._context = serialization.safe_globals(pairs)
        elif hasattr(serialization, "add_safe_globals"):
            serialization.add_safe_globals(list(_STAND_INS))

    def __enter__(self):
        if self._context is not None:
            self._context.__enter__()
        return self

    def __exit__(self, *exc):
        if self._context is not None:
            return self._context.__exit__(*exc)
        return False


def _refused_globals(torch, path, message):
    """The pickled globals that made ``weights_only`` refuse the file: from
    torch's static scan (nothing executed) when it can, else from its
    message."""
    names = []
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint",
                   None)
    if scan is not None:
        try:
            with _AllowOfficialGlobals(torch):
                names = sorted(scan(path))
        except Exception:  # legacy (non-zip) files, unreadable archives
            names = []
    if not names:
        names = re.findall(r"GLOBAL (\S+?)(?: was|\s|$)", message)
        names += re.findall(r"unrecognized function (\S+)", message)
    return names


class CheckpointError(ValueError):
    """A checkpoint that cannot be converted; the message names file and keys."""


def _import_torch(path):
    try:
        import torch
    except ImportError as error:
        raise CheckpointError(
            f"{path}: reading PyTorch checkpoints needs torch; install it with "
            "`pip install orienmask-tf[torch]` (or convert the state_dict to "
            ".npz with numpy.savez first)") from error
    return torch


def _to_numpy(path, state_dict, torch):
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"{path}: state_dict key {key!r} is not a string")
        if torch is not None and isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16
                value = value.float()
            arrays[key] = value.numpy()
        elif isinstance(value, np.ndarray):
            arrays[key] = value
        else:
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, "
                "expected a tensor")
    return arrays


def _unwrap(path, checkpoint):
    """Accept a bare state_dict or an official training checkpoint.

    The official trainer saves ``{"epoch", "state_dict", "optimizer",
    "lr_scheduler", "monitor_best", "config"}``; only ``state_dict`` is read.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path}: expected a state_dict (a dict of tensors), got "
            f"{type(checkpoint).__name__}")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        return checkpoint["state_dict"], checkpoint.get("config")
    return checkpoint, None


def load_state_dict(path, return_config=False):
    """Load a state_dict from ``.pth``/``.pt`` (torch) or ``.npz`` (numpy).

    Args:
        path: checkpoint file.
        return_config: also return the official training ``config`` dict
            stored next to the weights (``None`` if absent).

    Returns:
        ``{key: np.ndarray}`` in file order (and the config if asked). A
        ``module.`` prefix on every key (``DistributedDataParallel``) is removed.

    Raises:
        CheckpointError: missing file, unreadable file, a pickled object other
            than tensors and containers, or a non-tensor entry.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    config = None
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                state_dict = {key: data[key] for key in data.files}
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                f"{path}: not a readable .npz of arrays ({error})") from error
        torch = None
    else:
        torch = _import_torch(path)
        try:
            with _AllowOfficialGlobals(torch):
                checkpoint = torch.load(path, map_location="cpu",
                                        weights_only=True)
        except pickle.UnpicklingError as error:
            message = _ANSI.sub("", str(error))
            names = _refused_globals(torch, path, message)
            what = (f"pickles {', '.join(names)}" if names else
                    "contains pickled objects")
            detail = next((line.strip() for line in message.splitlines()
                           if "GLOBAL" in line or "unrecognized" in line),
                          message.strip().splitlines()[0] if message.strip()
                          else "")
            # torch's own advice (allow-list the global) is not ours to give.
            detail = detail.split(" Please use `torch.serialization")[0]
            raise CheckpointError(
                f"{path}: refused to load: the file {what}, neither tensors "
                "and plain containers nor an official training object known "
                "to be inert; it is read with torch.load(weights_only=True) "
                "only, so nothing in it was executed. If you trust the file, "
                "save its weights alone with PyTorch (torch.save(torch.load("
                "f, weights_only=False)['state_dict'], 'weights.pth')) and "
                f"convert that ({detail})") from error
        except Exception as error:  # torch raises many types on bad bytes
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint "
                f"({type(error).__name__}: {error})") from error
        state_dict, config = _unwrap(path, checkpoint)
    arrays = _to_numpy(path, state_dict, torch)
    if arrays and all(key.startswith("module.") for key in arrays):
        arrays = {key[len("module."):]: value for key, value in arrays.items()}
    return (arrays, config) if return_config else arrays
