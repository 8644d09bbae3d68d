#!/bin/bash
# TextVQA val (with OCR tokens in the prompt): VQA soft accuracy.
#   bash scripts/v1_5/eval/textvqa.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/textvqa"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa_loader \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/llava_textvqa_val_v051_ocr.jsonl" \
        --image-folder "$DIR/train_images" \
        --answers-file "$ANSWERS/${CHUNKS}_${IDX}.jsonl" \
        --num-chunks "$CHUNKS" \
        --chunk-idx "$IDX" \
        --temperature 0 \
        --conv-mode "$CONV_MODE" \
        "${RUNNER_ARGS[@]}" &
    PIDS+=($!)
done
wait_chunks
merge_chunks "$ANSWERS" "$DIR/answers/$CKPT.jsonl" "$DIR/llava_textvqa_val_v051_ocr.jsonl"

python -m llava.eval.eval_textvqa \
    --annotation-file "$DIR/TextVQA_0.5.1_val.json" \
    --result-file "$DIR/answers/$CKPT.jsonl" \
    --summary "textvqa $CKPT"
