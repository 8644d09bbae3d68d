"""The speed work keeps outputs identical: the truncated vision tower against the full forward."""

from __future__ import annotations

import pytest
import torch

from llava.bench.presets import Setting, get_preset
from llava.bench.speed import (
    _prepare_stage, _set_checkpointing, build_model, llava_config, training_inputs, write_tower_folder)
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from tests.conftest import make_tower


@pytest.fixture(scope="module")
def deep_tower_dir(tmp_path_factory) -> str:
    # 6 layers, so that stopping early skips real work.
    return make_tower(tmp_path_factory.mktemp("tower6"), num_hidden_layers=6)


def full_forward_states(tower: CLIPVisionTower, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What the tower computed before: every layer, through transformers' own forward."""
    return tower.vision_tower(images.to(tower.dtype), output_hidden_states=True).hidden_states


@pytest.mark.parametrize("select_layer, extra_layers, feature", [
    (-2, (), "patch"),  # LLaVA-1.5: layers 1..5 of 6 run
    (-2, (1, 3, 4, 5), "patch"),  # delta-style levels ending at the select layer
    (-1, (2,), "cls_patch"),  # the deepest layer: nothing can be skipped
    (3, (0, 2), "patch"),  # the embedding output as a level
])
def test_truncated_tower_is_bit_identical_to_full_forward(deep_tower_dir, select_layer, extra_layers, feature):
    tower = CLIPVisionTower(deep_tower_dir, select_layer=select_layer, select_feature=feature,
                            extra_layers=extra_layers).eval()
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = full_forward_states(tower, images)
        states = tower.hidden_states(images)
        features = tower(images)
    assert set(states) == {tower.select_layer, *tower.extra_layers}
    for index, state in states.items():
        assert torch.equal(state, reference[index]), f"hidden state {index} differs from the full forward"
    expected_patch = reference[tower.select_layer]
    expected_patch = expected_patch[:, 1:] if feature == "patch" else expected_patch
    assert torch.equal(features.patch, expected_patch)
    if extra_layers:
        expected_levels = torch.cat([reference[i][:, 1:] for i in tower.extra_layers], dim=-1)
        assert torch.equal(features.levels, expected_levels)
    else:
        assert features.levels is None


def test_layers_after_the_deepest_needed_are_not_run(deep_tower_dir):
    tower = CLIPVisionTower(deep_tower_dir, select_layer=-2, extra_layers=(2, 4)).eval()
    assert tower.layers_needed == 5
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, k=k: calls.append(k))
             for k, layer in enumerate(tower.vision_tower.encoder.layers)]
    with torch.no_grad():
        tower(torch.randn(1, 3, 56, 56))
    for hook in hooks:
        hook.remove()
    assert calls == [0, 1, 2, 3, 4]


def test_truncated_tower_matches_in_bf16_and_under_gradient_checkpointing(deep_tower_dir):
    tower = CLIPVisionTower(deep_tower_dir, select_layer=-2, extra_layers=(1, 3)).to(torch.bfloat16).eval()
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = full_forward_states(tower, images)
        states = tower.hidden_states(images)
    for index, state in states.items():
        assert torch.equal(state, reference[index])
    # Training mode with checkpointing (as gradient_checkpointing_enable() sets on the whole model):
    # same values, and gradients still flow when the tower is unfrozen.
    tower = CLIPVisionTower(deep_tower_dir, select_layer=-2, extra_layers=(1, 3))
    tower.vision_tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tower.train()
    tower.vision_tower.requires_grad_(True)
    with torch.no_grad():
        reference = full_forward_states(tower, images)
    features = tower(images)
    assert torch.equal(features.patch.detach(), reference[tower.select_layer][:, 1:])
    features.levels.sum().backward()
    assert tower.vision_tower.encoder.layers[0].mlp.fc1.weight.grad is not None
    assert tower.vision_tower.encoder.layers[5].mlp.fc1.weight.grad is None  # never run


def test_frozen_tower_builds_no_graph_under_gradient_checkpointing(tmp_path):
    """Stage 1 as the recipes run it (gradient checkpointing + enable_input_require_grads, which
    hooks the tower's patch embedding too): the frozen tower's outputs carry no graph, so no tower
    layer is recomputed or back-propagated through, and the projector still gets its gradients."""
    preset = get_preset("tiny")
    write_tower_folder(str(tmp_path), preset.tower)
    model = build_model(llava_config(preset, Setting("delta", 2), str(tmp_path)), torch.device("cpu"),
                        torch.float32, "sdpa")
    model, _ = _prepare_stage(model, "stage1", preset)
    _set_checkpointing(model, True)
    model.enable_input_require_grads()  # what llava/train/train.py does with --gradient_checkpointing True
    model.train()
    batch = training_inputs(model.config, preset, "stage1", torch.device("cpu"), torch.float32)
    tower = model.get_vision_tower()
    features = tower(batch["images"])
    assert not features.patch.requires_grad and not features.levels.requires_grad
    tower_calls = []
    hooks = [layer.register_full_backward_hook(lambda m, gi, go: tower_calls.append(m))
             for layer in tower.vision_tower.encoder.layers]
    model(**batch, use_cache=False).loss.backward()
    for hook in hooks:
        hook.remove()
    assert tower_calls == []
    projector = model.get_model().mm_projector
    assert all(p.grad is not None for p in projector.parameters())
    # Unfrozen (--unfreeze_mm_vision_tower), the tower builds its graph again.
    tower.vision_tower.requires_grad_(True)
    assert tower(batch["images"]).patch.requires_grad
