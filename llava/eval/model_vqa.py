"""Answer open-ended questions about images: LLaVA-Bench (in the wild) and MM-Vet.

    python -m llava.eval.model_vqa --model-path ./checkpoints/llava-v1.5-7b \\
        --question-file ./playground/data/eval/mm-vet/llava-mm-vet.jsonl \\
        --image-folder ./playground/data/eval/mm-vet/images \\
        --answers-file ./playground/data/eval/mm-vet/answers/llava-v1.5-7b.jsonl \\
        --temperature 0 --conv-mode vicuna_v1

The same question and answer formats as :mod:`llava.eval.model_vqa_loader`; answers are long, so
``--max_new_tokens`` defaults to upstream's 1024.
"""

from __future__ import annotations

import argparse

from llava.eval.runner import LoadedModel, RunSummary, add_runner_args, eval_question_file, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_args(parser, question_file="tables/question.jsonl", max_new_tokens=1024)
    return parser


def eval_model(args: argparse.Namespace, loaded: LoadedModel | None = None) -> RunSummary:
    """Answers ``args.question_file`` (this chunk of it) into ``args.answers_file``."""
    return eval_question_file(args, loaded)


def main(argv: list[str] | None = None) -> RunSummary:
    summary = eval_model(build_parser().parse_args(argv))
    report(summary)
    return summary


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
