import pytest

from llava.eval import (
    convert_answer_to_mme,
    convert_gqa_for_eval,
    convert_mmbench_for_submission,
    convert_mmvet_for_eval,
    eval_textvqa,
)
from llava.eval.io_utils import (
    Coverage,
    check_coverage,
    format_ids,
    index_by_id,
    load_answers,
    load_json,
    load_jsonl,
)

from .conftest import answer, write_json


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1, "text": "a"}\n\n{"question_id": 2, "text": "b"\n')
    with pytest.raises(ValueError, match=r"answers\.jsonl:3: not valid JSON"):
        load_jsonl(path)


def test_non_object_line_is_rejected(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:2: expected a JSON object"):
        load_jsonl(path)


def test_bad_json_file_names_line(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{\n  "data": [1,\n  ]\n}')
    with pytest.raises(ValueError, match=r"ann\.json:3:"):
        load_json(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_repeated_ids_are_named(tmp_path):
    records = [{"question_id": 1}, {"question_id": "1"}, {"question_id": 2}]
    with pytest.raises(ValueError, match=r"1 repeated question_id value\(s\): '1'"):
        index_by_id(records, tmp_path / "a.jsonl")


def test_answer_without_text(tmp_path, jsonl):
    path = jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "prompt": "p"}])
    with pytest.raises(ValueError, match="question_id 1 has no 'text'"):
        load_answers(path)


def test_required_keys_name_the_line(tmp_path, jsonl):
    path = jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "image": "a.jpg"}, {"image": "b.jpg", "text": "q"}])
    with pytest.raises(ValueError, match=r"q\.jsonl:2: no 'question_id' field; keys: \['image', 'text'\]"):
        load_jsonl(path, required=("question_id",))


@pytest.mark.parametrize("read", [
    load_answers,
    lambda path: convert_gqa_for_eval.convert_gqa(path, path.parent / "out.json"),
    lambda path: convert_mmvet_for_eval.convert_mmvet(path, path.parent / "out.json"),
    convert_mmbench_for_submission._first_round_answers,
    lambda path: eval_textvqa.score_textvqa(write_json(path.parent / "ann.json", {"data": []}), path),
    lambda path: convert_answer_to_mme.convert_answers_to_mme(path, path.parent, path.parent / "out"),
], ids=["load_answers", "gqa", "mmvet", "mmbench", "textvqa", "mme"])
@pytest.mark.parametrize("text, shown", [(None, "null"), (2, "2")])
def test_answer_text_that_is_not_a_string_names_the_line(tmp_path, jsonl, read, text, shown):
    path = jsonl(tmp_path / "a.jsonl", [answer(1, "yes", "q"), answer(2, text, "q")])
    with pytest.raises(ValueError, match=rf"a\.jsonl:2: answer for question_id 2: 'text' must be a string, "
                                         rf"got {shown}"):
        read(path)


def test_coverage_counts_unanswered_and_rejects_unknown_ids():
    cov = check_coverage({"1", "2"}, [1, 2, 3, 4], "a.jsonl", "q.jsonl")
    assert (cov.answered, cov.total, cov.unanswered, cov.unanswered_ids) == (2, 4, 2, [3, 4])
    assert cov.message() == "answered 2/4; 2 unanswered (e.g. 3, 4)"
    assert Coverage(3, 3).message() == "answered 3/3"
    with pytest.raises(ValueError, match=r"question ids not in q\.jsonl: '7', '9'"):
        check_coverage({"1", "7", "9"}, [1, 2], "a.jsonl", "q.jsonl")


def test_a_byte_order_mark_is_skipped(tmp_path):
    """Files saved by Windows editors start with a UTF-8 byte order mark; the first record stays readable."""
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": "b"}\n')
    assert [q["question_id"] for q in load_jsonl(jsonl)] == [1, 2]
    whole = tmp_path / "annotations.json"
    whole.write_bytes(b"\xef\xbb\xbf" + b'{"data": [1, 2]}')
    assert load_json(whole) == {"data": [1, 2]}


def test_format_ids_says_how_many_are_left_out():
    assert format_ids(range(10)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9"  # exactly the limit: nothing left out
    assert format_ids(range(12)) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ... (2 more)"
    assert format_ids(["a", "b", "c"], limit=2) == "'a', 'b', ... (1 more)"
    assert format_ids(["a b"], quote=False) == "a b"
