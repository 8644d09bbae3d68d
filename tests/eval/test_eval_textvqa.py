import pytest

from llava.eval import eval_textvqa
from llava.eval.eval_textvqa import question_from_prompt, score_textvqa

from .conftest import answer

OCR = "Reference OCR token: coca, cola, 2"
INSTR = "Answer the question using a single word or phrase."


def _annotations(tmp_path, json_file):
    data = [
        {"image_id": "img1", "question_id": 101, "question": "How many bottles?",
         "answers": ["2"] * 4 + ["3"] * 6},
        {"image_id": "img2", "question_id": 102, "question": "What brand is it?",
         "answers": ["coca cola"] * 2 + ["pepsi"] * 8},
        {"image_id": "img3", "question_id": 103, "question": "What color?", "answers": ["red"] * 10},
    ]
    return json_file(tmp_path / "TextVQA_0.5.1_val.json", {"data": data})


@pytest.mark.parametrize(
    "prompt, question",
    [
        (f"How many bottles?\n{OCR}\n{INSTR}", "how many bottles?"),
        (f"{OCR}\nHow many bottles?\n{INSTR}", "how many bottles?"),
        (f"What color?\n{INSTR}", "what color?"),
        ("OCR tokens: a b Question: What is it? Short answer:", "what is it?"),
    ],
)
def test_question_from_prompt(prompt, question):
    assert question_from_prompt(prompt) == question


def test_score_textvqa(tmp_path, json_file, jsonl, capsys):
    ann = _annotations(tmp_path, json_file)
    results = jsonl(tmp_path / "answers" / "model.jsonl", [
        answer("img1", "Two", f"How many bottles?\n{OCR}\n{INSTR}"),  # 4 of 10 -> 1.0
        answer(102, "Coca-Cola", "What brand is it?\n" + INSTR),  # matched by question id; 2 of 10 -> 0.6
    ])
    result = score_textvqa(str(ann), str(results))
    assert result["accuracy"] == pytest.approx(0.8)
    assert (result["samples"], result["answered"], result["total"], result["unanswered"]) == (2, 2, 3, 1)
    assert result["unanswered_ids"] == [103]

    eval_textvqa.main(["--annotation-file", str(ann), "--result-dir", str(tmp_path / "answers")])
    out = capsys.readouterr().out
    assert "model\nanswered 2/3; 1 unanswered (e.g. 103)\nSamples: 2\nAccuracy: 80.00%" in out


def test_unmatched_answer_is_named(tmp_path, json_file, jsonl):
    ann = _annotations(tmp_path, json_file)
    results = jsonl(tmp_path / "a.jsonl", [answer("img9", "x", "Where?\n" + INSTR)])
    with pytest.raises(ValueError, match=r"match no annotation.*'img9' \('where\?'\)"):
        score_textvqa(str(ann), str(results))


def test_annotation_without_answers_and_folder_without_answer_files(tmp_path, json_file, jsonl):
    ann = json_file(tmp_path / "ann.json", {"data": [
        {"image_id": "img3", "question_id": 103, "question": "What color?", "answers": ["red"] * 10},
        {"image_id": "img4", "question_id": 104, "question": "What brand?"}]})
    results = jsonl(tmp_path / "answers" / "a.jsonl", [answer("img3", "Red", "What color?\n" + INSTR)])
    with pytest.raises(ValueError, match=r"ann\.json: annotation 1 \(question_id 104\) has no 'answers'"):
        score_textvqa(str(ann), str(results))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("")
    with pytest.raises(ValueError, match=r"empty: no \*\.jsonl answer files to score"):
        eval_textvqa.main(["--annotation-file", str(ann), "--result-dir", str(tmp_path / "empty")])


def test_annotation_question_with_a_trailing_space_matches(tmp_path, json_file, jsonl):
    """The question file copies the annotation's question, trailing space included; the prompt's
    question line is read stripped, so the annotation's must be too."""
    ann = json_file(tmp_path / "ann.json", {"data": [
        {"image_id": "img3", "question_id": 103, "question": "What color? ", "answers": ["red"] * 10}]})
    results = jsonl(tmp_path / "a.jsonl", [answer("img3", "Red", f"What color? \n{OCR}\n{INSTR}")])
    assert score_textvqa(str(ann), str(results))["accuracy"] == 1.0


def test_an_answer_given_twice_is_an_error(tmp_path, json_file, jsonl):
    ann = _annotations(tmp_path, json_file)
    line = answer("img3", "red", "What color?\n" + INSTR)
    results = jsonl(tmp_path / "a.jsonl", [line, answer("img1", "3", "How many bottles?\n" + INSTR), line])
    with pytest.raises(ValueError, match=r"1 answer\(s\) repeat a question already answered .*merged twice\?\): "
                                         r"'img3' \('what color\?', line 3\)"):
        score_textvqa(str(ann), str(results))


def test_a_pair_shared_by_two_annotations_takes_two_answers(tmp_path, json_file, jsonl):
    """Two questions can ask the same thing about one image: each takes an answer, both count as
    answered, and (as upstream) both are scored against the last of them."""
    ann = json_file(tmp_path / "ann.json", {"data": [
        {"image_id": "img1", "question_id": 10, "question": "What is written?", "answers": ["stop"] * 10},
        {"image_id": "img1", "question_id": 11, "question": "What is written?", "answers": ["go"] * 10},
    ]})
    prompt = "What is written?\n" + INSTR
    two = jsonl(tmp_path / "two.jsonl", [answer("img1", "stop", prompt), answer("img1", "go", prompt)])
    result = score_textvqa(str(ann), str(two))
    assert (result["answered"], result["total"], result["unanswered_ids"]) == (2, 2, [])
    assert result["accuracy"] == pytest.approx(0.5)
    one = jsonl(tmp_path / "one.jsonl", [answer("img1", "go", prompt)])
    result = score_textvqa(str(ann), str(one))
    assert result["unanswered_ids"] == [11] and result["accuracy"] == 1.0  # the last annotation's answers
    three = jsonl(tmp_path / "three.jsonl", [answer("img1", "go", prompt)] * 3)
    with pytest.raises(ValueError, match="1 answer\\(s\\) repeat a question"):
        score_textvqa(str(ann), str(three))
