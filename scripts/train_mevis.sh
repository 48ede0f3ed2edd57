#!/usr/bin/env bash
# MeViS from scratch (recipe mevis): Video-Swin-T, one class, frozen text encoder, lr 1e-4, backbone
# lr 1e-5, 1 clip per GPU on 8 GPUs, 30 epochs, lr x0.1 after epoch 20. After every epoch valid_u is
# segmented and scored (J, F, J&F; the best epoch becomes checkpoints/best).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
setup_args

launch train -c mevis --set "data.root=$MEVIS_ROOT" "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/mevis/mevis (checkpoints/, evaluation/epoch_*/per_expression.csv)"
