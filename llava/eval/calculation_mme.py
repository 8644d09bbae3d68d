"""MME scores from per-category result files, computed in-repo.

    cd ./playground/data/eval/MME/eval_tool
    python -m llava.eval.calculation_mme --results_dir answers/llava-v1.5-13b

Each ``<category>.txt`` line is ``image<TAB>question<TAB>ground truth<TAB>answer`` (as written
by :mod:`llava.eval.convert_answer_to_mme`); every image has two questions. Per category:

- acc: fraction of questions answered correctly;
- acc+: fraction of images whose two questions are both answered correctly;
- score = 100 * acc + 100 * acc+ (at most 200).

Perception is the sum over its 10 categories (at most 2000), cognition over its 4 (at most
800). An answer is read as MME's official tool does: lower-cased, "yes"/"no" if it is exactly
that, else "yes" if its first 4 characters contain "yes", else "no" if they contain "no",
else "other" (always wrong).

MME's tool pairs the questions of an image by taking lines two at a time; here they are
grouped by image name, so the order of lines does not matter. An image with fewer than two
answered questions is reported and cannot count towards acc+.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import format_ids

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
EVAL_TYPES = {"Perception": PERCEPTION, "Cognition": COGNITION}
QUESTIONS_PER_IMAGE = 2


def parse_mme_answer(answer: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"`` (see the module docstring)."""
    answer = answer.lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_category_lines(lines: list[str], source: str = "<lines>") -> dict:
    """acc, acc+ and score of one category.

    Args:
        lines: ``image<TAB>question<TAB>gt<TAB>answer`` lines (line ends are ignored).
        source: file name for messages.

    Returns:
        ``{"acc", "acc_plus" (fractions), "score", "questions", "images", "other_answers",
        "incomplete_images": [image, ...]}``.

    Raises:
        ValueError: a line without 4 tab-separated fields, a ground truth other than yes/no,
            or an image with more than two questions.
    """
    images: dict[str, list[bool]] = {}
    other = 0
    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ValueError(f"{source}:{lineno}: expected 4 tab-separated fields, got {len(parts)}: {line[:100]!r}")
        image, _question, gt, answer = parts
        gt = gt.strip().lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"{source}:{lineno}: ground truth must be yes or no, got {gt!r}")
        pred = parse_mme_answer(answer)
        other += int(pred == "other")
        images.setdefault(image, []).append(pred == gt)
    too_many = [image for image, hits in images.items() if len(hits) > QUESTIONS_PER_IMAGE]
    if too_many:
        raise ValueError(f"{source}: image(s) with more than {QUESTIONS_PER_IMAGE} questions: {format_ids(too_many)}")
    incomplete = [image for image, hits in images.items() if len(hits) < QUESTIONS_PER_IMAGE]
    questions = sum(len(hits) for hits in images.values())
    correct = sum(sum(hits) for hits in images.values())
    both = sum(1 for hits in images.values() if len(hits) == QUESTIONS_PER_IMAGE and all(hits))
    acc = correct / questions if questions else 0.0
    acc_plus = both / len(images) if images else 0.0
    return {
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 100.0 * acc + 100.0 * acc_plus,
        "questions": questions,
        "images": len(images),
        "other_answers": other,
        "incomplete_images": incomplete,
    }


def score_mme(results_dir: str) -> dict:
    """Score every MME category found in ``results_dir``.

    Returns:
        ``{"Perception": {"total": float, "categories": {name: category result}},
        "Cognition": {...}, "missing_categories": [name, ...], "answered": questions,
        "total": questions + missing partner questions, "unanswered", "unanswered_ids"}``;
        a missing category adds nothing to its total and is listed.
    """
    if not os.path.isdir(results_dir):
        raise FileNotFoundError(f"MME results folder not found: {results_dir!r}")
    result: dict = {"missing_categories": []}
    answered = 0
    unanswered_ids = []
    for eval_type, categories in EVAL_TYPES.items():
        scores = {}
        for category in categories:
            path = os.path.join(results_dir, f"{category}.txt")
            if not os.path.isfile(path):
                result["missing_categories"].append(category)
                continue
            with open(path, encoding="utf-8") as f:
                scores[category] = score_category_lines(f.readlines(), path)
            answered += scores[category]["questions"]
            unanswered_ids += [f"{category}/{image}" for image in scores[category]["incomplete_images"]]
        result[eval_type] = {"total": sum(s["score"] for s in scores.values()), "categories": scores}
    result.update(answered=answered, total=answered + len(unanswered_ids),
                  unanswered=len(unanswered_ids), unanswered_ids=unanswered_ids)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results_dir", "--results-dir", dest="results_dir", type=str, required=True)
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = score_mme(args.results_dir)
    if result["missing_categories"]:
        print(f"Warning: no result file for {', '.join(result['missing_categories'])} in {args.results_dir}")
    if result["unanswered"]:
        print(f"answered {result['answered']}/{result['total']}; {result['unanswered']} unanswered "
              f"(images with one answered question: {format_ids(result['unanswered_ids'], 5)})")
    for eval_type in EVAL_TYPES:
        print(f"=========== {eval_type} ===========")
        print(f"total score: {result[eval_type]['total']:.2f}\n")
        for category, s in result[eval_type]["categories"].items():
            print(f"\t {category}  score: {s['score']:.2f}  (acc {100 * s['acc']:.2f}, acc+ {100 * s['acc_plus']:.2f})")
        print()
    if args.summary:
        perception, cognition = (result[t]["total"] for t in EVAL_TYPES)
        print(f"{args.summary}: perception = {perception:.2f} (cognition = {cognition:.2f}; "
              f"answered {result['answered']}/{result['total']})")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
