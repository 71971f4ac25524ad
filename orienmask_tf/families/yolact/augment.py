# SPDX-License-Identifier: Apache-2.0
"""maIoU-YOLACT training and evaluation transforms (numpy / OpenCV).

The mmdet pipeline of ``configs/mayolact/yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py``
(github.com/kemaloksuz/Mask-aware-IoU): drop boxes under 4x4 ->
PhotoMetricDistortion (brightness 32, contrast and saturation 0.5-1.5, hue
18 degrees, channel swap; each with p 0.5) -> Expand(1-4, mean, p 0.5) ->
MinIoURandomCrop (min IoUs 0.1 ... 0.9, min crop 0.3) -> resize to the model
size (no aspect ratio kept) -> (x - mean) / std in RGB -> flip (p 0.5).
The call and output conventions are those of ``orienmask_tf.data.augment``.
"""

import cv2
import numpy as np

from orienmask_tf.data.augment import ResizeEvalTransform
from orienmask_tf.data.augment import _start
from orienmask_tf.data.augment import finalize
from orienmask_tf.data.augment import masks_to_boxes
from orienmask_tf.data.augment import min_iou_crop_window
from orienmask_tf.data.augment import pad_image
from orienmask_tf.data.augment import pad_planes
from orienmask_tf.data.augment import photometric_distortion
from orienmask_tf.data.augment import resize_planes

# mmdet img_norm_cfg (RGB 0..255): the network's own input normalisation.
PIXEL_MEAN = (123.68, 116.78, 103.94)
PIXEL_STD = (58.40, 57.12, 57.38)
YOLACT_MEAN, YOLACT_STD = PIXEL_MEAN, PIXEL_STD


class YolactTrainTransform:
    """maIoU-YOLACT training augmentation (mmdet pipeline of
    ``yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py``).

    Output image: float32 RGB ``(x - mean) / std``.
    """

    def __init__(self, image_size=(550, 550), min_gt_size=4.0,
                 brightness_delta=32.0, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18.0,
                 expand_p=0.5, expand_ratio=(1.0, 4.0),
                 min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3,
                 mean=YOLACT_MEAN, std=YOLACT_STD, flip_p=0.5,
                 min_box_size=1.0):
        self.image_size = tuple(int(v) for v in image_size)
        self.min_gt_size = min_gt_size
        self.distortion = dict(brightness_delta=brightness_delta,
                               contrast_range=contrast_range,
                               saturation_range=saturation_range,
                               hue_delta=hue_delta)
        self.expand_p, self.expand_ratio = expand_p, expand_ratio
        self.min_ious, self.min_crop_size = min_ious, min_crop_size
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.flip_p = flip_p
        self.min_box_size = min_box_size

    def __call__(self, image, masks, classes, crowd_mask, rng):
        image, stack, h0, w0 = _start(image, masks, crowd_mask)
        classes = np.asarray(classes, np.int32)
        boxes = masks_to_boxes(stack[:-1])
        # FilterAnnotations(min_gt_bbox_wh=(4, 4)) on the loaded boxes.
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = np.all(wh >= self.min_gt_size, axis=1)
        stack = stack[np.append(keep, True)]
        boxes, classes = boxes[keep], classes[keep]
        image = photometric_distortion(image, rng, **self.distortion)
        height, width = h0, w0
        if rng.uniform(0, 1) <= self.expand_p:  # mmdet: skip if > prob
            ratio = rng.uniform(*self.expand_ratio)
            eh, ew = int(height * ratio), int(width * ratio)
            left = int(rng.uniform(0, width * ratio - width))
            top = int(rng.uniform(0, height * ratio - height))
            image = pad_image(image, top, eh - height - top, left,
                              ew - width - left, self.mean)
            stack = pad_planes(stack, top, eh - height - top, left,
                              ew - width - left)
            boxes = boxes + np.array([left, top, left, top], np.float32)
            height, width = eh, ew
        window = min_iou_crop_window(boxes, height, width, rng,
                                     self.min_ious, self.min_crop_size)
        if window is not None:
            patch, keep = window
            image = image[patch[1]:patch[3], patch[0]:patch[2]]
            stack = stack[np.append(keep, True), patch[1]:patch[3],
                          patch[0]:patch[2]]
            classes = classes[keep]
            height, width = image.shape[:2]
        h, w = self.image_size
        image = cv2.resize(np.ascontiguousarray(image), (w, h),
                           interpolation=cv2.INTER_LINEAR)
        stack = resize_planes(stack, w, h)
        image = (image - self.mean) / self.std
        if rng.random() < self.flip_p:
            image = cv2.flip(np.ascontiguousarray(image), 1)
            stack = stack[:, :, ::-1]
        info = [h / h0, w / w0, 0.0, 0.0, h0, w0]  # not exact after crops
        return finalize(image, stack, classes, info, self.min_box_size)


class YolactEvalTransform(ResizeEvalTransform):
    """maIoU-YOLACT test pipeline: resize (no aspect ratio kept) to
    ``image_size``, ``(x - mean) / std`` in RGB."""

    def __init__(self, image_size=(550, 550), mean=YOLACT_MEAN,
                 std=YOLACT_STD, min_box_size=1.0):
        super().__init__(image_size, min_box_size)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)

    def normalize(self, image):
        return (image - self.mean) / self.std
