"""Convert a LLaVA VizWiz answer file to an EvalAI submission.

    python -m llava.eval.convert_vizwiz_for_submission \\
        --annotation-file ./playground/data/eval/vizwiz/llava_test.jsonl \\
        --result-file ./playground/data/eval/vizwiz/answers/llava-v1.5-13b.jsonl \\
        --result-upload-file ./playground/data/eval/vizwiz/answers_upload/llava-v1.5-13b.json

Writes ``[{"image", "answer"}]`` in question-file order, answers normalised with
:func:`llava.eval.m4c_evaluator.normalize_answer`. Every question must be answered (the
server rejects partial files): missing answers raise, naming the question ids.
"""

from __future__ import annotations

import argparse

from llava.eval.io_utils import check_coverage, format_ids, id_key, load_answers, load_jsonl, write_json
from llava.eval.m4c_evaluator import normalize_answer


def convert_vizwiz(annotation_file: str, result_file: str, result_upload_file: str) -> dict:
    """Write the VizWiz submission.

    Returns:
        ``{"submission": [...]}`` plus coverage fields.

    Raises:
        ValueError: bad jsonl lines, unknown or repeated ids, or unanswered questions.
    """
    answers = load_answers(result_file)
    questions = load_jsonl(annotation_file, required=("question_id", "image"))
    coverage = check_coverage(answers, [q["question_id"] for q in questions], result_file, annotation_file)
    if coverage.unanswered:
        raise ValueError(
            f"{result_file}: {coverage.message()}; VizWiz submissions need every question of "
            f"{annotation_file}. Missing question ids: {format_ids(coverage.unanswered_ids)}"
        )
    submission = [
        {"image": q["image"], "answer": normalize_answer(answers[id_key(q["question_id"])]["text"])}
        for q in questions
    ]
    write_json(submission, result_upload_file)
    return {"submission": submission, **coverage.as_dict()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, required=True)
    parser.add_argument("--result-upload-file", type=str, required=True)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = convert_vizwiz(args.annotation_file, args.result_file, args.result_upload_file)
    print(f"total results: {result['answered']}, total split: {result['total']}")
    print(f"wrote {args.result_upload_file}")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
