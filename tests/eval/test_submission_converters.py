import json

import pytest

from llava.eval import (
    convert_mmbench_for_submission,
    convert_mmvet_for_eval,
    convert_seed_for_submission,
    convert_vizwiz_for_submission,
    convert_vqav2_for_submission,
)

from .conftest import answer


def test_vqav2_submission(tmp_path, jsonl, capsys):
    split, ckpt = "llava_vqav2_mscoco_test-dev2015", "llava-v1.5-13b"
    jsonl(tmp_path / "llava_vqav2_mscoco_test2015.jsonl",
          [{"question_id": qid, "image": "x.jpg", "text": "q"} for qid in (11, 12, 13)])
    jsonl(tmp_path / "answers" / split / ckpt / "merge.jsonl", [answer(11, "Two."), answer(12, "Yes")])
    result = convert_vqav2_for_submission.main(["--dir", str(tmp_path), "--split", split, "--ckpt", ckpt])
    written = json.loads((tmp_path / "answers_upload" / split / f"{ckpt}.json").read_text())
    assert written == [{"question_id": 11, "answer": "2"}, {"question_id": 12, "answer": "yes"},
                       {"question_id": 13, "answer": ""}]
    assert (result["answered"], result["total"], result["unanswered_ids"]) == (2, 3, [13])
    assert "1 question(s) without an answer" in capsys.readouterr().out


def test_vizwiz_submission(tmp_path, jsonl):
    questions = jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": "q"},
        {"question_id": 1, "image": "VizWiz_test_00000001.jpg", "text": "q"},
    ])
    results = jsonl(tmp_path / "answers" / "m.jsonl", [answer(1, "Unanswerable"), answer(0, "The Red one")])
    upload = tmp_path / "answers_upload" / "m.json"
    convert_vizwiz_for_submission.main(["--annotation-file", str(questions), "--result-file", str(results),
                                        "--result-upload-file", str(upload)])
    assert json.loads(upload.read_text()) == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "red 1"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"},
    ]
    partial = jsonl(tmp_path / "answers" / "partial.jsonl", [answer(0, "red")])
    with pytest.raises(ValueError, match=r"answered 1/2.*Missing question ids: 1"):
        convert_vizwiz_for_submission.convert_vizwiz(str(questions), str(partial), str(upload))


def test_question_line_without_its_fields_names_the_line(tmp_path, jsonl):
    questions = jsonl(tmp_path / "llava_test.jsonl", [{"question_id": 0, "image": "a.jpg", "text": "q"},
                                                      {"image": "b.jpg", "text": "q"}])
    results = jsonl(tmp_path / "answers.jsonl", [answer(0, "red")])
    with pytest.raises(ValueError, match=r"llava_test\.jsonl:2: no 'question_id' field; keys: \['image', 'text'\]"):
        convert_vqav2_for_submission.convert_vqav2(str(results), str(questions), str(tmp_path / "up.json"))
    with pytest.raises(ValueError, match=r"llava_test\.jsonl:2: no 'question_id' field"):
        convert_vizwiz_for_submission.convert_vizwiz(str(questions), str(results), str(tmp_path / "up.json"))
    jsonl(questions, [{"question_id": 0, "text": "q"}])
    with pytest.raises(ValueError, match=r"llava_test\.jsonl:1: no 'image' field"):
        convert_vizwiz_for_submission.convert_vizwiz(str(questions), str(results), str(tmp_path / "up.json"))


def test_mmvet_keys(tmp_path, jsonl):
    src = jsonl(tmp_path / "a.jsonl", [answer(0, "A cat."), answer(1, "42")])
    dst = tmp_path / "results" / "m.json"
    convert_mmvet_for_eval.main(["--src", str(src), "--dst", str(dst)])
    assert json.loads(dst.read_text()) == {"v1_0": "A cat.", "v1_1": "42"}


def test_seed_scores_and_upload(tmp_path, jsonl, json_file, capsys):
    ann = json_file(tmp_path / "SEED-Bench.json", {
        "question_type": {"Scene Understanding": 1, "Instance Identity": 2},
        "questions": [
            {"question_id": "1", "data_type": "image", "question_type_id": 1, "answer": "A"},
            {"question_id": "2", "data_type": "image", "question_type_id": 1, "answer": "B"},
            {"question_id": "3", "data_type": "image", "question_type_id": 2, "answer": "C"},
            {"question_id": "4", "data_type": "video", "question_type_id": 2, "answer": "D"},
        ],
    })
    # Ids as ints in the answers, strings in the annotation: matched all the same.
    results = jsonl(tmp_path / "merge.jsonl", [answer(1, "A"), answer(2, "C"), answer(3, " C\n")])
    upload = tmp_path / "answers_upload" / "m.jsonl"
    result = convert_seed_for_submission.main(["--annotation-file", str(ann), "--result-file", str(results),
                                               "--result-upload-file", str(upload)])
    assert result["types"] == pytest.approx({"Scene Understanding": 50.0, "Instance Identity": 50.0})
    assert result["accuracy"] == pytest.approx(50.0)
    assert result["image_accuracy"] == pytest.approx(200 / 3) and result["video_accuracy"] == 0.0
    assert (result["answered"], result["unanswered_ids"]) == (3, ["4"])
    lines = [json.loads(line) for line in upload.read_text().splitlines()]
    assert lines == [{"question_id": "1", "prediction": "A"}, {"question_id": "2", "prediction": "C"},
                     {"question_id": "3", "prediction": " C\n"}, {"question_id": "4", "prediction": ""}]
    out = capsys.readouterr().out
    assert "Scene Understanding: 50.00%" in out and "Total accuracy: 50.00%" in out
    assert "image accuracy: 66.67%" in out and "answered 3/4; 1 unanswered" in out


def test_mmbench_xlsx_round_trip(tmp_path, jsonl):
    pd = pytest.importorskip("pandas", reason="MMBench conversion needs pandas (the eval extra)")
    pytest.importorskip("openpyxl", reason="MMBench conversion needs openpyxl (the eval extra)")
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
               "source", "l2-category", "comment", "split"]
    rows = [[i, f"question {i}", "hint", "a", "b", "c", "d", "A", "cat", "BASE64", "src", "l2", "-", "dev"]
            for i in (0, 1, 2)]
    tsv = tmp_path / "mmbench_dev_20230712.tsv"
    pd.DataFrame(rows, columns=columns).to_csv(tsv, sep="\t", index=False)
    jsonl(tmp_path / "answers" / "exp.jsonl", [
        answer(0, "A", round_id=0), answer(1, "C"), answer(0, "B", round_id=1),  # a rotated round
    ])
    result = convert_mmbench_for_submission.main([
        "--annotation-file", str(tsv), "--result-dir", str(tmp_path / "answers"),
        "--upload-dir", str(tmp_path / "upload"), "--experiment", "exp",
    ])
    table = pd.read_excel(tmp_path / "upload" / "exp.xlsx", engine="openpyxl")
    assert list(table.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert table["prediction"].tolist()[:2] == ["A", "C"] and pd.isna(table["prediction"][2])
    assert table["index"].tolist() == [0, 1, 2]
    assert (result["answered"], result["total"], result["unanswered"], result["extra_rounds"]) == (2, 3, 1, 1)
