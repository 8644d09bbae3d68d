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
                                         r"with different --num-chunks\?\): 1 prompt '' \(.*2_0.jsonl and .*2_1.jsonl\)"):
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
