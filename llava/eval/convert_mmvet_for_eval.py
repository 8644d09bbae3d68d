"""Convert a LLaVA MM-Vet answer file to the json the MM-Vet grader takes.

    python -m llava.eval.convert_mmvet_for_eval \\
        --src ./playground/data/eval/mm-vet/answers/llava-v1.5-13b.jsonl \\
        --dst ./playground/data/eval/mm-vet/results/llava-v1.5-13b.json

Writes ``{"v1_<question_id>": answer text}``: MM-Vet names its samples ``v1_0``, ``v1_1``, ...
while LLaVA's question file numbers them 0, 1, ..., so the prefix is added (as upstream).
"""

from __future__ import annotations

import argparse

from llava.eval.io_utils import index_by_id, load_answer_lines, write_json


def mmvet_key(question_id) -> str:
    """MM-Vet's sample name for a LLaVA question id (unchanged if already prefixed)."""
    text = str(question_id)
    return text if text.startswith("v1_") else f"v1_{text}"


def convert_mmvet(src: str, dst: str) -> dict[str, str]:
    """Write ``{mmvet_key(question_id): text}`` to ``dst``; returns it.

    Raises:
        ValueError: bad jsonl lines, repeated ids, or an answer without a string ``text``.
    """
    answers = [answer for _, answer in load_answer_lines(src)]
    index_by_id(answers, src)
    result = {mmvet_key(answer["question_id"]): answer["text"] for answer in answers}
    write_json(result, dst, indent=2)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=str, required=True)
    parser.add_argument("--dst", type=str, required=True)
    return parser


def main(argv: list[str] | None = None) -> dict[str, str]:
    args = build_parser().parse_args(argv)
    result = convert_mmvet(args.src, args.dst)
    print(f"wrote {len(result)} answers to {args.dst} (MM-Vet has 218 samples)")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
