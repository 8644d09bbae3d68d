"""Tests of the ``avgpool`` projector: the same-token-budget baseline for ``delta``."""

from __future__ import annotations

import pytest
import torch

from llava.model.language_model.configuration_llava import LlavaConfig
from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.builder import build_vision_projector, projector_class
from llava.model.multimodal_projector.mlp import MLPProjector
from llava.model.multimodal_projector.pooling import AvgPoolProjector

C, H = 32, 48


def make(scale_factor=2, seed=0):
    torch.manual_seed(seed)
    return AvgPoolProjector(in_features=C, hidden_size=H, scale_factor=scale_factor)


def feats(grid, batch=2, cls=False):
    h, w = grid
    return VisionFeatures(torch.randn(batch, h * w + int(cls), C), None, grid)


def test_registry_and_config():
    assert projector_class("avgpool") is AvgPoolProjector
    config = LlavaConfig(mm_projector_type="avgpool", mm_hidden_size=C, hidden_size=H, scale_factor=3,
                         num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    proj = build_vision_projector(config)
    assert isinstance(proj, AvgPoolProjector) and proj.scale_factor == 3 and proj.out_features == H
    assert AvgPoolProjector.vision_layers(config) == ()  # needs only the select layer


@pytest.mark.parametrize("scale, tokens", [(1, 576), (2, 144), (3, 64), (4, 36)])
def test_token_counts_on_24x24(scale, tokens):
    proj = make(scale)
    assert proj.num_tokens((24, 24)) == tokens
    assert proj(feats((24, 24), batch=1)).shape == (1, tokens, H)


@pytest.mark.parametrize("grid, scale, tokens", [((4, 4), 2, 4), ((6, 8), 2, 12), ((6, 9), 3, 6)])
def test_other_grids(grid, scale, tokens):
    proj = make(scale)
    assert proj.num_tokens(grid) == tokens
    assert proj(feats(grid)).shape == (2, tokens, H)


def test_values_are_mlp_of_window_means():
    proj = make(2).eval()
    f = feats((4, 6), cls=True)
    patches = f.patch[:, 1:].reshape(2, 4, 6, C)  # CLS dropped
    means = torch.stack([patches[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean((1, 2))
                         for i in range(2) for j in range(3)], dim=1)  # (2, 6, C), row-major
    mlp = MLPProjector(C, H, 2)
    mlp.load_state_dict(proj.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(proj(f), mlp(means))


def test_bare_tensor_assumes_square_grid():
    proj = make(2).eval()
    x = torch.randn(2, 17, C)  # CLS + 4x4
    with torch.no_grad():
        torch.testing.assert_close(proj(x), proj(VisionFeatures(x[:, 1:], None, (4, 4))))
        assert proj(x[:, 1:]).shape == (2, 4, H)
    with pytest.raises(ValueError, match=r"\(2, 20, 32\)"):
        proj(torch.randn(2, 20, C))


@pytest.mark.parametrize("scale, grid", [(5, (24, 24)), (2, (6, 7))])
def test_scale_not_dividing_grid_raises(scale, grid):
    proj = make(scale)
    with pytest.raises(ValueError, match=rf"scale_factor {scale}.*{grid[0]}x{grid[1]}"):
        proj.num_tokens(grid)
    with pytest.raises(ValueError, match=rf"scale_factor {scale}"):
        proj(feats(grid))


@pytest.mark.parametrize("scale", [0, -2, 1.5])
def test_invalid_scale_factor_raises(scale):
    with pytest.raises(ValueError, match=repr(scale)):
        make(scale)


def test_same_parameters_and_names_as_mlp2x_gelu():
    proj = make()
    mlp = MLPProjector(C, H, 2)
    assert {k: v.shape for k, v in proj.state_dict().items()} == {k: v.shape for k, v in mlp.state_dict().items()}
    proj.load_state_dict(mlp.state_dict(), strict=True)  # an mlp2x_gelu projector file loads unchanged
    with torch.device("meta"):
        full = AvgPoolProjector(in_features=1024, hidden_size=4096)
    assert sum(p.numel() for p in full.parameters()) == 20_979_712


def test_gradients_reach_every_parameter():
    proj = make()
    proj(feats((4, 4))).pow(2).mean().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bf16_and_autocast():
    proj = make()
    f = feats((4, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(proj(f)).all()
    out = proj.to(torch.bfloat16)(f.to(dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, H)
