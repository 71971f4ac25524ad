"""``ops.frames``: one mapping back to the original image for the
evaluator (numpy), the decoders and the serving signature (TF)."""

import numpy as np
import pytest
import tensorflow as tf

from orienmask_tf.ops import frames

# Original 40x60, scaled by 2, padded (top 4, left 6) into 88x132, flipped.
FLIP_INFO = [2.0, -2.0, 4.0, 132 - 6.0, 40, 60]


def _flipped_example():
    mask0 = np.zeros((40, 60), np.uint8)
    mask0[10:20, 5:25] = 1
    big = np.zeros((88, 132), np.uint8)
    big[4:84, 6:126] = np.kron(mask0, np.ones((2, 2), np.uint8))
    box = [[132 - (6 + 50), 4 + 20, 132 - (6 + 10), 4 + 40]]
    return mask0, big[:, ::-1], np.array(box, np.float32)


def test_numpy_and_tensors_agree_with_flips():
    mask0, flipped, box = _flipped_example()
    np_boxes, np_masks = frames.to_original_frame(box, flipped[None],
                                                  FLIP_INFO)
    tf_boxes, tf_masks = frames.to_original_frame(
        tf.constant(box), tf.constant(flipped[None]), tf.constant(FLIP_INFO),
        original_size=(40, 60))
    np.testing.assert_allclose(np_boxes, [[5, 10, 25, 20]])
    np.testing.assert_allclose(tf_boxes.numpy(), np_boxes)
    assert np_masks.dtype == bool and tf_masks.dtype == tf.bool
    np.testing.assert_array_equal(np_masks[0], mask0)
    np.testing.assert_array_equal(tf_masks.numpy(), np_masks)
    _, bilinear = frames.to_original_frame(box, flipped[None], FLIP_INFO,
                                           interpolation="bilinear")
    np.testing.assert_array_equal(bilinear[0], mask0)


def test_batched_boxes_with_one_info_per_image():
    hw = tf.constant([[80, 120], [64, 64]])
    info = frames.resize_image_info(hw, (64, 96))
    np.testing.assert_allclose(info.numpy(), [
        [64 / 80, 96 / 120, 0, 0, 80, 120], [1.0, 1.5, 0, 0, 64, 64]])
    np.testing.assert_allclose(frames.resize_image_info([80, 120], (64, 96)),
                               info.numpy()[0])
    boxes = tf.constant([[[0.0, 0.0, 96.0, 64.0], [48.0, 32.0, 200.0, 8.0]],
                         [[-3.0, 0.0, 48.0, 32.0], [0.0, 0.0, 0.0, 0.0]]])
    got = frames.boxes_to_original(boxes, info).numpy()
    np.testing.assert_allclose(got, [
        [[0, 0, 120, 80], [60, 10, 120, 40]],      # y1 > y2 reordered
        [[0, 0, 32, 32], [0, 0, 0, 0]]], rtol=1e-6)


def test_nearest_samples_the_pixel_containing_each_centre():
    # Original 4x6, scaled by 2, padded (top 2, left 1): original pixel
    # (i, j) samples input (2i + 3, 2j + 2).
    masks = np.zeros((1, 12, 14), bool)
    masks[0, 5, 6] = True
    info = [2.0, 2.0, 2.0, 1.0, 4, 6]
    for backend in (np.asarray, tf.constant):
        got = np.asarray(frames.masks_to_original(backend(masks), info))
        assert got.shape == (1, 4, 6) and got.sum() == 1 and got[0, 1, 2]


def test_bad_arguments():
    masks = tf.zeros((1, 8, 8), tf.uint8)
    dynamic = tf.function(
        lambda info: frames.masks_to_original(masks, info),
        input_signature=[tf.TensorSpec([6], tf.float32)])
    with pytest.raises(ValueError, match="original_size"):
        dynamic.get_concrete_function()
    with pytest.raises(ValueError, match="numpy"):
        frames.masks_to_original(masks, [1, 1, 0, 0, 8, 8], "bilinear")
    with pytest.raises(ValueError, match="interpolation"):
        frames.masks_to_original(masks, [1, 1, 0, 0, 8, 8], "cubic")
