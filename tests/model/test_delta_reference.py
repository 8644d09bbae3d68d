"""The delta projector's specialization block and drop path against hand-written references.

The reference below is written from docs/spec (the "Refine = one specialization block" step) with
plain tensor operations only: its own LayerNorm, attention, grouped convolution and MLP, reading
the block's parameters but none of its sub-modules' forwards.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llava.model.multimodal_projector.delta import DropPath, SpecializationBlock

HEAD = 32  # head width of the global attention and group width of the local convolution


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis, from its definition (biased variance)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """[B, Cin, h, w] x [Cout, Cin, 1, 1] -> [B, Cout, h, w] as a per-pixel matrix product."""
    out = torch.einsum("bihw,oi->bohw", x, weight[:, :, 0, 0])
    return out if bias is None else out + bias[None, :, None, None]


def grouped_conv3x3(x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped 3x3 convolution, padding 1, no bias, as a sum over the nine shifted windows."""
    B, Cin, h, w = x.shape
    Cout = weight.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    gin, gout = Cin // groups, Cout // groups
    out = torch.zeros(B, Cout, h, w, dtype=x.dtype)
    for g in range(groups):
        xs = padded[:, g * gin:(g + 1) * gin]
        ws = weight[g * gout:(g + 1) * gout]  # (gout, gin, 3, 3)
        for di in range(3):
            for dj in range(3):
                out[:, g * gout:(g + 1) * gout] += torch.einsum(
                    "bihw,oi->bohw", xs[:, :, di:di + h, dj:dj + w], ws[:, :, di, dj])
    return out


def reference_block(block: SpecializationBlock, z: torch.Tensor) -> torch.Tensor:
    """The specialization block, step by step from the spec (inference: no drop path)."""
    p = dict(block.named_parameters())
    B, C, h, w = z.shape
    # 1x1 conv, no bias, C -> Cg.
    x = conv1x1(z, p["reduce.weight"])
    Cg = x.shape[1]
    # Global branch: LayerNorm, then attention with its own LayerNorm, q/k/v with bias, heads of 32.
    t = x.flatten(2).transpose(1, 2)  # (B, T, Cg)
    t = layer_norm(t, p["global_norm.weight"], p["global_norm.bias"], 1e-5)
    t = layer_norm(t, p["global_attn.norm.weight"], p["global_attn.norm.bias"], 1e-5)
    nh = Cg // HEAD

    def heads(name):
        y = t @ p[f"global_attn.{name}.weight"].T + p[f"global_attn.{name}.bias"]
        return y.reshape(B, h * w, nh, HEAD).permute(0, 2, 1, 3)  # (B, nh, T, 32)

    q, k, v = heads("q"), heads("k"), heads("v")
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HEAD), dim=-1)
    att = (weights @ v).permute(0, 2, 1, 3).reshape(B, h * w, Cg)
    att = att @ p["global_attn.proj.weight"].T + p["global_attn.proj.bias"]
    x = x + att.transpose(1, 2).reshape(B, Cg, h, w)
    # Local branch: 1x1 conv Cg -> Cl, then y + proj(relu(LN_c(grouped_conv3x3(y)))).
    y = conv1x1(x, p["local_reduce.weight"])
    Cl = y.shape[1]
    m = grouped_conv3x3(y, p["local_mix.group_conv.weight"], Cl // HEAD)
    m = layer_norm(m.permute(0, 2, 3, 1), p["local_mix.norm.weight"], p["local_mix.norm.bias"], 1e-5)
    m = conv1x1(torch.relu(m).permute(0, 3, 1, 2), p["local_mix.proj.weight"])
    y = y + m
    # Concatenate [x, y] and the conv MLP with its residual.
    out = torch.cat([x, y], dim=1)
    hidden = torch.relu(conv1x1(out, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
    return out + conv1x1(hidden, p["mlp.fc2.weight"], p["mlp.fc2.bias"])


def perturbed_block(dim: int) -> SpecializationBlock:
    """A block in float64 whose norms and biases are moved off their identity/zero init."""
    torch.manual_seed(0)
    block = SpecializationBlock(dim).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in block.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.copy_(param + 0.5 * torch.randn(param.shape, generator=g, dtype=param.dtype))
    return block


def test_block_parameter_shapes_follow_the_spec():
    """C = 256: global 192 (6 heads of 32), local 64 (2 groups of 32), MLP 256 -> 512 -> 256."""
    shapes = {n: tuple(p.shape) for n, p in perturbed_block(256).named_parameters()}
    assert shapes["reduce.weight"] == (192, 256, 1, 1)
    assert shapes["global_attn.q.weight"] == (192, 192)
    assert shapes["local_reduce.weight"] == (64, 192, 1, 1)
    assert shapes["local_mix.group_conv.weight"] == (64, 32, 3, 3)
    assert shapes["local_mix.proj.weight"] == (64, 64, 1, 1)
    assert shapes["mlp.fc1.weight"] == (512, 256, 1, 1) and shapes["mlp.fc2.weight"] == (256, 512, 1, 1)


@pytest.mark.parametrize("dim", [128, 256])
def test_block_matches_hand_written_reference(dim):
    """A 4 x 6 grid (h != w), float64, every norm and bias perturbed."""
    block = perturbed_block(dim)
    z = torch.randn(2, dim, 4, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        got = block(z)
        expected = reference_block(block, z)
    assert got.shape == (2, dim, 4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_block_drop_path_rates():
    """Base rate 0.1: 0.075 on the global branch, 0.025 on the local branch, 0.1 on the MLP."""
    block = SpecializationBlock(64)
    assert block.global_drop.rate == pytest.approx(0.075)
    assert block.local_drop.rate == pytest.approx(0.025)
    assert block.mlp_drop.rate == pytest.approx(0.1)


def test_drop_path_keeps_the_expectation():
    """Kept samples are scaled by 1/keep, so the mean is unchanged in expectation."""
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    out = drop(torch.ones(10000, 1))
    kept = out[out != 0]
    assert torch.equal(kept, torch.full_like(kept, 2.0))
    assert 0.4 < kept.numel() / out.numel() < 0.6
    assert abs(out.mean().item() - 1.0) < 0.05


def test_drop_path_drops_whole_samples_and_only_in_training():
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    x = torch.randn(400, 3, 5)
    out = drop(x)
    dropped = (out == 0).flatten(1).all(1)
    kept = ~dropped
    assert 0 < dropped.sum() < 400
    torch.testing.assert_close(out[kept], x[kept] / 0.75, rtol=0, atol=0)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)
