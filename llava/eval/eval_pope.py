"""POPE object-hallucination scores (accuracy, precision, recall, F1, yes-ratio per split).

    python -m llava.eval.eval_pope \\
        --annotation-dir ./playground/data/eval/pope/coco \\
        --question-file ./playground/data/eval/pope/llava_pope_test.jsonl \\
        --result-file ./playground/data/eval/pope/answers/llava-v1.5-13b.jsonl

The annotation dir holds ``coco_pope_<category>.json`` (jsonl despite the name: ``{"question_id",
"image", "text", "label": "yes"|"no"}``, the label in any case), one per split (adversarial, popular,
random). The question file gives each LLaVA question its ``category``.

Upstream pairs a category's answers with its labels by position, which silently misaligns a
partial answer file. Here each question is matched to its label by ``(image, question text)``;
only when that is not possible (the texts differ) does it fall back to position within the
category, and then it says so.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import check_coverage, format_ids, id_key, index_by_id, load_answers, load_jsonl
from llava.eval.io_utils import load_jsonl_lines

_PREFIX, _SUFFIX = "coco_pope_", ".json"


def parse_yes_no(text: str) -> str:
    """Upstream's reading of a free-form POPE answer as ``"yes"`` or ``"no"``.

    Keep the text before the first period, delete commas, split on single spaces; the answer
    is "no" when a word is exactly ``No``, ``no`` or ``not``, otherwise "yes". Kept verbatim
    for score parity, so ``"NO"`` and ``"Not really"`` read as "yes", as they do upstream.
    """
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def pope_metrics(preds: list[str], labels: list[str]) -> dict:
    """Binary metrics with "yes" as the positive class.

    Args:
        preds: "yes"/"no" per question.
        labels: "yes"/"no" per question (anything other than "no" counts as "yes", as upstream).

    Returns:
        ``{"TP", "FP", "TN", "FN", "accuracy", "precision", "recall", "f1", "yes_ratio"}``;
        a ratio whose denominator is 0 is reported as 0.0 (upstream divides by zero).
    """
    if len(preds) != len(labels):
        raise ValueError(f"POPE predictions and labels differ in length: {len(preds)} vs {len(labels)}")
    tp = fp = tn = fn = 0
    for pred, label in zip(preds, labels):
        pred_yes, label_yes = pred == "yes", label != "no"
        if pred_yes and label_yes:
            tp += 1
        elif pred_yes:
            fp += 1
        elif not label_yes:
            tn += 1
        else:
            fn += 1

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "accuracy": ratio(tp + tn, len(preds)),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * precision * recall, precision + recall),
        "yes_ratio": ratio(tp + fp, len(preds)),
    }


def _first_line(text: str) -> str:
    return text.split("\n")[0].strip().lower()


def load_labels(label_file: str) -> list[dict]:
    """The rows of a ``coco_pope_<category>.json``, each ``label`` lower-cased to "yes" or "no".

    Upstream reads any label other than ``no`` as "yes", so ``"No"`` counted as "yes"; POPE's
    files use lower case, which scores the same either way.

    Raises:
        ValueError: a row without a yes/no ``label`` (names the file and line).
    """
    rows = []
    for lineno, row in load_jsonl_lines(label_file):
        label = row.get("label")
        if not isinstance(label, str) or label.lower() not in ("yes", "no"):
            found = f"got {label!r}" if "label" in row else f"no 'label' field; keys: {sorted(row)}"
            raise ValueError(f"{label_file}:{lineno}: 'label' must be yes or no: {found}")
        rows.append({**row, "label": label.lower()})
    return rows


def _labels_for_questions(questions: list[dict], label_rows: list[dict], label_file: str) -> tuple[list[str], bool]:
    """Label of each question (question-file order); second value: True if positional."""
    by_pair: dict[tuple[str, str], list[str]] = {}
    for row in label_rows:
        by_pair.setdefault((str(row["image"]), _first_line(row["text"])), []).append(row["label"])
    labels = []
    for q in questions:
        found = by_pair.get((str(q.get("image")), _first_line(q.get("text", ""))))
        if found is None or len(found) != 1:
            break
        labels.append(found[0])
    else:
        return labels, False
    if len(questions) != len(label_rows):
        raise ValueError(
            f"{label_file}: cannot match questions to labels: texts differ and the counts differ "
            f"too ({len(questions)} questions in the category vs {len(label_rows)} labels)"
        )
    return [row["label"] for row in label_rows], True


def score_pope(annotation_dir: str, question_file: str, result_file: str) -> dict:
    """Score a POPE answer file per category.

    Args:
        annotation_dir: directory with ``coco_pope_<category>.json`` label files.
        question_file: LLaVA question jsonl with ``question_id``, ``image``, ``text``, ``category``.
        result_file: answer jsonl.

    Returns:
        ``{"categories": {category: metrics + "samples" + coverage fields}, "answered",
        "total", "unanswered", "unanswered_ids"}``; metrics (see :func:`pope_metrics`) are over
        the answered questions of each category.

    Raises:
        FileNotFoundError: ``annotation_dir`` does not exist.
        NotADirectoryError: ``annotation_dir`` is a file, not a folder.
        ValueError: the answer file has ids not in the question file, a label file name is not
            ``coco_pope_*.json``, the folder has no label file, a question has no ``category`` or
            its category no label file, or a category in the annotation dir has no questions.
    """
    questions = load_jsonl(question_file)
    index_by_id(questions, question_file)
    answers = load_answers(result_file)
    coverage = check_coverage(answers, [q["question_id"] for q in questions], result_file, question_file)

    if os.path.isfile(annotation_dir):
        raise NotADirectoryError(f"POPE annotation dir is a file, not a folder: {annotation_dir!r}; give the "
                                 f"folder that holds the {_PREFIX}<category>{_SUFFIX} files")
    if not os.path.isdir(annotation_dir):
        raise FileNotFoundError(f"POPE annotation folder not found: {annotation_dir!r}")
    label_files = sorted(os.listdir(annotation_dir))
    bad = [f for f in label_files if not (f.startswith(_PREFIX) and f.endswith(_SUFFIX))]
    if bad:
        raise ValueError(f"{annotation_dir}: expected only {_PREFIX}<category>{_SUFFIX} files, found {format_ids(bad)}")
    if not label_files:
        raise ValueError(f"{annotation_dir}: no {_PREFIX}<category>{_SUFFIX} label files")
    # Upstream scores only the categories that have a label file, so the questions of a missing
    # one vanish from the scores; here every question must have its split's labels.
    no_category = [q["question_id"] for q in questions if "category" not in q]
    if no_category:
        raise ValueError(f"{question_file}: {len(no_category)} question(s) have no 'category' (question_id "
                         f"{format_ids(no_category, 5)}); POPE needs it to find their labels")
    labelled = {name[len(_PREFIX):-len(_SUFFIX)] for name in label_files}
    unlabelled = sorted({str(q["category"]) for q in questions} - labelled)
    if unlabelled:
        raise ValueError(f"{question_file}: no label file for question category "
                         + "; ".join(f"{c!r} ({sum(str(q['category']) == c for q in questions)} questions): "
                                     f"expected {os.path.join(annotation_dir, _PREFIX + c + _SUFFIX)}"
                                     for c in unlabelled))

    categories = {}
    for name in label_files:
        category = name[len(_PREFIX):-len(_SUFFIX)]
        label_file = os.path.join(annotation_dir, name)
        cat_questions = [q for q in questions if q.get("category") == category]
        if not cat_questions:
            raise ValueError(f"{question_file}: no question has category {category!r} (from {label_file})")
        labels, positional = _labels_for_questions(cat_questions, load_labels(label_file), label_file)
        if positional:
            print(f"Note: {category}: question texts differ from {name}; labels matched by position")
        preds, gold, unanswered = [], [], []
        for q, label in zip(cat_questions, labels):
            answer = answers.get(id_key(q["question_id"]))
            if answer is None:
                unanswered.append(q["question_id"])
                continue
            preds.append(parse_yes_no(answer["text"]))
            gold.append(label)
        categories[category] = {
            "samples": len(preds),
            **pope_metrics(preds, gold),
            "answered": len(preds),
            "total": len(cat_questions),
            "unanswered": len(unanswered),
            "unanswered_ids": unanswered,
        }
    return {"categories": categories, **coverage.as_dict()}


def _print_category(category: str, m: dict) -> None:
    print(f"Category: {category}, # samples: {m['samples']}")
    if m["unanswered"]:
        print(f"answered {m['answered']}/{m['total']}; {m['unanswered']} unanswered "
              f"(e.g. {format_ids(m['unanswered_ids'], 5)})")
    print("TP\tFP\tTN\tFN\t")
    print(f"{m['TP']}\t{m['FP']}\t{m['TN']}\t{m['FN']}")
    print(f"Accuracy: {m['accuracy']}")
    print(f"Precision: {m['precision']}")
    print(f"Recall: {m['recall']}")
    print(f"F1 score: {m['f1']}")
    print(f"Yes ratio: {m['yes_ratio']}")
    print("%.3f, %.3f, %.3f, %.3f, %.3f" % (m["f1"], m["accuracy"], m["precision"], m["recall"], m["yes_ratio"]))
    print("====================================")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-dir", type=str, required=True)
    parser.add_argument("--question-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, required=True)
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = score_pope(args.annotation_dir, args.question_file, args.result_file)
    print(f"answered {result['answered']}/{result['total']}"
          + (f"; {result['unanswered']} unanswered" if result["unanswered"] else ""))
    for category, metrics in result["categories"].items():
        _print_category(category, metrics)
    if args.summary:  # LLaVA-1.5 reports the F1 averaged over the splits
        f1 = {c: 100.0 * m["f1"] for c, m in result["categories"].items()}
        print(f"{args.summary}: F1 = {sum(f1.values()) / max(len(f1), 1):.2f} ("
              + ", ".join(f"{c} {v:.2f}" for c, v in f1.items())
              + f"; answered {result['answered']}/{result['total']})")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
