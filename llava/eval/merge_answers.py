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
answer, when the question file repeats a line.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import answer_key, format_ids, load_jsonl, write_jsonl

DEFAULT_PATTERN = "{num_chunks}_{chunk_idx}.jsonl"


def chunk_paths(answers_dir: str, num_chunks: int, pattern: str = DEFAULT_PATTERN) -> list[str]:
    """Paths of chunks ``0 .. num_chunks - 1``."""
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    return [os.path.join(answers_dir, pattern.format(num_chunks=num_chunks, chunk_idx=k)) for k in range(num_chunks)]


def merge_answer_files(paths: list[str], output_file: str) -> dict:
    """Concatenate answer jsonl files into ``output_file``.

    Returns:
        ``{"answers": total lines written, "per_chunk": [count per input]}``.

    Raises:
        FileNotFoundError: a chunk is missing (names every missing one).
        ValueError: a line is not JSON (names file and line) or an answer is in two chunks.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} chunk file(s) missing: {format_ids(missing, quote=False)}")
    records, per_chunk = [], []
    first_seen: dict[tuple, str] = {}
    repeated = []
    for path in paths:
        chunk = load_jsonl(path)
        for record in chunk:
            if "question_id" not in record:
                raise ValueError(f"{path}: an answer has no 'question_id': {str(record)[:100]}")
            key = answer_key(record)
            if first_seen.get(key, path) != path:
                what = f"{record['question_id']!r}" + (f" prompt {record['prompt']!r:.60}" if "prompt" in record else "")
                repeated.append(f"{what} ({first_seen[key]} and {path})")
            first_seen.setdefault(key, path)
        records.extend(chunk)
        per_chunk.append(len(chunk))
    if repeated:
        raise ValueError(f"{len(repeated)} answer(s) appear in more than one chunk (were the chunks written with "
                         f"different --num-chunks?): {format_ids(repeated, 5, quote=False)}")
    write_jsonl(records, output_file)
    return {"answers": len(records), "per_chunk": per_chunk}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers-dir", type=str, required=True)
    parser.add_argument("--num-chunks", type=int, required=True)
    parser.add_argument("--output-file", type=str, default=None, help="default: <answers-dir>/merge.jsonl")
    parser.add_argument("--pattern", type=str, default=DEFAULT_PATTERN)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    output_file = args.output_file or os.path.join(args.answers_dir, "merge.jsonl")
    result = merge_answer_files(chunk_paths(args.answers_dir, args.num_chunks, args.pattern), output_file)
    print(f"merged {result['answers']} answers from {args.num_chunks} chunk(s) "
          f"({', '.join(map(str, result['per_chunk']))}) into {output_file}")
    return result


if __name__ == "__main__":
    main()
