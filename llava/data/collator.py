"""Batches dataset items: pads ids and labels, stacks images, adds placeholders for text-only samples."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llava.constants import IGNORE_INDEX


@dataclass
class DataCollatorForSupervisedDataset:
    """Upstream's collator.

    Args:
        tokenizer: gives ``pad_token_id`` and ``padding_side``.
        image_shape: (3, H, W) in a multimodal run, ``None`` for a text-only model. Each text-only
            sample of a multimodal run gets a zero placeholder image, so every rank runs the
            vision tower and projector on every step (ZeRO-3 otherwise waits forever for a rank
            whose batch had no image); the model ignores placeholders (see
            ``prepare_inputs_labels_for_multimodal``).

    Returns (from ``__call__``):
        ``input_ids`` [B, T], ``labels`` [B, T], ``attention_mask`` [B, T], ``images`` [n, 3, H, W]
        (multimodal runs), ``sample_ids`` (list of str) and ``tokenization_mismatch`` [B] (bool),
        which the trainer takes out before the forward pass.
    """

    tokenizer: object
    image_shape: tuple[int, int, int] | None = None

    def __call__(self, instances: list[dict]) -> dict:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("The tokenizer has no pad token; train() sets one (unk or eos)")
        longest = max(len(inst["input_ids"]) for inst in instances)
        batch = len(instances)
        input_ids = torch.full((batch, longest), pad_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for b, inst in enumerate(instances):
            n = len(inst["input_ids"])
            span = slice(longest - n, longest) if left else slice(0, n)
            input_ids[b, span] = inst["input_ids"]
            labels[b, span] = inst["labels"]
            attention_mask[b, span] = 1  # from lengths: a pad id that also occurs in the text stays attended
        out = {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            "sample_ids": [inst.get("id") for inst in instances],
            "tokenization_mismatch": torch.tensor([bool(inst.get("tokenization_mismatch")) for inst in instances]),
        }
        if self.image_shape is not None:
            out["images"] = torch.stack([inst["image"] if "image" in inst else torch.zeros(self.image_shape)
                                         for inst in instances])
        elif any("image" in inst for inst in instances):
            raise ValueError("A sample has an image but the collator was built for a text-only model")
        return out
