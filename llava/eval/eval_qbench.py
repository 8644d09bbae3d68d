"""Q-Bench LLVisionQA accuracy on a split with answers (dev), per question type and concern.

    python -m llava.eval.eval_qbench \\
        --answers-file ./playground/data/eval/qbench/answers/llvisionqa_dev/llava-v1.5-7b-delta.jsonl

Reads ``model_vqa_qbench``'s answer lines (each the question's record with ``candidates``,
``correct_ans`` and the model's ``response``). A response picks an option when it starts with the
option's letter (``B``, ``B.``, ``(B)``, ``B) ...``, or ``B Clear`` when ``Clear`` is option B; so the
article in "A clear image" is not option A), or else when it names exactly one candidate's text
(whole words, case ignored; a candidate named only inside a longer candidate it is part of, such
as "high" in "Very high", does not count); it is right when that option is ``correct_ans``. A
response that picks no option, or several, is wrong and counted as such.

This is an exact-match reading of the answers, not Q-Bench's own scoring (which asks a GPT judge
to match free-form answers), so numbers can differ from Q-Bench's leaderboard for models that
answer in sentences; the test split has no answers and goes to Q-Bench's maintainers.

Types and concerns are reported by the codes in Q-Bench's files (``type``: the question's form,
yes-or-no / what / how; ``concern``: distortion or other low-level attribute, alone or in context).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from llava.eval.io_utils import format_ids, id_key, load_jsonl

LETTERS = "ABCD"
# A letter on its own, or followed by punctuation: "B", "B.", "(B)", "B) ...", "B: ...".
_LEADING_LETTER = re.compile(r"^(?:\(([A-D])\)|([A-D])(?:[.):,]|$))")
# A letter followed by a space and more text, which may be the article "A" instead.
_LETTER_THEN_TEXT = re.compile(r"^([A-D])\s+(.*)$", re.DOTALL)


def _mentions(candidate: str, text: str) -> list[tuple[int, int]]:
    """Where the candidate's text occurs in the response as whole words, case ignored."""
    pattern = rf"(?<!\w){re.escape(candidate.strip())}(?!\w)"
    return [m.span() for m in re.finditer(pattern, text, re.IGNORECASE)]


def picked_option(response: str, candidates: list[str]) -> int | None:
    """The index of the candidate a response picks, or None when it picks none or several."""
    text = response.strip()
    match = _LEADING_LETTER.match(text)
    if match:
        index = LETTERS.index(match.group(1) or match.group(2))
        return index if index < len(candidates) else None
    match = _LETTER_THEN_TEXT.match(text)
    if match:
        # "B Clear" picks B when the text after the letter starts with B's candidate.
        index = LETTERS.index(match.group(1))
        if index < len(candidates) and candidates[index].strip() and \
                re.match(rf"{re.escape(candidates[index].strip())}(?!\w)", match.group(2), re.IGNORECASE):
            return index
    spans = {i: _mentions(c, text) for i, c in enumerate(candidates) if c.strip()}

    def inside_another(i: int, span: tuple[int, int]) -> bool:
        return any(j != i and a <= span[0] and span[1] <= b and (a, b) != span
                   for j, others in spans.items() for a, b in others)

    named = [i for i, found in spans.items() if found and not all(inside_another(i, s) for s in found)]
    return named[0] if len(named) == 1 else None


def score(answers: list[dict], path: str) -> dict:
    """Accuracy overall, per type and per concern.

    Returns:
        ``{"accuracy", "correct", "total", "unpicked_ids", "by_type": {name: (acc, n)}, "by_concern": ...}``.
    Raises:
        ValueError: an answer without ``candidates``, ``correct_ans`` (a split without answers) or
            ``response``, a ``correct_ans`` that is not one of its candidates, or a question
            answered twice; names the question.
    """
    if not answers:
        raise ValueError(f"{path}: no answers")
    no_truth = [a.get("question_id") for a in answers if "correct_ans" not in a]
    if no_truth:
        raise ValueError(f"{path}: {len(no_truth)} answer(s) have no 'correct_ans' (question_id "
                         f"{format_ids(no_truth)}): the test split is scored by Q-Bench's maintainers")
    seen: dict[str, int] = {}
    for answer in answers:
        key = id_key(answer.get("question_id"))
        seen[key] = seen.get(key, 0) + 1
    repeated = [k for k, n in seen.items() if n > 1]
    if repeated:
        raise ValueError(f"{path}: {len(repeated)} question_id(s) answered more than once "
                         f"({format_ids(repeated)}); was a chunk merged twice?")
    correct, unpicked = 0, []
    groups: dict[str, dict] = {"by_type": defaultdict(list), "by_concern": defaultdict(list)}
    for answer in answers:
        qid = answer.get("question_id")
        for field in ("candidates", "response"):
            if field not in answer:
                raise ValueError(f"{path}: the answer to question_id {qid!r} has no {field!r}")
        candidates = answer["candidates"]
        if answer["correct_ans"] not in candidates:
            raise ValueError(f"{path}: question_id {qid!r}: correct_ans {answer['correct_ans']!r} is not one of "
                             f"its candidates {candidates}")
        picked = picked_option(answer["response"], candidates)
        right = picked is not None and candidates[picked] == answer["correct_ans"]
        if picked is None:
            unpicked.append(qid)
        correct += right
        groups["by_type"][str(answer.get("type"))].append(right)
        groups["by_concern"][str(answer.get("concern"))].append(right)
    result = {"accuracy": correct / len(answers), "correct": correct, "total": len(answers), "unpicked_ids": unpicked}
    for name, group in groups.items():
        result[name] = {k: (sum(v) / len(v), len(v)) for k, v in sorted(group.items())}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--answers-file", required=True, help="model_vqa_qbench's answers (jsonl)")
    parser.add_argument("--summary", default=None, help="label of a last summary line, e.g. 'qbench <ckpt>'")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = score(load_jsonl(args.answers_file), args.answers_file)
    for name in ("by_type", "by_concern"):
        for key, (accuracy, count) in result[name].items():
            print(f"{name[3:]} {key}: {100 * accuracy:.2f}% ({count})")
    if result["unpicked_ids"]:
        print(f"{len(result['unpicked_ids'])} response(s) pick no single option and count as wrong (question_id "
              f"{format_ids(result['unpicked_ids'], quote=False)})")
    line = f"accuracy = {100 * result['accuracy']:.2f}% ({result['correct']}/{result['total']})"
    print(f"{args.summary}: {line}" if args.summary else line)
    return result


if __name__ == "__main__":
    main()
