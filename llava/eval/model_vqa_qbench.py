"""Answer Q-Bench's LLVisionQA (low-level visual perception) with LLaVA; ``eval_qbench`` scores the dev split.

    python -m llava.eval.model_vqa_qbench --model-path ./checkpoints/llava-v1.5-7b-delta \\
        --image-folder ./playground/data/qbench/images_llvisionqa/ \\
        --questions-file ./playground/data/eval/qbench/llvisionqa_dev.json \\
        --answers-file ./playground/data/eval/qbench/llvisionqa_dev_answers.jsonl \\
        --conv-mode llava_v1 --lang en

The question file is Q-Bench's JSON list ``[{"img_path", "question", "candidates", ...}]`` (the dev
split also has ``correct_ans``, ``type`` and ``concern``). Each question is asked as upstream asks
it: the question, a line asking to choose one option (``--lang en`` or ``zh``), and the candidates
as ``A. ...``, ``B. ...``, one per line. Each answer line is the question's own record plus
``response`` (upstream's field, what Q-Bench's tools read) and this package's answer fields
(``question_id``: the question's position in the file, ``prompt``, ``text``, ...).

Differences from upstream, on purpose: the answer file is JSON lines (upstream wrote the records
back to back with no newline between them); the Chinese instruction ends its line with a newline
(upstream's string had a stray backslash instead); batching, chunks, resume and CPU as every runner.
Decoding is greedy with up to 1024 new tokens, as upstream.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.eval_qbench import LETTERS, load_llvisionqa
from llava.eval.runner import (
    Item,
    LoadedModel,
    RunSummary,
    add_runner_args,
    chat_prompt,
    check_images,
    get_chunk,
    image_prompt,
    load_model,
    report,
    run_items,
)

#: The line after the question that asks for one option, per language (upstream's wording).
CHOOSE = {"en": "\nChoose between one of the options as follows:\n", "zh": "\n在下列选项中选择一个:\n"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_args(parser, question_file="./playground/data/qbench/llvisionqa_dev.json", temperature=0,
                    max_new_tokens=1024, question_file_aliases=("--questions-file",))
    parser.add_argument("--lang", choices=sorted(CHOOSE), default="en", help="the language of the instruction")
    parser.set_defaults(conv_mode="llava_v1")
    return parser


def question_message(question: dict, lang: str) -> str:
    """The question as asked: the question, the instruction line, then ``A. ...`` per candidate."""
    message = question["question"] + CHOOSE[lang]
    for letter, candidate in zip(LETTERS, question["candidates"]):
        message += f"{letter}. {candidate}\n"
    return message


def eval_model(args: argparse.Namespace, loaded: LoadedModel | None = None) -> RunSummary:
    """Answers this chunk of ``args.question_file`` into ``args.answers_file``."""
    numbered = list(enumerate(load_llvisionqa(args.question_file)))
    chunk = get_chunk(numbered, args.num_chunks, args.chunk_idx)
    check_images([(position, os.path.join(args.image_folder, q["img_path"])) for position, q in chunk])
    loaded = loaded or load_model(args)
    items = []
    for position, q in chunk:
        message = question_message(q, args.lang)
        items.append(Item(fields={**q, "question_id": position, "prompt": message},
                          prompt=chat_prompt(loaded.conv_mode, image_prompt(message, loaded.model.config)),
                          image_file=os.path.join(args.image_folder, q["img_path"])))
    return run_items(items, loaded, args, extra_fields=lambda text: {"response": text})


def main(argv: list[str] | None = None) -> RunSummary:
    summary = eval_model(build_parser().parse_args(argv))
    report(summary)
    return summary


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
