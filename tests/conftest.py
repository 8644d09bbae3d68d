"""Tiny, random-init components for the whole suite: nothing is downloaded, everything runs on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, CLIPVisionConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from llava.model import LlavaConfig, LlavaLlamaForCausalLM  # noqa: E402
from llava.model.multimodal_encoder.clip_encoder import save_random_vision_tower  # noqa: E402
from tests.tokenizers import make_chatml_tokenizer, make_llama_tokenizer  # noqa: E402

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

# CLIP-shaped tower small enough for CPU tests: 56 px / patch 14 -> 4 x 4 grid, 4 layers.
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  image_size=56, patch_size=14)
TINY_LLM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512)


def make_tower(path: Path, **overrides) -> str:
    """Writes a random CLIP vision tower folder (weights + preprocessor config)."""
    return save_random_vision_tower(path, CLIPVisionConfig(**{**TINY_TOWER, **overrides}))


def tiny_llava_config(tower: str, tokenizer, projector: str = "mlp2x_gelu", **overrides) -> LlavaConfig:
    """A 2-layer Llama config sized to ``tokenizer`` with a vision tower and projector."""
    vision = CLIPVisionConfig.from_pretrained(tower)
    values = dict(
        TINY_LLM,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        mm_vision_tower=tower,
        mm_hidden_size=vision.hidden_size,
        mm_projector_type=projector,
        mm_vision_select_layer=-2,
        mm_delta_layers="1,2,3",
    )
    values.update(overrides)
    return LlavaConfig(**values)


def tiny_llava_model(config: LlavaConfig, seed: int = 0) -> LlavaLlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM(config)
    model.get_vision_tower().load_model()
    return model.eval()


def released_projector_state(model) -> dict[str, torch.Tensor]:
    """A delta model's projector under the released Delta-LLaVA code's names (``model.mm_projector.*``;
    the inverse of ``DeltaProjector.convert_released_state_dict``)."""
    from llava.model.multimodal_projector.delta import DeltaProjector

    ours = model.get_model().mm_projector.state_dict()
    released_names = {}
    for key in _released_projector_keys(model):
        converted = DeltaProjector.convert_released_state_dict({key: torch.zeros(1)})
        released_names[next(iter(converted))] = key
    assert set(released_names) == set(ours)
    return {f"model.mm_projector.{released_names[k]}": v for k, v in ours.items()}


def _released_projector_keys(model) -> list[str]:
    c = model.get_model().mm_projector.in_features
    keys = []
    for p in ("q_proj_1", "k_proj_1", "v_proj_1"):
        keys += [f"{p}.shared_weight.weight", f"{p}.U", f"{p}.V", f"{p}.norm.weight", f"{p}.norm.bias"]
    keys += ["clip_attn.in_proj_weight", "clip_attn.in_proj_bias", "clip_attn.out_proj.weight",
             "clip_attn.out_proj.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    ntb = "combined_block.ntb"
    keys += [f"{ntb}.patch_embed.conv.weight", f"{ntb}.norm_mhsa.weight", f"{ntb}.norm_mhsa.bias",
             f"{ntb}.e_mhsa.norm.weight", f"{ntb}.e_mhsa.norm.bias", f"{ntb}.projection.conv.weight",
             f"{ntb}.mhca.group_conv3x3.weight", f"{ntb}.mhca.norm.weight", f"{ntb}.mhca.norm.bias",
             f"{ntb}.mhca.projection.weight", f"{ntb}.mlp.conv1.weight", f"{ntb}.mlp.conv1.bias",
             f"{ntb}.mlp.conv2.weight", f"{ntb}.mlp.conv2.bias"]
    keys += [f"{ntb}.e_mhsa.{n}.{t}" for n in ("q", "k", "v", "proj") for t in ("weight", "bias")]
    assert c % 32 == 0
    return keys


def hub_cache_snapshot(cache: Path, repo_id: str) -> Path:
    """An empty snapshot folder of ``repo_id`` in a Hugging Face cache at ``cache``, laid out as
    ``hf download`` leaves it (``refs/main`` names the snapshot); fill it with the model's files."""
    commit = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    return snapshot


@pytest.fixture(scope="session")
def tower_dir(tmp_path_factory) -> str:
    return make_tower(tmp_path_factory.mktemp("tower"))


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory) -> str:
    return make_llama_tokenizer(tmp_path_factory.mktemp("llama_tok"))


@pytest.fixture(scope="session")
def chatml_tokenizer_dir(tmp_path_factory) -> str:
    return make_chatml_tokenizer(tmp_path_factory.mktemp("chatml_tok"))


@pytest.fixture()
def llama_tokenizer(llama_tokenizer_dir):
    return AutoTokenizer.from_pretrained(llama_tokenizer_dir)
