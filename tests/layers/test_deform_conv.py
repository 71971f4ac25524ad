"""DCNv2 (``modulated_deform_conv2d`` / ``DeformConv2D``) against the official
maYOLACT ``ModulatedDeformConvPack`` recordings, plus export.

Fixture: ``tests/fixtures/reference/mayolact/dcnv2_cases.npz`` (README §1, §4,
§10). Every array is compared with ``max|ours − fixture| / max|fixture|``
≤ 2e-5, eagerly and under ``tf.function(jit_compile=True)``.
"""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.layers.deform_conv import DeformConv2D
from orienmask_tf.layers.deform_conv import modulated_deform_conv2d

FIXTURE = (pathlib.Path(__file__).resolve().parents[1] / "fixtures"
           / "reference" / "mayolact" / "dcnv2_cases.npz")
TOLERANCE = 2e-5  # README §10 (measured float32 noise <= 3.3e-6)
PACK_CASES = ("c0", "c1", "c2", "c3", "c4", "c7")
GRID_CASES = ("c5", "c6")
ALL_CASES = PACK_CASES + GRID_CASES
MODES = ("eager", "xla")


def nhwc(array):
    return np.ascontiguousarray(np.asarray(array).transpose(0, 2, 3, 1))


def torch_to_keras_kernel(weight):
    return np.ascontiguousarray(np.asarray(weight).transpose(2, 3, 1, 0))


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def assert_close(name, ours, ref, tol=TOLERANCE):
    err = rel_err(ours, ref)
    assert err <= tol, f"{name}: max rel err {err:.3g} > {tol}"


@pytest.fixture(scope="module")
def cases():
    # A missing fixture is an error, never a skip.
    if not FIXTURE.exists():
        raise FileNotFoundError(f"reference fixture {FIXTURE} is missing")
    with np.load(FIXTURE) as data:
        arrays = {k: data[k] for k in data.files}
    assert int(arrays["num_cases"]) == 8
    out = {}
    for name in ALL_CASES:
        case = {k[len(name) + 1:]: v for k, v in arrays.items()
                if k.startswith(name + "_")}
        params = [int(v) for v in case["params"]]
        (n, cin, cout, height, width, kh, kw, stride, padding, dilation,
         groups, dgroups, with_bias, is_pack) = params
        case.update(n=n, cin=cin, cout=cout, height=height, width=width,
                    kernel_size=(kh, kw), stride=stride, padding=padding,
                    dilation=dilation, groups=groups, dgroups=dgroups,
                    with_bias=bool(with_bias), is_pack=bool(is_pack))
        out[name] = case
    assert all(out[c]["is_pack"] for c in PACK_CASES)
    assert not any(out[c]["is_pack"] for c in GRID_CASES)
    return out


def run(fn, mode, *args):
    if mode == "eager":
        return fn(*args)
    return tf.function(fn, jit_compile=True)(*args)


def op_kwargs(case):
    return dict(strides=case["stride"], padding=case["padding"],
                dilation=case["dilation"], groups=case["groups"],
                deformable_groups=case["dgroups"])


def op_outputs_and_grads(case, mode, implementation=None):
    """Output and gradients of sum(out · cotangent) of the functional op,
    fed with the fixture's offset and mask."""
    x = tf.constant(nhwc(case["x"]))
    offset = tf.constant(nhwc(case["offset"]))
    mask = tf.constant(nhwc(case["mask"]))
    kernel = tf.constant(torch_to_keras_kernel(case["weight"]))
    bias = tf.constant(case["bias"] if case["with_bias"]
                       else np.zeros(case["cout"], np.float32))
    cotangent = tf.constant(nhwc(case["cotangent"]))

    def fn(x, offset, mask, kernel, bias):
        with tf.GradientTape() as tape:
            tape.watch([x, offset, mask, kernel, bias])
            out = modulated_deform_conv2d(
                x, offset, mask, kernel, bias if case["with_bias"] else None,
                implementation=implementation, **op_kwargs(case))
            loss = tf.reduce_sum(out * cotangent)
        grads = tape.gradient(loss, [x, offset, mask, kernel, bias],
                              unconnected_gradients="zero")
        return [out] + grads

    results = run(fn, mode, x, offset, mask, kernel, bias)
    names = ("out", "grad_x", "grad_offset", "grad_mask", "grad_weight",
             "grad_bias")
    return {k: v.numpy() for k, v in zip(names, results)}


def expected_op(case, name):
    value = case[name]
    if name == "grad_weight":
        return torch_to_keras_kernel(value)
    return value if value.ndim == 1 else nhwc(value)


def make_pack_layer(case):
    layer = DeformConv2D(
        case["cout"], case["kernel_size"], strides=case["stride"],
        padding=case["padding"], dilation=case["dilation"],
        groups=case["groups"], deformable_groups=case["dgroups"],
        use_bias=case["with_bias"])
    layer.build((None, case["height"], case["width"], case["cin"]))
    layer.kernel.assign(torch_to_keras_kernel(case["weight"]))
    if case["with_bias"]:
        layer.bias.assign(case["bias"])
    layer.conv_offset.kernel.assign(
        torch_to_keras_kernel(case["conv_offset_weight"]))
    layer.conv_offset.bias.assign(case["conv_offset_bias"])
    return layer


# ---------------------------------------------------------------- fixture


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PACK_CASES)
def test_pack_layer_matches_official(cases, name, mode):
    """The layer (offset conv, split, sigmoid, op): output and gradients with
    respect to x (through the offset path too) and every weight."""
    case = cases[name]
    layer = make_pack_layer(case)
    x = tf.constant(nhwc(case["x"]))
    cotangent = tf.constant(nhwc(case["cotangent"]))
    weights = layer.trainable_weights

    def fn(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out * cotangent)
        offset, mask = layer.offset_and_mask(x)
        return [out, offset, mask] + tape.gradient(loss, [x] + weights)

    out, offset, mask, grad_x, *grad_w = [
        v.numpy() for v in run(fn, mode, x)]
    assert_close("out", out, nhwc(case["out"]))
    assert_close("offset", offset, nhwc(case["offset"]))
    assert_close("mask", mask, nhwc(case["mask"]))
    assert_close("grad_x", grad_x, nhwc(case["grad_x"]))
    expected = {
        "kernel": torch_to_keras_kernel(case["grad_weight"]),
        "bias": case.get("grad_bias"),
        "conv_offset/kernel": torch_to_keras_kernel(
            case["grad_conv_offset_weight"]),
        "conv_offset/bias": case["grad_conv_offset_bias"],
    }
    paths = [v.path.split("/", 1)[1] for v in weights]
    assert sorted(paths) == sorted(
        ["kernel", "conv_offset/kernel", "conv_offset/bias"]
        + (["bias"] if case["with_bias"] else []))
    for path, grad in zip(paths, grad_w):
        assert_close(f"grad {path}", grad, expected[path])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL_CASES)
def test_op_matches_official(cases, name, mode):
    """The functional op on the fixture's offsets / masks: output and
    gradients w.r.t. weight, bias, offset and mask (and x for op_grid cases,
    where the fixture's grad_x has no offset-conv path)."""
    case = cases[name]
    result = op_outputs_and_grads(case, mode)
    names = ["out", "grad_offset", "grad_mask", "grad_weight"]
    if case["with_bias"]:
        names.append("grad_bias")
    if not case["is_pack"]:
        names.append("grad_x")
    for key in names:
        assert_close(key, result[key], expected_op(case, key))


@pytest.mark.parametrize("name", ALL_CASES)
def test_matmul_and_conv_contractions_agree(cases, name):
    """Both ways of writing the final contraction, eagerly."""
    case = cases[name]
    a = op_outputs_and_grads(case, "eager", implementation="matmul")
    b = op_outputs_and_grads(case, "eager", implementation="conv")
    for key in ("out", "grad_x", "grad_offset", "grad_mask", "grad_weight"):
        assert rel_err(a[key], b[key]) <= 1e-6, key


def outside_points(case):
    """(N, Ho, Wo, G·K, 2) bool: the point is <= −1 or >= H (W)."""
    yx = case["sampling_yx"].astype(np.float64)  # (N, G, K, Ho, Wo, 2)
    y, x = yx[..., 0], yx[..., 1]
    outside = ((y <= -1) | (y >= case["height"])
               | (x <= -1) | (x >= case["width"]))
    n, g, k, ho, wo = outside.shape
    outside = outside.transpose(0, 3, 4, 1, 2).reshape(n, ho, wo, g * k)
    return np.repeat(outside[..., None], 2, axis=-1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ALL_CASES)
def test_offset_gradient_exactly_zero_outside(cases, name, mode):
    """grad_offset (channel pairs (Δy, Δx)) is exactly 0 wherever the point
    is <= −1 or >= H (W), exactly −1 included; so is grad_mask."""
    case = cases[name]
    result = op_outputs_and_grads(case, mode)
    outside = outside_points(case)
    assert outside.any()
    grad_offset = result["grad_offset"].reshape(outside.shape)
    fixture = nhwc(case["grad_offset"]).reshape(outside.shape)
    assert np.all(fixture[outside] == 0)  # the rule holds in the fixture
    assert np.all(grad_offset[outside] == 0)
    assert np.any(grad_offset[~outside] != 0)
    grad_mask = result["grad_mask"].reshape(outside.shape[:-1])
    assert np.all(grad_mask[outside[..., 0]] == 0)
    if name == "c4":  # the integer case: 316 coordinates exactly −1
        yx = case["sampling_yx"]
        assert np.array_equal(yx, np.round(yx))
        assert np.count_nonzero(yx == -1) == 316


def test_offset_gradient_is_one_sided_at_integers():
    """A 1×1 kernel samples exactly at (Δy, Δx): at integer points the
    offset gradient is the upper difference v(y0+1) − v(y0), corners outside
    the image reading 0; at exactly −1 it is 0."""
    height, width = 4, 5
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = (10.0 * yy + xx ** 2 + 1.0).astype(np.float32)
    x = tf.constant(image[None, :, :, None])

    def grad_at(py, px):
        # Output pixel (0, 0) samples at (Δy, Δx); others are masked out.
        offset = np.zeros((1, height, width, 2), np.float32)
        offset[0, 0, 0] = (py, px)
        mask = np.zeros((1, height, width, 1), np.float32)
        mask[0, 0, 0] = 1.0
        offset = tf.constant(offset)
        with tf.GradientTape() as tape:
            tape.watch(offset)
            out = modulated_deform_conv2d(
                x, offset, tf.constant(mask), tf.ones([1, 1, 1, 1]),
                padding=0)
        return (out.numpy()[0, 0, 0, 0],
                tape.gradient(out, offset).numpy()[0, 0, 0])

    def v(y, x):
        inside = 0 <= y < height and 0 <= x < width
        return float(image[y, x]) if inside else 0.0

    for py, px in [(1, 2), (0, 0), (3, 4), (2, 0)]:
        value, grad = grad_at(py, px)
        assert value == v(py, px)
        assert grad[0] == v(py + 1, px) - v(py, px)
        assert grad[1] == v(py, px + 1) - v(py, px)
    # Last row / column: the upper neighbour is outside and reads 0.
    assert grad_at(3, 1)[1][0] == -v(3, 1)
    # Exactly −1 (and H / W): sample 0, gradient 0 (torchvision differs).
    for py, px in [(-1, 2), (1, -1), (height, 2), (1, width), (-1, -1)]:
        value, grad = grad_at(py, px)
        assert value == 0 and np.all(grad == 0), (py, px, grad)
    # Just inside −1: bilinear towards row 0 from a zero row.
    value, grad = grad_at(-0.75, 2)
    assert value == pytest.approx(0.25 * v(0, 2))
    assert grad[0] == pytest.approx(v(0, 2))


# ----------------------------------------------------------- layer basics


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("stride,dgroups", [(1, 4), (2, 1)])
def test_zero_initialised_pack_is_half_plain_conv(use_bias, stride, dgroups):
    x = tf.random.stateless_normal([2, 11, 9, 8], seed=[1, 2])
    layer = DeformConv2D(6, strides=stride, deformable_groups=dgroups,
                         use_bias=use_bias,
                         bias_initializer="random_normal")
    out = layer(x)
    offset, mask = layer.offset_and_mask(x)
    assert np.all(offset.numpy() == 0) and np.all(mask.numpy() == 0.5)
    conv = keras.layers.Conv2D(6, 3, strides=stride, padding="valid",
                               use_bias=False)
    conv.build((2, 13, 11, 8))
    conv.kernel.assign(layer.kernel)
    plain = conv(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]))
    expected = 0.5 * plain + (layer.bias if use_bias else 0.0)
    assert out.shape == expected.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=0,
                               atol=1e-5)


@pytest.mark.parametrize("kwargs,shape", [
    (dict(), (2, 7, 10, 8)),
    (dict(strides=2), (1, 11, 7, 8)),
    (dict(strides=2, deformable_groups=4), (1, 10, 15, 8)),
    (dict(padding=2, dilation=2, groups=2, deformable_groups=2),
     (1, 9, 11, 8)),
    (dict(kernel_size=(1, 3), padding=(0, 1)), (1, 5, 6, 8)),
])
def test_output_shape_and_config(kwargs, shape):
    layer = DeformConv2D(4, **kwargs)
    out = layer(tf.zeros(shape))
    assert tuple(out.shape) == layer.compute_output_shape(shape)
    clone = DeformConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.conv_offset.filters == 3 * layer.deformable_groups * (
        layer.kernel_size[0] * layer.kernel_size[1])


def test_bad_arguments():
    x = tf.zeros([1, 5, 5, 4])
    offset, mask = tf.zeros([1, 5, 5, 18]), tf.zeros([1, 5, 5, 9])
    with pytest.raises(ValueError, match="implementation"):
        modulated_deform_conv2d(x, offset, mask, tf.zeros([3, 3, 4, 2]),
                                implementation="einsum")
    with pytest.raises(ValueError, match="divisible"):
        modulated_deform_conv2d(x, offset, mask, tf.zeros([3, 3, 4, 2]),
                                deformable_groups=3)
    with pytest.raises(ValueError, match="strides"):  # Keras' Conv2D rule
        DeformConv2D(4, strides=2, dilation=2)


@pytest.mark.parametrize("policy,tol", [("mixed_float16", 1e-2),
                                        ("mixed_bfloat16", 5e-2)])
def test_mixed_precision(policy, tol):
    x = tf.random.stateless_normal([1, 12, 12, 8], seed=[3, 4])
    reference = DeformConv2D(8, deformable_groups=2)
    reference(x)
    randomise_offsets(reference, np.random.RandomState(5), scale=0.2)
    layer = DeformConv2D(8, deformable_groups=2, dtype=policy)
    layer(x)
    layer.set_weights(reference.get_weights())
    out = layer(x)
    assert out.dtype == policy.split("_")[1]
    assert rel_err(tf.cast(out, tf.float32), reference(x)) <= tol


def randomise_offsets(layer, rng, scale=1.0):
    """Non-zero conv_offset weights (offsets ~ a few px, masks off 0.5)."""
    kernel = layer.conv_offset.kernel
    layer.conv_offset.kernel.assign(
        rng.standard_normal(kernel.shape).astype(np.float32) * scale)
    layer.conv_offset.bias.assign(
        rng.standard_normal(layer.conv_offset.bias.shape).astype(np.float32))


def tiny_model(rng):
    inputs = keras.Input((16, 16, 8), batch_size=1)
    layer = DeformConv2D(8, deformable_groups=2, name="dcn")
    outputs = layer(inputs)
    model = keras.Model(inputs, outputs)
    randomise_offsets(layer, rng, scale=0.3)
    return model


def test_keras_save_load_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    model = tiny_model(rng)
    x = rng.standard_normal((1, 16, 16, 8)).astype(np.float32)
    path = tmp_path / "dcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("dcn")
    assert isinstance(layer, DeformConv2D)
    assert layer.get_config() == model.get_layer("dcn").get_config()
    assert [v.path for v in layer.weights] == [
        "dcn/kernel", "dcn/bias", "dcn/conv_offset/kernel",
        "dcn/conv_offset/bias"]
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


# ----------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny deformed model, its reference output and a SavedModel."""
    rng = np.random.RandomState(3)
    model = tiny_model(rng)
    x = rng.standard_normal((1, 16, 16, 8)).astype(np.float32)
    reference = model(x).numpy()
    offset, _ = model.get_layer("dcn").offset_and_mask(x)
    offset = np.abs(offset.numpy())
    # Really deformed: offsets of several pixels, some points outside.
    assert offset.mean() > 0.5 and offset.max() > 3
    spec = [tf.TensorSpec([1, 16, 16, 8], tf.float32, name="images")]

    def serve(images):
        return {"out": model(images)}

    # Keras' ExportArchive (what orienmask_tf.export uses): its SavedModel
    # holds the variables so that the TFLite converter freezes them.
    path = tmp_path_factory.mktemp("dcn_export") / "saved_model"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=spec)
    archive.write_out(str(path), verbose=False)
    return dict(x=x, reference=reference, path=path, spec=spec,
                function=tf.function(serve, input_signature=spec))  # no XLA


def test_saved_model_round_trip(exported):
    loaded = tf.saved_model.load(str(exported["path"]))
    out = loaded.serve(tf.constant(exported["x"]))["out"].numpy()
    np.testing.assert_allclose(out, exported["reference"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("quantize,tol", [(None, 1e-4), ("fp16", 1e-2)])
def test_tflite_builtin_ops(exported, quantize, tol):
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(exported["path"]), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()
    assert b"Flex" not in flatbuffer  # no select-TF ops
    interpreter = Interpreter(model_content=flatbuffer)
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "GATHER" in ops and not any(o.startswith("Flex") for o in ops)
    runner = interpreter.get_signature_runner("serve")
    out = runner(images=exported["x"])["out"]
    err = rel_err(out, exported["reference"])
    assert err <= tol, f"TFLite {quantize or 'fp32'}: rel err {err:.3g}"


def test_onnx_export(exported):
    import onnxruntime
    import tf2onnx

    proto, _ = tf2onnx.convert.from_function(
        exported["function"], input_signature=exported["spec"], opset=17)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: exported["x"]})[0]
    err = rel_err(out, exported["reference"])
    assert err <= 1e-4, f"ONNX: rel err {err:.3g}"
