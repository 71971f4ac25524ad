"""Minimal TF Serving REST client for an exported OrienMask.

    python scripts/serving_client.py IMAGE [IMAGE ...] \
        [--url http://localhost:8501] [--model orienmask_yolo_fpnplus_coco_544_anchor4] \
        [--score 0.3] [--draw OUT_DIR]

Sends each image's encoded bytes to the ``serve_jpeg`` signature (base64, the
REST convention for binary strings), prints the detections above ``--score``
and, with ``--draw``, writes the image with masks and boxes drawn on it.
Needs only numpy and opencv-python-headless (no TensorFlow).
"""

import argparse
import base64
import json
import os
import sys
import urllib.request

import cv2
import numpy as np


def predict(url, model, encoded, signature="serve_jpeg", timeout=120):
    body = json.dumps({
        "signature_name": signature,
        "instances": [{"b64": base64.b64encode(encoded).decode("ascii")}],
    }).encode("utf-8")
    request = urllib.request.Request(
        f"{url}/v1/models/{model}:predict", data=body,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["predictions"][0]


def draw(image, detections, score_threshold):
    height, width = image.shape[:2]
    canvas = image.copy()
    rng = np.random.RandomState(0)
    for k in range(detections["num_detections"]):
        if detections["scores"][k] < score_threshold:
            continue
        color = rng.randint(64, 256, 3)
        mask = np.asarray(detections["masks"][k], np.uint8)
        mask = cv2.resize(mask, (width, height),
                          interpolation=cv2.INTER_NEAREST).astype(bool)
        canvas[mask] = (0.5 * canvas[mask] + 0.5 * color).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(v)) for v in detections["boxes"][k])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color.tolist(), 2)
        cv2.putText(canvas, f"{detections['classes'][k]}:"
                    f"{detections['scores'][k]:.2f}", (x1, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, color.tolist(), 1)
    return canvas


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--url", default="http://localhost:8501")
    parser.add_argument("--model",
                        default="orienmask_yolo_fpnplus_coco_544_anchor4")
    parser.add_argument("--score", type=float, default=0.3)
    parser.add_argument("--draw", metavar="OUT_DIR")
    args = parser.parse_args()
    for path in args.images:
        with open(path, "rb") as f:
            encoded = f.read()
        detections = predict(args.url, args.model, encoded)
        keep = [k for k in range(detections["num_detections"])
                if detections["scores"][k] >= args.score]
        print(f"{path}: {len(keep)} detections with score >= {args.score}")
        for k in keep:
            box = ", ".join(f"{v:.1f}" for v in detections["boxes"][k])
            print(f"  class {detections['classes'][k]:3d}  score "
                  f"{detections['scores'][k]:.3f}  box [{box}]")
        if args.draw:
            os.makedirs(args.draw, exist_ok=True)
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            out = os.path.join(args.draw, os.path.basename(path) + ".png")
            cv2.imwrite(out, draw(image, detections, args.score))
            print(f"  drew {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
