import pytest

from llava.eval import calculation_mme, convert_answer_to_mme
from llava.eval.calculation_mme import parse_mme_answer, score_category_lines

from .conftest import answer

YN = "Please answer yes or no."
SHORT = "Answer the question using a single word or phrase."


def _mme_tree(root):
    """A two-category MME_Benchmark_release_version: one with images/ + questions_answers_YN/,
    one flat (images and txt side by side)."""
    data = root / "MME_Benchmark_release_version"
    qa = data / "existence" / "questions_answers_YN"
    qa.mkdir(parents=True)
    (data / "existence" / "images").mkdir()
    (qa / "000.txt").write_text(f"Is there a dog in this image? {YN}\tYes\nIs there a cat in this image? {YN}\tNo\n")
    (qa / "001.txt").write_text(f"Is there a bus in this image? {YN}\tYes\nIs there a car in this image? {YN}\tNo\n")
    flat = data / "code_reasoning"
    flat.mkdir()
    (flat / "0020.png").write_bytes(b"")
    # MME's own files sometimes have two spaces before the instruction.
    (flat / "0020.txt").write_text(f"Does the code print 3? {YN}\tYes\nDoes the code print 4?  {YN}\tNo\n")
    return data


@pytest.mark.parametrize("text, label", [
    ("Yes", "yes"), ("no", "no"), ("No, it is not.", "no"), ("Yes, the code prints 3.", "yes"),
    ("I think yes", "other"), ("nothing", "no"), ("Maybe", "other"), ("yes\n", "yes"),
])
def test_parse_mme_answer(text, label):
    assert parse_mme_answer(text) == label


def test_acc_and_acc_plus_by_hand():
    lines = [
        "000.jpg\tq1\tYes\tYes\n", "000.jpg\tq2\tNo\tNo\n",  # image 000: both right
        "001.jpg\tq1\tYes\tNo\n", "001.jpg\tq2\tNo\tno\n",  # image 001: one right
    ]
    s = score_category_lines(lines)
    assert (s["acc"], s["acc_plus"], s["score"]) == (0.75, 0.5, 125.0)
    # Pairing is by image name, not by line order.
    assert score_category_lines([lines[0], lines[2], lines[1], lines[3]])["score"] == 125.0
    with pytest.raises(ValueError, match="ground truth must be yes or no"):
        score_category_lines(["x.jpg\tq\tMaybe\tyes"], "f.txt")
    with pytest.raises(ValueError, match="f.txt:1: expected 4 tab-separated fields"):
        score_category_lines(["x.jpg\tq\tyes"], "f.txt")


def _answers(unanswered_last=False):
    # LLaVA's MME question file uses the image path as question_id for both questions.
    rows = [
        answer("existence/000.jpg", "Yes", f"Is there a dog in this image? {YN}"),
        answer("existence/000.jpg", "No", f"Is there a cat in this image?\n{SHORT}"),
        answer("existence/001.jpg", "No", f"Is there a bus in this image? {YN}"),
        answer("existence/001.jpg", "no", f"Is there a car in this image? {YN}"),
        answer("code_reasoning/0020.png", "Yes, the code\tprints 3.\nDone.", f"Does the code print 3? {YN}"),
        answer("code_reasoning/0020.png", "Maybe", "Does the code print 4?"),
    ]
    return rows[:-1] if unanswered_last else rows


def test_convert_and_score_mme(tmp_path, jsonl, capsys):
    _mme_tree(tmp_path)
    jsonl(tmp_path / "answers" / "exp.jsonl", _answers())
    converted = convert_answer_to_mme.main(["--experiment", "exp", "--mme-dir", str(tmp_path)])
    assert converted["categories"] == {"code_reasoning": 2, "existence": 4}
    assert (converted["answered"], converted["total"]) == (6, 6)
    results_dir = tmp_path / "eval_tool" / "answers" / "exp"
    existence = (results_dir / "existence.txt").read_text().splitlines()
    assert existence[1] == f"000.jpg\tIs there a cat in this image? {YN}\tNo\tNo"
    code = (results_dir / "code_reasoning.txt").read_text().splitlines()
    assert code == [f"0020.png\tDoes the code print 3? {YN}\tYes\tYes, the code prints 3. Done.",
                    f"0020.png\tDoes the code print 4?  {YN}\tNo\tMaybe"]

    result = calculation_mme.main(["--results_dir", str(results_dir)])
    ex = result["Perception"]["categories"]["existence"]
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (0.75, 0.5, 125.0)
    cr = result["Cognition"]["categories"]["code_reasoning"]
    assert (cr["acc"], cr["acc_plus"], cr["score"], cr["other_answers"]) == (0.5, 0.0, 50.0, 1)
    assert (result["Perception"]["total"], result["Cognition"]["total"]) == (125.0, 50.0)
    assert "count" in result["missing_categories"] and len(result["missing_categories"]) == 12
    assert result["unanswered"] == 0
    out = capsys.readouterr().out
    assert "answered 6/6" in out and "no result file for count" in out
    assert "existence  score: 125.00" in out


def test_mme_unanswered_is_reported(tmp_path, jsonl, capsys):
    _mme_tree(tmp_path)
    jsonl(tmp_path / "answers" / "exp.jsonl", _answers(unanswered_last=True))
    converted = convert_answer_to_mme.main(["--experiment", "exp", "--mme-dir", str(tmp_path)])
    assert (converted["answered"], converted["total"], converted["unanswered"]) == (5, 6, 1)
    result = calculation_mme.main(["--results_dir", str(tmp_path / "eval_tool" / "answers" / "exp")])
    assert (result["answered"], result["total"], result["unanswered_ids"]) == (5, 6, ["code_reasoning/0020.png"])
    assert result["Cognition"]["categories"]["code_reasoning"]["score"] == 100.0  # acc 1/1, acc+ 0/1
    assert "answered 5/6; 1 unanswered" in capsys.readouterr().out


def test_mme_errors(tmp_path, jsonl):
    _mme_tree(tmp_path)
    rows = _answers()
    jsonl(tmp_path / "answers" / "twice.jsonl", rows + rows[:1])
    with pytest.raises(ValueError, match="answered more than once"):
        convert_answer_to_mme.main(["--experiment", "twice", "--mme-dir", str(tmp_path)])
    jsonl(tmp_path / "answers" / "unknown.jsonl", [answer("existence/000.jpg", "Yes", "Is there a cow?")])
    with pytest.raises(ValueError, match="not found in the MME ground truth.*'existence/000.jpg'"):
        convert_answer_to_mme.main(["--experiment", "unknown", "--mme-dir", str(tmp_path)])


def test_reconversion_removes_category_files_these_answers_lack(tmp_path, jsonl, capsys):
    _mme_tree(tmp_path)
    jsonl(tmp_path / "answers" / "exp.jsonl", _answers())
    convert_answer_to_mme.main(["--experiment", "exp", "--mme-dir", str(tmp_path)])
    results_dir = tmp_path / "eval_tool" / "answers" / "exp"
    (results_dir / "notes.txt").write_text("mine\n")
    (results_dir / "count.txt").write_text("1.jpg\tq\tYes\tYes\n1.jpg\tq2\tNo\tNo\n")  # scored 200 if left
    jsonl(tmp_path / "answers" / "exp.jsonl", _answers()[:4])  # a new run answers only existence
    converted = convert_answer_to_mme.main(["--experiment", "exp", "--mme-dir", str(tmp_path)])
    result = calculation_mme.main(["--results_dir", str(results_dir)])
    assert (result["Perception"]["total"], result["Cognition"]["total"]) == (125.0, 0.0)
    assert sorted(p.name for p in results_dir.iterdir()) == ["existence.txt", "notes.txt"]
    assert converted["removed"] == ["code_reasoning.txt", "count.txt"]
    assert "removed 2 category file(s) of an earlier conversion that these answers do not cover: " \
           "code_reasoning.txt, count.txt" in capsys.readouterr().out
