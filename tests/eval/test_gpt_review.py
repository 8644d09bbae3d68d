"""LLaVA-Bench's judge review (``eval_gpt_review_bench``) and its summary (``summarize_gpt_review``).

The judge is an OpenAI-compatible chat-completions server. OpenAI's own cannot be reached from the
tests, so a stand-in server on 127.0.0.1 plays it: real HTTP, scripted replies and failures.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
from llava.eval import eval_gpt_review_bench, summarize_gpt_review
from tests.eval.conftest import StandInJudge as BaseJudge
from tests.eval.conftest import answer, write_json, write_jsonl
from tests.serve.conftest import ServerThread

QUESTIONS = [
    {"question_id": 0, "image": "001.jpg", "text": "What colour is the bus?", "category": "conv"},
    {"question_id": 1, "image": "001.jpg", "text": "Describe the picture.", "category": "detail"},
    {"question_id": 2, "image": "002.jpg", "text": "Why is the man laughing?", "category": "complex"},
    {"question_id": 3, "image": "002.jpg", "text": "How many dogs are there?", "category": "conv"},
]
CONTEXTS = [{"id": "001", "image": "001.jpg", "caption": "A red bus on a wet street."},
            {"id": "002", "image": "002.jpg", "caption": ["A man with two dogs.", "He laughs."]}]
RULES = {f"llava_bench_{c}": {"role": "Assistant", "prompt": f"Score both answers ({c}); first line: two numbers."}
         for c in ("conv", "detail", "complex")}


def question_of(body: dict) -> str:
    """The question a review request is about (from the user message's [Question] block)."""
    return body["messages"][1]["content"].split("[Question]\n", 1)[1].split("\n", 1)[0]


StandInJudge = partial(BaseJudge, item=question_of)


@pytest.fixture()
def bench(tmp_path):
    root = tmp_path / "llava-bench-in-the-wild"
    files = {
        "question": write_jsonl(root / "questions.jsonl", QUESTIONS),
        "context": write_jsonl(root / "context.jsonl", CONTEXTS),
        "rule": write_json(root / "rule.json", RULES),
        "reference": write_jsonl(root / "answers_gpt4.jsonl",
                                 [answer(q["question_id"], f"reference {q['question_id']}") | {"answer_id": f"g{i}"}
                                  for i, q in enumerate(QUESTIONS)]),
        "model": write_jsonl(root / "answers" / "ckpt.jsonl",
                             [answer(q["question_id"], f"model {q['question_id']}") | {"answer_id": f"m{i}"}
                              for i, q in enumerate(QUESTIONS)]),
        "output": root / "reviews" / "ckpt.jsonl",
    }
    return files


def review_args(bench, url: str, *extra: str) -> list[str]:
    return ["--question", str(bench["question"]), "--context", str(bench["context"]), "--rule", str(bench["rule"]),
            "--answer-list", str(bench["reference"]), str(bench["model"]), "--output", str(bench["output"]),
            "--api-base", url + "/v1", "--retry-wait", "0.01", *extra]


def test_review_resume_and_summary(bench, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judge = StandInJudge({
        "What colour is the bus?": ["8 6\nThe first answer names the colour; the second is vaguer."],
        "Describe the picture.": ["9, 9\nBoth are complete."],
        "Why is the man laughing?": [429, 503, "7 4\nThe second misses the joke."],  # retried twice
        "How many dogs are there?": ["Both answers say two."],  # no score pair on the first line
    })
    with ServerThread(judge.app) as server:
        result = eval_gpt_review_bench.main(review_args(bench, server.url))
        out = capsys.readouterr()
        assert result == {"reviewed": 4, "kept": 0, "total": 4, "unscored_ids": [3]}
        assert "1 review(s) have no score pair on their first line (question_id 3)" in out.out
        assert out.err.count("retrying question 2") == 2 and "HTTP 429: scripted failure 429" in out.err

        first = judge.requests[0]
        assert first["auth"] == "Bearer sk-test" and first["model"] == "gpt-4-0314"
        assert first["temperature"] == 0.2 and first["max_tokens"] == 1024
        assert first["messages"][0] == {"role": "system", "content": "You are a helpful and precise assistant for "
                                                                     "checking the quality of the answer."}
        assert first["messages"][1] == {"role": "user", "content": (
            "[Context]\nA red bus on a wet street.\n\n[Question]\nWhat colour is the bus?\n\n"
            "[Assistant 1]\nreference 0\n\n[End of Assistant 1]\n\n[Assistant 2]\nmodel 0\n\n[End of Assistant 2]\n\n"
            "[System]\nScore both answers (conv); first line: two numbers.\n\n")}
        assert "[Context]\nA man with two dogs.\nHe laughs.\n\n" in judge.requests[-1]["messages"][1]["content"]

        reviews = [json.loads(line) for line in bench["output"].read_text().splitlines()]
        assert [(r["id"], r["question_id"], r["answer1_id"], r["answer2_id"], r["category"], r["tuple"])
                for r in reviews] == [(1, 0, "g0", "m0", "llava_bench_conv", [8.0, 6.0]),
                                      (2, 1, "g1", "m1", "llava_bench_detail", [9.0, 9.0]),
                                      (3, 2, "g2", "m2", "llava_bench_complex", [7.0, 4.0]),
                                      (4, 3, "g3", "m3", "llava_bench_conv", [-1, -1])]
        assert reviews[0]["content"].startswith("8 6\nThe first answer")

        # the unscored review is left out of the means, and said so
        summarize_gpt_review.main(["-f", str(bench["output"]), "--summary", "llavabench ckpt"])
        assert capsys.readouterr().out.splitlines() == [
            "ckpt",
            "all 79.2 80.0 63.3",  # reference (8+9+7)/3 = 8.0, model (6+9+4)/3 = 6.333
            "llava_bench_complex 57.1 70.0 40.0",
            "llava_bench_conv 75.0 80.0 60.0",
            "llava_bench_detail 100.0 90.0 90.0",
            "left out: 1 review(s) without a score pair (question_id 3)",
            "=================================",
            "llavabench ckpt: relative score = 79.2 (reference 80.0, model 63.3; scored 3/4)",
        ]

        # a second run reviews only what is missing: drop the last review, the judge now scores it
        bench["output"].write_text("".join(line + "\n" for line in bench["output"].read_text().splitlines()[:3]))
        judge.replies["How many dogs are there?"] = ["5 5\nBoth right."]
        judge.requests.clear()
        assert eval_gpt_review_bench.main(review_args(bench, server.url)) == {
            "reviewed": 1, "kept": 3, "total": 4, "unscored_ids": []}
        assert judge.asked() == ["How many dogs are there?"]
    capsys.readouterr()
    result = summarize_gpt_review.main(["-f", str(bench["output"])])
    assert capsys.readouterr().out.splitlines()[1:5] == [
        "all 82.8 72.5 60.0",  # (8+9+7+5)/4 = 7.25, (6+9+4+5)/4 = 6.0
        "llava_bench_complex 57.1 70.0 40.0",
        "llava_bench_conv 84.6 65.0 55.0",  # (8+5)/2 = 6.5, (6+5)/2 = 5.5
        "llava_bench_detail 100.0 90.0 90.0",
    ]
    assert result[str(bench["output"])]["categories"]["all"]["count"] == 4
    # -i leaves questions out
    summarize_gpt_review.main(["-f", str(bench["output"]), "-i", "3", "2"])
    assert capsys.readouterr().out.splitlines()[1] == "all 88.2 85.0 75.0"  # (8+9)/2, (6+9)/2


def test_review_errors_name_the_question_and_keep_the_work(bench, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SystemExit, match=r"the judge is OpenAI's API and \$OPENAI_API_KEY is not set"):
        eval_gpt_review_bench.main(review_args(bench, "http://unused")[:-4])  # no --api-base: OpenAI's
    assert not bench["output"].exists()

    judge = StandInJudge({"What colour is the bus?": ["8 6"], "Describe the picture.": [401],
                          "Why is the man laughing?": [500], "How many dogs are there?": ["1 1"]})
    with ServerThread(judge.app) as server:
        url = f"{server.url}/v1/chat/completions"
        # a local server needs no key: no Authorization header is sent
        with pytest.raises(SystemExit) as refused:
            eval_gpt_review_bench.main(review_args(bench, server.url))
        assert str(refused.value).startswith(f"error: Judge {url} refused question 1: HTTP 401: scripted failure 401")
        assert f"The reviews written so far are in {bench['output']}; run again to go on." in str(refused.value)
        assert judge.requests[0]["auth"] is None
        assert [json.loads(line)["question_id"] for line in bench["output"].read_text().splitlines()] == [0]

        judge.replies["Describe the picture."] = ["9 9"]
        with pytest.raises(SystemExit, match=rf"Judge {url} failed question 2 3 times; last: HTTP 500: scripted "
                                             r"failure 500"):
            eval_gpt_review_bench.main(review_args(bench, server.url, "--retries", "2"))
        assert [json.loads(line)["question_id"] for line in bench["output"].read_text().splitlines()] == [0, 1]

    # inputs that cannot be reviewed are refused before any request, naming what is wrong
    build = lambda **f: eval_gpt_review_bench.build_reviews(  # noqa: E731
        str(f.get("question", bench["question"])), str(f.get("context", bench["context"])),
        str(f.get("rule", bench["rule"])), [str(bench["reference"]), str(f.get("model", bench["model"]))])
    short = write_jsonl(tmp_path / "short.jsonl", [answer(q, "x") for q in (0, 1, 3)])
    with pytest.raises(ValueError, match=rf"{short}: no answer for 1 of 4 questions in .*questions.jsonl: "
                                         r"question_id 2"):
        build(model=short)
    rules = write_json(tmp_path / "rule.json", {k: v for k, v in RULES.items() if k != "llava_bench_detail"})
    with pytest.raises(ValueError, match=r"no rule 'llava_bench_detail' for question_id 1; rules: "
                                         r"\['llava_bench_complex', 'llava_bench_conv'\]"):
        build(rule=rules)
    contexts = write_jsonl(tmp_path / "context.jsonl", CONTEXTS[:1])
    with pytest.raises(ValueError, match=r"no context for image '002.jpg' \(question_id 2\)"):
        build(context=contexts)
    with pytest.raises(ValueError, match="--answer-list takes two files"):
        eval_gpt_review_bench.build_reviews(str(bench["question"]), str(bench["context"]), str(bench["rule"]),
                                            [str(bench["model"])])
    other = write_jsonl(tmp_path / "other_reviews.jsonl", [{"question_id": 99, "tuple": [1, 1]}])
    with pytest.raises(ValueError, match=r"reviews of question ids that are not in the question file: '99'"):
        eval_gpt_review_bench.run_review(build(), eval_gpt_review_bench.Judge("http://unused", "m", None), str(other))


def test_summary_selects_files_and_refuses_reviews_without_scores(tmp_path, capsys):
    folder = tmp_path / "reviews"
    write_jsonl(folder / "gpt4_text_llava-delta_0613.jsonl", [{"question_id": 0, "tuple": [5, 4]}])
    write_jsonl(folder / "gpt4_text_llava-mlp.jsonl", [{"question_id": 0, "score": [5, 5]}])  # upstream's older key
    results = summarize_gpt_review.main(["-d", str(folder)])
    assert capsys.readouterr().out.splitlines() == ["llava-delta_0613", "all 80.0 50.0 40.0", "=" * 33,
                                                    "llava-mlp", "all 100.0 50.0 50.0", "=" * 33]
    assert len(results) == 2
    assert list(summarize_gpt_review.main(["-d", str(folder), "-v", "0314"])) == [
        str(folder / "gpt4_text_llava-mlp.jsonl")]
    assert list(summarize_gpt_review.main(["-d", str(folder), "-s", "delta"])) == [
        str(folder / "gpt4_text_llava-delta_0613.jsonl")]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question_id": 7, "content": "no tuple"}])
    with pytest.raises(ValueError, match=rf"{bad}: review of question_id 7 has no score pair"):
        summarize_gpt_review.main(["-f", str(bad)])
    unscored = write_jsonl(tmp_path / "unscored.jsonl", [{"question_id": 1, "tuple": [-1, -1]}])
    with pytest.raises(ValueError, match=r"no scored review \(1 without a score pair\)"):
        summarize_gpt_review.main(["-f", str(unscored)])


def test_summary_refuses_repeated_reviews_and_scores_that_are_not_numbers(tmp_path):
    rows = [{"question_id": 1, "category": "conv", "tuple": [8, 2]}, {"question_id": 2, "category": "conv",
                                                                      "tuple": ["8", "8"]}]  # numbers as text: read
    once = write_jsonl(tmp_path / "once.jsonl", rows)
    assert summarize_gpt_review.main(["-f", str(once)])[str(once)]["categories"]["all"]["relative"] == 62.5
    twice = write_jsonl(tmp_path / "twice.jsonl", rows + [rows[1]] * 2)
    with pytest.raises(ValueError, match=rf"{twice}: 2 repeated question_id value\(s\): 2, 2"):
        summarize_gpt_review.main(["-f", str(twice)])
    text = write_jsonl(tmp_path / "text.jsonl", [rows[0], {"question_id": 3, "tuple": ["8", "n/a"]}])
    with pytest.raises(ValueError, match=rf"{text}: review of question_id 3 has a score pair that is not two "
                                         r"numbers: \['8', 'n/a'\]"):
        summarize_gpt_review.main(["-f", str(text)])
