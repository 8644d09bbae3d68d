"""Convert a LLaVA GQA answer file to the official evaluator's predictions format.

    python -m llava.eval.convert_gqa_for_eval \\
        --src ./playground/data/eval/gqa/answers/llava_gqa_testdev_balanced/llava-v1.5-13b/merge.jsonl \\
        --dst ./playground/data/eval/gqa/data/testdev_balanced_predictions.json

Writes ``[{"questionId": ..., "prediction": ...}]`` with each answer lower-cased and trailing
periods removed. Score it with :mod:`llava.eval.eval_gqa` (offline) or GQA's ``eval/eval.py``.
"""

from __future__ import annotations

import argparse

from llava.eval.io_utils import index_by_id, load_answer_lines, write_json


def gqa_prediction(text: str) -> str:
    """The answer normalisation upstream applies before writing GQA predictions."""
    return text.rstrip(".").lower()


def convert_gqa(src: str, dst: str) -> list[dict]:
    """Convert ``src`` (answer jsonl) to ``dst``; returns the written list.

    Raises:
        ValueError: a bad jsonl line, a missing or non-string ``text``, or repeated question ids.
    """
    answers = [answer for _, answer in load_answer_lines(src)]
    index_by_id(answers, src)  # fail on repeated ids before writing anything
    predictions = [{"questionId": a["question_id"], "prediction": gqa_prediction(a["text"])} for a in answers]
    write_json(predictions, dst)
    return predictions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=str, required=True)
    parser.add_argument("--dst", type=str, required=True)
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    predictions = convert_gqa(args.src, args.dst)
    print(f"wrote {len(predictions)} predictions to {args.dst}")
    return predictions


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
