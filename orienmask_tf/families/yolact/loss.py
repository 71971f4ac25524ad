"""YOLACT training losses (mmdet maIoU fork: ``YOLACTHead.loss`` with OHEM,
``YOLACTProtonet.loss``, ``YOLACTSegmHead.loss``).

Four ``keras.losses.Loss`` terms; ``y_true`` is the batched
:class:`orienmask_tf.families.yolact.encoder.YolactTargetEncoder` output and
``y_pred`` the ``Yolact`` output dict. Each returns the batch total, already
normalised as mmdet does, so their sum is mmdet's total loss:

* ``YolactClassificationLoss``: softmax cross-entropy with OHEM. Per image,
  every positive plus the ``neg_pos_ratio * num_pos`` negatives with the
  largest loss (all negatives when the image has no positive); anchors the
  assigner ignores are background with weight 0 (their loss is 0, as in
  mmdet). Divided by ``sum_i max(num_pos_i, 1)``.
* ``YolactBoxLoss``: smooth-L1 (beta 1) on the DeltaXYWH targets of the
  positives, same normaliser, weight 1.5.
* ``YolactMaskLoss``: per positive (a random subset of at most
  ``max_masks`` per image, drawn statelessly from ``(seed, step)``: the
  same optimizer step draws the same subset, so a resumed run repeats an
  uninterrupted one), ``sigmoid(protos @ coeff)`` cropped to the
  matched GT box (padding 1), BCE against the resized GT mask, mean over
  pixels, divided by the GT box area relative to the image, summed, times
  ``loss_weight`` (8 for the ATSS configs, 6.125 for fixed IoU), divided
  by the total number of masks used (at least 1).
* ``YolactSegmLoss``: sigmoid BCE of the P3 semantic logits, summed over
  the images with at least one instance and divided by ``B * Hs * Ws``
  (every image of the batch counts in the normaliser). An image without
  instances contributes 0, as mmdet's ``YOLACTSegmHead.loss`` (its
  ``get_targets`` returns None and the loss is taken with zero weights;
  unit test ``test_yolact_head_loss``), not the BCE of its logits against
  all-zero targets.

Normalisers are per replica (like the per-GPU mmdet losses). BCE on
probabilities clamps the logs at -100 as torch ``binary_cross_entropy``.
"""

import keras
import tensorflow as tf

from orienmask_tf.families.yolact.ops import crop_masks
from orienmask_tf.families.yolact.ops import flatten_level
from orienmask_tf.ops.losses import smooth_l1

NUM_LEVELS = 5


def concat_levels(y_pred, prefix, num_anchors):
    """Per-level NHWC maps -> ``(B, N, K)`` rows ``(level, y, x, a)``."""
    return tf.concat([flatten_level(tf.cast(y_pred[f"{prefix}_l{i}"],
                                            tf.float32), num_anchors)
                      for i in range(NUM_LEVELS)], axis=1)


def _positive_normaliser(positive):
    num_pos = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)
    return tf.reduce_sum(tf.maximum(num_pos, 1.0))


def _safe_log(p):
    """``max(log p, -100)`` with a finite gradient at ``p = 0``."""
    positive = p > 0.0
    return tf.where(positive, tf.maximum(
        tf.math.log(tf.where(positive, p, 1.0)), -100.0), -100.0)


def bce_probabilities(p, target):
    """torch ``F.binary_cross_entropy(p, target, reduction='none')``."""
    return -(target * _safe_log(p) + (1.0 - target) * _safe_log(1.0 - p))


class _YolactLoss(keras.losses.Loss):
    def __init__(self, num_classes=80, num_anchors=1, loss_weight=1.0,
                 name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = int(num_classes)
        self.num_anchors = int(num_anchors)
        self.loss_weight = float(loss_weight)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes,
                       "num_anchors": self.num_anchors,
                       "loss_weight": self.loss_weight})
        return config

    def positives(self, y_true):
        return tf.cast(y_true["labels"], tf.int32) < self.num_classes


@keras.saving.register_keras_serializable(package="orienmask_tf")
class YolactClassificationLoss(_YolactLoss):
    """OHEM softmax cross-entropy (``neg_pos_ratio`` negatives per positive)."""

    def __init__(self, num_classes=80, num_anchors=1, loss_weight=1.0,
                 neg_pos_ratio=3, name="loss_cls", **kwargs):
        super().__init__(num_classes, num_anchors, loss_weight, name=name,
                         **kwargs)
        self.neg_pos_ratio = int(neg_pos_ratio)

    def get_config(self):
        config = super().get_config()
        config["neg_pos_ratio"] = self.neg_pos_ratio
        return config

    def per_anchor(self, y_true, y_pred):
        logits = concat_levels(y_pred, "cls_score", self.num_anchors)
        labels = tf.cast(y_true["labels"], tf.int32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return ce * tf.cast(y_true["label_weights"], tf.float32)

    def call(self, y_true, y_pred):
        loss = self.per_anchor(y_true, y_pred)                      # (B, N)
        labels = tf.cast(y_true["labels"], tf.int32)
        positive = labels < self.num_classes
        negative = tf.equal(labels, self.num_classes)
        num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
        num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)
        num_hard = tf.where(num_pos > 0,
                            tf.minimum(self.neg_pos_ratio * num_pos, num_neg),
                            num_neg)
        neg_loss = tf.where(negative, loss, -1.0)
        ranked, _ = tf.math.top_k(neg_loss, k=neg_loss.shape[1], sorted=True)
        rank = tf.range(neg_loss.shape[1])[None, :]
        hard = tf.reduce_sum(
            tf.where(rank < num_hard[:, None], tf.maximum(ranked, 0.0), 0.0))
        pos = tf.reduce_sum(tf.where(positive, loss, 0.0))
        return self.loss_weight * (pos + hard) / _positive_normaliser(positive)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class YolactBoxLoss(_YolactLoss):
    """Smooth-L1 (``beta``) on the positives' normalised deltas (weight 1.5)."""

    def __init__(self, num_classes=80, num_anchors=1, loss_weight=1.5,
                 beta=1.0, name="loss_bbox", **kwargs):
        super().__init__(num_classes, num_anchors, loss_weight, name=name,
                         **kwargs)
        self.beta = float(beta)

    def get_config(self):
        config = super().get_config()
        config["beta"] = self.beta
        return config

    def call(self, y_true, y_pred):
        deltas = concat_levels(y_pred, "bbox_pred", self.num_anchors)
        positive = self.positives(y_true)
        smooth = smooth_l1(
            deltas - tf.cast(y_true["box_targets"], tf.float32), self.beta)
        total = tf.reduce_sum(tf.where(positive[..., None], smooth, 0.0))
        return self.loss_weight * total / _positive_normaliser(positive)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class YolactMaskLoss(_YolactLoss):
    """Linear-combination mask BCE on GT-cropped prototypes.

    Args:
        image_size: ``(H, W)`` of the network input (crop and re-weighting).
        max_masks: masks per image at most (a random subset beyond).
        loss_weight: 8 (ATSS configs) or 6.125 (fixed-IoU baseline).
        seed: seed of the subset selection (None: 0).

    ``call(y_true, y_pred, step=None)``: ``step`` (the optimizer step,
    ``training.TrainModel`` passes it; None: 0) and ``seed`` seed a
    stateless draw (``tf.random.stateless_uniform``), so the subset depends
    on nothing but the step and the data -- not on how many draws the
    process made before, which a killed-and-resumed run would not repeat.
    Every replica of a step draws the same keys for its own images.
    """

    def __init__(self, image_size, num_classes=80, num_anchors=1,
                 loss_weight=8.0, max_masks=100, seed=None, name="loss_mask",
                 **kwargs):
        super().__init__(num_classes, num_anchors, loss_weight, name=name,
                         **kwargs)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.max_masks = int(max_masks)
        self.seed = seed

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": list(self.image_size),
                       "max_masks": self.max_masks, "seed": self.seed})
        return config

    def select(self, positive, step=None):
        """Indices ``(B, M)`` of at most ``max_masks`` positives + validity
        (a uniform random subset, the same for the same ``step``)."""
        num = positive.shape[1]
        k = min(self.max_masks, num)
        seed = tf.stack([
            tf.constant(self.seed or 0, tf.int64),
            tf.cast(0 if step is None else step, tf.int64)])
        keys = tf.random.stateless_uniform(tf.shape(positive), seed, 1.0, 2.0)
        keys = tf.where(positive, keys, 0.0)
        best, index = tf.math.top_k(keys, k=k, sorted=False)
        return index, best > 0.0

    def call(self, y_true, y_pred, step=None):
        protos = tf.cast(y_pred["protos"], tf.float32)          # (B,Hp,Wp,P)
        coeffs = concat_levels(y_pred, "coeff_pred", self.num_anchors)
        matched = tf.cast(y_true["matched_gt"], tf.int32)
        positive = matched >= 0
        index, valid = self.select(positive, step)
        coeff = tf.gather(coeffs, index, batch_dims=1)            # (B,M,P)
        gt_index = tf.maximum(tf.gather(matched, index, batch_dims=1), 0)
        gt_boxes = tf.gather(tf.cast(y_true["gt_boxes"], tf.float32),
                             gt_index, batch_dims=1)              # (B,M,4)
        targets = tf.gather(tf.cast(y_true["mask_targets"], tf.float32),
                            gt_index, batch_dims=1)               # (B,M,h,w)
        height, width = self.image_size
        scale = tf.constant([width, height, width, height], tf.float32)
        rel = gt_boxes / scale
        pred = tf.sigmoid(tf.einsum("bhwp,bmp->bhwm", protos, coeff))
        pred = tf.clip_by_value(crop_masks(pred, rel), 0.0, 1.0)
        pred = tf.transpose(pred, (0, 3, 1, 2))                   # (B,M,h,w)
        bce = tf.reduce_mean(bce_probabilities(pred, targets), axis=(2, 3))
        area = (rel[..., 2] - rel[..., 0]) * (rel[..., 3] - rel[..., 1])
        # Unused slots may point at a zero padding box (an image without
        # instances): keep 0 / 0 out of the graph, whose gradient through
        # tf.where would be NaN.
        area = tf.where(valid, area, 1.0)
        per_mask = self.loss_weight * bce / area
        total = tf.reduce_sum(tf.where(valid, per_mask, 0.0))
        count = tf.reduce_sum(tf.cast(valid, tf.float32))
        return total / tf.maximum(count, 1.0)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class YolactSegmLoss(_YolactLoss):
    """Sigmoid BCE of the semantic logits, ``/ (B * Hs * Ws)``.

    mmdet ``YOLACTSegmHead.loss``: per image, the BCE summed over classes
    and pixels with ``avg_factor = num_imgs * mask_h * mask_w``, and 0 for
    an image without ground truth (``gt_masks.size(0) == 0``); the per-image
    terms are summed. Whether an image has instances comes from
    ``y_true["num_gts"]`` (the encoder's count); without that key every
    image counts as having instances.
    """

    def __init__(self, num_classes=80, num_anchors=1, loss_weight=1.0,
                 name="loss_segm", **kwargs):
        super().__init__(num_classes, num_anchors, loss_weight, name=name,
                         **kwargs)

    def call(self, y_true, y_pred):
        logits = tf.cast(y_pred["segm"], tf.float32)
        targets = tf.cast(y_true["segm_targets"], tf.float32)
        bce = tf.nn.sigmoid_cross_entropy_with_logits(targets, logits)
        if "num_gts" in y_true:
            has_gt = tf.cast(y_true["num_gts"], tf.float32) > 0
            bce = tf.where(has_gt[:, None, None, None], bce, 0.0)
        shape = tf.shape(logits)
        denom = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        return self.loss_weight * tf.reduce_sum(bce) / denom


def yolact_losses(image_size, num_classes=80, num_anchors=1,
                  mask_loss_weight=8.0, box_loss_weight=1.5, neg_pos_ratio=3,
                  max_masks=100, seed=None):
    """The four terms of the maIoU YOLACT loss, keyed by mmdet's names."""
    return {
        "loss_cls": YolactClassificationLoss(num_classes, num_anchors,
                                             neg_pos_ratio=neg_pos_ratio),
        "loss_bbox": YolactBoxLoss(num_classes, num_anchors,
                                   loss_weight=box_loss_weight),
        "loss_mask": YolactMaskLoss(image_size, num_classes, num_anchors,
                                    loss_weight=mask_loss_weight,
                                    max_masks=max_masks, seed=seed),
        "loss_segm": YolactSegmLoss(num_classes, num_anchors),
    }


class YolactTrainingLoss:
    """The loss ``training.TrainModel`` minimises (mmdet
    ``YOLACT.forward_train``): the sum of the four terms.

    Args:
        terms: ``{"loss_cls", "loss_bbox", "loss_mask", "loss_segm"}``
            ``keras.losses.Loss`` terms of this module; ``loss["loss_cls"]``
            returns one.
    """

    item_names = ("loss_cls", "loss_bbox", "loss_mask", "loss_segm")

    def __init__(self, terms):
        if set(terms) != set(self.item_names):
            raise ValueError(f"terms must have the keys {self.item_names}, "
                             f"got {sorted(terms)}")
        if not isinstance(terms["loss_cls"], YolactClassificationLoss) or \
                not isinstance(terms["loss_segm"], YolactSegmLoss):
            raise TypeError("terms must be the yolact loss terms")
        self.terms = dict(terms)

    def __getitem__(self, name):
        return self.terms[name]

    def __iter__(self):
        return iter(self.item_names)

    def loss_items(self, y, y_pred, step=None):
        """``(items, total)``; ``step`` (the optimizer step) seeds the mask
        subset (``YolactMaskLoss``)."""
        # ``call`` directly: each term is already the normalised batch
        # total, and Loss.__call__ would cast the integer targets to float.
        items = {name: (self.terms[name].call(y, y_pred, step=step)
                        if name == "loss_mask"
                        else self.terms[name].call(y, y_pred))
                 for name in self.item_names}
        return items, tf.add_n(list(items.values()))
