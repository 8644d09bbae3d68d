"""Convert a merged LLaVA VQAv2 answer file to an EvalAI submission.

    python -m llava.eval.convert_vqav2_for_submission \\
        --split llava_vqav2_mscoco_test-dev2015 --ckpt llava-v1.5-13b

reads ``<dir>/answers/<split>/<ckpt>/merge.jsonl`` and the full test question file
``<dir>/llava_vqav2_mscoco_test2015.jsonl``, and writes
``<dir>/answers_upload/<split>/<ckpt>.json`` = ``[{"question_id", "answer"}]`` with every
answer normalised (:func:`llava.eval.m4c_evaluator.normalize_answer`). The server wants an
entry for every test2015 question, so questions outside the answered split get ``""``; the
number of those is printed (for a test-dev run most test2015 questions are expected to be
empty).
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import check_coverage, id_key, load_answers, load_jsonl, write_json
from llava.eval.m4c_evaluator import normalize_answer

DEFAULT_DIR = "./playground/data/eval/vqav2"
TEST_SPLIT_FILE = "llava_vqav2_mscoco_test2015.jsonl"


def convert_vqav2(src: str, test_split: str, dst: str) -> dict:
    """Write the submission for answer file ``src``.

    Args:
        src: merged answer jsonl.
        test_split: question jsonl listing every question the server expects.
        dst: output json path (parent directories are created).

    Returns:
        ``{"submission": [...]}`` plus coverage fields (over ``test_split``).

    Raises:
        ValueError: bad jsonl lines, repeated ids, or answers to questions not in ``test_split``.
    """
    answers = load_answers(src)
    questions = load_jsonl(test_split, required=("question_id",))
    coverage = check_coverage(answers, [q["question_id"] for q in questions], src, test_split)
    submission = []
    for q in questions:
        answer = answers.get(id_key(q["question_id"]))
        submission.append({
            "question_id": q["question_id"],
            "answer": normalize_answer(answer["text"]) if answer is not None else "",
        })
    write_json(submission, dst)
    return {"submission": submission, **coverage.as_dict()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=str, default=DEFAULT_DIR)
    parser.add_argument("--ckpt", type=str, required=True)
    parser.add_argument("--split", type=str, required=True)
    parser.add_argument("--test-split", type=str, default=None,
                        help=f"question file the server expects (default: <dir>/{TEST_SPLIT_FILE})")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    src = os.path.join(args.dir, "answers", args.split, args.ckpt, "merge.jsonl")
    test_split = args.test_split or os.path.join(args.dir, TEST_SPLIT_FILE)
    dst = os.path.join(args.dir, "answers_upload", args.split, f"{args.ckpt}.json")
    result = convert_vqav2(src, test_split, dst)
    print(f"total results: {result['answered']}, total split: {result['total']}; "
          f"{result['unanswered']} question(s) without an answer written as ''")
    print(f"wrote {dst}")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
