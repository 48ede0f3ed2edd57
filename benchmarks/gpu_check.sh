#!/usr/bin/env bash
# Exercise every CUDA path of wavecl on one machine, then print throughput and peak memory at the full
# configuration. Under 8 minutes on one recent GPU.
#
#   benchmarks/gpu_check.sh [WORK_DIR]        (default: a new temporary folder, kept for inspection)
#
# Paths, each through the `wavecl` command line on the tiny config and generated synthetic data:
#   train with bf16 autocast, with fp16 autocast and the gradient scaler, with the text encoder trainable
#   (--set model.freeze_text_encoder=false) and with --compile; torchrun with NCCL on one GPU (and on 2
#   processes when 2 GPUs exist); evaluate and predict with autocast, and with --compile.
# Then benchmarks/bench_model.py prints the network's speed as a share of the GPU's bf16 matmul ceiling
# measured in the same run (full configuration: eval, A2D eval, training step), and
# benchmarks/gpu_check.py the table (precision that ran, clips/s, frames/s, peak memory) of training
# steps, evaluation and prediction at the full A2D configuration with random weights (random roberta-base).
#
# Without a GPU the same commands run on the CPU (autocast is then off, torchrun uses gloo) and the
# table uses the tiny configuration; the --compile steps are skipped there (inductor's C++ build takes
# minutes on a CPU) unless GPU_CHECK_COMPILE=1. GPU_CHECK_COMPILE=0 skips them on a GPU too.
set -euo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
WORK="${1:-$(mktemp -d -t wavecl_gpu_check.XXXXXX)}"
mkdir -p "$WORK"
PYTHON="${PYTHON:-python}"

GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$GPUS" -gt 0 ]; then
    DEVICE=cuda
    SIZE=full
    COMPILE="${GPU_CHECK_COMPILE:-1}"
    STEPS=10
else
    DEVICE=cpu
    SIZE=tiny
    COMPILE="${GPU_CHECK_COMPILE:-0}"
    STEPS=2
    echo "no CUDA device: running the CPU-safe parts (tiny table, autocast off, gloo, no --compile)"
fi
echo "work folder: $WORK; device: $DEVICE ($GPUS GPU(s))"

STEP=0
START=$SECONDS
run() {
    # run DESCRIPTION COMMAND...: the command's output goes to a log; a failure prints its end and stops.
    local description=$1
    shift
    STEP=$((STEP + 1))
    local log="$WORK/step_$(printf %02d "$STEP").log"
    local begin=$SECONDS
    printf '%2d. %-58s ' "$STEP" "$description"
    if "$@" >"$log" 2>&1; then
        echo "ok ($((SECONDS - begin)) s)"
    else
        echo "FAILED (see $log)"
        tail -n 40 "$log"
        exit 1
    fi
}

DATA="$WORK/synthetic"
RUNS="$WORK/runs"
TINY=(-c configs/tiny.yaml --device "$DEVICE" --set "data.root=$DATA" --output-dir "$RUNS" --epochs 1
      --set train.max_steps_per_epoch=2 --set data.num_workers=2)

run "prepare synthetic data" "$PYTHON" -m wavecl prepare synthetic --root "$DATA" --videos 4 --valid-videos 1 \
    --frames 6 --size 64 96
FRAMES="$DATA/valid/JPEGImages/$(ls "$DATA/valid/JPEGImages" | head -n 1)"
run "train, bf16 autocast (+ evaluation)" "$PYTHON" -m wavecl train "${TINY[@]}" --amp bf16 --version bf16
run "train, fp16 autocast + GradScaler" "$PYTHON" -m wavecl train "${TINY[@]}" --amp fp16 --version fp16
run "train, bf16, text encoder trainable" "$PYTHON" -m wavecl train "${TINY[@]}" --amp bf16 --version text \
    --set model.freeze_text_encoder=false
run "torchrun, 1 process ($([ "$DEVICE" = cuda ] && echo NCCL || echo gloo))" \
    torchrun --standalone --nproc_per_node 1 -m wavecl train "${TINY[@]}" --amp bf16 --version ddp1
if [ "$GPUS" -ge 2 ]; then
    run "torchrun, 2 processes (NCCL)" \
        torchrun --standalone --nproc_per_node 2 -m wavecl train "${TINY[@]}" --amp bf16 --version ddp2
fi
run "evaluate, bf16 autocast" "$PYTHON" -m wavecl evaluate -c configs/tiny.yaml --device "$DEVICE" \
    --set "data.root=$DATA" --checkpoint "$RUNS/synthetic/bf16" --amp bf16 --out-dir "$WORK/evaluate"
run "predict, autocast, 2 sentences" "$PYTHON" -m wavecl predict "$FRAMES" --checkpoint "$RUNS/synthetic/bf16" \
    --text "a red circle" --text "the blue square" --device "$DEVICE" --out-dir "$WORK/predict"
if [ "$COMPILE" = 1 ]; then
    run "train, bf16, --compile" "$PYTHON" -m wavecl train "${TINY[@]}" --amp bf16 --version compiled --compile
    run "evaluate, bf16, --compile" "$PYTHON" -m wavecl evaluate -c configs/tiny.yaml --device "$DEVICE" \
        --set "data.root=$DATA" --checkpoint "$RUNS/synthetic/bf16" --amp bf16 --compile \
        --out-dir "$WORK/evaluate_compiled"
    run "predict, autocast, --compile" "$PYTHON" -m wavecl predict "$FRAMES" --checkpoint "$RUNS/synthetic/bf16" \
        --text "a red circle" --device "$DEVICE" --compile --out-dir "$WORK/predict_compiled"
    if grep -h "torch.compile .*running" "$WORK"/step_*.log; then
        echo "torch.compile fell back to eager mode (warning above)"
    fi
fi

if [ "$DEVICE" = cuda ]; then
    SPEED_ARGS=(--full --device cuda --amp bf16 --workloads eval a2d train --repeats 3)
else
    SPEED_ARGS=(--device cpu)
fi
run "network speed against the matmul ceiling ($SIZE)" "$PYTHON" benchmarks/bench_model.py "${SPEED_ARGS[@]}"
SPEED_LOG="$WORK/step_$(printf %02d "$STEP").log"

TABLE_ARGS=(--work "$WORK/table" --device "$DEVICE" --size "$SIZE" --steps "$STEPS")
[ "$COMPILE" = 1 ] && TABLE_ARGS+=(--compile)
run "throughput table ($SIZE configuration)" "$PYTHON" benchmarks/gpu_check.py "${TABLE_ARGS[@]}"
sed -n '/WaveCL speed/,$p' "$SPEED_LOG"
sed -n '/gpu_check:/,$p' "$WORK/step_$(printf %02d "$STEP").log"
echo "all $STEP steps passed in $((SECONDS - START)) s; logs in $WORK"
