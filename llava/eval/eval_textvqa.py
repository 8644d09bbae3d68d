"""TextVQA accuracy of a LLaVA answer file.

    python -m llava.eval.eval_textvqa \\
        --annotation-file ./playground/data/eval/textvqa/TextVQA_0.5.1_val.json \\
        --result-file ./playground/data/eval/textvqa/answers/llava-v1.5-13b.jsonl

LLaVA's TextVQA question file (``llava_textvqa_val_v051_ocr.jsonl``) stores the *image* id in
``question_id`` and the question as the first line of the prompt (followed by an optional
"Reference OCR token: ..." line and the answer-format instruction). Like upstream, an answer
is matched to its annotation by ``(image_id, question.lower())``; answers whose
``question_id`` is a real TextVQA question id are matched on that as well.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.io_utils import Coverage, format_ids, load_answer_lines, load_json
from llava.eval.m4c_evaluator import soft_accuracy

_OCR_PREFIX_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)
_OCR_LINE_PREFIX = "Reference OCR token:"
_FORMAT_INSTRUCTIONS = ("Answer the question using a single word or phrase.",)


def question_from_prompt(prompt: str) -> str:
    """The lower-cased question inside a TextVQA prompt.

    Handles the prompt layouts upstream handles: ``"OCR tokens: ... Question: Q Short answer:"``;
    ``"Q\\nReference OCR token: ...\\n<instruction>"`` (OCR line first or second); and
    ``"Q\\n<instruction>"``.

    Raises:
        ValueError: no question can be found.
    """
    if prompt.startswith("OCR tokens: "):
        match = _OCR_PREFIX_QUESTION.search(prompt)
        if match is None:
            raise ValueError(f"TextVQA prompt has 'OCR tokens:' but no 'Question: ... Short answer:': {prompt[:120]!r}")
        return match.group(1).lower()
    # Upstream accepts exactly these line counts; here any line that is neither the OCR line
    # nor the answer-format instruction is the question, which covers the same layouts.
    lines = [line.strip() for line in prompt.split("\n")]
    candidates = [
        line for line in lines
        if line and not line.startswith(_OCR_LINE_PREFIX) and line not in _FORMAT_INSTRUCTIONS
    ]
    if not candidates:
        raise ValueError(f"Cannot find the question in TextVQA prompt {prompt[:120]!r}")
    return candidates[0].lower()


def score_textvqa(annotation_file: str, result_file: str) -> dict:
    """Score one answer file against TextVQA annotations.

    Args:
        annotation_file: ``TextVQA_0.5.1_val.json`` (``{"data": [{"image_id", "question",
            "question_id", "answers": [10 strings]}, ...]}``).
        result_file: answer jsonl with ``question_id`` (image id), ``prompt`` and ``text``.

    Returns:
        ``{"accuracy": float in [0, 1], "samples": int, "answered", "total", "unanswered",
        "unanswered_ids"}``; accuracy is over answered questions (upstream's denominator).

    Raises:
        ValueError: an annotation lacks ``image_id``, ``question`` or ``answers``, an answer lacks a
            string ``prompt`` or ``text``, matches no annotation, or answers a question more often
            than the annotations ask it (names its question_id and question).
    """
    data = load_json(annotation_file)
    if not isinstance(data, dict) or "data" not in data:
        raise ValueError(f"{annotation_file}: expected a TextVQA annotation file with a 'data' list")
    annotations = data["data"]
    for i, a in enumerate(annotations):
        missing = [k for k in ("image_id", "question", "answers") if not isinstance(a, dict) or k not in a]
        if missing:
            qid = a.get("question_id") if isinstance(a, dict) else None
            raise ValueError(f"{annotation_file}: annotation {i} (question_id {qid!r}) has no "
                             f"{', '.join(map(repr, missing))}")
    # Questions are compared stripped on both sides: the prompt's question line is stripped, and an
    # annotation's question may end in a space that the question file kept. A few annotations can
    # share an (image_id, question) pair; the pair then takes one answer per annotation.
    by_pair: dict[tuple[str, str], list[int]] = {}
    for i, a in enumerate(annotations):
        by_pair.setdefault((str(a["image_id"]), a["question"].strip().lower()), []).append(i)
    by_qid = {str(a["question_id"]): i for i, a in enumerate(annotations) if "question_id" in a}

    scores = []
    matched: set[int] = set()
    answers_per_group: dict[tuple[int, ...], int] = {}
    unmatched, repeated = [], []
    for lineno, result in load_answer_lines(result_file, strings=("prompt", "text")):
        qid = str(result["question_id"])
        question = question_from_prompt(result["prompt"])
        group = by_pair.get((qid, question))
        if group is None and qid in by_qid:
            group = [by_qid[qid]]
        if group is None:
            unmatched.append(f"{result['question_id']!r} ({question!r})")
            continue
        count = answers_per_group[tuple(group)] = answers_per_group.get(tuple(group), 0) + 1
        if count > len(group):
            repeated.append(f"{result['question_id']!r} ({question!r}, line {lineno})")
            continue
        matched.add(group[count - 1])
        # Upstream keys annotations by the pair, so the last annotation of a shared pair scores
        # every answer to it; kept, so that scores match upstream's.
        scores.append(soft_accuracy(result["text"], annotations[group[-1]]["answers"]))
    if unmatched:
        raise ValueError(
            f"{result_file}: {len(unmatched)} answer(s) match no annotation in {annotation_file} "
            f"by (image_id, question) or question_id: {format_ids(unmatched, quote=False)}"
        )
    if repeated:
        raise ValueError(
            f"{result_file}: {len(repeated)} answer(s) repeat a question already answered (more answers "
            f"than {annotation_file} has questions for that image and question; was a chunk merged "
            f"twice?): {format_ids(repeated, quote=False)}"
        )
    unanswered_ids = [
        a.get("question_id", a["image_id"]) for i, a in enumerate(annotations) if i not in matched
    ]
    coverage = Coverage(answered=len(matched), total=len(annotations), unanswered_ids=unanswered_ids)
    accuracy = sum(scores) / len(scores) if scores else 0.0
    return {"accuracy": accuracy, "samples": len(scores), **coverage.as_dict()}


def _report(annotation_file: str, result_file: str) -> dict:
    print(os.path.splitext(os.path.basename(result_file))[0])
    result = score_textvqa(annotation_file, result_file)
    coverage = Coverage(result["answered"], result["total"], result["unanswered_ids"])
    print(coverage.message())
    print(f"Samples: {result['samples']}\nAccuracy: {100.0 * result['accuracy']:.2f}%\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, default=None, help="one answer jsonl")
    parser.add_argument("--result-dir", type=str, default=None, help="score every *.jsonl in it")
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.result_file is None and args.result_dir is None:
        raise SystemExit("eval_textvqa: give --result-file or --result-dir")
    results = []
    if args.result_file is not None:
        results.append(_report(args.annotation_file, args.result_file))
    if args.result_dir is not None:
        if not any(name.endswith(".jsonl") for name in os.listdir(args.result_dir)):
            raise ValueError(f"{args.result_dir}: no *.jsonl answer files to score")
        for name in sorted(os.listdir(args.result_dir)):
            if not name.endswith(".jsonl"):
                print(f"Skipping {name}")
                continue
            results.append(_report(args.annotation_file, os.path.join(args.result_dir, name)))
    if args.summary:
        for r in results:
            print(f"{args.summary}: accuracy = {100.0 * r['accuracy']:.2f}% (answered {r['answered']}/{r['total']})")
    return results


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
