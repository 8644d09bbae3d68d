"""Merges a LoRA checkpoint into its base LLM and saves a full LLaVA checkpoint (upstream's script).

    python scripts/merge_lora_weights.py --model-path ./checkpoints/llava-v1.5-7b-delta-lora \
        --model-base lmsys/vicuna-7b-v1.5 --save-model-path ./checkpoints/llava-v1.5-7b-delta-merged

The LoRA folder (``adapter_config.json``, ``adapter_model.safetensors``, ``non_lora_trainables.bin``,
``config.json``) is recognised by its files, whatever its name; the merge runs on the CPU in
full precision. The result loads with ``load_pretrained_model(save_model_path, None, ...)``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llava.mm_utils import get_model_name_from_path  # noqa: E402
from llava.model.builder import checkpoint_kind, load_pretrained_model  # noqa: E402


def merge_lora(args: argparse.Namespace) -> str:
    """Loads base + adapter (merged by ``load_pretrained_model``) and saves model and tokenizer.

    Returns:
        The folder written.
    """
    kind = checkpoint_kind(args.model_path, args.model_base)
    if kind != "lora":
        raise ValueError(f"{args.model_path} is not a LoRA checkpoint (no adapter_config.json); it is a {kind!r} one")
    model_name = get_model_name_from_path(args.model_path)
    tokenizer, model, _, _ = load_pretrained_model(args.model_path, args.model_base, model_name, device_map="cpu",
                                                   device="cpu")
    model.save_pretrained(args.save_model_path)
    tokenizer.save_pretrained(args.save_model_path)
    return args.save_model_path


def main(argv: list[str] | None = None) -> str:
    from transformers.utils import logging as hf_logging

    # The base LLM lacks the projector and tower by design; they come from the LoRA folder.
    hf_logging.set_verbosity_error()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=str, required=True, help="the LoRA checkpoint folder")
    parser.add_argument("--model-base", type=str, required=True, help="the base LLM it was trained on")
    parser.add_argument("--save-model-path", type=str, required=True, help="where to write the merged model")
    out = merge_lora(parser.parse_args(argv))
    print(f"Merged model saved to {out}")
    return out


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
