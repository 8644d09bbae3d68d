"""eval_qbench: which option a response picks, and the accuracy per type and concern."""

from __future__ import annotations

import json

import pytest

from llava.eval import eval_qbench
from tests.eval.conftest import write_jsonl

CANDIDATES = ["Yes", "No"]


@pytest.mark.parametrize("response, picked", [
    ("B", 1), ("B.", 1), ("(A) Yes", 0), ("A. Yes", 0), ("b", None), ("C", None),  # C: no third option
    ("No", 1), ("no, it is sharp.", 1), ("Yes and no.", None), ("Nothing", None), ("", None),
    ("Because of the noise, yes.", 0),
])
def test_picked_option(response, picked):
    assert eval_qbench.picked_option(response, CANDIDATES) == picked


@pytest.mark.parametrize("response, candidates, picked", [
    # The article "A" starting a sentence is not option A; the candidate the sentence names is the pick.
    ("A clear image with sharp edges.", ["Blurry", "Clear", "Noisy"], 1),
    ("A noisy picture", ["Blurry", "Clear", "Noisy"], 2),
    ("A Blurry image", ["Blurry", "Clear", "Noisy"], 0),  # the letter followed by its own candidate
    ("B Clear", ["Blurry", "Clear", "Noisy"], 1),
    ("A. Blurry", ["Blurry", "Clear", "Noisy"], 0),
    ("D", ["Blurry", "Clear", "Noisy"], None),  # no fourth option
    # A candidate that is part of a longer one is not named by the longer one's text.
    ("Very high", ["High", "Very high", "Low"], 1),
    ("Slightly blurry.", ["Blurry", "Slightly blurry", "Clear"], 1),
    ("High", ["High", "Very high", "Low"], 0),
    ("Very high, not low", ["High", "Very high", "Low"], None),  # two candidates named
    ("It is blurry, or slightly blurry", ["Blurry", "Slightly blurry", "Clear"], None),
])
def test_picked_option_sentences_and_nested_candidates(response, candidates, picked):
    assert eval_qbench.picked_option(response, candidates) == picked


def answer(qid, response, correct, candidates=("low", "medium", "high"), qtype=0, concern=0):
    return {"question_id": qid, "candidates": list(candidates), "correct_ans": correct, "response": response,
            "type": qtype, "concern": concern}


def questions_for(tmp_path, n, name="questions.json"):
    """A question file of n questions, position i asking about image i.png."""
    path = tmp_path / name
    path.write_text(json.dumps([{"img_path": f"{i}.png", "question": f"Q{i}?", "candidates": ["low", "medium", "high"]}
                                for i in range(n)]))
    return str(path)


def run(answers_path, questions_path, *rest):
    return eval_qbench.main(["--questions-file", questions_path, "--answers-file", str(answers_path), *rest])


def test_accuracy_per_type_and_concern(tmp_path, capsys):
    path = write_jsonl(tmp_path / "answers.jsonl", [
        answer(0, "C. high", "high", qtype=0, concern=0),  # right by letter
        answer(1, "The quality is medium.", "medium", qtype=0, concern=1),  # right by text
        answer(2, "A", "high", qtype=1, concern=1),  # wrong
        answer(3, "It is somewhere between low and high.", "low", qtype=2, concern=2),  # two named: no pick
    ])
    result = run(path, questions_for(tmp_path, 4), "--summary", "qbench ckpt")
    assert result["correct"] == 2 and result["total"] == 4 and result["unpicked_ids"] == [3]
    assert result["by_type"] == {"0": (1.0, 2), "1": (0.0, 1), "2": (0.0, 1)}
    assert result["by_concern"] == {"0": (1.0, 1), "1": (0.5, 2), "2": (0.0, 1)}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "type 0: 100.00% (2)" and "concern 1: 50.00% (2)" in lines
    assert "1 response(s) pick no single option and count as wrong (question_id 3)" in lines
    assert lines[-1] == "qbench ckpt: accuracy = 50.00% (2/4; answered 4/4)"


def test_answers_that_cannot_be_scored_are_named(tmp_path):
    questions = questions_for(tmp_path, 6)
    test_split = write_jsonl(tmp_path / "test.jsonl", [{"question_id": 0, "candidates": ["a", "b"], "response": "a"}])
    with pytest.raises(ValueError, match=r"1 answer\(s\) have no 'correct_ans' \(question_id 0\): the test split"):
        run(test_split, questions)
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [answer(5, "A", "extreme")])
    with pytest.raises(ValueError, match=r"question_id 5: correct_ans 'extreme' is not one of its candidates"):
        run(wrong, questions)
    twice = write_jsonl(tmp_path / "twice.jsonl", [answer(1, "A", "low"), answer(2, "A", "low"), answer(1, "A", "low")])
    with pytest.raises(ValueError, match=r"1 question_id\(s\) answered more than once \('1'\); was a chunk merged twice"):
        run(twice, questions)
    null = write_jsonl(tmp_path / "null.jsonl", [answer(1, None, "low")])
    with pytest.raises(ValueError, match=r"null\.jsonl: the answer to question_id 1: 'response' must be a "
                                         r"string, got null"):
        run(null, questions)
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="no answers"):
        run(empty, questions)


def test_answers_are_checked_against_the_question_file(tmp_path):
    """A partial answer file is not scored, nor one made from another question file."""
    questions = questions_for(tmp_path, 5)
    partial = write_jsonl(tmp_path / "partial.jsonl", [answer(0, "A", "low"), answer(3, "B", "medium")])
    with pytest.raises(ValueError, match=r"partial\.jsonl: 3 of the 5 questions in .*questions\.json have no answer "
                                         r"\(question_id 1 \(1\.png\), 2 \(2\.png\), 4 \(4\.png\)\); run the answers again"):
        run(partial, questions)
    beyond = write_jsonl(tmp_path / "beyond.jsonl", [answer(i, "A", "low") for i in range(6)])
    with pytest.raises(ValueError, match=r"beyond\.jsonl: 1 answer\(s\) have question ids not in .*questions\.json "
                                         r"\(question_id is the question's position, 0 to 4\): '5'"):
        run(beyond, questions)
    other = write_jsonl(tmp_path / "other.jsonl", [{**answer(i, "A", "low"), "img_path": f"{i}.png",
                                                   "question": "Another?" if i == 2 else f"Q{i}?"} for i in range(5)])
    with pytest.raises(ValueError, match=r"the answer to question_id 2 has question 'Another\?', but question 2 of "
                                         r".*questions\.json has 'Q2\?': were the answers made from another"):
        run(other, questions)
    whole = write_jsonl(tmp_path / "whole.jsonl", [{**answer(i, "A", "low"), "img_path": f"{i}.png",
                                                   "question": f"Q{i}?"} for i in range(5)])
    assert run(whole, questions)["accuracy"] == 1.0
    with pytest.raises(SystemExit):  # the question file is required
        eval_qbench.main(["--answers-file", str(whole)])
    empty = questions_for(tmp_path, 0, name="empty.json")
    with pytest.raises(ValueError, match=r"empty\.json: no questions in the file"):
        run(whole, empty)
