"""Answer a LLaVA question file: VQAv2, GQA, VizWiz, TextVQA, POPE, MME and SEED-Bench.

    python -m llava.eval.model_vqa_loader --model-path ./checkpoints/llava-v1.5-7b \\
        --question-file ./playground/data/eval/textvqa/llava_textvqa_val_v051_ocr.jsonl \\
        --image-folder ./playground/data/eval/textvqa/train_images \\
        --answers-file ./playground/data/eval/textvqa/answers/llava-v1.5-7b.jsonl \\
        --temperature 0 --conv-mode vicuna_v1 [--batch-size 8] [--num-chunks N --chunk-idx k]

Reads jsonl ``{"question_id", "image", "text"}`` and writes one answer line
``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}`` per question, with
upstream's arguments. Added here: ``--batch-size`` (same greedy answers as 1), ``--device``
(CPU works), ``--num-workers`` and resuming (``--no-resume`` starts the answer file afresh).
"""

from __future__ import annotations

import argparse

from llava.eval.runner import LoadedModel, RunSummary, add_runner_args, eval_question_file, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_args(parser, question_file="tables/question.jsonl", max_new_tokens=128)
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
