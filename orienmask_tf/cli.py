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


def cmd_convert(args):
    from orienmask_tf.config import load_config
    from orienmask_tf.convert import load_state_dict
    from orienmask_tf.saving import save_network

    if not args.output.endswith(".keras"):
        raise ValueError(f"--output {args.output}: expected a .keras file name")
    config = load_config(args.config, args.overrides)
    state_dict, official_config = load_state_dict(args.checkpoint,
                                                  return_config=True)
    model = config.family.build_network(config)
    report = config.family.convert_checkpoint(
        model, state_dict, official_config, config=config, part=args.part,
        layout=args.layout, skip_keys=args.skip_keys, source=args.checkpoint)
    for note in report.get("notes", ()):
        print(f"note: {note}", file=sys.stderr)
    save_network(model, args.output, config)
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
    if args.quantize and args.format != "tflite":
        raise ValueError("--quantize applies to --format tflite only")
    calibration = None
    if args.quantize == "int8":
        calibration = _read_calibration_images(
            args.calibration_images, segmenter.image_size,
            args.calibration_count)
    path = segmenter.export(
        args.format, output=args.output, quantize=args.quantize,
        calibration_images=calibration, score_threshold=args.score_threshold,
        version=args.version, model_name=args.model_name)
    if args.format == "saved_model":
        name = os.path.basename(os.path.dirname(path))
        print(f"wrote {path} (TF Serving: model_name={name}, version "
              f"{os.path.basename(path)}); inspect with "
              f"`saved_model_cli show --dir {path} --all`")
    elif args.format == "tflite":
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


def cmd_predict(args):
    from orienmask_tf.inference.predict import list_images
    from orienmask_tf.inference.predict import predict_images

    segmenter = _load_segmenter(args)
    class_names = segmenter.class_names
    if args.annotations:
        with open(args.annotations) as f:
            categories = json.load(f)["categories"]
        class_names = tuple(c["name"] for c in
                            sorted(categories, key=lambda c: c["id"]))
    paths = list_images(args.images)
    written = predict_images(segmenter.network, segmenter.config, paths,
                             args.output, class_names, args.score_threshold,
                             args.coco_json)
    for source, out, count in written:
        print(f"{source} -> {out} ({count} detections >= "
              f"{args.score_threshold})")
    if args.coco_json:
        print(f"wrote {args.coco_json}")
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
    stats = segmenter.evaluate(args.annotations, args.images,
                               split=args.split, max_images=args.max_images)
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
    stats = evaluate(args.annotations, results, args.iou_types, args.backend)
    if args.output:
        write_json(args.output, stats)
    return 0


def cmd_make_shapes(args):
    from orienmask_tf.data.shapes import make_shapes

    def progress(split, done, total):
        if done == total or done % 50 == 0:
            print(f"\r{split}: {done}/{total} images", end="\n" if done == total
                  else "", flush=True)

    paths = make_shapes(args.out, args.num_train, args.num_val,
                        tuple(args.image_size), args.seed,
                        args.mean_instances, progress=progress,
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
                             verify=not args.no_verify)
    print(f"wrote {result['images']} images to {len(result['files'])} shards "
          f"{args.output}-*-of-{len(result['files']):05d}.tfrecord")
    print(dataset.summary())
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="orienmask-tf",
        description="OrienMask real-time instance segmentation in Keras 3 / "
                    "TensorFlow 2.")
    from orienmask_tf.version import __version__

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
    export.add_argument("--model", required=True,
                        help="the .keras model (it carries its experiment)")
    _add_config_args(export, required=False)
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

    from orienmask_tf.export.formats import FORMATS

    bench = commands.add_parser(
        "benchmark", help="latency of every deployment format on this "
                          "machine (median of timed runs after warm-up)")
    bench.add_argument("--model", help=".keras model (default: random "
                                       "weights from --config)")
    _add_config_args(bench, required=False)
    bench.add_argument("--formats", nargs="+", choices=FORMATS,
                       default=list(FORMATS))
    bench.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--runs", type=int, default=5)
    bench.set_defaults(func=cmd_benchmark)

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
    predict.add_argument("--model", required=True,
                         help="the .keras model (it carries its experiment)")
    _add_config_args(predict, required=False)
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

    from orienmask_tf.data.coco import ON_ERROR
    from orienmask_tf.data.shapes import STYLES
    from orienmask_tf.eval.coco_eval import BACKENDS
    from orienmask_tf.eval.coco_eval import IOU_TYPES

    shapes = commands.add_parser(
        "make-shapes", help="write a synthetic COCO-format dataset of "
                            "textured shapes (train and val splits)")
    shapes.add_argument("--out", required=True, help="output folder")
    shapes.add_argument("--num-train", type=int, default=64)
    shapes.add_argument("--num-val", type=int, default=16)
    shapes.add_argument("--image-size", type=int, nargs=2, default=(480, 640),
                        metavar=("HEIGHT", "WIDTH"))
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--mean-instances", type=float, default=7.0)
    shapes.add_argument("--style", choices=STYLES, default="coco",
                        help="coco: textured shapes of every size with "
                             "occlusion and crowd regions (default); simple: "
                             "few large flat-coloured shapes (quickstart)")
    shapes.set_defaults(func=cmd_make_shapes)

    prepare = commands.add_parser(
        "prepare-data", help="check a COCO instances JSON and its images and "
                             "write sharded TFRecords")
    prepare.add_argument("--annotations", required=True,
                         help="COCO instances JSON")
    prepare.add_argument("--images", required=True, help="image folder")
    prepare.add_argument("--output", required=True,
                         help="output prefix, e.g. data/coco/train2017")
    prepare.add_argument("--num-shards", type=int, default=64)
    prepare.add_argument("--on-error", choices=ON_ERROR, default="raise",
                         help="bad images/annotations: fail (naming the file "
                              "and annotation id) or skip and count")
    prepare.add_argument("--no-verify", action="store_true",
                         help="do not decode every image while writing")
    prepare.set_defaults(func=cmd_prepare_data)

    evaluate = commands.add_parser(
        "evaluate", help="COCO bbox/segm AP of a .keras model on a dataset "
                         "(--model) or of saved detection results "
                         "(--results); prints the 12-number tables")
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
                          default=list(IOU_TYPES))
    evaluate.add_argument("--backend", choices=BACKENDS,
                          default="pycocotools")
    evaluate.add_argument("--output", help="write the metrics here as JSON")
    evaluate.add_argument(
        "--model", help="a .keras model to run on a dataset (--annotations "
                        "and --images, or --split of its experiment)")
    _add_config_args(evaluate, required=False)
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
    from orienmask_tf.convert.torch_checkpoint import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError) as error:
        print(f"orienmask-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
