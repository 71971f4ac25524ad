#!/usr/bin/env bash
# The README's main command: set up .venv, then build the full-size
# OrienMask (FPN plus, YOLOv4 anchors, COCO, 544x544) from its config and
# print its parameter count and output shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/orienmask-tf info --config configs/orienmask_yolo_fpnplus_coco_544_anchor4.yaml "$@"
