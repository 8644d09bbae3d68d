"""The delta projector inside the LLaVA model: token counts, stage-1 files, released checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPVisionConfig

from llava.mm_utils import tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM, weights
from llava.model.builder import load_pretrained_model
from llava.model.multimodal_encoder.clip_encoder import build_image_processor
from tests.conftest import make_tower, released_projector_state, tiny_llava_config, tiny_llava_model

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"


@pytest.fixture(scope="module")
def delta_tower(tmp_path_factory) -> str:
    # delta's refine block needs a width that is a multiple of 32 and >= 64
    return make_tower(tmp_path_factory.mktemp("delta_tower"), hidden_size=64)


@pytest.fixture()
def delta_model(delta_tower, llama_tokenizer):
    return tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=2))


def _logits(model, tokenizer, pixels):
    ids = tokenizer_image_token(PROMPT, tokenizer, return_tensors="pt").unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids, images=pixels).logits


def test_clip_l_336_tower_gives_144_tokens(tmp_path, llama_tokenizer):
    """CLIP-L/14 at 336 px (24 layers, 1024 wide; random weights, config only): [B, 144, H]."""
    tower = tmp_path / "clip-vit-large-patch14-336"
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
    vision.save_pretrained(tower)  # no weights: the tower is built with random init
    build_image_processor(str(tower), vision).save_pretrained(tower)
    config = tiny_llava_config(str(tower), llama_tokenizer, projector="delta", mm_delta_layers="12,16,22,23")
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(config).eval()
    model.get_vision_tower().load_model()
    tower_module = model.get_vision_tower()
    assert tower_module.extra_layers == (12, 16, 22, 23) and tower_module.select_layer == 23
    assert model.num_image_tokens() == 144
    with torch.no_grad():
        out = model.encode_images(torch.randn(2, 3, 336, 336))
    assert out.shape == (2, 144, config.hidden_size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("scale,tokens", [(1, 16), (2, 4), (4, 1)])
def test_token_count_follows_scale_factor(delta_tower, llama_tokenizer, scale, tokens):
    model = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=scale))
    assert model.num_image_tokens() == tokens
    assert model.encode_images(torch.randn(1, 3, 56, 56)).shape == (1, tokens, 64)
    ids = torch.tensor([[1, 5, -200, 7]])
    assert model(input_ids=ids, images=torch.randn(1, 3, 56, 56)).logits.shape[1] == 3 + tokens


def test_invalid_scale_factor_is_named(delta_tower, llama_tokenizer):
    config = tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=3)  # 3 does not divide 4
    with pytest.raises(ValueError, match="scale_factor 3"):
        LlavaLlamaForCausalLM(config)  # fails when the model is built, not at the first image
    bad_layer = tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", mm_delta_layers="1,2,9")
    with pytest.raises(ValueError, match="9"):
        LlavaLlamaForCausalLM(bad_layer)
    for key in ("mm_delta_rank", "mm_delta_depth", "mm_delta_init_gain", "scale_factor"):
        nulled = tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", **{key: None})
        with pytest.raises(ValueError, match=f"the delta projector needs {key}, but the config sets it to None"):
            LlavaLlamaForCausalLM(nulled)


@pytest.mark.parametrize("spelled", ["1,2,3", "1, 2, 3", [1, 2, 3]])
def test_the_same_layers_spelled_otherwise_keep_the_trained_projector(delta_tower, llama_tokenizer, spelled):
    model = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta", scale_factor=2,
                                               mm_delta_layers="1,2,3"))
    projector = model.get_model().mm_projector
    args = SimpleNamespace(vision_tower=delta_tower, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                           mm_projector_type="delta", mm_patch_merge_type="flat", pretrain_mm_mlp_adapter=None,
                           mm_delta_layers=spelled)
    model.get_model().initialize_vision_modules(args)
    assert model.get_model().mm_projector is projector
    assert model.get_vision_tower().extra_layers == (1, 2, 3)


def test_stage1_projector_file_round_trip_through_pretrain_adapter(tmp_path, delta_model, delta_tower,
                                                                   llama_tokenizer):
    """Stage-1 output (mm_projector.bin/.safetensors) -> --pretrain_mm_mlp_adapter -> same outputs."""
    paths = weights.save_projector(tmp_path / "stage1", delta_model.get_model().mm_projector.state_dict())
    pixels = torch.randn(1, 3, 56, 56)
    expected = _logits(delta_model, llama_tokenizer, pixels)
    for path in paths:  # upstream's .bin and our .safetensors both load
        fresh = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta"), seed=1)
        fresh.load_state_dict({k: v for k, v in delta_model.state_dict().items() if "mm_projector" not in k},
                              strict=False)
        args = SimpleNamespace(vision_tower=delta_tower, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                               mm_projector_type="delta", mm_patch_merge_type="flat", pretrain_mm_mlp_adapter=str(path))
        fresh.get_model().initialize_vision_modules(args)
        torch.testing.assert_close(_logits(fresh.eval(), llama_tokenizer, pixels), expected)
    state = weights.read_state_dict(paths[0])
    assert all(k.startswith("model.mm_projector.") for k in state)


def test_released_mm_projector_bin_loads_through_pretrain_adapter(tmp_path, delta_model, delta_tower,
                                                                  llama_tokenizer):
    released = released_projector_state(delta_model)
    torch.save(released, tmp_path / "mm_projector.bin")
    fresh = tiny_llava_model(tiny_llava_config(delta_tower, llama_tokenizer, projector="delta"), seed=1)
    fresh.load_state_dict({k: v for k, v in delta_model.state_dict().items() if "mm_projector" not in k},
                          strict=False)
    args = SimpleNamespace(vision_tower=delta_tower, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
                           mm_projector_type="delta", mm_patch_merge_type="flat",
                           pretrain_mm_mlp_adapter=str(tmp_path / "mm_projector.bin"))
    fresh.get_model().initialize_vision_modules(args)
    pixels = torch.randn(1, 3, 56, 56)
    assert torch.equal(_logits(fresh.eval(), llama_tokenizer, pixels), _logits(delta_model, llama_tokenizer, pixels))


def test_released_full_checkpoint_with_delatallava_config(tmp_path, delta_model, llama_tokenizer):
    """config.json says "delatallava" + top-level scale_factor; weights use the released names."""
    folder = tmp_path / "delta-llava-released"
    folder.mkdir()
    state = {k: v for k, v in delta_model.state_dict().items() if ".mm_projector." not in k}
    state.update(released_projector_state(delta_model))
    torch.save(state, folder / "pytorch_model.bin")
    config = delta_model.config.to_dict()
    for key in ("mm_delta_rank", "mm_delta_depth", "mm_delta_per_level", "conv_mode"):
        config.pop(key)
    config.update(model_type="llava_llama", mm_projector_type="delatallava", scale_factor=2,
                  architectures=["LlavaLlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    llama_tokenizer.save_pretrained(folder)
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu")
    assert model.config.mm_projector_type == "delatallava" and model.num_image_tokens() == 4
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(delta_model, llama_tokenizer, pixels),
                               atol=0, rtol=0)


def test_delta_checkpoint_round_trip_with_our_names(tmp_path, delta_model, llama_tokenizer):
    folder = tmp_path / "ckpt"
    delta_model.save_pretrained(folder)
    llama_tokenizer.save_pretrained(folder)
    saved = json.loads(Path(folder, "config.json").read_text())
    assert saved["mm_projector_type"] == "delta" and saved["scale_factor"] == 2
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu")
    pixels = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_images(pixels), delta_model.encode_images(pixels), atol=0, rtol=0)


def test_init_gain_is_initialisation_only(tmp_path, delta_model, llama_tokenizer):
    """A checkpoint whose config records mm_delta_init_gain loads its trained weights unscaled."""
    delta_model.config.mm_delta_init_gain = 8.0
    folder = tmp_path / "ckpt"
    delta_model.save_pretrained(folder)
    llama_tokenizer.save_pretrained(folder)
    assert json.loads(Path(folder, "config.json").read_text())["mm_delta_init_gain"] == 8.0
    _, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu")
    loaded = model.get_model().mm_projector.region_attn
    assert loaded.init_gain == 8.0
    torch.testing.assert_close(loaded.out_proj.weight,
                               delta_model.get_model().mm_projector.region_attn.out_proj.weight, atol=0, rtol=0)


def test_delta_trains_inside_the_model(delta_model):
    delta_model.train()
    delta_model.requires_grad_(False)
    delta_model.get_model().mm_projector.requires_grad_(True)
    ids = torch.tensor([[1, -200, 7, 8, 9]])
    out = delta_model(input_ids=ids, images=torch.randn(1, 3, 56, 56), labels=ids.clamp(min=0))
    out.loss.backward()
    grads = [p.grad for p in delta_model.get_model().mm_projector.parameters()]
    assert all(g is not None for g in grads)


def test_projector_is_initialised_when_loading_a_plain_llm(tmp_path, delta_tower, llama_tokenizer):
    """from_pretrained on an LLM checkpoint without projector weights (stage-1 start): every
    projector parameter gets a real initialisation (transformers 5 turns torch.nn.init into no-ops
    while loading)."""
    from transformers import LlamaForCausalLM

    config = tiny_llava_config(delta_tower, llama_tokenizer, projector="delta")
    LlamaForCausalLM(config).save_pretrained(tmp_path / "llm")
    model = LlavaLlamaForCausalLM.from_pretrained(tmp_path / "llm", config=config)
    projector = model.get_model().mm_projector
    for name, param in projector.named_parameters():
        assert torch.isfinite(param).all(), name
    for name in ("query_proj.U", "key_proj.V", "value_proj.U", "region_attn.in_proj_weight"):
        std = projector.get_parameter(name).std().item()
        assert 0.005 < std < 0.5, (name, std)
    assert projector.get_parameter("region_attn.in_proj_bias").abs().max() == 0
