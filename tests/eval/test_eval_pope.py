import pytest

from llava.eval import eval_pope
from llava.eval.eval_pope import parse_yes_no, pope_metrics, score_pope
from llava.eval.io_utils import load_jsonl

from .conftest import answer

INSTR = "\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize(
    "text, expected",
    [
        ("No, there is not.", "no"),
        ("Yes, there is a dog.", "yes"),
        ("There is no cat.", "no"),
        ("no", "no"),
        ("No", "no"),
        ("Yes", "yes"),
        ("I do not see one.", "no"),
        ("Yes, but no.", "no"),  # first sentence contains "no"
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("NO", "yes"),  # upstream rule is case-sensitive: kept for parity
        ("Not really", "yes"),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_pope_metrics_by_hand():
    m = pope_metrics(["yes", "no", "no", "yes"], ["yes", "no", "yes", "no"])
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 1, 1, 1)
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == m["yes_ratio"] == 0.5
    m = pope_metrics(["yes", "yes", "yes", "no"], ["yes", "yes", "no", "no"])
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0
    assert m["f1"] == pytest.approx(0.8) and m["yes_ratio"] == 0.75 and m["accuracy"] == 0.75
    # No positive predictions: upstream divides by zero; here the ratios are 0.
    assert pope_metrics(["no"], ["yes"])["precision"] == 0.0


def _pope_files(tmp_path, jsonl, question_texts=None):
    rows = {
        "adversarial": [("a.jpg", "Is there a dog in the image?", "yes"),
                        ("a.jpg", "Is there a cat in the image?", "no"),
                        ("b.jpg", "Is there a cat in the image?", "yes"),
                        ("b.jpg", "Is there a car in the image?", "no")],
        "random": [("c.jpg", "Is there a bus in the image?", "yes"),
                   ("d.jpg", "Is there a bus in the image?", "yes"),
                   ("d.jpg", "Is there a tree in the image?", "no")],
    }
    questions, qid = [], 0
    for category, items in rows.items():
        jsonl(tmp_path / "coco" / f"coco_pope_{category}.json",
              [{"question_id": i + 1, "image": img, "text": t, "label": lab} for i, (img, t, lab) in enumerate(items)])
        for img, t, _ in items:
            qid += 1
            text = question_texts(t) if question_texts else t + INSTR
            questions.append({"question_id": qid, "image": img, "text": text, "category": category})
    qfile = jsonl(tmp_path / "llava_pope_test.jsonl", questions)
    return tmp_path / "coco", qfile


def test_score_pope(tmp_path, jsonl, capsys):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    texts = ["Yes, there is a dog.", "No, there is not.", "There is no cat.", "Yes",  # adversarial
             "Yes", "yes."]  # random; question 7 unanswered
    results = jsonl(tmp_path / "answers.jsonl", [answer(i + 1, t) for i, t in enumerate(texts)])
    result = score_pope(str(ann_dir), str(qfile), str(results))
    adv, rnd = result["categories"]["adversarial"], result["categories"]["random"]
    assert (adv["TP"], adv["FP"], adv["TN"], adv["FN"]) == (1, 1, 1, 1)
    assert adv["accuracy"] == adv["f1"] == adv["yes_ratio"] == 0.5 and adv["unanswered"] == 0
    assert (rnd["TP"], rnd["FP"], rnd["TN"], rnd["FN"]) == (2, 0, 0, 0)
    assert rnd["accuracy"] == rnd["f1"] == 1.0
    assert (rnd["answered"], rnd["total"], rnd["unanswered_ids"]) == (2, 3, [7])
    assert (result["answered"], result["total"], result["unanswered"]) == (6, 7, 1)

    eval_pope.main(["--annotation-dir", str(ann_dir), "--question-file", str(qfile), "--result-file", str(results)])
    out = capsys.readouterr().out
    assert "Category: adversarial, # samples: 4" in out
    assert "0.500, 0.500, 0.500, 0.500, 0.500" in out
    assert "answered 2/3; 1 unanswered (e.g. 7)" in out


def test_labels_by_position_when_texts_differ(tmp_path, jsonl, capsys):
    ann_dir, qfile = _pope_files(tmp_path, jsonl, question_texts=lambda t: "Q: " + t)
    results = jsonl(tmp_path / "answers.jsonl", [answer(i + 1, "yes") for i in range(7)])
    result = score_pope(str(ann_dir), str(qfile), str(results))
    assert result["categories"]["random"]["TP"] == 2 and result["categories"]["random"]["FP"] == 1
    assert "labels matched by position" in capsys.readouterr().out


def test_unknown_answer_ids_are_named(tmp_path, jsonl):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    results = jsonl(tmp_path / "answers.jsonl", [answer(1, "yes"), answer(99, "no")])
    with pytest.raises(ValueError, match="not in .*llava_pope_test.jsonl: '99'"):
        score_pope(str(ann_dir), str(qfile), str(results))


def test_category_without_label_file_is_an_error(tmp_path, jsonl):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    results = jsonl(tmp_path / "answers.jsonl", [answer(i + 1, "yes") for i in range(7)])
    (ann_dir / "coco_pope_random.json").unlink()
    with pytest.raises(ValueError, match=r"no label file for question category 'random' \(3 questions\): "
                                         r"expected .*coco[/\\]coco_pope_random\.json"):
        score_pope(str(ann_dir), str(qfile), str(results))
    (ann_dir / "coco_pope_adversarial.json").unlink()
    with pytest.raises(ValueError, match=r"coco: no coco_pope_<category>\.json label files"):
        score_pope(str(ann_dir), str(qfile), str(results))


def test_question_without_category_is_an_error(tmp_path, jsonl):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    questions = [{k: v for k, v in q.items() if not (k == "category" and q["question_id"] == 5)}
                 for q in load_jsonl(qfile)]
    jsonl(qfile, questions)
    results = jsonl(tmp_path / "answers.jsonl", [answer(i + 1, "yes") for i in range(7)])
    with pytest.raises(ValueError, match=r"1 question\(s\) have no 'category' \(question_id 5\)"):
        score_pope(str(ann_dir), str(qfile), str(results))


def test_labels_in_any_case_score_as_lower_case(tmp_path, jsonl):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    results = jsonl(tmp_path / "answers.jsonl", [answer(i + 1, t) for i, t in
                                                 enumerate(["Yes", "No", "No", "No", "Yes", "Yes", "No"])])
    lower = score_pope(str(ann_dir), str(qfile), str(results))
    label_file = ann_dir / "coco_pope_random.json"
    jsonl(label_file, [{**row, "label": row["label"].upper() if i else row["label"].capitalize()}
                       for i, row in enumerate(load_jsonl(label_file))])
    assert score_pope(str(ann_dir), str(qfile), str(results)) == lower
    assert (lower["categories"]["random"]["TP"], lower["categories"]["random"]["TN"]) == (2, 1)


@pytest.mark.parametrize("row, found", [({"label": "maybe"}, "got 'maybe'"), ({"label": None}, "got None"),
                                        ({}, "no 'label' field; keys: \\['image', 'question_id', 'text'\\]")])
def test_label_other_than_yes_or_no_names_file_and_line(tmp_path, jsonl, row, found):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    results = jsonl(tmp_path / "answers.jsonl", [answer(1, "yes")])
    label_file = ann_dir / "coco_pope_adversarial.json"
    rows = load_jsonl(label_file)
    rows[2] = {**{k: v for k, v in rows[2].items() if k != "label"}, **row}
    jsonl(label_file, rows)
    with pytest.raises(ValueError, match=rf"coco_pope_adversarial\.json:3: 'label' must be yes or no: {found}"):
        score_pope(str(ann_dir), str(qfile), str(results))


def test_annotation_dir_that_is_a_file_is_named_as_a_file(tmp_path, jsonl):
    ann_dir, qfile = _pope_files(tmp_path, jsonl)
    results = jsonl(tmp_path / "answers.jsonl", [answer(1, "yes")])
    with pytest.raises(NotADirectoryError, match=r"POPE annotation dir is a file, not a folder: "
                                                 r".*coco_pope_random\.json"):
        score_pope(str(ann_dir / "coco_pope_random.json"), str(qfile), str(results))
    with pytest.raises(FileNotFoundError, match=r"POPE annotation folder not found: .*missing"):
        score_pope(str(tmp_path / "missing"), str(qfile), str(results))
