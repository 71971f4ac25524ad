"""The YOLACT experiment configs: Table 2 of the maIoU paper, official
settings, anchors and the config -> encoder / loss / decoder wiring."""

import dataclasses

import numpy as np
import pytest
import yaml

from orienmask_tf.config import ConfigError
from orienmask_tf.config import Experiment
from orienmask_tf.config import config_to_dict
from orienmask_tf.config import load_config
from orienmask_tf.families.yolact.anchors import center_size_to_corners
from orienmask_tf.families.yolact.config import config_anchors
from tests import testing

# (scale, assigner) -> (Table 2 mask AP, official config in
# kemaloksuz/Mask-aware-IoU configs/mayolact/).
TABLE_2 = {
    (400, "fixed_iou"): (24.8, "yolact_r50_4x8_coco_scale400.py"),
    (400, "atss_iou"): (25.3, "yolact_r50_4x8_coco_scale400_ATSSwIoU.py"),
    (400, "atss_maiou"): (26.1, "yolact_r50_4x8_coco_scale400_ATSSwmaIoU.py"),
    (550, "fixed_iou"): (28.5, "yolact_r50_4x8_coco_scale550.py"),
    (550, "atss_iou"): (29.3, "yolact_r50_4x8_coco_scale550_ATSSwIoU.py"),
    (550, "atss_maiou"): (30.4, "yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py"),
    (700, "fixed_iou"): (29.7, "yolact_r50_4x8_coco_scale700.py"),
    (700, "atss_iou"): (30.8, "yolact_r50_4x8_coco_scale700_ATSSwIoU.py"),
    (700, "atss_maiou"): (31.8, "yolact_r50_4x8_coco_scale700_ATSSwmaIoU.py"),
}
ROWS = {"fixed_iou": "fixed IoU threshold", "atss_iou": "ATSS w. IoU",
        "atss_maiou": "ATSS w. maIoU (Ours)"}


def _path(scale, assigner):
    return testing.CONFIGS_DIR / f"yolact_r50_{scale}_{assigner}.yaml"


@pytest.mark.parametrize("scale,assigner", sorted(TABLE_2),
                         ids=lambda v: str(v))
def test_table_2_config(scale, assigner):
    config = load_config(_path(scale, assigner))
    ap, official = TABLE_2[(scale, assigner)]
    text = " ".join(config.reproduces.split())
    assert "Table 2" in text and f"scale {scale}" in text
    assert f'"{ROWS[assigner]}"' in text and f"{ap} mask AP" in text
    assert official in text
    assert config.architecture == "yolact"
    assert config.image_size == (scale, scale)
    assert config.targets.assigner == assigner and config.targets.topk == 9
    fixed = assigner == "fixed_iou"
    # Paper Sec. 4: mask weight 6.125 -> 8 with ATSS; box 1.5, OHEM 3:1.
    assert config.loss.mask_weight == (6.125 if fixed else 8.0)
    assert (config.loss.cls_weight, config.loss.box_weight,
            config.loss.segm_weight) == (1.0, 1.5, 1.0)
    assert (config.loss.neg_pos_ratio, config.loss.max_masks) == (3, 100)
    assert config.decode_kwargs() == dict(
        style="mmdet", nms_pre=1000, score_thr=0.05, iou_thr=0.5, top_k=200,
        max_per_img=100, mask_threshold=0.5)
    train = config.train
    assert (train.batch_size, train.epochs, train.learning_rate,
            train.momentum, train.weight_decay) == (32, 55, 4e-3, 0.9, 5e-4)
    assert (train.optimizer, train.weight_decay_mode, train.schedule) == (
        "sgd", "l2", "step")
    assert (train.warmup_iters, train.warmup_ratio, train.clip_norm) == (
        500, 0.1, 35.0)
    assert train.milestones == (20, 42, 49, 52)
    assert train.milestones_unit == "epochs"
    assert config.data.recipe == "yolact"
    kwargs = config.model_kwargs()
    assert kwargs["num_anchors"] == (3 if fixed else 1)
    assert kwargs["stackwise_num_blocks"] == (3, 4, 6, 3)
    assert (kwargs["extra_convs_on"], kwargs["relu_fpn_outputs"]) == (
        "input", False)
    # One anchor row per head output row, levels P3..P7.
    side = scale
    sizes = []
    for kernel, stride, pad in ((7, 2, 3), (3, 2, 1)) + ((3, 2, 1),) * 5:
        side = (side + 2 * pad - kernel) // stride + 1
        sizes.append(side)
    counts = [len(a) for a in config.inference_anchors()]
    assert counts == [n * n * kwargs["num_anchors"] for n in sizes[2:]]


def test_550_anchors_are_the_official_ones():
    reference = np.load(testing.reference_path("yolact", "anchors_550.npz"))
    for assigner, tag in (("atss_maiou", "atss"), ("atss_iou", "atss"),
                          ("fixed_iou", "yolact_mmdet_base")):
        levels = load_config(_path(550, assigner)).inference_anchors()
        for i, level in enumerate(levels):
            np.testing.assert_allclose(level, reference[f"{tag}_anchors_l{i}"],
                                       atol=1e-4, err_msg=f"{assigner} l{i}")
    dbolya = load_config(_path(550, "fixed_iou"),
                         ["decode.style=dbolya"]).inference_anchors()
    for i, level in enumerate(dbolya):
        priors = reference[f"dbolya_priors_cxcywh_rel_l{i}"]
        np.testing.assert_allclose(level, center_size_to_corners(priors, 550),
                                   atol=1e-3)


def test_fixed_iou_anchors_keep_the_550_geometry_at_400_and_700():
    # The official 400 / 700 fixed-IoU configs hard-code the 550 strides and
    # centres: at 400 the first level's anchors are those of 550, cut to
    # the 50 x 50 grid.
    at550 = load_config(_path(550, "fixed_iou")).inference_anchors()[0]
    at400 = load_config(_path(400, "fixed_iou")).inference_anchors()[0]
    grid550 = at550.reshape(69, 69, 3, 4)
    np.testing.assert_array_equal(at400.reshape(50, 50, 3, 4),
                                  grid550[:50, :50])


def test_defaults_are_the_550_atss_maiou_config():
    config = load_config(_path(550, "atss_maiou"))
    defaults = Experiment.defaults("yolact")
    assert config_to_dict(config) == config_to_dict(dataclasses.replace(
        defaults, name=config.name, reproduces=config.reproduces))
    # --set model.architecture=yolact starts from the same defaults.
    assert load_config(None, ["model.architecture=yolact"]) == defaults


def test_written_config_reloads_identically(tmp_path):
    config = load_config(testing.CONFIGS_DIR / "yolact_tiny.yaml",
                         ["targets.assigner=fixed_iou", "decode.top_k=7"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(config)))
    assert load_config(path) == config
    assert "anchors" not in config_to_dict(config)


def test_assigner_changes_anchors_encoder_and_head():
    base = testing.CONFIGS_DIR / "yolact_tiny.yaml"
    for assigner, per_location, kind, overlap in (
            ("atss_maiou", 1, "atss", "maiou"), ("atss_iou", 1, "atss", "iou"),
            ("atss_giou", 1, "atss", "giou"),
            ("fixed_iou", 3, "max_iou", "iou")):
        config = load_config(base, [f"targets.assigner={assigner}"])
        encoder = config.family.make_encoder(config)
        assert (encoder.assigner, encoder.overlap) == (kind, overlap)
        assert config.model_kwargs()["num_anchors"] == per_location
        anchors, counts = config_anchors(config)
        np.testing.assert_array_equal(encoder.anchors, anchors)
        assert encoder.num_level_anchors == counts
        assert encoder.image_size == config.image_size == (96, 128)
        losses = config.family.make_loss(config).terms
        assert {l.num_anchors for l in losses.values()} == {per_location}
    fixed = load_config(base, ["targets.assigner=fixed_iou",
                               "targets.pos_iou_thr=0.6"])
    assigner = fixed.family.make_encoder(fixed)._assign
    assert (assigner.pos_iou_thr, assigner.neg_iou_thr,
            assigner.min_pos_iou) == (0.6, 0.4, 0.0)


def test_loss_weights_reach_the_loss_terms():
    config = load_config(testing.CONFIGS_DIR / "yolact_tiny.yaml", [
        "loss.mask_weight=6.125", "loss.box_weight=2", "loss.max_masks=7",
        "loss.neg_pos_ratio=5", "loss.segm_weight=0.5"])
    losses = config.family.make_loss(config).terms
    assert losses["loss_mask"].loss_weight == 6.125
    assert losses["loss_mask"].max_masks == 7
    assert losses["loss_mask"].image_size == (96, 128)
    assert losses["loss_bbox"].loss_weight == 2.0
    assert losses["loss_cls"].neg_pos_ratio == 5
    assert losses["loss_segm"].loss_weight == 0.5
    assert {l.num_classes for l in losses.values()} == {3}


@pytest.mark.parametrize("overrides,message", [
    (["model.variant=base"], r"'model.variant' is an OrienMask setting, but "
                             r"model.architecture is 'yolact'"),
    (["anchors=yolov3"], r"'anchors' is an OrienMask setting"),
    (["loss.weights=[1]"], r"'loss.weights' is an OrienMask setting"),
    (["decode.nms=fast"], r"'decode.nms' is an OrienMask setting"),
    (["targets.assigner=atss"], r"targets.assigner: expected one of "
                                r"\['fixed_iou', 'atss_iou', 'atss_maiou'"),
    (["model.num_anchors=3"], r"model.num_anchors: targets.assigner "
                              r"'atss_maiou' .* places 1 anchor"),
    (["targets.assigner=fixed_iou", "model.num_anchors=1"],
     r"places 3 anchor"),
    (["data.recipe=orienmask"], r"data.recipe: 'orienmask' does not match "
                                r"model.architecture 'yolact'"),
    (["decode.style=torch"], r"decode.style: expected one of"),
    (["decode.style=dbolya"], r"decode.style: dbolya priors need a square "
                              r"input, got 96x128"),
    (["model.stackwise_num_blocks=[3,4,6]"], r"model.stackwise_num_blocks: "
                                             r"expected 4 counts"),
    (["model.extra_convs_on=p5"], r"model.extra_convs_on: expected one of"),
    (["image_size=[16,128]"], r"image_size: height and width must be at "
                              r"least 32"),
    (["targets.neg_iou_thr=0.7"], r"neg_iou_thr <= pos_iou_thr"),
    (["decode.score_thr=1.5"], r"0 <= score_thr < 1"),
    (["loss.max_masks=0"], r"loss.max_masks must be >= 1"),
    (["train.milestones_unit=hours"], r"train.milestones_unit: expected one "
                                      r"of \['iterations', 'epochs'\]"),
    (["model.architecture=mask_rcnn"], r"--set model.architecture=mask_rcnn: "
                                       r"model.architecture: expected one of "
                                       r"\['orienmask', 'yolact'\]"),
])
def test_bad_yolact_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(testing.CONFIGS_DIR / "yolact_tiny.yaml", overrides)


def test_yolact_keys_in_an_orienmask_file_name_file_and_key(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model:\n  num_protos: 16\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: 'model.num_protos' is "
                                          r"a YOLACT setting, but model."
                                          r"architecture is 'orienmask' \(set "
                                          r"model.architecture: yolact"):
        load_config(path)
    # Both families have a targets section (OrienMask: the assigner); a
    # YOLACT-only key in it names the key.
    path.write_text("targets:\n  assigner: fixed_iou\n  ignore_iof_thr: 0.5\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: 'targets.ignore_iof_thr' "
                                          r"is a YOLACT setting"):
        load_config(path)
    # Switching architecture on the command line takes the YOLACT defaults.
    config = load_config(path, ["model.architecture=yolact"])
    assert config.targets.assigner == "fixed_iou"
    assert config.targets.ignore_iof_thr == 0.5
    assert config.image_size == (550, 550)
