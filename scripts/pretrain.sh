#!/usr/bin/env bash
# RefCOCO/+/g pretraining (recipe coco): Video-Swin-T, trained text encoder, lr 1e-4, backbone
# lr 1e-5, text encoder lr 5e-6, 8 images per GPU on 8 GPUs, 30 epochs, lr x0.1 after epochs 15 and 20;
# best checkpoint by the mean mask mAP of the three val sets.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
setup_args

launch train -c coco --set "data.root=$COCO_ROOT" "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/coco/coco_pretrain_tiny (checkpoints/{last,best}, evaluation/epoch_*/<set>_predictions.json)"
