# SPDX-License-Identifier: Apache-2.0
"""The OrienMask family (Du et al., ICCV 2021): Darknet-53 + YOLOv3 FPN with
an OrienHead; a detection's mask is every pixel whose orientation vector
points into its contracted box (paper Eq. 3).

Folder map: ``darknet53`` (backbone), ``yolo_fpn`` (neck, base / FPN-plus),
``heads`` (BoxHead, OrienHead), ``network`` (``OrienMask``), ``anchors``,
``encoder`` + ``orientation`` (targets, Sec. 3.2), ``loss`` (Eq. 4-5),
``decode`` (Eq. 3), ``augment`` (official transforms), ``checkpoint``
(official state_dict keys), ``serving`` (export adapter), ``config``
(sections and checks). This module only registers the family; it imports
nothing heavy.
"""

import dataclasses

from orienmask_tf import registry


class OrienMaskFamily(registry.Family):
    """OrienMask's answers to the shared code (see ``registry.Family``)."""

    name = "orienmask"
    display_name = "OrienMask"
    summary = "OrienMask: Darknet-53 + YOLOv3 FPN + orientation maps (ICCV 2021)"
    default = True
    tiny_preset = "tiny"

    def defaults(self):
        from orienmask_tf.config import DataConfig
        from orienmask_tf.config import TrainConfig
        from orienmask_tf.families.orienmask import config as sections

        return dict(name="orienmask_yolo_fpnplus_coco_544_anchor4",
                    reproduces="", image_size=(544, 544), anchors="yolov4",
                    model=sections.ModelConfig(),
                    targets=sections.TargetsConfig(),
                    loss=sections.LossConfig(),
                    decode=sections.DecodeConfig(), train=TrainConfig(),
                    data=DataConfig(recipe=self.name))

    def validate(self, config):
        from orienmask_tf.families.orienmask.config import validate

        validate(config)

    def network_class(self):
        from orienmask_tf.families.orienmask.network import OrienMask

        return OrienMask

    def model_kwargs(self, config):
        kwargs = dataclasses.asdict(config.model)
        del kwargs["architecture"]
        kwargs["stackwise_num_blocks"] = tuple(kwargs["stackwise_num_blocks"])
        return kwargs

    def anchor_array(self, config):
        """``(9, 2)`` anchor ``[width, height]`` in input pixels."""
        from orienmask_tf.families.orienmask.anchors import resolve_anchors

        return resolve_anchors(config.anchors)

    def inference_args(self, config):
        return self.anchor_array(config), dataclasses.asdict(config.decode)

    def make_encoder(self, config, orien_dtype="float32"):
        from orienmask_tf.families.orienmask.encoder import \
            OrienMaskTargetEncoder

        targets = config.targets
        return OrienMaskTargetEncoder(
            image_size=config.image_size, anchors=self.anchor_array(config),
            num_classes=config.model.num_classes,
            center_region=config.loss.center_region,
            valid_region=config.loss.valid_region, orien_dtype=orien_dtype,
            assigner=targets.assigner, topk=targets.topk,
            yolo_fallback=targets.yolo_fallback)

    def make_transform(self, config, training):
        from orienmask_tf.families.orienmask import augment

        data = config.data
        if not training:
            return augment.OrienMaskEvalTransform(
                image_size=config.image_size, min_box_size=data.min_box_size)
        return augment.OrienMaskTrainTransform(
            image_size=config.image_size, min_box_size=data.min_box_size,
            jitter=data.aspect_jitter, pad_ratio=data.pad_ratio)

    def make_loss(self, config):
        from orienmask_tf.families.orienmask.loss import OrienMaskLoss
        from orienmask_tf.families.orienmask.loss import OrienMaskTrainingLoss

        loss = config.loss
        return OrienMaskTrainingLoss(OrienMaskLoss(
            image_size=config.image_size, anchors=self.anchor_array(config),
            num_classes=config.model.num_classes,
            obj_ignore_threshold=loss.obj_ignore_threshold,
            label_smooth=loss.label_smooth, weights=loss.weights,
            scales_weight=loss.scales_weight))

    def make_adapter(self, network, image_size, anchors, decode_kwargs):
        from orienmask_tf.families.orienmask.serving import OrienMaskAdapter

        return OrienMaskAdapter(network, image_size, anchors, decode_kwargs)

    def convert_checkpoint(self, network, state_dict, official_config=None,
                           config=None, part="auto", layout="auto",
                           skip_keys=None, source="checkpoint"):
        from orienmask_tf.families.orienmask import checkpoint

        if layout != "auto":
            raise ValueError("--layout applies to YOLACT-family checkpoints "
                             "only; OrienMask has one (official) layout")
        if part != "backbone":
            checkpoint.check_official_config(
                network, official_config, source,
                anchors=None if config is None else self.anchor_array(config))
        report = checkpoint.convert_state_dict(
            network, state_dict, part=part, skip_keys=skip_keys,
            source=source)
        report["network"] = f"OrienMask {network.variant}"
        return report

    def state_dict_from_model(self, network):
        from orienmask_tf.families.orienmask.checkpoint import \
            state_dict_from_model

        return state_dict_from_model(network)

    def describe(self, config, image_size):
        m = config.model
        anchors = self.anchor_array(config)
        text = ", ".join(f"{w:g}x{h:g}" for w, h in anchors)
        return {
            "anchors": anchors.tolist(),
            "model": (f"OrienMask variant={m.variant} classes={m.num_classes}"
                      f" anchors/scale={m.num_anchors} width={m.width} "
                      f"blocks={list(m.stackwise_num_blocks)} "
                      f"synchronized_bn={m.synchronized_bn}"),
            "input": "in [0, 1]",
            "anchor_line": (f"{text} (px, stride 8 / 16 / 32 groups of "
                            f"{m.num_anchors}); targets.assigner="
                            f"{config.targets.assigner}"),
        }

    def anchor_layout(self, config):
        """``anchors``: ``3 x model.num_anchors`` free ``[w, h]`` pairs in
        input pixels, in config order = stride 8, 16, 32 (``anchors.
        ANCHOR_MASK``), so fitted anchors sorted by area put the smallest on
        the finest grid. Recall threshold 0.5: the YOLO assignment gives
        every box its best anchor, and a box decoded from that bare prior
        overlaps the object by at least this much in shape (the AP50 IoU).
        """
        from orienmask_tf.families.orienmask.anchors import STRIDES

        anchors = self.anchor_array(config)
        return registry.AnchorLayout(
            kind="wh", strides=tuple(sorted(STRIDES)),
            anchors=tuple(map(tuple, anchors.tolist())),
            per_scale=config.model.num_anchors, threshold=0.5,
            threshold_source="the AP50 overlap of a box decoded from its "
                             "bare best anchor",
            resize="warp",
            note=(f"{len(anchors)} [w, h] anchors, {config.model.num_anchors}"
                  " per stride 8 / 16 / 32; the YOLO assignment trains each"
                  " box on its best one"))

    def with_anchors(self, data, anchors):
        """``data`` (a config's YAML dict) with ``anchors`` set to the
        fitted ``[w, h]`` pairs (``(..., 2)``, stride 8 first)."""
        import numpy as np

        pairs = np.asarray(anchors, np.float64).reshape(-1, 2).tolist()
        return dict(data, anchors=pairs)


FAMILY = registry.register(OrienMaskFamily())
