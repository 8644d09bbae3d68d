"""Answer ScienceQA with LLaVA (the image split is scored by ``eval_science_qa``).

    python -m llava.eval.model_vqa_science --model-path ./checkpoints/llava-v1.5-7b \\
        --question-file ./playground/data/eval/scienceqa/llava_test_CQM-A.json \\
        --image-folder ./playground/data/eval/scienceqa/images/test \\
        --answers-file ./playground/data/eval/scienceqa/answers/llava-v1.5-7b.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1

The question file is a JSON list of LLaVA conversations ``{"id", "image"?, "conversations":
[{"from": "human", "value": ...}, ...]}``; questions without an image are asked as text only.
``--single-pred-prompt`` appends "Answer with the option's letter from the given choices
directly." (LLaVA-1.5's setting). The answer's ``prompt`` is the question as asked, with a leading
``<image>\\n`` when there is an image, as upstream.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import load_json
from llava.eval.runner import (
    GenerationSettings,
    Item,
    LoadedModel,
    RunSummary,
    add_runner_args,
    chat_prompt,
    check_images,
    generate_texts,
    get_chunk,
    image_prompt,
    load_model,
    report,
    run_items,
)

SINGLE_PRED_PROMPT = "Answer with the option's letter from the given choices directly."
# Upstream's v0-era two-pass prompting: the reasoning is fed back and the answer asked for.
ANSWER_PROMPTER_SUFFIX = " ###\nANSWER:"
ANSWER_PROMPTER_MAX_NEW_TOKENS = 64


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_args(parser, question_file="tables/question.json", max_new_tokens=1024)
    parser.add_argument("--single-pred-prompt", action="store_true")
    parser.add_argument("--answer-prompter", action="store_true")
    return parser


def load_science_questions(path: str) -> list[dict]:
    """The JSON list of questions, each checked for ``id`` and a first conversation turn.

    Raises:
        ValueError: not JSON (names line and column), not a list, an empty list, or an entry
            without ``id`` / ``conversations`` (names its position in the list).
    """
    path = os.path.expanduser(path)
    questions = load_json(path)
    if not isinstance(questions, list):
        raise ValueError(f"{path}: expected a JSON list of questions, got {type(questions).__name__}")
    for position, q in enumerate(questions):
        if not isinstance(q, dict) or "id" not in q or not q.get("conversations"):
            keys = sorted(q) if isinstance(q, dict) else type(q).__name__
            raise ValueError(f"{path}: question {position} needs 'id' and 'conversations'; has {keys}")
    if not questions:
        raise ValueError(f"{path}: no questions in the file")
    return questions


def build_items(questions: list[dict], image_folder: str, config, conv_mode: str,
                single_pred_prompt: bool) -> list[Item]:
    items = []
    for q in questions:
        question = q["conversations"][0]["value"].replace("<image>", "").strip()
        image_file = os.path.join(image_folder, q["image"]) if q.get("image") else None
        message, recorded = question, question
        if image_file is not None:
            message = image_prompt(question, config)
            recorded = "<image>\n" + question
        if single_pred_prompt:
            message += "\n" + SINGLE_PRED_PROMPT
            recorded += "\n" + SINGLE_PRED_PROMPT
        items.append(Item(fields={"question_id": q["id"], "prompt": recorded},
                          prompt=chat_prompt(conv_mode, message), image_file=image_file))
    return items


def eval_model(args: argparse.Namespace, loaded: LoadedModel | None = None) -> RunSummary:
    """Answers this chunk of ``args.question_file`` into ``args.answers_file``."""
    questions = get_chunk(load_science_questions(args.question_file), args.num_chunks, args.chunk_idx)
    check_images([(q["id"], os.path.join(args.image_folder, q["image"])) for q in questions if q.get("image")])
    loaded = loaded or load_model(args)
    items = build_items(questions, args.image_folder, loaded.model.config, loaded.conv_mode, args.single_pred_prompt)
    generate_fn = None
    if args.answer_prompter:
        settings = GenerationSettings.from_args(args)
        second = GenerationSettings(settings.temperature, settings.top_p, settings.num_beams,
                                    ANSWER_PROMPTER_MAX_NEW_TOKENS)

        def generate_fn(batch, pixels, sizes):
            tok, model, stop = loaded.tokenizer, loaded.model, loaded.stop_str
            reasoning = generate_texts(model, tok, [i.prompt for i in batch], pixels, sizes, settings, stop)
            prompts = [i.prompt + r + ANSWER_PROMPTER_SUFFIX for i, r in zip(batch, reasoning)]
            answers = generate_texts(model, tok, prompts, pixels, sizes, second, stop)
            return [r + "\n The answer is " + a for r, a in zip(reasoning, answers)]

    return run_items(items, loaded, args, generate_fn)


def main(argv: list[str] | None = None) -> RunSummary:
    summary = eval_model(build_parser().parse_args(argv))
    report(summary)
    return summary


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
