"""The one YOLO cell grid of OrienMask (``families.orienmask.anchors``)
shared by the targets, the loss and the decoder."""

import numpy as np
import pytest

from orienmask_tf.families.orienmask import anchors as anchor_ops
from orienmask_tf.families.orienmask.decode import _Layout
from orienmask_tf.families.orienmask.encoder import OrienMaskTargetEncoder
from orienmask_tf.families.orienmask.loss import OrienMaskLoss

ANCHORS = np.asarray(anchor_ops.ANCHORS_YOLOV3, np.float32)


def test_grid_anchor_orders_are_the_two_official_formulas():
    size, grid = (416, 416), (13, 13)
    stride = np.array([416, 416], np.float32) / np.float32(13)
    np.testing.assert_array_equal(
        anchor_ops.grid_anchors(ANCHORS, size, grid, "cell_size"),
        ANCHORS / stride)
    normalized = anchor_ops.grid_anchors(ANCHORS, size, grid, "normalized")
    np.testing.assert_array_equal(
        normalized, ANCHORS / np.float32(416) * np.float32(13))
    # Same values up to float32 rounding, but not bit-identical: the order
    # is a real option (targets / loss vs post-processing fixtures).
    np.testing.assert_allclose(normalized, ANCHORS / stride, rtol=1e-6)
    assert np.any(normalized != ANCHORS / stride)
    with pytest.raises(ValueError, match="order"):
        anchor_ops.grid_anchors(ANCHORS, size, grid, "pixels")


def test_cell_offsets_and_grid_sizes():
    cols, rows = anchor_ops.cell_offsets((2, 3))
    np.testing.assert_array_equal(cols, [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(rows, [[0, 0, 0], [1, 1, 1]])
    assert cols.dtype == rows.dtype == np.float32
    assert anchor_ops.grid_sizes((96, 64)) == ((3, 2), (6, 4), (12, 8))
    assert anchor_ops.grid_sizes((96, 64), (16, 8)) == ((6, 4), (12, 8))


def test_targets_loss_and_decoder_share_the_grid():
    size = (96, 64)
    encoder = OrienMaskTargetEncoder(size, ANCHORS, 3)
    loss = OrienMaskLoss(size, ANCHORS, 3)
    layout = _Layout(ANCHORS, size, anchor_ops.ANCHOR_MASK, 3)
    assert encoder.grid_sizes == loss.grid_sizes == layout.grids
    for s, mask in enumerate(anchor_ops.ANCHOR_MASK):
        _, _, encoder_anchors = encoder.scale_constants(s)
        np.testing.assert_array_equal(loss.grid_anchors(s),
                                      encoder_anchors[list(mask)])
        np.testing.assert_array_equal(
            layout.grid_anchors[list(mask)],
            anchor_ops.grid_anchors(ANCHORS[list(mask)], size,
                                    layout.grids[s], "normalized"))
    # Decoder rows: (scale, anchor, row, col) with the shared cell offsets.
    gh, gw = layout.grids[0]
    cols, rows = anchor_ops.cell_offsets((gh, gw))
    np.testing.assert_array_equal(layout.box_col[:gh * gw], cols.ravel())
    np.testing.assert_array_equal(layout.box_row[:gh * gw], rows.ravel())
    np.testing.assert_array_equal(layout.box_anchor[:3 * gh * gw],
                                  np.repeat(anchor_ops.ANCHOR_MASK[0],
                                            gh * gw))
