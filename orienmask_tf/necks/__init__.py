from orienmask_tf.necks.yolo_fpn import yolo_fpn
