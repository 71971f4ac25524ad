# SPDX-License-Identifier: Apache-2.0
"""OrienMask training and evaluation transforms (numpy / OpenCV).

The official ``transform_train_544`` / ``transform_val_544``
(github.com/duwt/OrienMask ``config/base.py``, ``data/transform.py``):
ColorJitter(0.2, 0.5, 0.5, 0.1) in random order (by default applied after
the resize, see ``jitter_first``) -> RandomCrop(p 0.5, image/box min IoU
0.64) -> Resize(544, warp_p 0.25, aspect jitter 0.3, random placement,
pad_p 0.75, pad_ratio 0.75, pad with the mean) -> horizontal flip (p 0.5)
-> instance shuffle -> /255. Evaluation: plain resize (warp) to the input
size, ``/ 255`` (``data.augment.ResizeEvalTransform``). The call and output
conventions are those of ``orienmask_tf.data.augment``.
"""

import cv2
import numpy as np

from orienmask_tf.data.augment import ResizeEvalTransform
from orienmask_tf.data.augment import _start
from orienmask_tf.data.augment import color_jitter
from orienmask_tf.data.augment import finalize
from orienmask_tf.data.augment import masks_to_boxes
from orienmask_tf.data.augment import pad_image
from orienmask_tf.data.augment import pad_planes
from orienmask_tf.data.augment import resize_planes

ORIENMASK_MEAN = (123.675, 116.280, 103.530)  # official MEAN (RGB, 0..255)


def orienmask_crop_window(boxes, height, width, rng, image_min_iou=0.64,
                          bbox_min_iou=0.64):
    """Official ``RandomCrop`` window ``(top, down, left, right)``
    (inclusive) that keeps at least ``sqrt(bbox_min_iou)`` of every box's
    width and height and ``sqrt(image_min_iou)`` of the image's."""
    image_ratio = image_min_iou ** 0.5
    box_ratio = bbox_min_iou ** 0.5
    if len(boxes) == 0:
        left = int(rng.uniform(0, width * (1 - image_ratio)) + 0.5)
        right = int(rng.uniform(width * image_ratio, width) + 0.5)
        top = int(rng.uniform(0, height * (1 - image_ratio)) + 0.5)
        down = int(rng.uniform(height * image_ratio, height) + 0.5)
        return top, down, left, right
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    box_left = (x1 * box_ratio + x2 * (1 - box_ratio)).min()
    box_right = (x1 * (1 - box_ratio) + x2 * box_ratio).max()
    box_top = (y1 * box_ratio + y2 * (1 - box_ratio)).min()
    box_down = (y1 * (1 - box_ratio) + y2 * box_ratio).max()
    left = int(rng.uniform(0, min(box_left, width * (1 - image_ratio))) + 0.5)
    right = int(rng.uniform(max(box_right, width * image_ratio), width) + 0.5)
    top = int(rng.uniform(0, min(box_top, height * (1 - image_ratio))) + 0.5)
    down = int(rng.uniform(max(box_down, height * image_ratio), height) + 0.5)
    return top, down, left, right


def orienmask_resize_layout(height, width, size, rng, warp_p=0.25,
                            jitter=0.3, random_place=True, pad_p=0.75,
                            pad_ratio=0.75):
    """Official ``Resize(pad_needed=True)`` layout: ``None`` (warp to size)
    or ``(nh, nw, top, bottom, left, right)``."""
    h, w = size
    if not rng.random() > warp_p:
        return None
    dh, dw = height * jitter, width * jitter
    aspect = (width + rng.uniform(-dw, dw)) / (height + rng.uniform(-dh, dh))
    if aspect < w / h:
        nh = (int(h * (1 - rng.uniform(0, pad_ratio)) + 0.5)
              if rng.random() < pad_p else h)
        nw = int(nh * aspect + 0.5)
    else:
        nw = (int(w * (1 - rng.uniform(0, pad_ratio)) + 0.5)
              if rng.random() < pad_p else w)
        nh = int(nw / aspect + 0.5)
    nh, nw = min(max(nh, 1), h), min(max(nw, 1), w)
    left = (int(rng.uniform(0, w - nw) + 0.5) if random_place
            else int((w - nw) / 2 + 0.5))
    top = (int(rng.uniform(0, h - nh) + 0.5) if random_place
           else int((h - nh) / 2 + 0.5))
    return nh, nw, top, h - nh - top, left, w - nw - left


class OrienMaskTrainTransform:
    """Official OrienMask training augmentation (``transform_train_544``).

    Args:
        image_size: ``(height, width)`` of the network input.
        brightness, contrast, saturation, hue: ColorJitter strengths.
        crop_p, image_min_iou, bbox_min_iou: RandomCrop.
        warp_p, jitter, random_place, pad_p, pad_ratio, pad_value: Resize.
        flip_p: horizontal flip probability.
        min_box_size: instances whose recomputed box is narrower or lower
            than this (pixels) are dropped.
        shuffle: shuffle the instance order (official ``ToTensor``).
        jitter_first: apply the colour jitter to the original image, as the
            official pipeline does. The default (False) applies it to the
            resized content just before padding, which is ~2x cheaper on
            640x480 inputs: the four operations are pointwise and commute
            with crop / resize / flip (up to interpolation rounding at
            clipped pixels); only contrast's gray mean is then taken over
            the crop instead of the whole image.

    Output image: float32 RGB in [0, 1] (official ``Normalize(0, 255)``).
    """

    def __init__(self, image_size=(544, 544), brightness=0.2, contrast=0.5,
                 saturation=0.5, hue=0.1, crop_p=0.5, image_min_iou=0.64,
                 bbox_min_iou=0.64, warp_p=0.25, jitter=0.3,
                 random_place=True, pad_p=0.75, pad_ratio=0.75,
                 pad_value=ORIENMASK_MEAN, flip_p=0.5, min_box_size=1.0,
                 shuffle=True, jitter_first=False):
        self.image_size = tuple(int(v) for v in image_size)
        self.jitter_args = (brightness, contrast, saturation, hue)
        self.crop_p = crop_p
        self.image_min_iou, self.bbox_min_iou = image_min_iou, bbox_min_iou
        self.resize_args = dict(warp_p=warp_p, jitter=jitter,
                                random_place=random_place, pad_p=pad_p,
                                pad_ratio=pad_ratio)
        self.pad_value = tuple(float(v) for v in np.broadcast_to(pad_value, 3))
        self.flip_p = flip_p
        self.min_box_size = min_box_size
        self.shuffle = shuffle
        self.jitter_first = jitter_first

    def __call__(self, image, masks, classes, crowd_mask, rng):
        image, stack, h0, w0 = _start(image, masks, crowd_mask)
        info = [1.0, 1.0, 0.0, 0.0, h0, w0]
        if self.jitter_first:
            image = color_jitter(image.astype(np.float32), rng,
                                 *self.jitter_args)
        height, width = h0, w0
        if rng.random() < self.crop_p:
            boxes = masks_to_boxes(stack[:-1])
            boxes = boxes[boxes[:, 2] > boxes[:, 0]]
            top, down, left, right = orienmask_crop_window(
                boxes, height, width, rng, self.image_min_iou,
                self.bbox_min_iou)
            image = image[top:down + 1, left:right + 1]
            stack = stack[:, top:down + 1, left:right + 1]
            height, width = image.shape[:2]
            info[2:4] = [-top, -left]
        h, w = self.image_size
        layout = orienmask_resize_layout(height, width, self.image_size, rng,
                                         **self.resize_args)
        image = image.astype(np.float32, copy=False)
        if layout is None:
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            if not self.jitter_first:
                image = color_jitter(image, rng, *self.jitter_args)
            stack = resize_planes(stack, w, h)
            sy, sx, pt, pl = h / height, w / width, 0, 0
        else:
            nh, nw, pt, pb, pl, pr = layout
            image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
            if not self.jitter_first:
                image = color_jitter(image, rng, *self.jitter_args)
            image = pad_image(image, pt, pb, pl, pr, self.pad_value)
            stack = pad_planes(resize_planes(stack, nw, nh), pt, pb, pl, pr)
            sy, sx = nh / height, nw / width
        info[0:4] = [sy, sx, info[2] * sy + pt, info[3] * sx + pl]
        if rng.random() < self.flip_p:
            image = cv2.flip(image, 1)
            stack = stack[:, :, ::-1]  # copied by finalize's gather
            info[1], info[3] = -sx, w - info[3]
        image = np.multiply(image, np.float32(1 / 255), dtype=np.float32)
        order = rng.permutation if self.shuffle else None
        return finalize(image, stack, classes, info, self.min_box_size,
                        order)


OrienMaskEvalTransform = ResizeEvalTransform
