"""OrienMask training loss (paper Sec. 3.3, Eq. 4-5).

Per scale, as the official ``OrienMaskYOLOLoss._get_loss``
(github.com/duwt/OrienMask ``eval/orienmask_yolo_loss.py``):

* YOLOv3 detection terms: BCE on sigmoid(tx, ty) and MSE / 2 on (tw, th),
  both weighted by the ``2 - w*h`` scale; objectness BCE on positives and on
  negatives (a negative is ignored when its decoded box has IoU >
  ``obj_ignore_threshold`` with ANY ground truth of the image); class BCE.
* Orientation terms (Eq. 5): smooth-L1 between the x4 bilinearly upsampled
  orientation maps and the targets, averaged over foreground (background)
  pixels and multiplied by the number of positive boxes of the scale.

Every item is divided by the (per-replica) batch size. The total is
``sum_s scales_weight[s] * sum_k weights[k] * scales_weight[s] * item_sk``
(the official code applies ``scales_weight`` twice). Targets come from
:class:`orienmask_tf.targets.OrienMaskTargetEncoder` batched; predictions
are the OrienMask output dict (NHWC).

BCE is written on logits, ``min(softplus(-x), 100)`` for ``-log(sigmoid(x))``:
it equals torch ``BCELoss(sigmoid(x))`` (which clamps the logs at -100)
except where float32 ``sigmoid`` saturates to 0 or 1 (``|x| > ~16.6``),
where torch gives 100 and a zero gradient and this gives ``|x|`` and
gradient +-1.
"""

import keras
import numpy as np
import tensorflow as tf

from orienmask_tf.families.orienmask import anchors as anchor_ops
from orienmask_tf.ops import box_ops
from orienmask_tf.ops.losses import smooth_l1
from orienmask_tf.ops.resize import resize_bilinear

LOSS_ITEM_NAMES = ("loss_xy", "loss_wh", "loss_obj_pos", "loss_obj_neg",
                   "loss_cls", "loss_orien_pos", "loss_orien_neg")
DETECTION_ITEMS = LOSS_ITEM_NAMES[:5]
ORIENTATION_ITEMS = LOSS_ITEM_NAMES[5:]
DEFAULT_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 20.0, 20.0)


def _bce_logits(logits, target):
    """torch ``BCELoss(sigmoid(logits), target)`` with logs clamped at -100."""
    neg_log_p = tf.minimum(tf.nn.softplus(-logits), 100.0)
    neg_log_1mp = tf.minimum(tf.nn.softplus(logits), 100.0)
    return target * neg_log_p + (1.0 - target) * neg_log_1mp


def loss_dtype(prediction):
    """The dtype the loss computes in: float64 for float64 predictions (a
    float64 run stays float64 end to end), float32 otherwise (float32,
    and float16 / bfloat16 outputs of mixed precision)."""
    return tf.float64 if prediction.dtype == tf.float64 else tf.float32


def split_box_prediction(box_pred, num_anchors):
    """``(B, gh, gw, nA*(5+C))`` -> ``(B, nA, gh, gw, 5+C)`` (target layout)."""
    shape = tf.shape(box_pred)
    per_anchor = box_pred.shape[-1] // num_anchors
    x = tf.reshape(box_pred, [shape[0], shape[1], shape[2], num_anchors,
                              per_anchor])
    return tf.transpose(x, [0, 3, 1, 2, 4])


def upsample_orientation(orien_pred, image_size, num_anchors):
    """``(B, H/4, W/4, 2nA)`` -> bilinear x4 ``(B, nA, 2, H, W)`` (the
    layout of the orientation targets): torch ``interpolate(...,
    mode='bilinear', align_corners=False)`` (``ops.resize``, as the
    decoder).
    """
    height, width = image_size
    x = resize_bilinear(orien_pred, (height, width))
    x = tf.reshape(x, [-1, height, width, num_anchors, 2])
    return tf.transpose(x, [0, 3, 4, 1, 2])


def grid_boxes(xy, twh, grid_anchors, grid_size):
    """Boxes cx, cy, w, h in grid units ``(B, nA, gh, gw, 4)`` from cell
    offsets ``xy`` and log-sizes ``twh`` ``(B, nA, gh, gw, 2)``: centre =
    cell + offset, size = ``exp(twh) * anchor`` (``grid_anchors (nA, 2)``,
    ``grid_size = (gh, gw)``)."""
    cols, rows = anchor_ops.cell_offsets(grid_size)
    cx = xy[..., 0] + tf.constant(cols, xy.dtype)
    cy = xy[..., 1] + tf.constant(rows, xy.dtype)
    wh = tf.exp(twh) * tf.constant(grid_anchors, twh.dtype)[None, :, None,
                                                            None]
    return tf.concat([tf.stack([cx, cy], -1), wh], -1)


def decode_grid_boxes(box_pred, grid_anchors):
    """Decoded boxes in grid units ``(B, nA, gh, gw, 4)`` from
    ``(B, nA, gh, gw, 5+C)`` raw predictions (gradient stopped)."""
    p = tf.stop_gradient(box_pred)
    return grid_boxes(tf.sigmoid(p[..., 0:2]), p[..., 2:4], grid_anchors,
                      (p.shape[2], p.shape[3]))


@keras.saving.register_keras_serializable(package="orienmask_tf")
class OrienMaskLoss(keras.losses.Loss):
    """Weighted sum of selected OrienMask loss items over the three scales.

    A ``keras.losses.Loss`` so that ``Loss.__call__`` scales by
    1 / replicas under ``tf.distribute`` (see ``TF_NOTES.md``). Use
    :class:`YoloDetectionLoss` and :class:`OrientationLoss` as the two terms
    of ``compute_loss``; their sum is the official total.

    Args:
        image_size: ``(height, width)`` of the network input.
        anchors: ``(9, 2)`` anchors ``[width, height]`` in input pixels.
        num_classes: number of classes.
        anchor_mask: global anchor ids per scale (stride 32, 16, 8).
        strides: stride per scale.
        obj_ignore_threshold: IoU above which a prediction is not a negative.
        label_smooth: official label smoothing ``1 / max(C, 40)`` if True.
        weights: 7 item weights in ``LOSS_ITEM_NAMES`` order (lambda = 20 for
            the orientation items).
        scales_weight: weight per scale (applied twice, as officially).
        items: names of the items this loss sums.

    ``y_true``: batched encoder output; ``y_pred``: model output dict with
    ``box_s32`` ``(B, H/32, W/32, nA*(5+C))`` and ``orien_s32``
    ``(B, H/4, W/4, 2nA)`` etc.
    """

    default_items = LOSS_ITEM_NAMES

    def __init__(self, image_size, anchors, num_classes,
                 anchor_mask=anchor_ops.ANCHOR_MASK,
                 strides=anchor_ops.STRIDES, obj_ignore_threshold=0.7,
                 label_smooth=False, weights=DEFAULT_WEIGHTS,
                 scales_weight=(1.0, 1.0, 1.0), items=None, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.image_size = tuple(int(v) for v in image_size)
        self.anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
        self.num_classes = int(num_classes)
        self.anchor_mask = tuple(tuple(int(a) for a in m) for m in anchor_mask)
        self.strides = tuple(int(s) for s in strides)
        self.obj_ignore_threshold = float(obj_ignore_threshold)
        self.label_smooth = bool(label_smooth)
        self.weights = tuple(float(w) for w in weights)
        self.scales_weight = tuple(float(w) for w in scales_weight)
        self.items = tuple(items) if items is not None else self.default_items
        unknown = set(self.items) - set(LOSS_ITEM_NAMES)
        if unknown:
            raise ValueError(f"unknown loss items {sorted(unknown)}")
        self.num_anchors = len(self.anchor_mask[0])
        self.grid_sizes = anchor_ops.grid_sizes(self.image_size, self.strides)
        self.names = tuple(f"s{s}" for s in self.strides)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_size=self.image_size, anchors=self.anchors.tolist(),
            num_classes=self.num_classes, anchor_mask=self.anchor_mask,
            strides=self.strides,
            obj_ignore_threshold=self.obj_ignore_threshold,
            label_smooth=self.label_smooth, weights=self.weights,
            scales_weight=self.scales_weight, items=self.items)
        return config

    def grid_anchors(self, s):
        """Anchors of scale ``s`` in its grid units (official float32 math)."""
        return anchor_ops.grid_anchors(
            self.anchors[list(self.anchor_mask[s])], self.image_size,
            self.grid_sizes[s], "cell_size")

    def prediction_targets(self, y_true, box_pred, s):
        """Negative mask (ignore applied) and IoU of positives with their
        ground truth, both ``(B, nA, gh, gw)``, from raw ``(B, nA, gh, gw,
        5+C)`` predictions of scale ``s`` (the prediction-dependent part of
        the official ``build_targets``)."""
        name = self.names[s]
        gh, gw = self.grid_sizes[s]
        grid_anchors = self.grid_anchors(s)
        pred = decode_grid_boxes(box_pred, grid_anchors)
        batch = tf.shape(pred)[0]
        dt = box_pred.dtype
        gt = tf.cast(y_true["gt_boxes"], dt) * tf.constant(
            [gw, gh, gw, gh], dt)
        iou = box_ops.pairwise_iou(tf.reshape(pred, [batch, -1, 4]), gt,
                                   box_format="cxcywh")
        ignore = tf.reduce_any(iou > self.obj_ignore_threshold, axis=-1)
        ignore = tf.reshape(ignore, tf.shape(pred)[:4])
        pos = y_true[f"cls_targets_{name}"] >= 0
        neg = tf.cast(tf.logical_not(ignore | pos), dt)
        # IoU(prediction, its ground truth) at positives (metrics only).
        box_t = tf.cast(y_true[f"box_targets_{name}"], dt)
        gt_box = grid_boxes(box_t[..., 0:2], box_t[..., 2:4], grid_anchors,
                            (gh, gw))
        iou_pos = box_ops.pairwise_iou(
            pred[..., None, :], gt_box[..., None, :],
            box_format="cxcywh")[..., 0, 0]
        tiou = tf.where(pos, iou_pos, tf.zeros_like(iou_pos))
        return neg, tiou

    def scale_items(self, y_true, y_pred, s, names=LOSS_ITEM_NAMES):
        """Unweighted loss items of scale ``s`` as a dict (``names`` only)."""
        name = self.names[s]
        out = {}
        dt = loss_dtype(y_pred[f"box_{name}"])
        cls_t = tf.cast(y_true[f"cls_targets_{name}"], tf.int32)
        pos = tf.cast(cls_t >= 0, dt)
        num_pos = tf.reduce_sum(pos)
        if set(names) & set(DETECTION_ITEMS):
            box_pred = split_box_prediction(
                tf.cast(y_pred[f"box_{name}"], dt), self.num_anchors)
            batch = tf.cast(tf.shape(box_pred)[0], dt)
            box_t = tf.cast(y_true[f"box_targets_{name}"], dt)
            scale = box_t[..., 4:5]
            bce_xy = _bce_logits(box_pred[..., 0:2], box_t[..., 0:2])
            out["loss_xy"] = tf.reduce_sum(bce_xy * scale) / batch
            out["loss_wh"] = tf.reduce_sum(
                tf.square(box_pred[..., 2:4] - box_t[..., 2:4]) * scale
            ) / 2.0 / batch
            neg = tf.stop_gradient(
                self.prediction_targets(y_true, box_pred, s)[0])
            obj = _bce_logits(box_pred[..., 4], pos)
            out["loss_obj_pos"] = tf.reduce_sum(obj * pos) / batch
            out["loss_obj_neg"] = tf.reduce_sum(obj * neg) / batch
            smooth = (1.0 / max(self.num_classes, 40)
                      if self.label_smooth else 0.0)
            onehot = tf.one_hot(tf.maximum(cls_t, 0), self.num_classes,
                                dtype=dt)
            tcls = onehot * (1.0 - smooth) + (1.0 - onehot) * smooth
            out["loss_cls"] = tf.reduce_sum(
                _bce_logits(box_pred[..., 5:], tcls) * pos[..., None]) / batch
        if set(names) & set(ORIENTATION_ITEMS):
            orien = upsample_orientation(
                tf.cast(y_pred[f"orien_{name}"], dt), self.image_size,
                self.num_anchors)
            batch = tf.cast(tf.shape(orien)[0], dt)
            labels = tf.cast(y_true[f"orien_labels_{name}"], tf.int32)
            torien = tf.cast(y_true[f"orien_targets_{name}"], dt)
            per_pixel = tf.reduce_sum(smooth_l1(orien - torien), 2)
            for item, value in (("loss_orien_pos", 1), ("loss_orien_neg", -1)):
                mask = tf.cast(tf.equal(labels, value), dt)
                count = tf.reduce_sum(mask)
                total = tf.reduce_sum(per_pixel * mask)
                out[item] = tf.where(
                    count > 0,
                    total / tf.maximum(count, 1.0) * num_pos / batch,
                    tf.zeros_like(total))
        return {k: out[k] for k in names}

    def loss_items(self, y_true, y_pred):
        """All unweighted items per scale, weighted sums and the total:
        ``{"s32": {"loss_xy": ..}, "loss_sum_s32": .., "loss_total": ..}``."""
        result, total = {}, 0.0
        for s, name in enumerate(self.names):
            items = self.scale_items(y_true, y_pred, s)
            result[name] = items
            ssum = tf.add_n([items[k] * w * self.scales_weight[s]
                             for k, w in zip(LOSS_ITEM_NAMES, self.weights)])
            result[f"loss_sum_{name}"] = ssum
            total = total + self.scales_weight[s] * ssum
        result["loss_total"] = total
        return result

    def call(self, y_true, y_pred):
        total = 0.0
        for s in range(len(self.strides)):
            items = self.scale_items(y_true, y_pred, s, self.items)
            for k, value in items.items():
                weight = self.weights[LOSS_ITEM_NAMES.index(k)]
                total = total + value * (weight * self.scales_weight[s] ** 2)
        return total


@keras.saving.register_keras_serializable(package="orienmask_tf")
class YoloDetectionLoss(OrienMaskLoss):
    """YOLOv3 box, objectness and class items of :class:`OrienMaskLoss`."""

    default_items = DETECTION_ITEMS


@keras.saving.register_keras_serializable(package="orienmask_tf")
class OrientationLoss(OrienMaskLoss):
    """Orientation items (paper Eq. 5, lambda 20) of :class:`OrienMaskLoss`."""

    default_items = ORIENTATION_ITEMS


class OrienMaskTrainingLoss:
    """The loss ``training.TrainModel`` minimises (paper Sec. 3.3, Eq. 4-5).

    Args:
        loss: an ``OrienMaskLoss`` (all seven items).

    ``loss_items(y, y_pred)`` returns each item summed over the three
    scales (what is logged) and the total, means over the per-replica batch.
    """

    item_names = LOSS_ITEM_NAMES

    def __init__(self, loss):
        if not isinstance(loss, OrienMaskLoss):
            raise TypeError(f"loss must be an OrienMaskLoss, got {loss!r}")
        self.loss = loss

    def loss_items(self, y, y_pred):
        items = self.loss.loss_items(y, y_pred)
        logged = {name: tf.add_n([items[s][name] for s in self.loss.names])
                  for name in self.item_names}
        return logged, items["loss_total"]
