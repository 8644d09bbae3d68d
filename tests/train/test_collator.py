"""The training collator: padding on the tokenizer's side, the attention mask from lengths, placeholder images."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IGNORE_INDEX
from llava.data.collator import DataCollatorForSupervisedDataset

X = IGNORE_INDEX


@pytest.fixture()
def tokenizer(llama_tokenizer):
    """The Llama tokenizer padded with unk, as train() sets it for v1-era templates."""
    llama_tokenizer.pad_token = llama_tokenizer.unk_token
    return llama_tokenizer


def item(ids, labels, **extra):
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), **extra}


@pytest.mark.parametrize("side", ["right", "left"])
def test_pads_on_the_tokenizer_side(tokenizer, side):
    tokenizer.padding_side = side
    pad = tokenizer.pad_token_id
    assert pad is not None
    batch = DataCollatorForSupervisedDataset(tokenizer=tokenizer)([
        item([1, 5, 6, 7], [X, X, 6, 7], id="long"), item([1, 8], [X, 8], id="short")])
    if side == "left":
        assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [pad, pad, 1, 8]]
        assert batch["labels"].tolist() == [[X, X, 6, 7], [X, X, X, 8]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    else:
        assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, pad, pad]]
        assert batch["labels"].tolist() == [[X, X, 6, 7], [X, 8, X, X]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["sample_ids"] == ["long", "short"]
    assert batch["tokenization_mismatch"].tolist() == [False, False]
    assert "images" not in batch


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_pad_id_inside_the_text_stays_attended(tokenizer, side):
    """Trainings that pad with unk or eos have that id in real text: the mask follows lengths, not ids."""
    tokenizer.padding_side = side
    pad = tokenizer.pad_token_id
    batch = DataCollatorForSupervisedDataset(tokenizer=tokenizer)([
        item([1, 5, pad, 7, pad], [X, 5, pad, 7, pad]), item([1, pad], [X, pad])])
    mask = batch["attention_mask"].tolist()
    assert mask[0] == [1, 1, 1, 1, 1]
    assert mask[1] == ([1, 1, 0, 0, 0] if side == "right" else [0, 0, 0, 1, 1])
    assert batch["labels"][0].tolist() == [X, 5, pad, 7, pad]


def test_text_only_samples_get_zero_placeholder_images(tokenizer):
    image = torch.randn(3, 8, 8)
    batch = DataCollatorForSupervisedDataset(tokenizer=tokenizer, image_shape=(3, 8, 8))([
        item([1, 5], [X, 5]), item([1, 6], [X, 6], image=image, tokenization_mismatch=True)])
    assert batch["images"].shape == (2, 3, 8, 8)
    assert torch.equal(batch["images"][0], torch.zeros(3, 8, 8))
    assert torch.equal(batch["images"][1], image)
    assert batch["tokenization_mismatch"].tolist() == [False, True]
