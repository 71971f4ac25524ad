"""Training: ``train(config)`` (``model.fit`` under a tf.distribute strategy,
OrienMask or YOLACT; parts built by ``builders``),
schedules, the coupled-L2 SGD, callbacks and COCO evaluation of a network."""

from orienmask_tf.training.fit import TrainingError
from orienmask_tf.training.fit import train
from orienmask_tf.training.optimizer import CoupledSGD
from orienmask_tf.training.schedules import WarmupCosineDecay
from orienmask_tf.training.schedules import WarmupStepDecay
from orienmask_tf.training.train_model import OrienMaskTrainModel
from orienmask_tf.training.train_model import YolactTrainModel

__all__ = ["CoupledSGD", "OrienMaskTrainModel", "TrainingError",
           "WarmupCosineDecay", "WarmupStepDecay", "YolactTrainModel",
           "train"]
