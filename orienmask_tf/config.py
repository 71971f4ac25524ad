# SPDX-License-Identifier: Apache-2.0
"""Experiment configuration: frozen dataclasses, overridden by strict YAML.

A YAML file in ``configs/`` holds only the values that differ from the
defaults; an unknown key, or a value of the wrong type, is an error naming
the file and the key. ``--set section.key=value`` on the command line
applies further overrides (values parsed as YAML: ``--set model.width=8``,
``--set image_size=[320,480]``).

An ``Experiment`` has shared sections (``train``, ``data``, ``image_size``)
and the sections of its model family, chosen by ``model.architecture``
(``orienmask_tf.registry``): each family folder defines its ``model``,
``loss``, ``decode`` (and ``targets`` / ``anchors`` where it has them)
dataclasses, their defaults and their checks. A key that belongs to another
family is an error that says so. Values in ``model`` become the network's
constructor kwargs; networks never read this module.
"""

import dataclasses
import difflib
import os
import re
import typing

import yaml

from orienmask_tf import registry
from orienmask_tf.paths import kind_error


class ConfigError(ValueError):
    """Invalid configuration; the message names the file and the key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping (plain
    YAML keeps the last one silently, e.g. a section written twice)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"key {key!r} appears twice in one mapping (lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}); "
                    "YAML would silently keep only the last one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads ``1e-7`` and ``5e3`` as strings (its floats need
# a dot); YAML 1.2, JSON and Python read them as numbers, as users write
# learning rates. Resolve exponent floats without a dot as floats too.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(stream):
    """``yaml.safe_load`` that refuses duplicate keys (``ConfigError``) and
    reads ``1e-7`` as a number (YAML 1.2)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)


def check_choice(value, allowed, key):
    """Raise ``ConfigError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {list(allowed)}, got "
                          f"{value!r}")


def check_synchronized_bn(value, key="model.synchronized_bn"):
    """``model.synchronized_bn``: false (per-replica BatchNorm statistics),
    true (Keras cross-replica BatchNorm) or ``split_invariant``
    (``layers.batch_norm.SplitInvariantBatchNorm``: cross-replica, and the
    same statistics and gradients however the batch is split)."""
    if isinstance(value, bool) or value == "split_invariant":
        return
    raise ConfigError(f"{key}: expected true, false or 'split_invariant', "
                      f"got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Paper Sec. 4 training recipe (official ``base_sgd`` and
    ``step_lr_warmup_coco_e100``): SGD momentum 0.9, weight decay 5e-4,
    lr 1e-3 with linear warm-up, divided by 10 at 520k and 660k iterations.
    """

    batch_size: int = 16
    epochs: int = 100
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_iters: int = 1000
    warmup_ratio: float = 0.1
    milestones: typing.Tuple[int, ...] = (520000, 660000)
    # "iterations" (OrienMask) or "epochs" (the mmdet YOLACT configs:
    # multiplied by the steps per epoch).
    milestones_unit: str = "iterations"
    gamma: float = 0.1
    seed: int = 0
    # "step" (official warm-up + milestones), "cosine" (to min_lr_ratio *
    # learning_rate at the last epoch, after the same warm-up) or
    # "cosine_epoch" (mmcv CosineAnnealing by_epoch: one value per epoch,
    # warm-up multiplied in; maYOLACT).
    schedule: str = "step"
    # "sgd" (paper) or "adamw" (decoupled weight decay; converges faster
    # from scratch on small CPU runs such as the quickstart).
    optimizer: str = "sgd"
    min_lr_ratio: float = 0.0
    # "l2": PyTorch-style coupled L2 (weight_decay * w added to the gradient,
    # what the paper used); "decoupled": Keras SGD(weight_decay=...).
    weight_decay_mode: str = "l2"
    clip_norm: float = 0.0  # global gradient-norm clipping; 0 = off
    # "default" (one device), "mirrored" (all visible GPUs) or
    # "multi_worker" (MultiWorkerMirroredStrategy, cluster from TF_CONFIG).
    strategy: str = "default"
    # "auto" = mixed_float16 on GPU, float32 on CPU; or a Keras policy name.
    mixed_precision: str = "auto"
    jit_compile: bool = False  # XLA train step (ignored when distributed)
    # BatchNorm in inference mode with fixed statistics and affine weights
    # (fine-tuning a converted checkpoint with small per-device batches).
    freeze_bn: bool = False
    steps_per_epoch: int = 0  # 0 = training images // batch_size
    # "" = a new runs/<name>, runs/<name>2, ...; a folder given here is used
    # as it is (a run in it continues: training.runs).
    output_dir: str = ""
    init_weights: str = ""  # .keras from `orienmask-tf convert` (full or backbone)
    checkpoint_every: int = 1  # epochs between epoch_NNN.keras checkpoints
    eval_every: int = 1  # epochs between COCO evaluations; 0 = never
    eval_max_images: int = 0  # evaluate on the first N val images; 0 = all
    backup_every: int = 500  # steps between backups (and every epoch end)
    log_every: int = 0  # TensorBoard scalars every N steps; 0 = per epoch
    tensorboard_images: int = 4  # validation images drawn per evaluation


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline (``orienmask_tf.data.build_dataset``).

    ``*_annotations`` / ``*_images``: COCO instances JSON and image folder;
    ``*_tfrecords``: a file pattern of ``prepare-data`` shards, used instead
    of the JSON when set. ``recipe``: the augmentation recipe, which is the
    model family's (``model.architecture``); it fixes the input
    normalisation the network is trained and served with. ``on_error``: ``"raise"`` or
    ``"skip"`` for bad inputs (``coco.load_coco``).
    """

    train_annotations: str = ""
    train_images: str = ""
    val_annotations: str = ""
    val_images: str = ""
    train_tfrecords: str = ""
    val_tfrecords: str = ""
    # "" = the model family's own recipe (``data.recipe`` names it).
    recipe: str = ""
    # OrienMask recipe only (official Resize: aspect-ratio jitter 0.3, the
    # image shrunk by up to 75 % in 3 of 4 padded layouts). Lower them for
    # data whose classes depend on the aspect ratio (configs/quickstart.yaml:
    # circles vs. ellipses).
    aspect_jitter: float = 0.3
    pad_ratio: float = 0.75
    max_instances: int = 100
    min_box_size: float = 1.0
    # Training stream only: drop images without any annotation (mmdet's
    # filter_empty_gt=True: an image with only crowd annotations is kept).
    # OrienMask: false (the official training list keeps every image);
    # YOLACT: true (the official mmdet dataset filters them).
    skip_empty: bool = False
    shuffle_buffer: int = 1000
    on_error: str = "raise"
    deterministic: bool = False
    num_parallel_calls: int = -1  # -1 = tf.data.AUTOTUNE
    seed: int = 0
    # Names of the contiguous labels (drawn by `predict`); training fills
    # them from the COCO categories when empty.
    class_names: typing.Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what it reproduces, input size and its sections.

    ``model``, ``loss``, ``decode``, ``targets`` and ``anchors`` are the
    model family's (``None`` where the family has no such section); build
    the defaults of a family with ``Experiment.defaults(name)``.
    ``Experiment()`` holds the default family's defaults.
    """

    name: str = ""
    reproduces: str = ""
    image_size: typing.Tuple[int, int] = (544, 544)
    anchors: typing.Union[str, typing.Tuple[typing.Tuple[float, float], ...],
                          None] = None
    model: typing.Any = None
    targets: typing.Any = None
    loss: typing.Any = None
    decode: typing.Any = None
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()

    def __post_init__(self):
        if self.model is not None:
            return
        # Experiment(...) without a model section: fill every field left at
        # its placeholder with the default family's value.
        defaults = registry.default_family().defaults()
        for field in dataclasses.fields(self):
            if field.name in defaults and \
                    getattr(self, field.name) == field.default:
                object.__setattr__(self, field.name, defaults[field.name])

    @classmethod
    def defaults(cls, architecture=None):
        """The default experiment of family ``architecture`` (before any
        YAML; ``None``: the default family)."""
        family = (registry.default_family() if architecture is None
                  else registry.get(architecture))
        return cls(**family.defaults())

    @property
    def architecture(self):
        """``model.architecture``: the name of the model family."""
        return self.model.architecture

    @property
    def family(self):
        """The ``registry.Family`` of this experiment."""
        return registry.get(self.model.architecture)

    def model_kwargs(self):
        """Constructor kwargs of the network; input shape left dynamic."""
        return self.family.model_kwargs(self)

    def anchor_array(self):
        """The anchors as an array (the family says in which layout)."""
        return self.family.anchor_array(self)

    def inference_anchors(self):
        """The ``anchors`` argument of ``export.serving.InferenceModel``."""
        return self.family.inference_args(self)[0]

    def decode_kwargs(self):
        """The ``decode_kwargs`` of ``export.serving.InferenceModel``."""
        return self.family.inference_args(self)[1]


def _article(family):
    name = family.display_name
    return f"{'an' if name[:1].upper() in 'AEIOU' else 'a'} {name}"


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number",
               str: "a string", type(None): "null"}


def _type_name(tp):
    if typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, where):
    """Check ``value`` against the annotation ``tp``; lists become tuples."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(
            f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]")
                         for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(
                f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]")
                     for i, (v, a) in enumerate(zip(value, args)))
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")


def _apply(instance, updates, where, family):
    """Return ``instance`` with ``updates`` (a nested dict) applied, strictly.

    ``family`` (a ``registry.Family``) only words the errors for keys of
    another family.
    """
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got "
                          f"{type(updates).__name__}")
    hints = typing.get_type_hints(type(instance))
    fields = {f.name for f in dataclasses.fields(instance)}
    changes = {}
    for key, value in updates.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(_unknown_key(name, where, key, fields, family))
        current = getattr(instance, key)
        if current is None and not where:
            raise ConfigError(_other_family_key(name, key, family))
        if dataclasses.is_dataclass(current):
            changes[key] = _apply(current, value, name, family)
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(instance, **changes)


def _others(family):
    return [registry.get(n) for n in registry.names() if n != family.name]


def _other_family_key(name, key, family):
    """The error for a top-level section ``family`` does not have."""
    for other in _others(family):
        if other.defaults().get(key) is not None:
            return (f"{name!r} is {_article(other)} setting, but "
                    f"model.architecture is {family.name!r} "
                    f"({family.absent_keys.get(key, 'not used')})")
    return f"{name!r} is not used by {_article(family)} model"


def _unknown_key(name, where, key, fields, family):
    known = (f"known keys{' of ' + repr(where) if where else ''}: "
             f"{', '.join(sorted(fields))}")
    for other in _others(family):
        section = other.defaults().get(where)
        if dataclasses.is_dataclass(section) and key in {
                f.name for f in dataclasses.fields(section)}:
            return (f"{name!r} is {_article(other)} setting, but "
                    f"model.architecture is {family.name!r} (set "
                    f"model.architecture: {other.name} to use it); {known}")
    close = difflib.get_close_matches(str(key), sorted(fields), n=1)
    if close:
        guess = f"{where}.{close[0]}" if where else close[0]
        return f"unknown key {name!r}, did you mean {guess!r}? {known}"
    return f"unknown key {name!r}; {known}"


def _architecture(data, where):
    """``model.architecture`` named by a YAML mapping / override, or None."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "architecture" not in model:
        return None
    value = model["architecture"]
    if value not in registry.names():
        raise ConfigError(f"{where}: model.architecture: expected one of "
                          f"{list(registry.names())}, got {value!r}")
    return value


def _parse_override(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("expected section.key=value, e.g. model.width=8")
    try:
        parsed = read_yaml(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"value is not valid YAML ({error})") from None
    nested = parsed
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


# (section, key, kind, what was expected) of the paths a config names.
_PATHS = tuple(
    ("data", f"{split}_{key}", kind, what.format(split=name))
    for split, name in (("train", "training"), ("val", "validation"))
    for key, kind, what in (
        ("annotations", "if_exists_file",
         "the {split} COCO instances JSON file"),
        ("images", "if_exists_folder", "the folder of the {split} images"),
        ("tfrecords", "if_exists_file",
         "a file pattern of the {split} TFRecord shards, "
         "PREFIX-*.tfrecord"))) + (
    ("train", "init_weights", "if_exists_file", "a .keras file"),
    ("train", "output_dir", "if_exists_folder", "the run folder"))


def _validate(config):
    family = config.family
    family.validate(config)
    if config.data.recipe != family.name:
        # The recipe fixes the input normalisation, which inference
        # (export.serving) applies per family.
        raise ConfigError(
            f"data.recipe: {config.data.recipe!r} does not match "
            f"model.architecture {family.name!r} (the recipe sets "
            "the input normalisation the network is trained and served with)")
    if not (0.0 <= config.data.aspect_jitter < 1.0
            and 0.0 <= config.data.pad_ratio < 1.0):
        raise ConfigError(
            "data.aspect_jitter and data.pad_ratio: expected values in "
            f"[0, 1), got {config.data.aspect_jitter} and "
            f"{config.data.pad_ratio}")
    if config.data.on_error not in ("raise", "skip"):
        raise ConfigError(
            f"data.on_error: expected 'raise' or 'skip', got "
            f"{config.data.on_error!r}")
    data = config.data
    for key in ("max_instances", "shuffle_buffer"):
        if getattr(data, key) < 1:
            raise ConfigError(f"data.{key}: must be >= 1, got "
                              f"{getattr(data, key)}")
    if data.min_box_size < 0:
        raise ConfigError(f"data.min_box_size: must be >= 0, got "
                          f"{data.min_box_size}")
    if data.num_parallel_calls < 1 and data.num_parallel_calls != -1:
        raise ConfigError("data.num_parallel_calls: must be >= 1, or -1 for "
                          f"tf.data.AUTOTUNE, got {data.num_parallel_calls}")
    # Paths are checked for kind where they exist (a config may name data
    # of another machine; a missing path fails where it is read).
    for section, key, kind, what in _PATHS:
        value = getattr(getattr(config, section), key)
        problem = value and kind_error(value, kind, f"{section}.{key}", what)
        if problem:
            raise ConfigError(problem)
    train = config.train
    choices = (("schedule", ("step", "cosine", "cosine_epoch")),
               ("optimizer", ("sgd", "adamw")),
               ("weight_decay_mode", ("l2", "decoupled")),
               ("milestones_unit", ("iterations", "epochs")),
               ("strategy", ("default", "mirrored", "multi_worker")),
               ("mixed_precision", ("auto", "float32", "mixed_float16",
                                    "mixed_bfloat16")))
    for key, allowed in choices:
        if getattr(train, key) not in allowed:
            raise ConfigError(
                f"train.{key}: expected one of {list(allowed)}, got "
                f"{getattr(train, key)!r}")
    for key in ("batch_size", "epochs"):
        if getattr(train, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1")
    for key in ("steps_per_epoch", "checkpoint_every", "eval_every",
                "eval_max_images", "backup_every", "log_every",
                "tensorboard_images", "warmup_iters"):
        if getattr(train, key) < 0:
            raise ConfigError(f"train.{key}: must be >= 0")
    if train.learning_rate <= 0 or train.clip_norm < 0 \
            or train.weight_decay < 0:
        raise ConfigError("train.learning_rate must be > 0, train.clip_norm "
                          "and train.weight_decay >= 0")
    if list(train.milestones) != sorted(train.milestones):
        raise ConfigError("train.milestones: must be increasing")
    if not 0.0 <= train.min_lr_ratio <= 1.0 or not \
            0.0 <= train.warmup_ratio <= 1.0:
        raise ConfigError("train.min_lr_ratio and train.warmup_ratio: "
                          "expected values in [0, 1]")
    if not 0.0 <= train.momentum < 1.0 or train.gamma <= 0:
        raise ConfigError("train.momentum must be in [0, 1) and train.gamma "
                          "> 0")
    return config




def load_config(path=None, overrides=(), base=None, base_name="model"):
    """Load the defaults, then ``base``, the YAML file and ``overrides``.

    The defaults are those of the family named by ``model.architecture`` in
    the file or an override (the default family otherwise;
    ``Experiment.defaults``).

    Args:
        path: YAML file of overrides (``None``: defaults only).
        overrides: iterable of ``"section.key=value"`` strings.
        base: a nested dict applied first (the experiment a saved model
            carries, ``saving.read_experiment``), named ``base_name`` in
            errors.

    Raises:
        ConfigError: naming the file (or ``--set``) and the offending key.
    """
    sources = [] if base is None else [(base_name, base)]
    if path is not None:
        path = os.fspath(path)
        if os.path.isdir(path):
            raise ConfigError(f"{path}: is a folder, expected a YAML config "
                              "file")
        try:
            with open(path, encoding="utf-8") as stream:
                data = read_yaml(stream)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config ({error.strerror})")
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})")
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        sources.append((path, data or {}))
    for text in overrides:
        try:
            sources.append((f"--set {text}", _parse_override(text)))
        except ConfigError as error:
            raise ConfigError(f"--set {text}: {error}") from None
    architecture = registry.default_family().name
    for where, data in sources:
        architecture = _architecture(data, where) or architecture
    config = Experiment.defaults(architecture)
    for where, data in sources:
        try:
            config = _apply(config, data, "", config.family)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
    try:
        return _validate(config)
    except ConfigError as error:
        where = path or (base_name if base is not None else "defaults")
        raise ConfigError(f"{where}: {error}") from None


def config_to_dict(config):
    """Plain nested dict (lists, not tuples) for YAML / JSON output."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    # Sections the family does not have (None) are left out.
    return {k: plain(v) for k, v in dataclasses.asdict(config).items()
            if v is not None}
