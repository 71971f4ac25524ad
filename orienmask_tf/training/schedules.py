"""Learning-rate schedules of the paper (Sec. 4): linear warm-up, then steps or cosine.

Official ``step_lr_warmup_coco_e100`` (mmdet-style linear warm-up): during
the first ``warmup_iters`` iterations the rate rises linearly from
``warmup_ratio * lr`` to ``lr``; afterwards it is multiplied by ``gamma``
at each milestone (iterations). ``WarmupCosineDecay`` replaces the steps by
a cosine from ``lr`` to ``min_lr_ratio * lr`` at ``total_iters``; with
``steps_per_epoch`` it is mmcv's ``CosineAnnealingLrUpdaterHook(by_epoch=True)``
that maYOLACT trains with (maIoU paper Sec. 4.2, Table 4 "+ cosine
annealing"): ``lr(e) = min + (lr - min) * (1 + cos(pi * e / epochs)) / 2``
for epoch ``e``, constant within an epoch, times the linear warm-up factor
of the first ``warmup_iters`` iterations.
"""

import math

import keras
from keras import ops


def _warmup_factor(step, warmup_iters, warmup_ratio):
    if warmup_iters <= 0:
        return ops.ones_like(step)
    progress = ops.minimum(step / float(warmup_iters), 1.0)
    return 1.0 - (1.0 - progress) * (1.0 - warmup_ratio)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class WarmupStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then ``lr * gamma ** (milestones passed)``.

    Args:
        learning_rate: base rate (paper: 1e-3 at batch 16).
        milestones: iterations at which the rate is multiplied by ``gamma``.
        gamma: decay factor (0.1).
        warmup_iters: length of the linear warm-up (1000).
        warmup_ratio: start of the warm-up as a fraction of the rate (0.1).
    """

    def __init__(self, learning_rate, milestones=(), gamma=0.1,
                 warmup_iters=0, warmup_ratio=0.1):
        self.learning_rate = float(learning_rate)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        passed = ops.zeros_like(step)
        for milestone in self.milestones:
            passed = passed + ops.cast(step >= milestone, "float32")
        decay = ops.power(self.gamma, passed)
        return (self.learning_rate * decay
                * _warmup_factor(step, self.warmup_iters, self.warmup_ratio))

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup_iters": self.warmup_iters,
                "warmup_ratio": self.warmup_ratio}


@keras.saving.register_keras_serializable(package="orienmask_tf")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then a cosine from ``lr`` to ``min_lr_ratio * lr``
    reached at ``total_iters`` (held afterwards).

    With ``steps_per_epoch > 0`` the cosine moves once per epoch, over the
    epochs ``total_iters / steps_per_epoch``, from epoch 0 (mmcv
    ``by_epoch=True``; the warm-up factor multiplies it), as maYOLACT's
    ``lr_config = dict(policy='CosineAnealing', warmup='linear', ...)``.
    """

    def __init__(self, learning_rate, total_iters, min_lr_ratio=0.0,
                 warmup_iters=0, warmup_ratio=0.1, steps_per_epoch=0):
        self.learning_rate = float(learning_rate)
        self.total_iters = int(total_iters)
        self.min_lr_ratio = float(min_lr_ratio)
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.steps_per_epoch > 0:
            epochs = max(self.total_iters // self.steps_per_epoch, 1)
            epoch = ops.floor(step / float(self.steps_per_epoch))
            progress = ops.clip(epoch / float(epochs), 0.0, 1.0)
        else:
            span = max(self.total_iters - self.warmup_iters, 1)
            progress = ops.clip((step - self.warmup_iters) / float(span),
                                0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine
        return (self.learning_rate * factor
                * _warmup_factor(step, self.warmup_iters, self.warmup_ratio))

    def get_config(self):
        return {"learning_rate": self.learning_rate,
                "total_iters": self.total_iters,
                "min_lr_ratio": self.min_lr_ratio,
                "warmup_iters": self.warmup_iters,
                "warmup_ratio": self.warmup_ratio,
                "steps_per_epoch": self.steps_per_epoch}


def make_schedule(train, steps_per_epoch):
    """The schedule of a ``TrainConfig`` (``schedule``: step, cosine (per
    iteration, after the warm-up) or cosine_epoch (mmcv by-epoch cosine);
    ``milestones`` in iterations or, with ``milestones_unit: epochs``, in
    epochs of ``steps_per_epoch`` as the mmdet YOLACT configs give them)."""
    common = dict(warmup_iters=train.warmup_iters,
                  warmup_ratio=train.warmup_ratio)
    if train.schedule in ("cosine", "cosine_epoch"):
        by_epoch = train.schedule == "cosine_epoch"
        return WarmupCosineDecay(train.learning_rate,
                                 total_iters=train.epochs * steps_per_epoch,
                                 min_lr_ratio=train.min_lr_ratio,
                                 steps_per_epoch=(steps_per_epoch if by_epoch
                                                  else 0), **common)
    milestones = train.milestones
    if train.milestones_unit == "epochs":
        milestones = [m * steps_per_epoch for m in milestones]
    return WarmupStepDecay(train.learning_rate, milestones, train.gamma,
                           **common)
