#!/bin/bash
# MM-Vet: the json for the official MM-Vet grader (a GPT-4 grader, not run here).
#   bash scripts/v1_5/eval/mmvet.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/mm-vet"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava-mm-vet.jsonl" \
        --image-folder "$DIR/images" \
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

python -m llava.eval.convert_mmvet_for_eval \
    --src "$DIR/answers/$CKPT.jsonl" \
    --dst "$DIR/results/$CKPT.json"

echo "mmvet $CKPT: results = $DIR/results/$CKPT.json (submit to the MM-Vet grader; GPT-4 grading is not run offline)"
