"""Load the official ``loss_case*.npz`` fixtures as padded examples."""

import numpy as np

from orienmask_tf.families.orienmask.encoder import OrienMaskTargetEncoder
from tests.testing import reference_path

LOSS_CASES = (0, 1, 2, 3)
MAX_INSTANCES = 8


def load_case(case):
    return np.load(reference_path("orienmask", f"loss_case{case}.npz"))


def encoder_for(z, **kwargs):
    height, width = (int(v) for v in z["image_size"])
    return OrienMaskTargetEncoder(
        (height, width), z["anchors"], int(z["num_classes"]),
        anchor_mask=z["anchor_mask"].tolist(),
        center_region=float(z["center_region"]),
        valid_region=float(z["valid_region"]), **kwargs)


def padded_examples(z, max_instances=MAX_INSTANCES):
    """One padded ground-truth dict per image of the fixture batch."""
    height, width = (int(v) for v in z["image_size"])
    examples = []
    for b in range(len(z["gt_index"]) - 1):
        i0, i1 = int(z["gt_index"][b]), int(z["gt_index"][b + 1])
        n = i1 - i0
        gt = {"boxes": np.zeros((max_instances, 4), np.float32),
              "classes": np.full((max_instances,), -1, np.int32),
              "masks": np.zeros((max_instances, height, width), np.uint8),
              "num_instances": np.int32(n)}
        gt["boxes"][:n] = z["gt_bbox"][i0:i1]
        gt["classes"][:n] = z["gt_cls"][i0:i1]
        gt["masks"][:n] = z["gt_mask"][i0:i1]
        examples.append(gt)
    return examples


def batched_targets(encoder, z, fn=None):
    """Encoder output of every image, stacked along a batch axis (numpy)."""
    fn = fn or encoder
    outs = [fn(gt) for gt in padded_examples(z)]
    return {k: np.stack([np.asarray(o[k]) for o in outs]) for k in outs[0]}


def nhwc_predictions(z):
    pred = {}
    for s, name in enumerate(("s32", "s16", "s8")):
        pred[f"box_{name}"] = z[f"pred_bbox_s{s}"].transpose(0, 2, 3, 1)
        pred[f"orien_{name}"] = z[f"pred_orien_s{s}"].transpose(0, 2, 3, 1)
    return pred
