"""MM-Vet grading: a judge model scores each answer against MM-Vet's ground truth, 0.0 to 1.0.

LLaVA's ``mmvet.sh`` stops at the results json (``convert_mmvet_for_eval``) and leaves the grading to
MM-Vet's own GPT-4 evaluator. This module runs that grading here, with the evaluator's flags, file
names and score tables::

    python -m llava.eval.eval_mmvet \\
        --mmvet_path ./playground/data/eval/mm-vet \\
        --result_path ./playground/data/eval/mm-vet/results \\
        --model llava-v1.5-13b

``--mmvet_path`` holds MM-Vet's ``mm-vet.json`` (``{"v1_0": {"question", "answer", "capability",
...}}``; ``bard_set.json`` too for ``--use_sub_set``), ``--result_path`` the model's
``<model>.json`` (``{"v1_0": answer}``). For every sample the judge reads a grading prompt (a short
rubric with worked examples laid out as a table) followed by the row ``question | ground truth |
prediction | `` and fills in the score. ``<AND>`` in a ground truth joins elements that must all be
in the answer, ``<OR>`` alternatives of which one is enough. Requests use temperature 0 and at most 3
tokens; a reply that is not a number in [0, 1] is asked again, with a line asking for the number
alone and a higher temperature (0, 0.5, 1.0, 1.5), up to 5 asks in all. A sample whose 5 replies hold
no score counts as 0.0, as in MM-Vet's evaluator, and is reported by id.

Written to ``--result_path`` (MM-Vet's names; ``bardset_`` after ``<model>_`` with ``--use_sub_set``):

- ``<model>_<judge>-grade-<runs>runs.json``: ``{"v1_0": {"model": [...], "content": [...], "score":
  [...]}}``, one entry per grading run, rewritten after each sample; a second call grades only what
  is missing;
- ``<model>_<judge>-cap-score-<runs>runs.csv``: per capability (rec, ocr, know, gen, spat, math,
  most frequent first) the mean score x 100 over the samples that need it, then ``total``, ``std``
  (of the total over runs) and ``runs`` (the total of each run);
- ``<model>_<judge>-cap-int-score-<runs>runs.csv``: the same per capability integration (the exact
  set of capabilities a sample needs, e.g. ``rec_know_gen``).

The prompt: MM-Vet's evaluator has its own wording and examples. This module ships its own wording
of the same rubric (:data:`DEFAULT_PROMPT`); for numbers comparable with published MM-Vet scores, pass
the evaluator's prompt with ``--prompt-file`` and its judge (``gpt-4-0613``, the default here).

Differences from MM-Vet's evaluator, on purpose: every sample must have an answer in the results
file (a missing one is an error naming the sample ids, before any request); a failed request is
retried a few times and then stops the run with the sample id and the API's own message (the
evaluator retried rate limits forever and stopped on anything else); the judge is any
OpenAI-compatible API (``--api-base``, :mod:`llava.eval.judge`); capability-integration names keep
the order of ``mm-vet.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
from collections import Counter

from llava.eval.io_utils import format_ids, load_json
from llava.eval.judge import Judge, JudgeError, add_judge_args, judge_from_args

#: MM-Vet's judge.
DEFAULT_JUDGE = "gpt-4-0613"
#: The grading protocol of MM-Vet's evaluator.
MAX_TOKENS = 3
ASKS = 5
TEMPERATURES = (0.0, 0.0, 0.5, 1.0, 1.5)
UNPARSED_SCORE = 0.0

DEFAULT_PROMPT = """\
Grade the prediction of an AI model against the ground-truth answer to a question about an image. \
In a ground truth, <AND> joins elements that must all be in the prediction for it to be fully \
correct, and <OR> joins alternatives of which any one is enough. The correctness score is one of \
0.0 (completely wrong), 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9 and 1.0 (completely right); a \
partly correct prediction gets a score in between. Fill in only the last cell of the table: the \
correctness score.

Question | Ground truth | Prediction | Correctness
--- | --- | --- | ---
How many apples are on the plate? | 3 <OR> three | There are three apples. | 1.0
How many apples are on the plate? | 3 <OR> three | I can see 4 apples on the plate. | 0.0
What are the two prices on the sign? | $4.99 <AND> $2.50 | The sign shows $4.99. | 0.5
What are the two prices on the sign? | $4.99 <AND> $2.50 | The sign lists $2.50 and $4.99. | 1.0
Why is the cat sitting in the sink? | On a hot day the cat looks for a cool place to rest; a sink is \
cool and fits its body snugly, so cats often curl up in one. | The cat likes the sink. | 0.2
Why is the cat sitting in the sink? | On a hot day the cat looks for a cool place to rest; a sink is \
cool and fits its body snugly, so cats often curl up in one. | A sink is cool to the touch and shaped \
like a snug bed, so a cat after a cool, cosy spot on a warm day curls up in it. | 1.0
"""
#: Appended to the message when a reply held no score.
SCORE_ONLY = "\nReply with the correctness score alone, a number from 0.0 to 1.0: "


def grading_message(prompt: str, question: str, ground_truth: str, prediction: str) -> str:
    """The judge's message for one sample: the prompt, then the table row to complete."""
    truth = ground_truth.replace("<AND>", " <AND> ").replace("<OR>", " <OR> ")
    return prompt + "\n" + " | ".join([question, truth, prediction, ""])


def parse_grade(reply: str) -> float | None:
    """The score a reply starts with, if it is a number in [0, 1]; else None."""
    words = reply.split()
    if not words:
        return None
    try:
        score = float(words[0])
    except ValueError:
        return None
    return score if 0.0 <= score <= 1.0 else None


def grade_sample(judge: Judge, message: str, what: str) -> tuple[str, str, float]:
    """``(judge model, last reply, score)`` for one sample; 0.0 when no reply of :data:`ASKS` holds a score."""
    content = message
    for ask, temperature in enumerate(TEMPERATURES[:ASKS]):
        reply, model = judge.complete([{"role": "user", "content": content}], what, temperature)
        score = parse_grade(reply)
        if score is not None:
            return model, reply, score
        if ask == 0:
            content = message + SCORE_ONLY
            print(f"{what}: the reply {reply!r} holds no score in [0, 1]; asking again", file=sys.stderr)
    return model, reply, UNPARSED_SCORE


def load_mmvet(mmvet_path: str, use_sub_set: bool) -> tuple[dict[str, dict], set[str]]:
    """The samples of ``mm-vet.json`` to grade (those of ``bard_set.json`` with ``use_sub_set``),
    checked, and the ids of all its samples.

    Raises:
        FileNotFoundError, ValueError: a missing or malformed file, or a sample without a question,
            answer or capability list (names the file and sample id).
    """
    path = os.path.join(mmvet_path, "mm-vet.json")
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object of samples by id (e.g. 'v1_0'), got {type(data).__name__}")
    for sid, sample in data.items():
        if not isinstance(sample, dict):
            raise ValueError(f"{path}: sample {sid!r} is not an object")
        for field in ("question", "answer"):
            if not isinstance(sample.get(field), str):
                raise ValueError(f"{path}: sample {sid!r} has no {field!r} text")
        caps = sample.get("capability")
        if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
            raise ValueError(f"{path}: sample {sid!r} needs 'capability', a non-empty list of names, got {caps!r}")
    if not use_sub_set:
        return data, set(data)
    subset_path = os.path.join(mmvet_path, "bard_set.json")
    subset = load_json(subset_path)
    if not isinstance(subset, (dict, list)):
        raise ValueError(f"{subset_path}: expected a list or object of sample ids, got {type(subset).__name__}")
    unknown = [sid for sid in subset if sid not in data]
    if unknown:
        raise ValueError(f"{subset_path}: sample ids that are not in {path}: {format_ids(unknown)}")
    return {sid: sample for sid, sample in data.items() if sid in subset}, set(data)


def load_predictions(path: str, data: dict[str, dict]) -> dict[str, str]:
    """The model's answers, checked to cover every sample.

    Raises:
        ValueError: not an object of answer texts, or samples without an answer (names them).
    """
    results = load_json(path)
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object of answers by sample id, got {type(results).__name__}")
    missing = [sid for sid in data if sid not in results]
    if missing:
        raise ValueError(f"{path}: no answer for {len(missing)} of {len(data)} MM-Vet samples: {format_ids(missing)} "
                         f"(convert_mmvet_for_eval names them v1_<question_id>)")
    not_text = [sid for sid in data if not isinstance(results[sid], str)]
    if not_text:
        raise ValueError(f"{path}: answers that are not text: {format_ids(not_text)}")
    return {sid: results[sid] for sid in data}


def file_names(result_path: str, model: str, judge_model: str, num_run: int, use_sub_set: bool) -> dict[str, str]:
    """MM-Vet's evaluator's file names: results, grades, capability and capability-integration scores."""
    sub = "bardset_" if use_sub_set else ""
    base = os.path.join(result_path, model)
    return {"results": f"{base}.json",
            "grades": f"{base}_{judge_model}-grade-{num_run}runs.json",
            "cap": f"{base}_{sub}{judge_model}-cap-score-{num_run}runs.csv",
            "cap_int": f"{base}_{sub}{judge_model}-cap-int-score-{num_run}runs.csv"}


def _write_json_atomic(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=4)
    os.replace(tmp, path)


def run_grading(data: dict[str, dict], predictions: dict[str, str], judge: Judge, grade_file: str,
                num_run: int, prompt: str, known: set[str] | None = None) -> dict:
    """Grades every sample ``num_run`` times, skipping runs already in ``grade_file``.

    Args:
        known: every MM-Vet sample id (default: ``data``'s); a grade file may hold any of them, since
            a ``--use_sub_set`` run shares its file with the full run.

    Returns:
        ``{"grades": the whole grade file, "graded": requests' samples now, "kept": grades found}``.
    Raises:
        JudgeError: as :meth:`Judge.complete`; the grades written before stay (a rerun resumes).
        ValueError: ``grade_file`` is malformed or holds samples that are not in MM-Vet.
    """
    grades: dict[str, dict] = {}
    if os.path.isfile(grade_file):
        grades = load_json(grade_file)
        if not isinstance(grades, dict):
            raise ValueError(f"{grade_file}: expected a JSON object of grades by sample id")
        unknown = [sid for sid in grades if sid not in (known or data)]
        if unknown:
            raise ValueError(f"{grade_file}: grades of samples that are not in mm-vet.json: {format_ids(unknown)}; "
                             f"is it another benchmark's grade file?")
        for sid, entry in grades.items():
            if not (isinstance(entry, dict) and all(isinstance(entry.get(k), list) for k in ("model", "content", "score"))):
                raise ValueError(f"{grade_file}: the grade of {sid!r} needs lists 'model', 'content' and 'score'")
    kept = sum(min(len(grades[sid]["score"]), num_run) for sid in data if sid in grades)
    graded = 0
    for run in range(num_run):
        for sid, sample in data.items():
            entry = grades.setdefault(sid, {"model": [], "content": [], "score": []})
            if len(entry["score"]) > run:
                continue
            message = grading_message(prompt, sample["question"], sample["answer"], predictions[sid])
            model, reply, score = grade_sample(judge, message, f"sample {sid} (run {run + 1})")
            entry["model"].append(model)
            entry["content"].append(reply)
            entry["score"].append(score)
            graded += 1
            _write_json_atomic(grades, grade_file)
    return {"grades": grades, "graded": graded, "kept": kept}


def unparsed_ids(data: dict[str, dict], grades: dict[str, dict], num_run: int) -> list[str]:
    """Samples with a run whose judge reply held no score (scored 0.0)."""
    return [sid for sid in data if any(parse_grade(c) is None for c in grades[sid]["content"][:num_run])]


def score_tables(data: dict[str, dict], grades: dict[str, dict], num_run: int, decimals: int) -> tuple[dict, dict]:
    """Per capability and per capability integration: the mean score x 100 (mean over runs), plus
    ``total``, ``std`` (over runs, of the total) and ``runs`` (each run's total), as MM-Vet reports.
    """
    counts = Counter(c for sample in data.values() for c in dict.fromkeys(sample["capability"]))
    columns = [c for c, _ in counts.most_common()]
    sets: dict[frozenset, str] = {}
    set_counts: Counter = Counter()
    for sample in data.values():
        key = frozenset(sample["capability"])
        sets.setdefault(key, "_".join(dict.fromkeys(sample["capability"])))
        set_counts[key] += 1
    set_order = sorted(sets, key=lambda k: -set_counts[k])  # stable: ties keep mm-vet.json's order

    sums = {c: [0.0] * num_run for c in columns}
    set_sums = {k: [0.0] * num_run for k in set_order}
    totals = [0.0] * num_run
    for sid, sample in data.items():
        for run in range(num_run):
            score = float(grades[sid]["score"][run])
            for c in dict.fromkeys(sample["capability"]):
                sums[c][run] += score
            set_sums[frozenset(sample["capability"])][run] += score
            totals[run] += score
    run_totals = [t / len(data) * 100 for t in totals]
    std = round(statistics.pstdev(run_totals), decimals)
    runs = "[" + ", ".join(str(round(t, decimals)) for t in run_totals) + "]"

    def mean_pct(values: list[float], n: int) -> float:
        return round(sum(v / n * 100 for v in values) / len(values), decimals)

    cap = {c: mean_pct(sums[c], counts[c]) for c in columns}
    cap_int = {sets[k]: mean_pct(set_sums[k], set_counts[k]) for k in set_order}
    for table in (cap, cap_int):
        table.update(total=mean_pct(totals, len(data)), std=std, runs=runs)
    return cap, cap_int


def write_table(table: dict, model: str, path: str) -> None:
    """One table as MM-Vet's evaluator writes it: a header row, then the model's row."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", *table])
        writer.writerow([model, *table.values()])


def format_table(table: dict, model: str) -> str:
    keys = list(table)
    cells = [[""] + keys, [model] + [str(table[k]) for k in keys]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys) + 1)]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in cells)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mmvet_path", "--mmvet-path", required=True, help="folder with mm-vet.json")
    parser.add_argument("--result_path", "--result-path", required=True,
                        help="folder with <model>.json; the grades and score tables are written here")
    parser.add_argument("--model", required=True, help="the results file's name without .json")
    parser.add_argument("--num_run", "--num-run", type=int, default=1,
                        help="grading runs per sample (MM-Vet's paper: 5); the tables average them")
    parser.add_argument("--decimal_places", "--decimal-places", type=int, default=1)
    parser.add_argument("--use_sub_set", "--use-sub-set", action="store_true",
                        help="grade only the samples of bard_set.json")
    parser.add_argument("--prompt-file", help="the grading prompt (e.g. MM-Vet evaluator's, for comparable scores)")
    add_judge_args(parser, DEFAULT_JUDGE, f"default {DEFAULT_JUDGE} (MM-Vet's)", ("--gpt_model", "--judge-model"))
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.num_run < 1:
        sys.exit(f"error: --num_run must be at least 1, got {args.num_run}")
    judge = judge_from_args(args, MAX_TOKENS)
    prompt = DEFAULT_PROMPT
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompt = f.read()
        if not prompt.strip():
            sys.exit(f"error: --prompt-file {args.prompt_file} is empty")
    names = file_names(args.result_path, args.model, args.judge_model, args.num_run, args.use_sub_set)
    data, known = load_mmvet(args.mmvet_path, args.use_sub_set)
    predictions = load_predictions(names["results"], data)
    try:
        result = run_grading(data, predictions, judge, names["grades"], args.num_run, prompt, known)
    except JudgeError as err:
        sys.exit(f"error: {err}\nThe grades written so far are in {names['grades']}; run again to go on.")
    cap, cap_int = score_tables(data, result["grades"], args.num_run, args.decimal_places)
    write_table(cap, args.model, names["cap"])
    write_table(cap_int, args.model, names["cap_int"])
    unparsed = unparsed_ids(data, result["grades"], args.num_run)
    print(format_table(cap, args.model))
    print(format_table(cap_int, args.model))
    print(f"graded {result['graded']} sample run(s), {result['kept']} already in {names['grades']}; "
          f"{len(data)} samples x {args.num_run} run(s)")
    if unparsed:
        print(f"{len(unparsed)} sample(s) got no score from the judge in {ASKS} asks and count as "
              f"{UNPARSED_SCORE} (as in MM-Vet's evaluator): {format_ids(unparsed, quote=False)}")
    print(f"mmvet {args.model}: total = {cap['total']} (judge {args.judge_model}; tables {names['cap']}, "
          f"{names['cap_int']})")
    return {"cap": cap, "cap_int": cap_int, "graded": result["graded"], "kept": result["kept"],
            "unparsed_ids": unparsed, "files": names}


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
