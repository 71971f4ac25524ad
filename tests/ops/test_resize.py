"""``ops.resize``: the one torch ``align_corners=False`` bilinear resize."""

import numpy as np
import tensorflow as tf

from orienmask_tf.ops.resize import bilinear_taps
from orienmask_tf.ops.resize import resize_bilinear
from orienmask_tf.ops.resize import upsample_bilinear


def test_factor_size_layouts_and_backends_are_the_same_function():
    x = np.random.default_rng(0).random((2, 5, 7, 3)).astype(np.float32)
    by_size = resize_bilinear(tf.constant(x), (20, 28)).numpy()
    np.testing.assert_array_equal(upsample_bilinear(tf.constant(x), 4),
                                  by_size)
    np.testing.assert_array_equal(resize_bilinear(x, (20, 28)), by_size)
    planar = upsample_bilinear(tf.constant(x.transpose(3, 0, 1, 2)), 4,
                               axes=(-2, -1)).numpy()
    np.testing.assert_array_equal(planar.transpose(1, 2, 3, 0), by_size)
    xla = tf.function(lambda v: upsample_bilinear(v, 4), jit_compile=True)
    np.testing.assert_allclose(xla(tf.constant(x)).numpy(), by_size,
                               rtol=0, atol=1e-6)
    ref = tf.image.resize(x, (20, 28), method="bilinear").numpy()
    np.testing.assert_allclose(by_size, ref, rtol=0, atol=1e-6)


def test_taps_follow_torch():
    # torch: src = max((dst + 0.5) * in / out - 0.5, 0), hi clamped.
    lo, hi, w0, w1 = bilinear_taps(3, 6)
    np.testing.assert_array_equal(lo, [0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(hi, [1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(w1, [0.0, 0.25, 0.75, 0.25, 0.75, 0.25])
    np.testing.assert_allclose(w0 + w1, 1.0)


def test_dynamic_sizes_fall_back_to_tf_image_resize():
    fn = tf.function(lambda v: resize_bilinear(v, (9, 11)),
                     input_signature=[tf.TensorSpec([1, None, None, 2])])
    x = np.random.default_rng(1).random((1, 4, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(fn(x).numpy(),
                               resize_bilinear(tf.constant(x), (9, 11)),
                               rtol=0, atol=1e-6)
