# Sourced by every scripts/v1_5/eval/<bench>.sh: the checkpoint argument, chunks, merging.
#
#   bash scripts/v1_5/eval/<bench>.sh CHECKPOINT [runner arguments...]
#
# CHECKPOINT is a local checkpoint folder, or a hub id such as liuhaotian/llava-v1.5-13b (what
# upstream's scripts pass) already in the local Hugging Face cache: nothing is downloaded. Its
# base name (CKPT, e.g. llava-v1.5-13b) names the answer files.
# Runner arguments go to the model runner as they are, e.g. --batch-size 8, --device cpu,
# --model-base ./checkpoints/vicuna-7b-v1.5 (projector-only or LoRA checkpoints), --no-resume.
# One chunk runs per GPU in CUDA_VISIBLE_DEVICES (default "0": one chunk; a machine without a
# GPU runs that chunk on the CPU). CONV_MODE overrides the template (default "auto": the
# checkpoint's conv_mode, else vicuna_v1; qbench.sh: upstream's llava_v1). An interrupted script
# resumes where it stopped.

set -euo pipefail

usage() {
    echo "usage: bash $0 CHECKPOINT [runner arguments, e.g. --batch-size 8]" >&2
    echo "  CHECKPOINT: a local folder, or a hub id already in the local Hugging Face cache" >&2
}
if [ $# -lt 1 ]; then
    usage
    exit 2
fi
CKPT_PATH=${1%/}
if [ ! -d "$CKPT_PATH" ]; then
    # Checked here, before any chunk starts: the runners resolve the id the same way.
    if ! python -c '
import sys
from llava.model.builder import resolve_local
try:
    resolve_local(sys.argv[1], "CHECKPOINT")
except FileNotFoundError as err:
    sys.exit(str(err))' "$CKPT_PATH"; then
        usage
        exit 2
    fi
fi
shift
RUNNER_ARGS=("$@")
CKPT=$(basename "$CKPT_PATH")
CONV_MODE=${CONV_MODE:-auto}
EVAL_DIR=./playground/data/eval

gpu_list="${CUDA_VISIBLE_DEVICES:-0}"
IFS=',' read -ra GPULIST <<< "$gpu_list"
CHUNKS=${#GPULIST[@]}
PIDS=()

# Waits for the chunks started with `... & PIDS+=($!)`; stops the script if any failed.
wait_chunks() {
    local pid failed=0
    for pid in "${PIDS[@]}"; do
        wait "$pid" || failed=$((failed + 1))
    done
    PIDS=()
    if [ "$failed" -ne 0 ]; then
        echo "$failed of $CHUNKS chunk(s) failed (see above); run the script again to resume" >&2
        exit 1
    fi
}

# merge_chunks DIR OUTPUT [QUESTION_FILE]: DIR/${CHUNKS}_k.jsonl joined in chunk order, checked (every chunk
# present and parsable, no answer in two chunks). An answer is its question id, round and prompt: ids alone
# repeat in TextVQA (the image id), MME (two questions per image) and MMBench --all-rounds. With the question
# file, a question it asks n times may have its n answers in different chunks.
merge_chunks() {
    python -m llava.eval.merge_answers --answers-dir "$1" --num-chunks "$CHUNKS" --output-file "$2" \
        ${3:+--question-file "$3"}
}
