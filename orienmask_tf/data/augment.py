"""Joint augmentation of image, instance masks and crowd regions (numpy/OpenCV).

Every geometric step moves the image and one ``(N + 1, H, W)`` uint8 array
of planes together: the N instance masks plus, as the last plane, the
crowd (ignore) region. Boxes are never transformed: after the last step they are
recomputed as the tight boxes of the transformed masks, and instances whose
mask became empty (or smaller than ``min_box_size`` pixels wide or high)
are dropped with their masks. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed reproduces an example.

Two training recipes and their evaluation transforms:

* :class:`OrienMaskTrainTransform` / :class:`OrienMaskEvalTransform`, the
  official ``transform_train_544`` / ``transform_val_544``
  (github.com/duwt/OrienMask ``config/base.py``, ``data/transform.py``):
  ColorJitter(0.2, 0.5, 0.5, 0.1) in random order (by default applied
  after the resize, see ``jitter_first``) -> RandomCrop(p 0.5,
  image/box min IoU 0.64) -> Resize(544, warp_p 0.25, aspect jitter 0.3,
  random placement, pad_p 0.75, pad_ratio 0.75, pad with the mean) ->
  horizontal flip (p 0.5) -> instance shuffle -> /255. Evaluation: plain
  resize (warp) to the input size.
* :class:`YolactTrainTransform` / :class:`YolactEvalTransform`, the
  maIoU-YOLACT recipe (github.com/kemaloksuz/Mask-aware-IoU
  ``configs/mayolact/yolact_r50_4x8_coco_scale550_ATSSwmaIoU.py`` with the
  mmdet pipeline classes): drop boxes under 4x4 -> PhotoMetricDistortion
  (brightness 32, contrast and saturation 0.5-1.5, hue 18 degrees, channel
  swap; each with p 0.5) -> Expand(1-4, mean, p 0.5) -> MinIoURandomCrop
  (min IoUs 0.1 ... 0.9, min crop 0.3) -> resize to the model size (no
  aspect ratio kept) -> (x - mean) / std in RGB -> flip (p 0.5).

Each transform is called as ``transform(image, masks, classes,
crowd_mask, rng)`` with ``image`` ``(H, W, 3)`` uint8 RGB, ``masks``
``(N, H, W)`` uint8, ``classes`` ``(N,)``, ``crowd_mask`` ``(H, W)`` uint8
or None, and returns a dict::

    image       (h, w, 3) float32 (recipe normalization)
    masks       (n, h, w) uint8 {0, 1}, n <= N, every mask non-empty
    boxes       (n, 4) float32 normalized (cx, cy, w, h): the tight box of
                each mask in pixel-edge coordinates divided by (w, h)
    boxes_xyxy  (n, 4) float32 the same boxes in pixels (x0, y0, x1, y1)
    classes     (n,) int32
    crowd_mask  (h, w) uint8
    info        (6,) float32 [scale_y, scale_x, pad_top, pad_left,
                original_h, original_w]: the input pixel of an original
                point (x, y) is (x * scale_x + pad_left, y * scale_y +
                pad_top); a negative scale_x means a horizontal flip
                (exact for every transform except the YOLACT training one,
                which leaves the plain resize factors)
"""

import cv2
import numpy as np

# mmdet img_norm_cfg (RGB), the network's own input normalisation.
from orienmask_tf.models.yolact import PIXEL_MEAN as YOLACT_MEAN
from orienmask_tf.models.yolact import PIXEL_STD as YOLACT_STD

ORIENMASK_MEAN = (123.675, 116.280, 103.530)  # official MEAN (RGB, 0..255)


# --------------------------------------------------------------------------
# Sample helpers


def to_planes(masks, crowd_mask, height, width):
    """``(N, H, W)`` masks + crowd -> ``(N + 1, H, W)`` uint8 planes (the
    crowd region last)."""
    n = 0 if masks is None else len(masks)
    base = getattr(masks, "base", None)
    if (crowd_mask is not None and base is not None
            and getattr(crowd_mask, "base", None) is base
            and isinstance(base, np.ndarray) and base.dtype == np.uint8
            and base.shape == (n + 1, height, width)
            and base.flags.c_contiguous
            and np.shares_memory(base[n], crowd_mask)
            and crowd_mask.ctypes.data == base[n].ctypes.data
            and (n == 0 or masks.ctypes.data == base.ctypes.data)):
        return base  # already laid out as planes (coco.load_example)
    planes = np.empty((n + 1, height, width), np.uint8)
    if n:
        planes[:n] = masks
    planes[n] = 0 if crowd_mask is None else crowd_mask
    return planes


def resize_planes(planes, width, height):
    """Nearest-neighbour resize of ``(C, H, W)`` uint8 planes.

    ``INTER_NEAREST_EXACT`` samples the source pixel containing each output
    pixel centre, the same centre convention as the bilinear image resize
    (plain ``INTER_NEAREST``, used by the official code, samples
    ``floor(x * scale)`` and shifts masks by up to half a source pixel
    against the image).
    """
    out = np.empty((len(planes), height, width), np.uint8)
    for plane, dst in zip(planes, out):
        cv2.resize(plane, (width, height), dst=dst,
                   interpolation=cv2.INTER_NEAREST_EXACT)
    return out


def pad_planes(planes, top, bottom, left, right):
    c, h, w = planes.shape
    out = np.zeros((c, h + top + bottom, w + left + right), np.uint8)
    out[:, top:top + h, left:left + w] = planes
    return out


def pad_image(image, top, bottom, left, right, value):
    return cv2.copyMakeBorder(np.ascontiguousarray(image), top, bottom, left,
                              right, cv2.BORDER_CONSTANT,
                              value=tuple(float(v) for v in value))


def masks_to_boxes(masks):
    """Tight ``(x0, y0, x1, y1)`` pixel-edge boxes of ``(N, H, W)`` masks;
    empty masks give zeros."""
    n, height, width = masks.shape
    if n == 0:
        return np.zeros((0, 4), np.float32)
    cols = masks.max(axis=1) > 0  # (N, W)
    rows = masks.max(axis=2) > 0  # (N, H)
    has = cols.any(axis=1)
    x0 = np.argmax(cols, axis=1)
    x1 = width - np.argmax(cols[:, ::-1], axis=1)
    y0 = np.argmax(rows, axis=1)
    y1 = height - np.argmax(rows[:, ::-1], axis=1)
    boxes = np.stack([x0, y0, x1, y1], -1).astype(np.float32)
    return np.where(has[:, None], boxes, 0.0).astype(np.float32)


def finalize(image, planes, classes, info, min_box_size=1.0, order=None):
    """Recompute boxes from the ``(N + 1, H, W)`` planes, drop empty and
    degenerate instances, build the output dict (module docstring)."""
    height, width = image.shape[:2]
    masks = planes[:-1]
    boxes = masks_to_boxes(masks)
    wh = boxes[:, 2:] - boxes[:, :2]
    keep = np.all(wh >= max(min_box_size, 1.0), axis=1)
    index = np.flatnonzero(keep)
    if order is not None:
        index = index[order(len(index))]
    boxes = boxes[index]
    size = np.array([width, height, width, height], np.float32)
    cxcywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2,
                             boxes[:, 2:] - boxes[:, :2]], -1) / size
    return {"image": np.ascontiguousarray(image, np.float32),
            "masks": masks[index],  # a contiguous copy
            "boxes": cxcywh.astype(np.float32), "boxes_xyxy": boxes,
            "classes": np.asarray(classes, np.int32)[index],
            "crowd_mask": np.ascontiguousarray(planes[-1]),
            "info": np.asarray(info, np.float32)}


def _start(image, masks, crowd_mask):
    image = np.asarray(image)
    height, width = image.shape[:2]
    planes = to_planes(masks, crowd_mask, height, width)
    return image, planes, height, width


# --------------------------------------------------------------------------
# OrienMask (official data/transform.py semantics)


def _gray(image):
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _clip_(x):
    return np.clip(x, 0, 255, out=x)


def color_jitter(image, rng, brightness=0.2, contrast=0.5, saturation=0.5,
                 hue=0.1):
    """Official ``ColorJitter`` on a float32 0..255 RGB image: the four
    factors are drawn, then applied in a random order (each clips to
    [0, 255], as the official ``adjust_*`` functions)."""
    ops = []
    if brightness:
        b = np.float32(rng.uniform(max(0.0, 1 - brightness), 1 + brightness))
        ops.append(lambda x: _clip_(x * b))
    if contrast:
        c = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)

        def adjust_contrast(x):
            shift = np.float32(_gray(x).mean() * (1 - c))
            out = x * np.float32(c)
            out += shift
            return _clip_(out)
        ops.append(adjust_contrast)
    if saturation:
        s = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)

        def adjust_saturation(x):
            gray = cv2.cvtColor(_gray(x), cv2.COLOR_GRAY2RGB)
            return _clip_(cv2.addWeighted(x, s, gray, 1 - s, 0.0))
        ops.append(adjust_saturation)
    if hue:
        h = rng.uniform(-hue, hue)

        def adjust_hue(x):
            hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
            # Official: shift and clip to [0, 360] (no wrap-around).
            channel = hsv[..., 0]
            channel += np.float32(h * 360)
            np.clip(channel, 0, 360, out=channel)
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        ops.append(adjust_hue)
    for i in rng.permutation(len(ops)):
        image = ops[i](image)
    return image.astype(np.float32, copy=False)


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


class ResizeEvalTransform:
    """Official evaluation transform: resize (warp, aspect ratio not kept) to
    ``image_size``, bilinear for the image and nearest for the masks, then
    ``normalize``. OrienMask (``transform_val_544``): ``/ 255``."""

    def __init__(self, image_size=(544, 544), min_box_size=1.0):
        self.image_size = tuple(int(v) for v in image_size)
        self.min_box_size = min_box_size

    def normalize(self, image):
        return image * np.float32(1 / 255)

    def __call__(self, image, masks, classes, crowd_mask, rng=None):
        image, stack, h0, w0 = _start(image, masks, crowd_mask)
        h, w = self.image_size
        image = cv2.resize(image.astype(np.float32), (w, h),
                           interpolation=cv2.INTER_LINEAR)
        stack = resize_planes(stack, w, h)
        info = [h / h0, w / w0, 0.0, 0.0, h0, w0]
        return finalize(self.normalize(image), stack, classes, info,
                        self.min_box_size)


OrienMaskEvalTransform = ResizeEvalTransform


# --------------------------------------------------------------------------
# YOLACT (maIoU config, mmdet pipeline semantics)


def photometric_distortion(image, rng, brightness_delta=32.0,
                           contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta=18.0):
    """mmdet ``PhotoMetricDistortion`` on a float32 0..255 RGB image (no
    clipping between steps, as in mmdet)."""
    image = image.astype(np.float32, copy=True)
    if rng.integers(2):
        image += np.float32(rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.integers(2)
    if mode == 1 and rng.integers(2):
        image *= np.float32(rng.uniform(*contrast_range))
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    if rng.integers(2):
        hsv[..., 1] *= np.float32(rng.uniform(*saturation_range))
    if rng.integers(2):
        hue = hsv[..., 0]
        hue += np.float32(rng.uniform(-hue_delta, hue_delta))
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if mode == 0 and rng.integers(2):
        image *= np.float32(rng.uniform(*contrast_range))
    if rng.integers(2):
        image = np.ascontiguousarray(image[..., rng.permutation(3)])
    return image


def _box_iou(patch, boxes):
    x0 = np.maximum(patch[0], boxes[:, 0])
    y0 = np.maximum(patch[1], boxes[:, 1])
    x1 = np.minimum(patch[2], boxes[:, 2])
    y1 = np.minimum(patch[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_p = (patch[2] - patch[0]) * (patch[3] - patch[1])
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area_p + area_b - inter, 1e-6)


def min_iou_crop_window(boxes, height, width, rng,
                        min_ious=(0.1, 0.3, 0.5, 0.7, 0.9),
                        min_crop_size=0.3, max_rounds=100):
    """mmdet ``MinIoURandomCrop``: ``None`` (keep the image) or
    ``(patch (x0, y0, x1, y1) int, keep (n,) bool)``; kept instances are
    those whose box centre lies inside the patch."""
    modes = (1, *min_ious, 0)
    for _ in range(max_rounds):  # mmdet loops forever; mode 1 ends it
        mode = modes[rng.integers(len(modes))]
        if mode == 1:
            return None
        for _ in range(50):
            new_w = rng.uniform(min_crop_size * width, width)
            new_h = rng.uniform(min_crop_size * height, height)
            if not 0.5 <= new_h / new_w <= 2:
                continue
            left = rng.uniform(0, width - new_w)
            top = rng.uniform(0, height - new_h)
            patch = np.array([int(left), int(top), int(left + new_w),
                              int(top + new_h)])
            if patch[2] == patch[0] or patch[3] == patch[1]:
                continue
            if len(boxes) == 0:
                return patch, np.zeros((0,), bool)
            if _box_iou(patch, boxes).min() < mode:
                continue
            center = (boxes[:, :2] + boxes[:, 2:]) / 2
            keep = ((center[:, 0] > patch[0]) & (center[:, 1] > patch[1])
                    & (center[:, 0] < patch[2]) & (center[:, 1] < patch[3]))
            if not keep.any():
                continue
            return patch, keep
    return None


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


RECIPES = {
    "orienmask": (OrienMaskTrainTransform, OrienMaskEvalTransform),
    "yolact": (YolactTrainTransform, YolactEvalTransform),
}


def make_transform(recipe, training, image_size, **kwargs):
    """``recipe`` in ``RECIPES``; ``training`` picks train or eval."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}; expected "
                         f"one of {sorted(RECIPES)}")
    cls = RECIPES[recipe][0 if training else 1]
    return cls(image_size=image_size, **kwargs)
