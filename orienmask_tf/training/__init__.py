"""Training: ``train(config)`` (``model.fit`` under a tf.distribute strategy,
for any model family; the family supplies network, targets and loss),
schedules, the coupled-L2 SGD and callbacks."""

from orienmask_tf.training.fit import TrainingError
from orienmask_tf.training.fit import train
from orienmask_tf.training.optimizer import CoupledSGD
from orienmask_tf.training.schedules import WarmupCosineDecay
from orienmask_tf.training.schedules import WarmupStepDecay
from orienmask_tf.training.train_model import TrainModel

__all__ = ["CoupledSGD", "TrainModel", "TrainingError", "WarmupCosineDecay",
           "WarmupStepDecay", "train"]
