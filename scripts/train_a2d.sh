#!/usr/bin/env bash
# A2D-Sentences from scratch (configs/a2d_sentences.yaml): Video-Swin-T, lr 5e-5, backbone lr 5e-6,
# 2 clips per GPU on 2 GPUs, 40 epochs, lr x0.2 after epoch 15; evaluated (mAP) after every epoch.
# Usage: SWIN_CHECKPOINT=pretrained/swin_tiny_patch244_window877_kinetics400_1k.pth bash ./scripts/train_a2d.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 2)}"
A2D_ROOT="${A2D_ROOT:-$(dataset_dir a2d_sentences)}"
A2D_GT="$A2D_ROOT/a2d_sentences_test_annotations_in_coco_format.json"
setup_args

[[ -f "$A2D_GT" ]] || prepare a2d-gt --root "$A2D_ROOT" --out "$A2D_GT"
launch train -c "$CONFIGS/a2d_sentences.yaml" --set "data.root=$A2D_ROOT" --set "data.coco_gt_path=$A2D_GT" \
    "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/a2d_sentences/a2d (checkpoints/{last,best}, log.jsonl, eval/epoch_*/predictions.json)"
