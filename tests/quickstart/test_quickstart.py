"""The quickstart pipeline in its fast form: every stage runs for real, at tiny sizes."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llava.data.synthetic import generate
from llava.quickstart.pipeline import (STAGE_VERSIONS, QuickstartConfig, cpu_has_native_bf16, longest_sample_tokens,
                                       parse_args, reuse_data_and_tower, run, train_args, train_loop_seconds,
                                       write_chart)
from llava.quickstart.stage0 import pretrain_tower
from tests.conftest import TINY_LLM


@pytest.fixture(scope="module")
def tiny_chatml_llm(tmp_path_factory, chatml_tokenizer_dir) -> str:
    folder = tmp_path_factory.mktemp("tiny_llm")
    tokenizer = AutoTokenizer.from_pretrained(chatml_tokenizer_dir)
    config = LlamaConfig(**TINY_LLM, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def stage_args(tmp_path: Path, cfg: QuickstartConfig, projector: str, stage: int) -> list[str]:
    """The training flags of one stage, with placeholder paths."""
    return train_args(cfg, projector, stage, "llm", tmp_path / "data", tmp_path / "tower", tmp_path / "out",
                      tmp_path / "stage1")


def test_fast_pipeline_with_compare(tmp_path, tiny_chatml_llm, capsys):
    out = tmp_path / "quickstart"
    report = run(parse_args(["--fast", "--compare", "--out", str(out), "--llm", tiny_chatml_llm]))
    by_name = {r["projector"]: r for r in report["results"]}
    assert list(by_name) == ["delta", "mlp2x_gelu", "avgpool"]
    # 56 px / patch 14 = 4 x 4 grid: all 16 patches for mlp2x_gelu, (4/2)^2 = 4 for delta and avgpool
    assert [by_name[p]["visual_tokens"] for p in by_name] == [4, 16, 4]
    for result in report["results"]:
        assert set(result["accuracy"]) >= {"color", "shape", "position", "count", "word", "overall"}
        assert 0 <= result["unanswered"] <= 10  # a random tiny LLM may answer with nothing
        assert result["stage1_seconds"] > 0 and result["stage2_seconds"] > 0
        # the training loop's own time (the Trainer's train_runtime) is part of the stage's wall time
        assert 0 < result["stage1_train_seconds"] < result["stage1_seconds"]
        assert 0 < result["stage2_train_seconds"] < result["stage2_seconds"]
        assert result["stage1_train_seconds_per_sample"] == pytest.approx(result["stage1_train_seconds"] / (2 * 4))
        assert (Path(result["checkpoint"]) / "config.json").is_file()
        answers = [json.loads(line) for line in (out / result["projector"] / "answers.jsonl").read_text().splitlines()]
        assert sorted(a["question_id"] for a in answers) == [f"eval-{i:06d}" for i in range(10)]
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"][0]["projector"] == "delta" and "heldout_accuracy" in saved["stage0"]
    assert (out / "results.png").stat().st_size > 1000
    # stage 1 runs in bf16 where the CPU does it natively (the default's auto), stage 2 in fp32
    stage1_bf16 = saved["settings"]["stage1_precision"] == "bf16"
    assert stage1_bf16 == cpu_has_native_bf16() and saved["settings"]["precision"] == "fp32"
    assert ("--bf16 True" in (out / "delta" / "stage1.log").read_text().splitlines()[0]) == stage1_bf16
    assert "--bf16" not in (out / "delta" / "stage2.log").read_text().splitlines()[0]
    # the settings say what ran: stage 2's learning rate, stage 0's precision
    stage2_cmd = (out / "delta" / "stage2.log").read_text().splitlines()[0].split()
    assert saved["settings"]["stage2_lr"] == float(stage2_cmd[stage2_cmd.index("--learning_rate") + 1])
    assert saved["settings"]["tower"]["bf16"] is False
    printed = capsys.readouterr().out
    assert "stage-1 time per sample, mlp2x_gelu / delta" in printed and "(training loop only)" in printed
    assert "python -m llava.serve.gradio_web_server --model-path" in printed
    assert f"chart: {out / 'results.png'}" in printed
    # the trained tower is an ordinary local vision-tower folder
    assert (out / "vision_tower" / "config.json").is_file() and (out / "vision_tower" / "model.safetensors").is_file()


def test_without_matplotlib_no_chart_is_claimed_and_an_old_one_is_removed(tmp_path, monkeypatch):
    report = {"settings": {"precision": "fp32", "stage1_precision": "fp32"}, "results": [
        {"projector": "delta", "visual_tokens": 16, "accuracy": {"color": 0.5, "overall": 0.5},
         "stage1_seconds": 10.0, "stage2_seconds": 5.0}]}
    path = tmp_path / "results.png"
    assert write_chart(report, path) == f"chart: {path}" and path.stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    text = write_chart(report, path)
    assert text.startswith("no chart (matplotlib is missing") and ".[bench]" in text
    assert not path.exists()  # the earlier run's chart would show other results


def test_caption_turn_prob_reaches_the_generated_stage2_data():
    assert QuickstartConfig().data_config().caption_turn_prob == 0.5
    assert parse_args(["--caption-turn-prob", "0.15"]).data_config().caption_turn_prob == 0.15
    with pytest.raises(ValueError, match=r"caption_turn_prob must be in \[0, 1\], got 2.0"):
        parse_args(["--caption-turn-prob", "2"]).data_config()


def test_a_bad_data_setting_fails_before_any_work(tmp_path):
    out = tmp_path / "quickstart"
    with pytest.raises(ValueError, match=r"caption_turn_prob must be in \[0, 1\], got -0.5"):
        run(parse_args(["--fast", "--out", str(out), "--caption-turn-prob", "-0.5"]))
    assert not out.exists()  # nothing generated, converted or trained


@pytest.mark.parametrize("flags, message", [
    (["--projectors", "foo"], r"--projectors must name some of delta, mlp2x_gelu, avgpool, got 'foo'"),
    (["--projectors", "delta,,avgpool"], r"--projectors must name some of .* got 'delta,,avgpool'"),
    (["--stage1-steps", "0"], r"--stage1-steps must be positive, got 0"),
    (["--stage2-steps", "0"], r"--stage2-steps must be positive, got 0"),
    (["--eval-batch-size", "0"], r"--eval-batch-size must be positive, got 0"),
    (["--threads", "0"], r"--threads must be positive, got 0"),
    (["--stage0-steps", "0"], r"--stage0-steps must be positive, got 0"),
    (["--stage1-lr", "-1"], r"--stage1-lr must be positive, got -1.0"),
    (["--scale-factor", "3"], r"--scale-factor \(3\) must divide the tower's grid side \(4 = --image-size 56"),
    (["--image-size", "60"], r"--image-size \(60\) must be a multiple of the patch size \(14\)"),
    (["--delta-layers", "9,10"], r"--delta-layers '9,10': the stage-0 tower has hidden states 0 to 2"),
    (["--delta-init-gain", "0"], r"--delta-init-gain must be positive, got 0.0"),
])
def test_bad_flags_fail_before_any_work_and_name_the_flag(tmp_path, flags, message):
    out = tmp_path / "quickstart"
    with pytest.raises(ValueError, match=message):
        run(parse_args(["--fast", "--out", str(out), *flags]))
    assert not out.exists()


def test_a_model_max_length_that_cuts_samples_fails_before_any_work(tmp_path, tiny_chatml_llm):
    """Stage 1 would train on cut captions and stage 2 stop at a chat that cannot fit."""
    from llava.data.preprocess import conversation_template, preprocess, preprocess_multimodal

    cfg = parse_args(["--fast", "--compare", "--llm", tiny_chatml_llm])
    longest = longest_sample_tokens(cfg, tiny_chatml_llm)
    assert {s["visual_tokens"] for s in longest.values()} == {16}  # mlp2x_gelu: the 4 x 4 grid
    # the bound holds every sample the generator drew
    generate(tmp_path / "data", cfg.data_config())
    tokenizer = AutoTokenizer.from_pretrained(tiny_chatml_llm)
    for stage, version in STAGE_VERSIONS.items():
        for sample in json.loads((tmp_path / "data" / f"stage{stage}.json").read_text()):
            turns = preprocess_multimodal(sample["conversations"], mm_use_im_start_end=False, version=version)
            ids = preprocess(turns, tokenizer, conversation_template(version)).input_ids
            assert len(ids) + ("image" in sample) * 15 <= longest[stage]["tokens"], sample["id"]
    need = longest[2]["tokens"]
    assert need > longest[1]["tokens"]
    out = tmp_path / "quickstart"
    with pytest.raises(ValueError, match=rf"^--model-max-length {need - 1} cannot hold the quickstart's samples: the "
                                         rf"longest stage-2 sample is {need} tokens \(16 visual tokens per image with "
                                         rf"mlp2x_gelu at --image-size 56 and --scale-factor 2, the rest text\); raise "
                                         rf"--model-max-length to at least {need}$"):
        run(parse_args(["--fast", "--compare", "--llm", tiny_chatml_llm, "--out", str(out),
                        "--model-max-length", str(need - 1)]))
    assert not out.exists()


def test_compare_and_projectors_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--compare", "--projectors", "avgpool"])
    assert "--compare runs every projector; --projectors picks some" in capsys.readouterr().err


def test_precision_reaches_both_training_stages(tmp_path):
    bf16 = parse_args(["--precision", "bf16"])
    for stage in (1, 2):
        args = stage_args(tmp_path, bf16, "delta", stage)
        assert args[args.index("--bf16") + 1] == "True"
    fp32 = parse_args(["--precision", "fp32", "--stage1-precision", "fp32"])
    assert not any("--bf16" in stage_args(tmp_path, fp32, "delta", s) for s in (1, 2))
    assert parse_args([]).resolved_precision() == "fp32"
    auto = parse_args(["--precision", "auto"])
    assert auto.resolved_precision() == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="precision must be auto, bf16 or fp32, got 'fp8'"):
        QuickstartConfig(precision="fp8").resolved_precision()


def test_stage1_precision_and_its_default_steps(tmp_path):
    def stage1(cfg):
        args = stage_args(tmp_path, cfg, "delta", 1)
        return "--bf16" in args, int(args[args.index("--max_steps") + 1])

    default = parse_args([])
    native = cpu_has_native_bf16()
    assert default.resolved_precision() == "fp32"  # stage 0 and stage 2 stay fp32
    assert default.resolved_stage1_precision() == ("bf16" if native else "fp32")
    assert stage1(default) == ((True, 250) if native else (False, 200))
    assert "--bf16" not in stage_args(tmp_path, default, "delta", 2)
    assert stage1(parse_args(["--stage1-precision", "fp32"])) == (False, 200)  # the earlier all-fp32 default
    forced = parse_args(["--stage1-precision", "bf16"])
    assert stage1(forced) == (True, 250) and "--bf16" not in stage_args(tmp_path, forced, "delta", 2)
    assert stage1(parse_args(["--stage1-precision", "bf16", "--stage1-steps", "120"])) == (True, 120)
    assert stage1(parse_args(["--precision", "bf16"])) == (True, 250)  # auto follows an all-bf16 run
    assert stage1(parse_args(["--precision", "bf16", "--stage1-precision", "fp32"])) == (False, 200)
    # auto looks at the CPU only when the stages run on it
    assert stage1(parse_args(["--device", "cuda"])) == (False, 200)
    with pytest.raises(SystemExit):
        parse_args(["--stage1-precision", "fp16"])
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="stage1_precision must be auto, bf16 or fp32, got 'fp16'"):
        run(QuickstartConfig(out=str(out), stage1_precision="fp16"))
    assert not out.exists()


def test_delta_init_gain_reaches_both_stages_of_delta_only(tmp_path):
    default = parse_args([])
    assert default.delta_init_gain == 64.0
    for stage in (1, 2):
        args = stage_args(tmp_path, default, "delta", stage)
        assert args[args.index("--mm_delta_init_gain") + 1] == "64.0"
        assert "--mm_delta_init_gain" not in stage_args(tmp_path, default, "mlp2x_gelu", stage)
        assert "--mm_delta_init_gain" not in stage_args(tmp_path, default, "avgpool", stage)
    released = parse_args(["--delta-init-gain", "1"])
    args = stage_args(tmp_path, released, "delta", 1)
    assert args[args.index("--mm_delta_init_gain") + 1] == "1.0"


def test_device_moves_training_and_evaluation(tmp_path, monkeypatch):
    cpu = parse_args([])
    assert cpu.device == "cpu"
    for stage in (1, 2):
        args = stage_args(tmp_path, cpu, "delta", stage)
        assert args[args.index("--use_cpu") + 1] == "True"
    cuda = parse_args(["--device", "cuda", "--stage1-steps", "700", "--stage2-steps", "100"])
    assert (cuda.device, cuda.stage1_steps, cuda.stage2_steps) == ("cuda", 700, 100)
    for stage in (1, 2):
        args = stage_args(tmp_path, cuda, "delta", stage)
        assert "--use_cpu" not in args  # the Trainer then takes the GPU
        assert args[args.index("--max_steps") + 1] == ("700" if stage == 1 else "100")
    with pytest.raises(SystemExit):
        parse_args(["--device", "tpu"])
    # no GPU: a clear error before any data or stage 0 is made
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "never"
    with pytest.raises(RuntimeError, match="--device cuda was asked for, but torch .* sees no CUDA GPU"):
        run(parse_args(["--fast", "--device", "cuda", "--out", str(out)]))
    assert not out.exists()


def test_stage2_micro_batch_splits_stage2_steps_only(tmp_path):
    def batching(cfg, stage):
        args = stage_args(tmp_path, cfg, "delta", stage)
        return args[args.index("--per_device_train_batch_size") + 1], args[args.index("--gradient_accumulation_steps") + 1]

    default = parse_args([])  # 16 chats a step either way
    assert batching(default, 1) == ("16", "1") and batching(default, 2) == ("8", "2")
    micro = parse_args(["--stage2-micro-batch", "4"])
    assert batching(micro, 1) == ("16", "1") and batching(micro, 2) == ("4", "4")
    assert batching(parse_args(["--stage2-micro-batch", "16"]), 2) == ("16", "1")
    assert batching(parse_args(["--stage2-micro-batch", "32"]), 2) == ("16", "1")  # at most the whole batch
    assert batching(parse_args(["--fast"]), 2) == ("2", "2")  # the fast pipeline runs the accumulation path
    assert "--group_by_modality_length" in stage_args(tmp_path, micro, "delta", 2)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=r"--stage2-micro-batch \(0\) must divide"):
        parse_args(["--stage2-micro-batch", "0"]).stage2_batching()
    with pytest.raises(ValueError, match=r"--stage2-micro-batch \(5\) must divide --batch-size \(16\)"):
        run(parse_args(["--stage2-micro-batch", "5", "--out", str(out)]))
    assert not out.exists()


def test_fast_pipeline_in_bf16(tmp_path, tiny_chatml_llm, capsys, monkeypatch):
    """Also from another folder than the repository, with a relative --out (the stages run from the
    repository, so the paths they get must not be relative)."""
    out = tmp_path / "quickstart_bf16"
    monkeypatch.chdir(tmp_path)
    report = run(parse_args(["--fast", "--projectors", "delta", "--precision", "bf16", "--out", "quickstart_bf16",
                             "--llm", tiny_chatml_llm]))
    assert report["settings"]["precision"] == "bf16"
    (result,) = report["results"]
    assert result["projector"] == "delta" and result["visual_tokens"] == 4
    for stage in ("stage1", "stage2"):  # --fast finetunes with LoRA, then merges
        log = (out / "delta" / f"{stage}.log").read_text()
        assert "--bf16 True" in log.splitlines()[0] and "trainable parameters kept in fp32" in log
    answers = (out / "delta" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 10
    assert "training precision: bf16" in capsys.readouterr().out


def test_a_failed_stage_is_named_by_its_module(tmp_path):
    from llava.quickstart.pipeline import _run

    with pytest.raises(RuntimeError, match=r"^llava\.no_such_stage failed with exit code 1; log: .*stage.log\n"):
        _run([sys.executable, "-m", "llava.no_such_stage"], tmp_path / "stage.log")


def test_train_loop_seconds_reads_the_trainer_state_and_names_a_bad_file(tmp_path):
    state = {"log_history": [{"loss": 2.0, "step": 10}, {"train_runtime": 12.5, "step": 20}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    assert train_loop_seconds(tmp_path) == 12.5
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"loss": 2.0}]}))
    with pytest.raises(RuntimeError, match="trainer_state.json has no train_runtime entry"):
        train_loop_seconds(tmp_path)
    with pytest.raises(RuntimeError, match=f"cannot read the training time from {tmp_path / 'missing'}"):
        train_loop_seconds(tmp_path / "missing")


def make_data_and_tower(cfg: QuickstartConfig) -> None:
    """What a run without --reuse leaves in ``cfg.out`` before stage 1."""
    out = Path(cfg.out)
    generate(out / "data", cfg.data_config())
    pretrain_tower(out / "data", out / "vision_tower", cfg.tower, progress=False)


def test_reuse_takes_the_data_and_tower_of_an_earlier_run(tmp_path, tiny_chatml_llm, capsys):
    out = tmp_path / "quickstart"
    flags = ["--fast", "--out", str(out), "--llm", tiny_chatml_llm]
    make_data_and_tower(parse_args(flags))
    tower = out / "vision_tower" / "model.safetensors"
    made = {path: path.stat().st_mtime_ns for path in (tower, out / "data" / "meta.json", out / "data" / "stage1.json")}
    report = run(parse_args([*flags, "--reuse", "--projectors", "avgpool"]))
    assert report["stage0"]["reused"] is True and report["settings"]["reuse"] is True
    assert {path: path.stat().st_mtime_ns for path in made} == made  # neither made again
    (result,) = report["results"]
    assert result["projector"] == "avgpool" and result["visual_tokens"] == 4
    assert len((out / "avgpool" / "answers.jsonl").read_text().splitlines()) == 10
    log = (out / "avgpool" / "stage1.log").read_text().splitlines()[0]
    assert f"--vision_tower {out / 'vision_tower'}" in log
    printed = capsys.readouterr().out
    assert "reusing the synthetic data" in printed and "data and stage-0 tower reused from an earlier run" in printed


def test_reuse_refuses_what_was_made_otherwise_and_names_it(tmp_path):
    out = tmp_path / "quickstart"
    flags = ["--fast", "--out", str(out)]
    with pytest.raises(FileNotFoundError, match=r"--reuse: no dataset at .*data \(meta.json is missing\); run without"):
        run(parse_args([*flags, "--reuse"]))
    make_data_and_tower(parse_args(flags))
    # every check fails before any training: the stage folders are never made
    with pytest.raises(ValueError, match=r"dataset in .* other settings \(num_eval 10 there, 12 asked\)"):
        run(parse_args([*flags, "--reuse", "--num-eval", "12"]))
    with pytest.raises(ValueError, match=r"dataset in .* other settings \(caption_turn_prob 0.5 there, 0.15 asked\)"):
        run(parse_args([*flags, "--reuse", "--caption-turn-prob", "0.15"]))
    with pytest.raises(ValueError, match=r"stage-0 tower in .* other settings \(steps 3 there, 4 asked\)"):
        run(parse_args([*flags, "--reuse", "--stage0-steps", "4"]))
    with pytest.raises(ValueError, match=r"stage-0 tower in .* other settings \(token_heads 0.0 there, 0.5 asked\)"):
        run(parse_args([*flags, "--reuse", "--stage0-token-heads", "0.5"]))
    meta_file = out / "data" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "format_version": 0}))  # drawn by an older generator
    with pytest.raises(ValueError, match=r"dataset in .* other settings \(format_version 0 there, 1 now\)"):
        run(parse_args([*flags, "--reuse"]))
    meta_file.write_text(json.dumps(meta))
    report_file = out / "vision_tower" / "stage0_report.json"
    report = json.loads(report_file.read_text())
    assert report["data"] == json.loads((out / "data" / "meta.json").read_text())["config"]
    report_file.write_text(json.dumps({**report, "data": {**report["data"], "seed": 1}}))
    with pytest.raises(ValueError, match="the tower was trained on another dataset than the one in"):
        run(parse_args([*flags, "--reuse"]))
    # a tower made before stage 0 had per-token heads was made without them: still reusable
    older = {**report, "settings": {k: v for k, v in report["settings"].items() if k != "token_heads"}}
    report_file.write_text(json.dumps(older))
    cfg = parse_args(flags)
    tower_config = replace(cfg.tower, bf16=cfg.resolved_precision() == "bf16")
    reused = reuse_data_and_tower(out / "data", out / "vision_tower", cfg.data_config(), tower_config)
    assert reused == {**older, "reused": True}
    report_file.write_text(json.dumps(report))
    # A missing image is named, even when a stray image keeps the count.
    eval_images = out / "data" / "images" / "eval"
    (eval_images / "000003.png").rename(eval_images / "copy.png")
    with pytest.raises(FileNotFoundError, match=r"dataset in .* is incomplete: 1 file\(s\) missing "
                                                r"\(images/eval/000003.png\); run without --reuse"):
        run(parse_args([*flags, "--reuse"]))
    (out / "data" / "stage2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"dataset in .* is incomplete: 1 file\(s\) missing \(stage2.json\)"):
        run(parse_args([*flags, "--reuse"]))
    assert not (out / "delta").exists()


def test_stage0_report_marks_a_finished_tower_only(tmp_path):
    cfg = parse_args(["--fast", "--out", str(tmp_path)])
    make_data_and_tower(cfg)
    report_file = tmp_path / "vision_tower" / "stage0_report.json"
    assert report_file.is_file()
    (tmp_path / "data" / "stage0.json").write_text("not json")  # the next stage 0 fails early
    with pytest.raises(ValueError):
        pretrain_tower(tmp_path / "data", tmp_path / "vision_tower", cfg.tower, progress=False)
    assert not report_file.exists()  # the old report no longer vouches for the folder


def test_stage2_lr_schedule_is_constant_by_default_and_stage1_keeps_cosine(tmp_path):
    """The flags give the Trainer's real schedulers: stage 2 holds its peak rate on every step by
    default; stage 1 (and stage 2 with --stage2-lr-schedule cosine) starts at 0 and decays."""
    import torch
    from transformers import get_scheduler

    from llava.train.arguments import parse_arguments

    def rates(cfg: QuickstartConfig, stage: int) -> list[float]:
        _, _, training = parse_arguments(stage_args(tmp_path, cfg, "delta", stage))
        steps = training.max_steps
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training.learning_rate)
        scheduler = get_scheduler(training.lr_scheduler_type, optimizer,
                                  num_warmup_steps=training.get_warmup_steps(steps), num_training_steps=steps)
        out = []
        for _ in range(steps):
            out.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return out

    default = parse_args([])
    assert default.stage2_lr_schedule == "constant"
    assert rates(default, 2) == [1e-4] * default.stage2_steps
    stage1 = rates(default, 1)
    assert len(stage1) == default.stage1_step_count() and stage1[0] == 0.0
    assert max(stage1) == pytest.approx(default.stage1_lr) and stage1[-1] < 0.01 * default.stage1_lr
    cosine = rates(parse_args(["--stage2-lr-schedule", "cosine"]), 2)
    assert cosine[0] == 0.0 and cosine[1] == pytest.approx(1e-4) and cosine[-1] < 1e-4 / 50
    with pytest.raises(ValueError, match="stage2_lr_schedule must be 'constant' or 'cosine', got 'linear'"):
        run(QuickstartConfig(out=str(tmp_path / "never"), stage2_lr_schedule="linear"))
    assert not (tmp_path / "never").exists()
