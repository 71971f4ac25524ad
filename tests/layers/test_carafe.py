"""CARAFE (``CARAFEPack``) against the recorded maYOLACT fixtures, and its exports.

Fixture: ``tests/fixtures/reference/mayolact/carafe_cases.npz`` (NCHW, see
that folder's README, sections 2, 5 and 10). Tolerance: per array
``max|ours - fixture| / max|fixture| <= 2e-5``.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.layers.carafe import CARAFE
from orienmask_tf.layers.carafe import carafe
from orienmask_tf.layers.carafe import normalize_kernels
from orienmask_tf.layers.carafe import pixel_shuffle
from orienmask_tf.layers.carafe import pixel_unshuffle
from tests.testing import reference_path

TOL = 2e-5
CASES = ("k0", "k1", "k2", "k3")
ARRAYS = ("compressed", "encoder_out", "masks", "out", "grad_x", "grad_masks",
          "grad_encoder_out", "grad_channel_compressor_weight",
          "grad_channel_compressor_bias", "grad_content_encoder_weight",
          "grad_content_encoder_bias")


@pytest.fixture(scope="module")
def cases():
    with np.load(reference_path("mayolact", "carafe_cases.npz")) as data:
        arrays = {name: data[name] for name in data.files}
    assert int(arrays["num_cases"]) == len(CASES)
    return arrays


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def _torch_weight(w):
    """Keras conv kernel (kh, kw, in, out) -> torch (out, in, kh, kw)."""
    return np.asarray(w).transpose(3, 2, 0, 1)


def _rel(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _layer_for(arrays, case):
    n, c, h, w, s, k, g, ke, de, cc = (int(v) for v in arrays[f"{case}_params"])
    layer = CARAFE(c, s, up_kernel=k, up_group=g, encoder_kernel=ke,
                   encoder_dilation=de, compressed_channels=cc)
    layer.build((n, h, w, c))
    for name in ("channel_compressor", "content_encoder"):
        getattr(layer, name).set_weights([
            arrays[f"{case}_{name}_weight"].transpose(2, 3, 1, 0),
            arrays[f"{case}_{name}_bias"]])
    return layer


def _run_case(layer, x, cotangent, jit):
    """Every fixture array, NCHW/torch layout, plus the fast-path results."""
    k, g, s = layer.up_kernel, layer.up_group, layer.scale_factor
    convs = (layer.channel_compressor, layer.content_encoder)
    variables = [v for conv in convs for v in (conv.kernel, conv.bias)]

    def step(x, cotangent):
        # Reference path through the public functions, exposing intermediates.
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            compressed = layer.channel_compressor(x)
            encoder_out = layer.content_encoder(compressed)
            masks = normalize_kernels(encoder_out, k, g, s)
            out = carafe(x, masks, k, g, s)
            loss = tf.reduce_sum(out * cotangent)
        grads = tape.gradient(loss, [x, masks, encoder_out, *variables])
        # The layer's own call (low-res kernels, never shuffled).
        with tf.GradientTape() as tape:
            tape.watch(x)
            fast = layer(x)
            fast_loss = tf.reduce_sum(fast * cotangent)
        fast_grads = tape.gradient(fast_loss, [x, *variables])
        return ((compressed, encoder_out, masks, out, *grads),
                (fast, *fast_grads))

    if jit:
        step = tf.function(step, jit_compile=True)
    ref, fast = step(tf.constant(x), tf.constant(cotangent))
    ref = [np.asarray(t) for t in ref]
    fast = [np.asarray(t) for t in fast]

    def to_torch(values):
        gx, gcw, gcb, gew, geb = values
        return {"grad_x": gx.transpose(0, 3, 1, 2),
                "grad_channel_compressor_weight": _torch_weight(gcw),
                "grad_channel_compressor_bias": gcb,
                "grad_content_encoder_weight": _torch_weight(gew),
                "grad_content_encoder_bias": geb}

    nchw = lambda a: a.transpose(0, 3, 1, 2)  # noqa: E731
    ours = {"compressed": nchw(ref[0]), "encoder_out": nchw(ref[1]),
            "masks": nchw(ref[2]), "out": nchw(ref[3]),
            "grad_masks": nchw(ref[5]), "grad_encoder_out": nchw(ref[6]),
            **to_torch([ref[4], *ref[7:]])}
    ours_fast = {"out": nchw(fast[0]), **to_torch(fast[1:])}
    return ours, ours_fast


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("case", CASES)
def test_matches_official_carafepack(cases, case, jit):
    layer = _layer_for(cases, case)
    ours, ours_fast = _run_case(layer, _nhwc(cases[f"{case}_x"]),
                                _nhwc(cases[f"{case}_cotangent"]), jit)
    errors = {name: _rel(ours[name], cases[f"{case}_{name}"]) for name in ARRAYS}
    errors.update({f"layer_call.{name}": _rel(value, cases[f"{case}_{name}"])
                   for name, value in ours_fast.items()})
    assert len(errors) == len(ARRAYS) + 6
    bad = {name: err for name, err in errors.items() if not err <= TOL}
    assert not bad, f"{case} ({'xla' if jit else 'eager'}): {bad}; all: {errors}"


@pytest.mark.parametrize("case", CASES)
def test_kernels_are_normalised_per_group(cases, case):
    layer = _layer_for(cases, case)
    k, g = layer.up_kernel, layer.up_group
    kernels = np.asarray(layer.kernels(_nhwc(cases[f"{case}_x"])))
    n, _, h, w = cases[f"{case}_masks"].shape
    assert kernels.shape == (n, h, w, g * k * k)
    sums = kernels.reshape(n, h, w, g, k * k).astype(np.float64).sum(-1)
    np.testing.assert_allclose(sums, 1.0, rtol=0, atol=1e-6)
    # The fixture's kernels obey the same rule, and are far from uniform.
    ref = _nhwc(cases[f"{case}_masks"]).reshape(n, h, w, g, k * k)
    np.testing.assert_allclose(ref.astype(np.float64).sum(-1), 1.0, atol=1e-6)
    assert ref.max() > 0.3


def test_scale3_pixel_shuffle_is_torch_order_not_depth_to_space(cases):
    """k3 (scale 3, 4 groups): depth_to_space would give different kernels."""
    layer = _layer_for(cases, "k3")
    logits = layer.intermediates(_nhwc(cases["k3_x"]))["encoder_out"]
    wrong = tf.nn.depth_to_space(logits, 3)
    wrong = tf.nn.softmax(tf.reshape(wrong, (1, 12, 18, 4, 25)), -1)
    assert _rel(np.reshape(wrong, (1, 12, 18, 100)),
                _nhwc(cases["k3_masks"])) > 0.1
    assert _rel(normalize_kernels(logits, 5, 4, 3), _nhwc(cases["k3_masks"])) <= TOL


def test_pixel_shuffle_layout():
    c, s, h, w = 2, 3, 2, 4
    x = np.random.RandomState(0).standard_normal((1, h, w, c * s * s)).astype(np.float32)
    expected = np.zeros((1, h * s, w * s, c), np.float32)
    for y in range(h):
        for xx in range(w):
            for ch in range(c):
                for dy in range(s):
                    for dx in range(s):
                        expected[0, y * s + dy, xx * s + dx, ch] = \
                            x[0, y, xx, ch * s * s + dy * s + dx]
    shuffled = pixel_shuffle(tf.constant(x), s)
    np.testing.assert_array_equal(shuffled, expected)
    np.testing.assert_array_equal(pixel_unshuffle(shuffled, s), x)


def _one_hot_kernels(taps, k=3):
    """(1, 4, 4, k*k) kernels, one-hot at ``taps[Y][X]``."""
    return tf.one_hot(np.array(taps), k * k)[None]


def test_reassembly_by_hand():
    # 2x2 map, k=3 (r=1), s=2: high-res (Y, X) reads low-res
    # (Y//2 + ky - 1, X//2 + kx - 1), tap t = ky*3 + kx.
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
    taps = [[8, 0, 3, 4],
            [7, 5, 6, 5],
            [1, 2, 0, 4],
            [3, 4, 8, 1]]
    # e.g. (0, 1): window centre (0, 0), tap 0 -> (-1, -1): outside, 0;
    # (1, 3): centre (0, 1), tap 5 -> (0, 2): outside, 0;
    # (3, 2): centre (1, 1), tap 8 -> (2, 2): outside, 0.
    expected = [[4, 0, 1, 2],
                [3, 2, 3, 0],
                [1, 2, 1, 4],
                [0, 3, 0, 2]]
    out = carafe(x, _one_hot_kernels(taps), kernel_size=3, group=1, scale=2)
    np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], expected)

    # Uniform kernels: every 3x3 window of a 2x2 map holds 4 real pixels, so
    # a constant map gives 4/9 everywhere (zero padding, no renormalisation).
    uniform = tf.fill((1, 4, 4, 9), 1.0 / 9.0)
    out = carafe(tf.ones((1, 2, 2, 1)), uniform, kernel_size=3, group=1, scale=2)
    np.testing.assert_allclose(out, np.full((1, 4, 4, 1), 4.0 / 9.0), rtol=1e-6)

    # Groups are contiguous channel blocks: C=4, G=2 -> channels 0,1 use
    # group 0 (the centre tap: nearest upsampling), 2,3 group 1 (``taps``).
    xs = tf.concat([x, 10 * x, 100 * x, 1000 * x], axis=-1)
    kernels = tf.concat([_one_hot_kernels([[4] * 4] * 4), _one_hot_kernels(taps)], -1)
    out = np.asarray(carafe(xs, kernels, kernel_size=3, group=2, scale=2))[0]
    nearest = np.repeat(np.repeat([[1, 2], [3, 4]], 2, 0), 2, 1)
    np.testing.assert_array_equal(out[..., 0], nearest)
    np.testing.assert_array_equal(out[..., 1], 10 * nearest)
    np.testing.assert_array_equal(out[..., 2], 100 * np.array(expected))
    np.testing.assert_array_equal(out[..., 3], 1000 * np.array(expected))


def test_layer_defaults_and_init():
    layer = CARAFE(16, 2, name="carafe")
    assert (layer.up_kernel, layer.up_group, layer.encoder_kernel,
            layer.encoder_dilation, layer.compressed_channels) == (5, 1, 3, 1, 64)
    out = layer(tf.random.normal((2, 5, 7, 16)))
    assert out.shape == (2, 10, 14, 16)
    assert layer.compute_output_shape((None, 5, None, 16)) == (None, 10, None, 16)
    paths = sorted(v.path for v in layer.weights)
    assert paths == sorted(f"carafe/{conv}/{kind}"
                           for conv in ("channel_compressor", "content_encoder")
                           for kind in ("kernel", "bias"))
    assert layer.content_encoder.kernel.shape == (3, 3, 64, 100)
    # CARAFEPack.init_weights: xavier-uniform compressor, N(0, 1e-3) encoder,
    # zero biases -> nearly uniform kernels at init.
    bound = np.sqrt(6.0 / (16 + 64))
    cw = np.asarray(layer.channel_compressor.kernel)
    assert np.abs(cw).max() <= bound and np.abs(cw).max() > 0.8 * bound
    assert 0.0005 < np.asarray(layer.content_encoder.kernel).std() < 0.002
    assert not np.any(layer.channel_compressor.bias) and not np.any(
        layer.content_encoder.bias)
    for bad in (dict(up_kernel=4), dict(up_group=3), dict(encoder_kernel=2)):
        with pytest.raises(ValueError):
            CARAFE(16, 2, **bad)


def test_dynamic_spatial_shapes_match_static():
    """Unknown H, W (and batch) trace once and agree with the eager call."""
    layer = CARAFE(8, 3, up_kernel=3, up_group=2, compressed_channels=4)
    x = np.random.RandomState(3).standard_normal((2, 4, 5, 8)).astype(np.float32)
    layer.build(x.shape)
    _randomise(layer)
    expected = np.asarray(layer(x))
    spec = [tf.TensorSpec((None, None, None, 8), tf.float32)]

    @tf.function(input_signature=spec)
    def dynamic(features):
        return layer(features)

    np.testing.assert_allclose(dynamic(x), expected, rtol=0, atol=1e-6)
    assert dynamic(x[:1, :3, :2]).shape == (1, 9, 6, 8)


def _randomise(layer, seed=0):
    rng = np.random.RandomState(seed)
    for conv in (layer.channel_compressor, layer.content_encoder):
        kernel = conv.kernel
        fan_in = int(np.prod(kernel.shape[:3]))
        conv.set_weights([
            rng.standard_normal(kernel.shape).astype(np.float32) / np.sqrt(fan_in),
            rng.uniform(-0.2, 0.2, conv.bias.shape).astype(np.float32)])


def _tiny_model(shape=(6, 9, 16), **kwargs):
    inputs = keras.Input(shape, batch_size=1, name="features")
    layer = CARAFE(shape[-1], 2, compressed_channels=8, name="up", **kwargs)
    model = keras.Model(inputs, layer(inputs))
    _randomise(layer)
    return model


def test_keras_round_trip(tmp_path):
    model = _tiny_model(up_kernel=3, up_group=2, encoder_kernel=5,
                        encoder_dilation=2)
    x = np.random.RandomState(1).standard_normal((1, 6, 9, 16)).astype(np.float32)
    path = tmp_path / "carafe.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("up")
    assert isinstance(layer, CARAFE)
    assert layer.get_config() == model.get_layer("up").get_config()
    assert keras.saving.get_registered_name(CARAFE) == "orienmask_tf>CARAFE"
    np.testing.assert_array_equal(loaded(x), model(x))


def test_exports_savedmodel_tflite_onnx(tmp_path):
    import onnxruntime
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter

    model = _tiny_model()
    x = np.random.RandomState(2).standard_normal((1, 6, 9, 16)).astype(np.float32)
    expected = np.asarray(model(x))
    assert expected.shape == (1, 12, 18, 16)
    # Random weights make the kernels far from uniform (a meaningful export).
    kernels = np.asarray(model.get_layer("up").kernels(x))
    assert kernels.max() > 0.3

    saved = tmp_path / "saved"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(saved))
    assert _rel(reloaded.serve(tf.constant(x)), expected) <= 1e-6

    for quant, tol in ((None, 1e-4), ("fp16", 5e-3)):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        # Builtins only: conversion fails if any op needed Flex / select TF ops.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quant == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
        interpreter = Interpreter(model_content=flatbuffer)
        ops = {op["op_name"] for op in interpreter._get_ops_details()}
        assert not {op for op in ops if op.startswith("Flex") or "CUSTOM" in op}, ops
        interpreter.allocate_tensors()
        (inp,), (out,) = (interpreter.get_input_details(),
                          interpreter.get_output_details())
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(out["index"])
        err = _rel(got, expected)
        assert err <= tol, (quant, err)
        if quant == "fp16":
            assert err > 0  # the fp16 weights really were quantized

    spec = [tf.TensorSpec((1, 6, 9, 16), tf.float32, name="features")]

    @tf.function(input_signature=spec)
    def function(features):
        return model(features)

    onnx_path = tmp_path / "carafe.onnx"
    tf2onnx.convert.from_function(function, input_signature=spec, opset=17,
                                  output_path=str(onnx_path))
    session = onnxruntime.InferenceSession(
        str(onnx_path), providers=["CPUExecutionProvider"])
    got, = session.run(None, {session.get_inputs()[0].name: x})
    assert _rel(got, expected) <= 1e-4
