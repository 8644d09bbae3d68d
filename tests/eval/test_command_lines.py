"""Upstream LLaVA-1.5's eval command lines (scripts/v1_5/eval/*.sh) parse unchanged (and MM-Vet's grader's)."""

import importlib
import shlex

import pytest

# (module, arguments as they appear in upstream's scripts/v1_5/eval/*.sh)
UPSTREAM_COMMAND_LINES = [
    ("eval_textvqa", "--annotation-file ./playground/data/eval/textvqa/TextVQA_0.5.1_val.json "
                     "--result-file ./playground/data/eval/textvqa/answers/llava-v1.5-13b.jsonl"),
    ("eval_pope", "--annotation-dir ./playground/data/eval/pope/coco "
                  "--question-file ./playground/data/eval/pope/llava_pope_test.jsonl "
                  "--result-file ./playground/data/eval/pope/answers/llava-v1.5-13b.jsonl"),
    ("eval_science_qa", "--base-dir ./playground/data/eval/scienceqa "
                        "--result-file ./playground/data/eval/scienceqa/answers/llava-v1.5-13b.jsonl "
                        "--output-file ./playground/data/eval/scienceqa/answers/llava-v1.5-13b_output.jsonl "
                        "--output-result ./playground/data/eval/scienceqa/answers/llava-v1.5-13b_result.json"),
    ("convert_gqa_for_eval", "--src ./playground/data/eval/gqa/answers/llava_gqa_testdev_balanced/llava-v1.5-13b/merge.jsonl "
                             "--dst ./playground/data/eval/gqa/data/testdev_balanced_predictions.json"),
    ("eval_gqa", "--tier testdev_balanced"),
    ("convert_vqav2_for_submission", "--split llava_vqav2_mscoco_test-dev2015 --ckpt llava-v1.5-13b"),
    ("convert_vizwiz_for_submission", "--annotation-file ./playground/data/eval/vizwiz/llava_test.jsonl "
                                      "--result-file ./playground/data/eval/vizwiz/answers/llava-v1.5-13b.jsonl "
                                      "--result-upload-file ./playground/data/eval/vizwiz/answers_upload/llava-v1.5-13b.json"),
    ("convert_mmbench_for_submission", "--annotation-file ./playground/data/eval/mmbench/mmbench_dev_20230712.tsv "
                                       "--result-dir ./playground/data/eval/mmbench/answers/mmbench_dev_20230712 "
                                       "--upload-dir ./playground/data/eval/mmbench/answers_upload/mmbench_dev_20230712 "
                                       "--experiment llava-v1.5-13b"),
    ("convert_seed_for_submission", "--annotation-file ./playground/data/eval/seed_bench/SEED-Bench.json "
                                    "--result-file ./playground/data/eval/seed_bench/answers/llava-v1.5-13b/merge.jsonl "
                                    "--result-upload-file ./playground/data/eval/seed_bench/answers_upload/llava-v1.5-13b.jsonl"),
    ("convert_mmvet_for_eval", "--src ./playground/data/eval/mm-vet/answers/llava-v1.5-13b.jsonl "
                               "--dst ./playground/data/eval/mm-vet/results/llava-v1.5-13b.json"),
    ("convert_answer_to_mme", "--experiment llava-v1.5-13b"),
    ("calculation_mme", "--results_dir answers/llava-v1.5-13b"),
    ("merge_answers", "--answers-dir ./playground/data/eval/seed_bench/answers/llava-v1.5-13b --num-chunks 8"),
    ("eval_gpt_review_bench", "--question playground/data/eval/llava-bench-in-the-wild/questions.jsonl "
                              "--context playground/data/eval/llava-bench-in-the-wild/context.jsonl "
                              "--rule llava/eval/table/rule.json "
                              "--answer-list playground/data/eval/llava-bench-in-the-wild/answers_gpt4.jsonl "
                              "playground/data/eval/llava-bench-in-the-wild/answers/llava-v1.5-13b.jsonl "
                              "--output playground/data/eval/llava-bench-in-the-wild/reviews/llava-v1.5-13b.jsonl"),
    ("summarize_gpt_review", "-f playground/data/eval/llava-bench-in-the-wild/reviews/llava-v1.5-13b.jsonl"),
    ("model_vqa_qbench", "--model-path liuhaotian/llava-v1.5-13b --image-folder ./playground/data/qbench/images_llvisionqa/ "
                         "--questions-file ./playground/data/eval/qbench/llvisionqa_dev.json "
                         "--answers-file ./playground/data/eval/qbench/llvisionqa_dev_answers.jsonl "
                         "--conv-mode llava_v1 --lang en"),
    # MM-Vet's own evaluator (mm-vet_evaluator.py), whose flags eval_mmvet keeps
    ("eval_mmvet", "--mmvet_path ./playground/data/eval/mm-vet --model llava-v1.5-13b "
                   "--result_path ./playground/data/eval/mm-vet/results --gpt_model gpt-4-0613 --num_run 1"),
]


@pytest.mark.parametrize("module, argv", UPSTREAM_COMMAND_LINES, ids=[m for m, _ in UPSTREAM_COMMAND_LINES])
def test_upstream_command_line_parses(module, argv):
    mod = importlib.import_module(f"llava.eval.{module}")
    parser = mod.build_parser()
    args = parser.parse_args(shlex.split(argv))
    for token in shlex.split(argv):
        if token.startswith("--"):
            assert getattr(args, parser._option_string_actions[token].dest) is not None


def test_science_qa_options_spelling():
    from llava.eval.eval_science_qa import build_parser

    assert build_parser().parse_args(["--base-dir", "x", "--result-file", "y"]).options == "ABCDE"


def test_eval_package_is_import_light():
    import subprocess
    import sys

    code = ("import sys, importlib.util; spec = importlib.util.spec_from_file_location('e', 'llava/eval/__init__.py');"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
