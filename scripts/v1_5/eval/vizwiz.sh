#!/bin/bash
# VizWiz test: answers for the EvalAI server (no local score: the test answers are hidden).
#   bash scripts/v1_5/eval/vizwiz.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/vizwiz"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava_test.jsonl" \
        --image-folder "$DIR/test" \
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

python -m llava.eval.convert_vizwiz_for_submission \
    --annotation-file "$DIR/llava_test.jsonl" \
    --result-file "$DIR/answers/$CKPT.jsonl" \
    --result-upload-file "$DIR/answers_upload/$CKPT.json"

echo "vizwiz $CKPT: submission = $DIR/answers_upload/$CKPT.json (upload to EvalAI, test phase)"
