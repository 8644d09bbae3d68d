#!/bin/bash
# ScienceQA test: accuracy on the questions with an image (SQA-IMG, what LLaVA-1.5 reports).
#   bash scripts/v1_5/eval/sqa.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/scienceqa"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_science \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava_test_CQM-A.json" \
        --image-folder "$DIR/images/test" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --single-pred-prompt \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
merge_chunks "$ANSWERS" "$DIR/answers/$CKPT.jsonl"

python -m llava.eval.eval_science_qa \
    --base-dir "$DIR" \
    --result-file "$DIR/answers/$CKPT.jsonl" \
    --output-file "$DIR/answers/${CKPT}_output.jsonl" \
    --output-result "$DIR/answers/${CKPT}_result.json" \
    --summary "sqa $CKPT"
