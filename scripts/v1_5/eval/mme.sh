#!/bin/bash
# MME: perception score (of 2000) and cognition score (of 800), 100 * acc + 100 * acc+ per category.
#   bash scripts/v1_5/eval/mme.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/MME"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava_mme.jsonl" \
        --image-folder "$DIR/MME_Benchmark_release_version" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
# An MME question_id names the image, shared by its two questions; the merge keys an answer by
# (id, prompt), so both are kept, and convert_answer_to_mme checks (id, question).
merge_chunks "$ANSWERS" "$DIR/answers/$CKPT.jsonl"

python -m llava.eval.convert_answer_to_mme --mme-dir "$DIR" --experiment "$CKPT"

python -m llava.eval.calculation_mme --results_dir "$DIR/eval_tool/answers/$CKPT" --summary "mme $CKPT"
