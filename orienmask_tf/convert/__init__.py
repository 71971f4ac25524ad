"""Reading official PyTorch checkpoints safely, and the shared name -> weight
map; each family's key layout lives in its own ``checkpoint`` module."""

from orienmask_tf.convert.torch_checkpoint import CheckpointError
from orienmask_tf.convert.torch_checkpoint import load_state_dict

__all__ = ["CheckpointError", "load_state_dict"]
