"""Training-target encoders; run inside tf.data (fixed shapes in and out)."""

from orienmask_tf.targets.orienmask_encoder import ORIEN_IGNORE
from orienmask_tf.targets.orienmask_encoder import ORIEN_NEGATIVE
from orienmask_tf.targets.orienmask_encoder import ORIEN_POSITIVE
from orienmask_tf.targets.orienmask_encoder import OrienMaskTargetEncoder
from orienmask_tf.targets.orienmask_encoder import scale_names
from orienmask_tf.targets.orientation import render_orientation_targets

__all__ = ["ORIEN_IGNORE", "ORIEN_NEGATIVE", "ORIEN_POSITIVE",
           "OrienMaskTargetEncoder", "render_orientation_targets",
           "scale_names"]
