"""The quantized CPU route (`orienmask-tf export --quantize int8`): batch
throughput against float32, and its accuracy cost -> BENCHMARKS.md.

    # images / s at batch 1, 4, 8: fp32 XLA SavedModel vs the int8 TFLite route,
    # full-size random-weight model (one family per run, each under 10 minutes)
    .venv/bin/python scripts/benchmark_quantized.py throughput --arch orienmask
    .venv/bin/python scripts/benchmark_quantized.py throughput --arch yolact
    # mask / box AP of a trained model on its validation split, fp32 vs int8
    .venv/bin/python scripts/benchmark_quantized.py accuracy \\
        --model runs/quickstart/model.keras

``throughput``: the family's full-size preset (FPN-plus 544 anchor4, or
YOLACT ResNet-50 550 ATSS-maIoU), 80 classes, random weights; both pipelines
start from uint8 pixels of 640x480 images and end with detections and masks:
``fp32`` is the exported SavedModel's ``serving_default`` (XLA), ``int8`` the
one-file TFLite model of ``export/quantize.py`` (one calibration, one model
per batch size). TensorFlow 2 intra-op threads, TFLite 2 threads;
alternating blocks, medians.

``accuracy``: exports the model with ``orienmask-tf export --quantize int8``
(calibrated on the experiment's training images, the CLI default), runs it
and the float32 inference graph (``InferenceModel.detect_uint8``, what
``serving_default`` runs) on every validation image, maps the masks to the
image (bilinear, > 0.5, as ``evaluate``) and scores both with pycocotools.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

SCRIPTS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from benchmark_utils import BENCHMARKS_MD  # noqa: E402
from benchmark_utils import REPO  # noqa: E402
from benchmark_utils import describe_machine  # noqa: E402
from benchmark_utils import timestamp  # noqa: E402
from benchmark_utils import write_section  # noqa: E402

CONFIGS = {"orienmask": "orienmask_yolo_fpnplus_coco_544_anchor4.yaml",
           "yolact": "yolact_r50_550_atss_maiou.yaml"}
MASK_LOSS_TARGET = 1.0   # issue 18: mask AP loss <= 1 point


def _threads():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def throughput(args):
    import tensorflow as tf

    from orienmask_tf.config import load_config
    from orienmask_tf.export.quantize import convert_int8_end_to_end
    from orienmask_tf.export.quantize import convert_int8_network
    from orienmask_tf.export.quantize import int8_runner
    from orienmask_tf.export.saved_model import export_saved_model

    _threads()
    config = load_config(str(REPO / "configs" / CONFIGS[args.arch]),
                         args.overrides)
    model = config.family.build_network(config)
    anchors, decode = config.family.inference_args(config)
    height, width = config.image_size
    rng = np.random.RandomState(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        export_saved_model(model, config.image_size, anchors, decode, tmp)
        serve = tf.saved_model.load(tmp).signatures["serving_default"]
        calibration = [rng.uniform(0, 1, (1, height, width, 3))
                       .astype(np.float32) for _ in range(4)]
        network = convert_int8_network(model, config.image_size, anchors,
                                       decode, calibration)
        int8 = {b: int8_runner(convert_int8_end_to_end(
            model, config.image_size, anchors, decode, batch_size=b,
            network=network), num_threads=2) for b in args.batch_sizes}
        prepare = time.perf_counter() - started
        pixels = {b: rng.randint(0, 256, (b, 480, 640, 3), dtype=np.uint8)
                  for b in args.batch_sizes}
        pipelines = {
            "fp32 (XLA SavedModel)": lambda b: np.asarray(serve(
                images=tf.constant(pixels[b]))["num_detections"]),
            "int8 (TFLite, one file)": lambda b: int8[b](
                pixels[b])["num_detections"]}
        times = {}
        detections = {}
        for batch in args.batch_sizes:
            for name, run in pipelines.items():   # warm-up, compilation
                detections[name, batch] = float(np.mean(run(batch)))
            for block in range(args.blocks):
                names = list(pipelines)[::1 if block % 2 == 0 else -1]
                for name in names:
                    for _ in range(args.runs):
                        start = time.perf_counter()
                        pipelines[name](batch)
                        times.setdefault((name, batch), []).append(
                            time.perf_counter() - start)
            print(f"batch {batch}: " + ", ".join(
                f"{name} {1e3 * statistics.median(times[name, batch]):.0f} "
                "ms" for name in pipelines), flush=True)
    elapsed = time.perf_counter() - started
    lines = ["| pipeline | batch | median ms | ms / image | images / s | "
             "int8 speed-up | detections / image |",
             "|---|---|---|---|---|---|---|"]
    for batch in args.batch_sizes:
        fp32 = statistics.median(times["fp32 (XLA SavedModel)", batch])
        for name in pipelines:
            median = statistics.median(times[name, batch])
            speedup = ("" if name.startswith("fp32")
                       else f"{fp32 / median:.2f}x")
            lines.append(f"| {name} | {batch} | {1e3 * median:.0f} | "
                         f"{1e3 * median / batch:.0f} | "
                         f"{batch / median:.2f} | {speedup} | "
                         f"{detections[name, batch]:.0f} |")
    load = os.getloadavg()[0]
    text = "\n".join([
        f"## Batch throughput, fp32 vs the int8 route ({config.name}, "
        f"{height}x{width})",
        "",
        f"`python scripts/benchmark_quantized.py throughput --arch "
        f"{args.arch}" + "".join(f" --set {o}" for o in args.overrides)
        + f"`, {timestamp()}; {describe_machine()}; load average "
        f"{load:.1f} at the end"
        + (" (the machine was shared with other jobs: absolute times are "
           "inflated, the alternating blocks give both pipelines the same "
           "load)" if load > 1.5 else "")
        + f". Random weights, 80 classes; uint8 640x480 images in, "
        "detections and masks out; TensorFlow 2 intra-op threads, TFLite 2 "
        f"threads; {args.blocks} alternating blocks x {args.runs} runs per "
        f"batch, medians; setup (export, int8 calibration and conversion) "
        f"{prepare:.0f} s, whole run {elapsed / 60:.1f} min.",
        "",
        "\n".join(lines),
    ])
    print(text)
    if not args.no_write:
        write_section(f"benchmark_quantized_throughput_{args.arch}", text,
                      args.output)
        print(f"wrote {args.output}")


def accuracy(args):
    import cv2

    from orienmask_tf import cli
    from orienmask_tf.eval.coco_eval import detections_to_coco
    from orienmask_tf.eval.coco_eval import evaluate
    from orienmask_tf.export.quantize import int8_runner
    from orienmask_tf.inference.segmenter import Segmenter
    from orienmask_tf.ops.frames import masks_to_original
    from orienmask_tf.ops.frames import resize_image_info

    _threads()
    segmenter = Segmenter.load(args.model)
    config = segmenter.config
    annotations = config.data.val_annotations
    folder = config.data.val_images
    with open(annotations) as stream:
        coco = json.load(stream)
    category_ids = sorted(c["id"] for c in coco["categories"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "int8.tflite")
        code = cli.main(["--quiet", "export", "--model", args.model,
                         "--quantize", "int8", "--calibration-count",
                         str(args.calibration_count), "--output", path])
        if code:
            raise SystemExit(code)
        export_s = time.perf_counter() - started
        int8 = int8_runner(path, num_threads=2)
        fp32 = segmenter.inference_model(jit_compile=True).detect_uint8
        results = {"fp32": {"bbox": [], "segm": []},
                   "int8": {"bbox": [], "segm": []}}
        for record in coco["images"]:
            bgr = cv2.imread(os.path.join(folder, record["file_name"]),
                             cv2.IMREAD_COLOR)
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])[None]
            info = resize_image_info(rgb.shape[1:3], config.image_size)
            for name, run in (("fp32", lambda x: {
                    k: np.asarray(v) for k, v in fp32(x).items()}),
                    ("int8", int8)):
                out = run(rgb)
                n = int(out["num_detections"][0])
                masks = masks_to_original(out["masks"][0, :n], info,
                                          interpolation="bilinear")
                boxes, segms = detections_to_coco(
                    record["id"], out["boxes"][0, :n], out["scores"][0, :n],
                    out["classes"][0, :n], category_ids, masks=masks)
                results[name]["bbox"] += boxes
                results[name]["segm"] += segms
    stats = {name: evaluate(annotations, res, verbose=False)
             for name, res in results.items()}
    rows = ["| pipeline | mask AP | mask AP50 | mask AP75 | box AP | box AP50 "
            "|", "|---|---|---|---|---|---|"]
    count = len(coco["images"])
    for name in ("fp32", "int8"):
        s = stats[name]
        rows.append(f"| {name} | {100 * s['segm']['AP']:.1f} | "
                    f"{100 * s['segm']['AP50']:.1f} | "
                    f"{100 * s['segm']['AP75']:.1f} | "
                    f"{100 * s['bbox']['AP']:.1f} | "
                    f"{100 * s['bbox']['AP50']:.1f} |")
    mask_loss = 100 * (stats["fp32"]["segm"]["AP"]
                       - stats["int8"]["segm"]["AP"])
    box_loss = 100 * (stats["fp32"]["bbox"]["AP"]
                      - stats["int8"]["bbox"]["AP"])
    verdict = ("met" if mask_loss <= MASK_LOSS_TARGET else
               f"**not met** by {mask_loss - MASK_LOSS_TARGET:.1f} points")
    text = "\n".join([
        f"## Accuracy of the int8 route ({config.name}, {args.model})",
        "",
        f"`python scripts/benchmark_quantized.py accuracy --model "
        f"{args.model}`, {timestamp()}; {describe_machine()}. The model is "
        f"exported with `orienmask-tf export --model {args.model} "
        f"--quantize int8 --calibration-count {args.calibration_count}` "
        f"(calibrated on the first {args.calibration_count} images of "
        f"`{config.data.train_images}`; {export_s:.0f} s) and compared "
        f"with the float32 inference graph on the {count} images of "
        f"`{annotations}` (uint8 image in, masks mapped to the image "
        "bilinearly, > 0.5; every detection kept; pycocotools).",
        "",
        "\n".join(rows),
        "",
        f"**Mask AP loss (fp32 - int8): {mask_loss:.1f} points, box AP "
        f"loss: {box_loss:.1f} points** (target: mask AP loss <= "
        f"{MASK_LOSS_TARGET:.0f} point: {verdict}).",
    ])
    print(text)
    if not args.no_write:
        write_section("benchmark_quantized_accuracy", text, args.output)
        print(f"wrote {args.output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    speed = modes.add_parser("throughput", help="images / s, fp32 vs int8")
    speed.add_argument("--arch", choices=sorted(CONFIGS), default="orienmask")
    speed.add_argument("--batch-sizes", type=int, nargs="+",
                       default=[1, 4, 8])
    speed.add_argument("--set", dest="overrides", action="append",
                       default=[], metavar="KEY=VALUE",
                       help="config override, e.g. decode.score_thr=0 so "
                            "that random YOLACT weights keep detections")
    speed.add_argument("--blocks", type=int, default=2)
    speed.add_argument("--runs", type=int, default=2)
    quality = modes.add_parser("accuracy", help="AP fp32 vs int8")
    quality.add_argument("--model", default="runs/quickstart/model.keras")
    quality.add_argument("--calibration-count", type=int, default=32)
    for sub in (speed, quality):
        sub.add_argument("--output", default=str(BENCHMARKS_MD))
        sub.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.mode == "accuracy" and not os.path.isfile(args.model):
        print(f"benchmark_quantized.py: error: --model {args.model}: no such "
              "file (train it: bash scripts/quickstart.sh)", file=sys.stderr)
        return 2
    (throughput if args.mode == "throughput" else accuracy)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
