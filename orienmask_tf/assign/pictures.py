"""Picture of the anchors each assigner makes positive (like maIoU Fig. 1).

One panel per assigner, side by side: the image (or grey) with every GT mask
tinted in its colour and box outlined, and each positive anchor drawn as a
rectangle in the colour of its GT (centre dot included). Numpy + OpenCV
(``opencv-python-headless``); no TensorFlow needed.
"""

import numpy as np


def _palette(count):
    hues = (np.arange(max(count, 1)) * 0.618034) % 1.0
    import cv2
    hsv = np.stack([hues * 179, np.full_like(hues, 200),
                    np.full_like(hues, 255)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0].astype(np.int32)


def render_assignments(gt_masks, gt_boxes, anchors, assignments, num_gts=None,
                       image=None, alpha=0.45):
    """Return an (H, W * panels + gaps, 3) uint8 BGR picture.

    Args:
        gt_masks: (G, H, W) masks (padded rows beyond ``num_gts`` ignored).
        gt_boxes: (G, 4) x1, y1, x2, y2.
        anchors: (N, 4) x1, y1, x2, y2.
        assignments: ``{title: assigned_gt_inds (N,)}`` (0 negative, -1
            ignored, k >= 1 GT k - 1), e.g. outputs of the three assigners.
        image: optional (H, W, 3) uint8 BGR background.
    """
    import cv2

    gt_masks = np.asarray(gt_masks) != 0
    gt_boxes = np.asarray(gt_boxes, np.float32)
    anchors = np.asarray(anchors, np.float32)
    num_gts = len(gt_masks) if num_gts is None else int(num_gts)
    height, width = gt_masks.shape[1:]
    colours = _palette(num_gts)
    if image is None:
        base = np.full((height, width, 3), 235, np.int32)
    else:
        base = np.asarray(image, np.int32).copy()
    for g in range(num_gts):
        tint = (1 - alpha) * base[gt_masks[g]] + alpha * colours[g]
        base[gt_masks[g]] = tint.astype(np.int32)
    base = base.astype(np.uint8)

    panels = []
    for title, inds in assignments.items():
        panel = base.copy()
        inds = np.asarray(inds).reshape(-1)
        for g in range(num_gts):
            x1, y1, x2, y2 = np.round(gt_boxes[g]).astype(int)
            cv2.rectangle(panel, (x1, y1), (x2 - 1, y2 - 1),
                          tuple(int(c) for c in colours[g] // 2), 1)
        for n in np.nonzero(inds > 0)[0]:
            colour = tuple(int(c) for c in colours[inds[n] - 1])
            x1, y1, x2, y2 = np.round(anchors[n]).astype(int)
            cv2.rectangle(panel, (x1, y1), (x2, y2), colour, 1)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            cv2.circle(panel, (cx, cy), 2, colour, -1)
        label = f"{title}: {int((inds > 0).sum())} positives"
        cv2.putText(panel, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(panel)
        panels.append(np.full((height, 6, 3), 255, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


def save_assignments_png(path, gt_masks, gt_boxes, anchors, assignments,
                         num_gts=None, image=None):
    """Write ``render_assignments(...)`` to ``path`` (PNG); return it."""
    import cv2

    picture = render_assignments(gt_masks, gt_boxes, anchors, assignments,
                                 num_gts=num_gts, image=image)
    if not cv2.imwrite(str(path), picture):
        raise OSError(f"could not write {path}")
    return picture
