#!/bin/bash
# GQA testdev-balanced: exact-match accuracy (the "Accuracy" of GQA's eval.py).
#   bash scripts/v1_5/eval/gqa.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

SPLIT="llava_gqa_testdev_balanced"
DIR="$EVAL_DIR/gqa"
GQADIR="$DIR/data"
ANSWERS="$DIR/answers/$SPLIT/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/$SPLIT.jsonl" \
        --image-folder "$GQADIR/images" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
merge_chunks "$ANSWERS" "$ANSWERS/merge.jsonl"

python -m llava.eval.convert_gqa_for_eval --src "$ANSWERS/merge.jsonl" --dst "$GQADIR/testdev_balanced_predictions.json"

python -m llava.eval.eval_gqa \
    --tier testdev_balanced \
    --questions "$GQADIR/{tier}_questions.json" \
    --predictions "$GQADIR/{tier}_predictions.json" \
    --summary "gqa $CKPT"
