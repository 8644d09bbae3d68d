"""Convert a LLaVA MMBench answer file to the xlsx the MMBench server takes.

    python -m llava.eval.convert_mmbench_for_submission \\
        --annotation-file ./playground/data/eval/mmbench/mmbench_dev_20230712.tsv \\
        --result-dir ./playground/data/eval/mmbench/answers/mmbench_dev_20230712 \\
        --upload-dir ./playground/data/eval/mmbench/answers_upload/mmbench_dev_20230712 \\
        --experiment llava-v1.5-13b

reads ``<result-dir>/<experiment>.jsonl`` and writes ``<upload-dir>/<experiment>.xlsx``: the
annotation table without its ``hint, category, source, image, comment, l2-category`` columns
and with a ``prediction`` column after the option columns (upstream's layout). The answer's
``question_id`` is the tsv's ``index``. Needs pandas and openpyxl (``pip install -e .[eval]``).
With ``--all-rounds`` answers, the model runner writes one answer per option rotation with a
``round_id``; the submission keeps round 0, whose letters refer to the tsv's own option order
(upstream keeps whichever round comes last).
"""

from __future__ import annotations

import argparse
import os

from llava.eval.io_utils import check_coverage, id_key, load_answer_lines

DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
OPTION_COLUMNS = ("A", "B", "C", "D", "E", "F")


def _first_round_answers(result_file: str) -> tuple[dict[str, dict], int]:
    """Answers keyed by question id, lowest ``round_id`` kept; also the number dropped."""
    kept: dict[str, dict] = {}
    dropped = 0
    for _, answer in load_answer_lines(result_file):
        k = id_key(answer["question_id"])
        if k in kept:
            dropped += 1
            if answer.get("round_id", 0) >= kept[k].get("round_id", 0):
                continue
        kept[k] = answer
    return kept, dropped


def convert_mmbench(annotation_file: str, result_file: str, upload_file: str) -> dict:
    """Write the MMBench submission xlsx.

    Returns:
        ``{"rows": int, "extra_rounds": int}`` plus coverage fields (over the tsv's indexes).

    Raises:
        ValueError: the tsv has no ``index`` column, or answers have indexes not in the tsv.
    """
    import pandas as pd  # only this converter needs pandas

    table = pd.read_table(annotation_file)
    if "index" not in table.columns:
        raise ValueError(f"{annotation_file}: no 'index' column; columns: {list(table.columns)}")
    answers, extra_rounds = _first_round_answers(result_file)
    indexes = table["index"].tolist()
    coverage = check_coverage(answers, indexes, result_file, annotation_file)

    out = table.drop(columns=[c for c in DROPPED_COLUMNS if c in table.columns])
    options = [c for c in OPTION_COLUMNS if c in out.columns]
    position = out.columns.get_loc(options[-1]) + 1 if options else len(out.columns)
    predictions = [answers[id_key(i)]["text"] if id_key(i) in answers else None for i in indexes]
    out.insert(position, "prediction", predictions)

    os.makedirs(os.path.dirname(os.path.abspath(upload_file)), exist_ok=True)
    out.to_excel(upload_file, index=False, engine="openpyxl")
    return {"rows": len(out), "extra_rounds": extra_rounds, **coverage.as_dict()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", type=str, required=True)
    parser.add_argument("--result-dir", type=str, required=True)
    parser.add_argument("--upload-dir", type=str, required=True)
    parser.add_argument("--experiment", type=str, required=True)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    result_file = os.path.join(args.result_dir, f"{args.experiment}.jsonl")
    upload_file = os.path.join(args.upload_dir, f"{args.experiment}.xlsx")
    result = convert_mmbench(args.annotation_file, result_file, upload_file)
    message = f"answered {result['answered']}/{result['total']}"
    if result["unanswered"]:
        message += f"; {result['unanswered']} unanswered (empty prediction)"
    if result["extra_rounds"]:
        message += f"; {result['extra_rounds']} extra --all-rounds answer(s) not used"
    print(message)
    print(f"wrote {upload_file}")
    return result


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
