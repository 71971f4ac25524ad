# SPDX-License-Identifier: Apache-2.0
"""Models that describe themselves: a ``.keras`` file carrying its experiment.

``save_network(network, path, config)`` writes the Keras archive and adds
one member, ``orienmask_tf.json``, holding the whole experiment
(``config_to_dict``: family, input size, anchors, decoding, normalisation
recipe, class names, training settings) and the package version. Keras
ignores the extra member, so ``keras.models.load_model`` still reads the
file; ``load_network(path)`` returns the network *and* its ``Experiment``,
so ``predict``, ``evaluate``, ``export`` and ``benchmark`` need nothing but
the file. The archive is written under a temporary name and renamed when
complete, so a kill never leaves a partial file under the final name.
"""

import json
import os
import tempfile
import zipfile

import keras

from orienmask_tf import registry
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config

SIDECAR = "orienmask_tf.json"
FORMAT_VERSION = 1


def save_network(network, path, config):
    """Write ``network`` with ``config`` to the ``.keras`` file ``path``
    (atomically: temporary name in the same folder, then rename)."""
    from orienmask_tf.version import __version__

    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file name")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".keras", dir=folder,
                                   prefix=".tmp-")
    os.close(handle)
    try:
        network.save(tmp)
        sidecar = {"format_version": FORMAT_VERSION,
                   "orienmask_tf_version": __version__,
                   "family": config.architecture,
                   "experiment": config_to_dict(config)}
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(SIDECAR, json.dumps(sidecar, indent=1))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_experiment(path):
    """The experiment dict stored in a ``.keras`` file, or None when the file
    carries none (written by plain ``model.save`` or an older version)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if SIDECAR not in archive.namelist():
                return None
            data = json.loads(archive.read(SIDECAR))
    except (zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable .keras archive ({error})")
    return data.get("experiment")


def resolve_config(path, config_path=None, overrides=(), what="--model"):
    """The experiment of the model file ``path``: the one it carries, or the
    experiment of ``config_path`` (a YAML config) instead; ``overrides``
    (``"section.key=value"``) on top of either.

    A file carrying no experiment (written by plain ``model.save``) needs
    ``config_path`` or a ``config.yaml`` that a training run wrote next to
    (or one folder above) the model; with none of them, a ``ValueError``
    says so.
    """
    stored = None
    if config_path is None:
        stored = read_experiment(path) if os.path.isfile(path) else None
    if stored is None and config_path is None:
        folder = os.path.dirname(os.path.abspath(path))
        for candidate in (folder, os.path.dirname(folder)):
            if os.path.isfile(os.path.join(candidate, "config.yaml")):
                config_path = os.path.join(candidate, "config.yaml")
                break
        else:
            raise ValueError(
                f"{what} {path}: the file carries no experiment (saved "
                "without orienmask-tf) and no config.yaml is next to it; "
                "pass --config")
    return load_config(config_path, overrides, base=stored,
                       base_name=f"{what} {path}")


def check_network(network, config, path, what="--model"):
    """Raise ``ValueError`` naming the field where ``network`` (loaded from
    ``path``) differs from what ``config`` builds."""
    family = config.family
    if not isinstance(network, family.network_class()):
        raise ValueError(
            f"{what} {path}: the file holds the {type(network).__name__} "
            f"network, but the config says "
            f"model.architecture={config.architecture}")
    stored = network.get_config()
    for key, value in family.model_kwargs(config).items():
        if key not in stored:
            continue
        have = stored[key]
        if isinstance(have, list):
            have = tuple(have)
        if isinstance(value, list):
            value = tuple(value)
        if have != value:
            raise ValueError(
                f"{what} {path} has {key}={have!r} but the config says "
                f"model.{key}={value!r}")


def load_network(path, config=None, config_path=None, overrides=(),
                 what="--model"):
    """Load a ``.keras`` network and its experiment.

    Args:
        path: the ``.keras`` file.
        config: an ``Experiment`` to use instead of the stored one (checked
            against the network).
        config_path: a YAML config to use instead of the stored experiment.
        overrides: ``--set`` values applied on top (``resolve_config``).
        what: how errors name the file (``--model``, ``train.init_weights``).

    Returns:
        ``(network, config)``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        kind = "is a folder," if os.path.isdir(path) else "no such file"
        raise ValueError(f"{what} {path}: {kind} (expected a .keras "
                         "model from training or `orienmask-tf convert`)")
    if config is None:
        config = resolve_config(path, config_path, overrides, what)
    # Keras finds a custom class only once its module has been imported
    # (registered): import every family's network, so that a file holding
    # another family's network still loads and gets the clear error below.
    for name in registry.names():
        registry.get(name).network_class()
    try:
        network = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(f"{what} {path}: not a loadable .keras model "
                         f"({error})") from None
    try:
        registry.family_of(network)
    except ValueError:
        raise ValueError(
            f"{what} {path}: expected the network of a model family "
            f"({', '.join(registry.names())}), got "
            f"{type(network).__name__}") from None
    check_network(network, config, path, what)
    return network, config
