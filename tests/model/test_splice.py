"""Splicing image features into the text: which image goes where, and the positions of padded rows."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from tests.conftest import tiny_llava_config, tiny_llava_model


@pytest.fixture()
def model(tower_dir, llama_tokenizer):
    return tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer))


def by_hand(model, ids: list[int], features: list[torch.Tensor]) -> torch.Tensor:
    """Token embeddings with each IMAGE_TOKEN_INDEX replaced by the next image's features, in order."""
    embed = model.get_model().embed_tokens
    parts, images = [], iter(features)
    for token in ids:
        parts.append(next(images) if token == IMAGE_TOKEN_INDEX else embed(torch.tensor([token])))
    return torch.cat(parts)


def test_text_only_first_sample_uses_up_its_placeholder_image(model):
    """A batch whose first sample is text-only carries a placeholder image for it (as the training
    collator gives); the second sample's image token takes images[1], not the placeholder."""
    ids = torch.tensor([[1, 5, 6, 7], [1, IMAGE_TOKEN_INDEX, 7, 8]])
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    labels = ids.masked_fill(ids < 0, IGNORE_INDEX)
    with torch.no_grad():
        _, _, attn, _, embeds, new_labels = model.prepare_inputs_labels_for_multimodal(
            ids, None, torch.ones_like(ids), None, labels, images)
        alone = model.prepare_inputs_labels_for_multimodal(ids[1:], None, None, None, None, images[1:])[4]
        features = model.encode_images(images)
        row0, row1 = by_hand(model, [1, 5, 6, 7], []), by_hand(model, [1, IMAGE_TOKEN_INDEX, 7, 8], [features[1]])
    assert embeds.shape == (2, 3 + 16, 64)
    assert torch.equal(embeds[1], alone[0])
    torch.testing.assert_close(embeds[1], row1, rtol=0, atol=0)
    torch.testing.assert_close(embeds[0, :4], row0, rtol=0, atol=0)
    assert attn[0].tolist() == [1] * 4 + [0] * 15 and attn[1].eq(1).all()
    assert new_labels[1].tolist() == [1] + [IGNORE_INDEX] * 16 + [7, 8]


def test_text_only_middle_sample_between_two_images(model):
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 9], [1, 5, 6], [1, IMAGE_TOKEN_INDEX, 8]])
    images = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        embeds = model.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, images)[4]
        features = model.encode_images(images)
        expected = [by_hand(model, [1, IMAGE_TOKEN_INDEX, 9], [features[0]]), by_hand(model, [1, 5, 6], []),
                    by_hand(model, [1, IMAGE_TOKEN_INDEX, 8], [features[2]])]
    for b, row in enumerate(expected):
        torch.testing.assert_close(embeds[b, :len(row)], row, rtol=0, atol=0)


def test_left_padded_positions_start_at_zero_on_the_first_token(model):
    """With left padding each row's positions count from 0 at its first real token (as
    ``attention_mask.cumsum(-1) - 1`` gives), whatever the padding in front."""
    ids = torch.tensor([[1, IMAGE_TOKEN_INDEX, 7, 8], [1, 5, 6, 7]])
    position_ids = torch.arange(4).expand(2, 4)
    with torch.no_grad():
        pos, attn = model.prepare_inputs_labels_for_multimodal(
            ids, position_ids, torch.ones_like(ids), None, None, torch.randn(2, 3, 56, 56),
            padding_side="left")[1:3]
    assert attn[1].tolist() == [0] * 15 + [1] * 4
    assert pos[0].tolist() == list(range(19))
    assert pos[1, 15:].tolist() == [0, 1, 2, 3]
    expected = (attn.cumsum(-1) - 1).clamp(min=0)
    assert torch.equal(pos * attn, expected * attn)
