"""LLaVA-Bench scores from review files: per category, the model's mean judge score relative to the reference's.

Upstream's ``summarize_gpt_review``, with its flags and its printout::

    python -m llava.eval.summarize_gpt_review -f ./playground/data/eval/llava-bench-in-the-wild/reviews/llava-v1.5-13b.jsonl

For each review file (``-f`` files, or every ``*.jsonl`` in ``-d``) it prints the file's name, then
one line per category and one for ``all``: ``<category> <relative score> <reference score>
<model score>``, where a score is the mean judge score x 10 and the relative score is model /
reference x 100 (what LLaVA reports for LLaVA-Bench). Reviews whose judge gave no score pair
(``[-1, -1]``) are left out of the means and counted, where upstream averaged them in.
"""

from __future__ import annotations

import argparse
import glob
import os
from collections import defaultdict

from llava.eval.eval_gpt_review_bench import UNSCORED
from llava.eval.io_utils import format_ids, id_key, index_by_id, load_jsonl


def summarize_file(path: str, ignore: set[str] = frozenset()) -> dict:
    """Scores of one review file.

    Args:
        ignore: question ids (as :func:`id_key`) to leave out.
    Returns:
        ``{"categories": {name: {"relative", "reference", "model", "count"}}, "scored", "unscored_ids",
        "ignored"}``, ``all`` among the categories.
    Raises:
        ValueError: a review without ``question_id``, a question id reviewed twice, a review without
            a ``tuple`` or ``score`` pair of numbers (names the file and question id), or a file with
            no scored review.
    """
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    unscored, ignored = [], 0
    reviews = load_jsonl(path)
    index_by_id(reviews, path)  # a review appended twice would be averaged in twice
    for review in reviews:
        qid = review["question_id"]
        if id_key(qid) in ignore:
            ignored += 1
            continue
        pair = review.get("tuple", review.get("score"))
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{path}: review of question_id {qid!r} has no score pair ('tuple' or 'score')")
        if pair == UNSCORED:
            unscored.append(qid)
            continue
        try:
            pair = float(pair[0]), float(pair[1])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: review of question_id {qid!r} has a score pair that is not two numbers: "
                             f"{pair!r}") from None
        if "category" in review:
            scores[review["category"]].append(pair)
        scores["all"].append(pair)
    if not scores["all"]:
        raise ValueError(f"{path}: no scored review" + (f" ({len(unscored)} without a score pair)" if unscored else ""))
    categories = {}
    for name, pairs in sorted(scores.items()):
        reference = sum(p[0] for p in pairs) / len(pairs)
        model = sum(p[1] for p in pairs) / len(pairs)
        # upstream rounds the means to 3 places before the ratio; so does this, to print the same numbers
        reference, model = round(reference, 3), round(model, 3)
        categories[name] = {"relative": round(model / reference * 100, 1) if reference else float("nan"),
                            "reference": round(reference * 10, 1), "model": round(model * 10, 1),
                            "count": len(pairs)}
    return {"categories": categories, "scored": len(scores["all"]), "unscored_ids": unscored, "ignored": ignored}


def review_files(directory: str | None, files: list[str] | None) -> list[str]:
    if files:
        return list(files)
    if directory is None:
        raise ValueError("give review files with -f, or a folder of them with -d")
    found = sorted(glob.glob(os.path.join(directory, "*.jsonl")))
    if not found:
        raise ValueError(f"{directory}: no *.jsonl review files")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-d", "--dir", default=None, help="a folder of review files")
    parser.add_argument("-v", "--version", default=None, help="only files of this judge version ('0613' or '0314')")
    parser.add_argument("-s", "--select", nargs="*", default=None, help="only files whose name holds all of these")
    parser.add_argument("-f", "--files", nargs="*", default=[], help="review files")
    parser.add_argument("-i", "--ignore", nargs="*", default=[], help="question ids to leave out")
    parser.add_argument("--summary", type=str, default=None, metavar="LABEL",
                        help='end with one line "LABEL: relative score = <all>" (scripts pass "<bench> <ckpt>")')
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    ignore = {id_key(i) for i in args.ignore}
    results = {}
    for path in review_files(args.dir, args.files):
        config = os.path.basename(path).replace("gpt4_text_", "").replace(".jsonl", "")
        if args.select is not None and any(s not in config for s in args.select):
            continue
        version = "0613" if "0613" in config else "0314"  # upstream's naming of its judge runs
        if args.version is not None and args.version != version:
            continue
        result = summarize_file(path, ignore)
        results[path] = result
        print(config)
        for name, row in result["categories"].items():
            print(name, row["relative"], row["reference"], row["model"])
        if result["unscored_ids"]:
            print(f"left out: {len(result['unscored_ids'])} review(s) without a score pair (question_id "
                  f"{format_ids(result['unscored_ids'])})")
        print("=================================")
        if args.summary:
            row = result["categories"]["all"]
            total = result["scored"] + len(result["unscored_ids"])
            print(f"{args.summary}: relative score = {row['relative']} (reference {row['reference']}, model "
                  f"{row['model']}; scored {result['scored']}/{total})")
    if not results:
        raise SystemExit("error: no review file matched --select / --version")
    return results


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
