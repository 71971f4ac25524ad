"""Anchor priors of the YOLO detector that OrienMask builds on (paper Sec. 3.1).

Anchors are ``[width, height]`` in pixels of the network input. The official
code defines them for a 544x544 input (``config/base.py``) and uses them as
given for that size; nothing rescales them when the input size changes.
``ANCHOR_MASK[s]`` lists the global anchor ids of scale ``s`` in the order
stride 32, 16, 8 -- the order of every per-scale list in this project.
"""

import numpy as np

# YOLOv3 priors: the paper's "base" rows (Table 4, rows 1-2).
ANCHORS_YOLOV3 = (
    (10, 13), (16, 30), (33, 23),
    (30, 61), (62, 45), (59, 119),
    (116, 90), (156, 198), (373, 326),
)
# YOLOv4 priors ("anchor4"): the paper's "+ larger anchors" (Table 4, row 3).
ANCHORS_YOLOV4 = (
    (12, 16), (19, 36), (40, 28),
    (36, 75), (76, 55), (72, 146),
    (142, 110), (192, 243), (459, 401),
)
ANCHOR_PRESETS = {"yolov3": ANCHORS_YOLOV3, "yolov4": ANCHORS_YOLOV4}

STRIDES = (32, 16, 8)
ANCHOR_MASK = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
# Orientation maps are predicted at stride 4 for every scale.
ORIENTATION_STRIDE = 4
# Inputs must be divisible by the coarsest stride so that upsampled routes
# line up with the backbone features they are concatenated with.
INPUT_DIVISOR = 32


def resolve_anchors(anchors):
    """Return a ``(9, 2)`` float32 array from a preset name or a list of pairs."""
    if isinstance(anchors, str):
        if anchors not in ANCHOR_PRESETS:
            raise ValueError(
                f"unknown anchor preset {anchors!r}; expected one of "
                f"{sorted(ANCHOR_PRESETS)} or a list of 9 [width, height] pairs")
        anchors = ANCHOR_PRESETS[anchors]
    array = np.asarray(anchors, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 2 or not np.all(array > 0):
        raise ValueError(
            "anchors must be a list of positive [width, height] pairs, got "
            f"shape {array.shape}")
    return array


def grid_sizes(image_size, strides=STRIDES):
    """Grid ``(height, width)`` of each scale (default order stride 32, 16,
    8)."""
    height, width = (int(v) for v in image_size)
    return tuple((height // int(s), width // int(s)) for s in strides)


# The YOLO cell grid of one scale: every other module (targets, loss,
# decoder) builds its cell offsets and grid-unit anchors with the functions
# below.

GRID_ANCHOR_ORDERS = ("cell_size", "normalized")


def cell_size(image_size, grid_size):
    """Input pixels per cell ``(sw, sh)``, float32, of a ``(gh, gw)`` grid
    (official float32 ``[W, H] / [gw, gh]``)."""
    height, width = image_size
    gh, gw = grid_size
    return (np.array([width, height], np.float32)
            / np.array([gw, gh], np.float32))


def grid_anchors(anchors, image_size, grid_size, order="cell_size"):
    """Anchors ``(..., 2)`` ``[width, height]`` in input pixels -> in cells
    of a ``(gh, gw)`` grid, float32.

    The official code computes this in two float32 orders, which differ in
    the last bit for a few percent of anchors, so the order is explicit:

    * ``"cell_size"``: ``anchors / ([W, H] / [gw, gh])`` (official
      ``OrienMaskYOLOLoss``: targets and loss);
    * ``"normalized"``: ``anchors / [W, H] * [gw, gh]`` (official
      ``OrienMaskYOLOPostProcess``: decoding).
    """
    anchors = np.asarray(anchors, np.float32)
    if order == "cell_size":
        return anchors / cell_size(image_size, grid_size)
    if order == "normalized":
        height, width = image_size
        gh, gw = grid_size
        norm = anchors / np.array([width, height], np.float32)
        return (norm * np.array([gw, gh], np.float32)).astype(np.float32)
    raise ValueError(f"order must be one of {GRID_ANCHOR_ORDERS}, "
                     f"got {order!r}")


def cell_offsets(grid_size):
    """Column and row index of every cell of a ``(gh, gw)`` grid: ``(cols,
    rows)``, float32 ``(gh, gw)`` each (what ``sigmoid(tx, ty)`` is added
    to)."""
    gh, gw = grid_size
    rows, cols = np.meshgrid(np.arange(gh, dtype=np.float32),
                             np.arange(gw, dtype=np.float32), indexing="ij")
    return cols, rows
