#!/bin/bash
# VQAv2 test-dev: answers for the EvalAI server (no local score: the test answers are hidden).
#   bash scripts/v1_5/eval/vqav2.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

SPLIT="llava_vqav2_mscoco_test-dev2015"
DIR="$EVAL_DIR/vqav2"
ANSWERS="$DIR/answers/$SPLIT/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/$SPLIT.jsonl" \
        --image-folder "$DIR/test2015" \
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

python -m llava.eval.convert_vqav2_for_submission --dir "$DIR" --split "$SPLIT" --ckpt "$CKPT"

echo "vqav2 $CKPT: submission = $DIR/answers_upload/$SPLIT/$CKPT.json (upload to EvalAI, test-dev phase)"
