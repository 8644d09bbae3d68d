"""``python -m llava.bench --preset cpu --out docs/benchmarks/cpu``: the speed benchmark.

Presets: ``cpu`` (runs on a laptop-class CPU in about 10-15 minutes), ``7b`` (LLaVA-1.5-7B shapes,
bf16, one CUDA GPU), ``tiny`` (CI-sized). Every flag below overrides the preset.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import time

from llava.bench.machine import load_average
from llava.bench.presets import PRESETS, get_preset, settings_argument


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, help="folder for results.json, results.md and chart.png")
    p.add_argument("--settings", type=settings_argument, default=None,
                   help="projector:scale_factor list, baseline first (default: mlp2x_gelu:1,avgpool:2,"
                        "delta:2,delta:3,delta:4)")
    p.add_argument("--device", default=None, help="override the preset's device (cuda, cuda:1, cpu)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn", default=None, choices=["sdpa", "flash_attention_2", "eager"],
                   help="LLM attention backend (default: flash_attention_2 on CUDA when it imports, else sdpa)")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="inference batch sizes, e.g. 1,16")
    p.add_argument("--text-tokens", type=int, default=None,
                   help="text tokens of a prompt and of a stage-2 sample")
    p.add_argument("--caption-tokens", type=int, default=None,
                   help="text tokens of a stage-1 sample (a caption in the plain template)")
    p.add_argument("--short-new-tokens", type=int, default=None)
    p.add_argument("--long-new-tokens", type=int, default=None)
    p.add_argument("--train-batch", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--long-repeats", type=int, default=None)
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--stage2", choices=["auto", "full", "lora"], default=None,
                   help="stage-2 finetuning: full, LoRA, or auto (full when it fits the device)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: the preset's, else one per core); recorded in the JSON")
    p.add_argument("--stage1-batch", type=int, default=None,
                   help="samples per stage-1 step (default: the preset's, else --train-batch)")
    p.add_argument("--gradient-checkpointing", choices=["on", "off", "auto"], default=None,
                   help="on (as the recipes; default), off, or auto: off where the step fits the device")
    p.add_argument("--no-gradient-checkpointing", action="store_true", help="same as --gradient-checkpointing off")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--wait-for-load", type=float, default=None, metavar="LOAD",
                   help="before starting, wait until the 1-minute load average is below LOAD")
    p.add_argument("--wait-max-min", type=float, default=40.0, help="give up waiting after this many minutes")
    return p


def wait_for_quiet(threshold: float, max_minutes: float, log) -> dict:
    """Sleeps until the 1-minute load average is below ``threshold`` (or ``max_minutes`` passed)."""
    start = time.time()
    seen = []
    while True:
        load = load_average()
        seen.append(load)
        if load is None or load[0] < threshold:
            return {"threshold": threshold, "waited_min": round((time.time() - start) / 60, 1), "quiet": True,
                    "load_when_started": load}
        if time.time() - start > max_minutes * 60:
            log(f"load average still {load} after {max_minutes} min; running anyway")
            return {"threshold": threshold, "waited_min": round((time.time() - start) / 60, 1), "quiet": False,
                    "load_when_started": load}
        log(f"load average {load}; waiting for < {threshold}")
        time.sleep(60)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait_for_load is not None and not args.wait_for_load > 0:  # else it waits --wait-max-min for nothing
        parser.error(f"--wait-for-load must be above 0 (a load average is never below 0), got {args.wait_for_load}")
    if not args.wait_max_min >= 0:
        parser.error(f"--wait-max-min must be at least 0, got {args.wait_max_min}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import torch

    from llava.bench import report, speed  # after the environment is set

    log = logging.getLogger("llava.bench").info
    preset = get_preset(args.preset)
    changes = {
        "batch_sizes": args.batch_sizes, "text_tokens": args.text_tokens, "caption_tokens": args.caption_tokens,
        "short_new_tokens": args.short_new_tokens, "long_new_tokens": args.long_new_tokens,
        "train_batch": args.train_batch, "stage1_batch": args.stage1_batch, "warmup": args.warmup,
        "repeats": args.repeats, "long_repeats": args.long_repeats, "train_steps": args.train_steps,
        "stage2": args.stage2, "settings": args.settings, "threads": args.threads,
    }
    try:  # sizes and settings are checked here, before anything is measured
        preset = preset.replace(**{k: v for k, v in changes.items() if v is not None})
    except ValueError as err:
        parser.error(str(err))
    if args.no_gradient_checkpointing:
        if args.gradient_checkpointing not in (None, "off"):
            raise SystemExit("--no-gradient-checkpointing contradicts --gradient-checkpointing "
                             f"{args.gradient_checkpointing}")
        args.gradient_checkpointing = "off"
    if args.gradient_checkpointing is not None:
        preset = preset.replace(gradient_checkpointing=args.gradient_checkpointing)
    if not args.no_chart and importlib.util.find_spec("matplotlib") is None:
        # Fail before measuring, not after: the chart is drawn last.
        raise SystemExit("matplotlib is not installed: pip install matplotlib, or pass --no-chart and draw the "
                         "chart later with `python -m llava.bench.report DIR` on a machine that has it")
    device = torch.device(args.device or preset.device)
    if device.type == "cuda" and not torch.cuda.is_available():  # before any waiting or measuring
        parser.error(f"--device {args.device or f'cuda (preset {preset.name})'} needs CUDA, but "
                     f"torch.cuda.is_available() is False; run --preset cpu (or --device cpu) here")
    wait = wait_for_quiet(args.wait_for_load, args.wait_max_min, log) if args.wait_for_load is not None else None
    data = speed.run(preset, device=args.device, dtype=args.dtype, attn=args.attn,
                     inference=not args.skip_inference, training=not args.skip_training, log=log)
    if wait is not None:
        data["load_average"]["wait"] = wait
    paths = report.write_all(data, args.out, with_chart=not args.no_chart)
    print(report.markdown(data))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
