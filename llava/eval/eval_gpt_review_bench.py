"""LLaVA-Bench (in the wild) review: a judge model scores a model's answers against reference answers.

Upstream's ``eval_gpt_review_bench``, with its flags and output format::

    python -m llava.eval.eval_gpt_review_bench \\
        --question ./playground/data/eval/llava-bench-in-the-wild/questions.jsonl \\
        --context ./playground/data/eval/llava-bench-in-the-wild/context.jsonl \\
        --rule ./playground/data/eval/llava-bench-in-the-wild/rule.json \\
        --answer-list ./playground/data/eval/llava-bench-in-the-wild/answers_gpt4.jsonl \\
                      ./playground/data/eval/llava-bench-in-the-wild/answers/llava-v1.5-13b.jsonl \\
        --output ./playground/data/eval/llava-bench-in-the-wild/reviews/llava-v1.5-13b.jsonl

For every question the judge gets the image's context (its caption), the question, the two answers
(the reference first) and the rule of the question's category (``llava_bench_<category>`` in
upstream's ``rule.json``, which is not shipped here: pass upstream's file), and answers with the two
scores (1-10) on its first line. Each output line is ``{"id", "question_id", "answer1_id",
"answer2_id", "category", "content", "tuple"}``; ``python -m llava.eval.summarize_gpt_review``
turns them into the relative score LLaVA reports.

The judge is any OpenAI-compatible chat-completions API: OpenAI's by default (key from
``$OPENAI_API_KEY``), or a local server with ``--api-base`` (see :mod:`llava.eval.judge`).

Differences from upstream, on purpose: answers are matched to questions by id, not by line position
(a missing answer is an error naming the question); every line is written as soon as it is reviewed
and a second run reviews only the questions not yet in ``--output``; a failed request is retried a
few times and then stops the run with the question id and the API's own message (upstream retried
forever); reviews whose first line holds no score pair are counted and reported (upstream kept
them silently as ``[-1, -1]`` and averaged them in).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from llava.eval.io_utils import format_ids, id_key, index_by_id, load_answers, load_json, load_jsonl
from llava.eval.judge import Judge, JudgeError, add_judge_args, judge_from_args

#: The judge's system message and sampling temperature in upstream's review (kept so scores compare).
SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of the answer."
TEMPERATURE = 0.2
#: Upstream's judge; OpenAI has retired it, so pass a current model with --judge-model.
DEFAULT_JUDGE = "gpt-4-0314"
UNSCORED = [-1, -1]


def parse_score(review: str) -> list[float]:
    """The two scores on the review's first line ("8 6" or "8, 6"), else ``[-1, -1]`` (upstream's rule)."""
    first = review.strip().split("\n", 1)[0].replace(",", " ").split()
    if len(first) == 2:
        try:
            return [float(first[0]), float(first[1])]
        except ValueError:
            pass
    return list(UNSCORED)


def review_content(context: str, question: str, answer1: str, answer2: str, role: str, prompt: str) -> str:
    """The judge's user message, laid out as upstream's review lays it out."""
    return (f"[Context]\n{context}\n\n"
            f"[Question]\n{question}\n\n"
            f"[{role} 1]\n{answer1}\n\n[End of {role} 1]\n\n"
            f"[{role} 2]\n{answer2}\n\n[End of {role} 2]\n\n"
            f"[System]\n{prompt}\n\n")


def review(judge: Judge, content: str, what: str) -> str:
    """The judge's review of one judge message, with upstream's system message and temperature."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
    return judge.complete(messages, what, TEMPERATURE)[0]


def _context_text(record: dict, path: str) -> str:
    caption = record.get("caption")
    if isinstance(caption, list):
        return "\n".join(str(c) for c in caption)
    if not isinstance(caption, str):
        raise ValueError(f"{path}: the context of image {record.get('image')!r} has no 'caption' text")
    return caption


def build_reviews(question_file: str, context_file: str, rule_file: str,
                  answer_files: list[str]) -> list[tuple[dict, str]]:
    """Every question's output record (without the review) and judge message, in question order.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a question without a category, context, rule or one of its two answers (names
            the question ids); a rule without role or prompt.
    """
    if len(answer_files) != 2:
        raise ValueError(f"--answer-list takes two files (the reference answers, then the model's), got {len(answer_files)}")
    questions = load_jsonl(question_file)
    index_by_id(questions, question_file)  # repeated question ids are an error
    contexts = index_by_id(load_jsonl(context_file), context_file, key="image")
    rules = load_json(rule_file)
    if not isinstance(rules, dict):
        raise ValueError(f"{rule_file}: expected a JSON object of rules by category, got {type(rules).__name__}")
    answers = [load_answers(path) for path in answer_files]
    for path, found in zip(answer_files, answers):
        missing = [q["question_id"] for q in questions if id_key(q["question_id"]) not in found]
        if missing:
            raise ValueError(f"{path}: no answer for {len(missing)} of {len(questions)} questions in "
                             f"{question_file}: question_id {format_ids(missing)}")
    items = []
    for question in questions:
        qid = question["question_id"]
        for field in ("text", "image", "category"):
            if field not in question:
                raise ValueError(f"{question_file}: question_id {qid!r} has no {field!r} field")
        category = "llava_bench_" + question["category"]
        if category not in rules:
            raise ValueError(f"{rule_file}: no rule {category!r} for question_id {qid!r}; "
                             f"rules: {sorted(rules)}")
        rule = rules[category]
        if not isinstance(rule, dict) or "role" not in rule or "prompt" not in rule:
            raise ValueError(f"{rule_file}: rule {category!r} needs 'role' and 'prompt'")
        if id_key(question["image"]) not in contexts:
            raise ValueError(f"{context_file}: no context for image {question['image']!r} (question_id {qid!r})")
        answer1, answer2 = (a[id_key(qid)] for a in answers)
        content = review_content(_context_text(contexts[id_key(question["image"])], context_file), question["text"],
                                 answer1["text"], answer2["text"], rule["role"], rule["prompt"])
        record = {"id": len(items) + 1, "question_id": qid, "answer1_id": answer1.get("answer_id", qid),
                  "answer2_id": answer2.get("answer_id", qid), "category": category}
        items.append((record, content))
    return items


def run_review(items: list[tuple[dict, str]], judge: Judge, output: str) -> dict:
    """Reviews the items not yet in ``output``, appending each line as it is done.

    Returns:
        ``{"reviewed", "kept", "total", "unscored_ids"}``: reviewed now, already in the file, all
        questions, and the question ids (whole file) whose review has no score pair.
    Raises:
        JudgeError: as :meth:`Judge.review`; the lines written before stay (a rerun resumes).
        ValueError: ``output`` holds reviews of questions that are not in the question file.
    """
    wanted = {id_key(r["question_id"]) for r, _ in items}
    done: dict[str, dict] = {}
    if os.path.isfile(output):
        done = {id_key(r["question_id"]): r for r in load_jsonl(output)}
        unknown = sorted(set(done) - wanted)
        if unknown:
            raise ValueError(f"{output}: reviews of question ids that are not in the question file: "
                             f"{format_ids(unknown)}; is it another benchmark's review file?")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    reviewed = 0
    with open(output, "a", encoding="utf-8") as f:
        for record, content in items:
            key = id_key(record["question_id"])
            if key in done:
                continue
            text = review(judge, content, f"question {record['question_id']!r}")
            record = {**record, "content": text, "tuple": parse_score(text)}
            f.write(json.dumps(record) + "\n")
            f.flush()
            done[key] = record
            reviewed += 1
    unscored = [r["question_id"] for r, _ in items if done[id_key(r["question_id"])].get("tuple") == UNSCORED]
    return {"reviewed": reviewed, "kept": len(items) - reviewed, "total": len(items), "unscored_ids": unscored}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--question", required=True, help="questions.jsonl")
    parser.add_argument("-c", "--context", required=True, help="context.jsonl (caption per image)")
    parser.add_argument("-a", "--answer-list", nargs="+", required=True,
                        help="two answer files: the reference (answers_gpt4.jsonl), then the model's")
    parser.add_argument("-r", "--rule", required=True, help="upstream's rule.json")
    parser.add_argument("-o", "--output", required=True, help="review jsonl (resumed if it exists)")
    parser.add_argument("--max-tokens", type=int, default=1024, help="longest review")
    add_judge_args(parser, DEFAULT_JUDGE,
                   f"default {DEFAULT_JUDGE} (upstream's; retired by OpenAI, so name a current one)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    judge = judge_from_args(args, args.max_tokens)
    items = build_reviews(args.question, args.context, args.rule, args.answer_list)
    try:
        result = run_review(items, judge, args.output)
    except JudgeError as err:
        sys.exit(f"error: {err}\nThe reviews written so far are in {args.output}; run again to go on.")
    print(f"reviewed {result['reviewed']} question(s), {result['kept']} already in {args.output}; "
          f"{result['total']} in all")
    if result["unscored_ids"]:
        print(f"{len(result['unscored_ids'])} review(s) have no score pair on their first line (question_id "
              f"{format_ids(result['unscored_ids'])}): kept as [-1, -1], left out by summarize_gpt_review")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
