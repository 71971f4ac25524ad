#!/usr/bin/env bash
# The README's main command, CPU only, about 12-15 minutes on 2 cores:
# set up .venv, generate the synthetic shapes dataset (simple style), train a
# small OrienMask (configs/quickstart.yaml), evaluate it on the shapes
# validation split (COCO bbox + segm tables), export it as a SavedModel and
# draw its predictions.
#   bash scripts/quickstart.sh                  OrienMask (runs/quickstart)
#   bash scripts/quickstart.sh --model yolact   YOLACT with ATSS-maIoU
#                                               (runs/quickstart_yolact)
#   bash scripts/quickstart.sh --model mayolact maYOLACT: + CARAFE FPN, DCNv2,
#                                               2 anchors, cosine (runs/quickstart_mayolact)
# Re-running resumes an interrupted training (`train --resume runs/<name>`:
# from runs/<name>/backup) or, if it finished, only evaluates / exports /
# draws again; delete runs/<name> to train from scratch. Further arguments
# go to `orienmask-tf train` (e.g. --set train.epochs=2 for a smoke run; a
# re-run with other values is refused, naming them, unless they are safe to
# change and --force is given: --set train.epochs=20 --force trains on).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
name=quickstart
if [ "${1:-}" = "--model" ]; then
  case "${2:-}" in
    orienmask) ;;
    yolact) name=quickstart_yolact ;;
    mayolact) name=quickstart_mayolact ;;
    *) echo "--model: expected orienmask, yolact or mayolact, got '${2:-}'" >&2
       exit 2 ;;
  esac
  shift 2
fi
bash scripts/setup_env.sh
om=.venv/bin/orienmask-tf
run=runs/$name
data=data/shapes_simple
if [ ! -f "$data/annotations/instances_val.json" ]; then
  "$om" make-shapes --output "$data" --style simple --num-train 600 \
    --num-val 100 --image-size 160 160 --mean-instances 3
fi
# Always in runs/<name> (train alone would start runs/<name>2 next to a
# finished run): continue the run there, or start it there.
if [ -f "$run/config.yaml" ]; then
  folder=(--resume "$run")
else
  folder=(--output "$run")
fi
"$om" train --config "configs/$name.yaml" --verbose 2 "${folder[@]}" "$@"
"$om" evaluate --model "$run/model.keras" --output "$run/eval.json" \
  --results-output "$run/val_results.json"
rm -rf "$run/saved_model"
"$om" export --model "$run/model.keras" \
  --output "$run/saved_model" --model-name "$name" --version 1 \
  --score-threshold 0.3
"$om" predict --model "$run/model.keras" --images "$data/val/00000[0-7].jpg" \
  --output "$run/predictions" --coco-json "$run/predictions/detections.json" \
  --annotations "$data/annotations/instances_val.json" \
  --score-threshold 0.1  # the small model scores low; ~0.3 for a well-trained one
elapsed=$(( $(date +%s) - start ))
cat <<MSG

quickstart done in ${elapsed} s. Outputs:
  $run/model.keras                 trained network (best by mask AP: $run/checkpoints/best.keras)
  $run/eval.json                   COCO bbox / segm metrics on $data val (table above)
  $run/results.png                 losses, learning rate and val AP per epoch
  $run/pr_curves.png, per_class_ap.png, confusion_matrix.png   (+ .json) evaluation pictures
  $run/saved_model/$name/1    SavedModel for TF Serving (saved_model_cli show --dir ... --all)
  $run/predictions/                validation images with masks, boxes, classes and scores drawn
  $run/logs/                       TensorBoard: tensorboard --logdir $run/logs
MSG
