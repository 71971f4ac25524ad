"""Read PyTorch checkpoints as ``{key: numpy array}`` without unpickling code.

``.pth`` / ``.pt`` files go through ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers and refuses any other pickled
object. ``.npz`` files (``np.savez`` of a state_dict) need no torch at all.
"""

import os
import pickle
import zipfile

import numpy as np


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
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            first_line = str(error).strip().splitlines()[0]
            raise CheckpointError(
                f"{path}: refused to load: the file contains pickled objects "
                "other than tensors and plain containers, and is read with "
                f"torch.load(weights_only=True) only ({first_line})") from error
        except Exception as error:  # torch raises many types on bad bytes
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint "
                f"({type(error).__name__}: {error})") from error
        state_dict, config = _unwrap(path, checkpoint)
    arrays = _to_numpy(path, state_dict, torch)
    if arrays and all(key.startswith("module.") for key in arrays):
        arrays = {key[len("module."):]: value for key, value in arrays.items()}
    return (arrays, config) if return_config else arrays
