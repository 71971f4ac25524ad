"""Joint augmentation of image, instance masks and crowd regions (numpy/OpenCV).

Every geometric step moves the image and one ``(N + 1, H, W)`` uint8 array
of planes together: the N instance masks plus, as the last plane, the
crowd (ignore) region. Boxes are never transformed: after the last step they are
recomputed as the tight boxes of the transformed masks, and instances whose
mask became empty (or smaller than ``min_box_size`` pixels wide or high)
are dropped with their masks. Randomness comes only from the
``numpy.random.Generator`` passed in, so a seed reproduces an example.

The recipes themselves live with their model family
(``families/orienmask/augment.py``: the official OrienMask
``transform_train_544``; ``families/yolact/augment.py``: the maIoU-YOLACT
mmdet pipeline); this module holds the steps they share and the plain
evaluation resize.

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

from orienmask_tf.ops import box_ops


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
# Photometric steps (torchvision ColorJitter as OrienMask uses it)


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




# --------------------------------------------------------------------------
# mmdet pipeline steps (PhotoMetricDistortion, MinIoURandomCrop)


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
            if box_ops.pairwise_iou(patch[None], boxes,
                                    eps=1e-6)[0].min() < mode:
                continue
            center = (boxes[:, :2] + boxes[:, 2:]) / 2
            keep = ((center[:, 0] > patch[0]) & (center[:, 1] > patch[1])
                    & (center[:, 0] < patch[2]) & (center[:, 1] < patch[3]))
            if not keep.any():
                continue
            return patch, keep
    return None
