from orienmask_tf.export.serving import InferenceModel
from orienmask_tf.export.saved_model import export_saved_model
