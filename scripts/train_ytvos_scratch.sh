#!/usr/bin/env bash
# Ref-YouTube-VOS from scratch (recipe refer_youtube_vos): Video-Swin-T, 65 classes, frozen text
# encoder, lr 1e-4, backbone lr 1e-5, 1 clip per GPU on 8 GPUs, 30 epochs, lr x0.1 after epoch 20.
# After every epoch the valid split is segmented into a submission zip (scored by the server).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
setup_args

prepare_ytvos_samples
launch train -c refer_youtube_vos --set "data.root=$YTVOS_ROOT" \
    "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/ref_youtube_vos/ytb_from_scratch (checkpoints/, evaluation/epoch_*/submission.zip)"
