#!/bin/bash
# LLaVA-Bench (in the wild): the answers, then, when a judge is configured, their review against
# GPT-4's reference answers and the relative score (see docs/evaluation.md).
#   bash scripts/v1_5/eval/llavabench.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
# The review runs when OPENAI_API_KEY (OpenAI's API) or OPENAI_BASE_URL (another OpenAI-compatible
# server) is set. It needs upstream's rule.json in the benchmark folder (or LLAVABENCH_RULE=path);
# JUDGE_MODEL names the judge (default: upstream's gpt-4-0314). Without a judge the script stops
# after the answer file.
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/llava-bench-in-the-wild"
ANSWERS="$DIR/answers/$CKPT"
RULE=${LLAVABENCH_RULE:-$DIR/rule.json}
REVIEW=0
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${OPENAI_BASE_URL:-}" ]; then
    REVIEW=1
    for f in "$RULE" "$DIR/context.jsonl" "$DIR/answers_gpt4.jsonl"; do
        if [ ! -f "$f" ]; then  # checked before the answers are generated, not after
            echo "llavabench: the review needs $f (rule.json: upstream's llava/eval/table/rule.json)" >&2
            exit 2
        fi
    done
fi

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

if [ "$REVIEW" = 0 ]; then
    echo "llavabench $CKPT: answers = $DIR/answers/$CKPT.jsonl (not scored: set OPENAI_API_KEY, or OPENAI_BASE_URL, for the judge's review)"
    exit 0
fi

python -m llava.eval.eval_gpt_review_bench \
    --question "$DIR/questions.jsonl" \
    --context "$DIR/context.jsonl" \
    --rule "$RULE" \
    --answer-list "$DIR/answers_gpt4.jsonl" "$DIR/answers/$CKPT.jsonl" \
    --output "$DIR/reviews/$CKPT.jsonl" \
    ${JUDGE_MODEL:+--judge-model "$JUDGE_MODEL"}

python -m llava.eval.summarize_gpt_review \
    -f "$DIR/reviews/$CKPT.jsonl" \
    --summary "llavabench $CKPT"
