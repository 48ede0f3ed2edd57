#!/usr/bin/env bash
# Ref-DAVIS17 inference and J&F (recipe davis) of a Ref-YouTube-VOS checkpoint, CHECKPOINT (default:
# the last epoch of finetune_ytb.sh), without finetuning, on 8 GPUs. Converts data/refer-davis to the
# Ref-YouTube-VOS layout first (links, nothing moved), then scores each annotator's masks and averages.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/ref_youtube_vos/finetuneytb_tiny}"
EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/davis/davis/evaluation/last}"
setup_args

[[ -f "$DAVIS_ROOT/meta_expressions/valid/meta_expressions.json" ]] || prepare davis --root "$DAVIS_ROOT"
launch evaluate -c davis --checkpoint "$CHECKPOINT" --out-dir "$EVAL_DIR" \
    --set "data.root=$DAVIS_ROOT" "${COMMON_ARGS[@]}" "$@"
echo "metrics: $EVAL_DIR/metrics.json (J&F), tables: $EVAL_DIR/global_results-val.csv, masks: $EVAL_DIR/anno_{0..3}"
