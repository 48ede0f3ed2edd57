#!/usr/bin/env bash
# MeViS evaluation (recipe mevis) of CHECKPOINT (default: the best epoch of train_mevis.sh) on
# MEVIS_SPLIT (default valid_u: J, F, J&F and per_expression.csv; valid: Annotations/ and submission.zip
# of <video>/<exp_id>/<frame>.png for the evaluation server), on 1 GPU.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 1)}"
MEVIS_SPLIT="${MEVIS_SPLIT:-valid_u}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/mevis/mevis/checkpoints/best}"
EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/mevis/mevis/evaluation/best_$MEVIS_SPLIT}"
setup_args

launch evaluate -c mevis --checkpoint "$CHECKPOINT" --out-dir "$EVAL_DIR" \
    --set "data.root=$MEVIS_ROOT" --set "data.mevis_eval_split=$MEVIS_SPLIT" "${COMMON_ARGS[@]}" "$@"
if [[ "$MEVIS_SPLIT" == valid ]]; then
    echo "submission: $EVAL_DIR/submission.zip (masks in $EVAL_DIR/Annotations)"
else
    echo "metrics: $EVAL_DIR/metrics.json (per expression: $EVAL_DIR/per_expression.csv)"
fi
