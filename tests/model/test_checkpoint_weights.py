"""load_pretrained_model takes weights from the checkpoint itself: the tower a full checkpoint
carries (under either transformers' names), and the <im_start>/<im_end> rows stage 1 trained."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel

from llava.model import weights
from llava.model.builder import load_pretrained_model
from tests.conftest import tiny_llava_config, tiny_llava_model

TOWER = "model.vision_tower.vision_tower."


@pytest.fixture()
def reference(tower_dir, llama_tokenizer):
    return tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))


@pytest.mark.parametrize("upstream_names", [True, False])
def test_full_checkpoint_tower_weights_are_the_checkpoint_s(tmp_path, reference, llama_tokenizer, tower_dir,
                                                            upstream_names):
    """The saved tower differs from the mm_vision_tower folder's by +0.5; the loaded tower is the
    saved one, bit for bit. ``upstream_names``: transformers 4's ``...vision_tower.vision_model.*``."""
    folder = tmp_path / "ckpt"
    reference.config.save_pretrained(folder)
    llama_tokenizer.save_pretrained(folder)
    state, saved_tower = {}, {}
    for key, value in reference.state_dict().items():
        if key.startswith(TOWER):
            value = value + 0.5 if value.is_floating_point() else value
            saved_tower[key[len(TOWER):]] = value
            if upstream_names:
                key = key.replace(TOWER, TOWER + "vision_model.")
        state[key] = value.clone()
    torch.save(state, folder / "pytorch_model.bin")
    on_disk = CLIPVisionModel.from_pretrained(tower_dir, local_files_only=True).state_dict()  # mm_vision_tower's
    _, model, _, _ = load_pretrained_model(str(folder), None, None, device="cpu")
    loaded = model.get_vision_tower().vision_tower.state_dict()
    assert set(loaded) == set(saved_tower)
    for key, value in loaded.items():
        assert torch.equal(value, saved_tower[key]), key
    weight = "embeddings.patch_embedding.weight"
    assert not torch.equal(loaded[weight], on_disk[weight])


@pytest.mark.parametrize("form", ["whole matrix", "new rows only"])
def test_stage1_start_end_rows_are_loaded_exactly(tmp_path, reference, llama_tokenizer, form):
    """A stage-1 folder (projector file + config with mm_use_im_start_end) on a base: the
    <im_start>/<im_end> rows are the file's, exactly; the base's rows are unchanged."""
    base = tmp_path / "base"
    reference.save_pretrained(base)
    llama_tokenizer.save_pretrained(base)
    base_rows = reference.get_input_embeddings().weight.detach().clone()
    vocab, hidden = base_rows.shape
    rows = torch.randn(2, hidden, generator=torch.Generator().manual_seed(3))
    stage1 = tmp_path / "stage1"
    state = {f"model.mm_projector.{k}": v for k, v in reference.get_model().mm_projector.state_dict().items()}
    state["model.embed_tokens.weight"] = torch.cat([base_rows, rows]) if form == "whole matrix" else rows
    weights.save_projector(stage1, state)
    config = tiny_llava_config(reference.config.mm_vision_tower, llama_tokenizer, mm_use_im_start_end=True,
                               vocab_size=vocab + 2)
    config.save_pretrained(stage1)
    tokenizer, model, _, _ = load_pretrained_model(str(stage1), str(base), None, device="cpu")
    assert len(tokenizer) == vocab + 2
    assert tokenizer.convert_tokens_to_ids(["<im_start>", "<im_end>"]) == [vocab, vocab + 1]
    embed = model.get_input_embeddings().weight
    assert embed.shape == (vocab + 2, hidden)
    assert torch.equal(embed[-2:], rows)
    assert torch.equal(embed[:vocab], base_rows)

