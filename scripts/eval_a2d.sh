#!/usr/bin/env bash
# A2D-Sentences test evaluation (recipe a2d_sentences) of CHECKPOINT (default: the best epoch of
# train_a2d.sh): COCO mask mAP, P@0.5..0.9, overall and mean IoU, on 2 GPUs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 2)}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/a2d_sentences/a2d/checkpoints/best}"
EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/a2d_sentences/a2d/evaluation/best}"
setup_args

prepare_a2d_gt
launch evaluate -c a2d_sentences --checkpoint "$CHECKPOINT" --out-dir "$EVAL_DIR" \
    --set "data.root=$A2D_ROOT" --set "data.coco_gt_path=$A2D_GT" "${COMMON_ARGS[@]}" "$@"
echo "metrics: $EVAL_DIR/metrics.json, predictions: $EVAL_DIR/predictions.json"
