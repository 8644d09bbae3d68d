#!/bin/bash
# SEED-Bench: accuracy on the image questions (SEED-IMG, what LLaVA-1.5 reports), plus the upload file.
#   bash scripts/v1_5/eval/seed.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/seed_bench"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava-seed-bench.jsonl" \
        --image-folder "$DIR" \
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

python -m llava.eval.convert_seed_for_submission \
    --annotation-file "$DIR/SEED-Bench.json" \
    --result-file "$ANSWERS/merge.jsonl" \
    --result-upload-file "$DIR/answers_upload/$CKPT.jsonl" \
    --summary "seed $CKPT"
