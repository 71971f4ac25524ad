import numpy as np
import pytest
import keras

from orienmask_tf.layers import conv_bn_leaky
from orienmask_tf.families.orienmask.network import OrienMask
from orienmask_tf.families.orienmask.network import OUTPUT_KEYS
from tests import testing


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


@pytest.mark.large
@pytest.mark.parametrize("official_name", sorted(testing.OFFICIAL_VARIANTS))
def test_full_size_counts_and_shapes_match_official(official_name):
    listing = testing.official_model_listing(official_name)
    model = OrienMask(num_classes=80,
                      variant=testing.OFFICIAL_VARIANTS[official_name])
    assert _count(model.trainable_weights) == listing["num_parameters"]
    assert model.count_params() == listing["num_params_plus_bn_running_stats"]
    assert (_count(model.non_trainable_weights)
            == listing["num_bn_running_stat_elements"])
    convs = [l for l in _all_layers(model)
             if isinstance(l, keras.layers.Conv2D)]
    bns = [l for l in _all_layers(model)
           if isinstance(l, keras.layers.BatchNormalization)]
    assert len(convs) == listing["num_conv2d"]
    assert sum(c.use_bias for c in convs) == listing["num_conv2d_with_bias"]
    assert len(bns) == listing["num_batchnorm2d"]
    assert all(bn.epsilon == 1e-5 and bn.momentum == 0.9 for bn in bns)

    shapes = model.output_shapes(544, 544)
    for scale in listing["output_shapes_nchw"]:
        stride = int(scale["scale"][1:])
        b, c, h, w = scale["bbox"]
        assert shapes[f"box_s{stride}"] == (b, h, w, c)
        b, c, h, w = scale["orien"]
        assert shapes[f"orien_s{stride}"] == (b, h, w, c)
    # Non-square input, batch 2: every stride divides each side separately.
    shapes = model.output_shapes(320, 480, batch_size=2)
    for stride in (32, 16, 8):
        assert shapes[f"box_s{stride}"] == (2, 320 // stride, 480 // stride, 255)
        assert shapes[f"orien_s{stride}"] == (2, 80, 120, 6)


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


@pytest.mark.parametrize("variant", ["fpn_plus", "base"])
@pytest.mark.parametrize("height,width", [(64, 64), (64, 160)])
def test_tiny_forward_shapes(variant, height, width):
    model = OrienMask(variant=variant, **testing.TINY_KWARGS)
    images = testing.random_images(2, height, width)
    outputs = model(images, training=False)
    assert tuple(outputs) == OUTPUT_KEYS
    channels = 3 * (5 + testing.TINY_KWARGS["num_classes"])
    for stride in (32, 16, 8):
        assert outputs[f"box_s{stride}"].shape == (
            2, height // stride, width // stride, channels)
        assert outputs[f"orien_s{stride}"].shape == (
            2, height // 4, width // 4, 6)
    for value in outputs.values():
        assert np.all(np.isfinite(value))
    assert model.output_shapes(height, width, 2) == {
        k: tuple(v.shape) for k, v in outputs.items()}


def test_images_in_a_batch_are_independent():
    model = OrienMask(**testing.TINY_KWARGS)
    images = testing.random_images(2, 64, 96)
    both = model(images, training=False)
    second = model(images[1:], training=False)
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(both[key][1:], second[key], atol=1e-5)


def test_stride2_conv_pads_symmetrically_like_pytorch():
    # A 3x3 stride-2 conv on a 4x4 input: PyTorch pads one pixel on every side,
    # so output (0, 0) sees input rows/cols -1..1; Keras "same" would see 0..2.
    inputs = keras.Input((4, 4, 1))
    block = keras.Model(inputs, conv_bn_leaky(inputs, 1, 3, strides=2,
                                              name="probe"))
    block.get_layer("probe.conv_block.0").kernel.assign(
        np.ones((3, 3, 1, 1), np.float32))
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    y = block(x, training=False)[0, :, :, 0].numpy()
    padded = np.pad(x[0, :, :, 0], 1)
    expected = np.array([[padded[r:r + 3, c:c + 3].sum() for c in (0, 2)]
                         for r in (0, 2)])
    expected = expected / np.sqrt(1 + 1e-5)  # fresh BN: mean 0, variance 1
    np.testing.assert_allclose(y, np.where(expected > 0, expected,
                                           0.1 * expected), rtol=1e-6)


def test_keras_save_load_round_trip(tmp_path):
    model = OrienMask(variant="base", **testing.TINY_KWARGS)
    images = testing.random_images(1, 64, 96)
    path = tmp_path / "tiny.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is OrienMask
    assert restored.get_config() == model.get_config()
    before, after = model(images), restored(images)
    for key in OUTPUT_KEYS:
        np.testing.assert_array_equal(before[key], after[key])


def test_every_weight_gets_a_gradient():
    import tensorflow as tf

    model = OrienMask(**testing.TINY_KWARGS)
    images = testing.random_images(2, 64, 64)
    with tf.GradientTape() as tape:
        outputs = model(images, training=True)
        loss = sum(tf.reduce_mean(tf.square(v)) for v in outputs.values())
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [w.path for w, g in zip(model.trainable_weights, grads)
            if g is None or not np.any(g.numpy())]
    assert not dead


def test_outputs_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = OrienMask(**testing.TINY_KWARGS)
    outputs = model(testing.random_images(1, 64, 64), training=False)
    assert {keras.backend.standardize_dtype(v.dtype)
            for v in outputs.values()} == {"float32"}


def test_training_mode_updates_batchnorm_statistics():
    model = OrienMask(**testing.TINY_KWARGS)
    bn = model.backbone.get_layer("conv1.conv_block.1")
    before = bn.moving_mean.numpy().copy()
    model(testing.random_images(2, 64, 64), training=True)
    after = bn.moving_mean.numpy()
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch mean.
    assert np.all(before == 0) and np.any(after != 0)


@pytest.mark.parametrize("kwargs,message", [
    (dict(variant="fpn"), "variant"),
    (dict(image_shape=(100, 96, 3)), "multiple of 32"),
    (dict(image_shape=(64, 64, 1)), r"\(height, width, 3\)"),
    (dict(num_classes=0), "positive"),
])
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OrienMask(**{**testing.TINY_KWARGS, **kwargs})


def test_output_shapes_rejects_sizes_not_divisible_by_32():
    model = OrienMask(**testing.TINY_KWARGS)
    with pytest.raises(ValueError, match="multiple of 32"):
        model.output_shapes(544, 500)


def test_tiny_model_converts_to_tflite_with_builtin_ops(tmp_path):
    # The functional design exists for this: a static-shape signature of the
    # raw network converts with TFLite builtins only and gives the same outputs.
    # (TFLiteConverter.from_concrete_functions(..., model) keeps the weights as
    # uninitialised resource variables and the interpreter returns NaN: go
    # through a SavedModel.)
    import tensorflow as tf

    model = OrienMask(**testing.TINY_KWARGS)
    images = testing.random_images(1, 64, 96)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec((1, 64, 96, 3), tf.float32, "images")])
    archive.write_out(str(tmp_path / "saved_model"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(tmp_path / "saved_model"), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = tf.lite.Interpreter(model_content=converter.convert())
    got = interpreter.get_signature_runner("serve")(images=images)
    expected = model(images, training=False)
    assert set(got) == set(OUTPUT_KEYS)
    for key in OUTPUT_KEYS:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5,
                                   err_msg=key)
