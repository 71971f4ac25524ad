"""``SplitInvariantBatchNorm`` on one device: the function and gradient of
``BatchNormalization``, its weights, saving, and the ``synchronized_bn``
modes of the networks and configs. One device vs N replicas:
tests/training/test_batch_norm_parity.py."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.config import ConfigError
from orienmask_tf.config import load_config
from orienmask_tf.layers.batch_norm import SplitInvariantBatchNorm
from orienmask_tf.layers.batch_norm import BatchNormalization as TorchBatchNorm
from orienmask_tf.layers.batch_norm import batch_normalization
from orienmask_tf.layers.batch_norm import check_bn_mode
from tests.testing import CONFIGS_DIR

SHAPE = (4, 6, 5, 3)


def _pair(dtype="float32", reference=TorchBatchNorm):
    """A SplitInvariantBatchNorm and a ``reference`` BatchNorm with the same
    (random) gamma / beta / moving statistics."""
    rng = np.random.default_rng(1)
    layers = [SplitInvariantBatchNorm(momentum=0.9, epsilon=1e-5,
                                      dtype=dtype),
              reference(momentum=0.9, epsilon=1e-5, dtype=dtype)]
    weights = [rng.uniform(0.5, 1.5, 3), rng.normal(size=3),
               rng.normal(size=3), rng.uniform(0.5, 2, 3)]
    for layer in layers:
        layer.build(SHAPE)
        layer.set_weights([w.astype(dtype) for w in weights])
    return layers


def _inputs(dtype="float32", offset=3.0, scale=2.0):
    rng = np.random.default_rng(2)
    return (offset + scale * rng.normal(size=SHAPE)).astype(dtype)


def _grads(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * upstream)
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])


def test_weights_are_batch_normalization_weights():
    ours, keras_bn = _pair(reference=keras.layers.BatchNormalization)
    assert isinstance(ours, keras.layers.BatchNormalization)
    assert ([(w.name, w.shape, w.trainable) for w in ours.weights]
            == [(w.name, w.shape, w.trainable) for w in keras_bn.weights])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_forward_gradient_and_moving_stats(dtype):
    """The same function and gradient as ``BatchNormalization``: to
    float64 rounding in float64 (the backward is the exact gradient), to
    float32 rounding in float32."""
    ours, keras_bn = _pair(dtype)
    x = _inputs(dtype)
    upstream = np.random.default_rng(3).normal(size=SHAPE).astype(dtype)
    rtol = 1e-10 if dtype == "float64" else 2e-5
    for a, b in zip(_grads(ours, x, upstream), _grads(keras_bn, x, upstream)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    for a, b in zip(ours.get_weights(), keras_bn.get_weights()):
        np.testing.assert_allclose(a, b, rtol=rtol)


def test_statistics_are_two_pass():
    """A large offset: Keras' one-pass sync variance E[x^2] - E[x]^2 loses
    the variance in float32; the two-pass float64 one does not."""
    x = _inputs("float32", offset=1000.0, scale=0.1)
    layer = SplitInvariantBatchNorm(momentum=0.0, epsilon=1e-5)
    layer(x, training=True)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               x64.mean(axis=(0, 1, 2)), rtol=1e-7)
    # nn.BatchNorm2d's running_var: the unbiased variance
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               x64.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_batch_norm_is_keras_batch_norm_with_torch_running_var(dtype):
    """``TorchBatchNorm``: output and gradients of ``BatchNormalization``;
    moving mean as Keras, moving variance ``m * v + (1 - m) * var * n / (n
    - 1)`` as ``nn.BatchNorm2d``'s ``running_var``."""
    keras_bn = _pair(dtype, keras.layers.BatchNormalization)[1]
    torch_bn = _pair(dtype)[1]
    x = _inputs(dtype)
    upstream = np.random.default_rng(3).normal(size=SHAPE).astype(dtype)
    before = torch_bn.get_weights()
    for a, b in zip(_grads(torch_bn, x, upstream),
                    _grads(keras_bn, x, upstream)):
        np.testing.assert_array_equal(a, b)
    gamma, beta, mean, var = torch_bn.get_weights()
    np.testing.assert_array_equal([gamma, beta, mean],
                                  keras_bn.get_weights()[:3])
    x64 = x.astype(np.float64)
    expected = 0.9 * before[3] + 0.1 * x64.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(var, expected,
                               rtol=1e-12 if dtype == "float64" else 1e-6)


def test_inference_and_frozen_use_moving_statistics():
    ours, keras_bn = _pair(reference=keras.layers.BatchNormalization)
    x = _inputs()
    np.testing.assert_array_equal(ours(x, training=False),
                                  keras_bn(x, training=False))
    ours.trainable = False
    before = ours.get_weights()
    np.testing.assert_array_equal(ours(x, training=True),
                                  keras_bn(x, training=False))
    for a, b in zip(before, ours.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_and_xla():
    x = _inputs()
    layer = SplitInvariantBatchNorm(dtype="mixed_float16")
    y = layer(tf.cast(x, tf.float16), training=True)
    assert y.dtype == tf.float16
    assert layer.moving_mean.dtype == "float32"

    layer = SplitInvariantBatchNorm()
    layer.build(SHAPE)

    @tf.function(jit_compile=True)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return tape.gradient(loss, [x, layer.gamma])

    grads = step(tf.constant(x))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_serialization_round_trip(tmp_path):
    layer = SplitInvariantBatchNorm(momentum=0.9, epsilon=1e-5, name="bn")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is SplitInvariantBatchNorm
    assert clone.get_config() == layer.get_config()
    inputs = keras.Input((6, 5, 3))
    model = keras.Model(inputs, layer(inputs))
    model.layers[-1].set_weights(_pair()[0].get_weights())
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is SplitInvariantBatchNorm
    x = _inputs()
    np.testing.assert_array_equal(loaded(x), model(x))


def test_modes():
    plain = batch_normalization("a", False)
    assert type(plain) is TorchBatchNorm and not plain.synchronized
    sync = batch_normalization("b", True)
    assert type(sync) is TorchBatchNorm and sync.synchronized
    assert type(batch_normalization("c", "split_invariant")) is (
        SplitInvariantBatchNorm)
    with pytest.raises(ValueError, match="split_invariant"):
        check_bn_mode("sync")
    with pytest.raises(ValueError):
        check_bn_mode(1)


@pytest.mark.parametrize("config_name", ["tiny.yaml", "yolact_tiny.yaml"])
def test_networks_and_configs_take_the_mode(config_name, tmp_path):
    """``model.synchronized_bn: split_invariant`` gives every BatchNorm of
    the network the split-invariant statistics and the same weights (names,
    shapes: converted checkpoints load unchanged); the .keras file keeps
    the mode."""
    def build(mode):
        config = load_config(CONFIGS_DIR / config_name,
                             [f"model.synchronized_bn={mode}"])
        assert config.model.synchronized_bn == (
            mode if mode == "split_invariant" else mode == "true")
        return config.family.build_network(config)

    plain, split = build("false"), build("split_invariant")
    kinds = {type(layer) for layer in split._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {SplitInvariantBatchNorm}
    assert ([(w.path, w.shape) for w in plain.weights]
            == [(w.path, w.shape) for w in split.weights])
    split.set_weights(plain.get_weights())
    split.save(tmp_path / "split.keras")
    loaded = keras.models.load_model(tmp_path / "split.keras")
    assert loaded.synchronized_bn == "split_invariant"
    assert any(isinstance(layer, SplitInvariantBatchNorm)
               for layer in loaded._flatten_layers())
    with pytest.raises(ConfigError,
                       match=r"model.synchronized_bn: expected true, false "
                             r"or 'split_invariant', got 'sync'"):
        load_config(CONFIGS_DIR / config_name, ["model.synchronized_bn=sync"])


def test_models_saved_with_keras_batch_norm_still_load(tmp_path):
    """``.keras`` weight files key layers by class name: a network saved
    when its BatchNorm was Keras' own layer loads with the PyTorch-style
    one, weights and outputs unchanged."""
    from orienmask_tf.families.orienmask.network import OrienMask
    from tests.testing import TINY_KWARGS

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 1, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    old = keras.Model(inputs, x)
    old.layers[-1].set_weights([np.full(3, v, np.float32)
                                for v in (2.0, 0.5, 0.1, 3.0)])
    weights = tmp_path / "old.weights.h5"
    old.save_weights(weights)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(3, 1, name="conv")(inputs)
    x = batch_normalization("bn")(x)
    new = keras.Model(inputs, x)
    new.load_weights(weights)
    assert type(new.layers[-1]) is TorchBatchNorm
    for a, b in zip(old.get_weights(), new.get_weights()):
        np.testing.assert_array_equal(a, b)
    network = OrienMask(**TINY_KWARGS)
    path = tmp_path / "tiny.keras"
    network.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(network.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
