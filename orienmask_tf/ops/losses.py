"""Element-wise loss terms shared by the model families."""

import tensorflow as tf


def smooth_l1(x, beta=1.0):
    """torch ``smooth_l1_loss(reduction='none')`` of the difference ``x``:
    ``0.5 * |x|^2 / beta`` where ``|x| < beta``, else ``|x| - 0.5 * beta``
    (OrienMask orientation terms: beta 1; mmdet box regression: beta)."""
    ax = tf.abs(x)
    return tf.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)
