"""Record a float64 training trajectory of the official OrienMask trainer.

Needs the ``[torch]`` extra and a checkout of github.com/duwt/OrienMask
(never vendored here)::

    python scripts/record_official_trajectory.py --official /path/to/OrienMask \
        --output tests/fixtures/reference/orienmask_trajectory

What runs is the official code: ``OrienMaskYOLOFPNPlus`` (Darknet-53 depth,
every official layer), ``OrienMaskYOLOMultiScaleLoss`` with the anchor4
settings, the official ``build_optimizer`` rule (``base_sgd``: SGD momentum
0.9, weight decay 5e-4 on every parameter) and ``StepWarmUpLR``, stepped as
``trainer/trainer.py`` does (forward, loss, backward, ``optimizer.step()``,
``lr_scheduler.step()``, ``zero_grad()``), BN in training mode, everything in
float64 (``torch.set_default_dtype(torch.float64)``, ``model.double()``).

Only three things are set from outside, and the README of the output says so:

* the width: every channel count of the official model divided by 4
  (``conv_bn_leaky`` and the heads' plain ``nn.Conv2d`` of the official
  modules are wrapped to build narrower layers; depth, layer order, kernel
  sizes, strides, BN and activations stay the official ones), so that the
  suite can run our side on 2 CPU cores; ours is ``width: 8``;
* the BCE criterion of the loss casts its target to the prediction's dtype:
  the official ``tcls`` is created as float32 (``dtype=torch.float``) and
  ``binary_cross_entropy`` refuses float64 predictions with float32 targets;
  0/1 targets are exact in both;
* the initial weights: a numpy ``RandomState`` state_dict (the project's
  ``tests.testing.random_official_state_dict``), reproducible without torch.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.testing import random_official_state_dict  # noqa: E402

HEIGHT, WIDTH = 96, 160
NUM_CLASSES = 5
WIDTH_DIVISOR = 4  # official 32-channel stem -> 8 (our `model.width: 8`)
STATE_DICT_SEED = 0
IMAGE_SEED = 1
SAMPLE_SEED = 2
FULL_TENSOR_LIMIT = 4096  # tensors up to this size are stored whole
SAMPLES_PER_TENSOR = 512
OPTIMIZER = dict(lr=1e-7, momentum=0.9, weight_decay=5e-4)
SCHEDULE = dict(warmup_type="linear", warmup_iter=3, warmup_ratio=0.1,
                milestones=[5], gamma=0.1)
LOSS = dict(center_region=0.6, valid_region=0.6, label_smooth=False,
            obj_ignore_threshold=0.7, weight=[1, 1, 1, 1, 1, 20, 20],
            scales_weight=[1, 1, 1])
ANCHORS_544 = [[12, 16], [19, 36], [40, 28], [36, 75], [76, 55], [72, 146],
               [142, 110], [192, 243], [459, 401]]
ANCHOR_MASK = [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
# Instances of each image: (class, x0, y0, x1, y1, shape) in input pixels,
# x edges multiples of 5 and y edges multiples of 3, so the normalized
# centre / size (k / 64, k / 32) are exact in float32 and float64 alike.
# Three batches of two images, used for steps 0-5 in the order A B C A B C;
# image 3 has no instance.
INSTANCES = [
    [(0, 10, 12, 70, 60, "ellipse"), (3, 95, 30, 150, 90, "rect"),
     (1, 60, 66, 70, 72, "rect")],
    [(1, 40, 6, 120, 84, "ellipse"), (4, 5, 60, 30, 93, "ellipse"),
     (2, 130, 3, 155, 21, "rect")],
    [(2, 20, 15, 140, 81, "ellipse")],
    [],
    [(4, 60, 36, 80, 54, "rect"), (0, 0, 0, 160, 96, "ellipse"),
     (2, 120, 60, 125, 66, "ellipse")],
    [(1, 100, 9, 145, 69, "ellipse"), (3, 15, 42, 85, 90, "ellipse")],
]
STEP_BATCHES = [0, 1, 2, 0, 1, 2]


def instance_masks():
    """``(image, instance)`` masks, boxes, classes of ``INSTANCES``."""
    import cv2

    examples = []
    for image in INSTANCES:
        boxes, classes, masks = [], [], []
        for cls, x0, y0, x1, y1, shape in image:
            mask = np.zeros((HEIGHT, WIDTH), np.uint8)
            if shape == "rect":
                mask[y0:y1, x0:x1] = 1
            else:
                centre = ((x0 + x1 - 1) // 2, (y0 + y1 - 1) // 2)
                axes = ((x1 - x0) // 2, (y1 - y0) // 2)
                cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1)
            boxes.append([(x0 + x1) / 2 / WIDTH, (y0 + y1) / 2 / HEIGHT,
                          (x1 - x0) / WIDTH, (y1 - y0) / HEIGHT])
            classes.append(cls)
            masks.append(mask)
        examples.append((np.array(boxes, np.float64).reshape(-1, 4),
                         np.array(classes, np.int64),
                         np.array(masks, np.uint8).reshape(-1, HEIGHT,
                                                           WIDTH)))
    return examples


def images_uint8():
    rng = np.random.RandomState(IMAGE_SEED)
    return rng.randint(0, 256, size=(len(INSTANCES), HEIGHT, WIDTH, 3)
                       ).astype(np.uint8)


def narrow_official_modules(torch, official_model_module):
    """Wrap the official layer builders so every width is divided by
    ``WIDTH_DIVISOR`` (the 3 input channels and the head outputs kept)."""
    import model.backbone.darknet as darknet
    import model.base as base

    def narrow(channels):
        return channels if channels == 3 else channels // WIDTH_DIVISOR

    official_conv_bn_leaky = base.conv_bn_leaky

    def conv_bn_leaky(in_channels, out_channels, *args, **kwargs):
        return official_conv_bn_leaky(narrow(in_channels),
                                      narrow(out_channels), *args, **kwargs)

    class NarrowNN:
        def __getattr__(self, name):
            return getattr(torch.nn, name)

        @staticmethod
        def Conv2d(in_channels, out_channels, *args, **kwargs):
            return torch.nn.Conv2d(narrow(in_channels), out_channels, *args,
                                   **kwargs)

    darknet.conv_bn_leaky = conv_bn_leaky
    official_model_module.conv_bn_leaky = conv_bn_leaky
    official_model_module.nn = NarrowNN()


def sampled(key, final, initial, rng):
    flat_final = final.reshape(-1)
    flat_initial = initial.reshape(-1)
    out = {f"final/{key}/sum_sq_update": np.float64(
        np.sum((flat_final - flat_initial) ** 2))}
    if flat_final.size <= FULL_TENSOR_LIMIT:
        out[f"final/{key}"] = final
    else:
        index = np.sort(rng.choice(flat_final.size, SAMPLES_PER_TENSOR,
                                   replace=False))
        out[f"final/{key}/index"] = index.astype(np.int64)
        out[f"final/{key}/value"] = flat_final[index]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True,
                        help="checkout of github.com/duwt/OrienMask")
    parser.add_argument("--output", required=True, help="fixture folder")
    args = parser.parse_args(argv)
    official = pathlib.Path(args.official).resolve()
    if not (official / "model" / "orienmask_yolo_fpnplus.py").is_file():
        parser.error(f"--official {official}: not a checkout of "
                     "github.com/duwt/OrienMask (model/ missing)")
    try:
        import torch
    except ImportError:
        parser.error("needs torch: pip install -e .[torch]")
    sys.path.insert(0, str(official))
    # The official eval package imports its compiled NMS extension and
    # model/base.py torchsummary (for .summary()); neither is used here.
    import types
    sys.modules.setdefault("torchsummary", types.ModuleType("torchsummary"))
    sys.modules.setdefault("eval.nms_cpu", types.ModuleType("eval.nms_cpu"))
    sys.modules.setdefault("eval.nms_cuda", types.ModuleType("eval.nms_cuda"))
    import eval as official_eval
    import model.orienmask_yolo_fpnplus as fpnplus
    import optim as official_optim

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(2)
    narrow_official_modules(torch, fpnplus)
    net = fpnplus.OrienMaskYOLOFPNPlus(3, NUM_CLASSES)
    listing = [{"key": k, "shape": list(v.shape)}
               for k, v in net.state_dict().items()]
    initial = random_official_state_dict({"state_dict": listing},
                                         seed=STATE_DICT_SEED)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v))
                         for k, v in initial.items()}, strict=True)
    net = net.double().train()

    anchors = [[w * WIDTH / 544, h * HEIGHT / 544] for w, h in ANCHORS_544]
    grids = [[HEIGHT // s, WIDTH // s] for s in (32, 16, 8)]
    loss_fn = official_eval.OrienMaskYOLOMultiScaleLoss(
        grid_size=grids, image_size=[HEIGHT, WIDTH], anchors=anchors,
        anchor_mask=ANCHOR_MASK, num_classes=NUM_CLASSES, **LOSS)

    class CastingBCELoss(torch.nn.BCELoss):
        def forward(self, pred, target):
            return super().forward(pred, target.to(pred.dtype))

    for i in range(3):
        getattr(loss_fn, f"scale_loss_{i}").bce = CastingBCELoss(
            reduction="none")

    # trainer/builder.py build_optimizer (accumulate 1, no param_groups)
    # and build(config['lr_scheduler'], optim_module, optimizer=...).
    optimizer = official_optim.SGD(
        filter(lambda p: p.requires_grad, net.parameters()), **OPTIMIZER)
    scheduler = official_optim.StepWarmUpLR(optimizer=optimizer, **SCHEDULE)

    examples = instance_masks()
    pixels = images_uint8()
    steps = []
    for step, batch in enumerate(STEP_BATCHES):
        ids = [2 * batch, 2 * batch + 1]
        image = torch.from_numpy(
            pixels[ids].transpose(0, 3, 1, 2).astype(np.float64) / 255.0)
        counts = [len(examples[i][1]) for i in ids]
        label = (
            torch.from_numpy(np.concatenate([examples[i][0] for i in ids])),
            torch.from_numpy(np.concatenate([examples[i][1] for i in ids])),
            torch.from_numpy(np.cumsum([0] + counts).astype(np.int64)),
            torch.from_numpy(np.concatenate([examples[i][2] for i in ids])))
        lr = optimizer.param_groups[0]["lr"]
        predict = net(image)
        loss, loss_log, _ = loss_fn(predict, label, training=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        steps.append({"step": step, "batch": batch, "lr": lr,
                      "loss": loss.item(), "loss_log": loss_log})
        print(f"step {step}: lr {lr:.6g} loss {loss.item():.6f}", flush=True)

    final = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    rng = np.random.RandomState(SAMPLE_SEED)
    arrays = {"pixels": pixels,
              "step_batches": np.array(STEP_BATCHES, np.int64)}
    for i, (boxes, classes, masks) in enumerate(examples):
        arrays[f"image{i}/boxes"] = boxes
        arrays[f"image{i}/classes"] = classes
        arrays[f"image{i}/masks"] = masks.astype(bool)
    for entry in listing:
        key = entry["key"]
        arrays.update(sampled(key, final[key],
                              np.asarray(initial[key], final[key].dtype),
                              rng))
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "trajectory.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, out / "trajectory.npz")
    commit = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    meta = {
        "official_commit": commit or "61a0aa8f6b34c699962f83bb6c8ce557337ea701",
        "torch": torch.__version__,
        "recorded": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "image_size": [HEIGHT, WIDTH], "num_classes": NUM_CLASSES,
        "width_divisor": WIDTH_DIVISOR, "state_dict_seed": STATE_DICT_SEED,
        "image_seed": IMAGE_SEED, "sample_seed": SAMPLE_SEED,
        "anchors": anchors, "anchor_mask": ANCHOR_MASK, "loss": LOSS,
        "optimizer": OPTIMIZER, "schedule": SCHEDULE,
        "state_dict_listing": listing, "steps": steps,
    }
    tmp = out / "trajectory.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / "trajectory.json")
    print(f"wrote {out}/trajectory.npz and trajectory.json")


if __name__ == "__main__":
    main()
