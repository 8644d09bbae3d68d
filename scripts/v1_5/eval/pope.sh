#!/bin/bash
# POPE (COCO val2014; adversarial, popular, random): F1 averaged over the three splits.
#   bash scripts/v1_5/eval/pope.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/pope"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava_pope_test.jsonl" \
        --image-folder "$DIR/val2014" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
merge_chunks "$ANSWERS" "$DIR/answers/$CKPT.jsonl"

python -m llava.eval.eval_pope \
    --annotation-dir "$DIR/coco" \
    --question-file "$DIR/llava_pope_test.jsonl" \
    --result-file "$DIR/answers/$CKPT.jsonl" \
    --summary "pope $CKPT"
