"""GQA accuracy of converted predictions, computed offline (exact match).

    cd ./playground/data/eval/gqa/data
    python -m llava.eval.eval_gqa --tier testdev_balanced

reads ``testdev_balanced_questions.json`` and ``testdev_balanced_predictions.json`` (the
file :mod:`llava.eval.convert_gqa_for_eval` writes); ``--questions`` / ``--predictions``
take other paths, where ``{tier}`` is replaced by ``--tier``.

This computes the "Accuracy", "Binary" and "Open" lines of GQA's official ``eval/eval.py`` (exact
match of the normalised prediction with the answer, over the questions marked ``isBalanced``, as
there: all of them in the balanced tiers, a subset of ``testdev_all``; a question without the
field counts as balanced; a question without a prediction counts as wrong and is reported) and
the same accuracy per structural and semantic type.
Consistency, validity, plausibility, grounding and distribution need the scene graphs and
choices files and are not computed here.
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import check_coverage, id_key, load_json
from llava.eval.convert_gqa_for_eval import gqa_prediction


def score_gqa(questions_file: str, predictions_file: str) -> dict:
    """Exact-match accuracy of GQA predictions.

    Args:
        questions_file: GQA questions json ``{qid: {"answer", "types": {"structural",
            "semantic", ...}, ...}}``.
        predictions_file: ``[{"questionId", "prediction"}]``.

    Returns:
        ``{"accuracy" (percent, over the balanced questions), "correct", "balanced" (how many),
        "structural": {type: percent}, "semantic": {type: percent}, "answer_type": {"binary" |
        "open": percent}}`` plus the coverage fields (over all questions).

    Raises:
        ValueError: malformed files, repeated question ids, or predictions for unknown ids.
    """
    questions = load_json(questions_file)
    if not isinstance(questions, dict):
        raise ValueError(f"{questions_file}: expected a GQA questions dict {{questionId: question}}")
    rows = load_json(predictions_file)
    if not isinstance(rows, list):
        raise ValueError(f"{predictions_file}: expected a list of {{'questionId', 'prediction'}}")
    predictions: dict[str, str] = {}
    repeated = []
    for position, row in enumerate(rows, start=1):
        if "questionId" not in row or "prediction" not in row:
            raise ValueError(f"{predictions_file}: entry {position} lacks 'questionId' or 'prediction': {row}")
        key = id_key(row["questionId"])
        if key in predictions:
            repeated.append(row["questionId"])
        predictions[key] = row["prediction"]
    if repeated:
        raise ValueError(f"{predictions_file}: repeated questionId(s): {repeated[:10]}")
    coverage = check_coverage(predictions, list(questions), predictions_file, questions_file)

    correct = balanced = 0
    by_type: dict[str, dict[str, list[int]]] = {"structural": {}, "semantic": {}, "answer_type": {}}
    for qid, question in questions.items():
        if not question.get("isBalanced", True):
            continue  # the official accuracy is over the balanced questions only
        balanced += 1
        prediction = predictions.get(id_key(qid))
        hit = prediction is not None and gqa_prediction(prediction.strip()) == question["answer"].strip().lower()
        correct += int(hit)
        types = dict(question.get("types", {}))
        if "structural" in types:  # the official split: "query" questions are open, the rest binary
            types["answer_type"] = "open" if types["structural"] == "query" else "binary"
        for group, counts in by_type.items():
            kind = types.get(group)
            if kind is not None:
                c = counts.setdefault(kind, [0, 0])
                c[0] += int(hit)
                c[1] += 1
    return {
        "accuracy": 100.0 * correct / balanced if balanced else 0.0,
        "correct": correct,
        "balanced": balanced,
        **{group: {kind: 100.0 * c / n for kind, (c, n) in sorted(counts.items())}
           for group, counts in by_type.items()},
        **coverage.as_dict(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tier", type=str, default="testdev_balanced")
    parser.add_argument("--questions", type=str, default="{tier}_questions.json")
    parser.add_argument("--predictions", type=str, default="{tier}_predictions.json")
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    questions = args.questions.format(tier=args.tier)
    predictions = args.predictions.format(tier=args.tier)
    result = score_gqa(questions, predictions)
    print(f"{os.path.basename(predictions)}: answered {result['answered']}/{result['total']}"
          + (f"; {result['unanswered']} unanswered (counted as wrong)" if result["unanswered"] else ""))
    if result["balanced"] < result["total"]:
        print(f"{result['balanced']} of the {result['total']} questions are balanced; accuracy is over those")
    print(f"Accuracy: {result['accuracy']:.2f}%")
    for group in ("answer_type", "structural", "semantic"):
        if result[group]:
            print(f"{group}: " + ", ".join(f"{k} {v:.2f}%" for k, v in result[group].items()))
    if args.summary:
        print(f"{args.summary}: accuracy = {result['accuracy']:.2f}% (answered {result['answered']}/{result['total']})")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
