"""BatchNorm whose training statistics do not depend on how the batch is split.

``keras.layers.BatchNormalization(synchronized=True)`` all-reduces float32
``sum(x)`` and ``sum(x**2)`` and takes the variance in one pass,
``E[x**2] - E[x]**2``. The maths is the one-device maths (in float64 one device
and 2 replicas agree to ~1e-11), but in float32 every split of the batch
rounds the partial sums differently: the statistics move by ~1e-6 at the stem
and ~3e-4 at the heads of a 50-BN network, a few LeakyReLU inputs change sign
and, through the slope (1 vs 0.1), those few elements move upstream gradients
by tens of percent. One device and N replicas then train differently.

``SplitInvariantBatchNorm`` keeps the weights of ``BatchNormalization``
(``gamma``, ``beta``, ``moving_mean``, ``moving_variance``: checkpoints
convert and load unchanged) and computes the training statistics so that
they are the same however the batch is split:

* two passes, mean then ``mean((x - mean)**2)``: the elementwise terms in
  float32 (the same on any split), their per-channel sums in float64,
  all-reduced in float64 over the replicas (with the element count) and
  rounded once to float32;
* a hand-written backward with the same property: the two per-channel sums
  of the BatchNorm gradient, ``sum(dy)`` and ``sum(dy * x_hat)``, are float64
  sums all-reduced in float64 and rounded once; everything else is
  elementwise. It is the exact gradient of the forward function (statistics
  of the global batch, biased variance as Keras), including the terms through
  the mean and the variance.

float64 sums of float32 values are exact to ~1e-16 relative whatever their
order, so the float32 statistics come out bit-identical on one device and on
N replicas except in the rare case where a sum falls on a float32 rounding
boundary (measured: the BN outputs of the tiny OrienMask identical bit for
bit on one device and on 2 replicas). What still depends on the split is
what depends on it with frozen BatchNorm: the summation order of the weight
gradients over the batch (~1e-6 relative).

Inference (``training=False``, or the layer frozen with ``trainable =
False``) is ``BatchNormalization``'s, on the moving statistics.

Moving statistics as PyTorch keeps them (``layers.batch_norm.BatchNormalization``
and ``SplitInvariantBatchNorm``): ``nn.BatchNorm2d`` normalizes with the biased
batch variance but updates ``running_var`` with the unbiased one (times
``n / (n - 1)``, ``n`` the elements per channel of the global batch); Keras'
``BatchNormalization`` updates with the biased one. Every network here is a
port of a PyTorch model, so both layers update as PyTorch does (checked
against the official OrienMask trainer: ``tests/training/
test_official_trajectory.py``).
"""

import keras
import tensorflow as tf

# ``synchronized_bn`` values of the networks and of ``model.synchronized_bn``.
SPLIT_INVARIANT = "split_invariant"
BN_MODES = (False, True, SPLIT_INVARIANT)


def check_bn_mode(synchronized_bn):
    """``synchronized_bn`` as one of ``BN_MODES``; raise ``ValueError``."""
    if synchronized_bn is False or synchronized_bn is True:
        return synchronized_bn
    if synchronized_bn == SPLIT_INVARIANT:
        return SPLIT_INVARIANT
    raise ValueError(
        "synchronized_bn must be false (per-replica statistics), true "
        "(Keras cross-replica BatchNorm) or 'split_invariant' "
        f"(SplitInvariantBatchNorm), got {synchronized_bn!r}")


def batch_normalization(name, synchronized_bn=False, momentum=0.99,
                        epsilon=1e-3):
    """The BatchNorm layer of a ``synchronized_bn`` mode:
    ``False``: ``BatchNormalization`` (statistics of each replica's batch),
    ``True``: ``BatchNormalization(synchronized=True)``,
    ``"split_invariant"``: ``SplitInvariantBatchNorm``. All three have the
    same weights."""
    mode = check_bn_mode(synchronized_bn)
    if mode == SPLIT_INVARIANT:
        return SplitInvariantBatchNorm(momentum=momentum, epsilon=epsilon,
                                       name=name)
    return BatchNormalization(momentum=momentum, epsilon=epsilon,
                              synchronized=mode, name=name)


def _all_reduce_sum(value):
    """Sum over the replicas of the current replica context (none: as is)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def unbiased_variance(variance, count):
    """PyTorch's ``running_var`` update value: the biased batch variance of
    ``count`` elements per channel times ``count / (count - 1)``."""
    count = tf.cast(count, variance.dtype)
    return variance * (count / tf.maximum(count - 1.0, 1.0))


def _update_moving_statistics(layer, mean, variance, count):
    """``moving = momentum * moving + (1 - momentum) * batch`` for the mean
    and the unbiased variance (``nn.BatchNorm2d``)."""
    for variable, value in ((layer.moving_mean, mean),
                            (layer.moving_variance,
                             unbiased_variance(variance, count))):
        value = keras.ops.cast(value, variable.dtype)
        variable.assign(keras.ops.cast(variable, value.dtype)
                        * layer.momentum + value * (1.0 - layer.momentum))


@keras.saving.register_keras_serializable(package="orienmask_tf")
class BatchNormalization(keras.layers.BatchNormalization):
    """PyTorch's BatchNorm: Keras' ``BatchNormalization`` (per-replica or,
    with ``synchronized=True``, cross-replica statistics) whose moving
    variance is updated with the unbiased batch variance, as
    ``nn.BatchNorm2d``'s ``running_var``. The output, the gradients and the
    weights are Keras'.

    It keeps Keras' class name on purpose: ``.keras`` weight files key each
    layer by its class name (``saving_lib``: ``batch_normalization_N``), so
    models saved with Keras' layer load into this one and back.
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.renorm or (
                mask is not None):
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = keras.ops.cast(inputs, compute_dtype)
        mean, variance = self._moments(x, mask)
        dims = tf.shape(x, out_type=tf.int64)
        count = tf.cast(tf.reduce_prod(tf.gather(dims, self._reduction_axes)),
                        variance.dtype)
        if self.synchronized:
            count = _all_reduce_sum(count)
        _update_moving_statistics(self, mean, variance, count)
        gamma = keras.ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = keras.ops.cast(self.beta, x.dtype) if self.center else None
        outputs = keras.ops.batch_normalization(
            x=x, mean=mean, variance=variance, axis=self.axis, offset=beta,
            scale=gamma, epsilon=self.epsilon)
        return keras.ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="orienmask_tf")
class SplitInvariantBatchNorm(keras.layers.BatchNormalization):
    """Cross-replica BatchNorm with float64-accumulated two-pass statistics
    (see the module docstring): one device and N replicas give the same
    float32 statistics and gradients on the same global batch.

    Accepts ``BatchNormalization``'s arguments except ``renorm`` (and
    ``synchronized``, which is always on: the statistics are those of the
    global batch under a ``tf.distribute`` strategy). Masks are not
    supported in training.
    """

    def __init__(self, **kwargs):
        kwargs.pop("synchronized", None)
        if kwargs.get("renorm"):
            raise ValueError("SplitInvariantBatchNorm does not support renorm")
        super().__init__(synchronized=False, **kwargs)
        # Reported as synchronized; the parent's one-pass sync moments are
        # never used (call() below computes the training statistics).
        self.synchronized = True

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):
            return super().call(inputs, training=training, mask=mask)
        if mask is not None:
            raise ValueError("SplitInvariantBatchNorm: masks are not "
                             "supported in training")
        dtype = tf.float64 if inputs.dtype == tf.float64 else tf.float32
        x = tf.cast(inputs, dtype)
        channels = x.shape[self.axis]
        gamma = (keras.ops.cast(self.gamma, dtype) if self.scale
                 else tf.ones([channels], dtype))
        beta = (keras.ops.cast(self.beta, dtype) if self.center
                else tf.zeros([channels], dtype))
        outputs, mean, variance, count = _split_invariant_batch_norm(
            x, gamma, beta, self._reduction_axes, self.axis, self.epsilon)
        _update_moving_statistics(self, mean, variance, count)
        return tf.cast(outputs, self.compute_dtype)


def _split_invariant_batch_norm(x, gamma, beta, axes, axis, epsilon):
    """``(y, mean, variance, count)`` of a training BatchNorm on the global
    batch (``count``: elements per channel, float64).

    ``mean`` / ``variance`` (per channel, dtype of ``x``) carry no gradient;
    the gradient of ``y`` with respect to ``x`` includes the paths through
    them.
    """
    dtype = x.dtype
    ndim = x.shape.rank
    channels = x.shape[axis]
    shape = [1] * ndim
    shape[axis] = channels  # per-channel values, broadcastable against x
    dims = tf.shape(x, out_type=tf.int64)
    count = tf.cast(tf.reduce_prod(tf.gather(dims, axes)), tf.float64)

    def reduce64(value):
        """Per-channel float64 sum of ``value`` over ``axes``, flattened."""
        return tf.reshape(tf.reduce_sum(tf.cast(value, tf.float64), axes),
                          [channels])

    # Pass 1: the mean (float64 sums and count, all-reduced together).
    totals = _all_reduce_sum(tf.concat(
        [reduce64(tf.stop_gradient(x)), count[None]], 0))
    total_count = totals[channels]
    mean = tf.cast(tf.math.divide_no_nan(totals[:channels], total_count),
                   dtype)
    mean_b = tf.reshape(mean, shape)
    # Pass 2: the variance around the mean that normalizes. (x - mean)**2 is
    # elementwise, so the same on any split; only the sum needs float64.
    squares = _all_reduce_sum(
        reduce64(tf.square(tf.stop_gradient(x) - mean_b)))
    variance = tf.cast(tf.math.divide_no_nan(squares, total_count), dtype)
    inv = tf.math.rsqrt(tf.reshape(variance, shape)
                        + tf.constant(epsilon, dtype))

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        x_hat = (x - mean_b) * inv
        y = x_hat * tf.reshape(gamma, shape) + tf.reshape(beta, shape)

        def grad(dy):
            dy = tf.cast(dy, dtype)
            local_dbeta = reduce64(dy)
            local_dgamma = reduce64(dy * x_hat)
            sums = _all_reduce_sum(tf.concat([local_dbeta, local_dgamma], 0))
            means = tf.cast(tf.math.divide_no_nan(sums, total_count), dtype)
            mean_dy = tf.reshape(means[:channels], shape)
            mean_dy_xhat = tf.reshape(means[channels:], shape)
            dx = (tf.reshape(gamma, shape) * inv) * (
                dy - mean_dy - x_hat * mean_dy_xhat)
            return (dx, tf.cast(local_dgamma, dtype),
                    tf.cast(local_dbeta, dtype))

        return y, grad

    return normalize(x, gamma, beta), mean, variance, total_count
