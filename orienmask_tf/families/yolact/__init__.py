# SPDX-License-Identifier: Apache-2.0
"""The YOLACT family as trained in the maIoU paper (Oksuz et al., BMVC 2021):
ResNet-50 + FPN, a shared head with mask coefficients, a protonet, and the
anchor assigners of Table 2 (fixed IoU, ATSS with IoU or mask-aware IoU).

maYOLACT (DCNv2 backbone, ``FPN_CARAFE`` neck, 2 anchors per location) is
the same family: ``model.neck: fpn_carafe``, ``model.stage_with_dcn``,
``model.deformable_groups``, ``targets.scales_per_octave: 2``.

Folder map: ``resnet`` (backbone, optional DCNv2 ``conv2`` via
``layers.deform_conv``), ``fpn`` (necks: ``FPN`` and ``FPN_CARAFE`` via
``layers.carafe``), ``heads`` (head,
protonet, semantic head), ``network`` (``Yolact``), ``anchors`` (mmdet
anchor generator, dbolya priors), ``ops`` (box coder, mask crop, config
anchors), ``encoder`` (targets), ``loss``, ``decode`` (Fast NMS, masks),
``augment`` (mmdet pipeline), ``checkpoint`` (mmdet / dbolya / torchvision
keys), ``serving`` (export adapter), ``config`` (sections and checks). This
module only registers the family; it imports nothing heavy.
"""

import dataclasses

from orienmask_tf import registry


class YolactFamily(registry.Family):
    """YOLACT's answers to the shared code (see ``registry.Family``)."""

    name = "yolact"
    display_name = "YOLACT"
    summary = ("YOLACT: ResNet-50 FPN with ATSS / mask-aware IoU assignment "
               "(maIoU, BMVC 2021)")
    absent_keys = {"anchors": "YOLACT anchors follow image_size, "
                              "targets.assigner and decode.style"}
    tiny_preset = "yolact_tiny"
    test_presets = ("yolact_tiny", "mayolact_tiny")

    def defaults(self):
        from orienmask_tf.config import DataConfig
        from orienmask_tf.families.yolact import config as sections

        return dict(name="yolact_r50_550_atss_maiou", reproduces="",
                    image_size=(550, 550), anchors=None,
                    model=sections.YolactModelConfig(),
                    targets=sections.YolactTargetsConfig(),
                    loss=sections.YolactLossConfig(),
                    decode=sections.YolactDecodeConfig(),
                    train=sections.YOLACT_TRAIN,
                    # mmdet CocoDataset(filter_empty_gt=True): images
                    # without annotations are not trained on.
                    data=DataConfig(recipe=self.name, skip_empty=True))

    def validate(self, config):
        from orienmask_tf.families.yolact.config import validate

        validate(config)

    def network_class(self):
        from orienmask_tf.families.yolact.network import Yolact

        return Yolact

    def model_kwargs(self, config):
        from orienmask_tf.families.yolact.config import anchors_per_location

        kwargs = dataclasses.asdict(config.model)
        del kwargs["architecture"]
        kwargs["stackwise_num_blocks"] = tuple(kwargs["stackwise_num_blocks"])
        kwargs["stage_with_dcn"] = tuple(kwargs["stage_with_dcn"])
        kwargs["num_anchors"] = anchors_per_location(config)
        return kwargs

    def build_network(self, config, image_shape=(None, None, 3)):
        """As ``registry.Family.build_network``; a DCN backbone needs a
        static size, so an unknown height / width becomes
        ``config.image_size`` there."""
        if any(config.model.stage_with_dcn):
            height, width = config.image_size
            image_shape = (image_shape[0] or height, image_shape[1] or width,
                           image_shape[2])
        return super().build_network(config, image_shape)

    def anchor_array(self, config):
        """``(N, 4)`` x1, y1, x2, y2 anchors of every level, in input pixels."""
        from orienmask_tf.families.yolact.config import config_anchors

        return config_anchors(config)[0]

    def inference_args(self, config):
        from orienmask_tf.families.yolact.config import config_anchors
        from orienmask_tf.families.yolact.decode import split_levels

        return (split_levels(*config_anchors(config)),
                dataclasses.asdict(config.decode))

    def make_encoder(self, config, orien_dtype="float32"):
        from orienmask_tf.families.yolact.config import YOLACT_ASSIGNERS
        from orienmask_tf.families.yolact.config import config_anchors
        from orienmask_tf.families.yolact.encoder import YolactTargetEncoder

        anchors, counts = config_anchors(config)
        targets = config.targets
        assigner, overlap = YOLACT_ASSIGNERS[targets.assigner]
        return YolactTargetEncoder(
            anchors, counts, config.image_size,
            num_classes=config.model.num_classes, assigner=assigner,
            overlap=overlap, topk=targets.topk,
            official_segm_channels=targets.official_segm_channels,
            pos_iou_thr=targets.pos_iou_thr, neg_iou_thr=targets.neg_iou_thr,
            min_pos_iou=targets.min_pos_iou,
            ignore_iof_thr=targets.ignore_iof_thr)

    def make_transform(self, config, training):
        from orienmask_tf.families.yolact import augment

        cls = (augment.YolactTrainTransform if training
               else augment.YolactEvalTransform)
        return cls(image_size=config.image_size,
                   min_box_size=config.data.min_box_size)

    def make_loss(self, config):
        from orienmask_tf.families.yolact import loss as terms
        from orienmask_tf.families.yolact.config import anchors_per_location

        loss = config.loss
        common = dict(num_classes=config.model.num_classes,
                      num_anchors=anchors_per_location(config))
        return terms.YolactTrainingLoss({
            "loss_cls": terms.YolactClassificationLoss(
                loss_weight=loss.cls_weight,
                neg_pos_ratio=loss.neg_pos_ratio, **common),
            "loss_bbox": terms.YolactBoxLoss(
                loss_weight=loss.box_weight, beta=loss.smooth_l1_beta,
                **common),
            "loss_mask": terms.YolactMaskLoss(
                config.image_size, loss_weight=loss.mask_weight,
                max_masks=loss.max_masks, seed=config.train.seed, **common),
            "loss_segm": terms.YolactSegmLoss(loss_weight=loss.segm_weight,
                                              **common),
        })

    def make_adapter(self, network, image_size, anchors, decode_kwargs):
        from orienmask_tf.families.yolact.serving import YolactAdapter

        return YolactAdapter(network, image_size, anchors, decode_kwargs)

    def convert_checkpoint(self, network, state_dict, official_config=None,
                           config=None, part="auto", layout="auto",
                           skip_keys=None, source="checkpoint"):
        """mmdet (maIoU fork), dbolya or torchvision-ResNet state_dict."""
        from orienmask_tf.families.yolact import checkpoint

        if layout == "auto":
            layout = checkpoint.guess_layout(state_dict)
        loads = "backbone" if layout == "torchvision" else "full"
        if part != "auto" and part != loads:
            raise ValueError(
                f"--part {part}: a {layout} YOLACT checkpoint loads the "
                f"{loads} (torchvision ResNet weights: the backbone; mmdet / "
                "dbolya checkpoints: the full model)")
        notes = []
        if layout == "dbolya" and config is not None and (
                config.decode.style != "dbolya"
                or config.model.extra_convs_on != "output"
                or not config.model.relu_fpn_outputs):
            notes.append("a dbolya checkpoint needs decode.style=dbolya, "
                         "model.extra_convs_on=output and "
                         "model.relu_fpn_outputs=true to reproduce the "
                         "original YOLACT")
        report = checkpoint.convert_state_dict(
            network, state_dict, layout=layout, skip_keys=skip_keys,
            source=source)
        report["network"] = f"YOLACT ({report['layout']} layout)"
        if report.get("zeroed"):
            notes.append(
                f"{len(report['zeroed'])} DCN conv_offset tensors are not in "
                "the torchvision weights and were set to zero (as mmdet "
                "initialises them)")
        report["notes"] = notes
        return report

    def state_dict_from_model(self, network):
        from orienmask_tf.families.yolact.checkpoint import \
            state_dict_from_model

        return state_dict_from_model(network)

    def describe(self, config, image_size):
        from orienmask_tf.families.yolact.config import anchors_per_location
        from orienmask_tf.families.yolact.config import config_anchors

        m = config.model
        _, counts = config_anchors(
            dataclasses.replace(config, image_size=tuple(image_size)))
        return {
            # Counts per level for this input size (the rows are not printed).
            "anchors": list(counts),
            "model": (f"YOLACT classes={m.num_classes} anchors/location="
                      f"{anchors_per_location(config)} protos={m.num_protos}"
                      f" resnet_blocks={list(m.stackwise_num_blocks)} "
                      f"stem={m.stem_channels} base={m.base_channels} "
                      f"fpn={m.fpn_channels} "
                      f"extra_convs_on={m.extra_convs_on} "
                      f"neck={m.neck} "
                      f"stage_with_dcn={list(m.stage_with_dcn)} "
                      f"deformable_groups={m.deformable_groups} "
                      f"synchronized_bn={m.synchronized_bn}"),
            "input": "(x - PIXEL_MEAN) / PIXEL_STD of 0..255",
            "anchor_line": (f"{sum(counts):,} ({' + '.join(map(str, counts))}"
                            f" on P3..P7; targets.assigner="
                            f"{config.targets.assigner}, decode.style="
                            f"{config.decode.style})"),
        }

    def anchor_layout(self, config):
        """Levels P3..P7 (strides 8..128), each with the anchors of one
        location: ATSS ``targets.scales_per_octave`` square anchors of side
        ``4 * 2**(i / n) * stride``; fixed IoU and the dbolya priors 3
        aspect ratios. They follow the stride, so they are measured, not
        fitted. Recall threshold: ``targets.pos_iou_thr`` (MaxIoU's
        positive IoU; ATSS picks a threshold per box, mean + std of its
        candidates' IoU, so there it is a reference)."""
        from orienmask_tf.families.yolact.anchors import YOLACT_STRIDES
        from orienmask_tf.families.yolact.config import anchors_per_location
        from orienmask_tf.families.yolact.config import config_anchors

        boxes, counts = config_anchors(config)
        per_location = anchors_per_location(config)
        starts = [sum(counts[:i]) for i in range(len(counts))]
        shapes = [(float(x2 - x1), float(y2 - y1))
                  for start in starts
                  for x1, y1, x2, y2 in boxes[start:start + per_location]]
        return registry.AnchorLayout(
            kind="scales_ratios", strides=tuple(YOLACT_STRIDES),
            anchors=tuple(shapes), per_scale=per_location,
            threshold=float(config.targets.pos_iou_thr),
            threshold_source="targets.pos_iou_thr",
            resize="warp",
            note=(f"{per_location} anchor(s) per location on P3..P7 from "
                  "the stride, octave scales and aspect ratios "
                  f"(targets.assigner {config.targets.assigner}, "
                  f"decode.style {config.decode.style})"))

    def with_anchors(self, data, anchors):
        raise ValueError(
            "YOLACT anchors follow each level's stride, octave scales "
            "(targets.scales_per_octave) and aspect ratios: fitted [w, h] "
            "anchors cannot be written into a YOLACT config (without "
            "--write the report measures the config's anchors)")


FAMILY = registry.register(YolactFamily())
