"""``orienmask-tf``: one command line for the model zoo.

Subcommands turn a config into kwargs and call the package; they hold no
model logic themselves.
"""

import argparse
import json
import os
import sys


def _quiet_tensorflow():
    # TF's C++ start-up chatter hides the actual output of a CLI command.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_config_args(parser):
    parser.add_argument(
        "--config", required=True,
        help="experiment YAML in configs/ (only overrides of the defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.num_classes=3 "
             "(repeatable; values are YAML)")


def _build_model(config, image_shape=(None, None, 3)):
    from orienmask_tf.training.builders import make_network

    return make_network(config, image_shape)


def _count(weights):
    import numpy as np

    return int(sum(np.prod(w.shape) for w in weights))


def cmd_info(args):
    from orienmask_tf.config import load_config

    config = load_config(args.config, args.overrides)
    height, width = args.image_size or config.image_size
    model = _build_model(config)
    trainable = _count(model.trainable_weights)
    frozen = _count(model.non_trainable_weights)
    shapes = model.output_shapes(height, width, args.batch_size)
    if config.is_yolact:
        import dataclasses

        # Counts per level for this input size (the rows are not printed).
        _, counts = dataclasses.replace(
            config, image_size=(height, width)).yolact_anchors()
        anchors = list(counts)
    else:
        anchors = config.anchor_array().tolist()
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
        # OrienMask: the 9 [w, h]; YOLACT: anchors per level P3..P7.
        "anchors": anchors,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    m = config.model
    print(f"config      {args.config} ({config.name})")
    if config.reproduces:
        print(f"reproduces  {config.reproduces}")
    if config.is_yolact:
        kwargs = config.model_kwargs()
        print(f"model       YOLACT classes={m.num_classes} "
              f"anchors/location={kwargs['num_anchors']} "
              f"protos={m.num_protos} resnet_blocks="
              f"{list(m.stackwise_num_blocks)} stem={m.stem_channels} "
              f"base={m.base_channels} fpn={m.fpn_channels} "
              f"extra_convs_on={m.extra_convs_on} "
              f"synchronized_bn={m.synchronized_bn}")
    else:
        print(f"model       OrienMask variant={m.variant} "
              f"classes={m.num_classes} anchors/scale={m.num_anchors} "
              f"width={m.width} blocks={list(m.stackwise_num_blocks)} "
              f"synchronized_bn={m.synchronized_bn}")
    print(f"parameters  {trainable:,} trainable + {frozen:,} non-trainable "
          f"(BatchNorm moving statistics) = {trainable + frozen:,}")
    scaling = ("(x - PIXEL_MEAN) / PIXEL_STD of 0..255" if config.is_yolact
               else "in [0, 1]")
    print(f"input       {info['input_shape']} float32 RGB {scaling} (NHWC)")
    print("outputs")
    column = max(10, *(len(key) for key in shapes))
    for key, shape in shapes.items():
        print(f"  {key:<{column}s}  {list(shape)}")
    if config.is_yolact:
        print(f"anchors     {sum(counts):,} ({' + '.join(map(str, counts))} "
              f"on P3..P7; targets.assigner={config.targets.assigner}, "
              f"decode.style={config.decode.style})")
    else:
        anchors = ", ".join(f"{w:g}x{h:g}" for w, h in config.anchor_array())
        print(f"anchors     {anchors} (px, stride 8 / 16 / 32 groups of "
              f"{m.num_anchors})")
    return 0


def cmd_convert(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.convert import load_state_dict

    if not args.output.endswith(".keras"):
        raise ValueError(f"--output {args.output}: expected a .keras file name")
    config = load_config(args.config, args.overrides)
    state_dict, official_config = load_state_dict(args.checkpoint,
                                                  return_config=True)
    model = _build_model(config)
    if config.is_yolact:
        report = _convert_yolact(args, config, model, state_dict)
    else:
        from orienmask_tf.convert import check_official_config
        from orienmask_tf.convert import convert_state_dict

        if args.layout != "auto":
            raise ValueError("--layout applies to YOLACT configs only")
        if args.part != "backbone":
            check_official_config(model, official_config, args.checkpoint)
        report = convert_state_dict(model, state_dict, part=args.part,
                                    skip_keys=args.skip_keys,
                                    source=args.checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    model.save(args.output)
    network = (f"YOLACT ({report['layout']} layout)" if config.is_yolact
               else f"OrienMask {config.model.variant}")
    print(f"converted {args.checkpoint}: {report['assigned']} tensors into the "
          f"{report['part']} of {network} "
          f"({config.model.num_classes} classes)")
    if report["skipped"]:
        print(f"skipped ({len(report['skipped'])}): "
              + ", ".join(report["skipped"]))
    if report["part"] == "backbone":
        print("the necks and heads keep their fresh initialization")
    print(f"wrote {args.output}")
    return 0


def _convert_yolact(args, config, model, state_dict):
    """mmdet (maIoU fork), dbolya or torchvision-ResNet state_dict -> model."""
    from orienmask_tf.convert.yolact_keys import convert_state_dict
    from orienmask_tf.convert.yolact_keys import guess_layout

    layout = args.layout if args.layout != "auto" else guess_layout(
        state_dict)
    part = "backbone" if layout == "torchvision" else "full"
    if args.part != "auto" and args.part != part:
        raise ValueError(
            f"--part {args.part}: a {layout} YOLACT checkpoint loads the "
            f"{part} (torchvision ResNet weights: the backbone; mmdet / "
            "dbolya checkpoints: the full model)")
    if layout == "dbolya" and (config.decode.style != "dbolya"
                               or config.model.extra_convs_on != "output"
                               or not config.model.relu_fpn_outputs):
        print("note: a dbolya checkpoint needs decode.style=dbolya, "
              "model.extra_convs_on=output and model.relu_fpn_outputs=true "
              "to reproduce the original YOLACT", file=sys.stderr)
    return convert_state_dict(model, state_dict, layout=layout,
                              skip_keys=args.skip_keys,
                              source=args.checkpoint)


def _load_keras_model(path, config=None):
    from orienmask_tf.training.builders import load_network

    return load_network(path, config)


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
    from orienmask_tf.config import config_to_dict
    from orienmask_tf.config import load_config

    from orienmask_tf.training.builders import inference_args

    config = load_config(args.config, args.overrides)
    model = _load_keras_model(args.model, config)
    common = (model, config.image_size, *inference_args(config))
    name = args.model_name or config.name
    if args.format == "saved_model":
        from orienmask_tf.export.saved_model import export_saved_model
        from orienmask_tf.export.saved_model import next_version

        if args.quantize:
            raise ValueError("--quantize applies to --format tflite only")
        model_dir = os.path.join(args.output or "saved_models", name)
        version = args.version or next_version(model_dir)
        export_dir = os.path.join(model_dir, str(version))
        if os.path.exists(export_dir):
            raise ValueError(f"{export_dir} exists; TF Serving versions are "
                             "immutable, pick another --version")
        export_saved_model(*common, export_dir,
                           metadata={"config": config_to_dict(config),
                                     "source_model": args.model,
                                     "score_threshold": args.score_threshold},
                           score_threshold=args.score_threshold)
        print(f"wrote {export_dir} (TF Serving: model_name={name}, "
              f"version {version}); inspect with "
              f"`saved_model_cli show --dir {export_dir} --all`")
    elif args.format == "tflite":
        from orienmask_tf.export.tflite import convert_tflite

        calibration = None
        if args.quantize == "int8":
            calibration = _read_calibration_images(
                args.calibration_images, config.image_size, args.calibration_count)
        output = args.output or os.path.join(
            "saved_models", f"{name}{'_' + args.quantize if args.quantize else ''}.tflite")
        flatbuffer = convert_tflite(*common, quantize=args.quantize,
                                    calibration=calibration)
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "wb") as f:
            f.write(flatbuffer)
        print(f"wrote {output} ({len(flatbuffer) / 2**20:.1f} MiB)")
    else:
        from orienmask_tf.export.onnx import export_onnx

        if args.quantize:
            raise ValueError("--quantize applies to --format tflite only")
        output = args.output or os.path.join("saved_models", f"{name}.onnx")
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        export_onnx(*common, output)
        print(f"wrote {output} (opset 17)")
    return 0


def cmd_benchmark(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.export.benchmark import benchmark_formats
    from orienmask_tf.export.benchmark import format_table

    from orienmask_tf.training.builders import inference_args

    config = load_config(args.config, args.overrides)
    if args.model:
        model = _load_keras_model(args.model, config)
    else:
        print("no --model: random weights (latency does not depend on them)")
        model = _build_model(config)
    rows = benchmark_formats(
        model, config.image_size, *inference_args(config),
        formats=args.formats,
        batch_sizes=args.batch_sizes, warmup=args.warmup, runs=args.runs)
    print(format_table(rows))
    return 0


def cmd_train(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.training import train

    config = load_config(args.config, args.overrides)
    summary = train(config, output_dir=args.output_dir,
                    verbose=args.verbose, evaluate=not args.no_eval)
    print(f"trained {summary['epochs']} epochs x "
          f"{summary['steps_per_epoch']} steps (optimizer step "
          f"{summary['global_step']}); outputs in {summary['output_dir']}")
    if "model" in summary:
        print(f"final model  {summary['model']}")
    if "best_model" in summary:
        print(f"best model   {summary['best_model']} (by val mask AP)")
    return 0


def _config_for_model(args):
    """``--config`` or the ``config.yaml`` a training run wrote next to
    (or one folder above) the model."""
    from orienmask_tf.config import load_config

    path = args.config
    if path is None:
        folder = os.path.dirname(os.path.abspath(args.model))
        for candidate in (folder, os.path.dirname(folder)):
            if os.path.isfile(os.path.join(candidate, "config.yaml")):
                path = os.path.join(candidate, "config.yaml")
                break
        else:
            raise ValueError(f"--model {args.model}: no config.yaml next to "
                             "it; pass --config")
    return load_config(path, args.overrides)


def cmd_predict(args):
    from orienmask_tf.training.predict import list_images
    from orienmask_tf.training.predict import predict_images

    config = _config_for_model(args)
    model = _load_keras_model(args.model, config)
    class_names = tuple(config.data.class_names)
    if args.annotations:
        with open(args.annotations) as f:
            categories = json.load(f)["categories"]
        class_names = tuple(c["name"] for c in
                            sorted(categories, key=lambda c: c["id"]))
    paths = list_images(args.images)
    written = predict_images(model, config, paths, args.output, class_names,
                             args.score_threshold, args.coco_json)
    for source, out, count in written:
        print(f"{source} -> {out} ({count} detections >= "
              f"{args.score_threshold})")
    if args.coco_json:
        print(f"wrote {args.coco_json}")
    return 0


def cmd_evaluate(args):
    if args.model is None:
        from orienmask_tf.eval.coco_eval import run_evaluate

        if not args.annotations or not args.results:
            raise ValueError("evaluate needs --annotations and --results, or "
                             "--model (and --config) to run a model on a split")
        return run_evaluate(args)
    from orienmask_tf.eval.coco_eval import format_table
    from orienmask_tf.eval.coco_eval import write_json
    from orienmask_tf.training.evaluate import NetworkEvaluator

    config = _config_for_model(args)
    model = _load_keras_model(args.model, config)
    evaluator = NetworkEvaluator(config, args.split,
                                 max_images=args.max_images)
    stats = evaluator(model, verbose=True)
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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="orienmask-tf",
        description="OrienMask real-time instance segmentation in Keras 3 / "
                    "TensorFlow 2.")
    from orienmask_tf import __version__

    parser.add_argument("--version", action="version",
                        version=f"orienmask-tf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    info = commands.add_parser(
        "info", help="build a model from a config; print its parameter "
                     "count and output shapes")
    _add_config_args(info)
    info.add_argument("--image-size", type=int, nargs=2,
                      metavar=("HEIGHT", "WIDTH"),
                      help="input size (default: the config's image_size)")
    info.add_argument("--batch-size", type=int, default=1)
    info.add_argument("--json", action="store_true",
                      help="print machine-readable JSON")
    info.set_defaults(func=cmd_info)

    convert = commands.add_parser(
        "convert", help="import an official PyTorch OrienMask or YOLACT "
                        "checkpoint into a .keras model (the network of "
                        "--config)")
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
    convert.set_defaults(func=cmd_convert)

    export = commands.add_parser(
        "export", help="export a .keras model with its decoding: SavedModel "
                       "(TF Serving), TFLite or ONNX")
    export.add_argument("--model", required=True, help="the .keras model")
    _add_config_args(export)
    export.add_argument("--format", choices=("saved_model", "tflite", "onnx"),
                        default="saved_model")
    export.add_argument(
        "--quantize", choices=("fp16", "int8-dynamic", "int8"),
        help="TFLite quantization (int8 needs --calibration-images)")
    export.add_argument("--calibration-images", metavar="DIR",
                        help="images for full int8 calibration")
    export.add_argument("--calibration-count", type=int, default=32,
                        help="at most this many calibration images")
    export.add_argument(
        "--output", help="saved_model: the folder holding <model_name>/"
                         "<version>/ (default saved_models); tflite / onnx: "
                         "the file (default saved_models/<name>.tflite|onnx)")
    export.add_argument(
        "--score-threshold", type=float, default=0.0,
        help="saved_model: drop detections scoring below this (default 0: "
             "keep all, for evaluation; ~0.3 for serving people)")
    export.add_argument("--model-name", help="default: the config name")
    export.add_argument("--version", type=int,
                        help="SavedModel version (default: next free)")
    export.set_defaults(func=cmd_export)

    from orienmask_tf.export.benchmark import FORMATS

    bench = commands.add_parser(
        "benchmark", help="latency of every deployment format on this "
                          "machine (median of timed runs after warm-up)")
    bench.add_argument("--model", help=".keras model (default: random "
                                       "weights from the config)")
    _add_config_args(bench)
    bench.add_argument("--formats", nargs="+", choices=FORMATS,
                       default=list(FORMATS))
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--runs", type=int, default=5)
    bench.set_defaults(func=cmd_benchmark)

    from orienmask_tf.data import shapes
    from orienmask_tf.data import tfrecord
    from orienmask_tf.eval import coco_eval

    train = commands.add_parser(
        "train", help="train OrienMask or YOLACT with model.fit (strategy, "
                      "schedule, checkpoints, backup/resume, TensorBoard "
                      "from the config's train section)")
    _add_config_args(train)
    train.add_argument("--output-dir",
                       help="default: train.output_dir or runs/<name>")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="1: Keras progress bars, 2: one line per epoch")
    train.add_argument("--no-eval", action="store_true",
                       help="skip the periodic COCO evaluation")
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser(
        "predict", help="draw detections (masks, boxes, class names, "
                        "scores) of a .keras model on images")
    predict.add_argument("--model", required=True, help="the .keras model")
    predict.add_argument(
        "--config", help="experiment YAML (default: config.yaml written "
                         "by training next to the model)")
    predict.add_argument("--set", dest="overrides", action="append",
                         default=[], metavar="KEY=VALUE")
    predict.add_argument("--images", required=True,
                         help="an image, a folder or a glob pattern")
    predict.add_argument("--output", required=True,
                         help="folder for the drawn images")
    predict.add_argument("--score-threshold", type=float, default=0.3)
    predict.add_argument("--coco-json", metavar="FILE",
                         help="also write the detections as COCO results")
    predict.add_argument("--annotations",
                         help="COCO JSON to take class names from")
    predict.set_defaults(func=cmd_predict)

    shapes.add_parser(commands)
    tfrecord.add_parser(commands)
    evaluate = coco_eval.add_parser(commands)
    # `evaluate` also runs a .keras model on a dataset split.
    for action in evaluate._actions:
        if action.dest in ("annotations", "results"):
            action.required = False
    evaluate.add_argument(
        "--model", help="a .keras model to run on --split of the config's "
                        "data (instead of --annotations / --results)")
    evaluate.add_argument("--config", help="experiment YAML (default: the "
                                           "config.yaml next to --model)")
    evaluate.add_argument("--set", dest="overrides", action="append",
                          default=[], metavar="KEY=VALUE")
    evaluate.add_argument("--split", choices=("val", "train"), default="val")
    evaluate.add_argument("--max-images", type=int, default=0,
                          help="first N images only (0 = all)")
    evaluate.add_argument("--results-output", metavar="FILE",
                          help="write the model's COCO results JSON")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    from orienmask_tf.config import ConfigError
    from orienmask_tf.convert import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError) as error:
        print(f"orienmask-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
