"""Model families, one folder each; every folder registers itself with
``orienmask_tf.registry`` and holds everything specific to its architecture.
Families never import each other."""
