"""The delta projector's feature streams are exactly the tower's hidden states it asks for, in order."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionModel

from tests.conftest import tiny_llava_config, tiny_llava_model


@pytest.mark.parametrize("layers", ["1,2,3", "3,1", "-1,2"])
def test_delta_levels_are_the_configured_hidden_states_in_order(tower_dir, llama_tokenizer, layers):
    config = tiny_llava_config(tower_dir, llama_tokenizer, projector="delta", mm_delta_layers=layers,
                               mm_delta_depth=0)  # this tower is 32 wide, too narrow for delta's block
    model = tiny_llava_model(config)
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    clip = CLIPVisionModel.from_pretrained(tower_dir, local_files_only=True).eval()
    with torch.no_grad():
        features = model.get_vision_tower()(pixels)
        states = clip(pixel_values=pixels, output_hidden_states=True).hidden_states  # 5 = embeddings + 4 layers
    indices = [int(i) % len(states) for i in layers.split(",")]
    expected = torch.cat([states[i][:, 1:] for i in indices], dim=-1)
    assert features.levels.shape == (2, 16, 32 * len(indices))
    torch.testing.assert_close(features.levels, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(features.patch, states[-2][:, 1:], rtol=0, atol=1e-6)
    assert features.grid == (4, 4)
