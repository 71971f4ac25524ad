"""Training losses (keras.losses.Loss subclasses)."""

from orienmask_tf.losses.orienmask_loss import LOSS_ITEM_NAMES
from orienmask_tf.losses.orienmask_loss import OrienMaskLoss
from orienmask_tf.losses.orienmask_loss import OrientationLoss
from orienmask_tf.losses.orienmask_loss import YoloDetectionLoss

__all__ = ["LOSS_ITEM_NAMES", "OrienMaskLoss", "OrientationLoss",
           "YoloDetectionLoss"]
