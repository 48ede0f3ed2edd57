# Sourced by every scripts/*.sh: environment variables, the WAVECL_TINY smoke-run overrides and the launcher.
#
#   NUM_GPUS          processes (one per GPU); > 1 launches through torchrun (each script has its own default)
#   DEVICE            cpu or cuda (default: cuda when available; cpu with WAVECL_TINY=1)
#   DATA_ROOT         folder holding the datasets (default data); per dataset: A2D_ROOT, JHMDB_ROOT,
#                     YTVOS_ROOT, COCO_ROOT, DAVIS_ROOT, MEVIS_ROOT
#   OUTPUT_DIR        root of the run directories (default runs)
#   CACHE_DIR         derived files: sample lists, COCO-format ground truth (default $OUTPUT_DIR/cache);
#                     the dataset folders are only read
#   SWIN_CHECKPOINT   Kinetics Video-Swin-T .pth (training from scratch and pretraining)
#   TEXT_ENCODER      Hugging Face RoBERTa folder (default: the config's pretrained/roberta-base)
#   CHECKPOINT        input checkpoint of finetune / eval / infer scripts (run dir, checkpoint folder or pointer)
#   WAVECL_TINY=1     smoke run: the reduced model of the packaged recipe tiny, 1 epoch of TINY_STEPS (2) steps on the CPU
#   PYTHON            interpreter where wavecl is installed (default: the active virtual environment's,
#                     else .venv/bin/python of the repository when it exists, else python3 from PATH)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
        PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        PYTHON="$REPO_ROOT/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
# Refuse at once, by name, an interpreter without wavecl's dependencies (another environment's python3).
if ! "$PYTHON" -c 'import importlib.metadata as m; m.version("wavecl"); import torch' >/dev/null 2>&1; then
    echo "error: the interpreter '$PYTHON' ($(command -v "$PYTHON" || echo 'not found')) has no wavecl installation;" \
        "activate the environment of 'pip install -e .' or set PYTHON=/path/to/its/python" >&2
    exit 1
fi
WAVECL_TINY="${WAVECL_TINY:-0}"
DATA_ROOT="${DATA_ROOT:-data}"
OUTPUT_DIR="${OUTPUT_DIR:-runs}"
CACHE_DIR="${CACHE_DIR:-$OUTPUT_DIR/cache}"
DEVICE="${DEVICE:-}"
if [[ "$WAVECL_TINY" == 1 && -z "$DEVICE" ]]; then
    DEVICE=cpu
fi

# dataset_dir NAME...: $DATA_ROOT/NAME for the first NAME that exists (the reference spells some
# folders two ways), else $DATA_ROOT/<first NAME>.
dataset_dir() {
    local name
    for name in "$@"; do
        if [[ -d "$DATA_ROOT/$name" ]]; then echo "$DATA_ROOT/$name"; return; fi
    done
    echo "$DATA_ROOT/$1"
}

# Dataset folders, each overridable by its variable (see the top of this file).
A2D_ROOT="${A2D_ROOT:-$(dataset_dir a2d_sentences)}"
JHMDB_ROOT="${JHMDB_ROOT:-$(dataset_dir jhmdb_sentences)}"
YTVOS_ROOT="${YTVOS_ROOT:-$(dataset_dir refer_youtube_vos ref-youtube-vos)}"
COCO_ROOT="${COCO_ROOT:-$(dataset_dir coco)}"
DAVIS_ROOT="${DAVIS_ROOT:-$(dataset_dir refer-davis ref-davis)}"
MEVIS_ROOT="${MEVIS_ROOT:-$(dataset_dir mevis MeViS MeViS_release)}"
# derived_file NAME ROOT: ROOT/NAME when it was prepared there by hand, else $CACHE_DIR/NAME.
derived_file() {
    if [[ -f "$2/$1" ]]; then echo "$2/$1"; else echo "$CACHE_DIR/$1"; fi
}
A2D_GT="${A2D_GT:-$(derived_file a2d_sentences_test_annotations_in_coco_format.json "$A2D_ROOT")}"

# default_gpus N: the GPU count of the README for this stage, or 1 for smoke runs.
default_gpus() {
    if [[ "$WAVECL_TINY" == 1 ]]; then echo 1; else echo "$1"; fi
}

# Arguments shared by train and evaluate: output root, device, text encoder, tiny overrides.
# COMMON_ARGS is filled by setup_args; TRAIN_ARGS adds what only training takes.
setup_args() {
    COMMON_ARGS=(--set "train.output_dir=$OUTPUT_DIR" --set "data.cache_dir=$CACHE_DIR")
    TRAIN_ARGS=()
    if [[ -n "$DEVICE" ]]; then COMMON_ARGS+=(--device "$DEVICE"); fi
    if [[ "$WAVECL_TINY" != 1 && -n "${SWIN_CHECKPOINT:-}" ]]; then
        TRAIN_ARGS+=(--set "model.backbone_pretrained_path=$SWIN_CHECKPOINT")
    fi
    if [[ "$WAVECL_TINY" == 1 ]]; then
        # The model section of the packaged recipe tiny (except the stage's num_classes and text-encoder
        # freezing) and its frame sizes; no Kinetics weights (they do not fit the reduced backbone).
        local line
        while IFS= read -r line; do COMMON_ARGS+=(--set "$line"); done < <("$PYTHON" - <<'EOF'
import yaml
from wavecl.config import config_file
tiny = yaml.safe_load(config_file("tiny").read_text())
for key, value in tiny["model"].items():
    if key not in ("num_classes", "freeze_text_encoder"):
        print(f"model.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
for key in ("train_short_size", "train_max_size", "eval_short_size", "eval_max_size", "num_workers"):
    print(f"data.{key}={tiny['data'][key]}")
EOF
        )
        COMMON_ARGS+=(--set "model.backbone_pretrained_path=null")
        TRAIN_ARGS=(--set train.epochs=1 --set "train.max_steps_per_epoch=${TINY_STEPS:-2}" --set train.batch_size=2)
    fi
    if [[ -n "${TEXT_ENCODER:-}" ]]; then COMMON_ARGS+=(--set "model.text_encoder=$TEXT_ENCODER"); fi
}

# launch ARGS...: python -m wavecl ARGS; when NUM_GPUS > 1 through torchrun (run as the module
# torch.distributed.run of the same interpreter, on a free local port), one process per GPU.
launch() {
    if (( NUM_GPUS > 1 )); then
        "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NUM_GPUS" -m wavecl "$@"
    else
        "$PYTHON" -m wavecl "$@"
    fi
}

# prepare ARGS...: one-off data preparation in a single process.
prepare() {
    "$PYTHON" -m wavecl prepare "$@"
}

# prepare_a2d_gt: the COCO-format A2D-Sentences test ground truth A2D_GT, built on first use.
prepare_a2d_gt() {
    [[ -f "$A2D_GT" ]] || prepare a2d-gt --root "$A2D_ROOT" --out "$A2D_GT"
}

# prepare_ytvos_samples: the Ref-YouTube-VOS training sample list (windows of 8 frames) in the cache of
# data.cache_dir, built in parallel on first use (an up-to-date list is kept).
prepare_ytvos_samples() {
    prepare ytvos-samples --root "$YTVOS_ROOT" --window-size 8 --workers "${PREPARE_WORKERS:-8}" --cache-dir "$CACHE_DIR"
}
