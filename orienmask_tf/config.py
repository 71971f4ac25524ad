"""Experiment configuration: frozen dataclasses, overridden by strict YAML.

A YAML file in ``configs/`` holds only the values that differ from the
defaults below; an unknown key, or a value of the wrong type, is an error
naming the file and the key. ``--set section.key=value`` on the command line
applies further overrides (values parsed as YAML: ``--set model.width=8``,
``--set image_size=[320,480]``).

The defaults are the paper's final COCO setting (official
``orienmask_yolo_coco_544_anchor4_fpn_plus``). Architecture values in
``model`` become ``OrienMask`` constructor kwargs; networks never read this
module.
"""

import dataclasses
import os
import typing

import yaml

from orienmask_tf.ops.anchors import resolve_anchors


class ConfigError(ValueError):
    """Invalid configuration; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Constructor kwargs of ``orienmask_tf.models.OrienMask``."""

    variant: str = "fpn_plus"
    num_classes: int = 80
    num_anchors: int = 3
    width: int = 32
    stackwise_num_blocks: typing.Tuple[int, ...] = (1, 2, 8, 8, 4)
    synchronized_bn: bool = False


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Official ``OrienMaskYOLOMultiScaleLoss`` settings (paper Eq. 4-5).

    ``weights`` are, in order: xy, wh, objectness (positive), objectness
    (negative), class, orientation (positive), orientation (negative);
    the orientation weight is the paper's lambda = 20.
    """

    center_region: float = 0.6
    valid_region: float = 0.6
    obj_ignore_threshold: float = 0.7
    label_smooth: bool = False
    weights: typing.Tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 20.0, 20.0)
    scales_weight: typing.Tuple[float, ...] = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    """Official ``OrienMaskYOLOPostProcess`` settings (paper Eq. 3).

    ``orien_thresh`` 0.3 on the full box size is the paper's tau = 0.6 on
    the half size.
    """

    conf_thresh: float = 0.005
    nms: str = "greedy"
    nms_threshold: float = 0.5
    nms_pre: int = 400
    nms_post: int = 100
    orien_thresh: float = 0.3


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
    gamma: float = 0.1
    seed: int = 0
    # "step" (official warm-up + milestones) or "cosine" (to min_lr_ratio *
    # learning_rate at the last epoch, after the same warm-up).
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
    output_dir: str = ""  # "" = runs/<name>
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
    of the JSON when set. ``recipe``: ``"orienmask"`` or ``"yolact"``
    augmentation (``augment.RECIPES``). ``on_error``: ``"raise"`` or
    ``"skip"`` for bad inputs (``coco.load_coco``).
    """

    train_annotations: str = ""
    train_images: str = ""
    val_annotations: str = ""
    val_images: str = ""
    train_tfrecords: str = ""
    val_tfrecords: str = ""
    recipe: str = "orienmask"
    max_instances: int = 100
    min_box_size: float = 1.0
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
    """One experiment: what it reproduces, input size, anchors and sections.

    ``anchors`` is a preset (``"yolov3"``, ``"yolov4"``) or nine
    ``[width, height]`` pairs in pixels of the network input.
    """

    name: str = "orienmask_yolo_fpnplus_coco_544_anchor4"
    reproduces: str = ""
    image_size: typing.Tuple[int, int] = (544, 544)
    anchors: typing.Union[str, typing.Tuple[typing.Tuple[float, float], ...]] = "yolov4"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    decode: DecodeConfig = DecodeConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()

    def model_kwargs(self):
        """kwargs for ``OrienMask(**kwargs)``; input shape left dynamic."""
        kwargs = dataclasses.asdict(self.model)
        kwargs["stackwise_num_blocks"] = tuple(kwargs["stackwise_num_blocks"])
        return kwargs

    def anchor_array(self):
        return resolve_anchors(self.anchors)


def _type_name(tp):
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


def _apply(instance, updates, where):
    """Return ``instance`` with ``updates`` (a nested dict) applied, strictly."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got "
                          f"{type(updates).__name__}")
    hints = typing.get_type_hints(type(instance))
    fields = {f.name for f in dataclasses.fields(instance)}
    changes = {}
    for key, value in updates.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown key {name!r}; known keys"
                f"{' of ' + repr(where) if where else ''}: "
                f"{', '.join(sorted(fields))}")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _apply(current, value, name)
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(instance, **changes)


def _parse_override(text):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError("expected section.key=value, e.g. model.width=8")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"value is not valid YAML ({error})") from None
    nested = parsed
    for part in reversed(key.strip().split(".")):
        nested = {part: nested}
    return nested


def _validate(config):
    height, width = config.image_size
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ConfigError(
            f"image_size: height and width must be positive multiples of 32, "
            f"got {list(config.image_size)}")
    try:
        anchors = config.anchor_array()
    except ValueError as error:
        raise ConfigError(f"anchors: {error}") from None
    if len(anchors) != 3 * config.model.num_anchors:
        raise ConfigError(
            f"anchors: expected {3 * config.model.num_anchors} pairs (3 scales "
            f"x model.num_anchors={config.model.num_anchors}), got {len(anchors)}")
    if config.model.variant not in ("base", "fpn_plus"):
        raise ConfigError(
            f"model.variant: expected 'base' or 'fpn_plus', got "
            f"{config.model.variant!r}")
    if len(config.model.stackwise_num_blocks) != 5:
        raise ConfigError(
            "model.stackwise_num_blocks: expected 5 counts (Darknet stages "
            f"conv2..conv6), got {list(config.model.stackwise_num_blocks)}")
    for key in ("num_classes", "num_anchors", "width"):
        if getattr(config.model, key) < 1:
            raise ConfigError(f"model.{key}: must be >= 1")
    if config.decode.nms not in ("greedy", "fast"):
        raise ConfigError(
            f"decode.nms: expected 'greedy' or 'fast', got {config.decode.nms!r}")
    if config.data.recipe not in ("orienmask", "yolact"):
        raise ConfigError(
            f"data.recipe: expected 'orienmask' or 'yolact', got "
            f"{config.data.recipe!r}")
    if config.data.on_error not in ("raise", "skip"):
        raise ConfigError(
            f"data.on_error: expected 'raise' or 'skip', got "
            f"{config.data.on_error!r}")
    train = config.train
    choices = (("schedule", ("step", "cosine")),
               ("optimizer", ("sgd", "adamw")),
               ("weight_decay_mode", ("l2", "decoupled")),
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
    if len(config.loss.weights) != 7 or len(config.loss.scales_weight) != 3:
        raise ConfigError(
            "loss.weights needs 7 values and loss.scales_weight 3 values")
    return config


def load_config(path=None, overrides=()):
    """Load ``Experiment`` defaults, then the YAML file, then ``overrides``.

    Args:
        path: YAML file of overrides (``None``: defaults only).
        overrides: iterable of ``"section.key=value"`` strings.

    Raises:
        ConfigError: naming the file (or ``--set``) and the offending key.
    """
    config = Experiment()
    if path is not None:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config ({error.strerror})")
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})")
        try:
            config = _apply(config, data or {}, "")
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    for text in overrides:
        try:
            config = _apply(config, _parse_override(text), "")
        except ConfigError as error:
            raise ConfigError(f"--set {text}: {error}") from None
    try:
        return _validate(config)
    except ConfigError as error:
        raise ConfigError(f"{path or 'defaults'}: {error}") from None


def config_to_dict(config):
    """Plain nested dict (lists, not tuples) for YAML / JSON output."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))
