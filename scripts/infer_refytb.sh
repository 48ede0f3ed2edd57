#!/usr/bin/env bash
# Ref-YouTube-VOS valid inference (recipe refer_youtube_vos_finetune) of CHECKPOINT (default: the
# last epoch of finetune_ytb.sh) on 2 GPUs: Annotations/<video>/<exp_id>/<frame>.png and the zip to
# upload to the evaluation server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 2)}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/ref_youtube_vos/finetuneytb_tiny}"
EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/ref_youtube_vos/finetuneytb_tiny/evaluation/last}"
setup_args

launch evaluate -c refer_youtube_vos_finetune --checkpoint "$CHECKPOINT" --out-dir "$EVAL_DIR" \
    --set "data.root=$YTVOS_ROOT" "${COMMON_ARGS[@]}" "$@"
echo "submission: $EVAL_DIR/submission.zip (masks in $EVAL_DIR/Annotations)"
