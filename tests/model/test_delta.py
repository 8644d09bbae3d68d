"""Tests of the ``delta`` projector (Delta-LLaVA, arXiv 2512.18910): shapes, counts, parity, names."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llava.model.language_model.configuration_llava import LlavaConfig
from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.builder import build_vision_projector, projector_class
from llava.model.multimodal_projector.delta import (
    DeltaProjection,
    DeltaProjector,
    RegionAttention,
    block_widths,
    parse_layers,
    resized_sincos_table,
    sincos_table_2d,
)
from llava.model.multimodal_projector.mlp import MLPProjector

# Small widths keep the suite fast: C = 64 gives a block split of (32, 32), C = 128 of (96, 32).
C, H, L = 64, 48, 2


def make(*, in_features=C, hidden_size=H, num_levels=L, scale_factor=2, rank=4, depth=1, per_level=False, seed=0):
    torch.manual_seed(seed)
    return DeltaProjector(in_features=in_features, hidden_size=hidden_size, num_levels=num_levels,
                          scale_factor=scale_factor, rank=rank, depth=depth, per_level=per_level)


def feats(grid=(4, 4), *, batch=2, width=C, levels=L, cls=False, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    patch = torch.randn(batch, h * w + int(cls), width, generator=g).to(dtype)
    multi = torch.randn(batch, h * w, levels * width, generator=g).to(dtype)
    return VisionFeatures(patch, multi, grid)


def tiny_config(**kwargs) -> LlavaConfig:
    base = dict(mm_projector_type="delta", mm_hidden_size=C, hidden_size=H, num_hidden_layers=1,
                num_attention_heads=4, intermediate_size=64, vocab_size=100, mm_delta_layers="1,2", mm_delta_rank=4)
    base.update(kwargs)
    return LlavaConfig(**base)


# ---------------------------------------------------------------------------------------------
# Registry and config
# ---------------------------------------------------------------------------------------------


def test_registered_under_both_names():
    assert projector_class("delta") is DeltaProjector
    assert projector_class("delatallava") is DeltaProjector  # the released config's spelling


def test_from_config():
    proj = build_vision_projector(tiny_config(mm_projector_type="delatallava", scale_factor=3,
                                              mm_delta_layers=[1, 2, 3], mm_delta_depth=2, mm_delta_per_level=True))
    assert isinstance(proj, DeltaProjector)
    assert (proj.in_features, proj.out_features, proj.num_levels) == (C, H, 3)
    assert (proj.scale_factor, proj.rank, proj.depth, proj.per_level) == (3, 4, 2, True)
    assert len(proj.refine) == 2
    assert DeltaProjector.vision_layers(tiny_config(mm_delta_layers="12, 16,22 ,23")) == (12, 16, 22, 23)
    assert DeltaProjector.vision_layers(LlavaConfig()) == (12, 16, 22, 23)  # the declared default
    assert DeltaProjector.vision_layers(tiny_config(mm_delta_layers=(-3, -1))) == (-3, -1)


@pytest.mark.parametrize("value", ["12,x", "", "12;16", "12,,16", [], [1.5], ["a"], None, 12, [True]])
def test_invalid_layer_values_name_the_value(value):
    with pytest.raises(ValueError) as err:
        parse_layers(value)
    assert repr(value) in str(err.value)
    with pytest.raises(ValueError, match="mm_delta_layers"):
        DeltaProjector.vision_layers(tiny_config(mm_delta_layers=value))


# ---------------------------------------------------------------------------------------------
# Token counts and grids
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale, tokens", [(1, 576), (2, 144), (3, 64), (4, 36)])
def test_token_counts_on_24x24(scale, tokens):
    proj = make(scale_factor=scale, depth=1).eval()
    assert proj.num_tokens((24, 24)) == tokens
    with torch.no_grad():
        out = proj(feats((24, 24), batch=1))
    assert out.shape == (1, tokens, H)


@pytest.mark.parametrize("grid, scale, tokens", [((4, 4), 2, 4), ((6, 8), 2, 12), ((6, 9), 3, 6), ((2, 2), 1, 4)])
def test_other_grids(grid, scale, tokens):
    proj = make(scale_factor=scale)
    assert proj.num_tokens(grid) == tokens
    assert proj(feats(grid)).shape == (2, tokens, H)
    assert proj(feats(grid, cls=True)).shape == (2, tokens, H)  # a leading CLS token is dropped


def test_cls_token_is_dropped():
    proj = make().eval()
    with_cls = feats((4, 4), cls=True)
    without = VisionFeatures(with_cls.patch[:, 1:], with_cls.levels, with_cls.grid)
    with torch.no_grad():
        assert torch.equal(proj(with_cls), proj(without))


@pytest.mark.parametrize("scale, grid", [(5, (24, 24)), (2, (6, 7)), (4, (8, 6))])
def test_scale_not_dividing_grid_raises(scale, grid):
    proj = make(scale_factor=scale)
    with pytest.raises(ValueError, match=rf"scale_factor {scale}.*{grid[0]}x{grid[1]}"):
        proj.num_tokens(grid)
    with pytest.raises(ValueError, match=rf"scale_factor {scale}"):
        proj(feats(grid))


@pytest.mark.parametrize("scale", [0, -1, 2.0, True])
def test_invalid_scale_factor_raises(scale):
    with pytest.raises(ValueError, match=re.escape(repr(scale))):
        make(scale_factor=scale)
    with pytest.raises(ValueError, match=re.escape(repr(scale))):
        build_vision_projector(tiny_config(scale_factor=scale))


def test_bad_features_raise_with_shapes():
    proj = make()
    f = feats((4, 4))
    with pytest.raises(ValueError, match=r"levels=None.*\(2, 16, 64\)"):
        proj(VisionFeatures(f.patch, None, f.grid))
    with pytest.raises(ValueError, match=r"levels \(2, 16, 192\)"):
        proj(VisionFeatures(f.patch, torch.randn(2, 16, 3 * C), f.grid))
    with pytest.raises(ValueError, match=r"18 tokens.*4x4 needs 16"):
        proj(VisionFeatures(torch.randn(2, 18, C), f.levels, (4, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, 16, 64\)"):
        proj(f.patch)


def test_block_widths_follow_tower_width():
    assert block_widths(1024) == (768, 256)
    assert block_widths(768) == (576, 192)
    assert block_widths(1152) == (864, 288)
    assert block_widths(128) == (96, 32)
    assert block_widths(64) == (32, 32)
    for bad in (32, 48, 100):
        with pytest.raises(ValueError, match=str(bad)):
            block_widths(bad)
    make(in_features=48, depth=0)  # without the block, any width divisible by 8 heads and 4 works


# ---------------------------------------------------------------------------------------------
# Parameter counts (exact)
# ---------------------------------------------------------------------------------------------

DEFAULT_PARTS = {
    "query_proj": 1024 * 1024 + 1024 * 16 + 16 * 1024 + 2 * 1024,  # 1,083,392
    "key_proj": 1024 * 4096 + 4096 * 16 + 16 * 1024 + 2 * 1024,  # 4,278,272
    "value_proj": 1024 * 4096 + 4096 * 16 + 16 * 1024 + 2 * 1024,  # 4,278,272
    "region_attn": 3 * 1024 * 1024 + 3 * 1024 + 1024 * 1024 + 1024,  # 4,198,400
    "refine": (768 * 1024 + 2 * 768 + 2 * 768 + 4 * (768 * 768 + 768) + 256 * 768 + 256 * 32 * 9 + 2 * 256
               + 256 * 256 + (2048 * 1024 + 2048) + (1024 * 2048 + 1024)),  # 7,685,632
    "mlp": 1024 * 4096 + 4096 + 4096 * 4096 + 4096,  # 20,979,712
}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_default_c1024_h4096():
    with torch.device("meta"):
        proj = build_vision_projector(LlavaConfig(mm_projector_type="delta", mm_hidden_size=1024, hidden_size=4096))
        mlp2x = MLPProjector(1024, 4096, 2)
    assert {name: count(child) for name, child in proj.named_children()} == DEFAULT_PARTS
    assert DEFAULT_PARTS["refine"] == 7_685_632
    assert count(proj) == sum(DEFAULT_PARTS.values()) == 42_503_680
    assert count(mlp2x) == DEFAULT_PARTS["mlp"] == 20_979_712  # LLaVA-1.5's mlp2x_gelu


def test_parameter_count_variants_c1024_h4096():
    with torch.device("meta"):
        per_level = DeltaProjector(in_features=1024, hidden_size=4096, per_level=True)
        no_block = DeltaProjector(in_features=1024, hidden_size=4096, depth=0)
        two_blocks = DeltaProjector(in_features=1024, hidden_size=4096, depth=2)
    per_level_kv = 1024 * 1024 + 4 * (1024 * 16 + 16 * 1024) + 2 * 1024  # 1,181,696
    assert count(per_level.key_proj) == count(per_level.value_proj) == per_level_kv
    assert count(per_level) == 36_310_528
    assert count(no_block) == 42_503_680 - 7_685_632 == 34_818_048
    assert count(two_blocks) == 42_503_680 + 7_685_632


# ---------------------------------------------------------------------------------------------
# Gradients, modes, dtypes
# ---------------------------------------------------------------------------------------------

# Softmax is invariant to adding the same score to every key, so the gradient of a key bias
# is zero in exact arithmetic; it is still part of the graph (and of the released checkpoint).
_KEY_BIAS = ("global_attn.k.bias",)


def _check_grads(proj: DeltaProjector, f: VisionFeatures):
    proj.zero_grad(set_to_none=True)
    out = proj(f)
    (out.float() ** 2).mean().backward()
    for name, p in proj.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
        if not name.endswith(_KEY_BIAS):
            assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("variant", [{}, {"depth": 0}, {"per_level": True}, {"depth": 2, "in_features": 128}])
def test_gradients_reach_every_parameter(mode, variant):
    proj = make(**variant)
    proj.train(mode == "train")
    torch.manual_seed(3)  # drop path draws with 4 samples: a branch dropped for all four is ~1e-5
    _check_grads(proj, feats((4, 6), batch=4, width=proj.in_features))


def test_depth_zero_and_per_level_shapes():
    proj = make(depth=0)
    assert len(proj.refine) == 0
    assert proj(feats((6, 8))).shape == (2, 12, H)
    proj = make(per_level=True, num_levels=3)
    assert proj.key_proj.U.shape == (3, C, 4)
    assert proj.key_proj.V.shape == (3, 4, C)
    assert proj.key_proj.base.weight.shape == (C, C)
    assert proj(feats((6, 8), levels=3)).shape == (2, 12, H)


def test_eval_is_deterministic_and_train_uses_drop_path():
    proj = make(in_features=128).eval()
    f = feats((4, 4), batch=8, width=128)
    with torch.no_grad():
        assert torch.equal(proj(f), proj(f))
        proj.train()
        torch.manual_seed(0)
        a = proj(f)
        b = proj(f)
    assert not torch.equal(a, b)
    block = proj.refine[0]
    assert (block.global_drop.rate, block.local_drop.rate, block.mlp_drop.rate) == pytest.approx((0.075, 0.025, 0.1))


def test_bf16_weights_and_inputs():
    proj = make().to(torch.bfloat16).eval()
    with torch.no_grad():
        out = proj(feats((4, 4), dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_cpu_autocast_bf16_forward_backward():
    proj = make().eval()
    f = feats((4, 4))
    with torch.no_grad():
        ref = proj(f)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = proj(f)
    assert out.dtype == torch.float32  # output dtype = input dtype
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.1)
    out.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in proj.parameters())


# ---------------------------------------------------------------------------------------------
# Components against independent references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_level", [False, True])
def test_delta_projection_matches_formula(per_level):
    torch.manual_seed(0)
    levels, width, out_w, rank = 3, 16, 24, 4
    proj = DeltaProjection(levels * width, out_w, rank, levels=levels, per_level=per_level).double()
    with torch.no_grad():
        proj.norm.weight.normal_()
        proj.norm.bias.normal_()
    x = torch.randn(2, 5, levels * width, dtype=torch.float64)
    ln = lambda t: F.layer_norm(t, (out_w,), proj.norm.weight, proj.norm.bias, eps=1e-6)  # noqa: E731
    if per_level:
        parts = []
        for level in range(levels):
            W = proj.base.weight + (proj.U[level] @ proj.V[level]).T  # W_s + (U_l V_l)^T, [out, C]
            torch.testing.assert_close(proj.effective_weight()[level], W)
            parts.append(ln(F.gelu(x[..., level * width:(level + 1) * width] @ W.T)))
        ref = torch.stack(parts, dim=-2)  # (2, 5, L, out)
    else:
        W = proj.base.weight + (proj.U @ proj.V).T  # [out, L*C]
        torch.testing.assert_close(proj.effective_weight(), W)
        ref = ln(F.gelu(x @ W.T))
    torch.testing.assert_close(proj(x), ref)
    assert proj.norm.eps == 1e-6 and proj.base.bias is None


@pytest.mark.parametrize("grid, scale, levels", [((4, 4), 2, 1), ((6, 9), 3, 1), ((4, 6), 2, 3), ((2, 2), 1, 1)])
def test_region_attention_matches_per_window_multihead_attention(grid, scale, levels):
    torch.manual_seed(0)
    width, heads, batch = 64, 8, 2
    attn = RegionAttention(width, heads)
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    ref = nn.MultiheadAttention(width, heads, batch_first=True)
    ref.load_state_dict(attn.state_dict())  # same parameter names and shapes
    h, w = grid
    hq, wq = h // scale, w // scale
    q = torch.randn(batch, hq * wq, width)
    k = torch.randn(batch, h * w, levels, width)
    v = torch.randn(batch, h * w, levels, width)
    k_in, v_in = (k, v) if levels > 1 else (k[:, :, 0], v[:, :, 0])
    out = attn(q, k_in, v_in, grid, scale)
    assert out.shape == (batch, hq * wq, width)
    with torch.no_grad():
        for b in range(batch):
            for i in range(hq):
                for j in range(wq):
                    cells = [r * w + c for r in range(scale * i, scale * i + scale)
                             for c in range(scale * j, scale * j + scale)]
                    keys = k[b, cells].reshape(1, -1, width)  # (1, s*s*L, C)
                    values = v[b, cells].reshape(1, -1, width)
                    expected, _ = ref(q[b, i * wq + j].view(1, 1, width), keys, values, need_weights=False)
                    torch.testing.assert_close(out[b, i * wq + j], expected[0, 0], atol=1e-5, rtol=1e-5)


def test_sincos_table_by_hand():
    table = sincos_table_2d(8, 3, 4)  # D = 8: F = 2 frequencies, w = (1, 10000^-0.5 = 0.01)
    assert table.shape == (12, 8)
    for i, j in [(0, 0), (2, 3), (1, 2)]:
        expected = [math.sin(j), math.sin(0.01 * j), math.cos(j), math.cos(0.01 * j),
                    math.sin(i), math.sin(0.01 * i), math.cos(i), math.cos(0.01 * i)]
        torch.testing.assert_close(table[i * 4 + j], torch.tensor(expected, dtype=torch.float64))
    big = sincos_table_2d(1024, 24, 24)  # reference setting; w_k = 10000^(-k/256)
    assert big[5 * 24 + 7, 10].item() == pytest.approx(math.sin(7 * 10000 ** (-10 / 256)))
    assert big[5 * 24 + 7, 256 + 10].item() == pytest.approx(math.cos(7 * 10000 ** (-10 / 256)))
    assert big[5 * 24 + 7, 512 + 10].item() == pytest.approx(math.sin(5 * 10000 ** (-10 / 256)))
    assert big[5 * 24 + 7, 768 + 10].item() == pytest.approx(math.cos(5 * 10000 ** (-10 / 256)))


def test_position_table_resize_cache_and_not_in_state_dict():
    torch.testing.assert_close(resized_sincos_table(8, (4, 4), (4, 4))[0], sincos_table_2d(8, 4, 4))
    small = resized_sincos_table(8, (4, 6), (2, 3))
    assert small.shape == (1, 6, 8)
    # Bicubic at scale 1/2, align_corners off: output (0, 0) samples input (0.5, 0.5) with the
    # Keys kernel (A = -0.75) at offsets -1.5, -0.5, 0.5, 1.5, clamping the index at the border.
    def keys(t, a=-0.75):
        t = abs(t)
        return (a + 2) * t**3 - (a + 3) * t**2 + 1 if t <= 1 else a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    weights = [keys(t) for t in (1.5, 0.5, -0.5, -1.5)]
    src = sincos_table_2d(8, 4, 6).reshape(4, 6, 8)
    idx = [0, 0, 1, 2]  # rows/cols -1, 0, 1, 2 clamped
    expected = sum(weights[a] * weights[b] * src[idx[a], idx[b]] for a in range(4) for b in range(4))
    torch.testing.assert_close(small[0, 0], expected)
    proj = make()
    assert not any("position" in key for key in proj.state_dict())
    first = proj.position_table((4, 4), (2, 2), torch.device("cpu"), torch.float32)
    assert proj.position_table((4, 4), (2, 2), torch.device("cpu"), torch.float32) is first
    assert first.shape == (1, 4, C) and first.dtype == torch.float32


def test_forward_matches_independent_reference():
    """The whole pipeline rebuilt from the spec, with a masked full-grid nn.MultiheadAttention."""
    grid, s = (4, 6), 2
    proj = make(in_features=128, rank=4, depth=1).eval()
    f = feats(grid, width=128)
    B, (h, w), Cw = 2, grid, 128
    hq, wq = h // s, w // s
    with torch.no_grad():
        # Bilinear at exactly 1/2 with align_corners off is the 2x2 mean.
        z = f.patch.transpose(1, 2).reshape(B, Cw, h, w).unflatten(2, (hq, s)).unflatten(4, (wq, s)).mean((3, 5))
        z = proj.refine(z).flatten(2).transpose(1, 2) + resized_sincos_table(Cw, grid, (hq, wq)).float()

        def delta(mod, x):
            W = mod.base.weight + (mod.U @ mod.V).T
            return F.layer_norm(F.gelu(x @ W.T), (Cw,), mod.norm.weight, mod.norm.bias, eps=1e-6)

        q, k, v = delta(proj.query_proj, z), delta(proj.key_proj, f.levels), delta(proj.value_proj, f.levels)
        mha = nn.MultiheadAttention(Cw, 8, batch_first=True)
        mha.load_state_dict(proj.region_attn.state_dict())
        row = torch.arange(h * w) // w
        col = torch.arange(h * w) % w
        window = (row // s) * wq + (col // s)  # coarse cell under each raw cell
        blocked = window[None, :] != torch.arange(hq * wq)[:, None]  # True = not allowed
        attended, _ = mha(q, k, v, attn_mask=blocked, need_weights=False)
        expected = proj.mlp(attended)
        torch.testing.assert_close(proj(f), expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Released checkpoints
# ---------------------------------------------------------------------------------------------

# Written out from docs/spec (shapes for C = 1024, H = 4096), independently of released_key_map.
RELEASED_SHAPES_C1024_H4096 = {
    "q_proj_1.shared_weight.weight": (1024, 1024), "q_proj_1.U": (1024, 16), "q_proj_1.V": (16, 1024),
    "q_proj_1.norm.weight": (1024,), "q_proj_1.norm.bias": (1024,),
    "k_proj_1.shared_weight.weight": (1024, 4096), "k_proj_1.U": (4096, 16), "k_proj_1.V": (16, 1024),
    "k_proj_1.norm.weight": (1024,), "k_proj_1.norm.bias": (1024,),
    "v_proj_1.shared_weight.weight": (1024, 4096), "v_proj_1.U": (4096, 16), "v_proj_1.V": (16, 1024),
    "v_proj_1.norm.weight": (1024,), "v_proj_1.norm.bias": (1024,),
    "clip_attn.in_proj_weight": (3072, 1024), "clip_attn.in_proj_bias": (3072,),
    "clip_attn.out_proj.weight": (1024, 1024), "clip_attn.out_proj.bias": (1024,),
    "mlp.0.weight": (4096, 1024), "mlp.0.bias": (4096,), "mlp.2.weight": (4096, 4096), "mlp.2.bias": (4096,),
    "combined_block.ntb.patch_embed.conv.weight": (768, 1024, 1, 1),
    "combined_block.ntb.norm_mhsa.weight": (768,), "combined_block.ntb.norm_mhsa.bias": (768,),
    "combined_block.ntb.e_mhsa.norm.weight": (768,), "combined_block.ntb.e_mhsa.norm.bias": (768,),
    **{f"combined_block.ntb.e_mhsa.{n}.weight": (768, 768) for n in "q k v proj".split()},
    **{f"combined_block.ntb.e_mhsa.{n}.bias": (768,) for n in "q k v proj".split()},
    "combined_block.ntb.projection.conv.weight": (256, 768, 1, 1),
    "combined_block.ntb.mhca.group_conv3x3.weight": (256, 32, 3, 3),
    "combined_block.ntb.mhca.norm.weight": (256,), "combined_block.ntb.mhca.norm.bias": (256,),
    "combined_block.ntb.mhca.projection.weight": (256, 256, 1, 1),
    "combined_block.ntb.mlp.conv1.weight": (2048, 1024, 1, 1), "combined_block.ntb.mlp.conv1.bias": (2048,),
    "combined_block.ntb.mlp.conv2.weight": (1024, 2048, 1, 1), "combined_block.ntb.mlp.conv2.bias": (1024,),
}

# Our name -> released name, written by hand (the inverse of what the converter must do).
OURS_TO_RELEASED = {
    **{f"{ours}.{p}": f"{rel}.{p}" for ours, rel in [("query_proj", "q_proj_1"), ("key_proj", "k_proj_1"),
                                                      ("value_proj", "v_proj_1")]
       for p in ("U", "V", "norm.weight", "norm.bias")},
    "query_proj.base.weight": "q_proj_1.shared_weight.weight",
    "key_proj.base.weight": "k_proj_1.shared_weight.weight",
    "value_proj.base.weight": "v_proj_1.shared_weight.weight",
    **{f"region_attn.{p}": f"clip_attn.{p}" for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight",
                                                      "out_proj.bias")},
    **{f"mlp.{i}.{p}": f"mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")},
    "refine.0.reduce.weight": "combined_block.ntb.patch_embed.conv.weight",
    "refine.0.global_norm.weight": "combined_block.ntb.norm_mhsa.weight",
    "refine.0.global_norm.bias": "combined_block.ntb.norm_mhsa.bias",
    **{f"refine.0.global_attn.{n}.{p}": f"combined_block.ntb.e_mhsa.{n}.{p}"
       for n in ("norm", "q", "k", "v", "proj") for p in ("weight", "bias")},
    "refine.0.local_reduce.weight": "combined_block.ntb.projection.conv.weight",
    "refine.0.local_mix.group_conv.weight": "combined_block.ntb.mhca.group_conv3x3.weight",
    "refine.0.local_mix.norm.weight": "combined_block.ntb.mhca.norm.weight",
    "refine.0.local_mix.norm.bias": "combined_block.ntb.mhca.norm.bias",
    "refine.0.local_mix.proj.weight": "combined_block.ntb.mhca.projection.weight",
    **{f"refine.0.mlp.fc{i}.{p}": f"combined_block.ntb.mlp.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")},
}


def test_released_names_cover_the_full_size_model():
    with torch.device("meta"):
        proj = DeltaProjector(in_features=1024, hidden_size=4096)
    released = {k: torch.empty(shape, device="meta") for k, shape in RELEASED_SHAPES_C1024_H4096.items()}
    assert DeltaProjector.uses_released_names(released)
    converted = DeltaProjector.convert_released_state_dict(released)
    ours = proj.state_dict()
    assert set(converted) == set(ours)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    assert {OURS_TO_RELEASED[k] for k in ours} == set(RELEASED_SHAPES_C1024_H4096)


def test_released_state_dict_loads_and_reproduces_outputs():
    source = make(in_features=128, num_levels=4).eval()
    with torch.no_grad():  # non-trivial norms and biases so every mapping matters
        for name, p in source.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    released = {OURS_TO_RELEASED[k]: v.clone() for k, v in source.state_dict().items()}
    assert not DeltaProjector.uses_released_names(source.state_dict())
    target = make(in_features=128, num_levels=4, seed=123).eval()
    target.load_state_dict(DeltaProjector.convert_released_state_dict(released), strict=True)
    f = feats((6, 8), width=128, levels=4)
    with torch.no_grad():
        assert torch.equal(target(f), source(f))


def test_convert_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"combined_block\.ntb\.norm2\.weight"):
        DeltaProjector.convert_released_state_dict({"q_proj_1.U": torch.zeros(1),
                                                    "combined_block.ntb.norm2.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="query_proj.U"):
        DeltaProjector.convert_released_state_dict({"query_proj.U": torch.zeros(1)})


def test_init_gain_scales_only_the_attention_output_projection():
    torch.manual_seed(0)
    plain = DeltaProjector(in_features=C, hidden_size=H, num_levels=L, rank=4)
    torch.manual_seed(0)
    scaled = build_vision_projector(tiny_config(mm_delta_init_gain=8.0))
    assert scaled.region_attn.init_gain == 8.0 and plain.region_attn.init_gain == 1.0
    a, b = plain.state_dict(), scaled.state_dict()
    for name in a:
        expected = a[name] * 8 if name == "region_attn.out_proj.weight" else a[name]
        torch.testing.assert_close(b[name], expected, atol=0, rtol=0, msg=name)
    # Gain 1 is nn.MultiheadAttention's out_proj: nn.Linear's draw, bias zeroed.
    torch.manual_seed(5)
    attn = RegionAttention(C, 8)
    torch.manual_seed(5)  # the draws in RegionAttention's order: out_proj built, in_proj, out_proj reset
    nn.Linear(C, C)
    torch.nn.init.xavier_uniform_(torch.empty(3 * C, C))
    reference = nn.Linear(C, C)
    torch.testing.assert_close(attn.out_proj.weight, reference.weight, atol=0, rtol=0)
    assert torch.equal(attn.out_proj.bias, torch.zeros(C))


@pytest.mark.parametrize("gain", [0.0, -2.0, float("nan")])
def test_invalid_init_gain_is_named(gain):
    with pytest.raises(ValueError, match="mm_delta_init_gain must be > 0"):
        build_vision_projector(tiny_config(mm_delta_init_gain=gain))


def test_reset_parameters_after_meta_materialisation():
    """The path of a model built on the meta device: to_empty() leaves garbage, reset fixes all."""
    with torch.device("meta"):
        proj = DeltaProjector(in_features=C, hidden_size=H, num_levels=L, rank=4)
    proj = proj.to_empty(device="cpu")
    for p in proj.parameters():
        p.data.fill_(float("nan"))
    proj.reset_parameters()
    for name, p in proj.named_parameters():
        assert torch.isfinite(p).all(), name
    assert proj.key_proj.U.abs().sum() > 0 and proj.key_proj.V.abs().sum() > 0
    assert torch.equal(proj.region_attn.in_proj_bias, torch.zeros(3 * C))
    assert torch.isfinite(proj.eval()(feats((4, 4)))).all()
