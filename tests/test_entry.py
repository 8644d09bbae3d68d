"""Command-line tools end with one ``error:`` line and exit code 2 when an input is missing."""

import subprocess
import sys
from pathlib import Path

import pytest

from llava.entry import run_main

ROOT = Path(__file__).resolve().parents[1]


def test_run_main_turns_a_missing_input_into_an_error_line(capsys):
    def main(path):
        raise FileNotFoundError(f"No such file: {path!r}")

    with pytest.raises(SystemExit) as exit_info:
        run_main(main, "answers.jsonl")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: No such file: 'answers.jsonl'\n"


def test_run_main_returns_the_result_and_lets_other_errors_through():
    assert run_main(lambda a, b: a + b, 1, 2) == 3

    def broken():
        raise ValueError("a bug, with its traceback")

    with pytest.raises(ValueError):
        run_main(broken)


@pytest.mark.parametrize("argv", [
    ["-m", "llava.eval.eval_textvqa", "--annotation-file", "{tmp}/TextVQA_0.5.1_val.json",
     "--result-file", "{tmp}/answers.jsonl"],
    ["-m", "llava.eval.eval_pope", "--annotation-dir", "{tmp}/coco", "--question-file", "{tmp}/q.jsonl",
     "--result-file", "{tmp}/a.jsonl"],
    ["-m", "llava.eval.merge_answers", "--answers-dir", "{tmp}/answers", "--num-chunks", "2"],
    ["-m", "llava.eval.convert_vqav2_for_submission", "--split", "s", "--ckpt", "c", "--dir", "{tmp}"],
    ["-m", "llava.eval.model_vqa_loader", "--model-path", "{tmp}/no-checkpoint", "--question-file",
     "{tmp}/q.jsonl", "--image-folder", "{tmp}", "--answers-file", "{tmp}/a.jsonl", "--device", "cpu"],
    ["-m", "llava.serve.cli", "--model-path", "{tmp}/no-checkpoint", "--device", "cpu"],
    ["scripts/extract_mm_projector.py", "--model_name_or_path", "{tmp}/no-checkpoint", "--output", "{tmp}/p.bin"],
    ["llava/train/train_mem.py", "--model_name_or_path", "{tmp}/no-checkpoint", "--data_path", "{tmp}/d.json",
     "--output_dir", "{tmp}/out", "--use_cpu", "True"],
    ["llava/train/train.py", "--model_name_or_path", "{tmp}/no-checkpoint", "--data_path", "{tmp}/d.json",
     "--output_dir", "{tmp}/out", "--use_cpu", "True"],
], ids=lambda argv: argv[1] if argv[0] == "-m" else argv[0])
def test_a_missing_input_is_one_error_line_not_a_traceback(argv, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(tmp_path) in last, out.stderr
