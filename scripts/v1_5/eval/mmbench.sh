#!/bin/bash
# MMBench (dev, English): the xlsx for the MMBench evaluation server.
#   bash scripts/v1_5/eval/mmbench.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8] [--all-rounds]
source "$(dirname "$0")/common.sh"

SPLIT="mmbench_dev_20230712"
DIR="$EVAL_DIR/mmbench"
ANSWERS="$DIR/answers/$SPLIT/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_mmbench \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/$SPLIT.tsv" \
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
# --all-rounds writes one answer per option rotation under the same question id.
merge_chunks "$ANSWERS" "$DIR/answers/$SPLIT/$CKPT.jsonl"

python -m llava.eval.convert_mmbench_for_submission \
    --annotation-file "$DIR/$SPLIT.tsv" \
    --result-dir "$DIR/answers/$SPLIT" \
    --upload-dir "$DIR/answers_upload/$SPLIT" \
    --experiment "$CKPT"

echo "mmbench $CKPT: submission = $DIR/answers_upload/$SPLIT/$CKPT.xlsx (upload to the MMBench server)"
