"""Ablation: OrienMask with the YOLO, ATSS-IoU and ATSS-maIoU assigners.

One command trains the same small OrienMask (the quickstart network: FPN
plus, width 8, one block per Darknet stage, AdamW) on the COCO-style shapes
(``make-shapes --style coco``: textures, every size, occlusion, crowd
regions) with each ``targets.assigner`` and several seeds, each run for the
same time budget on the CPU, evaluates mask and box AP on the validation
split after each third of the budget (``--evals``; the clock is paused
while evaluating), and measures per assigner the positives per instance,
the YOLO fallbacks, clamped centre offsets and the target-encoding cost per
image. Runs are interleaved seed-major, so that load from other jobs hits
every assigner alike, and the steps each run achieved are recorded.

The budget counts, by default, the CPU time of the run's process (every
thread: network, augmentation, target encoding), from the end of the first
step: on a machine shared with other jobs a wall-clock budget measures
their load more than the assigner (a load average of ~10 on 2 cores was
seen while this was written); ``--clock wall`` counts wall time instead.
Either way an assigner whose targets cost more gets fewer steps.
Writes the tables (mean +- std over seeds) into BENCHMARKS.md (section
``ablation_assigner``) and everything into ``OUTPUT/results.json``.

    .venv/bin/python scripts/ablation_assigner.py    # 3 x 3 runs of 300 CPU-s
    .venv/bin/python scripts/ablation_assigner.py --budget 20 --evals 1 \\
        --seeds 0 --num-train 40 --num-val 12 --no-write   # smoke test

Sizes: besides COCO's absolute AP_S / AP_M / AP_L (areas 32^2 and 96^2 px,
of which a 128-px image has no large objects), the tables give AP_S / M / L
with the area limits scaled by (image side / 640)^2, COCO's thresholds as if
the image were COCO-sized. The data set is generated once under ``--data``
and reused; a finished run (same settings) is reused unless ``--force``.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

from benchmark_utils import REPO
from benchmark_utils import describe_machine
from benchmark_utils import timestamp
from benchmark_utils import write_section

MARK = "ablation_assigner"
ASSIGNERS = ("yolo", "atss_iou", "atss_maiou")
ANCHORS_544 = ((12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146),
               (142, 110), (192, 243), (459, 401))
COCO_SIDE = 640.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", default="data/shapes_coco_ablation",
                        help="make-shapes --style coco folder (made if "
                             "missing)")
    parser.add_argument("--output", default="runs/ablation_assigner")
    parser.add_argument("--num-train", type=int, default=300)
    parser.add_argument("--num-val", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--assigners", nargs="+", default=list(ASSIGNERS),
                        choices=ASSIGNERS)
    parser.add_argument("--budget", type=float, default=300.0,
                        help="training seconds per run (--clock), counted "
                             "from the end of the first step")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="what the budget counts: the run's CPU time "
                             "(all its threads; not what other jobs on "
                             "the machine take) or wall time")
    parser.add_argument("--evals", type=int, default=3,
                        help="evaluations per run, at equal fractions of "
                             "the budget (the clock paused meanwhile)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--cost-images", type=int, default=100,
                        help="training images for the encoding statistics")
    parser.add_argument("--note", default="the machine was shared with "
                        "other jobs", help="said under the table")
    parser.add_argument("--force", action="store_true",
                        help="rerun finished runs")
    parser.add_argument("--no-write", action="store_true",
                        help="do not write BENCHMARKS.md")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.image_size % 32 or args.image_size < 64:
        parser.error(f"--image-size: a multiple of 32, >= 64, got "
                     f"{args.image_size}")
    if args.budget <= 0:
        parser.error(f"--budget: must be > 0 seconds, got {args.budget}")
    if args.evals < 1:
        parser.error(f"--evals: must be >= 1, got {args.evals}")
    if args.num_train < args.batch_size or args.num_val < 1:
        parser.error("--num-train must be >= --batch-size and --num-val >= 1")
    return args


def overrides(args, data, assigner, seed):
    """``--set`` values of one run on top of the OrienMask defaults: the
    quickstart network and training recipe (configs/quickstart.yaml when
    this was written), spelled out so that the ablation does not move with
    that file; YOLOv4 anchors scaled by image size / 544."""
    size = args.image_size
    anchors = [[round(w * size / 544, 2), round(h * size / 544, 2)]
               for w, h in ANCHORS_544]
    return [
        "name=ablation_assigner", "model.architecture=orienmask",
        f"image_size=[{size},{size}]", f"anchors={json.dumps(anchors)}",
        "model.variant=fpn_plus", "model.num_classes=5",
        "model.stackwise_num_blocks=[1,1,1,1,1]",
        f"model.width={args.width}", f"targets.assigner={assigner}",
        "loss.weights=[1,1,1,1,4,20,20]", "decode.nms_pre=200",
        "decode.nms_post=50", "train.optimizer=adamw",
        "train.learning_rate=0.003", "train.weight_decay=0.0001",
        "train.clip_norm=10.0", "train.jit_compile=false",
        "data.aspect_jitter=0.0", "data.pad_ratio=0.5",
        f"data.train_annotations={data}/annotations/instances_train.json",
        f"data.train_images={data}/train",
        f"data.val_annotations={data}/annotations/instances_val.json",
        f"data.val_images={data}/val", "data.max_instances=40",
        # make-shapes can write a zero-area annotation for a sliver of a
        # shape (1 of 384 in the 128-px val split): skipped (logged).
        "data.on_error=skip",
        f"data.shuffle_buffer={args.num_train}", f"data.seed={seed}",
        f"train.seed={seed}", f"train.batch_size={args.batch_size}",
        # Constant learning rate after the warm-up: the run length is a
        # time budget, not a step count.
        "train.schedule=step", "train.milestones=[]", "train.warmup_iters=50",
        "train.epochs=100000", "train.steps_per_epoch=25",
        "train.eval_every=0", "train.checkpoint_every=0",
        "train.backup_every=1000000", "train.tensorboard_images=0"]


def ensure_data(args):
    """The shapes data under ``--data`` (generated once, seeded)."""
    data = pathlib.Path(args.data)
    if not data.is_absolute():
        data = REPO / data
    spec = {"style": "coco", "num_train": args.num_train,
            "num_val": args.num_val, "image_size": args.image_size, "seed": 0}
    marker = data / "ablation_data.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return data
    if (data / "annotations").exists() and not marker.exists():
        sys.exit(f"ablation_assigner: error: --data {data} exists but was "
                 "not made by this script; choose another folder")
    from orienmask_tf.data import make_shapes

    print(f"making {data} ...", flush=True)
    make_shapes(str(data), num_train=args.num_train, num_val=args.num_val,
                image_size=(args.image_size, args.image_size), seed=0,
                style="coco")
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, marker)
    return data


# --- one training run (a subprocess: own TensorFlow, own memory) ----------


def run_one(spec_path):
    """Train, evaluate and write ``result.json`` of one (assigner, seed)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from orienmask_tf.config import load_config
    from orienmask_tf.inference.evaluate import NetworkEvaluator
    from orienmask_tf.training import train

    spec = json.loads(pathlib.Path(spec_path).read_text())
    config = load_config(None,
                         spec["overrides"])

    # Non-XLA decoding: each evaluation builds a new inference graph, and
    # an XLA compile per evaluation would cost more than it saves here.
    evaluator = NetworkEvaluator(config, "val", batch_size=8,
                                 jit_compile=False)

    def evaluate(network):
        stats = evaluator(network, verbose=False)
        return stats, scaled_size_ap(config.data.val_annotations,
                                     evaluator.last_results,
                                     spec["image_size"])

    clock = time.process_time if spec["clock"] == "cpu" else time.perf_counter

    class TimeBudget(keras.callbacks.Callback):
        """Evaluate after each of ``checkpoints`` seconds of training and
        stop ``fit`` after the last. The clock (process CPU time: every
        thread of this run, the input pipeline included; or wall time)
        starts after the first step (tracing and pipeline start, the same
        for every assigner) and is paused while evaluating."""

        def __init__(self, checkpoints):
            super().__init__()
            self.checkpoints = list(checkpoints)
            self.start = None
            self.wall_start = None
            self.elapsed = 0.0
            self.wall = 0.0
            self.first_step_seconds = None
            self.records = []

        def on_train_begin(self, logs=None):
            self.wall_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.start is None:
                self.first_step_seconds = time.perf_counter() - self.wall_start
                self.start = clock()
                self.wall_start = time.perf_counter()
                return
            self.elapsed = clock() - self.start
            if self.elapsed < self.checkpoints[len(self.records)]:
                return
            paused, wall_paused = clock(), time.perf_counter()
            self.wall += wall_paused - self.wall_start
            steps = int(self.model.optimizer.iterations.numpy())
            stats, scaled = evaluate(self.model.network)
            self.records.append({"seconds": self.elapsed,
                                 "wall_seconds": self.wall, "steps": steps,
                                 "coco": stats, "scaled": scaled})
            print(f"{self.elapsed:.0f} s ({self.wall:.0f} s wall), {steps} "
                  f"steps: mask AP {100 * stats['segm']['AP']:.2f}",
                  flush=True)
            self.start += clock() - paused
            self.wall_start = time.perf_counter()
            if len(self.records) == len(self.checkpoints):
                self.model.stop_training = True

    budget = TimeBudget(spec["checkpoints"])
    summary = train(config, output_dir=spec["run_dir"], verbose=0,
                    evaluate=False, extra_callbacks=[budget])
    losses = summary["history"].get("loss", [])
    final = budget.records[-1]
    result = {"settings": spec["settings"], "steps": final["steps"],
              "train_seconds": final["seconds"],
              "train_wall_seconds": final["wall_seconds"],
              "first_step_seconds": budget.first_step_seconds,
              "first_loss": losses[0] if losses else None,
              "last_loss": losses[-1] if losses else None,
              "coco": final["coco"], "scaled": final["scaled"],
              "checkpoints": budget.records}
    out = pathlib.Path(spec["run_dir"]) / "result.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out)


def scaled_size_ap(annotations, results, image_side):
    """AP / AP_S / AP_M / AP_L per IoU type with COCO's area limits scaled
    by ``(image_side / 640) ** 2`` (pycocotools, 100 detections)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    scale = (image_side / COCO_SIDE) ** 2
    limits = [[0, 1e10], [0, 32 ** 2 * scale], [32 ** 2 * scale,
                                                 96 ** 2 * scale],
              [96 ** 2 * scale, 1e10]]
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        for iou_type in ("bbox", "segm"):
            dets = [{k: v for k, v in d.items()
                     if not (iou_type == "segm" and k == "bbox")}
                    for d in results.get(iou_type, ())]
            if not dets:
                out[iou_type] = {"AP": 0.0, "APs": 0.0, "APm": 0.0,
                                 "APl": 0.0}
                continue
            ev = COCOeval(gt, gt.loadRes(dets), iouType=iou_type)
            ev.params.areaRng = limits
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[iou_type] = dict(zip(("AP", "APs", "APm", "APl"),
                                     [float(ev.stats[i])
                                      for i in (0, 3, 4, 5)]))
    return out


# --- encoding statistics and cost (this process) ---------------------------


def encoding_stats(args, data, assigners, repeats=3):
    """Per assigner: positives per instance, fallbacks, clamped offsets and
    maps per instance over the first ``--cost-images`` training images
    (evaluation resize, no augmentation), and the encoding CPU time per
    image (one thread, median of ``repeats`` passes, assigners
    interleaved)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from orienmask_tf.config import load_config
    from orienmask_tf.data.pipeline import build_dataset

    configs = {a: load_config(None,
                              overrides(args, data, a, 0)) for a in assigners}
    base = configs[assigners[0]]
    gts = []
    for _, gt in build_dataset(base, "train", batch_size=1, training=False):
        gts.append({k: gt[k][0] for k in ("boxes", "classes", "masks",
                                          "num_instances")})
        if len(gts) == args.cost_images:
            break
    out = {}
    encoders = {a: c.family.make_encoder(c, orien_dtype="float16")
                for a, c in configs.items()}
    for assigner, encoder in encoders.items():
        totals = dict.fromkeys(("instances", "positives", "fallbacks",
                                "unassigned", "clamped", "maps"), 0)
        for gt in gts:
            if encoder.atss is None:
                targets = encoder(gt)
                n = int(gt["num_instances"])
                valid = ((gt["boxes"][:n, 2] > 0) & (gt["boxes"][:n, 3] > 0))
                totals["instances"] += int(np.sum(valid))
                positives = sum(int(np.sum(targets[f"cls_targets_{k}"] >= 0))
                                for k in encoder.names)
                totals["positives"] += positives
                totals["maps"] += int(np.sum(valid))  # one map each
            else:
                for key, value in encoder.encode_with_stats(gt)[1].items():
                    totals[key] += int(value)
        out[assigner] = totals

    # Cost: a one-thread tf.data map over the padded examples.
    max_n = 40
    padded = {"boxes": [], "classes": [], "masks": [], "num_instances": []}
    size = args.image_size
    for gt in gts:
        n = int(gt["num_instances"])
        masks = np.zeros((max_n, size, size), np.uint8)
        masks[:n] = gt["masks"][:n]
        padded["masks"].append(masks)
        padded["boxes"].append(np.asarray(gt["boxes"]))
        padded["classes"].append(np.asarray(gt["classes"]))
        padded["num_instances"].append(np.int32(n))
    arrays = {k: np.stack(v) for k, v in padded.items()}
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    times = {a: [] for a in assigners}
    for _ in range(repeats):
        for assigner, encoder in encoders.items():
            ds = tf.data.Dataset.from_tensor_slices(arrays).map(
                encoder).with_options(options)
            start = time.process_time()   # this process's CPU time
            for _ in ds:
                pass
            times[assigner].append((time.process_time() - start)
                                   / len(gts) * 1e3)
    for assigner in assigners:
        out[assigner]["ms_per_image"] = statistics.median(times[assigner])
        out[assigner]["images"] = len(gts)
    return out


# --- the driver -------------------------------------------------------------


def settings_of(args, assigner, seed):
    return {"assigner": assigner, "seed": seed, "budget": args.budget,
            "evals": args.evals, "clock": args.clock,
            "num_train": args.num_train, "num_val": args.num_val,
            "image_size": args.image_size, "batch_size": args.batch_size,
            "width": args.width}


def train_all(args, data, root):
    results = {}
    for seed in args.seeds:                    # seed-major interleaving
        for assigner in args.assigners:
            run_dir = root / f"{assigner}_seed{seed}"
            result_file = run_dir / "result.json"
            settings = settings_of(args, assigner, seed)
            if result_file.exists() and not args.force:
                result = json.loads(result_file.read_text())
                if result.get("settings") == settings:
                    print(f"reusing {run_dir}", flush=True)
                    # Wall time of the run's process: spec written at its
                    # start, result at its end.
                    result.setdefault("run_wall_seconds", (
                        result_file.stat().st_mtime
                        - (run_dir / "spec.json").stat().st_mtime))
                    results[(assigner, seed)] = result
                    continue
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            checkpoints = [args.budget * (k + 1) / args.evals
                           for k in range(args.evals)]
            spec = {"overrides": overrides(args, data, assigner, seed),
                    "checkpoints": checkpoints, "run_dir": str(run_dir),
                    "clock": args.clock,
                    "image_size": args.image_size, "settings": settings}
            spec_file = run_dir / "spec.json"
            spec_file.write_text(json.dumps(spec, indent=1))
            print(f"training {assigner} seed {seed} for {args.budget:g} s "
                  f"({args.clock})", flush=True)
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                       PYTHONPATH=str(REPO))
            log = run_dir / "log.txt"
            started = time.perf_counter()
            with open(log, "w") as stream:
                code = subprocess.call(
                    [sys.executable, __file__, "--run-one", str(spec_file)],
                    cwd=REPO, env=env, stdout=stream,
                    stderr=subprocess.STDOUT)
            if code != 0:
                sys.exit(f"ablation_assigner: error: the run {run_dir} "
                         f"failed (exit {code}); see {log}")
            results[(assigner, seed)] = json.loads(result_file.read_text())
            r = results[(assigner, seed)]
            r["run_wall_seconds"] = time.perf_counter() - started
            # The resume backup (~50 MB) is of no use to a finished run.
            shutil.rmtree(run_dir / "backup", ignore_errors=True)
            print(f"  {r['steps']} steps, mask AP "
                  f"{100 * r['coco']['segm']['AP']:.1f}, box AP "
                  f"{100 * r['coco']['bbox']['AP']:.1f}", flush=True)
    return results


def mean_std(values):
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def difference(args, results, a, b, iou_type):
    """Mean AP of ``a`` minus ``b`` (x100) and its standard error."""
    va = [100 * results[(a, s)]["coco"][iou_type]["AP"] for s in args.seeds]
    vb = [100 * results[(b, s)]["coco"][iou_type]["AP"] for s in args.seeds]
    if len(va) < 2:
        return statistics.mean(va) - statistics.mean(vb), float("nan")
    se = (statistics.variance(va) / len(va)
          + statistics.variance(vb) / len(vb)) ** 0.5
    return statistics.mean(va) - statistics.mean(vb), se


def reading(args, results):
    """The differences between assigners, computed, and what the setting
    can and cannot say."""
    pairs = [(a, "yolo") for a in args.assigners if a != "yolo"
             and "yolo" in args.assigners]
    if {"atss_iou", "atss_maiou"} <= set(args.assigners):
        pairs.append(("atss_maiou", "atss_iou"))
    parts = []
    for a, b in pairs:
        texts = []
        for iou_type, label in (("segm", "mask"), ("bbox", "box")):
            delta, se = difference(args, results, a, b, iou_type)
            verdict = ("" if se != se else
                       ", beyond twice its standard error" if
                       abs(delta) > 2 * se else
                       ", within twice its standard error")
            error = "n/a, one seed" if se != se else f"{se:.1f}"
            texts.append(f"{label} AP {delta:+.1f} (standard error "
                         f"{error}{verdict})")
        parts.append(f"`{a}` - `{b}`: " + ", ".join(texts))
    steps = [results[k]["steps"] for k in results]
    best = max(100 * r["coco"]["segm"]["AP"] for r in results.values())
    return ("; ".join(parts) + ". "
            f"These are short runs from scratch ({min(steps)}-{max(steps)} "
            f"steps, mask AP at most {best:.1f}): they show how fast each "
            "assignment gets a small OrienMask to learn, not the accuracy a "
            "full COCO schedule converges to. ATSS gives each instance about "
            "three positives (the YOLO rule one), so the box, objectness "
            "and, through Eq. 5, orientation losses get about three times "
            "the positive terms per instance, which alone speeds up early "
            f"training; with {len(args.seeds)} seed(s), differences within "
            "twice their standard error are not distinguishable.")


def table(args, results, encoding, wall, machine):
    seeds = " ".join(str(s) for s in args.seeds)
    command = ("python scripts/ablation_assigner.py"
               + ("" if args.budget == 300 else f" --budget {args.budget:g}")
               + ("" if args.clock == "cpu" else f" --clock {args.clock}")
               + ("" if args.evals == 3 else f" --evals {args.evals}")
               + ("" if args.seeds == [0, 1, 2] else f" --seeds {seeds}"))
    names = {"yolo": "`yolo` (paper)", "atss_iou": "`atss_iou`",
             "atss_maiou": "`atss_maiou`"}
    lines = [
        "## Ablation: OrienMask assigner (YOLO vs ATSS-IoU vs ATSS-maIoU)",
        "",
        f"`{command}`; {timestamp()}; {machine}; wall time of the "
        f"{len(results)} runs {wall / 60:.0f} min (start, training, "
        f"evaluations); {args.note}.",
        "",
        f"The quickstart OrienMask (FPN plus, width {args.width}, one block "
        f"per stage, AdamW 0.003, batch {args.batch_size}, constant "
        f"learning rate after 50 warm-up steps) trained from scratch on "
        f"`make-shapes --style coco` ({args.num_train} train / "
        f"{args.num_val} val images, {args.image_size}x{args.image_size}, "
        f"5 classes, seed 0) for **{args.budget:g} s of "
        + ("process CPU time" if args.clock == "cpu" else "wall-clock")
        + " per run** (counted from the end of the first step, paused "
        "while evaluating; "
        + ("the CPU time of every thread of the run, so other jobs on the "
           "machine change the wall time, not the work done" if
           args.clock == "cpu" else "other jobs on the machine change the "
           "steps done")
        + f") on the CPU, seeds {seeds} (model init, shuffling, "
        "augmentation), runs interleaved seed-major; evaluated on the "
        "validation split. "
        "Mean ± std over seeds of COCO AP (x100). AP_S / AP_M / AP_L: "
        f"COCO's area limits scaled by ({args.image_size}/640)², i.e. "
        f"sides {32 * args.image_size / 640:.1f} and "
        f"{96 * args.image_size / 640:.1f} px (COCO's absolute limits leave "
        "no large object in these images; in `results.json`).",
        "",
        "| assigner | mask AP | mask AP50 | mask AP_S | mask AP_M | "
        "mask AP_L | box AP | box AP_S | box AP_M | box AP_L | steps | "
        "wall s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in args.assigners:
        runs = [results[(a, s)] for s in args.seeds]
        seg = [r["coco"]["segm"] for r in runs]
        box = [r["coco"]["bbox"] for r in runs]
        sseg = [r["scaled"]["segm"] for r in runs]
        sbox = [r["scaled"]["bbox"] for r in runs]
        steps = [r["steps"] for r in runs]
        lines.append(
            f"| {names[a]} | {mean_std([x['AP'] for x in seg])} | "
            f"{mean_std([x['AP50'] for x in seg])} | "
            + " | ".join(mean_std([x[k] for x in sseg])
                         for k in ("APs", "APm", "APl"))
            + f" | {mean_std([x['AP'] for x in box])} | "
            + " | ".join(mean_std([x[k] for x in sbox])
                         for k in ("APs", "APm", "APl"))
            + f" | {statistics.mean(steps):.0f} "
              f"({min(steps)}-{max(steps)}) | "
              f"{statistics.mean(r['train_wall_seconds'] for r in runs):.0f}"
              " |")
    if args.evals > 1:
        marks = results[(args.assigners[0], args.seeds[0])]["checkpoints"]
        heads = [f"{m['seconds']:.0f} s" for m in marks]
        lines += [
            "",
            "During the runs (the same runs, evaluated after each "
            f"1/{args.evals} of the budget): mask AP / box AP, and steps.",
            "",
            "| assigner | " + " | ".join(f"mask AP {h}" for h in heads)
            + " | " + " | ".join(f"box AP {h}" for h in heads)
            + " | " + " | ".join(f"steps {h}" for h in heads) + " |",
            "|---|" + "---|" * (3 * len(heads))]
        for a in args.assigners:
            runs = [results[(a, s)]["checkpoints"] for s in args.seeds]
            cells = []
            for iou_type in ("segm", "bbox"):
                cells += [mean_std([r[k]["coco"][iou_type]["AP"]
                                    for r in runs])
                          for k in range(len(heads))]
            cells += [f"{statistics.mean(r[k]['steps'] for r in runs):.0f}"
                      for k in range(len(heads))]
            lines.append(f"| {names[a]} | " + " | ".join(cells) + " |")
    lines += ["", "Reading: " + reading(args, results)]
    lines += [
        "",
        f"Targets of the first {encoding[args.assigners[0]]['images']} "
        "training images (evaluation resize, no augmentation); encoding "
        "cost: CPU time of the target encoder alone in a one-thread "
        "`tf.data` map (median of 3 passes), per image.",
        "",
        "| assigner | positives / instance | instances via YOLO fallback | "
        "positives with clamped centre offset | orientation maps / instance "
        "| encoding CPU ms / image |",
        "|---|---|---|---|---|---|"]
    for a in args.assigners:
        e = encoding[a]
        inst = max(e["instances"], 1)
        pos = max(e["positives"], 1)
        fallback = ("—" if a == "yolo" else
                    f"{100 * e['fallbacks'] / inst:.1f} %")
        clamped = "—" if a == "yolo" else f"{100 * e['clamped'] / pos:.1f} %"
        lines.append(f"| {names[a]} | {e['positives'] / inst:.2f} | "
                     f"{fallback} | {clamped} | {e['maps'] / inst:.2f} | "
                     f"{e['ms_per_image']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.run_one:
        run_one(args.run_one)
        return 0
    start = time.perf_counter()
    data = ensure_data(args)
    root = pathlib.Path(args.output)
    root = root if root.is_absolute() else REPO / root
    root.mkdir(parents=True, exist_ok=True)
    print("measuring the target encoding ...", flush=True)
    encoding = encoding_stats(args, data, args.assigners)
    results = train_all(args, data, root)
    wall = sum(r["run_wall_seconds"] for r in results.values())
    machine = describe_machine()
    text = table(args, results, encoding, wall, machine)
    summary = {"args": {k: v for k, v in vars(args).items()
                        if k != "run_one"},
               "machine": machine, "runs_wall_seconds": wall,
               "invocation_wall_seconds": time.perf_counter() - start,
               "encoding": encoding,
               "runs": {f"{a}_seed{s}": r for (a, s), r in results.items()}}
    out = root / "results.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out)
    if not args.no_write:
        write_section(MARK, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
