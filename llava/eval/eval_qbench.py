"""Q-Bench LLVisionQA accuracy on a split with answers (dev), per question type and concern.

    python -m llava.eval.eval_qbench \\
        --questions-file ./playground/data/eval/qbench/llvisionqa_dev.json \\
        --answers-file ./playground/data/eval/qbench/answers/llvisionqa_dev/llava-v1.5-7b-delta.jsonl

Reads ``model_vqa_qbench``'s answer lines (each the question's record with ``candidates``,
``correct_ans`` and the model's ``response``). A response picks an option when it starts with the
option's letter (``B``, ``B.``, ``(B)``, ``B) ...``, or ``B Clear`` when ``Clear`` is option B; so the
article in "A clear image" is not option A), or else when it names exactly one candidate's text
(whole words, case ignored; a candidate named only inside a longer candidate it is part of, such
as "high" in "Very high", does not count); it is right when that option is ``correct_ans``. A
response that picks no option, or several, is wrong and counted as such. The question file the
answers were made from is checked against them: every question must have its answer (the runner's
``question_id`` is the question's position in the file) and every answer its question.

This is an exact-match reading of the answers, not Q-Bench's own scoring (which asks a GPT judge
to match free-form answers), so numbers can differ from Q-Bench's leaderboard for models that
answer in sentences; the test split has no answers and goes to Q-Bench's maintainers.

Types and concerns are reported by the codes in Q-Bench's files (``type``: the question's form,
yes-or-no / what / how; ``concern``: distortion or other low-level attribute, alone or in context).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import defaultdict

from llava.eval.io_utils import check_coverage, format_ids, id_key, load_json, load_jsonl

LETTERS = "ABCD"
# A letter on its own, or followed by punctuation: "B", "B.", "(B)", "B) ...", "B: ...".
_LEADING_LETTER = re.compile(r"^(?:\(([A-D])\)|([A-D])(?:[.):,]|$))")
# A letter followed by a space and more text, which may be the article "A" instead.
_LETTER_THEN_TEXT = re.compile(r"^([A-D])\s+(.*)$", re.DOTALL)


def load_llvisionqa(path: str) -> list[dict]:
    """Q-Bench's question list, each entry checked.

    Raises:
        ValueError: not a JSON list, an empty list, or an entry without ``img_path``/``question``
            text or with candidates that are not 2 to 4 texts (names the entry's position).
    """
    path = os.path.expanduser(path)
    questions = load_json(path)
    if not isinstance(questions, list):
        raise ValueError(f"{path}: expected a JSON list of Q-Bench questions, got {type(questions).__name__}")
    if not questions:
        raise ValueError(f"{path}: no questions in the file")
    for position, q in enumerate(questions):
        if not isinstance(q, dict) or not all(isinstance(q.get(k), str) for k in ("img_path", "question")):
            keys = sorted(q) if isinstance(q, dict) else type(q).__name__
            raise ValueError(f"{path}: question {position} needs 'img_path' and 'question' texts; has {keys}")
        candidates = q.get("candidates")
        if not (isinstance(candidates, list) and 2 <= len(candidates) <= len(LETTERS)
                and all(isinstance(c, str) for c in candidates)):
            raise ValueError(f"{path}: question {position} ({q['img_path']}) needs 'candidates', 2 to "
                             f"{len(LETTERS)} texts; got {candidates!r:.80}")
    return questions


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


def check_questions(answers: list[dict], path: str, questions: list[dict], questions_path: str) -> None:
    """Every question answered, every answer a question of the file (by position, image and question).

    Raises:
        ValueError: an answer whose question is not in the file, or questions without an answer
            (names them by position and image).
    """
    coverage = check_coverage((id_key(a.get("question_id")) for a in answers), range(len(questions)), path,
                              f"{questions_path} (question_id is the question's position, 0 to {len(questions) - 1})")
    for answer in answers:
        question = questions[int(answer["question_id"])]
        for field in ("img_path", "question"):
            if field in answer and answer[field] != question[field]:
                raise ValueError(f"{path}: the answer to question_id {answer['question_id']!r} has {field} "
                                 f"{answer[field]!r:.80}, but question {answer['question_id']} of {questions_path} "
                                 f"has {question[field]!r:.80}: were the answers made from another question file?")
    if coverage.unanswered:
        missing = [f"{i} ({questions[i]['img_path']})" for i in coverage.unanswered_ids]
        raise ValueError(f"{path}: {coverage.unanswered} of the {coverage.total} questions in {questions_path} have "
                         f"no answer (question_id {format_ids(missing, quote=False)}); run the answers again to "
                         f"finish them (the runner resumes)")


def score(answers: list[dict], path: str, questions: list[dict] | None = None,
          questions_path: str = "the question file") -> dict:
    """Accuracy overall, per type and per concern.

    Args:
        answers: ``model_vqa_qbench``'s answer records.
        path: the answer file (for messages).
        questions: the question list the answers were made from; checked against them (every
            question answered, each answer the question at its position) when given.
        questions_path: the question file (for messages).

    Returns:
        ``{"accuracy", "correct", "total", "unpicked_ids", "by_type": {name: (acc, n)}, "by_concern": ...}``.
    Raises:
        ValueError: an answer without ``candidates``, ``correct_ans`` (a split without answers) or
            ``response``, a ``correct_ans`` that is not one of its candidates, or a question
            answered twice; a question without an answer, or an answer that is not the question
            file's; names the question.
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
        if not isinstance(answer["response"], str):
            raise ValueError(f"{path}: the answer to question_id {qid!r}: 'response' must be a string, got "
                             f"{json.dumps(answer['response'])[:60]}")
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
    if questions is not None:
        check_questions(answers, path, questions, questions_path)
    result = {"accuracy": correct / len(answers), "correct": correct, "total": len(answers), "unpicked_ids": unpicked}
    for name, group in groups.items():
        result[name] = {k: (sum(v) / len(v), len(v)) for k, v in sorted(group.items())}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions-file", required=True,
                        help="the LLVisionQA question file the answers were made from (llvisionqa_dev.json): every "
                             "question in it must have an answer")
    parser.add_argument("--answers-file", required=True, help="model_vqa_qbench's answers (jsonl)")
    parser.add_argument("--summary", default=None, help="label of a last summary line, e.g. 'qbench <ckpt>'")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result = score(load_jsonl(args.answers_file), args.answers_file, load_llvisionqa(args.questions_file),
                   args.questions_file)
    for name in ("by_type", "by_concern"):
        for key, (accuracy, count) in result[name].items():
            print(f"{name[3:]} {key}: {100 * accuracy:.2f}% ({count})")
    if result["unpicked_ids"]:
        print(f"{len(result['unpicked_ids'])} response(s) pick no single option and count as wrong (question_id "
              f"{format_ids(result['unpicked_ids'], quote=False)})")
    line = (f"accuracy = {100 * result['accuracy']:.2f}% ({result['correct']}/{result['total']}; "
            f"answered {result['total']}/{result['total']})")
    print(f"{args.summary}: {line}" if args.summary else line)
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
