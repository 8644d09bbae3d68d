"""load_pretrained_model: decided by the files present, on CPU, with upstream's on-disk formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava.mm_utils import tokenizer_image_token
from llava.model import LlavaLlamaForCausalLM, weights
from llava.model.attention import select_attn_implementation
from llava.model.builder import checkpoint_kind, load_pretrained_model
from tests.conftest import hub_cache_snapshot, tiny_llava_config, tiny_llava_model

PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"


def _save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)


def _ids(tokenizer):
    return tokenizer_image_token(PROMPT, tokenizer, return_tensors="pt").unsqueeze(0)


def _logits(model, tokenizer, pixels):
    with torch.no_grad():
        return model(input_ids=_ids(tokenizer), images=pixels).logits


@pytest.fixture()
def reference(tower_dir, llama_tokenizer):
    return tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))


def test_upstream_llava15_on_disk_format_loads_and_generates(tmp_path, reference, llama_tokenizer, tower_dir):
    """config.json with mm_* keys and model_type "llava", pytorch_model.bin with upstream names,
    no vision-tower weights (read from mm_vision_tower)."""
    folder = tmp_path / "llava-v1.5-tiny"
    folder.mkdir()
    state = {k: v for k, v in reference.state_dict().items() if ".vision_tower." not in k}
    assert "model.mm_projector.0.weight" in state and "model.mm_projector.2.weight" in state
    torch.save(state, folder / "pytorch_model.bin")
    config = reference.config.to_dict()
    config.update(model_type="llava", architectures=["LlavaLlamaForCausalLM"])
    for key in ("scale_factor", "mm_delta_rank", "mm_delta_layers", "mm_delta_depth", "mm_delta_per_level", "conv_mode"):
        config.pop(key)  # a released LLaVA-1.5 config has none of our keys
    (folder / "config.json").write_text(json.dumps(config))
    _save_tokenizer(llama_tokenizer, folder)

    assert checkpoint_kind(folder) == "full"
    tokenizer, model, processor, context_len = load_pretrained_model(str(folder), None, "llava-v1.5-tiny", device="cpu")
    assert isinstance(model, LlavaLlamaForCausalLM) and context_len == 2048
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(reference, llama_tokenizer, pixels))
    out = model.generate(_ids(tokenizer), images=pixels, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape == (1, 5)
    assert processor.crop_size["height"] == 56


def test_full_checkpoint_with_upstream_vision_model_prefix(tmp_path, reference, llama_tokenizer):
    """Tower weights saved by transformers 4 (`...vision_tower.vision_model.*`) are mapped, not dropped."""
    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    state = {}
    for k, v in reference.state_dict().items():
        state[k.replace("vision_tower.vision_tower.", "vision_tower.vision_tower.vision_model.")] = v
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    # a tower folder with different weights proves the checkpoint's own are used
    with torch.no_grad():
        for p in reference.get_vision_tower().parameters():
            p.add_(0.5)
    # upstream's use_flash_attn on a machine that cannot use it: loads on SDPA instead of failing
    _, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu", use_flash_attn=True)
    assert model.config._attn_implementation == "sdpa"
    ours = model.get_vision_tower().state_dict()
    theirs = {k.replace("vision_model.", ""): v - 0.5 for k, v in reference.get_vision_tower().state_dict().items()}
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key])


def test_projector_only_plus_base(tmp_path, reference, llama_tokenizer, tower_dir):
    base = tmp_path / "base"
    reference.save_pretrained(base)  # a base with the LLM weights (its projector is overwritten below)
    _save_tokenizer(llama_tokenizer, base)
    stage1 = tmp_path / "stage1"
    weights.save_projector(stage1, reference.get_model().mm_projector.state_dict())
    reference.config.save_pretrained(stage1)
    assert sorted(p.name for p in stage1.iterdir()) == ["config.json", "mm_projector.bin", "mm_projector.safetensors"]
    with pytest.raises(ValueError, match="pass model_base"):
        load_pretrained_model(str(stage1), None, None, device="cpu")
    # the projector file must win over whatever projector the base folder has
    with torch.no_grad():
        reference.get_model().mm_projector[0].weight.add_(1.0)
    weights.save_projector(stage1, reference.get_model().mm_projector.state_dict())
    tokenizer, model, _, _ = load_pretrained_model(str(stage1), str(base), None, device="cpu")
    torch.testing.assert_close(model.get_model().mm_projector[0].weight, reference.get_model().mm_projector[0].weight)
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(reference, llama_tokenizer, pixels))


def _base_and_lora(reference, tokenizer, tmp_path):
    """Saves ``reference`` as the base folder and wraps it in a LoRA adapter with non-zero weights."""
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    reference.save_pretrained(base)
    _save_tokenizer(tokenizer, base)
    torch.manual_seed(1)
    return base, get_peft_model(reference, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))


def test_lora_checkpoint_is_detected_by_files_and_merged(tmp_path, reference, llama_tokenizer):
    base, peft_model = _base_and_lora(reference, llama_tokenizer, tmp_path)
    with torch.no_grad():
        peft_model.base_model.model.model.mm_projector[2].bias.add_(0.25)
    lora_dir = tmp_path / "some-folder-name"  # the name says nothing about LoRA
    peft_model.save_pretrained(lora_dir)
    reference.config.save_pretrained(lora_dir)
    projector = {f"base_model.model.model.mm_projector.{k}": v
                 for k, v in peft_model.base_model.model.model.mm_projector.state_dict().items()}
    torch.save(projector, lora_dir / weights.NON_LORA_FILE)
    assert checkpoint_kind(lora_dir, str(base)) == "lora"
    with pytest.raises(ValueError, match=r"some-folder-name holds a LoRA adapter \(adapter_config.json\); pass "
                                         r"model_base"):
        load_pretrained_model(str(lora_dir), None, None, device="cpu")
    tokenizer, model, _, _ = load_pretrained_model(str(lora_dir), str(base), None, device="cpu")
    pixels = torch.randn(1, 3, 56, 56)
    expected = _logits(peft_model, llama_tokenizer, pixels)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), expected, atol=1e-4, rtol=1e-4)


def test_lora_checkpoint_of_the_released_code_loads_its_projector(tmp_path, llama_tokenizer):
    """The released code's LoRA runs save the projector in non_lora_trainables.bin under its own
    names (q_proj_1, clip_attn, combined_block.ntb, ...): they are mapped, as in full checkpoints."""
    from tests.conftest import make_tower, released_projector_state

    tower = make_tower(tmp_path / "tower", hidden_size=64)
    reference = tiny_llava_model(tiny_llava_config(tower, llama_tokenizer, projector="delatallava", scale_factor=2))
    base, peft_model = _base_and_lora(reference, llama_tokenizer, tmp_path)
    llava = peft_model.base_model.model
    with torch.no_grad():
        for p in llava.get_model().mm_projector.parameters():
            p.add_(0.01 * torch.randn_like(p))  # trained: differs from the base's projector
    lora_dir = tmp_path / "released-lora"
    peft_model.save_pretrained(lora_dir)
    reference.config.save_pretrained(lora_dir)
    torch.save({f"base_model.model.{k}": v for k, v in released_projector_state(llava).items()},
               lora_dir / weights.NON_LORA_FILE)
    tokenizer, model, _, _ = load_pretrained_model(str(lora_dir), str(base), None, device="cpu")
    pixels = torch.randn(1, 3, 56, 56)
    expected = _logits(peft_model, llama_tokenizer, pixels)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_loading_keeps_projector_and_tower(tmp_path, reference, llama_tokenizer, bits):
    import bitsandbytes as bnb

    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu",
                                                   load_4bit=bits == 4, load_8bit=bits == 8)
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
    for module in [*model.get_model().mm_projector.modules(), *model.get_vision_tower().modules()]:
        assert not isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    assert model.get_model().mm_projector[0].weight.dtype == torch.float32
    out = model.generate(_ids(tokenizer), images=torch.randn(1, 3, 56, 56), max_new_tokens=3, min_new_tokens=3,
                         do_sample=False)
    assert out.shape == (1, 3)


def test_hub_id_loads_from_the_hugging_face_cache_only(tmp_path, reference, llama_tokenizer, monkeypatch):
    """``liuhaotian/llava-v1.5-7b``-style ids, as upstream's commands pass them, load from the local
    Hugging Face cache (its on-disk layout, written here); one not cached says how to get it."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    snapshot = hub_cache_snapshot(cache, "someone/llava-v1.5-tiny")
    reference.save_pretrained(snapshot)
    _save_tokenizer(llama_tokenizer, snapshot)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    tokenizer, model, _, _ = load_pretrained_model("someone/llava-v1.5-tiny", None, None, device="cpu")
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(reference, llama_tokenizer, pixels))
    with pytest.raises(FileNotFoundError, match=r"someone/llava-v1.5-7b is not a local folder, and the Hugging "
                                                r"Face cache has no copy.*hf download someone/llava-v1.5-7b"):
        load_pretrained_model("someone/llava-v1.5-7b", None, None, device="cpu")
    stage1 = tmp_path / "stage1"  # a projector-only folder needs its base LLM, here an uncached hub id
    reference.config.save_pretrained(stage1)
    torch.save({k: v for k, v in reference.state_dict().items() if "mm_projector" in k}, stage1 / "mm_projector.bin")
    with pytest.raises(FileNotFoundError, match="model_base someone/vicuna-7b is not a local folder"):
        load_pretrained_model(str(stage1), "someone/vicuna-7b", None, device="cpu")


def test_cache_dir_and_other_keywords_reach_the_loaders(tmp_path, reference, llama_tokenizer):
    """As upstream, keywords go on to from_pretrained; cache_dir also finds a hub id in that cache."""
    cache = tmp_path / "elsewhere"
    snapshot = hub_cache_snapshot(cache, "someone/llava-v1.5-tiny")
    reference.save_pretrained(snapshot)  # model.safetensors
    _save_tokenizer(llama_tokenizer, snapshot)
    tokenizer, model, _, _ = load_pretrained_model("someone/llava-v1.5-tiny", None, None, device="cpu",
                                                   cache_dir=str(cache))
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(reference, llama_tokenizer, pixels))
    with pytest.raises(OSError, match="pytorch_model.bin"):  # told not to read the safetensors file it has
        load_pretrained_model(snapshot, None, None, device="cpu", use_safetensors=False)


def test_missing_weights_and_tower_errors(tmp_path, llama_tokenizer):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="has no weights"):
        checkpoint_kind(empty)
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        checkpoint_kind(tmp_path / "nope")
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        CLIPVisionTower("openai/clip-vit-large-patch14-336-not-cached")


def test_llava_model_trained_without_a_tower_loads_as_a_language_model(tmp_path, llama_tokenizer):
    """llava.train.train without --vision_tower saves LlavaLlamaForCausalLM with mm_vision_tower null:
    it loads, without an image processor, and generates text."""
    from llava.model import LlavaConfig
    from tests.conftest import TINY_LLM

    config = LlavaConfig(**TINY_LLM, vocab_size=len(llama_tokenizer), bos_token_id=llama_tokenizer.bos_token_id,
                         eos_token_id=llama_tokenizer.eos_token_id, pad_token_id=0)
    torch.manual_seed(0)
    saved = LlavaLlamaForCausalLM(config).eval()
    saved.save_pretrained(tmp_path / "text")
    _save_tokenizer(llama_tokenizer, tmp_path / "text")
    assert json.loads((tmp_path / "text" / "config.json").read_text())["architectures"] == ["LlavaLlamaForCausalLM"]
    tokenizer, model, processor, _ = load_pretrained_model(str(tmp_path / "text"), None, None, device="cpu")
    assert processor is None and model.get_vision_tower() is None
    ids = tokenizer("USER: Hello ASSISTANT:", return_tensors="pt").input_ids
    expected = saved.generate(ids, max_new_tokens=4, do_sample=False)
    assert model.generate(ids, max_new_tokens=4, do_sample=False).tolist() == expected.tolist()


def test_transformers_format_llava_checkpoint_is_named_as_such(tmp_path, llama_tokenizer):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig as HFLlavaConfig, LlavaForConditionalGeneration

    from tests.conftest import TINY_LLM, TINY_TOWER

    hf = HFLlavaConfig(text_config=LlamaConfig(**TINY_LLM, vocab_size=len(llama_tokenizer) + 1),
                       vision_config=CLIPVisionConfig(**TINY_TOWER), image_token_index=len(llama_tokenizer))
    LlavaForConditionalGeneration(hf).save_pretrained(tmp_path / "hf")
    _save_tokenizer(llama_tokenizer, tmp_path / "hf")
    with pytest.raises(ValueError, match=r"is a transformers-format LLaVA checkpoint \(architectures "
                                         r"\['LlavaForConditionalGeneration'\].*LLaVA's own layout"):
        load_pretrained_model(str(tmp_path / "hf"), None, None, device="cpu")


def test_tower_folder_without_weights_is_an_error_not_a_random_tower(tmp_path, reference, llama_tokenizer, tower_dir):
    """A checkpoint without the tower's weights reads them from mm_vision_tower; a folder there
    with a config but no weights would silently give a random tower."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if ".vision_tower." not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})
    bare = tmp_path / "tower-config-only"
    shutil.copytree(tower_dir, bare, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "mm_vision_tower": str(bare)}))
    with pytest.raises(FileNotFoundError, match=r"does not hold the vision tower's weights and its tower folder "
                                                r".*tower-config-only \(mm_vision_tower\) has no"):
        load_pretrained_model(str(folder), None, None, device="cpu")
    (folder / "config.json").write_text(json.dumps({**config, "mm_vision_tower": str(tower_dir)}))
    tokenizer, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu")
    pixels = torch.randn(1, 3, 56, 56)
    torch.testing.assert_close(_logits(model, tokenizer, pixels), _logits(reference, llama_tokenizer, pixels))


def _drop_keys(folder: Path, prefix: str) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith(prefix)}, folder / "model.safetensors",
              metadata={"format": "pt"})


def test_language_model_weights_missing_from_the_files_are_an_error(tmp_path, reference, llama_tokenizer, tower_dir):
    """from_pretrained leaves them at random init and only logs a table; a tied LM head is not missing."""
    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    _drop_keys(folder, "model.layers.1.")
    with pytest.raises(ValueError, match=r"ckpt lacks 9 of the language model's weights, which would be left at "
                                         r"random init: \['model.layers.1.input_layernorm.weight', .*\] \.\.\.; "
                                         r"its weight files are incomplete$"):
        load_pretrained_model(str(folder), None, None, device="cpu")
    # the same through model_base, for a projector-only checkpoint
    stage1 = tmp_path / "stage1"
    weights.save_projector(stage1, reference.get_model().mm_projector.state_dict())
    reference.config.save_pretrained(stage1)
    with pytest.raises(ValueError, match=r"ckpt lacks 9 of the language model's weights"):
        load_pretrained_model(str(stage1), str(folder), None, device="cpu")
    tied = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer, tie_word_embeddings=True))
    tied.save_pretrained(tmp_path / "tied")
    _save_tokenizer(llama_tokenizer, tmp_path / "tied")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tied" / "model.safetensors"), framework="pt") as handle:
        assert "lm_head.weight" not in handle.keys()
    _, model, _, _ = load_pretrained_model(str(tmp_path / "tied"), None, None, device="cpu")
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_broken_files_and_wrong_model_base_are_named(tmp_path, reference, llama_tokenizer, tower_dir):
    """Each is refused before any weights are read, naming the file or the folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import TINY_LLM

    folder = tmp_path / "ckpt"
    reference.save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"ckpt/model.safetensors \(\d+ bytes\) is not a complete safetensors file "
                                         r"\(.*incomplete metadata.*\); copy or download it again"):
        load_pretrained_model(str(folder), None, None, device="cpu")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"model.safetensors \(0 bytes\) is not a complete safetensors file "
                                         r"\(.*header too small\)"):
        load_pretrained_model(str(folder), None, None, device="cpu")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config[:100])
    with pytest.raises(ValueError, match=r"ckpt/config.json is not valid JSON \(Unterminated string starting at: "
                                         r"line \d+ column \d+\)"):
        load_pretrained_model(str(folder), None, None, device="cpu")

    stage1 = tmp_path / "stage1"
    weights.save_projector(stage1, reference.get_model().mm_projector.state_dict())
    reference.config.save_pretrained(stage1)
    narrow = tmp_path / "narrow"
    LlamaForCausalLM(LlamaConfig(**{**TINY_LLM, "hidden_size": 32}, vocab_size=len(llama_tokenizer))).save_pretrained(
        narrow)
    _save_tokenizer(llama_tokenizer, narrow)
    with pytest.raises(ValueError, match=r"model_base \S*narrow has hidden_size 32, the checkpoint \S*stage1 expects "
                                         r"64: pass the LLM it was trained on"):
        load_pretrained_model(str(stage1), str(narrow), None, device="cpu")
    with pytest.raises(ValueError, match=r"model_base \S+ is not a language model \(its config.json has model_type "
                                         r"'clip_vision_model' and no vocab_size\); pass the LLM \S*stage1 was"):
        load_pretrained_model(str(stage1), tower_dir, None, device="cpu")
    untokenized = tmp_path / "no-tokenizer"
    reference.save_pretrained(untokenized)
    with pytest.raises(FileNotFoundError, match=r"No tokenizer files in \S*stage1 or in model_base \S*no-tokenizer "
                                                r"\(tokenizer_config.json, tokenizer.json, tokenizer.model\)"):
        load_pretrained_model(str(stage1), str(untokenized), None, device="cpu")
    with pytest.raises(ValueError, match=r"^model_base is empty: pass the language model"):
        load_pretrained_model(str(stage1), "", None, device="cpu")
    with pytest.raises(FileNotFoundError, match="^Model path is empty"):
        load_pretrained_model("", None, None, device="cpu")


def test_dtype_auto_and_by_name(tmp_path, reference, llama_tokenizer):
    folder = tmp_path / "ckpt"
    reference.to(torch.bfloat16).save_pretrained(folder)
    _save_tokenizer(llama_tokenizer, folder)
    assert load_pretrained_model(str(folder), None, None, device="cpu", torch_dtype="auto")[1].dtype == torch.bfloat16
    assert load_pretrained_model(str(folder), None, None, device="cpu", dtype="float32")[1].dtype == torch.float32
    with pytest.raises(ValueError, match="dtype 'fp16' is not a torch dtype"):
        load_pretrained_model(str(folder), None, None, device="cpu", torch_dtype="fp16")


def test_projector_shape_mismatch_names_the_key(reference):
    wrong = {"0.weight": torch.zeros(64, 99), "0.bias": torch.zeros(64), "2.weight": torch.zeros(64, 64),
             "2.bias": torch.zeros(64)}
    with pytest.raises(ValueError, match=r"'0.weight' in x.bin has shape \(64, 99\)"):
        weights.load_projector_weights(reference.get_model().mm_projector, wrong, "mlp2x_gelu", source="x.bin")


def test_another_projector_types_file_is_named_as_such(reference, tower_dir, llama_tokenizer):
    """An mlp2x_gelu adapter given to a delta model: the error names the file and the type, not
    only delta's released-name conversion that failed on the way."""
    delta = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer, projector="delta", mm_delta_depth=0))
    mlp = {f"model.mm_projector.{k}": v for k, v in reference.get_model().mm_projector.state_dict().items()}
    with pytest.raises(ValueError, match=r"Projector weights in stage1/mm_projector.bin do not fit mm_projector_type "
                                         r"'delta': missing .*unexpected \['0.bias', '0.weight'.*another "
                                         r"--mm_projector_type\?"):
        weights.load_projector_weights(delta.get_model().mm_projector, mlp, "delta", source="stage1/mm_projector.bin")


def test_a_delta_file_of_another_depth_names_the_keys_that_do_not_fit(tmp_path, llama_tokenizer):
    """Not a failed released-name conversion: the keys the model lacks are named."""
    from tests.conftest import make_tower

    tower = make_tower(tmp_path / "tower", hidden_size=64)
    shallow, deeper = (tiny_llava_model(tiny_llava_config(tower, llama_tokenizer, projector="delta", mm_delta_depth=d))
                       for d in (0, 1))
    state = {f"model.mm_projector.{k}": v for k, v in deeper.get_model().mm_projector.state_dict().items()}
    with pytest.raises(ValueError, match=r"'delta': missing \[\], unexpected \['refine.0.[^\]]*\] \.\.\.$"):
        weights.load_projector_weights(shallow.get_model().mm_projector, state, "delta", source="mm_projector.bin")


def test_attention_backend_choice():
    assert select_attn_implementation("cpu") == "sdpa"
    with pytest.raises(ImportError, match="flash"):
        select_attn_implementation("cpu", "flash_attention_2")
    with pytest.raises(ValueError, match="Unknown attn_implementation"):
        select_attn_implementation("cpu", "magic")


def test_use_flash_attn_falls_back_to_sdpa_with_the_reason(caplog):
    """Upstream's --use-flash-attn on a machine without flash-attn (or without CUDA) serves on SDPA and
    says why; naming the backend explicitly still raises."""
    with caplog.at_level("WARNING", logger="llava.model.attention"):
        assert select_attn_implementation("cpu", prefer_flash=True) == "sdpa"
    assert "flash-attention 2 cannot be used" in caplog.text and "device cpu" in caplog.text
    assert select_attn_implementation("cpu", "eager", prefer_flash=True) == "eager"


def test_import_failure_surfaces_real_error(tmp_path):
    """A broken module inside the package is reported as itself, not hidden behind another error."""
    code = ("import sys; sys.modules['llava.model.multimodal_projector.mlp'] = None\n"
            "from llava import LlavaLlamaForCausalLM\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(("ImportError", "ModuleNotFoundError")) and "llava.model.multimodal_projector.mlp" in last


def test_no_bare_except_in_package():
    root = Path(__file__).resolve().parents[2] / "llava"
    offenders = [str(p) for p in root.rglob("*.py") if "except:" in p.read_text().replace(" ", "")]
    assert not offenders
