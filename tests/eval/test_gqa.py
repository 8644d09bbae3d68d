import json

import pytest

from llava.eval import convert_gqa_for_eval, eval_gqa

from .conftest import answer


def test_convert_and_score_gqa(tmp_path, jsonl, json_file, capsys, monkeypatch):
    src = jsonl(tmp_path / "merge.jsonl", [
        answer("q1", "Yes."), answer("q2", "Right"), answer(20968078, "The Dog"),
    ])
    dst = tmp_path / "data" / "testdev_balanced_predictions.json"
    convert_gqa_for_eval.main(["--src", str(src), "--dst", str(dst)])
    assert json.loads(dst.read_text()) == [
        {"questionId": "q1", "prediction": "yes"},
        {"questionId": "q2", "prediction": "right"},
        {"questionId": 20968078, "prediction": "the dog"},
    ]
    json_file(tmp_path / "data" / "testdev_balanced_questions.json", {
        "q1": {"answer": "yes", "types": {"structural": "verify", "semantic": "attr"}},
        "q2": {"answer": "left", "types": {"structural": "choose", "semantic": "rel"}},
        "20968078": {"answer": "the dog", "types": {"structural": "query", "semantic": "obj"}},
        "q4": {"answer": "red", "types": {"structural": "query", "semantic": "attr"}},
    })
    monkeypatch.chdir(tmp_path / "data")
    result = eval_gqa.main(["--tier", "testdev_balanced"])
    assert result["accuracy"] == pytest.approx(50.0) and result["correct"] == 2
    assert (result["answered"], result["total"], result["unanswered_ids"]) == (3, 4, ["q4"])
    assert result["structural"] == pytest.approx({"choose": 0.0, "query": 50.0, "verify": 100.0})
    assert result["semantic"] == pytest.approx({"attr": 50.0, "obj": 100.0, "rel": 0.0})
    assert result["answer_type"] == pytest.approx({"binary": 50.0, "open": 50.0})
    assert "Accuracy: 50.00%" in capsys.readouterr().out


def test_gqa_accuracy_is_over_the_balanced_questions(tmp_path, json_file, capsys):
    """As GQA's official eval.py: questions not marked isBalanced (testdev_all) are left out of the
    accuracy, though they must still be answered."""
    questions = json_file(tmp_path / "testdev_all_questions.json", {
        "q1": {"answer": "yes", "isBalanced": True, "types": {"structural": "verify", "semantic": "attr"}},
        "q2": {"answer": "no", "isBalanced": True, "types": {"structural": "verify", "semantic": "attr"}},
        "q3": {"answer": "red", "isBalanced": False, "types": {"structural": "query", "semantic": "attr"}},
        "q4": {"answer": "cat", "isBalanced": False, "types": {"structural": "query", "semantic": "obj"}},
    })
    predictions = json_file(tmp_path / "testdev_all_predictions.json", [
        {"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "yes"},
        {"questionId": "q3", "prediction": "blue"}])
    result = eval_gqa.main(["--questions", str(questions), "--predictions", str(predictions)])
    assert (result["accuracy"], result["correct"], result["balanced"]) == (50.0, 1, 2)
    assert result["structural"] == {"verify": 50.0} and result["answer_type"] == {"binary": 50.0}
    assert (result["answered"], result["total"], result["unanswered_ids"]) == (3, 4, ["q4"])
    out = capsys.readouterr().out
    assert "2 of the 4 questions are balanced; accuracy is over those\nAccuracy: 50.00%" in out


def test_gqa_convert_rejects_bad_line(tmp_path):
    src = tmp_path / "merge.jsonl"
    src.write_text('{"question_id": "q1", "text": "yes"}\n{"question_id": "q2", "text": \n')
    with pytest.raises(ValueError, match=r"merge\.jsonl:2"):
        convert_gqa_for_eval.convert_gqa(str(src), str(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()


def test_gqa_predictions_are_normalised_and_repeats_refused(tmp_path, json_file):
    questions = json_file(tmp_path / "questions.json", {
        "q1": {"answer": "yes", "types": {"structural": "verify", "semantic": "attr"}},
        "q2": {"answer": "left", "types": {"structural": "choose", "semantic": "rel"}}})
    predictions = json_file(tmp_path / "predictions.json", [
        {"questionId": "q1", "prediction": " Yes. "}, {"questionId": "q2", "prediction": "Left.\n"}])
    assert eval_gqa.score_gqa(str(questions), str(predictions))["accuracy"] == 100.0
    repeated = json_file(tmp_path / "repeated.json", [
        {"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "left"},
        {"questionId": "q1", "prediction": "no"}])
    with pytest.raises(ValueError, match=r"repeated\.json: repeated questionId\(s\): \['q1'\]"):
        eval_gqa.score_gqa(str(questions), str(repeated))
