"""The one place that turns an ``Experiment`` into its parts, for either
architecture (``model.architecture``: ``orienmask`` or ``yolact``):

* ``make_network``: the plain ``OrienMask`` / ``Yolact`` (constructor kwargs
  from ``config.model_kwargs()``);
* ``make_train_encoder``: the target encoder run inside ``tf.data``
  (static shapes in and out);
* ``make_loss`` / ``make_train_model``: the loss terms and the ``fit``
  wrapper that logs each of them;
* ``inference_args``: the ``anchors`` and ``decode_kwargs`` of
  ``export.serving.InferenceModel``;
* ``load_network``: a ``.keras`` network, checked against the config.

Networks, targets, losses and decoding take plain kwargs; only this module
(with ``cli`` and ``config``) reads the experiment.
"""

import os

import keras


def network_class(config):
    """``OrienMask`` or ``Yolact``."""
    if config.is_yolact:
        from orienmask_tf.models.yolact import Yolact

        return Yolact
    from orienmask_tf.models import OrienMask

    return OrienMask


def make_network(config, image_shape=(None, None, 3)):
    """The network of ``config`` with fresh weights."""
    return network_class(config)(**config.model_kwargs(),
                                 image_shape=image_shape, name=config.name)


def load_network(path, config=None, what="--model"):
    """Load a ``.keras`` network; with ``config``, check its architecture
    and class count against it (clear errors naming ``path``)."""
    from orienmask_tf.models import OrienMask
    from orienmask_tf.models.yolact import Yolact

    if not os.path.isfile(path):
        raise ValueError(f"{what} {path}: no such file (expected a .keras "
                         "model from training or `orienmask-tf convert`: an "
                         "official checkpoint or a pretrained backbone)")
    model = keras.models.load_model(path, compile=False)
    if not isinstance(model, (OrienMask, Yolact)):
        raise ValueError(f"{what} {path}: expected an OrienMask or Yolact "
                         f"model, got {type(model).__name__}")
    if config is not None:
        expected = network_class(config)
        if not isinstance(model, expected):
            raise ValueError(
                f"{what} {path}: the file holds the {type(model).__name__} "
                f"network, but the config says "
                f"model.architecture={config.architecture}")
        if model.num_classes != config.model.num_classes:
            raise ValueError(
                f"{what} {path} has {model.num_classes} classes but the "
                f"config says model.num_classes={config.model.num_classes}")
    return model


def make_train_encoder(config):
    """The training target encoder (a callable ``gt -> targets`` run inside
    ``tf.data``): ``data.pipeline.make_encoder``, with float16 OrienMask
    orientation targets (half the memory per example at 544; the loss
    computes in float32)."""
    from orienmask_tf.data.pipeline import make_encoder

    return make_encoder(config, orien_dtype="float16")


def make_loss(config):
    """``OrienMaskLoss``, or the dict of the four YOLACT loss terms."""
    loss = config.loss
    if config.is_yolact:
        from orienmask_tf.losses import yolact_loss as yl

        common = dict(num_classes=config.model.num_classes,
                      num_anchors=config.anchors_per_location())
        return {
            "loss_cls": yl.YolactClassificationLoss(
                loss_weight=loss.cls_weight,
                neg_pos_ratio=loss.neg_pos_ratio, **common),
            "loss_bbox": yl.YolactBoxLoss(
                loss_weight=loss.box_weight, beta=loss.smooth_l1_beta,
                **common),
            "loss_mask": yl.YolactMaskLoss(
                config.image_size, loss_weight=loss.mask_weight,
                max_masks=loss.max_masks, **common),
            "loss_segm": yl.YolactSegmLoss(loss_weight=loss.segm_weight,
                                           **common),
        }
    from orienmask_tf.losses import OrienMaskLoss

    return OrienMaskLoss(
        image_size=config.image_size, anchors=config.anchor_array(),
        num_classes=config.model.num_classes,
        obj_ignore_threshold=loss.obj_ignore_threshold,
        label_smooth=loss.label_smooth, weights=loss.weights,
        scales_weight=loss.scales_weight)


def make_train_model(config, network):
    """``network`` wrapped with its loss for ``fit`` (not compiled)."""
    from orienmask_tf.training.train_model import OrienMaskTrainModel
    from orienmask_tf.training.train_model import YolactTrainModel

    cls = YolactTrainModel if config.is_yolact else OrienMaskTrainModel
    return cls(network, make_loss(config))


def inference_args(config):
    """``(anchors, decode_kwargs)`` for ``InferenceModel(model, image_size,
    anchors, decode_kwargs)``: OrienMask ``(9, 2)`` anchors and the
    ``decode_orienmask`` kwargs; YOLACT the per-level anchors and the
    ``YolactDecoder`` kwargs."""
    return config.inference_anchors(), config.decode_kwargs()
