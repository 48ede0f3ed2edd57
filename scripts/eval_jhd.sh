#!/usr/bin/env bash
# JHMDB-Sentences evaluation (recipe jhmdb_sentences) of an A2D checkpoint, CHECKPOINT (default:
# the best epoch of finetune_a2d.sh, as the reference evaluated its A2D finetune), on 2 GPUs.
# JHMDB_SAMPLES=<MTTR sample list> evaluates MTTR's frames instead of drawing 3 per video (seed 42).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 2)}"
JHMDB_GT="${JHMDB_GT:-$CACHE_DIR/jhmdb_sentences_gt_annotations_in_coco_format.json}"
CHECKPOINT="${CHECKPOINT:-$OUTPUT_DIR/a2d_sentences/finetune_a2d/checkpoints/best}"
EVAL_DIR="${EVAL_DIR:-$OUTPUT_DIR/jhmdb_sentences/jhmdb_eval/evaluation/best}"
SAMPLES_ARGS=()
CONFIG_SAMPLES=(--set data.jhmdb_samples_metadata=null)
if [[ -n "${JHMDB_SAMPLES:-}" ]]; then
    SAMPLES_ARGS=(--samples-metadata "$JHMDB_SAMPLES")
    CONFIG_SAMPLES=(--set "data.jhmdb_samples_metadata=$JHMDB_SAMPLES")
fi
setup_args

# The ground truth lists exactly the evaluated frames, so it is rebuilt every time (a few seconds).
prepare jhmdb-gt --root "$JHMDB_ROOT" --out "$JHMDB_GT" "${SAMPLES_ARGS[@]}"
launch evaluate -c jhmdb_sentences --checkpoint "$CHECKPOINT" --out-dir "$EVAL_DIR" \
    --set "data.root=$JHMDB_ROOT" --set "data.coco_gt_path=$JHMDB_GT" "${CONFIG_SAMPLES[@]}" "${COMMON_ARGS[@]}" "$@"
echo "metrics: $EVAL_DIR/metrics.json, predictions: $EVAL_DIR/predictions.json"
