"""Where the time of the vision tower and of a projector goes: ``torch.profiler`` tables and timings.

    python -m llava.bench.profile --preset cpu --batch 1
    python -m llava.bench.profile --preset 7b --device cpu --dtype float32 --component projector

Builds the preset's vision tower (random weights) and one projector (default ``delta``, s=2) on
their own, times each forward (median of ``--repeats``) and prints the profiler's per-operator
table. ``--preset 7b --device cpu`` profiles the 7B-shaped delta projector on a CPU.

``--compare-full-tower`` and ``--compare-full-logits`` time a fast path against what ran before it,
alternating runs in one process so that both see the same machine load. ``--compare-ttft`` does the
same for the time to first token of every setting of the preset (the main benchmark measures each
setting in its own process, one after the other, so a busy minute on a shared machine lands on one
setting only); on CUDA it also reports the GPU busy time of that prefill (kernel time without the
host's launch gaps), which shows whether the host or the GPU sets the time. ``--compare-training
stage1|full|lora`` does it for one training step of every setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

from llava.bench.machine import Clock, describe_machine, describe_versions, load_average
from llava.bench.presets import PRESETS, Setting, get_preset, settings_argument
from llava.bench.speed import (
    _checkpointing_plan, _prepare_stage, _set_checkpointing, build_model, llava_config, make_inputs, timed_generate,
    timed_runs, training_inputs, training_step, write_tower_folder)
from llava.constants import IGNORE_INDEX
from llava.model.attention import select_attn_implementation
from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_projector.builder import build_vision_projector, projector_class


def build_parts(preset, setting: Setting, tower_dir: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The preset's tower and the setting's projector alone (no LLM), random weights, eval mode."""
    config = llava_config(preset, setting, tower_dir)
    torch.manual_seed(seed)
    with torch.device(device):
        tower = build_vision_tower(config, extra_layers=projector_class(config.mm_projector_type).vision_layers(config))
        projector = build_vision_projector(config)
    return tower.to(dtype=dtype).eval(), projector.to(dtype=dtype).eval()


@torch.no_grad()
def profile_parts(preset, setting: Setting, batch: int, device: torch.device, dtype: torch.dtype, repeats: int,
                  components: tuple[str, ...], rows: int = 20) -> dict:
    """Times (median s) and prints profiler tables for the requested components."""
    clock = Clock(device)
    out = {}
    with tempfile.TemporaryDirectory(prefix="llava_profile_tower_") as tower_dir:
        write_tower_folder(tower_dir, preset.tower)
        tower, projector = build_parts(preset, setting, tower_dir, device, dtype)
        size = preset.tower["image_size"]
        images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        features = tower(images)
        calls = {"tower": lambda: tower(images), "projector": lambda: projector(features)}
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        for name in components:
            fn = calls[name]
            times = timed_runs(fn, 2, repeats, clock)
            out[name] = statistics.median(times)
            with torch.profiler.profile(activities=activities) as prof:
                fn()
            sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
            print(f"\n== {name}: median {out[name] * 1e3:.2f} ms over {repeats} runs "
                  f"(batch {batch}, {preset.name} shapes, {setting.projector} s={setting.scale_factor}, {dtype})")
            print(prof.key_averages().table(sort_by=sort, row_limit=rows))
    return out


@torch.no_grad()
def compare_tower_paths(preset, setting: Setting, batch: int, device: torch.device, dtype: torch.dtype,
                        repeats: int) -> dict:
    """The tower as it runs now (only the layers some stream reads) against transformers' full forward
    with ``output_hidden_states=True`` (what it ran before), alternating runs so that both see the
    same machine load. Returns median seconds of each and the speed-up."""
    clock = Clock(device)
    with tempfile.TemporaryDirectory(prefix="llava_profile_tower_") as tower_dir:
        write_tower_folder(tower_dir, preset.tower)
        tower, _ = build_parts(preset, setting, tower_dir, device, dtype)
        size = preset.tower["image_size"]
        images = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        full = lambda: tower.vision_tower(images, output_hidden_states=True)  # noqa: E731
        truncated = lambda: tower(images)  # noqa: E731
        timed_runs(full, 1, 0, clock), timed_runs(truncated, 1, 0, clock)
        full_t, trunc_t = [], []
        for _ in range(repeats):
            full_t += timed_runs(full, 0, 1, clock)
            trunc_t += timed_runs(truncated, 0, 1, clock)
    result = {"full_forward_s": statistics.median(full_t), "truncated_s": statistics.median(trunc_t),
              "layers_run": tower.layers_needed, "layers": tower.config.num_hidden_layers}
    result["speedup"] = result["full_forward_s"] / result["truncated_s"]
    print(f"tower ({preset.name} shapes, batch {batch}, {dtype}): full forward {result['full_forward_s'] * 1e3:.1f} ms, "
          f"{result['layers_run']} of {result['layers']} layers {result['truncated_s'] * 1e3:.1f} ms, "
          f"{result['speedup']:.3f}x")
    return result


def compare_loss_paths(preset, setting: Setting, stage: str, device: torch.device, dtype: torch.dtype,
                       repeats: int) -> dict:
    """One training forward + backward (the bench's stage-1 or full stage-2 batch, gradient
    checkpointing as the preset says) with the LM head on labelled rows only (what
    ``LlavaLlamaForCausalLM.forward`` does in training) against the full-logits forward of
    ``LlamaForCausalLM`` (what ran before), alternating runs. Returns median seconds and the speed-up."""
    from transformers import LlamaForCausalLM

    clock = Clock(device)
    with tempfile.TemporaryDirectory(prefix="llava_profile_loss_") as tower_dir:
        write_tower_folder(tower_dir, preset.tower)
        model = build_model(llava_config(preset, setting, tower_dir), device, dtype,
                            select_attn_implementation(device, None))
        model, _ = _prepare_stage(model, stage, preset)
        batch = training_inputs(model.config, preset, stage, device, dtype)
        if _checkpointing_plan(preset, device)[0][0]:  # the setting the benchmark tries first
            _set_checkpointing(model, True)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]

        def labelled() -> None:
            model(**batch, use_cache=False).loss.backward()

        def full() -> None:
            _, _, mask, _, embeds, labels = model.prepare_inputs_labels_for_multimodal(
                batch["input_ids"], None, batch["attention_mask"], None, batch["labels"], batch["images"])
            LlamaForCausalLM.forward(model, inputs_embeds=embeds, attention_mask=mask, labels=labels,
                                     use_cache=False).loss.backward()

        def run(fn) -> list[float]:
            times = timed_runs(fn, 0, 1, clock)
            for p in params:
                p.grad = None
            return times

        run(full), run(labelled)  # warm-up
        full_t, fast_t = [], []
        for _ in range(repeats):
            full_t += run(full)
            fast_t += run(labelled)
    labels = batch["labels"]
    result = {"stage": stage, "batch": preset.batch(stage),
              "sequence_tokens": labels.shape[1] - 1 + model.num_image_tokens(),
              "labelled_rows": int(labels[:, 1:].ne(IGNORE_INDEX).sum()), "full_logits_s": statistics.median(full_t),
              "labelled_rows_s": statistics.median(fast_t)}
    result["speedup"] = result["full_logits_s"] / result["labelled_rows_s"]
    print(f"{stage} forward + backward ({preset.name} shapes, {setting.projector} s={setting.scale_factor}, batch "
          f"{result['batch']} x {result['sequence_tokens']} tokens, {result['labelled_rows']} labelled rows, {dtype}): "
          f"full logits {result['full_logits_s'] * 1e3:.1f} ms, labelled rows only "
          f"{result['labelled_rows_s'] * 1e3:.1f} ms, {result['speedup']:.3f}x")
    return result


def gpu_busy_s(fn) -> float:
    """Seconds of GPU work (kernels, copies, memsets) that ``fn`` launches: the sum of device-side
    event times, as torch.profiler's "Self CUDA time total". Gaps between launches do not count, so
    this is how long ``fn`` would take if launching cost nothing on the host."""
    from torch.autograd import DeviceType

    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    return sum(e.self_device_time_total for e in prof.key_averages()
               if e.device_type == DeviceType.CUDA and not e.is_user_annotation) / 1e6


def build_models(preset, settings, device: torch.device, dtype: torch.dtype) -> dict:
    """A model (random weights, eval mode) of every setting, by label; all stay in memory at once."""
    with tempfile.TemporaryDirectory(prefix="llava_profile_models_") as tower_dir:
        write_tower_folder(tower_dir, preset.tower)
        attn = select_attn_implementation(device, None)
        models = {}
        for setting in settings:
            model = build_model(llava_config(preset, setting, tower_dir), device, dtype, attn)
            models[setting.label(model.num_image_tokens())] = model
        return models


def round_robin(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Calls every measure once to warm up, then ``repeats`` rounds of one call each, in order, so
    that machine load spreads evenly over them. Each call returns the seconds it measured."""
    for measure in measures.values():
        measure()
    runs: dict[str, list[float]] = {label: [] for label in measures}
    for _ in range(repeats):
        for label, measure in measures.items():
            runs[label].append(measure())
    return runs


def compare_ttft(preset, settings, batch: int, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """Time to first token of every setting, measured round-robin in one process.

    Each round generates once with every model (same prompt layout, ``short_new_tokens`` new
    tokens), so machine load spreads evenly over the settings. Returns
    ``{label: {"ttft_s": median, "runs_s": [...], "speedup": baseline / median}}``; the baseline is
    the first setting.
    """
    clock = Clock(device)
    models = build_models(preset, settings, device, dtype)
    inputs = {label: make_inputs(model.config, preset, batch, device, dtype, seed=batch)
              for label, model in models.items()}
    runs = round_robin({label: (lambda m=model, x=inputs[label]: timed_generate(
        m, x, preset.short_new_tokens, clock)["ttft"]) for label, model in models.items()}, repeats)
    busy: dict[str, float] = {}
    if device.type == "cuda":  # GPU work of a one-token generate: tower, projector, splice, prefill
        for label, model in models.items():
            busy[label] = statistics.median(
                gpu_busy_s(lambda: timed_generate(model, inputs[label], 1, clock)) for _ in range(3))
    base = statistics.median(next(iter(runs.values())))
    result = {}
    print(f"time to first token, batch {batch}, {repeats} rounds over all settings ({dtype}):")
    for label, times in runs.items():
        median = statistics.median(times)
        result[label] = {"ttft_s": median, "runs_s": times, "speedup": base / median}
        print(f"  {label:<18} {median * 1e3:9.1f} ms  {base / median:5.2f}x  "
              f"(runs: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms)")
    if busy:
        base_busy = next(iter(busy.values()))
        print("GPU busy time of the same prefill (kernels only, launch gaps left out; median of 3 profiled calls):")
        for label, value in busy.items():
            result[label].update(gpu_busy_s=value, gpu_busy_speedup=base_busy / value)
            print(f"  {label:<18} {value * 1e3:9.1f} ms  {base_busy / value:5.2f}x  "
                  f"(wall time is {result[label]['ttft_s'] / value:.1f}x the GPU work)")
    return result


def compare_training(preset, settings, stage: str, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """Samples/s of one training step of every setting, measured round-robin in one process.

    The step is the benchmark's (``measure_training``): the preset's batch for ``stage`` ("stage1",
    "full" or "lora"), AdamW, gradient checkpointing as the preset tries first. Each round runs one
    step of every model, so machine load spreads evenly over the settings; every model and its
    optimizer stay in memory at once. Returns ``{label: {"step_s": median, "samples_per_s",
    "runs_s": [...], "speedup": baseline step / this step}}``; the baseline is the first setting.
    """
    clock = Clock(device)
    lr = preset.stage1_lr if stage == "stage1" else preset.stage2_lr
    checkpointing, why = _checkpointing_plan(preset, device)[0]
    steps, tokens = {}, {}
    for label, model in build_models(preset, settings, device, dtype).items():
        visual = model.num_image_tokens()
        model, _ = _prepare_stage(model, stage, preset)
        batch = training_inputs(model.config, preset, stage, device, dtype)
        if checkpointing:
            _set_checkpointing(model, True)
        model.train()
        steps[label], _ = training_step(model, [p for p in model.parameters() if p.requires_grad], batch, lr, device)
        tokens[label] = batch["input_ids"].shape[1] - 1 + visual
    runs = round_robin({label: (lambda s=step: timed_runs(s, 0, 1, clock)[0]) for label, step in steps.items()},
                       repeats)
    size = preset.batch(stage)
    base = statistics.median(next(iter(runs.values())))
    result = {}
    print(f"{stage} training step, batch {size}, gradient checkpointing {'on' if checkpointing else 'off'} ({why}), "
          f"{repeats} rounds over all settings ({dtype}):")
    for label, times in runs.items():
        median = statistics.median(times)
        result[label] = {"step_s": median, "samples_per_s": size / median, "sequence_tokens": tokens[label],
                         "runs_s": times, "speedup": base / median}
        print(f"  {label:<18} {tokens[label]:5d} tokens  {median * 1e3:9.1f} ms  {size / median:8.3f} samples/s  "
              f"{base / median:5.2f}x  (runs: {', '.join(f'{t * 1e3:.0f}' for t in times)} ms)")
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m llava.bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--projector", default="delta")
    p.add_argument("--scale-factor", type=int, default=2)
    p.add_argument("--component", choices=["tower", "projector", "both"], default="both")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    modes = p.add_mutually_exclusive_group()  # one comparison per run
    modes.add_argument("--compare-full-tower", action="store_true",
                   help="time the truncated tower against transformers' full forward, alternating runs")
    modes.add_argument("--compare-full-logits", choices=["stage1", "full"], default=None,
                   help="time a training step's LM head on labelled rows only against full logits, alternating runs")
    modes.add_argument("--compare-ttft", action="store_true",
                   help="time to first token of every setting of the preset, round-robin in one process")
    modes.add_argument("--compare-training", choices=["stage1", "full", "lora"], default=None,
                   help="samples/s of one training step of every setting of the preset, round-robin in one process")
    p.add_argument("--settings", type=settings_argument, default=None,
                   help="--compare-ttft / --compare-training: projector:scale_factor list, baseline first (default: "
                        "the preset's five; all models stay in memory at once)")
    p.add_argument("--json", type=Path, default=None,
                   help="with a --compare-* mode: also write its result, the machine, versions and command here")
    args = p.parse_args(argv)
    if args.json and not (args.compare_ttft or args.compare_training or args.compare_full_logits
                          or args.compare_full_tower):
        p.error("--json needs one of the --compare-* modes")
    if args.repeats < 1 or args.batch < 1:
        p.error("--repeats and --batch must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    preset = get_preset(args.preset)
    device = torch.device(args.device or preset.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device or 'cuda (the preset)'} needs CUDA, but torch.cuda.is_available() is False")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or preset.dtype)
    load_before = load_average()
    result = None
    if args.compare_ttft:
        result = compare_ttft(preset, args.settings or preset.settings, args.batch, device, dtype, args.repeats)
    elif args.compare_training:
        result = compare_training(preset, args.settings or preset.settings, args.compare_training, device, dtype,
                                  args.repeats)
    elif args.compare_full_logits:
        result = compare_loss_paths(preset, Setting(args.projector, args.scale_factor), args.compare_full_logits,
                                    device, dtype, args.repeats)
    elif args.compare_full_tower:
        result = compare_tower_paths(preset, Setting(args.projector, args.scale_factor), args.batch, device, dtype,
                                     args.repeats)
    if result is not None:
        if args.json:
            record = {"command": "python -m llava.bench.profile " + " ".join(sys.argv[1:] if argv is None else argv),
                      "preset": preset.name, "dtype": str(dtype), "weights": "random (built from configs)",
                      "machine": describe_machine(device), "versions": describe_versions(),
                      "load_average_before": load_before, "load_average_after": load_average(), "result": result}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(record, indent=1) + "\n")
            print(f"wrote {args.json}")
        return
    components = ("tower", "projector") if args.component == "both" else (args.component,)
    profile_parts(preset, Setting(args.projector, args.scale_factor), args.batch, device, dtype, args.repeats,
                  components, args.rows)


if __name__ == "__main__":
    main()
