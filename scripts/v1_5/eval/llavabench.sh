#!/bin/bash
# LLaVA-Bench (in the wild): the answer file. Its score is a GPT-4 review of each answer against
# GPT-4's own answers, which needs the OpenAI API and is NOT run here (see docs/evaluation.md).
#   bash scripts/v1_5/eval/llavabench.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/llava-bench-in-the-wild"
ANSWERS="$DIR/answers/$CKPT"

for IDX in $(seq 0 $((CHUNKS-1))); do
    CUDA_VISIBLE_DEVICES=${GPULIST[$IDX]} python -m llava.eval.model_vqa \
        --model-path "$CKPT_PATH" \
        --question-file "$DIR/questions.jsonl" \
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

echo "llavabench $CKPT: answers = $DIR/answers/$CKPT.jsonl (not scored: the GPT-4 review needs the OpenAI API and is not run offline)"
