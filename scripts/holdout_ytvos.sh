#!/usr/bin/env bash
# Ref-YouTube-VOS scored locally (the evaluation server is gone): HOLDOUT_VIDEOS (default 200) training
# videos drawn with HOLDOUT_SEED (default 0) are held out, with their masks, in a view of the dataset at
# HOLDOUT_DIR (default $CACHE_DIR/ytvos_holdout_n<videos>_seed<seed>; links, the dataset is only read).
# The recipe of train_ytvos_scratch.sh (the refer_youtube_vos recipe, 8 GPUs) trains on the other
# videos; after every epoch the held-out videos are segmented and scored: J, F, J&F, best by J&F.
# Not comparable with the server's valid numbers (docs/datasets.md#local-validation-on-ref-youtube-vos).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
NUM_GPUS="${NUM_GPUS:-$(default_gpus 8)}"
HOLDOUT_VIDEOS="${HOLDOUT_VIDEOS:-200}"
HOLDOUT_SEED="${HOLDOUT_SEED:-0}"
HOLDOUT_DIR="${HOLDOUT_DIR:-$CACHE_DIR/ytvos_holdout_n${HOLDOUT_VIDEOS}_seed${HOLDOUT_SEED}}"
setup_args

# The view is drawn once; an existing one (its holdout.json) is kept, so a resumed run reads the same split.
[[ -f "$HOLDOUT_DIR/holdout.json" ]] || prepare ytvos-holdout --root "$YTVOS_ROOT" --videos "$HOLDOUT_VIDEOS" \
    --seed "$HOLDOUT_SEED" --out "$HOLDOUT_DIR"
prepare ytvos-samples --root "$HOLDOUT_DIR" --window-size 8 --workers "${PREPARE_WORKERS:-8}" --cache-dir "$CACHE_DIR"
launch train -c refer_youtube_vos --set "data.root=$HOLDOUT_DIR" --version ytb_holdout \
    "${COMMON_ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "run directory: $OUTPUT_DIR/ref_youtube_vos/ytb_holdout (evaluation/epoch_*/per_expression.csv; held out: $HOLDOUT_DIR/holdout.json)"
