"""Extracts the projector of a full LLaVA checkpoint into an ``mm_projector`` file (upstream's script).

    python scripts/extract_mm_projector.py --model_name_or_path ./checkpoints/llava-v1.5-7b-delta \
        --output ./checkpoints/llava-v1.5-7b-delta-projector/mm_projector.bin

What for: to start another run from a trained projector (``--pretrain_mm_mlp_adapter`` the file), or
to keep a projector without its LLM. It keeps the keys holding ``mm_projector.``, plus
``model.embed_tokens.weight`` when the checkpoint was trained with ``mm_use_im_start_end`` (the
rows of the added tokens train with the projector), and reads only the shards that hold them.
``--output`` ending in ``.safetensors`` writes safetensors, anything else ``torch.save`` (upstream's
``.bin``). Released Delta-LLaVA projector names are copied as they are; every loader maps them.

Differences from upstream, on purpose: the embedding matrix is left out unless start/end tokens
were added (upstream always copied it, the size of the vocabulary times the hidden size);
safetensors checkpoints and cached hub ids work; a checkpoint without projector weights is an error
that names it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from llava.model import weights  # noqa: E402
from llava.model.builder import read_config_dict, resolve_local  # noqa: E402


def extract_projector(model_path: str, output: str) -> dict[str, torch.Tensor]:
    """Writes the projector (and the embeddings with start/end tokens) of ``model_path`` to ``output``.

    Returns:
        The tensors written, by key.
    Raises:
        FileNotFoundError: no such folder or cached hub id, or no weight files or config.json in it.
        ValueError: the checkpoint holds no ``mm_projector`` weights.
    """
    folder = resolve_local(model_path)
    if not weights.has_full_weights(folder):
        raise FileNotFoundError(f"{folder} has no model weights: expected one of {list(weights.FULL_WEIGHT_FILES)}")
    config = read_config_dict(folder)
    keep_embeddings = bool(config.get("mm_use_im_start_end"))

    def keep(key: str) -> bool:
        return "mm_projector." in key or (keep_embeddings and key.endswith("embed_tokens.weight"))

    tensors = weights.read_checkpoint_tensors(folder, keep)
    if not any("mm_projector." in key for key in tensors):
        raise ValueError(f"{folder} holds no mm_projector weights (mm_projector_type "
                         f"{config.get('mm_projector_type')!r}): is it a LLaVA checkpoint?")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    if output.endswith(".safetensors"):
        save_file(tensors, output, metadata={"format": "pt"})
    else:
        torch.save(tensors, output)
    return tensors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_name_or_path", "--model-path", required=True,
                        help="a full LLaVA checkpoint folder, or a hub id in the local Hugging Face cache")
    parser.add_argument("--output", required=True, help="the file to write (.bin or .safetensors)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    args = build_parser().parse_args(argv)
    tensors = extract_projector(args.model_name_or_path, args.output)
    count = sum(value.numel() for value in tensors.values())
    print(f"wrote {len(tensors)} tensors ({count / 1e6:.2f}M values) to {args.output}")
    return tensors


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(main)
