"""ScienceQA multiple-choice accuracy (overall, image subset and the paper's categories).

    python -m llava.eval.eval_science_qa \\
        --base-dir ./playground/data/eval/scienceqa \\
        --result-file ./playground/data/eval/scienceqa/answers/llava-v1.5-13b.jsonl \\
        --output-file ./playground/data/eval/scienceqa/answers/llava-v1.5-13b_output.jsonl \\
        --output-result ./playground/data/eval/scienceqa/answers/llava-v1.5-13b_result.json

``--base-dir`` holds ScienceQA's ``problems.json`` (pid -> {"choices", "answer" (index),
"hint", "image", "subject", "grade", ...}) and ``pid_splits.json`` ({split: [pid, ...]}).
Answers' ``question_id`` is the pid. A problem without an answer, or whose answer cannot be
read as one of its option letters, counts as wrong (as upstream) and is reported.
"""

from __future__ import annotations

import argparse
import os
import re

from llava.eval.io_utils import check_coverage, format_ids, id_key, load_answers, load_json, write_json

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"

# Upstream's pattern is r'The answer is ([A-Z]).' where '.' is any character, so it misses a
# letter at the very end of the text and reads "The answer is Bob" as B; a word boundary
# after the letter fixes both.
_ANSWER_IS = re.compile(r"The answer is ([A-Z])\b")

# Short names used by the ScienceQA paper's results table.
_SUBJECTS = {"natural science": "NAT", "social science": "SOC", "language science": "LAN"}
CATEGORY_ORDER = ("NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12")


def parse_letter(text: str, options: tuple[str, ...] = OPTIONS) -> str:
    """The option letter a model answer names, or ``"FAILED"``.

    Accepted, in order: the bare letter (``"B"``); a letter followed by ``". "`` at the start
    (``"B. Paris"``); exactly one ``"The answer is B"`` in the text.
    """
    text = text.strip()
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    if len(found) == 1:
        return found[0]
    return FAILED


def pred_index(letter: str, n_choices: int, options: tuple[str, ...] = OPTIONS) -> int:
    """Index of ``letter`` among the first ``n_choices`` options, or -1."""
    return options.index(letter) if letter in options[:n_choices] else -1


def problem_categories(problem: dict) -> list[str]:
    """The paper's categories a problem belongs to (subject, context modality, grade band)."""
    cats = []
    if problem.get("subject") in _SUBJECTS:
        cats.append(_SUBJECTS[problem["subject"]])
    has_text = bool((problem.get("hint") or "").strip())
    has_image = bool(problem.get("image"))
    if has_text:
        cats.append("TXT")
    if has_image:
        cats.append("IMG")
    if not has_text and not has_image:
        cats.append("NO")
    grade = str(problem.get("grade", ""))
    if grade.startswith("grade"):
        number = grade[len("grade"):]
        if number.isdigit():
            cats.append("G1-6" if int(number) <= 6 else "G7-12")
    return cats


def score_science_qa(base_dir: str, result_file: str, split: str = "test",
                     options: tuple[str, ...] = OPTIONS) -> dict:
    """Score a ScienceQA answer file.

    Args:
        base_dir: directory with ``problems.json`` and ``pid_splits.json``.
        result_file: answer jsonl (``question_id`` = pid).
        split: key of ``pid_splits.json``.
        options: option letters.

    Returns:
        ``{"accuracy", "img_accuracy" (percent), "correct", "count", "categories": {name:
        {"accuracy", "correct", "count"}}, "outputs": {"correct": [...], "incorrect": [...]},
        "sqa_results": {"acc", "correct", "count", "results", "outputs"}`` (upstream's
        ``--output-result`` file), "unread_ids" (answers not read as one of their problem's
        option letters, counted as wrong), plus the coverage fields.

    Raises:
        ValueError: the split is unknown, a problem has more choices than ``options`` has letters,
            or answers have pids outside the split.
    """
    splits = load_json(os.path.join(base_dir, "pid_splits.json"))
    if split not in splits:
        raise ValueError(f"Unknown split {split!r} in {base_dir}/pid_splits.json; known: {sorted(splits)}")
    problems = load_json(os.path.join(base_dir, "problems.json"))
    pids = list(splits[split])
    missing = [pid for pid in pids if pid not in problems]
    if missing:
        raise ValueError(f"{base_dir}/problems.json lacks {len(missing)} pid(s) of split {split!r}: {missing[:10]}")
    # Upstream indexes the letters by each problem's answer and fails with an IndexError midway.
    too_many = [pid for pid in pids if len(problems[pid]["choices"]) > len(options)]
    if too_many:
        most = max(len(problems[pid]["choices"]) for pid in too_many)
        raise ValueError(f"{len(too_many)} problem(s) of split {split!r} have more choices than the "
                         f"{len(options)} option letters {''.join(options)!r} (up to {most}; pid "
                         f"{format_ids(too_many, 5)}): give --options at least {most} letters")
    answers = load_answers(result_file)
    coverage = check_coverage(answers, pids, result_file, f"split {split!r} of {base_dir}/pid_splits.json")

    correct_list, incorrect_list, unread = [], [], []
    sqa = {"acc": None, "correct": None, "count": None, "results": {}, "outputs": {}}
    per_cat = {name: [0, 0] for name in CATEGORY_ORDER}  # name -> [correct, count]
    for pid in pids:
        problem = problems[pid]
        answer = answers.get(id_key(pid))
        text = answer["text"] if answer is not None else FAILED
        prompt = answer.get("prompt", "Unknown") if answer is not None else "Unknown"
        letter = parse_letter(text, options)
        index = pred_index(letter, len(problem["choices"]), options)
        is_correct = index == problem["answer"]
        if answer is not None and index == -1:
            unread.append(pid)
        analysis = {
            "question_id": pid,
            "parsed_ans": letter,
            "ground_truth": options[problem["answer"]],
            "question": prompt,
            "pred": text,
            "is_multimodal": bool(problem.get("image")),
        }
        (correct_list if is_correct else incorrect_list).append(analysis)
        sqa["results"][pid] = index
        sqa["outputs"][pid] = text
        for name in problem_categories(problem):
            per_cat[name][0] += int(is_correct)
            per_cat[name][1] += 1

    def pct(c: int, n: int) -> float:
        return 100.0 * c / n if n else 0.0

    correct, total = len(correct_list), len(pids)
    sqa.update(acc=pct(correct, total), correct=correct, count=total)
    # Upstream decides "multimodal" by '<image>' in the prompt, which is the problem's image
    # field for LLaVA's question file; the field also covers unanswered problems.
    img_c, img_n = per_cat["IMG"]
    return {
        "accuracy": pct(correct, total),
        "img_accuracy": pct(img_c, img_n),
        "correct": correct,
        "count": total,
        "categories": {name: {"accuracy": pct(c, n), "correct": c, "count": n}
                       for name, (c, n) in per_cat.items()},
        "outputs": {"correct": correct_list, "incorrect": incorrect_list},
        "sqa_results": sqa,
        "unread_ids": unread,
        **coverage.as_dict(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-dir", type=str, required=True)
    parser.add_argument("--result-file", type=str, required=True)
    parser.add_argument("--output-file", type=str, default=None, help="per-question analysis (json)")
    parser.add_argument("--output-result", type=str, default=None, help="upstream's sqa_results (json)")
    parser.add_argument("--split", type=str, default="test")
    # Upstream declares `--options` with type=list, which splits a string into characters;
    # accepting "ABCDE" keeps that spelling working.
    parser.add_argument("--options", type=str, default="".join(OPTIONS))
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    options = tuple(c for c in args.options if c.strip() and c not in ",[]'\"")
    result = score_science_qa(args.base_dir, args.result_file, args.split, options)
    if result["unanswered"]:
        print(f"answered {result['answered']}/{result['total']}; {result['unanswered']} unanswered "
              "(counted as wrong)")
    if result["unread_ids"]:
        print(f"{len(result['unread_ids'])} answer(s) not read as one of their problem's option letters "
              f"(counted as wrong, as upstream): question_id {format_ids(result['unread_ids'], 5)}")
    print(f"Total: {result['count']}, Correct: {result['correct']}, Accuracy: {result['accuracy']:.2f}%, "
          f"IMG-Accuracy: {result['img_accuracy']:.2f}%")
    print(", ".join(f"{name}: {result['categories'][name]['accuracy']:.2f}%" for name in CATEGORY_ORDER))
    if args.output_file:
        write_json(result["outputs"], args.output_file, indent=2)
    if args.output_result:
        write_json(result["sqa_results"], args.output_result, indent=2)
    if args.summary:  # LLaVA-1.5 reports the image subset (SQA-IMG)
        print(f"{args.summary}: IMG accuracy = {result['img_accuracy']:.2f}% (all {result['accuracy']:.2f}%; "
              f"answered {result['answered']}/{result['total']})")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
