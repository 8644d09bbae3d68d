#!/bin/bash
# MM-Vet: the answers, the json MM-Vet's grader takes, then, when a judge is configured, the grading
# itself (llava.eval.eval_mmvet; see docs/evaluation.md).
#   bash scripts/v1_5/eval/mmvet.sh ./checkpoints/llava-v1.5-7b-delta [--batch-size 8]
# The grading runs when OPENAI_API_KEY (OpenAI's API) or OPENAI_BASE_URL (another OpenAI-compatible
# server) is set. It needs MM-Vet's mm-vet.json (from MM-Vet's mm-vet.zip) in the benchmark folder, or
# in MMVET_DATA=folder. JUDGE_MODEL names the judge (default MM-Vet's gpt-4-0613), MMVET_PROMPT a
# grading-prompt file (e.g. MM-Vet evaluator's, for comparable scores), MMVET_RUNS the grading runs
# (default 1). Without a judge the script stops after the results json.
source "$(dirname "$0")/common.sh"

DIR="$EVAL_DIR/mm-vet"
ANSWERS="$DIR/answers/$CKPT"
MMVET_DATA=${MMVET_DATA:-$DIR}
GRADE=0
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${OPENAI_BASE_URL:-}" ]; then
    GRADE=1
    for f in "$MMVET_DATA/mm-vet.json" ${MMVET_PROMPT:+"$MMVET_PROMPT"}; do
        if [ ! -f "$f" ]; then  # checked before the answers are generated, not after
            echo "mmvet: the grading needs $f (mm-vet.json: from MM-Vet's mm-vet.zip)" >&2
            exit 2
        fi
    done
fi

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

if [ "$GRADE" = 0 ]; then
    echo "mmvet $CKPT: results = $DIR/results/$CKPT.json (not graded: set OPENAI_API_KEY, or OPENAI_BASE_URL, for the judge; or submit it to MM-Vet's grader)"
    exit 0
fi

python -m llava.eval.eval_mmvet \
    --mmvet_path "$MMVET_DATA" \
    --result_path "$DIR/results" \
    --model "$CKPT" \
    --num_run "${MMVET_RUNS:-1}" \
    ${JUDGE_MODEL:+--gpt_model "$JUDGE_MODEL"} \
    ${MMVET_PROMPT:+--prompt-file "$MMVET_PROMPT"}
