"""Answer MMBench / MMBench-CN (a tsv with base64 images) with LLaVA.

    python -m llava.eval.model_vqa_mmbench --model-path ./checkpoints/llava-v1.5-7b \\
        --question-file ./playground/data/eval/mmbench/mmbench_dev_20230712.tsv \\
        --answers-file ./playground/data/eval/mmbench/answers/mmbench_dev_20230712/llava-v1.5-7b.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1 [--lang cn] [--all-rounds]

The prompt is ``hint\\nquestion\\nA. ...\\nB. ...`` (the hint when there is one), plus "Answer with
the option's letter from the given choices directly." (or its Chinese version with ``--lang cn``)
under ``--single-pred-prompt``. ``--all-rounds`` asks each question once per rotation of its
options (CircularEval). Answer lines carry upstream's ``round_id``, ``options`` and
``option_char``, the ``instruction`` under ``--single-pred-prompt`` (upstream's ``prompt`` leaves
it out) and, when the tsv has them, ``answer`` (the correct letter in that round's
order), ``category`` and ``l2-category``. Needs pandas (``pip install -e .[eval]``).
"""

from __future__ import annotations

import argparse
import math
import os

from llava.eval.runner import (
    Item,
    LoadedModel,
    RunSummary,
    add_runner_args,
    chat_prompt,
    get_chunk,
    image_prompt,
    load_model,
    report,
    run_items,
)

ALL_OPTIONS = ("A", "B", "C", "D")
SINGLE_PRED_PROMPT = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_runner_args(parser, question_file="tables/question.tsv", max_new_tokens=1024)
    parser.add_argument("--all-rounds", action="store_true")
    parser.add_argument("--single-pred-prompt", action="store_true")
    parser.add_argument("--lang", type=str, default="en", choices=sorted(SINGLE_PRED_PROMPT))
    return parser


def is_none(value) -> bool:
    """Upstream's test for an empty tsv cell: None, NaN, "nan" or "none"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def _plain(value):
    """numpy scalars from pandas -> Python values, so the answer line is JSON."""
    return value.item() if hasattr(value, "item") else value


def load_mmbench(path: str) -> list[dict]:
    """The tsv rows as dicts of Python values.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the tsv lacks ``index``, ``question``, ``image`` or the ``A`` column, or has no
            row (names the file).
    """
    import pandas as pd  # only this runner needs pandas

    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {path!r}")
    try:
        table = pd.read_table(path)
    except pd.errors.EmptyDataError:  # not even a header line
        raise ValueError(f"{path}: no questions in the file (it is empty)") from None
    missing = [c for c in ("index", "question", "image", "A") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no {', '.join(map(repr, missing))} column(s); columns: {list(table.columns)}")
    if table.empty:
        raise ValueError(f"{path}: no questions in the file (only the header line)")
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]


def get_options(row: dict) -> list[str]:
    """The row's options, A first, up to the first empty one."""
    options = []
    for letter in ALL_OPTIONS:
        if letter not in row or is_none(row[letter]):
            break
        options.append(str(row[letter]))
    return options


def check_images(rows: list[dict], path: str) -> None:
    """Raises ValueError naming the first row (by its ``index``) whose image cell is empty."""
    empty = [row["index"] for row in rows if is_none(row["image"])]
    if empty:
        raise ValueError(f"{path}: {len(empty)} question(s) have no image, first: index {empty[0]!r}")


def build_items(rows: list[dict], config, conv_mode: str, args: argparse.Namespace) -> list[Item]:
    items = []
    for row in rows:
        options = get_options(row)
        letters = list(ALL_OPTIONS[:len(options)])
        answer = row.get("answer")
        answer_index = letters.index(answer) if isinstance(answer, str) and answer in letters else None
        for round_idx in range(len(options) if args.all_rounds else 1):
            # Round r shows the options rotated left by r; option_char keeps their original letters.
            shown = options[round_idx:] + options[:round_idx]
            question = str(row["question"])
            if not is_none(row.get("hint")):
                question = f"{row['hint']}\n{question}"
            for letter, option in zip(ALL_OPTIONS, shown):
                question += f"\n{letter}. {option}"
            message = image_prompt(question, config)
            if args.single_pred_prompt:
                message += "\n" + SINGLE_PRED_PROMPT[args.lang]
            fields = {"question_id": row["index"], "round_id": round_idx, "prompt": question, "options": shown,
                      "option_char": letters[round_idx:] + letters[:round_idx]}
            if args.single_pred_prompt:
                # Upstream's "prompt" leaves the instruction out; recorded here so that resuming
                # tells an answer file made with another instruction (or none) from this run's.
                fields["instruction"] = SINGLE_PRED_PROMPT[args.lang]
            if answer_index is not None:
                fields["answer"] = ALL_OPTIONS[(answer_index - round_idx) % len(options)]
            for key in ("category", "l2-category"):
                if key in row and not is_none(row[key]):
                    fields[key] = row[key]
            items.append(Item(fields=fields, prompt=chat_prompt(conv_mode, message), image_b64=row["image"]))
    return items


def eval_model(args: argparse.Namespace, loaded: LoadedModel | None = None) -> RunSummary:
    """Answers this chunk of the tsv's rows into ``args.answers_file``."""
    rows = get_chunk(load_mmbench(args.question_file), args.num_chunks, args.chunk_idx)
    check_images(rows, args.question_file)
    loaded = loaded or load_model(args)
    items = build_items(rows, loaded.model.config, loaded.conv_mode, args)
    return run_items(items, loaded, args)


def main(argv: list[str] | None = None) -> RunSummary:
    summary = eval_model(build_parser().parse_args(argv))
    report(summary)
    return summary


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
