"""scripts/v1_5/eval/*.sh: every python command line they run parses with that module's real
argument parser, every script ends with a one-line summary, and POPE runs end to end on CPU."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import calculation_mme, convert_seed_for_submission, eval_gqa, eval_science_qa, eval_textvqa
from tests.conftest import hub_cache_snapshot

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "v1_5" / "eval"
BENCHMARKS = ("vqav2", "gqa", "vizwiz", "sqa", "textvqa", "pope", "mme", "mmbench", "mmbench_cn", "seed",
              "llavabench", "mmvet", "qbench", "qbench_zh")
RUNNERS = {"llava.eval.model_vqa_loader", "llava.eval.model_vqa", "llava.eval.model_vqa_science",
           "llava.eval.model_vqa_mmbench", "llava.eval.model_vqa_qbench"}

# Stands in for `python`: records its arguments (one NUL-separated file per call) and creates the
# answer / merged files the next step of the script expects; `python -c` runs the real python.
STUB_PYTHON = r"""#!/bin/bash
if [ "$1" = "-c" ]; then exec "$REAL_PYTHON" "$@"; fi  # common.sh's check of a hub id: the real one
printf '%s\0' "$@" > "$(mktemp "$CALLS_DIR/call.XXXXXX")"
prev=""
for arg in "$@"; do
    if [ "$prev" = "--answers-file" ] || [ "$prev" = "--output-file" ]; then
        mkdir -p "$(dirname "$arg")" && : >> "$arg"
    fi
    prev=$arg
done
"""


def test_every_benchmark_has_a_script():
    names = {p.stem for p in SCRIPTS.glob("*.sh")} - {"common"}
    assert names == set(BENCHMARKS)
    for path in SCRIPTS.glob("*.sh"):
        subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.fixture()
def stub_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STUB_PYTHON)
    (bin_dir / "python").chmod(0o755)
    calls = tmp_path / "calls"
    calls.mkdir()
    ckpt = tmp_path / "checkpoints" / "llava-v1.5-7b-delta"
    ckpt.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CALLS_DIR": str(calls),
           "CUDA_VISIBLE_DEVICES": "0,1", "REAL_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    for name in ("CONV_MODE", "OPENAI_API_KEY", "OPENAI_BASE_URL", "LLAVABENCH_RULE", "JUDGE_MODEL", "MMVET_DATA",
                 "MMVET_PROMPT", "MMVET_RUNS"):
        env.pop(name, None)
    return env, calls, ckpt


def _calls(calls_dir: Path) -> list[list[str]]:
    return [p.read_bytes().decode().split("\0")[:-1] for p in sorted(calls_dir.iterdir())]


@pytest.mark.parametrize("bench", BENCHMARKS)
def test_script_command_lines_parse_with_the_real_parsers(bench, stub_env, tmp_path):
    env, calls_dir, ckpt = stub_env
    out = subprocess.run(["bash", str(SCRIPTS / f"{bench}.sh"), f"{ckpt}/", "--batch-size", "8"], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs, summary_flags, merges = [], [], []
    for argv in _calls(calls_dir):
        if argv[0] == "-m":
            module, rest = argv[1], argv[2:]
        else:  # python llava/eval/X.py ...
            module, rest = argv[0].removesuffix(".py").replace("/", "."), argv[1:]
        assert module.startswith("llava.eval."), argv
        args = importlib.import_module(module).build_parser().parse_args(rest)
        if module in RUNNERS:
            runs.append(args)
        if module == "llava.eval.merge_answers":
            merges.append(args)
        if getattr(args, "summary", None):
            summary_flags.append(args.summary)
    # one runner per GPU in CUDA_VISIBLE_DEVICES, each on its own chunk, with the extra arguments
    assert sorted(a.chunk_idx for a in runs) == [0, 1] and {a.num_chunks for a in runs} == {2}
    # the chunks merged; TextVQA's question file repeats lines, so its merge is given the file
    assert [(m.num_chunks, m.question_file) for m in merges] == [
        (2, runs[0].question_file if bench == "textvqa" else None)]
    for a in runs:
        assert a.model_path == str(ckpt) and a.temperature == 0 and a.batch_size == 8
        assert a.conv_mode == ("llava_v1" if bench.startswith("qbench") else "auto")  # upstream's Q-Bench template
        if bench.startswith("qbench"):
            assert a.lang == ("zh" if bench == "qbench_zh" else "en")
            assert re.search(rf"/qbench/answers/llvisionqa_{'zh_' if bench == 'qbench_zh' else ''}dev/", a.answers_file)
        assert a.answers_file.endswith(f"/llava-v1.5-7b-delta/2_{a.chunk_idx}.jsonl")
    label = f"{bench} llava-v1.5-7b-delta"
    assert summary_flags == [label] or re.search(rf"^{label}: \w[\w ]* = \S+", out.stdout, re.M), out.stdout


def test_script_checkpoint_is_a_folder_or_a_cached_hub_id(stub_env, tmp_path):
    env, calls_dir, _ = stub_env
    run = lambda *argv: subprocess.run(["bash", str(SCRIPTS / "textvqa.sh"), *argv], cwd=tmp_path,  # noqa: E731
                                       env=env, capture_output=True, text=True, timeout=120)
    out = run()
    assert out.returncode == 2 and out.stderr.startswith(f"usage: bash {SCRIPTS / 'textvqa.sh'} CHECKPOINT")
    # upstream's scripts pass hub ids; one that was never downloaded stops the script before any chunk
    out = run("liuhaotian/llava-v1.5-13b")
    assert out.returncode == 2, out.stderr
    assert ("CHECKPOINT liuhaotian/llava-v1.5-13b is not a local folder, and the Hugging Face cache has no copy"
            in out.stderr and "`hf download liuhaotian/llava-v1.5-13b`" in out.stderr)
    out = run("./checkpoints/llava-v1.5-13b")
    assert out.returncode == 2 and "CHECKPOINT ./checkpoints/llava-v1.5-13b is not a local folder" in out.stderr
    assert not list(calls_dir.iterdir())  # no runner started

    (hub_cache_snapshot(tmp_path / "hub", "liuhaotian/llava-v1.5-13b") / "config.json").write_text("{}")
    out = run("liuhaotian/llava-v1.5-13b", "--batch-size", "4")
    assert out.returncode == 0, out.stderr
    runs = [argv for argv in _calls(calls_dir) if argv[:2] == ["-m", "llava.eval.model_vqa_loader"]]
    assert len(runs) == 2
    for argv in runs:
        args = importlib.import_module("llava.eval.model_vqa_loader").build_parser().parse_args(argv[2:])
        assert args.model_path == "liuhaotian/llava-v1.5-13b" and args.batch_size == 4
        assert re.search(r"/textvqa/answers/llava-v1\.5-13b/2_[01]\.jsonl$", args.answers_file)


def test_llavabench_reviews_when_a_judge_is_set(stub_env, tmp_path):
    env, calls_dir, ckpt = stub_env
    bench = tmp_path / "playground" / "data" / "eval" / "llava-bench-in-the-wild"
    bench.mkdir(parents=True)
    env = {**env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "JUDGE_MODEL": "judge-1"}
    run = lambda: subprocess.run(["bash", str(SCRIPTS / "llavabench.sh"), str(ckpt)], cwd=tmp_path,  # noqa: E731
                                 env=env, capture_output=True, text=True, timeout=120)
    out = run()  # the judge's files are checked before any answer is generated
    assert out.returncode == 2
    assert "llavabench: the review needs ./playground/data/eval/llava-bench-in-the-wild/rule.json" in out.stderr
    assert not list(calls_dir.iterdir())
    for name in ("rule.json", "context.jsonl", "answers_gpt4.jsonl"):
        (bench / name).write_text("{}")
    out = run()
    assert out.returncode == 0, out.stderr
    modules = {argv[1]: argv[2:] for argv in _calls(calls_dir) if argv[0] == "-m"}
    review = importlib.import_module("llava.eval.eval_gpt_review_bench").build_parser().parse_args(
        modules["llava.eval.eval_gpt_review_bench"])
    assert review.judge_model == "judge-1" and review.rule.endswith("llava-bench-in-the-wild/rule.json")
    assert [Path(p).name for p in review.answer_list] == ["answers_gpt4.jsonl", "llava-v1.5-7b-delta.jsonl"]
    assert review.output.endswith("llava-bench-in-the-wild/reviews/llava-v1.5-7b-delta.jsonl")
    summary = importlib.import_module("llava.eval.summarize_gpt_review").build_parser().parse_args(
        modules["llava.eval.summarize_gpt_review"])
    assert summary.files == [review.output] and summary.summary == "llavabench llava-v1.5-7b-delta"


def test_mmvet_grades_when_a_judge_is_set(stub_env, tmp_path):
    env, calls_dir, ckpt = stub_env
    data = tmp_path / "mm-vet-zip"
    env = {**env, "OPENAI_API_KEY": "sk-test", "MMVET_DATA": str(data), "JUDGE_MODEL": "judge-1", "MMVET_RUNS": "5",
           "MMVET_PROMPT": str(tmp_path / "prompt.txt")}
    run = lambda: subprocess.run(["bash", str(SCRIPTS / "mmvet.sh"), str(ckpt)], cwd=tmp_path,  # noqa: E731
                                 env=env, capture_output=True, text=True, timeout=120)
    out = run()  # the grader's files are checked before any answer is generated
    assert out.returncode == 2 and f"mmvet: the grading needs {data}/mm-vet.json" in out.stderr
    assert not list(calls_dir.iterdir())
    data.mkdir()
    (data / "mm-vet.json").write_text("{}")
    out = run()
    assert out.returncode == 2 and f"mmvet: the grading needs {tmp_path}/prompt.txt" in out.stderr
    (tmp_path / "prompt.txt").write_text("Score it.")
    out = run()
    assert out.returncode == 0, out.stderr
    modules = {argv[1]: argv[2:] for argv in _calls(calls_dir) if argv[0] == "-m"}
    grade = importlib.import_module("llava.eval.eval_mmvet").build_parser().parse_args(modules["llava.eval.eval_mmvet"])
    assert grade.mmvet_path == str(data) and grade.model == "llava-v1.5-7b-delta" and grade.num_run == 5
    assert grade.result_path.endswith("mm-vet/results") and grade.judge_model == "judge-1"
    assert grade.prompt_file == str(tmp_path / "prompt.txt")
    convert = importlib.import_module("llava.eval.convert_mmvet_for_eval").build_parser().parse_args(
        modules["llava.eval.convert_mmvet_for_eval"])
    assert convert.dst == f"{grade.result_path}/{grade.model}.json"  # the grader reads what the converter wrote


def test_pope_script_end_to_end_on_cpu(tmp_path, tiny_checkpoint, image_folder):
    """One chunk on CPU (the stubbed runs above cover several), merged and scored: the last line is
    the summary. The checkpoint is given as a hub id in the local cache, as upstream's scripts do."""
    pope = tmp_path / "playground" / "data" / "eval" / "pope"
    shutil.copytree(image_folder, pope / "val2014")
    rows = {"adversarial": [("a.png", "dog", "yes"), ("b.png", "cat", "no"), ("sub/c.png", "car", "no")],
            "random": [("a.png", "bus", "yes"), ("b.png", "tree", "no")]}
    questions = []
    (pope / "coco").mkdir()
    for category, items in rows.items():
        labels = []
        for image, thing, label in items:
            text = f"Is there a {thing} in the image?"
            questions.append({"question_id": len(questions) + 1, "image": image, "category": category,
                              "text": text + "\nAnswer the question using a single word or phrase."})
            labels.append({"question_id": len(labels) + 1, "image": image, "text": text, "label": label})
        (pope / "coco" / f"coco_pope_{category}.json").write_text("".join(json.dumps(r) + "\n" for r in labels))
    (pope / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # the checkpoint as upstream's scripts name it, a hub id, here found in a local cache
    shutil.copytree(tiny_checkpoint, hub_cache_snapshot(tmp_path / "hub", "someone/llava-tiny-mlp2x"),
                    dirs_exist_ok=True)
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")
    out = subprocess.run(["bash", str(SCRIPTS / "pope.sh"), "someone/llava-tiny-mlp2x", "--device", "cpu",
                          "--max_new_tokens", "4", "--batch-size", "2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    merged = [json.loads(line) for line in (pope / "answers" / "llava-tiny-mlp2x.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in merged] == [1, 2, 3, 4, 5]
    last = out.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"pope llava-tiny-mlp2x: F1 = \d+\.\d\d \(adversarial \d+\.\d\d, random \d+\.\d\d; "
                        r"answered 5/5\)", last), out.stdout


# ----------------------------------------------------------------------------- scorers' --summary


def _coverage(answered=9, total=10):
    return {"answered": answered, "total": total, "unanswered": total - answered,
            "unanswered_ids": [7][:total - answered]}


def test_scorer_summary_lines(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(eval_textvqa, "score_textvqa", lambda *a: {"accuracy": 0.5821, "samples": 9, **_coverage()})
    eval_textvqa.main(["--annotation-file", "a.json", "--result-file", "r.jsonl", "--summary", "textvqa ck"])
    assert capsys.readouterr().out.splitlines()[-1] == "textvqa ck: accuracy = 58.21% (answered 9/10)"

    monkeypatch.setattr(eval_gqa, "score_gqa", lambda *a: {"accuracy": 62.0, "correct": 6, "balanced": 10,
                                                           "structural": {}, "semantic": {}, "answer_type": {},
                                                           **_coverage()})
    eval_gqa.main(["--summary", "gqa ck"])
    assert capsys.readouterr().out.splitlines()[-1] == "gqa ck: accuracy = 62.00% (answered 9/10)"

    categories = {name: {"accuracy": 1.0} for name in eval_science_qa.CATEGORY_ORDER}
    monkeypatch.setattr(eval_science_qa, "score_science_qa", lambda *a: {
        "accuracy": 70.0, "img_accuracy": 66.8, "correct": 7, "count": 10, "categories": categories, "unread_ids": [],
        **_coverage()})
    eval_science_qa.main(["--base-dir", ".", "--result-file", "r.jsonl", "--summary", "sqa ck"])
    assert capsys.readouterr().out.splitlines()[-1] == "sqa ck: IMG accuracy = 66.80% (all 70.00%; answered 9/10)"

    monkeypatch.setattr(calculation_mme, "score_mme", lambda *a: {
        "Perception": {"total": 1510.7, "categories": {}}, "Cognition": {"total": 355.71, "categories": {}},
        "missing_categories": [], **_coverage(10, 10)})
    calculation_mme.main(["--results_dir", str(tmp_path), "--summary", "mme ck"])
    assert capsys.readouterr().out.splitlines()[-1] == \
        "mme ck: perception = 1510.70 (cognition = 355.71; answered 10/10)"

    seed = {"types": {}, "accuracy": 60.0, "image_accuracy": 66.1, "video_accuracy": None, "predictions": []}
    monkeypatch.setattr(convert_seed_for_submission, "score_seed", lambda *a: {**seed, **_coverage()})
    convert_seed_for_submission.main(["--annotation-file", "a", "--result-file", "r", "--summary", "seed ck"])
    assert capsys.readouterr().out.splitlines()[-1] == "seed ck: image accuracy = 66.10% (all 60.00%; answered 9/10)"
