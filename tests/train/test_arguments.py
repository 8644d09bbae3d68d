"""The training command line: upstream's names, transformers-5 aliases, and every recipe's arguments."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from llava.train.arguments import ARGUMENT_CLASSES, TrainingArguments, make_parser, parse_arguments
from tests.train.conftest import config_only_llm

REPO = Path(__file__).resolve().parents[2]
TRAIN_ENTRY = re.compile(r"(llava/train/train(?:_mem)?\.py|-m\s+llava\.train\.train(?:_mem)?)")


def training_recipes() -> list[Path]:
    """Every shell script under scripts/ that launches training (scripts/v1_5/eval/ belongs to eval)."""
    scripts = sorted(REPO.glob("scripts/*.sh")) + sorted(REPO.glob("scripts/v1_5/*.sh"))
    return [p for p in scripts if TRAIN_ENTRY.search(p.read_text())]


def recipe_arguments(script: Path) -> list[str]:
    """The training arguments of a recipe, expanded by bash as it would (variables with defaults,
    quotes), without running anything else of the script."""
    text = script.read_text().replace("\\\n", " ")
    assignments = [line for line in text.splitlines() if re.match(r"^\s*(export\s+)?[A-Za-z_][A-Za-z0-9_]*=", line)]
    commands = [line for line in text.splitlines() if TRAIN_ENTRY.search(line) and not line.lstrip().startswith("#")]
    assert len(commands) == 1, f"{script}: expected one training command, found {len(commands)}"
    tail = TRAIN_ENTRY.split(commands[0], maxsplit=1)[-1]
    program = "\n".join(assignments + [f"printf '%s\\0' {tail}"])
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True, cwd=REPO,
                         env={"PATH": "/usr/bin:/bin"})
    return [a for a in out.stdout.split("\0") if a]


def build_offline(argv: list[str]):
    """Parses with the real parser (unknown arguments and bad values fail), then builds the three
    dataclasses. Hardware-bound settings a CPU machine rejects (tf32, the DeepSpeed launch) are
    checked separately and left out of the TrainingArguments built here."""
    namespace = make_parser().parse_args(argv)
    built = []
    for cls in ARGUMENT_CLASSES:
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls) if f.init}
        if cls is TrainingArguments:
            if values["deepspeed"]:
                config = REPO / values["deepspeed"]
                assert config.is_file(), f"DeepSpeed config {config} is missing"
                json.loads(config.read_text())
            values.update(deepspeed=None, tf32=None, use_cpu=True, report_to="none")
        built.append(cls(**values))
    return built


def test_recipes_exist():
    names = {p.name for p in training_recipes()}
    assert {"pretrain.sh", "finetune.sh", "finetune_lora.sh", "pretrain_delta.sh", "finetune_delta.sh",
            "finetune_lora_delta.sh", "finetune_task.sh", "finetune_task_lora.sh", "finetune_task_delta.sh",
            "finetune_task_lora_delta.sh"} <= names


@pytest.mark.parametrize("script", training_recipes(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_argument_parses(script):
    from llava.train.train import check_stage_flags

    argv = recipe_arguments(script)
    model_args, data_args, training_args = build_offline(argv)
    check_stage_flags(model_args, training_args)  # what train() checks before reading anything
    assert model_args.mm_vision_select_layer == -2 and not model_args.mm_use_im_start_end
    assert training_args.model_max_length == 2048 and training_args.activation_checkpointing
    assert training_args.warmup_steps == pytest.approx(0.03)  # --warmup_ratio 0.03
    assert training_args.eval_strategy == "no"  # --evaluation_strategy "no"
    assert training_args.bf16 and "--tf32" in argv
    if "delta" in script.name:
        assert model_args.mm_projector_type == "delta" and model_args.scale_factor == 2
    pretrain = "pretrain" in script.name
    if "task" in script.name:  # on from a trained LLaVA checkpoint: its projector, no stage-1 file
        assert model_args.pretrain_mm_mlp_adapter is None
        assert model_args.model_name_or_path in ("liuhaotian/llava-v1.5-13b", "./checkpoints/llava-v1.5-7b-delta")
    elif not pretrain:
        assert model_args.pretrain_mm_mlp_adapter.endswith("-pretrain/mm_projector.bin")
    assert model_args.tune_mm_mlp_adapter == pretrain
    assert model_args.version == ("plain" if pretrain else "v1")
    assert argv[argv.index("--deepspeed") + 1].endswith("zero2.json" if pretrain else "zero3.json")
    if "lora" in script.name:
        assert training_args.lora_enable and training_args.learning_rate == 2e-4
        assert training_args.lora_r == 128 and training_args.mm_projector_lr == 2e-5
    elif pretrain:  # the paper's stage 1: 32 x 8 GPUs = 256, lr 1e-3
        assert training_args.learning_rate == 1e-3 and training_args.per_device_train_batch_size == 32
    else:  # stage 2: 16 x 8 = 128, lr 2e-5, pad, modality grouping
        assert training_args.learning_rate == 2e-5 and training_args.per_device_train_batch_size == 16
        assert data_args.image_aspect_ratio == "pad" and training_args.group_by_modality_length


def launcher_arguments(tmp_path, script: str, **env: str) -> list[str]:
    """Runs a recipe with a stand-in `deepspeed` on PATH; returns the arguments it was given."""
    fake = tmp_path / "bin"
    fake.mkdir(parents=True)
    (fake / "deepspeed").write_text("#!/bin/bash\nprintf '%s\\n' \"$@\" > \"$ARGS_OUT\"\n")
    (fake / "deepspeed").chmod(0o755)
    out = tmp_path / "args.txt"
    subprocess.run(["bash", script], cwd=REPO, check=True,
                   env={"PATH": f"{fake}:/usr/bin:/bin", "ARGS_OUT": str(out), **env})
    return out.read_text().splitlines()


def test_recipe_multinode_hostfile_reaches_the_launcher(tmp_path):
    """HOSTFILE=... puts --hostfile before the script, as `deepspeed --hostfile` expects."""
    argv = launcher_arguments(tmp_path, "scripts/v1_5/finetune_delta.sh", HOSTFILE="scripts/hostfile.example")
    assert argv[:3] == ["--hostfile", "scripts/hostfile.example", "llava/train/train_mem.py"]
    build_offline(argv[3:])
    # LAUNCHER picks DeepSpeed's launcher (pdsh by default), for every recipe.
    for recipe in sorted((REPO / "scripts/v1_5").glob("*.sh")):
        argv = launcher_arguments(tmp_path / recipe.stem, str(recipe.relative_to(REPO)),
                                  HOSTFILE="scripts/hostfile.example", LAUNCHER="openmpi")
        assert argv[:5] == ["--hostfile", "scripts/hostfile.example", "--launcher", "openmpi",
                            "llava/train/train_mem.py"], recipe.name


def test_task_recipe_takes_the_data_checkpoint_and_output_from_the_environment(tmp_path):
    argv = launcher_arguments(tmp_path, "scripts/v1_5/finetune_task_delta.sh", DATA_PATH="/data/my task.json",
                              IMAGE_FOLDER="/data/images", MODEL="/ckpt/delta-llava", OUTPUT_DIR="/ckpt/mine")
    model_args, data_args, training_args = build_offline(argv[1:])
    assert (data_args.data_path, data_args.image_folder) == ("/data/my task.json", "/data/images")
    assert model_args.model_name_or_path == "/ckpt/delta-llava" and training_args.output_dir == "/ckpt/mine"


def test_aliases_and_upstream_defaults(tmp_path):
    model_args, data_args, training_args = parse_arguments([
        "--output_dir", str(tmp_path), "--evaluation_strategy", "steps", "--warmup_ratio", "0.1", "--use_cpu", "True",
        "--report_to", "none"])
    assert training_args.eval_strategy == "steps" and training_args.warmup_steps == pytest.approx(0.1)
    assert training_args.optim == "adamw_torch" and training_args.remove_unused_columns is False
    assert training_args.model_max_length == 512 and training_args.bits == 16 and training_args.lora_r == 64
    assert model_args.mm_use_im_patch_token is True and model_args.mm_vision_select_layer == -1  # upstream's
    assert model_args.scale_factor is None  # None: the LlavaConfig default applies
    assert data_args.skip_bad_samples is False and data_args.image_aspect_ratio == "square"
    assert data_args.check_images is True  # every image is decoded before training unless asked not to
    assert (training_args.lora_alpha, training_args.lora_dropout) == (16, 0.05)  # upstream's
    _, _, training_args = parse_arguments(["--output_dir", str(tmp_path), "--eval_strategy", "no", "--use_cpu",
                                           "True", "--report_to", "none"])
    assert training_args.eval_strategy == "no"


@pytest.mark.parametrize("bad, match", [
    (["--bits", "3"], "--bits"),
    (["--warmup_ratio", "0.1", "--warmup_steps", "5"], "not both"),
    (["--lora_bias", "some"], "lora_bias"),
    (["--quant_type", "int4"], r"--quant_type must be nf4 or fp4, got 'int4'"),
    (["--warmup_ratio", "1"], r"--warmup_ratio must be in \[0, 1\), got 1"),  # 1 would mean one warm-up step
    (["--image_aspect_ratio", "padd"], r"--image_aspect_ratio must be 'pad' or 'square' .*got 'padd'"),
    (["--model_max_length", "0"], r"--model_max_length must be a positive number of tokens, got 0"),
    (["--max_tokenization_mismatch_ratio", "-1"], r"--max_tokenization_mismatch_ratio .* in \[0, 1\]; got -1"),
    (["--max_tokenization_mismatch_ratio", "1.5"], r"--max_tokenization_mismatch_ratio .* in \[0, 1\]; got 1.5"),
    (["--lora_enable", "True", "--lora_r", "0"], r"--lora_r must be a positive rank, got 0"),
    (["--bits", "4"], r"--bits 4 loads the LLM quantized, which trains only through LoRA adapters: add "
                      r"--lora_enable True"),
    (["--bits", "8", "--tune_mm_mlp_adapter", "True"], r"--bits 8 loads the LLM quantized"),
])
def test_invalid_values_are_named(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        parse_arguments(["--output_dir", str(tmp_path), "--use_cpu", "True", "--report_to", "none", *bad])


@pytest.mark.parametrize("content, match", [
    ('{"zero_optimization": {"stage": 2,}', r"Cannot read --deepspeed: .*ds\.json is not valid JSON "
                                            r"\(Expecting property name .*: line 1 column 35\)"),
    ("[1, 2]", r"Cannot read --deepspeed .*ds\.json: expected a JSON object, got a JSON list"),
    (None, r"--deepspeed .*ds\.json is a directory; pass a DeepSpeed config file in it"),
])
def test_unreadable_deepspeed_config_is_named_with_its_position(tmp_path, content, match):
    """Before: a JSONDecodeError without the file's name, or accelerate's IsADirectoryError."""
    config = tmp_path / "ds.json"
    if content is None:
        config.mkdir()
    else:
        config.write_text(content)
    with pytest.raises(ValueError, match=match):
        parse_arguments(["--output_dir", str(tmp_path), "--use_cpu", "True", "--report_to", "none",
                         "--deepspeed", str(config)])
    with pytest.raises(FileNotFoundError, match=r"--deepspeed config file not found: .*zero9\.json"):
        parse_arguments(["--output_dir", str(tmp_path), "--deepspeed", str(tmp_path / "zero9.json")])


def test_unknown_version_is_refused_before_anything_loads(tmp_path):
    """Before: a typo trained with vicuna_v1 and was recorded as its conv_mode."""
    from llava.train.train import train

    with pytest.raises(ValueError, match=r"--version 'plian' names no conversation template; known: chatml, "):
        train(argv=["--model_name_or_path", str(tmp_path / "no-llm"), "--data_path", str(tmp_path / "no.json"),
                    "--output_dir", str(tmp_path / "out"), "--version", "plian", "--use_cpu", "True",
                    "--report_to", "none"])


def test_model_paths_are_found_before_the_data_is_read(tmp_path, train_tower):
    """A wrong LLM or tower path stops the run at once (the data file does not exist here), and
    nothing is downloaded; before, the LLM's came from the hub client after the data check."""
    from llava.train.train import train

    def run(model, tower=None):
        train(argv=["--model_name_or_path", model, "--data_path", str(tmp_path / "no.json"), "--output_dir",
                    str(tmp_path / "out"), "--use_cpu", "True", "--report_to", "none",
                    *(["--vision_tower", tower] if tower else [])])

    with pytest.raises(FileNotFoundError, match=r"--model_name_or_path /nonexistent/llm is not a local folder "
                                                r"\(nothing is downloaded\)"):
        run("/nonexistent/llm")
    with pytest.raises(FileNotFoundError, match=r"--model_name_or_path no-such-org/no-llm is not a local folder, and "
                                                r"the Hugging Face cache has no copy .*`hf download no-such-org/no-llm`"):
        run("no-such-org/no-llm")
    with pytest.raises(FileNotFoundError, match=r"--model_name_or_path .* has no config.json"):
        run(str(tmp_path))
    llm = config_only_llm(tmp_path / "llm")
    with pytest.raises(FileNotFoundError, match=r"Vision tower '.*no-tower' is neither a local folder with a "
                                                r"config.json nor in the local Hugging Face cache"):
        run(llm, str(tmp_path / "no-tower"))
    with pytest.raises(FileNotFoundError, match=r"Data file not found: .*no\.json"):
        run(llm, train_tower)


def test_image_samples_without_a_vision_tower_are_refused_before_the_model_loads(tmp_path):
    """The LLM folder here holds only a config.json: the data check must stop the run first."""
    from PIL import Image

    from llava.train.train import train

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "images" / "a.png")
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": "a", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "Red."}]}]))
    with pytest.raises(ValueError, match=r"1 samples in .*data\.json have images but no --vision_tower is given"):
        train(argv=["--model_name_or_path", config_only_llm(tmp_path / "llm"), "--data_path", str(data),
                    "--image_folder", str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"),
                    "--version", "v1", "--use_cpu", "True", "--report_to", "none"])


@pytest.mark.parametrize("bits", ["4", "8"])
def test_qlora_under_zero3_is_refused_before_anything_loads(tmp_path, bits):
    """bitsandbytes cannot be partitioned by ZeRO-3: the run says to use zero2.json, before it reads
    the data or the model (neither exists here)."""
    from transformers.integrations import is_deepspeed_zero3_enabled
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from llava.train.train import train

    try:
        with pytest.raises(ValueError, match=rf"--bits {bits} \(QLoRA\) cannot run under ZeRO-3 \(--deepspeed "
                                             rf".*zero3.json\).*Use --deepspeed ./scripts/zero2.json"):
            train(argv=["--model_name_or_path", str(tmp_path / "no-llm"), "--data_path", str(tmp_path / "no.json"),
                        "--output_dir", str(tmp_path / "out"), "--bits", bits, "--lora_enable", "True",
                        "--deepspeed", str(REPO / "scripts/zero3.json"), "--use_cpu", "True", "--report_to", "none"])
    finally:
        unset_hf_deepspeed_config()  # the arguments registered ZeRO-3 for this process
    assert not is_deepspeed_zero3_enabled()


@pytest.mark.parametrize("flags, match", [
    ([], r"--tune_mm_mlp_adapter True trains only the projector, and there is none without --vision_tower"),
    (["--vision_tower", "tower", "--freeze_mm_mlp_adapter", "True"],
     r"--tune_mm_mlp_adapter True trains only the projector and --freeze_mm_mlp_adapter True freezes it: nothing "
     r"would train"),
    (["--vision_tower", "tower", "--lora_enable", "True"],
     r"LoRA adapters of --lora_enable True would stay frozen and not be saved: drop --lora_enable for stage 1"),
])
def test_contradictory_stage1_flags_are_refused_before_anything_loads(tmp_path, flags, match):
    """Before: the whole LLM trained and an empty projector file was saved (no tower), autograd failed
    at the first step (projector frozen), or LoRA adapters were added, frozen and dropped. Neither the
    model nor the data exists here: the flags are checked first."""
    from llava.train.train import train

    with pytest.raises(ValueError, match=match):
        train(argv=["--model_name_or_path", str(tmp_path / "no-llm"), "--data_path", str(tmp_path / "no.json"),
                    "--output_dir", str(tmp_path / "out"), "--tune_mm_mlp_adapter", "True", *flags,
                    "--use_cpu", "True", "--report_to", "none"])
    assert not (tmp_path / "out").exists()


def test_unknown_argument_is_an_error(tmp_path):
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--output_dir", str(tmp_path), "--no_such_flag", "1"])


def test_recipe_extraction_matches_shlex():
    """Guards the helper: for a recipe without variables bash's expansion equals shlex's split."""
    script = REPO / "scripts/v1_5/pretrain.sh"
    argv = recipe_arguments(script)
    assert argv[:2] == ["--deepspeed", "./scripts/zero2.json"]
    assert argv[-2:] == ["--report_to", "wandb"]
    text = script.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if "train_mem.py" in ln)
    assert shlex.split(line.split("train_mem.py", 1)[1].replace('"${REPORT_TO:-wandb}"', "wandb")) == argv
