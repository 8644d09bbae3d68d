"""SEED-Bench accuracy per question type, and the submission jsonl.

    python -m llava.eval.convert_seed_for_submission \\
        --annotation-file ./playground/data/eval/seed_bench/SEED-Bench.json \\
        --result-file ./playground/data/eval/seed_bench/answers/llava-v1.5-13b/merge.jsonl \\
        --result-upload-file ./playground/data/eval/seed_bench/answers_upload/llava-v1.5-13b.jsonl

``SEED-Bench.json`` is ``{"question_type": {name: type_id}, "questions": [{"question_id",
"data_type": "image"|"video", "question_type_id", "answer": "A".."D", ...}]}``. An answer is
correct when its text (whitespace stripped) equals the answer letter. Accuracy is over all
questions of a type, so unanswered questions count as wrong (as upstream) and are reported.
Prints per-type accuracy, the total, and the image-only and video-only totals; writes
``{"question_id", "prediction"}`` per annotation question (``""`` when unanswered).
"""

from __future__ import annotations

import argparse

from llava.eval.io_utils import check_coverage, id_key, load_answers, load_json, write_jsonl


def _accuracy(questions: list[dict], answers: dict[str, dict]) -> tuple[dict[int, list[int]], int, int]:
    """Per type id [correct, count]; total correct; total count."""
    per_type: dict[int, list[int]] = {}
    for q in questions:
        answer = answers.get(id_key(q["question_id"]))
        hit = answer is not None and answer["text"].strip() == q["answer"]
        counts = per_type.setdefault(q["question_type_id"], [0, 0])
        counts[0] += int(hit)
        counts[1] += 1
    correct = sum(c for c, _ in per_type.values())
    total = sum(n for _, n in per_type.values())
    return per_type, correct, total


def score_seed(annotation_file: str, result_file: str) -> dict:
    """Score a SEED-Bench answer file.

    Returns:
        ``{"accuracy" (percent), "types": {type name: percent}, "image_accuracy",
        "video_accuracy" (percent, None when the split has no such question), "predictions":
        [{"question_id", "prediction"}]}`` plus coverage fields.

    Raises:
        ValueError: malformed files, repeated ids, or answers to unknown question ids.
    """
    data = load_json(annotation_file)
    if not isinstance(data, dict) or "questions" not in data or "question_type" not in data:
        raise ValueError(f"{annotation_file}: expected SEED-Bench json with 'questions' and 'question_type'")
    type_names = {type_id: name for name, type_id in data["question_type"].items()}
    questions = data["questions"]
    answers = load_answers(result_file)
    coverage = check_coverage(answers, [q["question_id"] for q in questions], result_file, annotation_file)

    per_type, correct, total = _accuracy(questions, answers)
    by_data_type = {}
    for data_type in ("image", "video"):
        subset = [q for q in questions if q.get("data_type") == data_type]
        _, c, n = _accuracy(subset, answers)
        by_data_type[data_type] = 100.0 * c / n if n else None
    predictions = [
        {"question_id": q["question_id"],
         "prediction": answers[id_key(q["question_id"])]["text"] if id_key(q["question_id"]) in answers else ""}
        for q in questions
    ]
    return {
        "accuracy": 100.0 * correct / total if total else 0.0,
        "types": {type_names.get(t, str(t)): 100.0 * c / n for t, (c, n) in sorted(per_type.items())},
        "image_accuracy": by_data_type["image"],
        "video_accuracy": by_data_type["video"],
        "predictions": predictions,
        **coverage.as_dict(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", type=str, required=True)
    parser.add_argument("--result-file", type=str, required=True)
    parser.add_argument("--result-upload-file", type=str, default=None)
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: <metric> = <value>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = score_seed(args.annotation_file, args.result_file)
    if result["unanswered"]:
        print(f"answered {result['answered']}/{result['total']}; {result['unanswered']} unanswered "
              "(counted as wrong)")
    for name, accuracy in result["types"].items():
        print(f"{name}: {accuracy:.2f}%")
    print(f"Total accuracy: {result['accuracy']:.2f}%")
    for data_type in ("image", "video"):
        value = result[f"{data_type}_accuracy"]
        if value is not None:
            print(f"{data_type} accuracy: {value:.2f}%")
    if args.result_upload_file:
        write_jsonl(result["predictions"], args.result_upload_file)
        print(f"wrote {args.result_upload_file}")
    if args.summary:  # LLaVA-1.5 reports the image questions (SEED-IMG)
        image = result["image_accuracy"]
        metric = f"image accuracy = {image:.2f}%" if image is not None else f"accuracy = {result['accuracy']:.2f}%"
        print(f"{args.summary}: {metric} (all {result['accuracy']:.2f}%; "
              f"answered {result['answered']}/{result['total']})")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
