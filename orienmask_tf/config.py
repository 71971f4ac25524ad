"""Experiment configuration: frozen dataclasses, overridden by strict YAML.

A YAML file in ``configs/`` holds only the values that differ from the
defaults below; an unknown key, or a value of the wrong type, is an error
naming the file and the key. ``--set section.key=value`` on the command line
applies further overrides (values parsed as YAML: ``--set model.width=8``,
``--set image_size=[320,480]``).

``model.architecture`` picks the network and with it the sections that
apply: ``orienmask`` (default; ``anchors``, ``model``, ``loss``, ``decode``
of OrienMask) or ``yolact`` (YOLACT of the maIoU paper: ``model``,
``targets``, ``loss``, ``decode`` of YOLACT; no ``anchors``, which follow the
image size and ``targets.assigner``). A key of the other architecture is an
error that says so. Defaults are the papers' final COCO settings: OrienMask
``orienmask_yolo_coco_544_anchor4_fpn_plus``, YOLACT
``yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py``. Values in ``model`` become
the network's constructor kwargs; networks never read this module.
"""

import dataclasses
import os
import typing

import yaml

from orienmask_tf.decode.yolact_decode import split_levels
from orienmask_tf.ops.anchors import resolve_anchors
from orienmask_tf.ops.yolact_ops import dbolya_anchors
from orienmask_tf.ops.yolact_ops import yolact_config_anchors

ARCHITECTURES = ("orienmask", "yolact")


class ConfigError(ValueError):
    """Invalid configuration; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Constructor kwargs of ``orienmask_tf.models.OrienMask``."""

    architecture: str = "orienmask"
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
class YolactModelConfig:
    """Constructor kwargs of ``orienmask_tf.models.yolact.Yolact``.

    Defaults: the maIoU paper's ResNet-50 + FPN YOLACT (mmdet layout: P6
    from C5, no ReLU after the FPN convs). ``num_anchors`` 0 takes the
    count of the anchors (``targets.assigner`` / ``decode.style``: 1 for
    ATSS, 3 for fixed IoU and dbolya); any other value must equal it.
    ``extra_convs_on: output`` with ``relu_fpn_outputs: true`` is the
    original (dbolya) YOLACT.
    """

    architecture: str = "yolact"
    num_classes: int = 80
    num_anchors: int = 0
    num_protos: int = 32
    stem_channels: int = 64
    base_channels: int = 64
    stackwise_num_blocks: typing.Tuple[int, ...] = (3, 4, 6, 3)
    fpn_channels: int = 256
    feat_channels: int = 256
    proto_channels: int = 256
    num_head_convs: int = 1
    extra_convs_on: str = "input"
    relu_fpn_outputs: bool = False
    synchronized_bn: bool = False


# Table 2 rows of the maIoU paper: assigner -> (targets.yolact_encoder
# assigner, overlap). GIoU / DIoU are its other ATSS rows.
YOLACT_ASSIGNERS = {
    "fixed_iou": ("max_iou", "iou"),
    "atss_iou": ("atss", "iou"),
    "atss_maiou": ("atss", "maiou"),
    "atss_giou": ("atss", "giou"),
    "atss_diou": ("atss", "diou"),
}


@dataclasses.dataclass(frozen=True)
class YolactTargetsConfig:
    """Anchor assignment of YOLACT (official ``train_cfg``).

    ``assigner``: ``fixed_iou`` (``MaxIoUAssigner``: ``pos_iou_thr`` 0.5,
    ``neg_iou_thr`` 0.4, ``min_pos_iou`` 0; 3 anchors per location),
    ``atss_iou`` (``ATSSAssigner``, ``topk`` 9), ``atss_maiou``
    (``ATSSmaIoUAssigner``, the paper's method), or ``atss_giou`` /
    ``atss_diou`` (Table 2's other rows); the ATSS ones use 1 anchor per
    location. The overlap is part of the name. ``official_segm_channels``:
    the fork's label-1 channel shift of the semantic-segmentation targets.
    """

    assigner: str = "atss_maiou"
    topk: int = 9
    pos_iou_thr: float = 0.5
    neg_iou_thr: float = 0.4
    min_pos_iou: float = 0.0
    official_segm_channels: bool = True


@dataclasses.dataclass(frozen=True)
class YolactLossConfig:
    """Official YOLACT loss (``YOLACTHead`` with OHEM, ``YOLACTProtonet``,
    ``YOLACTSegmHead``). ``mask_weight`` is 8 for the ATSS configs and 6.125
    for fixed IoU (paper Sec. 4); the defaults are the ATSS-maIoU config.
    """

    cls_weight: float = 1.0
    box_weight: float = 1.5
    mask_weight: float = 8.0
    segm_weight: float = 1.0
    neg_pos_ratio: int = 3
    max_masks: int = 100
    smooth_l1_beta: float = 1.0


@dataclasses.dataclass(frozen=True)
class YolactDecodeConfig:
    """``YolactDecoder`` kwargs (official ``test_cfg``: ``nms_pre`` 1000,
    ``score_thr`` 0.05, ``iou_thr`` 0.5, ``top_k`` 200, ``max_per_img`` 100).
    ``style``: ``mmdet`` (maIoU fork) or ``dbolya`` (original YOLACT
    checkpoints: its priors as anchors, no clamp / clip / ``nms_pre``).
    """

    style: str = "mmdet"
    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_thr: float = 0.5
    top_k: int = 200
    max_per_img: int = 100
    mask_threshold: float = 0.5


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
    # OrienMask recipe only (official Resize: aspect-ratio jitter 0.3, the
    # image shrunk by up to 75 % in 3 of 4 padded layouts). Lower them for
    # data whose classes depend on the aspect ratio (configs/quickstart.yaml:
    # circles vs. ellipses).
    aspect_jitter: float = 0.3
    pad_ratio: float = 0.75
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


# The train_cfg / optimizer of the mmdet YOLACT configs ("4x8": 8 images on
# each of 4 GPUs): SGD lr 4e-3 (1e-3 per 8 images), momentum 0.9, L2 5e-4,
# gradient norm clipped at 35, linear warm-up over 500 iterations from 0.1,
# x0.1 at epochs 20, 42, 49 and 52 of 55.
YOLACT_TRAIN = TrainConfig(
    batch_size=32, epochs=55, learning_rate=4e-3, momentum=0.9,
    weight_decay=5e-4, warmup_iters=500, warmup_ratio=0.1,
    milestones=(20, 42, 49, 52), milestones_unit="epochs", gamma=0.1,
    clip_norm=35.0)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: what it reproduces, input size, anchors and sections.

    OrienMask: ``anchors`` is a preset (``"yolov3"``, ``"yolov4"``) or nine
    ``[width, height]`` pairs in pixels of the network input; ``targets``
    is ``None``. YOLACT (``Experiment.defaults("yolact")``): ``anchors`` is
    ``None`` (derived, see ``yolact_anchors``) and ``model``, ``targets``,
    ``loss`` and ``decode`` hold the YOLACT sections.
    """

    name: str = "orienmask_yolo_fpnplus_coco_544_anchor4"
    reproduces: str = ""
    image_size: typing.Tuple[int, int] = (544, 544)
    anchors: typing.Union[str, typing.Tuple[typing.Tuple[float, float], ...],
                          None] = "yolov4"
    model: typing.Union[ModelConfig, YolactModelConfig] = ModelConfig()
    targets: typing.Optional[YolactTargetsConfig] = None
    loss: typing.Union[LossConfig, YolactLossConfig] = LossConfig()
    decode: typing.Union[DecodeConfig, YolactDecodeConfig] = DecodeConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig()

    @classmethod
    def defaults(cls, architecture="orienmask"):
        """The default experiment of ``architecture`` (before any YAML)."""
        if architecture == "orienmask":
            return cls()
        if architecture != "yolact":
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, "
                             f"got {architecture!r}")
        return cls(name="yolact_r50_550_atss_maiou", image_size=(550, 550),
                   anchors=None, model=YolactModelConfig(),
                   targets=YolactTargetsConfig(), loss=YolactLossConfig(),
                   decode=YolactDecodeConfig(), train=YOLACT_TRAIN,
                   data=DataConfig(recipe="yolact"))

    @property
    def architecture(self):
        return self.model.architecture

    @property
    def is_yolact(self):
        return self.model.architecture == "yolact"

    def model_kwargs(self):
        """Constructor kwargs of the network (``OrienMask`` or ``Yolact``);
        input shape left dynamic."""
        kwargs = dataclasses.asdict(self.model)
        del kwargs["architecture"]
        kwargs["stackwise_num_blocks"] = tuple(kwargs["stackwise_num_blocks"])
        if self.is_yolact:
            kwargs["num_anchors"] = self.anchors_per_location()
        return kwargs

    def anchors_per_location(self):
        """YOLACT: 3 for fixed IoU and dbolya priors, 1 for ATSS."""
        if self.decode.style == "dbolya" \
                or self.targets.assigner == "fixed_iou":
            return 3
        return 1

    def yolact_anchors(self):
        """YOLACT anchors ``(N, 4)`` x1, y1, x2, y2 in input pixels (levels
        P3..P7, rows ``(y, x, a)``) and the per-level counts: the official
        config's anchors for ``targets.assigner`` at ``image_size``
        (``ops.yolact_ops.yolact_config_anchors``), or the dbolya priors
        when ``decode.style`` is ``dbolya``."""
        if self.decode.style == "dbolya":
            return dbolya_anchors(self.image_size)
        kind = YOLACT_ASSIGNERS[self.targets.assigner][0]
        return yolact_config_anchors(self.image_size, assigner=kind)

    def anchor_array(self):
        """OrienMask: ``(9, 2)`` anchor sizes; YOLACT: ``(N, 4)`` anchors."""
        if self.is_yolact:
            return self.yolact_anchors()[0]
        return resolve_anchors(self.anchors)

    def inference_anchors(self):
        """The ``anchors`` argument of ``export.serving.InferenceModel``:
        OrienMask ``(9, 2)``; YOLACT a list of per-level ``(n_l, 4)``."""
        if not self.is_yolact:
            return self.anchor_array()
        return split_levels(*self.yolact_anchors())

    def decode_kwargs(self):
        """The ``decode_kwargs`` of ``InferenceModel`` (``decode_orienmask``
        or ``YolactDecoder`` keyword arguments)."""
        return dataclasses.asdict(self.decode)


# Each architecture's version of a shared section, to say which
# architecture an unknown key belongs to.
_SECTIONS = {
    "model": {"orienmask": ModelConfig, "yolact": YolactModelConfig},
    "loss": {"orienmask": LossConfig, "yolact": YolactLossConfig},
    "decode": {"orienmask": DecodeConfig, "yolact": YolactDecodeConfig},
}
# Top-level keys of one architecture only (None in the other's defaults).
_ONLY_FOR = {
    "anchors": ("orienmask", "YOLACT anchors follow image_size, "
                             "targets.assigner and decode.style"),
    "targets": ("yolact", "OrienMask's target settings are "
                          "loss.center_region and loss.valid_region"),
}
_DISPLAY = {"orienmask": "an OrienMask", "yolact": "a YOLACT"}


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


def _apply(instance, updates, where, architecture):
    """Return ``instance`` with ``updates`` (a nested dict) applied, strictly.

    ``architecture`` only words the errors for keys of the other network.
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
            raise ConfigError(_unknown_key(name, where, key, fields,
                                           architecture))
        current = getattr(instance, key)
        if current is None and not where and key in _ONLY_FOR:
            owner, hint = _ONLY_FOR[key]
            raise ConfigError(
                f"{name!r} is {_DISPLAY[owner]} setting, but "
                f"model.architecture is {architecture!r} ({hint})")
        if dataclasses.is_dataclass(current):
            changes[key] = _apply(current, value, name, architecture)
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(instance, **changes)


def _unknown_key(name, where, key, fields, architecture):
    known = (f"known keys{' of ' + repr(where) if where else ''}: "
             f"{', '.join(sorted(fields))}")
    for arch, cls in _SECTIONS.get(where, {}).items():
        if arch != architecture and key in {
                f.name for f in dataclasses.fields(cls)}:
            return (f"{name!r} is {_DISPLAY[arch]} setting, but "
                    f"model.architecture is {architecture!r} (set "
                    f"model.architecture: {arch} to use it); {known}")
    return f"unknown key {name!r}; {known}"


def _architecture(data, where):
    """``model.architecture`` named by a YAML mapping / override, or None."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "architecture" not in model:
        return None
    value = model["architecture"]
    if value not in ARCHITECTURES:
        raise ConfigError(f"{where}: model.architecture: expected one of "
                          f"{list(ARCHITECTURES)}, got {value!r}")
    return value


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


def _choice(value, allowed, key):
    if value not in allowed:
        raise ConfigError(f"{key}: expected one of {list(allowed)}, got "
                          f"{value!r}")


def _validate_orienmask(config):
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
    if len(config.loss.weights) != 7 or len(config.loss.scales_weight) != 3:
        raise ConfigError(
            "loss.weights needs 7 values and loss.scales_weight 3 values")


def _validate_yolact(config):
    height, width = config.image_size
    if height < 32 or width < 32:
        raise ConfigError(f"image_size: height and width must be at least 32, "
                          f"got {list(config.image_size)}")
    model, targets = config.model, config.targets
    loss, decode = config.loss, config.decode
    _choice(targets.assigner, YOLACT_ASSIGNERS, "targets.assigner")
    _choice(decode.style, ("mmdet", "dbolya"), "decode.style")
    _choice(model.extra_convs_on, ("input", "output"), "model.extra_convs_on")
    for key in ("num_classes", "num_protos", "stem_channels", "base_channels",
                "fpn_channels", "feat_channels", "proto_channels"):
        if getattr(model, key) < 1:
            raise ConfigError(f"model.{key}: must be >= 1")
    if model.num_head_convs < 0:
        raise ConfigError("model.num_head_convs: must be >= 0")
    blocks = model.stackwise_num_blocks
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError(
            "model.stackwise_num_blocks: expected 4 counts >= 1 (ResNet "
            f"stages layer1..layer4; ResNet-50: [3, 4, 6, 3]), got "
            f"{list(blocks)}")
    try:
        config.yolact_anchors()
    except ValueError as error:
        raise ConfigError(f"decode.style: {error}") from None
    per_location = config.anchors_per_location()
    if model.num_anchors not in (0, per_location):
        raise ConfigError(
            f"model.num_anchors: targets.assigner {targets.assigner!r} with "
            f"decode.style {decode.style!r} places {per_location} anchor(s) "
            f"per location, got {model.num_anchors} (0 = follow the anchors)")
    if targets.topk < 1:
        raise ConfigError("targets.topk: must be >= 1")
    if not (0.0 <= targets.neg_iou_thr <= targets.pos_iou_thr <= 1.0
            and 0.0 <= targets.min_pos_iou <= 1.0):
        raise ConfigError(
            "targets: need 0 <= neg_iou_thr <= pos_iou_thr <= 1 and "
            f"0 <= min_pos_iou <= 1, got {targets.neg_iou_thr}, "
            f"{targets.pos_iou_thr}, {targets.min_pos_iou}")
    for key in ("cls_weight", "box_weight", "mask_weight", "segm_weight"):
        if getattr(loss, key) < 0:
            raise ConfigError(f"loss.{key}: must be >= 0")
    if loss.neg_pos_ratio < 1 or loss.max_masks < 1 \
            or loss.smooth_l1_beta <= 0:
        raise ConfigError("loss.neg_pos_ratio and loss.max_masks must be >= "
                          "1 and loss.smooth_l1_beta > 0")
    if decode.nms_pre < 0 or decode.top_k < 1 or decode.max_per_img < 1:
        raise ConfigError("decode.nms_pre must be >= 0 (0 = keep all), "
                          "decode.top_k and decode.max_per_img >= 1")
    if not (0.0 <= decode.score_thr < 1.0 and 0.0 < decode.iou_thr <= 1.0
            and 0.0 < decode.mask_threshold < 1.0):
        raise ConfigError("decode: need 0 <= score_thr < 1, 0 < iou_thr <= 1 "
                          "and 0 < mask_threshold < 1")


def _validate(config):
    expected = {ModelConfig: "orienmask", YolactModelConfig: "yolact"}
    if config.model.architecture != expected[type(config.model)]:
        raise ConfigError(
            f"model.architecture: expected one of {list(ARCHITECTURES)}, "
            f"got {config.model.architecture!r}")
    if config.is_yolact:
        _validate_yolact(config)
    else:
        _validate_orienmask(config)
    if config.data.recipe not in ("orienmask", "yolact"):
        raise ConfigError(
            f"data.recipe: expected 'orienmask' or 'yolact', got "
            f"{config.data.recipe!r}")
    if config.data.recipe != config.architecture:
        # The recipe fixes the input normalisation (OrienMask / 255, YOLACT
        # mean / std), which inference (export.serving) applies per network.
        raise ConfigError(
            f"data.recipe: {config.data.recipe!r} does not match "
            f"model.architecture {config.architecture!r} (the recipe sets "
            "the input normalisation the network is trained and served with)")
    if not (0.0 <= config.data.aspect_jitter < 1.0
            and 0.0 <= config.data.pad_ratio < 1.0):
        raise ConfigError(
            "data.aspect_jitter and data.pad_ratio: expected values in "
            f"[0, 1), got {config.data.aspect_jitter} and "
            f"{config.data.pad_ratio}")
    if config.data.recipe == "yolact" and (
            config.data.aspect_jitter != DataConfig.aspect_jitter
            or config.data.pad_ratio != DataConfig.pad_ratio):
        raise ConfigError(
            "data.aspect_jitter / data.pad_ratio belong to the orienmask "
            "recipe; the yolact recipe has no such step")
    if config.data.on_error not in ("raise", "skip"):
        raise ConfigError(
            f"data.on_error: expected 'raise' or 'skip', got "
            f"{config.data.on_error!r}")
    train = config.train
    choices = (("schedule", ("step", "cosine")),
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
    return config


def load_config(path=None, overrides=()):
    """Load the defaults, then the YAML file, then ``overrides``.

    The defaults are those of ``model.architecture`` (``orienmask`` unless
    the file or an override names ``yolact``; ``Experiment.defaults``).

    Args:
        path: YAML file of overrides (``None``: defaults only).
        overrides: iterable of ``"section.key=value"`` strings.

    Raises:
        ConfigError: naming the file (or ``--set``) and the offending key.
    """
    sources = []
    if path is not None:
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read config ({error.strerror})")
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})")
        sources.append((path, data or {}))
    for text in overrides:
        try:
            sources.append((f"--set {text}", _parse_override(text)))
        except ConfigError as error:
            raise ConfigError(f"--set {text}: {error}") from None
    architecture = "orienmask"
    for where, data in sources:
        architecture = _architecture(data, where) or architecture
    config = Experiment.defaults(architecture)
    for where, data in sources:
        try:
            config = _apply(config, data, "", architecture)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
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
    # Sections of the other architecture (None) are left out.
    return {k: plain(v) for k, v in dataclasses.asdict(config).items()
            if v is not None}
