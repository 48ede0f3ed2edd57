#!/usr/bin/env bash
# A2D-Sentences finetune of the RefCOCO pretraining (recipe a2d_sentences_finetune): frozen text
# encoder, lr 3e-5, backbone lr 3e-6, 1 clip per GPU on 8 GPUs, 20 epochs, no lr drop. A fresh run from
# CHECKPOINT (the reference's script resumed a crashed run by mistake).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/coco/coco_pretrain_tiny}"
setup_args

prepare_a2d_gt
launch train -c a2d_sentences_finetune --set "data.root=$A2D_ROOT" --set "data.coco_gt_path=$A2D_GT" \
    --pretrained "$CHECKPOINT" "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/a2d_sentences/finetune_a2d (checkpoints/{last,best}, log.jsonl, evaluation/epoch_*/)"
