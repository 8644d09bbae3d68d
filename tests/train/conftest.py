"""Tiny models and data for the training tests: a 2-layer Llama LLM saved like a real base LLM,
a 64-wide CLIP tower (wide enough for the delta projector's refine block) and a few synthetic
LLaVA samples. Everything is built offline in well under a second each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llava.data import synthetic
from tests.conftest import TINY_LLM, make_tower
from tests.tokenizers import make_chatml_tokenizer, make_llama_tokenizer

TOWER_WIDTH = dict(hidden_size=64, intermediate_size=128)


def make_base_llm(folder: Path, tokenizer_dir: str, seed: int = 0) -> str:
    """Saves a random 2-layer Llama with the tokenizer next to it, as a base LLM folder looks."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(**TINY_LLM, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def config_only_llm(folder: Path) -> str:
    """A folder with a config.json and nothing else: it passes the model path check but cannot load,
    so a test that trains on it shows that its error came before the model load."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return str(folder)


@pytest.fixture(scope="session")
def train_tower(tmp_path_factory) -> str:
    return make_tower(tmp_path_factory.mktemp("train_tower"), **TOWER_WIDTH)


@pytest.fixture(scope="session")
def llama_base(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("llama_base")
    return make_base_llm(root / "llm", make_llama_tokenizer(root / "tok"))


@pytest.fixture(scope="session")
def chatml_base(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("chatml_base")
    return make_base_llm(root / "llm", make_chatml_tokenizer(root / "tok"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """8 caption samples (stage 1) and 8 instruction samples, 2 of them text-only (stage 2)."""
    out = tmp_path_factory.mktemp("data")
    return synthetic.generate(out, synthetic.SyntheticConfig(num_stage1=8, num_stage2=8, num_eval=0, image_size=56,
                                                             text_only_fraction=0.25))


def write_json(path: Path, samples) -> str:
    path.write_text(json.dumps(samples))
    return str(path)


def common_args(output_dir, base: str, tower: str, data_path: str, image_folder: str, **extra) -> list[str]:
    """A small, fast command line: fp32 on CPU, no reporting, a few steps."""
    args = {
        "model_name_or_path": base, "vision_tower": tower, "data_path": data_path, "image_folder": image_folder,
        "output_dir": str(output_dir), "mm_vision_select_layer": "-2", "mm_use_im_start_end": "False",
        "mm_use_im_patch_token": "False", "per_device_train_batch_size": "2", "gradient_accumulation_steps": "1",
        "num_train_epochs": "1", "learning_rate": "1e-3", "model_max_length": "256", "logging_steps": "1",
        "save_strategy": "no", "report_to": "none", "dataloader_num_workers": "0", "seed": "0",
        "disable_tqdm": "True", "use_cpu": "True", "mm_delta_layers": "1,2,3", "mm_delta_rank": "4",
    }
    args.update({k: str(v) for k, v in extra.items()})
    return [item for key, value in args.items() for item in (f"--{key}", value)]
