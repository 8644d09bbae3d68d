"""Merge the answer files of a run split with ``--num-chunks`` into one file, in chunk order.

    python -m llava.eval.merge_answers \\
        --answers-dir ./playground/data/eval/gqa/answers/llava_gqa_testdev_balanced/llava-v1.5-13b \\
        --num-chunks 8 --output-file .../merge.jsonl

The model runners write chunk ``k`` of ``N`` to ``<N>_<k>.jsonl`` (upstream's shell-script
naming; ``--pattern`` changes it, with ``{num_chunks}`` and ``{chunk_idx}`` fields). This is
what the scripts' ``cat`` loop does, plus checks: every chunk file must exist and parse, and no
answer (question id, round and prompt, as the runners key them) may appear in two chunk files,
which happens when the chunks come from runs with different ``--num-chunks``. A question id alone
may repeat (TextVQA's question files use the image id), and within one chunk so may a whole
answer, when the question file repeats a line. A repeated line can also fall on both sides of a
chunk boundary: given ``--question-file`` (the file the runners answered, ``question_id`` and
``text`` per line), an answer may appear in several chunks as often as its question is in that file.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

from llava.eval.io_utils import answer_key, format_ids, id_key, load_jsonl, load_jsonl_lines, write_jsonl

DEFAULT_PATTERN = "{num_chunks}_{chunk_idx}.jsonl"


def chunk_paths(answers_dir: str, num_chunks: int, pattern: str = DEFAULT_PATTERN) -> list[str]:
    """Paths of chunks ``0 .. num_chunks - 1``."""
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    return [os.path.join(answers_dir, pattern.format(num_chunks=num_chunks, chunk_idx=k)) for k in range(num_chunks)]


def question_counts(question_file: str) -> Counter:
    """How often each answer key (question id and prompt, as ``model_vqa_loader`` writes them) is asked.

    Raises:
        ValueError: a line has no ``question_id`` or ``text`` (names file and line).
    """
    counts: Counter = Counter()
    for lineno, question in load_jsonl_lines(question_file):
        for field in ("question_id", "text"):
            if field not in question:
                raise ValueError(f"{question_file}:{lineno}: a question has no {field!r} field")
        counts[id_key(question["question_id"]), None, question["text"], None] += 1
    return counts


def merge_answer_files(paths: list[str], output_file: str, question_file: str | None = None) -> dict:
    """Concatenate answer jsonl files into ``output_file``.

    Args:
        paths: the chunk files, in chunk order.
        output_file: where the merged answers go.
        question_file: the question file the chunks answered; an answer may then be in more than
            one chunk as often as its question line is in this file.

    Returns:
        ``{"answers": total lines written, "per_chunk": [count per input]}``.

    Raises:
        FileNotFoundError: a chunk is missing (names every missing one).
        ValueError: a line is not JSON (names file and line) or an answer is in two chunks.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} chunk file(s) missing: {format_ids(missing, quote=False)}")
    asked = question_counts(question_file) if question_file else None
    records, per_chunk = [], []
    first_seen: dict[tuple, str] = {}
    seen: Counter = Counter()
    repeated = []
    for path in paths:
        chunk = load_jsonl(path)
        for record in chunk:
            if "question_id" not in record:
                raise ValueError(f"{path}: an answer has no 'question_id': {str(record)[:100]}")
            key = answer_key(record)
            seen[key] += 1
            in_other_chunk = first_seen.get(key, path) != path
            # A question asked n times in the question file may have its n answers in any chunks.
            if in_other_chunk and (asked is None or seen[key] > asked.get(key, 1)):
                what = f"{record['question_id']!r}" + (f" prompt {record['prompt']!r:.60}" if "prompt" in record else "")
                repeated.append(f"{what} ({first_seen[key]} and {path})")
            first_seen.setdefault(key, path)
        records.extend(chunk)
        per_chunk.append(len(chunk))
    if asked is not None and seen and not any(key in asked for key in seen):
        raise ValueError(f"none of the {len(records)} answers asks a question of {question_file} (by question_id "
                         f"and prompt): is it the question file these chunks answered?")
    if repeated:
        hint = ("" if question_file else "; if the question file asks a question more than once, pass it as "
                "--question-file")
        raise ValueError(f"{len(repeated)} answer(s) appear in more than one chunk (were the chunks written with "
                         f"different --num-chunks?{hint}): {format_ids(repeated, 5, quote=False)}")
    write_jsonl(records, output_file)
    return {"answers": len(records), "per_chunk": per_chunk}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers-dir", type=str, required=True)
    parser.add_argument("--num-chunks", type=int, required=True)
    parser.add_argument("--output-file", type=str, default=None, help="default: <answers-dir>/merge.jsonl")
    parser.add_argument("--pattern", type=str, default=DEFAULT_PATTERN)
    parser.add_argument("--question-file", type=str, default=None,
                        help="the question file the chunks answered: a question it asks n times may have its n "
                             "answers in different chunks (TextVQA repeats a few lines)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    output_file = args.output_file or os.path.join(args.answers_dir, "merge.jsonl")
    result = merge_answer_files(chunk_paths(args.answers_dir, args.num_chunks, args.pattern), output_file,
                                args.question_file)
    print(f"merged {result['answers']} answers from {args.num_chunks} chunk(s) "
          f"({', '.join(map(str, result['per_chunk']))}) into {output_file}")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
