"""MM-Vet grading (``eval_mmvet``) against a stand-in judge on 127.0.0.1.

The judge is an OpenAI-compatible chat-completions server; OpenAI's own cannot be reached from the
tests, so a FastAPI app plays it over real HTTP, with scripted replies and failures per sample.
"""

from __future__ import annotations

import csv
import json
from functools import partial

import pytest
from llava.eval import eval_mmvet
from tests.eval.conftest import StandInJudge as BaseJudge
from tests.eval.conftest import write_json
from tests.serve.conftest import ServerThread

SAMPLES = {
    "v1_0": {"imagename": "v1_0.png", "question": "What number is on the door?", "answer": "12",
             "capability": ["ocr"]},
    "v1_1": {"imagename": "v1_1.png", "question": "What are the two words on the sign?", "answer": "STOP<AND>AHEAD",
             "capability": ["ocr", "rec"]},
    "v1_2": {"imagename": "v1_2.png", "question": "How many cups are there?", "answer": "2<OR>two",
             "capability": ["rec"]},
    "v1_3": {"imagename": "v1_3.png", "question": "Why is this funny?", "answer": "The dog wears glasses.",
             "capability": ["rec", "know", "gen"]},
    "v1_4": {"imagename": "v1_4.png", "question": "What is the sum on the board?", "answer": "5",
             "capability": ["ocr", "math"]},
}
PREDICTIONS = {"v1_0": "12", "v1_1": "It says STOP.", "v1_2": "three", "v1_3": "joke", "v1_4": "I cannot tell."}


def prediction_of(body: dict) -> str:
    """The prediction a grading request is about: the third cell of the message's last table row."""
    row = body["messages"][-1]["content"].split(eval_mmvet.SCORE_ONLY)[0].rsplit("\n", 1)[1]
    return row.split(" | ")[2]


StandInJudge = partial(BaseJudge, item=prediction_of)


@pytest.fixture()
def mmvet(tmp_path):
    root = tmp_path / "mm-vet"
    write_json(root / "mm-vet.json", SAMPLES)
    write_json(root / "results" / "ckpt.json", PREDICTIONS)
    return root


def grade_args(root, url: str, *extra: str) -> list[str]:
    return ["--mmvet_path", str(root), "--result_path", str(root / "results"), "--model", "ckpt",
            "--api-base", url + "/v1", "--retry-wait", "0.01", *extra]


def read_csv(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_grading_tables_and_resume(mmvet, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judge = StandInJudge({
        "12": ["1.0"],
        "It says STOP.": ["0.5"],
        "three": ["three cups", "0.0"],  # no score, then one when asked again
        "joke": [429, "0.3 because"],  # retried after a rate limit; the first word is the score
        "I cannot tell.": ["N/A"],  # never a score: 0.0 after 5 asks
    })
    with ServerThread(judge.app) as server:
        result = eval_mmvet.main(grade_args(mmvet, server.url))
    out = capsys.readouterr()

    first = judge.requests[0]
    assert first["auth"] == "Bearer sk-test" and first["model"] == "gpt-4-0613"
    assert first["temperature"] == 0.0 and first["max_tokens"] == 3
    assert first["messages"] == [{"role": "user", "content": eval_mmvet.DEFAULT_PROMPT
                                  + "\nWhat number is on the door? | 12 | 12 | "}]
    asks = {p: [r for r in judge.requests if prediction_of(r) == p] for p in PREDICTIONS.values()}
    assert asks["It says STOP."][0]["messages"][0]["content"].endswith(
        "\nWhat are the two words on the sign? | STOP <AND> AHEAD | It says STOP. | ")
    assert [r["temperature"] for r in asks["three"]] == [0.0, 0.0]
    assert asks["three"][1]["messages"][0]["content"].endswith(" | 2 <OR> two | three | " + eval_mmvet.SCORE_ONLY)
    assert len(asks["joke"]) == 2 and "retrying sample v1_3 (run 1)" in out.err
    assert [r["temperature"] for r in asks["I cannot tell."]] == [0.0, 0.0, 0.5, 1.0, 1.5]

    grades = json.loads((mmvet / "results" / "ckpt_gpt-4-0613-grade-1runs.json").read_text())
    assert {sid: g["score"] for sid, g in grades.items()} == {
        "v1_0": [1.0], "v1_1": [0.5], "v1_2": [0.0], "v1_3": [0.3], "v1_4": [0.0]}
    assert grades["v1_3"] == {"model": ["judge-0613"], "content": ["0.3 because"], "score": [0.3]}
    assert grades["v1_4"]["content"] == ["N/A"]

    # hand-computed: ocr (1 + .5 + 0)/3, rec (.5 + 0 + .3)/3, know = gen = .3, math 0, total 1.8/5
    assert read_csv(mmvet / "results" / "ckpt_gpt-4-0613-cap-score-1runs.csv") == [
        ["", "ocr", "rec", "know", "gen", "math", "total", "std", "runs"],
        ["ckpt", "50.0", "26.7", "30.0", "30.0", "0.0", "36.0", "0.0", "[36.0]"]]
    assert read_csv(mmvet / "results" / "ckpt_gpt-4-0613-cap-int-score-1runs.csv") == [
        ["", "ocr", "ocr_rec", "rec", "rec_know_gen", "ocr_math", "total", "std", "runs"],
        ["ckpt", "100.0", "50.0", "0.0", "30.0", "0.0", "36.0", "0.0", "[36.0]"]]
    assert result["graded"] == 5 and result["kept"] == 0 and result["unparsed_ids"] == ["v1_4"]
    assert "1 sample(s) got no score from the judge in 5 asks and count as 0.0 (as in MM-Vet's evaluator): v1_4" \
        in out.out
    assert out.out.rstrip().endswith("mmvet ckpt: total = 36.0 (judge gpt-4-0613; tables "
                                     f"{mmvet}/results/ckpt_gpt-4-0613-cap-score-1runs.csv, "
                                     f"{mmvet}/results/ckpt_gpt-4-0613-cap-int-score-1runs.csv)")

    # a second call grades only what is missing from the grade file
    grade_file = mmvet / "results" / "ckpt_gpt-4-0613-grade-1runs.json"
    del grades["v1_3"]
    grade_file.write_text(json.dumps(grades))
    judge.replies["joke"] = ["0.8"]
    judge.requests.clear()
    with ServerThread(judge.app) as server:
        result = eval_mmvet.main(grade_args(mmvet, server.url))
    assert judge.asked() == ["joke"] and result["graded"] == 1 and result["kept"] == 4
    assert result["cap"]["know"] == 80.0 and result["cap"]["total"] == 46.0  # (1 + .5 + 0 + .8 + 0)/5


def test_runs_subset_and_prompt_file(mmvet, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a local server needs no key
    # two runs: each run's total, their mean and their (population) std, as MM-Vet reports
    judge = StandInJudge({"12": ["1.0", "0.5"], "three": ["0.0"]})
    write_json(mmvet / "bard_set.json", ["v1_0", "v1_2"])
    prompt = write_json(tmp_path / "prompt.txt", "Score it.")
    prompt.write_text("Score it.\n")
    with ServerThread(judge.app) as server:
        result = eval_mmvet.main(grade_args(mmvet, server.url, "--use_sub_set", "--num_run", "2",
                                            "--prompt-file", str(prompt), "--gpt_model", "judge-x"))
    capsys.readouterr()
    assert judge.asked() == ["12", "three", "12", "three"]  # run 1, then run 2
    assert judge.requests[0]["messages"][0]["content"] == "Score it.\n\nWhat number is on the door? | 12 | 12 | "
    assert judge.requests[0]["auth"] is None and judge.requests[0]["model"] == "judge-x"
    assert result["files"]["cap"].endswith("results/ckpt_bardset_judge-x-cap-score-2runs.csv")
    assert result["files"]["grades"].endswith("results/ckpt_judge-x-grade-2runs.json")  # shared with the full set
    assert read_csv(result["files"]["cap"]) == [
        ["", "ocr", "rec", "total", "std", "runs"],
        ["ckpt", "75.0", "0.0", "37.5", "12.5", "[50.0, 25.0]"]]
    assert read_csv(result["files"]["cap_int"])[0] == ["", "ocr", "rec", "total", "std", "runs"]

    # the full set reuses the subset's grades and grades the rest (every reply now "0.2")
    judge = StandInJudge({p: ["0.2"] for p in PREDICTIONS.values()})
    with ServerThread(judge.app) as server:
        result = eval_mmvet.main(grade_args(mmvet, server.url, "--num_run", "2", "--gpt_model", "judge-x"))
    capsys.readouterr()
    assert sorted(judge.asked()) == sorted(["It says STOP.", "joke", "I cannot tell."] * 2)
    assert result["kept"] == 4 and result["graded"] == 6


def test_errors_name_the_sample_and_keep_the_grades(mmvet, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SystemExit, match=r"the judge is OpenAI's API and \$OPENAI_API_KEY is not set"):
        eval_mmvet.main(grade_args(mmvet, "http://unused")[:-4])  # no --api-base: OpenAI's

    # inputs that cannot be graded are refused before any request, naming what is wrong
    results = mmvet / "results" / "ckpt.json"
    results.write_text(json.dumps({k: v for k, v in PREDICTIONS.items() if k not in ("v1_2", "v1_4")}))
    with pytest.raises(ValueError, match=rf"{results}: no answer for 2 of 5 MM-Vet samples: 'v1_2', 'v1_4'"):
        eval_mmvet.main(grade_args(mmvet, "http://unused"))
    results.write_text(json.dumps({**PREDICTIONS, "v1_1": None}))
    with pytest.raises(ValueError, match=r"answers that are not text: 'v1_1'"):
        eval_mmvet.main(grade_args(mmvet, "http://unused"))
    results.write_text(json.dumps(PREDICTIONS))
    bad = tmp_path / "bad"
    write_json(bad / "mm-vet.json", {**SAMPLES, "v1_2": {**SAMPLES["v1_2"], "capability": []}})
    with pytest.raises(ValueError, match=r"mm-vet.json: sample 'v1_2' needs 'capability', a non-empty list"):
        eval_mmvet.load_mmvet(str(bad), False)
    write_json(bad / "mm-vet.json", {**SAMPLES, "v1_3": {"question": "Why?", "capability": ["rec"]}})
    with pytest.raises(ValueError, match=r"mm-vet.json: sample 'v1_3' has no 'answer' text"):
        eval_mmvet.load_mmvet(str(bad), False)
    write_json(mmvet / "bard_set.json", ["v1_0", "v2_9"])
    with pytest.raises(ValueError, match=r"bard_set.json: sample ids that are not in .*mm-vet.json: 'v2_9'"):
        eval_mmvet.load_mmvet(str(mmvet), True)
    with pytest.raises(FileNotFoundError, match="mm-vet.json"):
        eval_mmvet.load_mmvet(str(tmp_path / "nowhere"), False)

    judge = StandInJudge({"12": ["1.0"], "It says STOP.": [401], "three": [500], "joke": ["0"], "I cannot tell.": ["0"]})
    grade_file = mmvet / "results" / "ckpt_gpt-4-0613-grade-1runs.json"
    with ServerThread(judge.app) as server:
        url = f"{server.url}/v1/chat/completions"
        with pytest.raises(SystemExit) as refused:
            eval_mmvet.main(grade_args(mmvet, server.url))
        assert str(refused.value).startswith(f"error: Judge {url} refused sample v1_1 (run 1): HTTP 401: "
                                             "scripted failure 401")
        assert f"The grades written so far are in {grade_file}; run again to go on." in str(refused.value)
        assert list(json.loads(grade_file.read_text())) == ["v1_0"]

        judge.replies["It says STOP."] = ["0.5"]
        with pytest.raises(SystemExit, match=rf"Judge {url} failed sample v1_2 \(run 1\) 3 times; last: HTTP 500"):
            eval_mmvet.main(grade_args(mmvet, server.url, "--retries", "2"))
        assert list(json.loads(grade_file.read_text())) == ["v1_0", "v1_1"]

    grade_file.write_text(json.dumps({"q7": {"model": [], "content": [], "score": []}}))
    with pytest.raises(ValueError, match=r"grades of samples that are not in mm-vet.json: 'q7'"):
        eval_mmvet.main(grade_args(mmvet, "http://unused"))


def test_parse_grade():
    assert eval_mmvet.parse_grade("0.7") == 0.7
    assert eval_mmvet.parse_grade(" 1.0\nfully right") == 1.0
    assert eval_mmvet.parse_grade("1") == 1.0
    for reply in ("", "N/A", "1.5", "-0.1", "score: 0.5"):
        assert eval_mmvet.parse_grade(reply) is None
