"""``orienmask-tf``: one command line for the model zoo.

Subcommands turn a config into kwargs and call the package; they hold no
model logic themselves.

Conventions: building the parser imports no TensorFlow (``--help`` is
instant); every option has a help text that shows its default; one name
per concept (``--config``, ``--set``, ``--model``, ``--images``,
``--output``); errors are one line ``orienmask-tf <command>: error: ...``
with exit code 2, with a "did you mean" for misspelt commands, choices,
options and config keys; ``--quiet`` turns the progress bars (stderr) off;
``--device`` picks the hardware of the commands that run a network.
"""

import argparse
import dataclasses
import difflib
import json
import os
import re
import sys

from orienmask_tf.progress import spinner
from orienmask_tf.progress import split_bars


def _quiet_tensorflow():
    # TF's C++ start-up chatter hides the actual output of a CLI command.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already
    says what the default is or there is none to show (None, a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or not action.option_strings
                or default is None or default is False
                or default is argparse.SUPPRESS or default == []):
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """One-line errors with exit code 2, and "did you mean" for invalid
    choices (commands included) and unknown options."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action, value):
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f", did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{hint} (choose from "
                        f"{', '.join(choices)})")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = getattr(args, "command_parser", self)
            known = [o for o, a in parser._option_string_actions.items()
                     if a.help is not argparse.SUPPRESS]
            hints = []
            for extra in extras:
                option = extra.split("=", 1)[0]
                close = difflib.get_close_matches(option, known, n=1) \
                    if option.startswith("-") else []
                if close:
                    hints.append(f"{option}: did you mean {close[0]}?")
            parser.error("unrecognized arguments: " + " ".join(extras)
                         + ("" if not hints else " (" + "; ".join(hints)
                            + ")"))
        return args

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see "
                     f"'{self.prog} --help')\n")


class _Deprecated(argparse.Action):
    """A hidden old spelling of an option: stores into the new one's
    ``dest`` and says on stderr that it is deprecated."""

    def __init__(self, option_strings, dest, new=None, **kwargs):
        self.new = new
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS,
                         **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated, use "
              f"{self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


DEVICE_HELP = ("cpu (hide every GPU), gpu (the first GPU), gpu:N (GPU "
               "number N) or all (every GPU; train: MirroredStrategy when "
               "train.strategy is default); default: TensorFlow's choice "
               "(the first GPU if any)")


def _device(text):
    value = text.strip().lower()
    if value in ("cpu", "gpu", "all") or re.fullmatch(r"gpu:[0-9]+", value):
        return value
    raise argparse.ArgumentTypeError(
        f"expected cpu, gpu, gpu:N or all, got {text!r}")


def select_device(spec):
    """Make only the GPUs of ``--device`` visible to TensorFlow (before it
    runs an operation): ``cpu``, ``gpu`` (= ``gpu:0``), ``gpu:N``, ``all``.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if spec == "cpu":
        wanted = []
    elif spec == "all":
        if not gpus:
            raise ValueError("--device all: TensorFlow sees no GPU (use "
                             "--device cpu)")
        wanted = gpus
    else:
        index = int(spec.partition(":")[2] or 0)
        if index >= len(gpus):
            seen = ("no GPU" if not gpus else
                    f"{len(gpus)} GPU(s), gpu:0..gpu:{len(gpus) - 1}")
            raise ValueError(f"--device {spec}: TensorFlow sees {seen}")
        wanted = [gpus[index]]
    try:
        tf.config.set_visible_devices(wanted, "GPU")
    except RuntimeError:
        # Already initialised (a second command in one process): fine if
        # it already runs on the requested devices.
        if tf.config.get_visible_devices("GPU") != wanted:
            raise ValueError(f"--device {spec}: TensorFlow already runs on "
                             "other devices in this process") from None


def _add_quiet(parser):
    # Also accepted after the command; SUPPRESS keeps the global value.
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=argparse.SUPPRESS,
                        help="no progress bars (same as before the command)")


def _add_device(parser):
    parser.add_argument("--device", type=_device, metavar="DEVICE",
                        help=DEVICE_HELP)


def _add_config_args(parser, required=True):
    parser.add_argument(
        "--config", required=required,
        help="experiment YAML in configs/ (only overrides of the defaults)"
             + ("" if required else "; with --model: used instead of the "
                "experiment the model file carries"))
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.num_classes=3 "
             "(repeatable; values are YAML)")


def _count(weights):
    import numpy as np

    return int(sum(np.prod(w.shape) for w in weights))


def cmd_info(args):
    from orienmask_tf.config import load_config

    config = load_config(args.config, args.overrides)
    height, width = args.image_size or config.image_size
    family = config.family
    model = family.build_network(config, image_shape=(height, width, 3))
    trainable = _count(model.trainable_weights)
    frozen = _count(model.non_trainable_weights)
    shapes = model.output_shapes(height, width, args.batch_size)
    described = family.describe(config, (height, width))
    info = {
        "config": args.config,
        "name": config.name,
        "reproduces": config.reproduces,
        "model": config.model_kwargs(),
        "input_shape": [args.batch_size, height, width, 3],
        "trainable_parameters": trainable,
        "non_trainable_parameters": frozen,
        "total_parameters": trainable + frozen,
        "output_shapes": {k: list(v) for k, v in shapes.items()},
        "architecture": config.architecture,
        # The family's anchor summary (OrienMask: the 9 [w, h]; YOLACT:
        # anchors per level P3..P7).
        "anchors": described["anchors"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"config      {args.config} ({config.name})")
    if config.reproduces:
        print(f"reproduces  {config.reproduces}")
    print(f"model       {described['model']}")
    print(f"parameters  {trainable:,} trainable + {frozen:,} non-trainable "
          f"(BatchNorm moving statistics) = {trainable + frozen:,}")
    print(f"input       {info['input_shape']} float32 RGB {described['input']}"
          " (NHWC)")
    print("outputs")
    column = max(10, *(len(key) for key in shapes))
    for key, shape in shapes.items():
        print(f"  {key:<{column}s}  {list(shape)}")
    print(f"anchors     {described['anchor_line']}")
    return 0


def _override_dict(overrides):
    """``--set`` texts as one nested dict (for a config written back)."""
    import yaml

    merged = {}
    for text in overrides:
        key, _, value = text.partition("=")
        parts = key.strip().split(".")
        node = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return merged


def _merge(base, updates):
    out = dict(base)
    for key, value in updates.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def _training_boxes(config):
    """``[w, h]`` of the training split's non-crowd boxes after the
    family's deterministic training resize (see ``registry.AnchorLayout``)
    and the source it came from."""
    import numpy as np

    from orienmask_tf.assign.anchor_fit import resized_box_sizes
    from orienmask_tf.data.coco import load_coco

    data = config.data
    if not data.train_annotations:
        raise ValueError("data.train_annotations: anchors needs the training "
                         "split's COCO instances JSON (TFRecords carry no "
                         "box list to read quickly)")
    dataset = load_coco(data.train_annotations, data.train_images or ".",
                        on_error=data.on_error, check_files=False,
                        skip_empty=data.skip_empty)
    wh, hw = [], []
    for record in dataset.records:
        for ann in record["annotations"]:
            if not ann.get("iscrowd", 0):
                wh.append(ann["bbox"][2:4])
                hw.append((record["height"], record["width"]))
    boxes = resized_box_sizes(np.reshape(wh, (-1, 2)), np.reshape(hw, (-1, 2)),
                              config.image_size, data.min_box_size)
    if len(boxes) == 0:
        raise ValueError(f"{data.train_annotations}: no training box (after "
                         f"data.min_box_size {data.min_box_size})")
    return boxes


def _config_dumper():
    import yaml

    class ConfigDumper(yaml.SafeDumper):
        """Block mappings; a list of scalars, or of such lists, in one flow
        (``image_size: [160, 160]``, ``anchors: [[26.0, 27.0], ...]``)."""

    def sequence(dumper, value):
        def flat(items):
            return all(not isinstance(v, (list, tuple, dict)) for v in items)
        flow = flat(value) or all(isinstance(v, (list, tuple)) and flat(v)
                                  for v in value)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value,
                                         flow_style=flow)

    ConfigDumper.add_representer(list, sequence)
    return ConfigDumper


def _anchor_text(anchors, per_scale, strides):
    groups = [anchors[i:i + per_scale]
              for i in range(0, len(anchors), per_scale)]
    return " | ".join(
        f"s{s}: " + " ".join(f"{w:g}x{h:g}" for w, h in group)
        for s, group in zip(strides, groups))


def cmd_anchors(args):
    import numpy as np
    import yaml

    from orienmask_tf.assign import anchor_fit
    from orienmask_tf.config import load_config
    from orienmask_tf.config import read_yaml

    config = load_config(args.config, args.overrides)
    family = config.family
    layout = family.anchor_layout(config)
    if args.write:
        family.with_anchors({}, layout.anchors)  # refuses a fixed layout
        output = args.output or os.path.join(
            os.path.dirname(args.config),
            os.path.splitext(os.path.basename(args.config))[0]
            + "_anchors.yaml")
        if os.path.realpath(output) == os.path.realpath(args.config):
            raise ValueError(f"--output {output}: is the --config file; "
                             "write the fitted config to a new file")
        if not output.endswith((".yaml", ".yml")):
            raise ValueError(f"--output {output}: expected a .yaml file")
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise ValueError(f"--output {output}: folder {folder} does not "
                             "exist")
    elif args.output:
        raise ValueError("--output names the config --write writes; add "
                         "--write")
    if args.generations < 0:
        raise ValueError(f"--generations: expected >= 0, got "
                         f"{args.generations}")
    threshold = layout.threshold if args.threshold is None else args.threshold
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--threshold: expected an IoU in (0, 1], got "
                         f"{threshold}")
    boxes = _training_boxes(config)
    strides = layout.strides
    rows = {"config": np.asarray(layout.anchors, np.float64)}
    if layout.kind == "wh":
        rows["fitted"] = anchor_fit.fit_anchors(
            boxes, len(strides), layout.per_scale, threshold,
            seed=args.seed, generations=args.generations).reshape(-1, 2)
    report = {
        "config": args.config, "family": family.name,
        "kind": layout.kind, "note": layout.note,
        "image_size": list(config.image_size),
        "resize": layout.resize, "num_boxes": int(len(boxes)),
        "annotations": config.data.train_annotations,
        "threshold": threshold,
        "threshold_source": (layout.threshold_source if args.threshold
                             is None else "--threshold"),
        "strides": list(strides), "per_scale": layout.per_scale,
    }
    for name, anchors in rows.items():
        stats = anchor_fit.anchor_stats(boxes, anchors, threshold,
                                        layout.per_scale)
        report[name] = dict(stats, anchors=anchors.round(2).tolist())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        height, width = config.image_size
        print(f"config     {args.config} ({family.display_name}): "
              f"{layout.note}")
        print(f"boxes      {len(boxes):,} non-crowd training boxes of "
              f"{config.data.train_annotations}, resized ({layout.resize}) "
              f"to {height}x{width} (the transform's random crop / pad / "
              "jitter left out)")
        print(f"recall     best anchor IoU >= {threshold:g} "
              f"({report['threshold_source']})")
        column = "boxes best matched at stride " + " / ".join(
            map(str, strides))
        print(f"\n{'anchors':8s} {'BPR':>7s} {'mean IoU':>9s}  {column}")
        for name in rows:
            stats = report[name]
            print(f"{name:8s} {100 * stats['bpr']:6.1f}% "
                  f"{stats['mean_iou']:9.3f}  "
                  + " / ".join(map(str, stats["boxes_per_scale"])))
        print()
        for name, anchors in rows.items():
            text = _anchor_text(anchors.round(1).tolist(), layout.per_scale,
                                strides)
            print(f"{name:8s} {text}")
        if layout.kind != "wh":
            print("fitting  not supported for this layout (the anchors "
                  "follow the strides); --write is refused")
    if not args.write:
        return 0
    with open(args.config, encoding="utf-8") as stream:
        data = read_yaml(stream) or {}
    data = family.with_anchors(_merge(data, _override_dict(args.overrides)),
                               rows["fitted"])
    fitted, current = report["fitted"], report["config"]
    source = " ".join([args.config] + [f"--set {o}" for o in args.overrides])
    header = (
        "# Written by `orienmask-tf anchors --write` from\n"
        f"#   {source}\n"
        "# with anchors fitted to its training boxes (k-means with 1 - IoU, "
        f"genetic\n# refinement, seed {args.seed}): best-possible recall "
        f"(IoU {threshold:g})\n# {100 * current['bpr']:.1f}% -> "
        f"{100 * fitted['bpr']:.1f}%, mean best IoU "
        f"{current['mean_iou']:.3f} -> {fitted['mean_iou']:.3f}, boxes at "
        f"stride {' / '.join(map(str, strides))}:\n# "
        f"{current['boxes_per_scale']} -> {fitted['boxes_per_scale']}.\n")
    text = header + yaml.dump(data, Dumper=_config_dumper(), sort_keys=False,
                              width=78)
    temp = f"{output}.tmp{os.getpid()}"
    try:
        with open(temp, "w", encoding="utf-8") as stream:
            stream.write(text)
        load_config(temp)  # what is written must load
        os.replace(temp, output)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    print(f"wrote {output}")
    return 0


def cmd_convert(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.convert import load_state_dict
    from orienmask_tf.saving import save_network

    if not args.output.endswith(".keras"):
        raise ValueError(f"--output {args.output}: expected a .keras file name")
    config = load_config(args.config, args.overrides)
    with spinner("convert", enabled=not args.quiet) as step:
        step.phase("reading the checkpoint")
        state_dict, official_config = load_state_dict(args.checkpoint,
                                                      return_config=True)
        step.phase("building the network")
        model = config.family.build_network(config)
        step.phase("assigning the weights")
        report = config.family.convert_checkpoint(
            model, state_dict, official_config, config=config,
            part=args.part, layout=args.layout, skip_keys=args.skip_keys,
            source=args.checkpoint)
        step.phase(f"writing {args.output}")
        save_network(model, args.output, config)
    for note in report.get("notes", ()):
        print(f"note: {note}", file=sys.stderr)
    print(f"converted {args.checkpoint}: {report['assigned']} tensors into the "
          f"{report['part']} of {report['network']} "
          f"({config.model.num_classes} classes)")
    if report["skipped"]:
        print(f"skipped ({len(report['skipped'])}): "
              + ", ".join(report["skipped"]))
    if report["part"] == "backbone":
        print("the necks and heads keep their fresh initialization")
    print(f"wrote {args.output}")
    return 0


def _load_segmenter(args):
    """The ``Segmenter`` of ``--model`` (its stored experiment, or
    ``--config``'s, with ``--set`` on top)."""
    from orienmask_tf.inference.segmenter import Segmenter

    return Segmenter.load(args.model, config=args.config,
                          overrides=args.overrides)


def _read_calibration_images(directory, image_size, limit):
    import cv2
    import numpy as np

    if not directory or not os.path.isdir(directory):
        raise ValueError(f"--calibration-images {directory}: expected a "
                         "folder of images (needed for --quantize int8)")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(
        (".jpg", ".jpeg", ".png", ".bmp")))[:limit]
    images = []
    for name in names:
        image = cv2.imread(os.path.join(directory, name), cv2.IMREAD_COLOR)
        if image is None:
            print(f"skipping unreadable calibration image {name}",
                  file=sys.stderr)
            continue
        image = cv2.resize(image[:, :, ::-1], image_size[::-1],
                           interpolation=cv2.INTER_LINEAR)
        images.append((image[None] / 255.0).astype(np.float32))
    if not images:
        raise ValueError(f"--calibration-images {directory}: no readable "
                         ".jpg/.jpeg/.png/.bmp image")
    return images


def cmd_export(args):
    segmenter = _load_segmenter(args)
    # --quantize int8 without --format: the quantized end-to-end route.
    fmt = args.format or ("tflite_e2e" if args.quantize == "int8"
                          else "saved_model")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.quantize and fmt not in ("tflite", "tflite_e2e"):
        raise ValueError("--quantize applies to --format tflite only (or "
                         "--quantize int8 alone: the end-to-end int8 model)")
    calibration = None
    if args.quantize == "int8":
        folder = args.calibration_images
        if folder is None and fmt == "tflite_e2e":
            folder = segmenter.config.data.train_images
            if not folder or not os.path.isdir(folder):
                raise ValueError(
                    "--quantize int8: no --calibration-images and the "
                    f"experiment's data.train_images ({folder!r}) is not a "
                    "folder; give --calibration-images DIR (training images)")
        calibration = _read_calibration_images(
            folder, segmenter.image_size, args.calibration_count)
    with spinner(f"export {fmt}", enabled=not args.quiet):
        path = segmenter.export(
            fmt, output=args.output, quantize=args.quantize,
            calibration_images=calibration,
            score_threshold=args.score_threshold, version=args.version,
            model_name=args.model_name, batch_size=args.batch_size)
    if fmt == "tflite_e2e":
        print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB; "
              f"signature 'serve': uint8 images [{args.batch_size}, h, w, "
              "3] -> boxes, scores, classes, num_detections, masks; int8 "
              f"network calibrated on {len(calibration)} images)")
        return 0
    if fmt == "saved_model":
        name = os.path.basename(os.path.dirname(path))
        print(f"wrote {path} (TF Serving: model_name={name}, version "
              f"{os.path.basename(path)}); inspect with "
              f"`saved_model_cli show --dir {path} --all`")
    elif fmt == "tflite":
        print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB)")
    else:
        print(f"wrote {path} (opset 17)")
    return 0


def cmd_benchmark(args):
    from orienmask_tf.export.benchmark import format_table

    if args.model:
        segmenter = _load_segmenter(args)
    else:
        from orienmask_tf.config import load_config
        from orienmask_tf.inference.segmenter import Segmenter

        if not args.config:
            raise ValueError("benchmark needs --model or --config")
        print("no --model: random weights (latency does not depend on them)")
        config = load_config(args.config, args.overrides)
        segmenter = Segmenter(config.family.build_network(config), config)
    rows = segmenter.benchmark(formats=args.formats,
                               batch_sizes=args.batch_sizes,
                               warmup=args.warmup, runs=args.runs)
    print(format_table(rows))
    return 0


def cmd_train(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.training import train

    config = load_config(args.config, args.overrides)
    if args.device == "all" and config.train.strategy == "default":
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, strategy="mirrored"))
    if isinstance(args.resume, str) and args.output:
        raise ValueError("give the run folder once: --resume DIR, or "
                         "--output DIR with --resume")
    verbose = 2 if args.quiet and args.verbose == 1 else args.verbose
    from orienmask_tf.training import TrainingError
    from orienmask_tf.training.backup import BackupError

    try:
        summary = train(config, output_dir=args.output, verbose=verbose,
                        evaluate=not args.no_eval, resume=args.resume,
                        exist_ok=args.exist_ok, force=args.force)
    except (TrainingError, BackupError) as error:
        raise ValueError(str(error)) from None
    except OSError as error:  # a checkpoint or log write (disk full, ...)
        raise ValueError(f"{error.filename or 'the run folder'}: "
                         f"{error.strerror or error} (a killed or failed "
                         "run continues from its last complete backup "
                         "with --resume)") from None
    print(f"trained {summary['epochs']} epochs x "
          f"{summary['steps_per_epoch']} steps (optimizer step "
          f"{summary['global_step']}); outputs in {summary['output_dir']}")
    if "model" in summary:
        print(f"final model  {summary['model']}")
    if "best_model" in summary:
        print(f"best model   {summary['best_model']} (by val mask AP)")
    return 0


def _at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def cmd_predict(args):
    from orienmask_tf.inference.predict import check_output_folder
    from orienmask_tf.inference.predict import match_coco_images
    from orienmask_tf.inference.predict import predict_images
    from orienmask_tf.inference.predict import resolve_source

    kind, source = resolve_source(args.source)
    if kind != "images":
        return _predict_video(args, source)
    paths = source
    check_output_folder(args.output, paths)  # before loading the model
    segmenter = _load_segmenter(args)
    class_names = segmenter.class_names
    image_ids = category_ids = None
    if args.annotations:
        # Image ids are needed (and checked) only for --coco-json.
        ids, category_ids, class_names = match_coco_images(
            args.annotations, paths if args.coco_json else [],
            segmenter.config.model.num_classes if args.coco_json else None)
        image_ids = ids if args.coco_json else None
    elif args.coco_json:
        print("note: --coco-json without --annotations: image_id is the "
              "position in the list and category_id the contiguous label "
              "(give --annotations to score the file against them)",
              file=sys.stderr)
    written = predict_images(segmenter.network, segmenter.config, paths,
                             args.output, class_names, args.score_threshold,
                             args.coco_json, image_ids=image_ids,
                             category_ids=category_ids,
                             progress=not args.quiet)
    for source, out, count in written:
        print(f"{source} -> {out} ({count} detections >= "
              f"{args.score_threshold})")
    if args.coco_json:
        print(f"wrote {args.coco_json}")
    return 0


def _predict_video(args, source):
    """``predict --source`` a video file or a camera index."""
    from orienmask_tf.inference import video
    from orienmask_tf.inference.predict import check_output_folder
    from orienmask_tf.inference.predict import match_coco_images

    camera = isinstance(source, int)
    if args.coco_json:
        raise ValueError("--coco-json is for images; a video's detections "
                         "go to <output>/<name>.json")
    check_output_folder(args.output, [] if camera else [source])
    if not camera:  # a file that is no video fails before the model loads
        video.open_source(source)[0].release()
    segmenter = _load_segmenter(args)
    class_names = segmenter.class_names
    if args.annotations:
        class_names = match_coco_images(args.annotations, [])[2]
    report = video.predict_video(
        segmenter.network, segmenter.config, source, args.output,
        class_names, args.score_threshold, batch_size=args.batch_size,
        max_frames=args.max_frames, rle_masks=args.rle_masks,
        progress=not args.quiet)
    name = f"camera {source}" if camera else source
    print(f"{name} -> {report['video']} ({report['frames']} frames, "
          f"{report['detections']} detections >= {args.score_threshold}; "
          f"codec {report['codec']['input'] or '-'} -> "
          f"{report['codec']['output']})")
    print(f"wrote {report['json']}")
    after = report["processing_fps_after_first_batch"]
    print(f"processing: {report['processing_fps']:.1f} frames/s"
          + ("" if after is None else
             f" ({after:.1f} after the first batch, which compiles)"))
    return 0


def cmd_evaluate(args):
    from orienmask_tf.eval.coco_eval import format_table
    from orienmask_tf.eval.coco_eval import write_json

    if args.model is None:
        if not args.annotations or not args.results:
            raise ValueError("evaluate needs --annotations and --results, or "
                             "--model to run a model on a dataset")
        return _evaluate_results(args)
    segmenter = _load_segmenter(args)
    if args.annotations and not args.images:
        raise ValueError("--annotations with --model needs --images (the "
                         "image folder of that COCO JSON)")
    if args.images and not args.annotations:
        raise ValueError("--images with --model needs --annotations (the "
                         "COCO instances JSON of those images)")
    # Pictures (pr_curves, per_class_ap, confusion_matrix .png + .json):
    # into --plots, else beside --output (the run folder in the quickstart).
    plots = args.plots or (os.path.dirname(os.path.abspath(args.output))
                           if args.output else None)
    stats = segmenter.evaluate(args.annotations, args.images,
                               split=args.split, max_images=args.max_images,
                               plots=plots, progress=not args.quiet)
    evaluator = segmenter.last_evaluator
    print(format_table(stats))
    print(f"{len(evaluator.coco)} {args.split} images in "
          f"{evaluator.seconds:.1f} s")
    if args.output:
        write_json(args.output, stats)
    if args.results_output:
        with open(args.results_output, "w") as stream:
            json.dump(evaluator.last_results, stream)
        print(f"wrote {args.results_output}")
    return 0


def _evaluate_results(args):
    from orienmask_tf.eval.coco_eval import evaluate
    from orienmask_tf.eval.coco_eval import write_json

    try:
        with open(args.results) as stream:
            results = json.load(stream)
    except OSError as error:
        raise ValueError(f"{args.results}: cannot read ({error.strerror})")
    except ValueError as error:
        raise ValueError(f"{args.results}: malformed JSON ({error})")
    if isinstance(results, list):
        results = {t: results for t in args.iou_types}
    stats = evaluate(args.annotations, results, args.iou_types, args.backend,
                     source=args.results)
    if args.output:
        write_json(args.output, stats)
    return 0


def cmd_make_shapes(args):
    from orienmask_tf.data.shapes import make_shapes

    paths = make_shapes(args.output, args.num_train, args.num_val,
                        tuple(args.image_size), args.seed,
                        args.mean_instances,
                        progress=split_bars(enabled=not args.quiet),
                        style=args.style)
    for split, path in paths.items():
        print(f"wrote {path}")
    return 0


def cmd_prepare_data(args):
    from orienmask_tf.data import coco as coco_lib
    from orienmask_tf.data.tfrecord import write_tfrecords

    dataset = coco_lib.load_coco(args.annotations, args.images,
                                 on_error=args.on_error)
    result = write_tfrecords(dataset, args.output, args.num_shards,
                             verify=not args.no_verify,
                             progress=not args.quiet)
    print(f"wrote {result['images']} images to {len(result['files'])} shards "
          f"{args.output}-*-of-{len(result['files']):05d}.tfrecord")
    print(dataset.summary())
    return 0


def _command(commands, name, help, func, aliases=()):
    """A subcommand parser with the shared conventions (``--quiet``, the
    help formatter, one-line errors)."""
    sub = commands.add_parser(name, help=help, description=help,
                              aliases=list(aliases))
    _add_quiet(sub)
    sub.set_defaults(func=func, command_parser=sub)
    return sub


def build_parser():
    """The ``orienmask-tf`` parser (imports no TensorFlow)."""
    parser = _Parser(
        prog="orienmask-tf",
        description="OrienMask real-time instance segmentation in Keras 3 / "
                    "TensorFlow 2. 'orienmask-tf COMMAND --help' describes "
                    "the options of a command.")
    from orienmask_tf.version import __version__

    parser.add_argument("--version", action="version",
                        version=f"orienmask-tf {__version__}",
                        help="print the version and exit")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars (they go to stderr)")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND",
        help="what to do ('orienmask-tf COMMAND --help' for its options)")
    commands.required = True

    info = _command(
        commands, "info", "build a model from a config; print its parameter "
                          "count and output shapes", cmd_info)
    _add_config_args(info)
    info.add_argument("--image-size", type=int, nargs=2,
                      metavar=("HEIGHT", "WIDTH"),
                      help="input size (default: the config's image_size)")
    info.add_argument("--batch-size", type=int, default=1,
                      help="batch dimension of the printed shapes")
    info.add_argument("--json", action="store_true",
                      help="print machine-readable JSON")

    anchors = _command(
        commands, "anchors", "how well a config's anchors fit its training "
                             "boxes (best-possible recall, mean best IoU, "
                             "boxes per stride) against anchors fitted by "
                             "k-means; --write puts the fitted ones into a "
                             "new config", cmd_anchors)
    _add_config_args(anchors)
    anchors.add_argument(
        "--write", action="store_true",
        help="write the config with the fitted anchors (sorted by area, "
             "grouped per stride, finest first) to --output; families whose "
             "anchors follow the strides (YOLACT) refuse")
    anchors.add_argument(
        "--output", metavar="FILE",
        help="the config --write writes (default: <config>_anchors.yaml "
             "beside --config); the YAML of --config with the --set values "
             "and the new anchors (its comments are not kept)")
    anchors.add_argument(
        "--threshold", type=float,
        help="IoU for the best-possible recall (default: the family's, "
             "OrienMask 0.5, YOLACT targets.pos_iou_thr)")
    anchors.add_argument("--generations", type=int, default=1000,
                         help="genetic refinement steps after k-means "
                              "(0: k-means only)")
    anchors.add_argument("--seed", type=int, default=0,
                         help="seeds k-means++ and the mutations (same seed, "
                              "same anchors)")
    anchors.add_argument("--json", action="store_true",
                         help="print machine-readable JSON")

    convert = _command(
        commands, "convert", "import an official PyTorch OrienMask or YOLACT "
                             "checkpoint into a .keras model (the network of "
                             "--config)", cmd_convert)
    convert.add_argument(
        "--checkpoint", required=True,
        help="official .pth (read with torch.load(weights_only=True); needs "
             "the [torch] extra) or a .npz state_dict")
    _add_config_args(convert)
    convert.add_argument("--output", required=True,
                         help="the .keras file to write")
    convert.add_argument(
        "--part", choices=("auto", "full", "backbone"), default="auto",
        help="full model (orienmask_yolo.pth) or Darknet-53 backbone only "
             "(pretrained_darknet53.pth); auto looks for 'backbone.' keys. "
             "YOLACT: follows the layout (torchvision = backbone)")
    convert.add_argument(
        "--layout", choices=("auto", "mmdet", "dbolya", "torchvision"),
        default="auto",
        help="YOLACT configs: key layout of the checkpoint -- mmdet (maIoU "
             "fork), dbolya (original YOLACT) or torchvision (ResNet-50 "
             "ImageNet weights, backbone only); auto guesses from the keys")
    convert.add_argument(
        "--skip-keys", metavar="REGEX",
        help="ignore checkpoint keys matching this regex (reported); every "
             "other key must match exactly")

    export = _command(
        commands, "export", "export a .keras model with its decoding: "
                            "SavedModel (TF Serving), TFLite or ONNX",
        cmd_export)
    export.add_argument("--model", required=True,
                        help="the .keras model (it carries its experiment)")
    _add_config_args(export, required=False)
    export.add_argument("--format", choices=("saved_model", "tflite", "onnx"),
                        help="deployment format (default: saved_model; "
                             "--quantize int8 alone: the end-to-end int8 "
                             "TFLite model)")
    export.add_argument(
        "--quantize", choices=("fp16", "int8-dynamic", "int8"),
        help="TFLite quantization (default: none, float32). int8 without "
             "--format: the quantized CPU route, one .tflite from uint8 "
             "image to detections and masks (int8 network, float "
             "decoding); with --format tflite: the int8 network alone, "
             "raw outputs (needs --calibration-images)")
    export.add_argument("--calibration-images", metavar="DIR",
                        help="images for full int8 calibration (default for "
                             "--quantize int8 alone: the experiment's "
                             "data.train_images)")
    export.add_argument("--batch-size", type=int, default=1,
                        help="--quantize int8 alone: the model's static "
                             "batch")
    export.add_argument("--calibration-count", type=int, default=32,
                        help="at most this many calibration images")
    export.add_argument(
        "--output", help="saved_model: the folder holding <model_name>/"
                         "<version>/ (default saved_models); tflite / onnx: "
                         "the file (default saved_models/<name>.tflite|onnx)")
    export.add_argument(
        "--score-threshold", type=float, default=0.0,
        help="saved_model and --quantize int8 alone: drop detections "
             "scoring below this (default 0: keep all, for evaluation; ~0.3 "
             "for serving people)")
    export.add_argument("--model-name", help="default: the config name")
    export.add_argument("--version", type=int,
                        help="SavedModel version (default: next free)")
    _add_device(export)

    from orienmask_tf.export.formats import FORMATS

    bench = _command(
        commands, "benchmark", "latency of every deployment format on this "
                               "machine (median of timed runs after "
                               "warm-up)", cmd_benchmark)
    bench.add_argument("--model", help=".keras model (default: random "
                                       "weights from --config)")
    _add_config_args(bench, required=False)
    bench.add_argument("--formats", nargs="+", choices=FORMATS,
                       default=list(FORMATS), metavar="FORMAT",
                       help=f"formats to time, of {', '.join(FORMATS)} "
                            "(default: all)")
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8],
                       help="batch sizes to time")
    bench.add_argument("--warmup", type=int, default=2,
                       help="untimed runs first (compilation, caches)")
    bench.add_argument("--runs", type=int, default=5,
                       help="timed runs; the median is reported")
    _add_device(bench)

    train = _command(
        commands, "train", "train OrienMask or YOLACT with model.fit "
                           "(strategy, schedule, checkpoints, backup/resume, "
                           "TensorBoard from the config's train section)",
        cmd_train)
    _add_config_args(train)
    train.add_argument(
        "--output", metavar="DIR",
        help="the run folder, used as it is: a run already in it continues "
             "(same config required, see --force). Default: "
             "train.output_dir, else a new runs/<name> (runs/<name>2, "
             "runs/<name>3, ... when it exists)")
    train.add_argument("--output-dir", action=_Deprecated, new="--output",
                       dest="output")
    train.add_argument(
        "--resume", nargs="?", const=True, metavar="DIR",
        help="continue a run from its backup: DIR, or the latest "
             "runs/<name>N of the config; its config.yaml must equal the "
             "requested config (default: start a new run)")
    train.add_argument(
        "--exist-ok", action="store_true",
        help="use runs/<name> even when it exists (a run in it continues, "
             "as with --resume) instead of a new runs/<name>N")
    train.add_argument(
        "--force", action="store_true",
        help="continue a run although keys that are safe to change differ "
             "from its config.yaml: train.epochs, the evaluation / "
             "checkpoint / backup / logging frequencies, train.strategy, "
             "train.jit_compile and the data paths "
             "(training.runs.SAFE_TO_CHANGE); any other difference is "
             "always refused")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="1: Keras progress bars, 2: one line per epoch "
                            "(--quiet: 2), 0: silent")
    train.add_argument("--no-eval", action="store_true",
                       help="skip the periodic COCO evaluation")
    _add_device(train)

    predict = _command(
        commands, "predict", "draw detections (masks, boxes, class names, "
                             "scores) of a .keras model on images, a video "
                             "or a camera",
        cmd_predict)
    predict.add_argument("--model", required=True,
                         help="the .keras model (it carries its experiment)")
    _add_config_args(predict, required=False)
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--source",
        help="an image, a folder or glob pattern of images, a video file "
             "(.mp4, .avi, ...) or a camera index (0, 1, ...)")
    source.add_argument("--images", dest="source",
                        help="same as --source")
    predict.add_argument(
        "--output", required=True,
        help="folder for the drawn images (keeping their relative paths), "
             "or for a video's or camera's annotated <name>.<ext> and "
             "per-frame <name>.json; it must not hold any input")
    predict.add_argument("--batch-size", type=_at_least(1), default=8,
                         help="video frames per network call (a camera: "
                              "1; images: one each)")
    predict.add_argument(
        "--max-frames", type=_at_least(0), default=0,
        help="stop a video or camera after this many frames (0: all; a "
             "camera then records until Ctrl-C)")
    predict.add_argument(
        "--rle-masks", action="store_true",
        help="add each detection's mask (COCO RLE, frame resolution) to a "
             "video's per-frame JSON")
    predict.add_argument("--score-threshold", type=float, default=0.3,
                         help="draw (and write) detections scoring at least "
                              "this; 0 for --coco-json results to score")
    predict.add_argument(
        "--coco-json", metavar="FILE",
        help="also write the detections as COCO results (with "
             "--annotations: the images' COCO ids and the dataset's "
             "category ids, scorable with 'evaluate --results')")
    predict.add_argument(
        "--annotations", metavar="JSON",
        help="COCO instances JSON of the images: class names, and for "
             "--coco-json the image ids (matched by file name) and "
             "category ids")
    _add_device(predict)

    from orienmask_tf.data.coco import ON_ERROR
    from orienmask_tf.data.shapes import STYLES
    from orienmask_tf.eval.coco_eval import BACKENDS
    from orienmask_tf.eval.coco_eval import IOU_TYPES

    shapes = _command(
        commands, "make-shapes", "write a synthetic COCO-format dataset of "
                                 "textured shapes (train and val splits)",
        cmd_make_shapes)
    shapes.add_argument("--output", metavar="DIR",
                        help="output folder (required)")
    shapes.add_argument("--out", action=_Deprecated, new="--output",
                        dest="output")
    shapes.set_defaults(required_options=(("output", "--output"),))
    shapes.add_argument("--num-train", type=int, default=64,
                        help="training images")
    shapes.add_argument("--num-val", type=int, default=16,
                        help="validation images")
    shapes.add_argument("--image-size", type=int, nargs=2, default=[480, 640],
                        metavar=("HEIGHT", "WIDTH"), help="image size")
    shapes.add_argument("--seed", type=int, default=0,
                        help="the same seed writes the same bytes")
    shapes.add_argument("--mean-instances", type=float, default=7.0,
                        help="mean shapes per image (Poisson)")
    shapes.add_argument("--style", choices=STYLES, default="coco",
                        help="coco: textured shapes of every size with "
                             "occlusion and crowd regions (default); simple: "
                             "few large flat-coloured shapes (quickstart)")

    prepare = _command(
        commands, "prepare-data", "check a COCO instances JSON and its "
                                  "images and write sharded TFRecords",
        cmd_prepare_data)
    prepare.add_argument("--annotations", required=True,
                         help="COCO instances JSON")
    prepare.add_argument("--images", required=True, help="image folder")
    prepare.add_argument("--output", required=True,
                         help="output prefix, e.g. data/coco/train2017")
    prepare.add_argument("--num-shards", type=int, default=64,
                         help="TFRecord files to write")
    prepare.add_argument("--on-error", choices=ON_ERROR, default="raise",
                         help="bad images/annotations: fail (naming the file "
                              "and annotation id) or skip and count")
    prepare.add_argument("--no-verify", action="store_true",
                         help="do not decode every image while writing")

    evaluate = _command(
        commands, "evaluate", "COCO bbox/segm AP of a .keras model on a "
                              "dataset (--model) or of saved detection "
                              "results (--results); prints the 12-number "
                              "tables ('val' is the same command)",
        cmd_evaluate, aliases=("val",))
    evaluate.add_argument(
        "--annotations", help="ground-truth COCO instances JSON (with "
                              "--model: instead of the experiment's split)")
    evaluate.add_argument("--images", help="with --model and --annotations: "
                                           "their image folder")
    evaluate.add_argument(
        "--results", help="JSON: {'bbox': [...], 'segm': [...]} (as "
                          "CocoEvaluator.save writes) or one COCO result "
                          "list (scored as --iou-types)")
    evaluate.add_argument("--iou-types", nargs="+", choices=IOU_TYPES,
                          default=list(IOU_TYPES),
                          help="what to score (--results)")
    evaluate.add_argument("--backend", choices=BACKENDS,
                          default="pycocotools",
                          help="COCO scorer (faster_coco_eval: the "
                               "[fast-eval] extra, same numbers)")
    evaluate.add_argument("--output", help="write the metrics here as JSON")
    evaluate.add_argument(
        "--plots", metavar="DIR",
        help="with --model: write pr_curves, per_class_ap and "
             "confusion_matrix (.png + .json) here (default: the folder of "
             "--output; none without either)")
    evaluate.add_argument(
        "--model", help="a .keras model to run on a dataset (--annotations "
                        "and --images, or --split of its experiment)")
    _add_config_args(evaluate, required=False)
    evaluate.add_argument("--split", choices=("val", "train"), default="val",
                          help="with --model and no --annotations: the "
                               "experiment's split to score")
    evaluate.add_argument("--max-images", type=int, default=0,
                          help="first N images only (0 = all)")
    evaluate.add_argument("--results-output", metavar="FILE",
                          help="write the model's COCO results JSON")
    _add_device(evaluate)
    return parser


# What each path option must be (``paths.kind_error``): by option, or by
# (command, option) where commands differ (``--config``: ``load_config``
# says it, naming the file). Checked before a command starts,
# so that a folder given for a file (or the reverse) or a missing input is
# one line naming the option, never a traceback from deep inside.
_PATHS = {
    "model": ("file", "a .keras model file"),
    "annotations": ("file", "a COCO instances JSON file"),
    "results": ("file", "a COCO results JSON file"),
    "checkpoint": ("file", "a .pth or .npz checkpoint file"),
    "calibration_images": ("folder", "a folder of calibration images"),
    "images": ("folder", "the folder of the --annotations images"),
    "coco_json": ("output_file", "the COCO results JSON file to write"),
    "results_output": ("output_file", "the COCO results JSON file to write"),
    "plots": ("output_folder", "the folder for the evaluation pictures"),
    "output": ("output_file", "the file to write"),
    ("evaluate", "output"): ("output_file", "the metrics JSON file to write"),
    ("train", "output"): ("output_folder", "the run folder"),
    ("train", "resume"): ("folder", "the run folder to continue"),
    ("predict", "output"): ("output_folder", "a folder for the drawings"),
    ("make-shapes", "output"): ("output_folder", "the dataset folder"),
    ("prepare-data", "output"): (
        "prefix", "an output prefix such as data/coco/train2017"),
    ("anchors", "output"): ("output_file", "the config file to write"),
    ("convert", "output"): ("output_file", "the .keras file to write"),
    ("predict", "source"): None,  # inference.predict.resolve_source
}


def _check_paths(args):
    """Raise ``paths.PathError`` for the first path option of ``args`` of
    the wrong kind (``_PATHS``)."""
    from orienmask_tf.paths import check_path

    command = {"val": "evaluate"}.get(args.command, args.command)
    rules = dict(_PATHS)
    if command == "export":  # the folder of <name>/<version>/, or a file
        fmt = getattr(args, "format", None) or (
            "tflite_e2e" if getattr(args, "quantize", None) == "int8"
            else "saved_model")
        rules[("export", "output")] = (
            ("output_folder", "the folder of <model_name>/<version>/")
            if fmt == "saved_model" else ("output_file", "the file to write"))
    for dest, value in sorted(vars(args).items()):
        rule = rules.get((command, dest), rules.get(dest))
        if rule is None or value is None or not isinstance(value, str):
            continue
        check_path(value, rule[0], "--" + dest.replace("_", "-"), rule[1])


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    for dest, flag in getattr(args, "required_options", ()):
        if getattr(args, dest, None) is None:
            args.command_parser.error(
                f"the following arguments are required: {flag}")
    from orienmask_tf.config import ConfigError
    from orienmask_tf.convert.torch_checkpoint import CheckpointError

    try:
        _check_paths(args)
        if getattr(args, "device", None):
            select_device(args.device)
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError) as error:
        print(f"orienmask-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
