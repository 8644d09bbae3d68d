import json

import pytest

from llava.eval import merge_answers

from .conftest import answer


def test_merge_in_chunk_order(tmp_path, jsonl, capsys):
    jsonl(tmp_path / "3_0.jsonl", [answer(1, "a"), answer(2, "b")])
    jsonl(tmp_path / "3_1.jsonl", [])
    jsonl(tmp_path / "3_2.jsonl", [answer(3, "c")])
    result = merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "3"])
    merged = [json.loads(line) for line in (tmp_path / "merge.jsonl").read_text().splitlines()]
    assert [m["question_id"] for m in merged] == [1, 2, 3]
    assert result == {"answers": 3, "per_chunk": [2, 0, 1]}
    assert "merged 3 answers from 3 chunk(s) (2, 0, 1)" in capsys.readouterr().out


def test_merge_errors(tmp_path, jsonl):
    jsonl(tmp_path / "2_0.jsonl", [answer(1, "a")])
    with pytest.raises(FileNotFoundError, match="2_1.jsonl"):
        merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2"])
    jsonl(tmp_path / "2_1.jsonl", [answer(1, "again")])
    with pytest.raises(ValueError, match=r"1 answer\(s\) appear in more than one chunk \(were the chunks written "
                                         r"with different --num-chunks\?; if the question file asks a question more "
                                         r"than once, pass it as --question-file\): 1 prompt '' "
                                         r"\(.*2_0.jsonl and .*2_1.jsonl\)"):
        merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2"])
    # one id with two questions (TextVQA's image ids, MME), or a repeated question line within a chunk
    jsonl(tmp_path / "2_0.jsonl", [answer(1, "a", prompt="What?"), answer(1, "a", prompt="What?")])
    jsonl(tmp_path / "2_1.jsonl", [answer(1, "b", prompt="Where?")])
    assert merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2"])["answers"] == 3
    (tmp_path / "2_1.jsonl").write_text('{"question_id": 2, "text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"2_1\.jsonl:2: not valid JSON"):
        merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "2"])
    # a different naming scheme
    jsonl(tmp_path / "chunk0.jsonl", [answer(5, "x")])
    out = tmp_path / "m.jsonl"
    merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "1", "--pattern", "chunk{chunk_idx}.jsonl",
                        "--output-file", str(out)])
    assert json.loads(out.read_text())["question_id"] == 5


def test_repeated_question_across_a_chunk_boundary(tmp_path, jsonl):
    """A question file that asks one question twice: its two answers may land in two chunks."""
    questions = tmp_path / "questions.jsonl"
    jsonl(questions, [{"question_id": 7, "image": "a.jpg", "text": "What?"},
                      {"question_id": 7, "image": "a.jpg", "text": "What?"},
                      {"question_id": 8, "image": "b.jpg", "text": "Where?"}])
    jsonl(tmp_path / "2_0.jsonl", [answer(7, "x", prompt="What?")])
    jsonl(tmp_path / "2_1.jsonl", [answer(7, "x", prompt="What?"), answer(8, "y", prompt="Where?")])
    argv = ["--answers-dir", str(tmp_path), "--num-chunks", "2"]
    with pytest.raises(ValueError, match="pass it as --question-file"):
        merge_answers.main(argv)
    assert merge_answers.main([*argv, "--question-file", str(questions)]) == {"answers": 3, "per_chunk": [1, 2]}
    merged = [json.loads(line) for line in (tmp_path / "merge.jsonl").read_text().splitlines()]
    assert [(m["question_id"], m["text"]) for m in merged] == [(7, "x"), (7, "x"), (8, "y")]
    # asked twice, answered three times over the chunks: an overlap still
    jsonl(tmp_path / "2_0.jsonl", [answer(7, "x", prompt="What?"), answer(7, "x", prompt="What?")])
    with pytest.raises(ValueError, match=r"1 answer\(s\) appear in more than one chunk .*: 7 prompt 'What\?'"):
        merge_answers.main([*argv, "--question-file", str(questions)])
    # asked once: two chunks answering it overlap, as without the file
    jsonl(tmp_path / "2_0.jsonl", [answer(8, "y", prompt="Where?")])
    with pytest.raises(ValueError, match=r"more than one chunk .*: 8 prompt 'Where\?'"):
        merge_answers.main([*argv, "--question-file", str(questions)])
    # the wrong question file, or one without the runners' fields
    other = tmp_path / "other.jsonl"
    jsonl(other, [{"question_id": 1, "text": "Who?"}])
    with pytest.raises(ValueError, match=r"none of the 3 answers asks a question of .*other\.jsonl"):
        merge_answers.main([*argv, "--question-file", str(other)])
    jsonl(other, [{"question_id": 1, "question": "Who?"}])
    with pytest.raises(ValueError, match=r"other\.jsonl:1: a question has no 'text' field"):
        merge_answers.main([*argv, "--question-file", str(other)])


def test_zero_chunks_is_refused(tmp_path):
    """Not an empty merge.jsonl that scores as 'nothing answered'."""
    with pytest.raises(ValueError, match="num_chunks must be >= 1, got 0"):
        merge_answers.main(["--answers-dir", str(tmp_path), "--num-chunks", "0"])
    assert not (tmp_path / "merge.jsonl").exists()
