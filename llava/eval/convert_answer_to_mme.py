"""Convert a LLaVA MME answer file to MME's per-category result files.

    cd ./playground/data/eval/MME
    python -m llava.eval.convert_answer_to_mme --experiment llava-v1.5-13b

reads ``answers/<experiment>.jsonl`` and the ground truth in ``MME_Benchmark_release_version/``
and writes ``eval_tool/answers/<experiment>/<category>.txt`` with one line per question:
``image<TAB>question<TAB>ground truth<TAB>answer`` (MME's format), removing the category files of
an earlier conversion whose categories these answers lack. Paths are relative to
``--mme-dir`` (default: the current directory, as upstream, whose script lives in that
folder). Score the result with :mod:`llava.eval.calculation_mme`.

The answer's ``question_id`` is ``<category>/.../<image file>``, shared by the two questions
of an image, so a question is identified by its id and prompt together. The prompt is looked up in
the ground truth after removing LLaVA's "Answer the question using a single word or phrase."
and, when missing, adding " Please answer yes or no." (with one or two spaces: the MME files
use both). Tabs and newlines inside an answer are replaced by spaces so each stays on one line.
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

from llava.eval.calculation_mme import COGNITION, PERCEPTION
from llava.eval.io_utils import Coverage, format_ids, load_answer_lines

SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
YES_NO_INSTRUCTION = "Please answer yes or no."


def load_mme_ground_truth(data_path: str) -> dict[tuple[str, str, str], str]:
    """``{(category, image stem, question): "Yes"|"No"}`` from ``MME_Benchmark_release_version``.

    A category folder holds either ``images/`` + ``questions_answers_YN/`` or the images and
    their ``<stem>.txt`` question files side by side; each txt line is ``question<TAB>answer``.
    """
    if not os.path.isdir(data_path):
        raise FileNotFoundError(f"MME ground truth folder not found: {data_path!r}")
    gt = {}
    for category in sorted(os.listdir(data_path)):
        category_dir = os.path.join(data_path, category)
        if not os.path.isdir(category_dir):
            continue
        qa_dir = os.path.join(category_dir, "questions_answers_YN")
        if not os.path.isdir(os.path.join(category_dir, "images")):
            qa_dir = category_dir
        if not os.path.isdir(qa_dir):
            raise FileNotFoundError(f"MME category {category!r} has images/ but no {qa_dir!r}")
        for name in sorted(os.listdir(qa_dir)):
            if not name.endswith(".txt"):
                continue
            path = os.path.join(qa_dir, name)
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    parts = line.strip().split("\t")
                    if len(parts) != 2:
                        raise ValueError(f"{path}:{lineno}: expected 'question<TAB>answer', got {line.strip()!r}")
                    gt[(category, name[: -len(".txt")], parts[0])] = parts[1]
    return gt


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines()).strip()


def _gt_question(gt: dict, category: str, stem: str, prompt: str) -> str | None:
    question = prompt.replace(SHORT_ANSWER_INSTRUCTION, "").strip()
    if YES_NO_INSTRUCTION in question:
        candidates = [question]
    else:
        candidates = [f"{question} {YES_NO_INSTRUCTION}", f"{question}  {YES_NO_INSTRUCTION}"]
    for candidate in candidates:
        if (category, stem, candidate) in gt:
            return candidate
    return None


def convert_answers_to_mme(answers_file: str, data_path: str, result_dir: str) -> dict:
    """Write one ``<category>.txt`` per category into ``result_dir``.

    MME category files in ``result_dir`` of categories these answers lack (left by an earlier
    conversion) are removed, so that they are not scored with these answers.

    Returns:
        ``{"categories": {category: number of lines}, "removed": [file name, ...]}`` plus coverage
        fields (answered vs the ground-truth questions of the categories present in the answers).

    Raises:
        ValueError: bad jsonl lines, a question answered twice, or an answer whose question is
            not in the ground truth (names its question_id and the prompt).
    """
    gt = load_mme_ground_truth(data_path)
    lines = defaultdict(list)
    seen = set()
    unknown, repeated = [], []
    for _, answer in load_answer_lines(answers_file, strings=("prompt", "text")):
        qid = str(answer["question_id"])
        category = qid.split("/")[0]
        image = qid.split("/")[-1]
        stem = image.split(".")[0]
        question = _gt_question(gt, category, stem, answer.get("prompt", ""))
        if question is None:
            unknown.append(f"{qid!r}: {answer.get('prompt', '')[:60]!r}")
            continue
        if (category, stem, question) in seen:
            repeated.append(f"{qid!r}: {question[:60]!r}")
        seen.add((category, stem, question))
        lines[category].append("\t".join((image, question, gt[category, stem, question], _one_line(answer["text"]))))
    if unknown:
        raise ValueError(
            f"{answers_file}: {len(unknown)} answer(s) not found in the MME ground truth {data_path}: "
            + "; ".join(unknown[:5])
        )
    if repeated:
        raise ValueError(
            f"{answers_file}: {len(repeated)} question(s) answered more than once: "
            f"{format_ids(repeated, 5, quote=False)}"
        )
    os.makedirs(result_dir, exist_ok=True)
    for category, category_lines in lines.items():
        with open(os.path.join(result_dir, f"{category}.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(category_lines) + "\n")
    # A category file of an earlier conversion that these answers no longer cover would be scored
    # with the new ones; it is this converter's output, so it goes (other files stay).
    owned = set(PERCEPTION + COGNITION) | {key[0] for key in gt}
    removed = sorted(name for name in os.listdir(result_dir)
                     if name.endswith(".txt") and name[: -len(".txt")] in owned - set(lines))
    for name in removed:
        os.remove(os.path.join(result_dir, name))
    expected = sorted(k for k in gt if k[0] in lines)
    unanswered = ["/".join(k[:2]) + f" {k[2]!r}" for k in expected if k not in seen]
    coverage = Coverage(answered=len(expected) - len(unanswered), total=len(expected), unanswered_ids=unanswered)
    return {"categories": {c: len(v) for c, v in sorted(lines.items())}, "removed": removed, **coverage.as_dict()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", type=str, required=True)
    parser.add_argument("--mme-dir", type=str, default=".",
                        help="the MME folder (playground/data/eval/MME); other paths are relative to it")
    parser.add_argument("--data-path", type=str, default="MME_Benchmark_release_version")
    parser.add_argument("--answers-dir", type=str, default="answers")
    parser.add_argument("--results-root", type=str, default=os.path.join("eval_tool", "answers"))
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    base = args.mme_dir
    answers_file = os.path.join(base, args.answers_dir, f"{args.experiment}.jsonl")
    result_dir = os.path.join(base, args.results_root, args.experiment)
    result = convert_answers_to_mme(answers_file, os.path.join(base, args.data_path), result_dir)
    coverage = Coverage(result["answered"], result["total"], result["unanswered_ids"])
    print(f"{coverage.message()} (over the {len(result['categories'])} categories answered)")
    print(f"wrote {len(result['categories'])} category files to {result_dir}")
    if result["removed"]:
        print(f"removed {len(result['removed'])} category file(s) of an earlier conversion that these answers "
              f"do not cover: {', '.join(result['removed'])}")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
