#!/usr/bin/env bash
# A2D-Sentences from scratch (recipe a2d_sentences): Video-Swin-T, lr 5e-5, backbone lr 5e-6,
# 2 clips per GPU on 2 GPUs, 40 epochs, lr x0.2 after epoch 15; evaluated (mAP) after every epoch.
# Usage: SWIN_CHECKPOINT=pretrained/swin_tiny_patch244_window877_kinetics400_1k.pth bash ./scripts/train_a2d.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 2)}"
setup_args

prepare_a2d_gt
launch train -c a2d_sentences --set "data.root=$A2D_ROOT" --set "data.coco_gt_path=$A2D_GT" \
    "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/a2d_sentences/a2d (checkpoints/{last,best}, log.jsonl, evaluation/epoch_*/predictions.json)"
