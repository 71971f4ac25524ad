"""Post-processing: raw network outputs -> padded detections and masks."""

from orienmask_tf.decode.orienmask_decode import OrienMaskDecoder
from orienmask_tf.decode.orienmask_decode import decode_orienmask
from orienmask_tf.decode.orienmask_decode import to_original_frame
from orienmask_tf.decode.orienmask_decode import upsample_bilinear

__all__ = ["OrienMaskDecoder", "decode_orienmask", "to_original_frame",
           "upsample_bilinear"]
