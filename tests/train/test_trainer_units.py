"""LLaVATrainer's parts on their own: the tokenization-mismatch allowance and the optimizer groups."""

from __future__ import annotations

import pytest
import torch

from llava.train.arguments import TrainingArguments
from llava.train.llava_trainer import LLaVATrainer, MismatchCounter
from tests.conftest import tiny_llava_config, tiny_llava_model


def test_mismatch_counter_allows_exactly_its_limit():
    counter = MismatchCounter(limit=2, ratio=0.01)
    counter.update(torch.tensor([True, False, True]), ["a", "b", "c"])
    assert counter.count == 2
    counter.update([True], ["a"])  # the same sample met again (another epoch) is not counted again
    counter.update([False, False], ["d", "e"])
    assert counter.count == 2
    with pytest.raises(ValueError, match=r"mismatch in 3 distinct training samples .*first: \['a', 'c', 'f'\]"
                                         r".*ratio 0.01 allows 2 in this run"):
        counter.update([True], ["f"])


def test_mismatch_counter_counts_every_unnamed_sample():
    counter = MismatchCounter(limit=1, ratio=0.5)
    counter.update([True], None)
    with pytest.raises(ValueError, match="mismatch in 2 distinct"):
        counter.update([True], None)


def test_mismatch_counter_with_a_zero_limit_stops_at_the_first():
    counter = MismatchCounter(limit=0.0, ratio=0.0)
    counter.update([False], ["a"])
    with pytest.raises(ValueError, match="mismatch in 1 distinct"):
        counter.update([True], ["a"])


def test_projector_lr_groups_keep_biases_and_norms_out_of_weight_decay(tmp_path, tower_dir, llama_tokenizer):
    model = tiny_llava_model(tiny_llava_config(tower_dir, llama_tokenizer, projector="delta",
                                               mm_delta_depth=0)).train()  # 32-wide tower: no block
    model.get_vision_tower().requires_grad_(False)
    args = TrainingArguments(output_dir=str(tmp_path), weight_decay=0.1, learning_rate=1e-4, mm_projector_lr=2e-3,
                             report_to=[], use_cpu=True)
    trainer = LLaVATrainer(model=model, args=args)
    optimizer = trainer.create_optimizer()
    # independent reference: biases and every norm's parameters do not decay; other weights do
    no_decay = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name.endswith("bias") or "norm" in type(module).__name__.lower():
                no_decay.add(id(param))
    projector = {id(p) for p in model.get_model().mm_projector.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainable)  # each trainable parameter once
    assert any(id(p) in no_decay for p in trainable) and any(id(p) not in no_decay for p in trainable)
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        expected_decay = 0.0 if ids <= no_decay else 0.1
        assert ids <= no_decay or not ids & no_decay, "a group mixes decayed and undecayed parameters"
        assert group["weight_decay"] == expected_decay
        assert group["lr"] == (2e-3 if ids <= projector else 1e-4)
        assert ids <= projector or not ids & projector

    def group_of(param):
        return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))

    delta = model.get_model().mm_projector
    cases = [(model.get_model().norm.weight, 0.0, 1e-4), (model.lm_head.weight, 0.1, 1e-4),
             (delta.query_proj.norm.weight, 0.0, 2e-3), (delta.region_attn.in_proj_bias, 0.0, 2e-3),
             (delta.query_proj.base.weight, 0.1, 2e-3)]
    for param, decay, lr in cases:
        assert (group_of(param)["weight_decay"], group_of(param)["lr"]) == (decay, lr)
