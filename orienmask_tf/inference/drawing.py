# SPDX-License-Identifier: Apache-2.0
"""Drawing detections (masks, boxes, class names, scores) on an image."""

import cv2
import numpy as np

PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
    (188, 189, 34), (23, 190, 207)], np.uint8)


def draw_detections(image, boxes, scores, classes, masks, class_names=(),
                    score_threshold=0.3, alpha=0.5):
    """Overlay masks, boxes and ``name score`` labels on an RGB uint8 image.

    ``boxes`` ``(P, 4)`` x1, y1, x2, y2 and ``masks`` ``(P, h, w)`` in the
    frame of ``image`` (masks of another size are resized, nearest).
    """
    out = image.astype(np.float32).copy()
    height, width = image.shape[:2]
    keep = [i for i in range(len(classes))
            if classes[i] >= 0 and scores[i] >= score_threshold]
    for rank, i in enumerate(keep):
        colour = PALETTE[int(classes[i]) % len(PALETTE)].astype(np.float32)
        if masks is not None:
            mask = np.asarray(masks[i]).astype(np.uint8)
            if mask.shape != (height, width):
                mask = cv2.resize(mask, (width, height),
                                  interpolation=cv2.INTER_NEAREST)
            on = mask > 0
            out[on] = (1 - alpha) * out[on] + alpha * colour
    out = np.clip(out, 0, 255).astype(np.uint8)
    for i in keep:
        colour = tuple(int(c) for c in PALETTE[int(classes[i]) % len(PALETTE)])
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
        k = int(classes[i])
        name = class_names[k] if k < len(class_names) else f"class {k}"
        label = f"{name} {float(scores[i]):.2f}"
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        y = max(y1, th + 2)
        cv2.rectangle(out, (x1, y - th - 2), (x1 + tw + 2, y), colour, -1)
        cv2.putText(out, label, (x1 + 1, y - 2), cv2.FONT_HERSHEY_SIMPLEX,
                    0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out
