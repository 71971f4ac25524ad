from orienmask_tf.models.orienmask import OrienMask
