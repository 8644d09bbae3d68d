"""Speed of every projector, side by side, through one code path: inference and training.

For each projector setting (``mlp2x_gelu`` @ full grid, ``avgpool`` s=2, ``delta`` s=2/3/4) a
LLaVA model with random weights is built from a config, then measured the way users run it:

Inference (``model.generate(input_ids, images=...)``, greedy, forced answer length):
    - time to first token: from the ``generate`` call until the first token's logits exist
      (vision tower + projector + splice + LLM prefill), recorded by a logits processor;
    - short answers (``short_new_tokens`` <= 4, VQA-style): end-to-end latency, samples/s;
    - long answers (``long_new_tokens``, 128, forced by ``min_new_tokens``): end-to-end latency,
      samples/s, and decode tokens/s = batch x (new tokens - 1) / (last logits - first logits);
    - vision-tower-only and projector-only time on the same batch, and the projector's share of
      the time to first token;
    - peak memory.
Training (AdamW; gradient checkpointing on, as the recipes, unless ``--gradient-checkpointing``):
    - stage 1: LLM and tower frozen, projector trainable (``tune_mm_mlp_adapter``);
    - stage 2: LLM and projector trainable, tower frozen: full finetuning where it fits the device,
      else the LoRA recipe (r=128, alpha=256 on every LLM linear layer) -- the output says which.
    Samples/s of one optimizer step (``stage1_batch`` / ``train_batch`` samples: the recipes' 32 and
    16 per GPU on ``7b``) of caption / ``text_tokens`` text tokens plus the visual tokens; peak
    memory. Gradient checkpointing is on as in the recipes, or ``auto`` (off where the step fits).

Timing: ``time.perf_counter()``, after ``torch.cuda.synchronize()`` on CUDA (see ``Clock``).
Each figure is the median of the timed repeats, after untimed warm-up runs.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from transformers import CLIPVisionConfig, LogitsProcessor, LogitsProcessorList

from llava.bench.machine import Clock, PeakMemory, describe_machine, describe_versions, load_average
from llava.bench.presets import Preset, Setting
from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.attention import select_attn_implementation
from llava.model.multimodal_encoder.clip_encoder import build_image_processor

logger = logging.getLogger(__name__)

RANDOM_WEIGHTS_NOTE = ("All weights are random (built from configs, nothing loaded): speed does not depend on "
                       "weight values, and answers are forced to a fixed length, so every setting does the same work.")
TIMING_NOTE = ("Wall clock (time.perf_counter), after torch.cuda.synchronize() on CUDA; median of the timed repeats "
               "after untimed warm-up runs.")
BOS_ID, PAD_ID = 1, 0

#: Speed targets of the issue, for ``delta`` @ s=2 against ``mlp2x_gelu`` @ full grid in the same
#: run: (metric, threshold, what). Metrics are keys of ``ratios`` (see :func:`compute_ratios`);
#: ``projector_share`` is a fraction of the time to first token, at most the threshold.
TARGETS: dict[str, tuple[tuple[str, float, str], ...]] = {
    "7b": (
        ("short_throughput", 1.6, "short-answer throughput >= 1.6x (paper: up to 1.55x)"),
        ("ttft", 2.5, "time to first token >= 2.5x faster"),
        ("stage1", 4.5, "stage-1 training samples/s >= 4.5x (paper: 4-5x)"),
        ("stage2", 1.5, "stage-2 training samples/s >= 1.5x (paper: > 1.5x)"),
        ("projector_share", 0.05, "projector <= 5% of the time to first token"),
    ),
    "cpu": (
        ("stage1", 3.5, "stage-1 training samples/s >= 3.5x"),
        ("ttft", 2.5, "time to first token >= 2.5x faster"),
    ),
}
TARGET_SUBJECT = Setting("delta", 2)


# ----------------------------------------------------------------------------------------------
# Models and inputs
# ----------------------------------------------------------------------------------------------


def write_tower_folder(folder: str | Path, tower: dict) -> str:
    """A vision-tower folder with only config.json and the preprocessor: the tower is random-init.

    No weight file, so the tower is initialised where the model is built (on the GPU for ``7b``)
    instead of being written, read and copied.
    """
    config = CLIPVisionConfig(**tower)
    config.save_pretrained(folder)
    build_image_processor(str(folder), config).save_pretrained(folder)
    return str(folder)


def llava_config(preset: Preset, setting: Setting, tower_dir: str) -> LlavaConfig:
    """The model config of one setting. No EOS token, so every answer has the forced length."""
    return LlavaConfig(
        **preset.llm,
        bos_token_id=BOS_ID,
        eos_token_id=None,
        pad_token_id=PAD_ID,
        mm_vision_tower=tower_dir,
        mm_hidden_size=preset.tower["hidden_size"],
        mm_projector_type=setting.projector,
        scale_factor=setting.scale_factor,
        mm_delta_layers=preset.delta_layers,
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        use_mm_proj=True,
    )


def build_model(config: LlavaConfig, device: torch.device, dtype: torch.dtype, attn: str,
                seed: int = 0) -> LlavaLlamaForCausalLM:
    """Random-init model built directly on ``device`` in ``dtype`` (no CPU init, no copy)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaLlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn)
    model.get_vision_tower().load_model()  # the folder has no weights: keeps the random init
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    return model.eval()


def make_inputs(config: LlavaConfig, preset: Preset, batch: int, device: torch.device, dtype: torch.dtype,
                seed: int = 0, *, caption: bool = False) -> dict:
    """``batch`` samples: BOS, one image token, then text.

    Default (a prompt, or a stage-2 sample): ``text_tokens`` random tokens, labels on the last
    two thirds (the "answer"). ``caption=True`` (a stage-1 sample in the ``plain`` template):
    ``caption_tokens`` random tokens, every one labelled.

    Returns:
        dict with input_ids [B, 2 + T], attention_mask, labels and images [B, 3, S, S].
    """
    gen = torch.Generator().manual_seed(seed)
    T = preset.caption_tokens if caption else preset.text_tokens
    size = preset.tower["image_size"]
    ids = torch.randint(2, config.vocab_size, (batch, 2 + T), generator=gen)
    ids[:, 0] = BOS_ID
    ids[:, 1] = IMAGE_TOKEN_INDEX
    labels = ids.clone()
    labels[:, : 2 if caption else 2 + T // 3] = IGNORE_INDEX
    images = torch.randn(batch, 3, size, size, generator=gen)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": labels.to(device),
        "images": images.to(device=device, dtype=dtype),
    }


def training_inputs(config: LlavaConfig, preset: Preset, stage: str, device: torch.device,
                    dtype: torch.dtype) -> dict:
    """The training batch of ``stage``: captions for "stage1", chats (``text_tokens``) otherwise."""
    return make_inputs(config, preset, preset.batch(stage), device, dtype, seed=1000, caption=stage == "stage1")


def parameter_counts(model) -> dict:
    tower = model.get_vision_tower()
    projector = model.get_model().mm_projector
    total = sum(p.numel() for p in model.parameters())
    n_tower = sum(p.numel() for p in tower.parameters())
    n_proj = sum(p.numel() for p in projector.parameters())
    return {"total": total, "vision_tower": n_tower, "projector": n_proj, "llm": total - n_tower - n_proj}


# ----------------------------------------------------------------------------------------------
# Timing helpers
# ----------------------------------------------------------------------------------------------


def timed_runs(fn: Callable[[], object], warmup: int, repeats: int, clock: Clock) -> list[float]:
    """Runs ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the times in s."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock.now()
        fn()
        times.append(clock.now() - start)
    return times


class TokenTimes(LogitsProcessor):
    """Records when each new token's logits are ready; the first call ends the prefill."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.times: list[float] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.times.append(self.clock.now())
        return scores


def timed_generate(model, inputs: dict, new_tokens: int, clock: Clock) -> dict:
    """One ``generate`` call as a user makes it, forced to ``new_tokens`` new tokens.

    Returns:
        {"ttft": s to the first token's logits, "e2e": s for the whole call,
         "decode": s from the first to the last token's logits (new_tokens - 1 decode steps)}.
    """
    stamps = TokenTimes(clock)
    start = clock.now()
    out = model.generate(
        inputs["input_ids"],
        images=inputs["images"],
        attention_mask=inputs["attention_mask"],
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        logits_processor=LogitsProcessorList([stamps]),
    )
    end = clock.now()
    if out.shape[-1] != new_tokens or len(stamps.times) != new_tokens:
        raise RuntimeError(f"generate made {out.shape[-1]} tokens ({len(stamps.times)} logits calls), "
                           f"expected exactly {new_tokens}")
    return {"ttft": stamps.times[0] - start, "e2e": end - start, "decode": stamps.times[-1] - stamps.times[0]}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def measure_components(model, images: torch.Tensor, warmup: int, repeats: int, clock: Clock) -> dict:
    """Vision-tower-only and projector-only time for one batch of images (s, medians)."""
    tower = model.get_vision_tower()
    projector = model.get_model().mm_projector
    proj_dtype = next(projector.parameters()).dtype
    features = tower(images).to(dtype=proj_dtype)
    tower_t = timed_runs(lambda: tower(images), warmup, repeats, clock)
    proj_t = timed_runs(lambda: projector(features), max(warmup, 1), max(repeats, 5), clock)
    return {"tower_s": _median(tower_t), "projector_s": _median(proj_t)}


def measure_inference(model, preset: Preset, batch: int, device: torch.device, dtype: torch.dtype,
                      clock: Clock, memory: PeakMemory) -> dict:
    """Time to first token, short and long answers, decode rate, tower/projector time, peak memory."""
    inputs = make_inputs(model.config, preset, batch, device, dtype, seed=batch)
    model.eval()
    memory.reset()
    for _ in range(preset.warmup):
        timed_generate(model, inputs, preset.short_new_tokens, clock)
    short = [timed_generate(model, inputs, preset.short_new_tokens, clock) for _ in range(preset.repeats)]
    long = [timed_generate(model, inputs, preset.long_new_tokens, clock) for _ in range(preset.long_repeats)]
    peak = memory.peak_mib()
    parts = measure_components(model, inputs["images"], preset.warmup, preset.repeats, clock)
    ttft = _median([r["ttft"] for r in short + long])
    short_s = _median([r["e2e"] for r in short])
    long_s = _median([r["e2e"] for r in long])
    decode = [batch * (preset.long_new_tokens - 1) / r["decode"] for r in long if r["decode"] > 0]
    return {
        "batch": batch,
        "ttft_s": ttft,
        "short_latency_s": short_s,
        "short_throughput": batch / short_s,
        "long_latency_s": long_s,
        "long_throughput": batch / long_s,
        "decode_tokens_per_s": _median(decode),
        "tower_s": parts["tower_s"],
        "projector_s": parts["projector_s"],
        "projector_share": parts["projector_s"] / ttft,
        "tower_share": parts["tower_s"] / ttft,
        "peak_memory_mib": peak,
        "runs": {"short_e2e_s": [r["e2e"] for r in short], "long_e2e_s": [r["e2e"] for r in long],
                 "ttft_s": [r["ttft"] for r in short + long]},
    }


def _llm_lora_targets(model) -> list[str]:
    """Every Linear inside the LLM's decoder layers (upstream's find_all_linear_names keeps the
    tower, projector and lm_head out of LoRA)."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            names.append(name)
    return names


def choose_stage2_mode(preset: Preset, model, device: torch.device) -> tuple[str, str]:
    """("full" | "lora", why). ``auto``: full finetuning when the LLM's weights, gradients and two
    AdamW moments (4 x its size in the model dtype) plus 25% for activations fit the device."""
    if preset.stage2 in ("full", "lora"):
        return preset.stage2, f"requested --stage2 {preset.stage2}"
    if preset.stage2 != "auto":
        raise ValueError(f"Unknown stage2 mode {preset.stage2!r}; known: ['auto', 'full', 'lora']")
    if device.type != "cuda":
        return "full", "auto: full finetuning fits in host memory"
    elem = next(model.parameters()).element_size()
    need = sum(p.numel() for p in model.parameters()) * elem * 4 * 1.25
    total = torch.cuda.get_device_properties(device).total_memory
    if need <= total:
        return "full", f"auto: full finetuning needs about {need / 2**30:.0f} GiB of {total / 2**30:.0f} GiB"
    return "lora", (f"auto: full finetuning would need about {need / 2**30:.0f} GiB, more than the "
                    f"{total / 2**30:.0f} GiB of the device, so the LoRA recipe (r={preset.lora_r}) is used")


def _prepare_stage(model, stage: str, preset: Preset):
    """Sets trainable parameters for ``stage`` ("stage1", "full", "lora"); returns (model, what)."""
    projector = model.get_model().mm_projector
    if stage == "stage1":
        model.requires_grad_(False)
        projector.requires_grad_(True)
        return model, "projector trainable; LLM and vision tower frozen"
    if stage == "full":
        model.requires_grad_(True)
        model.get_vision_tower().requires_grad_(False)
        return model, "full finetuning: LLM and projector trainable; vision tower frozen"
    if stage == "lora":
        from peft import LoraConfig, get_peft_model

        model.requires_grad_(False)
        lora = LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha, lora_dropout=0.05, bias="none",
                          target_modules=_llm_lora_targets(model), task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
        projector.requires_grad_(True)  # the LoRA recipe trains the projector fully
        return model, (f"LoRA r={preset.lora_r}, alpha={preset.lora_alpha} on every LLM linear layer, "
                       f"projector trainable; vision tower frozen")
    raise ValueError(f"Unknown training stage {stage!r}")


def _set_checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing on every decoder layer, non-reentrant. transformers 5.23
    renamed ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable``; older 5.x
    releases only have the first."""
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


def _checkpointing_plan(preset: Preset, device: torch.device) -> list[tuple[bool, str]]:
    """The gradient-checkpointing settings to try, in order, each with why."""
    mode = preset.gradient_checkpointing
    if mode == "on":
        return [(True, "on, as the recipes")]
    if mode == "off":
        return [(False, "off, as requested")]
    if device.type != "cuda":
        return [(False, "auto: off (host memory)")]
    return [(False, "auto: off, the step fits the device without it"),
            (True, "auto: on, the step ran out of device memory without it")]


def training_step(model, params: list, batch: dict, lr: float, device: torch.device):
    """One AdamW step on ``batch`` as a callable, with its optimizer: ``(step, optimizer)``."""
    optimizer = torch.optim.AdamW(params, lr=lr, fused=device.type == "cuda")

    def step() -> None:
        loss = model(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def _timed_steps(model, params: list, batch: dict, lr: float, checkpointing: bool, preset: Preset,
                 device: torch.device, clock: Clock, memory: PeakMemory) -> tuple[list[float], float]:
    """Times ``train_steps`` AdamW steps (after ``warmup``); returns (times in s, peak MiB)."""
    if checkpointing:
        _set_checkpointing(model, True)
    model.train()
    step, optimizer = training_step(model, params, batch, lr, device)
    memory.reset()
    try:
        times = timed_runs(step, preset.warmup, preset.train_steps, clock)
        return times, memory.peak_mib()
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.eval()
        if checkpointing:
            _set_checkpointing(model, False)


def measure_training(model, preset: Preset, stage: str, lr: float, device: torch.device, dtype: torch.dtype,
                     clock: Clock, memory: PeakMemory):
    """Samples/s of one AdamW step, gradient checkpointing as ``preset.gradient_checkpointing``.
    Returns (model, result dict); the model is returned because LoRA wraps it."""
    model, what = _prepare_stage(model, stage, preset)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = training_inputs(model.config, preset, stage, device, dtype)
    plan = _checkpointing_plan(preset, device)
    for attempt, (checkpointing, why) in enumerate(plan):
        try:
            times, peak = _timed_steps(model, params, batch, lr, checkpointing, preset, device, clock, memory)
            break
        except torch.OutOfMemoryError:
            if attempt == len(plan) - 1:
                raise
        # Outside the except block, so the traceback's frames (and their activations) are gone.
        model.zero_grad(set_to_none=True)
        _free(device)
    step_s = _median(times)
    size = preset.batch(stage)
    return model, {
        "mode": stage,
        "trainable": what,
        "trainable_params": sum(p.numel() for p in params),
        "batch": size,
        "sequence_tokens": batch["input_ids"].shape[1] - 1 + model.num_image_tokens(),
        "gradient_checkpointing": checkpointing,
        "checkpointing_reason": why,
        "step_s": step_s,
        "samples_per_s": size / step_s,
        "peak_memory_mib": peak,
        "runs_s": times,
    }


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_setting(preset: Preset, setting: Setting, tower_dir: str, device: torch.device, dtype: torch.dtype,
                    attn: str, clock: Clock, memory: PeakMemory, inference: bool = True,
                    training: bool = True, log: Callable[[str], None] = logger.info) -> dict:
    """Every measurement of one projector setting, on a freshly built model."""
    config = llava_config(preset, setting, tower_dir)
    start = time.perf_counter()
    model = build_model(config, device, dtype, attn)
    tokens = model.num_image_tokens()
    label = setting.label(tokens)
    log(f"{label}: built in {time.perf_counter() - start:.1f} s")
    result = {"label": label, "projector": setting.projector, "scale_factor": setting.scale_factor,
              "visual_tokens": tokens, "params": parameter_counts(model), "process": os.getpid(),
              "inference": {}, "training": {}}
    if inference:
        for batch in preset.batch_sizes:
            r = measure_inference(model, preset, batch, device, dtype, clock, memory)
            result["inference"][str(batch)] = r
            log(f"{label}: batch {batch}: ttft {r['ttft_s'] * 1e3:.1f} ms, short {r['short_throughput']:.2f} "
                f"samples/s, decode {r['decode_tokens_per_s'] or 0:.1f} tok/s, projector "
                f"{r['projector_share'] * 100:.1f}% of ttft")
            _free(device)
    if training:
        model, r1 = measure_training(model, preset, "stage1", preset.stage1_lr, device, dtype, clock, memory)
        result["training"]["stage1"] = r1
        log(f"{label}: stage 1: {r1['samples_per_s']:.3f} samples/s")
        _free(device)
        mode, reason = choose_stage2_mode(preset, model, device)
        try:
            model, r2 = measure_training(model, preset, mode, preset.stage2_lr, device, dtype, clock, memory)
        except torch.OutOfMemoryError as err:
            if mode != "full":
                raise
            reason = f"full finetuning ran out of device memory ({str(err).splitlines()[0]}); fell back to LoRA"
            del err
            model.zero_grad(set_to_none=True)
            _free(device)
            mode = "lora"
            model, r2 = measure_training(model, preset, mode, preset.stage2_lr, device, dtype, clock, memory)
        r2["mode_reason"] = reason
        result["training"]["stage2"] = r2
        log(f"{label}: stage 2 ({mode}): {r2['samples_per_s']:.3f} samples/s")
    del model
    _free(device)
    return result


# ----------------------------------------------------------------------------------------------
# Ratios and targets
# ----------------------------------------------------------------------------------------------


def compute_ratios(results: list[dict]) -> dict[str, dict]:
    """Per setting, each metric against the first setting (the baseline) of the same run.

    Keys: ``ttft`` (speed-up: baseline time / time), ``short_throughput``, ``long_throughput``,
    ``decode`` (ratios of rates), each per inference batch as ``{batch: ratio}``; ``stage1`` and
    ``stage2`` (ratios of samples/s); ``projector_share`` per batch (a fraction, not a ratio);
    ``peak_memory`` per batch and stage (fraction of the baseline's).
    """
    base = results[0]
    ratios: dict[str, dict] = {}
    for res in results:
        r: dict = {}
        for b, inf in res["inference"].items():
            ref = base["inference"].get(b)
            if ref is None:
                continue
            r.setdefault("ttft", {})[b] = ref["ttft_s"] / inf["ttft_s"]
            r.setdefault("short_throughput", {})[b] = inf["short_throughput"] / ref["short_throughput"]
            r.setdefault("long_throughput", {})[b] = inf["long_throughput"] / ref["long_throughput"]
            if inf["decode_tokens_per_s"] and ref["decode_tokens_per_s"]:
                r.setdefault("decode", {})[b] = inf["decode_tokens_per_s"] / ref["decode_tokens_per_s"]
            r.setdefault("projector_share", {})[b] = inf["projector_share"]
            r.setdefault("peak_memory", {})[f"inference_b{b}"] = inf["peak_memory_mib"] / ref["peak_memory_mib"]
        for stage, tr in res["training"].items():
            ref = base["training"].get(stage)
            if ref is None:
                continue
            r[stage] = tr["samples_per_s"] / ref["samples_per_s"]
            r.setdefault("peak_memory", {})[stage] = tr["peak_memory_mib"] / ref["peak_memory_mib"]
        ratios[res["label"]] = r
    return ratios


def evaluate_targets(preset_name: str, results: list[dict], ratios: dict[str, dict]) -> list[dict]:
    """Checks the preset's targets for ``delta`` @ s=2; one row per target and batch size."""
    subject = next((r for r in results if (r["projector"], r["scale_factor"]) ==
                    (TARGET_SUBJECT.projector, TARGET_SUBJECT.scale_factor)), None)
    if subject is None or not results or results[0] is subject:
        return []
    rows = []
    sub = ratios[subject["label"]]
    for metric, threshold, what in TARGETS.get(preset_name, ()):
        value = sub.get(metric)
        if value is None:
            continue
        per_batch = value.items() if isinstance(value, dict) else [(None, value)]
        for batch, v in per_batch:
            met = v <= threshold if metric == "projector_share" else v >= threshold
            rows.append({"target": what, "metric": metric, "batch": batch, "threshold": threshold,
                         "value": v, "met": bool(met), "setting": subject["label"],
                         "baseline": results[0]["label"]})
    return rows


# ----------------------------------------------------------------------------------------------
# A whole run
# ----------------------------------------------------------------------------------------------


def _measure_setting_in_child(preset: Preset, setting: Setting, tower_dir: str, device: torch.device,
                              dtype: torch.dtype, attn: str, inference: bool, training: bool) -> dict:
    """Entry point of the fresh process that measures one setting (see ``Preset.isolate``)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    return measure_setting(preset, setting, tower_dir, device, dtype, attn, Clock(device), PeakMemory(device),
                           inference=inference, training=training, log=logger.info)


def run(preset: Preset, *, device: str | None = None, dtype: str | None = None, attn: str | None = None,
        inference: bool = True, training: bool = True, log: Callable[[str], None] = logger.info) -> dict:
    """Measures every setting of ``preset`` in one process, one after another; returns the results dict."""
    device_t = torch.device(device or preset.device)
    if device_t.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device_t} (from {'--device' if device else f'preset {preset.name!r}'}) needs "
                           f"CUDA, but torch.cuda.is_available() is False (torch {torch.__version__}); run on "
                           f"the CPU here (--preset cpu, or --device cpu)")
    dtype_t = getattr(torch, dtype or preset.dtype)
    attn_impl = select_attn_implementation(device_t, attn)
    clock, memory = Clock(device_t), PeakMemory(device_t)
    started, load_start = time.time(), load_average()
    results = []
    threads = torch.get_num_threads()
    if preset.threads is not None:
        torch.set_num_threads(preset.threads)
    try:
        machine = describe_machine(device_t)
        with tempfile.TemporaryDirectory(prefix="llava_bench_tower_") as tower_dir:
            write_tower_folder(tower_dir, preset.tower)
            for setting in preset.settings:
                if preset.isolate:
                    # "spawn": a new interpreter, never a fork of a process that holds CUDA or threads.
                    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                        results.append(pool.submit(_measure_setting_in_child, preset, setting, tower_dir, device_t,
                                                   dtype_t, attn_impl, inference, training).result())
                else:
                    results.append(measure_setting(preset, setting, tower_dir, device_t, dtype_t, attn_impl, clock,
                                                   memory, inference=inference, training=training, log=log))
    finally:
        torch.set_num_threads(threads)
    ratios = compute_ratios(results)
    settings = asdict(preset)
    settings["settings"] = [f"{s.projector}(scale_factor={s.scale_factor})" for s in preset.settings]
    settings.update(device=str(device_t), dtype=str(dtype_t).replace("torch.", ""), attn_implementation=attn_impl,
                    grid=f"{preset.grid_side}x{preset.grid_side}")
    return {
        "benchmark": "python -m llava.bench (llava/bench/speed.py)",
        "preset": preset.name,
        "description": preset.description,
        "weights": RANDOM_WEIGHTS_NOTE,
        "timing": TIMING_NOTE,
        "memory": memory.kind + ("; each setting measured in a fresh process" if preset.isolate else ""),
        "machine": machine,
        "versions": describe_versions(),
        "settings": settings,
        "load_average": {"start": load_start, "end": load_average()},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "runtime_s": time.time() - started,
        "baseline": results[0]["label"] if results else None,
        "results": results,
        "ratios": ratios,
        "targets": evaluate_targets(preset.name, results, ratios),
    }
