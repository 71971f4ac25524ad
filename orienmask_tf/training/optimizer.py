"""SGD with PyTorch-style (coupled) L2 weight decay, as the paper trained.

PyTorch ``SGD(weight_decay=wd)`` adds ``wd * w`` to the gradient before the
momentum update; Keras ``SGD(weight_decay=wd)`` instead shrinks the weights
by ``lr * wd * w`` outside the momentum (decoupled). ``CoupledSGD`` is the
PyTorch rule, applied to the all-reduced gradient (so it is counted once
however many replicas there are) and to every trainable weight, as the
official ``base_sgd`` does (``model.parameters()``, BN and biases included).
Gradient clipping (``clipnorm`` / ``global_clipnorm``) happens before the
decay term is added.

The momentum is PyTorch's too: ``buf = momentum * buf + g``, ``w -= lr *
buf``. Keras' SGD folds the rate into the buffer instead (``m = momentum *
m - lr * g``, ``w += m``); the two agree while the rate is constant but not
during a warm-up or after a step of the schedule, where PyTorch applies the
new rate to the whole buffer. Measured against the official OrienMask
trainer in float64 (``tests/training/test_official_trajectory.py``, six
steps through a warm-up and a milestone): with Keras' rule the third step's
loss differed by 5e-5, with this one every item of every step by <= 2e-7.
"""

import keras


@keras.saving.register_keras_serializable(package="orienmask_tf")
class CoupledSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` plus a coupled L2 term ``l2 * w``.

    Args:
        l2: the PyTorch ``weight_decay`` (paper: 5e-4).
        **kwargs: ``keras.optimizers.SGD`` arguments (``learning_rate``,
            ``momentum``, ``nesterov``, ``global_clipnorm`` ...).
    """

    def __init__(self, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.l2:
            gradient = gradient + ops.cast(self.l2, variable.dtype) * variable
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        momentum = ops.cast(self.momentum, variable.dtype)
        buf = self.momentums[self._get_variable_index(variable)]
        # torch.optim.SGD (dampening 0): the buffer starts at 0, so the
        # first step gives buf = g as PyTorch's initialisation does.
        self.assign(buf, momentum * buf + gradient)
        step = gradient + momentum * buf if self.nesterov else buf
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config


def make_optimizer(train, schedule):
    """The optimizer of a ``TrainConfig``: SGD momentum with coupled
    (``weight_decay_mode: l2``, default, paper) or decoupled (Keras) decay;
    or AdamW (``optimizer: adamw``, decoupled decay) for short runs."""
    clip = {"global_clipnorm": train.clip_norm} if train.clip_norm > 0 else {}
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=train.weight_decay, **clip)
    if train.weight_decay_mode == "decoupled":
        return keras.optimizers.SGD(
            learning_rate=schedule, momentum=train.momentum,
            weight_decay=train.weight_decay or None, **clip)
    return CoupledSGD(l2=train.weight_decay, learning_rate=schedule,
                      momentum=train.momentum, **clip)
