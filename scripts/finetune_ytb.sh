#!/usr/bin/env bash
# Ref-YouTube-VOS finetune of the RefCOCO pretraining (recipe refer_youtube_vos_finetune): trained
# text encoder, lr 1e-4, backbone lr 1e-5, text encoder lr 5e-6, 8 clips per GPU on 8 GPUs, 25 epochs,
# lr x0.1 after epoch 10. A fresh run from CHECKPOINT (class heads re-initialised), not a resume.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/coco/coco_pretrain_tiny}"
setup_args

prepare_ytvos_samples
launch train -c refer_youtube_vos_finetune --set "data.root=$YTVOS_ROOT" --pretrained "$CHECKPOINT" \
    "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/ref_youtube_vos/finetuneytb_tiny (checkpoints/, evaluation/epoch_*/submission.zip)"
