#!/bin/bash
# Q-Bench LLVisionQA (QBENCH_LANG=en instruction, the default; qbench_zh.sh: zh): the answers, then,
# on the dev split, their accuracy per question type and concern (an exact-match reading; see
# docs/evaluation.md).
#   bash scripts/v1_5/eval/qbench.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
# SPLIT=dev (default) or test (not scored here: Q-Bench's maintainers score it). QBENCH_IMAGES is
# the image folder (default upstream's ./playground/data/qbench/images_llvisionqa). The template is
# upstream's llava_v1 unless CONV_MODE says otherwise (CONV_MODE=auto: the checkpoint's own).
CONV_MODE=${CONV_MODE:-llava_v1}
source "$(dirname "$0")/common.sh"

SPLIT=${SPLIT:-dev}
QBENCH_LANG=${QBENCH_LANG:-en}
NAME=qbench
TAG=""
if [ "$QBENCH_LANG" = zh ]; then NAME=qbench_zh; TAG=zh_; fi
DIR="$EVAL_DIR/qbench"
IMAGES=${QBENCH_IMAGES:-./playground/data/qbench/images_llvisionqa}
ANSWERS="$DIR/answers/llvisionqa_$TAG$SPLIT/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_qbench \
        --model-path "$CKPT_PATH" \
        --image-folder "$IMAGES" \
        --questions-file "$DIR/llvisionqa_$SPLIT.json" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        --lang "$QBENCH_LANG" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
merge_chunks "$ANSWERS" "$ANSWERS.jsonl"

if [ "$SPLIT" != dev ]; then
    echo "$NAME $CKPT: answers = $ANSWERS.jsonl (the $SPLIT split has no answers here: send it to Q-Bench)"
    exit 0
fi
python -m llava.eval.eval_qbench \
    --questions-file "$DIR/llvisionqa_$SPLIT.json" \
    --answers-file "$ANSWERS.jsonl" \
    --summary "$NAME $CKPT"
