import json

import pytest

from llava.eval import eval_science_qa
from llava.eval.eval_science_qa import parse_letter, problem_categories

from .conftest import answer


@pytest.mark.parametrize(
    "text, letter",
    [
        ("A", "A"),
        (" B \n", "B"),
        ("C. Paris", "C"),
        ("The answer is D.", "D"),
        ("Because of gravity. The answer is B", "B"),
        ("The answer is Bob.", "FAILED"),
        ("The answer is A. Or: The answer is B.", "FAILED"),  # ambiguous
        ("I think B", "FAILED"),
        ("A.", "FAILED"),  # upstream does not accept this form either
        ("", "FAILED"),
    ],
)
def test_parse_letter(text, letter):
    assert parse_letter(text) == letter


def _problem(answer_idx, n_choices, subject, grade, image=None, hint=""):
    return {"question": "q", "choices": [f"c{i}" for i in range(n_choices)], "answer": answer_idx,
            "hint": hint, "image": image, "subject": subject, "grade": grade, "split": "test"}


def test_problem_categories():
    assert problem_categories(_problem(0, 2, "natural science", "grade3", image="i.png")) == ["NAT", "IMG", "G1-6"]
    assert problem_categories(_problem(0, 2, "social science", "grade12", hint="ctx")) == ["SOC", "TXT", "G7-12"]
    assert problem_categories(_problem(0, 2, "language science", "grade6")) == ["LAN", "NO", "G1-6"]


def test_score_science_qa(tmp_path, jsonl, json_file, capsys):
    problems = {
        "p1": _problem(1, 3, "natural science", "grade3", image="image.png"),
        "p2": _problem(0, 2, "social science", "grade8", hint="Some context"),
        "p3": _problem(2, 4, "language science", "grade10", image="image.png"),
        "p4": _problem(1, 2, "natural science", "grade5"),
        "p5": _problem(0, 2, "natural science", "grade7", image="image.png"),
        "v1": _problem(0, 2, "natural science", "grade7"),
    }
    json_file(tmp_path / "problems.json", problems)
    json_file(tmp_path / "pid_splits.json", {"test": ["p1", "p2", "p3", "p4", "p5"], "val": ["v1"]})
    results = jsonl(tmp_path / "answers.jsonl", [
        answer("p1", "B", "<image>\nQuestion"),  # right
        answer("p2", "The answer is A.", "Question"),  # right
        answer("p3", "D. something", "<image>\nQuestion"),  # wrong letter
        answer("p4", "E", "Question"),  # E is not among 2 choices -> -1
    ])  # p5 unanswered -> wrong
    out_file, out_result = tmp_path / "out" / "output.json", tmp_path / "out" / "result.json"
    result = eval_science_qa.main([
        "--base-dir", str(tmp_path), "--result-file", str(results),
        "--output-file", str(out_file), "--output-result", str(out_result), "--split", "test",
    ])
    assert (result["correct"], result["count"]) == (2, 5)
    assert result["accuracy"] == pytest.approx(40.0)
    assert result["img_accuracy"] == pytest.approx(100 / 3)
    cats = {k: v["accuracy"] for k, v in result["categories"].items()}
    assert cats == pytest.approx({"NAT": 100 / 3, "SOC": 100.0, "LAN": 0.0, "TXT": 100.0, "IMG": 100 / 3,
                                  "NO": 0.0, "G1-6": 50.0, "G7-12": 100 / 3})
    assert (result["answered"], result["unanswered"], result["unanswered_ids"]) == (4, 1, ["p5"])

    out = capsys.readouterr().out
    assert "Total: 5, Correct: 2, Accuracy: 40.00%, IMG-Accuracy: 33.33%" in out
    assert "answered 4/5; 1 unanswered" in out
    sqa = json.loads(out_result.read_text())
    assert sqa["acc"] == pytest.approx(40.0) and (sqa["correct"], sqa["count"]) == (2, 5)
    assert sqa["results"] == {"p1": 1, "p2": 0, "p3": 3, "p4": -1, "p5": -1}
    analysis = json.loads(out_file.read_text())
    assert [a["question_id"] for a in analysis["correct"]] == ["p1", "p2"]
    assert {a["question_id"]: a["parsed_ans"] for a in analysis["incorrect"]} == {"p3": "D", "p4": "E", "p5": "FAILED"}


def test_answers_outside_split_are_rejected(tmp_path, jsonl, json_file):
    json_file(tmp_path / "problems.json", {"p1": _problem(0, 2, "natural science", "grade1"),
                                           "v1": _problem(0, 2, "natural science", "grade1")})
    json_file(tmp_path / "pid_splits.json", {"test": ["p1"], "val": ["v1"]})
    results = jsonl(tmp_path / "a.jsonl", [answer("p1", "A"), answer("v1", "A")])
    with pytest.raises(ValueError, match="not in split 'test'.*'v1'"):
        eval_science_qa.score_science_qa(str(tmp_path), str(results))
    with pytest.raises(ValueError, match="Unknown split 'minival'"):
        eval_science_qa.score_science_qa(str(tmp_path), str(results), split="minival")


def test_unread_answers_are_counted_and_too_few_option_letters_refused(tmp_path, jsonl, json_file, capsys):
    json_file(tmp_path / "problems.json", {f"p{i}": _problem(i % 5, 5, "natural science", "grade1")
                                           for i in range(4)})
    json_file(tmp_path / "pid_splits.json", {"test": [f"p{i}" for i in range(4)]})
    results = jsonl(tmp_path / "a.jsonl", [answer("p0", "A"), answer("p1", "(B)"), answer("p2", "Answer: C")])
    args = ["--base-dir", str(tmp_path), "--result-file", str(results)]
    result = eval_science_qa.main(args)
    assert "2 answer(s) not read as one of their problem's option letters (counted as wrong, as upstream): " \
           "question_id 'p1', 'p2'" in capsys.readouterr().out
    assert (result["correct"], result["unread_ids"], result["unanswered_ids"]) == (1, ["p1", "p2"], ["p3"])
    for letters in ("ABC", ""):
        with pytest.raises(ValueError, match=rf"4 problem\(s\) of split 'test' have more choices than the "
                                             rf"{len(letters)} option letters '{letters}' \(up to 5; pid 'p0', "
                                             r"'p1', 'p2', 'p3'\): give --options at least 5 letters"):
            eval_science_qa.main(args + ["--options", letters])
