"""The ``delta`` projector: 144 visual tokens from a base-then-specialize alignment.

Paper: "Delta-LLaVA: Base-then-Specialize Alignment for Token-Efficient Vision-Language Models",
arXiv 2512.18910 (WACV 2026). Registered as ``delta`` and as ``delatallava``, the (misspelled)
name that the released code writes into ``config.json``.

Idea. LLaVA-1.5 hands all h*w patch tokens of one vision layer to the LLM. Delta-LLaVA first
builds a coarse grid of (h/s)*(w/s) queries from that layer (bilinear downsampling, a light
Next-ViT style specialization block that mixes global self-attention with a local grouped
convolution, and a fixed 2D sin-cos position), then aligns queries, keys and values to a common
space with *delta projections* -- a shared base weight plus a rank-r correction,
``W = W_s + (U V)^T`` -- where keys and values come from several tower layers at once. Each query
then attends only to the s x s window of patches under it, pulling detail from the multi-level
features back into the coarse token, and an MLP maps the result to the LLM width. Four times
fewer visual tokens (s = 2) make the LLM, which dominates cost, much cheaper.

Shape legend (B images, tower grid h x w, N = h*w, C tower width, L feature levels, H LLM width,
s = ``scale_factor``, h' = h/s, w' = w/s):

    patch  [B, N, C]   (the ``mm_vision_select_layer`` state; a leading CLS token is dropped)
    levels [B, N, L*C] (the layers of ``mm_delta_layers``, concatenated on channels)
        -> [B, h'*w', H]

Every step with its shapes is in ``docs/delta_projector.md``.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as hf_init

from llava.model.language_model.configuration_llava import llava_setting
from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.registry import OwnInit, Projector, register_projector

#: Channel unit of the specialization block: head width of its global attention and group
#: width of its grouped 3x3 convolution (Next-ViT's ``head_dim``).
BLOCK_UNIT = 32
#: Share of the block's channels that go through the global (attention) branch.
GLOBAL_SHARE = 0.75
#: Stochastic-depth base rate of the block: 0.075 global, 0.025 local, 0.1 on the MLP.
DROP_PATH_RATE = 0.1
#: Heads of the region attention (its width is C).
REGION_HEADS = 8


# --------------------------------------------------------------------------------------------
# Shared helpers (also used by pooling.py)
# --------------------------------------------------------------------------------------------


def scaled_grid(grid: Sequence[int], scale_factor: int) -> tuple[int, int]:
    """Output grid (h/s, w/s) of a projector that merges s x s patches.

    Args:
        grid: (h, w) patch grid of the tower.
        scale_factor: s, an int >= 1 that divides h and w.
    Returns:
        (h // s, w // s).
    Raises:
        ValueError: naming the scale factor and the grid when s < 1 or s does not divide a side.
    """
    h, w = int(grid[0]), int(grid[1])
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
        raise ValueError(f"scale_factor must be an int >= 1, got {scale_factor!r} (grid {h}x{w})")
    if h < 1 or w < 1 or h % scale_factor or w % scale_factor:
        raise ValueError(
            f"scale_factor {scale_factor} must divide both sides of the patch grid {h}x{w} "
            f"(valid: divisors of gcd({h}, {w}) = {math.gcd(h, w)})"
        )
    return h // scale_factor, w // scale_factor


def grid_tokens(x: torch.Tensor, grid: Sequence[int], what: str) -> torch.Tensor:
    """Checks that ``x`` [B, T, D] holds the h*w patch tokens of ``grid``; drops a leading CLS.

    Args:
        x: [B, h*w, D] or [B, h*w + 1, D] (then token 0 is CLS and is dropped).
        grid: (h, w).
        what: name used in the error message.
    Returns:
        [B, h*w, D].
    """
    h, w = grid
    if x.dim() != 3:
        raise ValueError(f"{what} must be [B, tokens, channels], got shape {tuple(x.shape)}")
    if x.shape[1] == h * w + 1:
        return x[:, 1:]
    if x.shape[1] != h * w:
        raise ValueError(
            f"{what} has {x.shape[1]} tokens, but the grid {h}x{w} needs {h * w} (or {h * w + 1} with CLS)"
        )
    return x


def parse_layers(value) -> tuple[int, ...]:
    """Parses ``mm_delta_layers``: ``"12,16,22,23"`` or a list/tuple of ints.

    Raises:
        ValueError: naming the value when it is empty or holds anything but ints.
    """
    items: list
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"mm_delta_layers must be a comma-separated string or a list of ints, got {value!r}")
    layers = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"mm_delta_layers must list layer indices, got {value!r}")
        if isinstance(item, int):
            layers.append(item)
        elif isinstance(item, str) and re.fullmatch(r"[+-]?\d+", item):
            layers.append(int(item))
        else:
            raise ValueError(f"mm_delta_layers must list layer indices such as '12,16,22,23', got {value!r}")
    if not layers:
        raise ValueError(f"mm_delta_layers must name at least one layer, got {value!r}")
    return tuple(layers)


def sincos_table_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed 2D sin-cos position table (float64, CPU).

    Channel layout (D = ``dim``, F = D/4, w_k = 10000^(-k/F), k = 0..F-1): for the token at
    row i, column j, ``[sin(j w_k), cos(j w_k), sin(i w_k), cos(i w_k)]`` -- the first half of
    the channels encodes the column, the second half the row.

    Args:
        dim: D, a multiple of 4.
        h, w: grid rows and columns.
    Returns:
        [h*w, D], row-major over the grid (token i*w + j).
    """
    if dim % 4:
        raise ValueError(f"the 2D sin-cos table needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    freqs = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (F,)

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos[:, None] * freqs[None, :]  # (P, F)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (P, D/2)

    cols = encode(torch.arange(w, dtype=torch.float64))  # (w, D/2)
    rows = encode(torch.arange(h, dtype=torch.float64))  # (h, D/2)
    table = torch.cat(
        [cols[None, :, :].expand(h, w, dim // 2), rows[:, None, :].expand(h, w, dim // 2)], dim=2
    )  # (h, w, D)
    return table.reshape(h * w, dim)


def resized_sincos_table(dim: int, grid: tuple[int, int], out_grid: tuple[int, int]) -> torch.Tensor:
    """The table of :func:`sincos_table_2d` for ``grid``, bicubic-resized to ``out_grid``.

    Returns:
        [1, h'*w', D] float64 on CPU.
    """
    h, w = grid
    table = sincos_table_2d(dim, h, w).T.reshape(1, dim, h, w)  # (1, D, h, w)
    if (h, w) != tuple(out_grid):
        with torch.autocast("cpu", enabled=False):
            table = F.interpolate(table, size=tuple(out_grid), mode="bicubic", align_corners=False)  # (1, D, h', w')
    return table.flatten(2).transpose(1, 2)  # (1, h'*w', D)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


class DropPath(nn.Module):
    """Stochastic depth: zeroes a residual branch for whole samples, in training only."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class DeltaProjection(OwnInit, nn.Module):
    """Linear map with a shared base plus a low-rank delta: ``LayerNorm(GELU(x W^T))``, ``W = W_s + (U V)^T``.

    Computed as ``x W_s^T + (x U) V``, which equals ``x W^T`` without building W.

    Default (``per_level=False``, the released form): one ``W_s`` [out, in], ``U`` [in, r],
    ``V`` [r, out] over the whole input, ``[..., in] -> [..., out]``.

    Per-level (the paper's form): the input is ``levels`` feature levels of width
    ``C = in_features / levels`` concatenated; one shared ``W_s`` [out, C] and a rank-r pair per
    level, ``U`` [L, C, r] and ``V`` [L, r, out]. Each level stays its own token:
    ``[..., L*C] -> [..., L, out]``.

    Args:
        in_features: width of the input (L*C for stacked levels).
        out_features: width of the output.
        rank: r.
        levels: L, number of concatenated levels (only used when ``per_level``).
        per_level: use the per-level form.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, levels: int = 1, per_level: bool = False):
        super().__init__()
        if rank < 1:
            raise ValueError(f"mm_delta_rank must be >= 1, got {rank}")
        if levels < 1 or in_features % levels:
            raise ValueError(f"in_features {in_features} is not {levels} levels of equal width")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.levels, self.per_level = levels, per_level
        width = in_features // levels if per_level else in_features
        self.base = nn.Linear(width, out_features, bias=False)  # W_s
        if per_level:
            self.U = nn.Parameter(torch.empty(levels, width, rank))
            self.V = nn.Parameter(torch.empty(levels, rank, out_features))
        else:
            self.U = nn.Parameter(torch.empty(width, rank))
            self.V = nn.Parameter(torch.empty(rank, out_features))
        self.norm = nn.LayerNorm(out_features, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """W_s as ``nn.Linear``; U, V ~ N(0, 0.02^2); norm to identity.

        Both factors start small and non-zero (unlike LoRA's zero B) so both get gradients from
        the first step. The released code's initialisation is not documented; trained weights
        replace it anyway.
        """
        # transformers' guarded init functions: inside from_pretrained, torch.nn.init is a no-op and
        # these are what initialise parameters that the checkpoint does not hold.
        self.base.reset_parameters()
        hf_init.normal_(self.U, std=0.02)
        hf_init.normal_(self.V, std=0.02)
        hf_init.ones_(self.norm.weight)
        hf_init.zeros_(self.norm.bias)

    def effective_weight(self) -> torch.Tensor:
        """The effective weight ``W_s + (U V)^T``: [out, in], or [L, out, C] per level (for tests/analysis)."""
        if self.per_level:
            return self.base.weight[None] + torch.matmul(self.U, self.V).transpose(1, 2)
        return self.base.weight + (self.U @ self.V).T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [..., in]. Returns: [..., out] (default) or [..., L, out] (per level)."""
        if self.per_level:
            x = x.unflatten(-1, (self.levels, -1))  # (..., L, C)
            low = torch.einsum("...lc,lcr->...lr", x, self.U)  # (..., L, r)
            delta = torch.einsum("...lr,lro->...lo", low, self.V)  # (..., L, out)
        else:
            delta = torch.matmul(torch.matmul(x, self.U), self.V)  # (..., out)
        return self.norm(F.gelu(self.base(x) + delta))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"levels={self.levels}, per_level={self.per_level}")


class GlobalAttention(nn.Module):
    """Self-attention over all tokens of the grid (Next-ViT's E-MHSA with no spatial reduction).

    Its own LayerNorm is applied to the input, then q/k/v Linear (with bias), heads of
    ``BLOCK_UNIT`` channels, softmax attention, output Linear.
    """

    def __init__(self, dim: int, head_dim: int = BLOCK_UNIT):
        super().__init__()
        self.num_heads, self.head_dim = dim // head_dim, head_dim
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, T, D]. Returns: [B, T, D]."""
        B, T, D = x.shape
        x = self.norm(x)
        q = self.q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        v = self.v(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, T, hd)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, h, w] map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class LocalMixer(nn.Module):
    """Next-ViT's multi-head convolutional attention: grouped 3x3 conv -> LayerNorm -> ReLU -> 1x1 conv."""

    def __init__(self, dim: int, group_width: int = BLOCK_UNIT):
        super().__init__()
        self.group_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim // group_width, bias=False)
        self.norm = ChannelLayerNorm(dim)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, D, h, w]. Returns: [B, D, h, w]."""
        return self.proj(F.relu(self.norm(self.group_conv(x))))


class ConvMLP(nn.Module):
    """1x1 conv D -> 2D (bias), ReLU, 1x1 conv 2D -> D (bias)."""

    def __init__(self, dim: int, ratio: int = 2):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, ratio * dim, 1)
        self.fc2 = nn.Conv2d(ratio * dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def block_widths(dim: int) -> tuple[int, int]:
    """Channel split (global, local) of the specialization block for a tower width C.

    Global = 0.75*C rounded (half up) to a multiple of 32, kept within [32, C-32]; local = the
    rest, so the concatenation is C again (Next-ViT's rule). C = 1024 gives (768, 256), C = 768
    gives (576, 192), C = 128 gives (96, 32), C = 64 gives (32, 32).

    Raises:
        ValueError: when C is not a multiple of 32 or is below 64.
    """
    if dim % BLOCK_UNIT or dim < 2 * BLOCK_UNIT:
        raise ValueError(
            f"the delta projector's specialization block needs mm_hidden_size to be a multiple of "
            f"{BLOCK_UNIT} and at least {2 * BLOCK_UNIT}, got {dim} (set mm_delta_depth=0 to drop the block)"
        )
    units = math.floor(GLOBAL_SHARE * dim / BLOCK_UNIT + 0.5)
    glob = min(max(units, 1), dim // BLOCK_UNIT - 1) * BLOCK_UNIT
    return glob, dim - glob


class SpecializationBlock(nn.Module):
    """The "refine" block: a Next-ViT transformer block mixing a global and a local branch, C -> C.

    ``x = reduce(z)`` (1x1 conv C -> Cg); ``x = x + attn(norm(x))`` over all tokens;
    ``y = local_reduce(x)`` (1x1 conv Cg -> Cl); ``y = y + local_mix(y)``;
    ``out = [x, y]`` (C channels); ``out = out + mlp(out)``. Drop path on the three residual
    branches in training only. Unlike Next-ViT there is no BatchNorm (and no norm before the
    MLP): the released checkpoints hold none.

    Args:
        dim: C (a multiple of 32, >= 64). Widths are given by :func:`block_widths`.
        drop_path: base stochastic-depth rate (split 0.75 / 0.25 over the branches, full on the MLP).
    """

    def __init__(self, dim: int, drop_path: float = DROP_PATH_RATE):
        super().__init__()
        glob, local = block_widths(dim)
        self.reduce = nn.Conv2d(dim, glob, 1, bias=False)
        self.global_norm = nn.LayerNorm(glob)
        self.global_attn = GlobalAttention(glob)
        self.global_drop = DropPath(drop_path * GLOBAL_SHARE)
        self.local_reduce = nn.Conv2d(glob, local, 1, bias=False)
        self.local_mix = LocalMixer(local)
        self.local_drop = DropPath(drop_path * (1 - GLOBAL_SHARE))
        self.mlp = ConvMLP(dim)
        self.mlp_drop = DropPath(drop_path)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Args: z [B, C, h, w]. Returns: [B, C, h, w]."""
        B, _, h, w = z.shape
        x = self.reduce(z)  # (B, Cg, h, w)
        t = self.global_attn(self.global_norm(x.flatten(2).transpose(1, 2)))  # (B, h*w, Cg)
        x = x + self.global_drop(t.transpose(1, 2).reshape(B, -1, h, w))  # (B, Cg, h, w)
        y = self.local_reduce(x)  # (B, Cl, h, w)
        y = y + self.local_drop(self.local_mix(y))
        out = torch.cat([x, y], dim=1)  # (B, C, h, w)
        return out + self.mlp_drop(self.mlp(out))


class RegionAttention(OwnInit, nn.Module):
    """Multi-head attention where each coarse query sees only the s x s window of keys under it.

    Parameters are laid out exactly as ``nn.MultiheadAttention`` (``in_proj_weight`` [3C, C],
    ``in_proj_bias`` [3C], ``out_proj``), so its weights load either way. All windows run as one
    batched attention with B*h'*w' sequences of one query each.

    Args:
        embed_dim: C.
        num_heads: heads (C must be divisible by it).
        init_gain: multiplies the initial ``out_proj`` weights (1: ``nn.MultiheadAttention``'s init).
    """

    def __init__(self, embed_dim: int, num_heads: int = REGION_HEADS, init_gain: float = 1.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"region attention width {embed_dim} is not divisible by {num_heads} heads")
        if not init_gain > 0:
            raise ValueError(f"mm_delta_init_gain must be > 0, got {init_gain}")
        self.embed_dim, self.num_heads, self.init_gain = embed_dim, num_heads, init_gain
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.MultiheadAttention``'s initialisation, with ``out_proj``'s weights times ``init_gain``.

        ``out_proj`` draws as ``nn.Linear`` does (weight and bias uniform in +-1/sqrt(C), the
        bias then zeroed), so a gain of 1 gives the same numbers from the same seed.
        """
        hf_init.xavier_uniform_(self.in_proj_weight)  # guarded: see DeltaProjection.reset_parameters
        hf_init.zeros_(self.in_proj_bias)
        bound = 1 / math.sqrt(self.embed_dim)
        hf_init.uniform_(self.out_proj.weight, -bound * self.init_gain, bound * self.init_gain)
        hf_init.uniform_(self.out_proj.bias, -bound, bound)
        hf_init.zeros_(self.out_proj.bias)

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Plain batched multi-head attention, as ``nn.MultiheadAttention(batch_first=True)``.

        Args: query [M, Tq, C], key and value [M, Tk, C]. Returns: [M, Tq, C].
        """
        M, Tq, C = query.shape
        nh, hd = self.num_heads, C // self.num_heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(M, Tq, nh, hd).transpose(1, 2)  # (M, nh, Tq, hd)
        k = F.linear(key, wk, bk).view(M, -1, nh, hd).transpose(1, 2)  # (M, nh, Tk, hd)
        v = F.linear(value, wv, bv).view(M, -1, nh, hd).transpose(1, 2)  # (M, nh, Tk, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (M, nh, Tq, hd)
        return self.out_proj(out.transpose(1, 2).reshape(M, Tq, C))

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, grid: tuple[int, int],
                scale_factor: int) -> torch.Tensor:
        """Window attention on a grid.

        Args:
            query: [B, h'*w', C], one per coarse cell (row-major).
            key, value: [B, h*w, C] or [B, h*w, L, C] (one token per level), row-major over the
                raw h x w grid.
            grid: (h, w); scale_factor: s, with h' = h/s, w' = w/s.
        Returns:
            [B, h'*w', C]; cell (i, j) attended to raw rows s*i..s*i+s-1, columns s*j..s*j+s-1
            (times L levels).
        """
        B, _, C = query.shape
        h, w = grid
        s = scale_factor
        hq, wq = h // s, w // s

        def windows(x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(B, hq, s, wq, s, -1, C)  # (B, h', s, w', s, L, C)
            x = x.permute(0, 1, 3, 2, 4, 5, 6)  # (B, h', w', s, s, L, C)
            return x.reshape(B * hq * wq, -1, C)  # (B*h'*w', s*s*L, C)

        out = self.attend(query.reshape(B * hq * wq, 1, C), windows(key), windows(value))  # (B*h'*w', 1, C)
        return out.view(B, hq * wq, C)


# --------------------------------------------------------------------------------------------
# The projector
# --------------------------------------------------------------------------------------------


def _released_map() -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for old, new in (("q_proj_1", "query_proj"), ("k_proj_1", "key_proj"), ("v_proj_1", "value_proj")):
        pairs += [
            (rf"{old}\.shared_weight\.weight", f"{new}.base.weight"),
            (rf"{old}\.(U|V)", rf"{new}.\1"),
            (rf"{old}\.norm\.(weight|bias)", rf"{new}.norm.\1"),
        ]
    ntb = r"combined_block\.ntb"
    pairs += [
        (r"clip_attn\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)", r"region_attn.\1"),
        (r"mlp\.(0|2)\.(weight|bias)", r"mlp.\1.\2"),
        (rf"{ntb}\.patch_embed\.conv\.weight", "refine.0.reduce.weight"),
        (rf"{ntb}\.norm_mhsa\.(weight|bias)", r"refine.0.global_norm.\1"),
        (rf"{ntb}\.e_mhsa\.(norm|q|k|v|proj)\.(weight|bias)", r"refine.0.global_attn.\1.\2"),
        (rf"{ntb}\.projection\.conv\.weight", "refine.0.local_reduce.weight"),
        (rf"{ntb}\.mhca\.group_conv3x3\.weight", "refine.0.local_mix.group_conv.weight"),
        (rf"{ntb}\.mhca\.norm\.(weight|bias)", r"refine.0.local_mix.norm.\1"),
        (rf"{ntb}\.mhca\.projection\.weight", "refine.0.local_mix.proj.weight"),
        (rf"{ntb}\.mlp\.conv1\.(weight|bias)", r"refine.0.mlp.fc1.\1"),
        (rf"{ntb}\.mlp\.conv2\.(weight|bias)", r"refine.0.mlp.fc2.\1"),
    ]
    return tuple(pairs)


def _required(config, key: str):
    """:func:`llava_setting`, refusing an explicit None (``"mm_delta_rank": null`` in a config.json)
    with an error that names the key."""
    value = llava_setting(config, key)
    if value is None:
        raise ValueError(f"the delta projector needs {key}, but the config sets it to None (null); remove the key "
                         f"for the default or give a value")
    return value


@register_projector("delta", "delatallava")
class DeltaProjector(Projector):
    """Delta-LLaVA projector: ``VisionFeatures(patch [B, N, C], levels [B, N, L*C]) -> [B, (h/s)*(w/s), H]``.

    Args (keyword-only):
        in_features: C, the tower width (``mm_hidden_size``).
        hidden_size: H, the LLM width.
        num_levels: L, number of extra tower layers in ``levels`` (``len(mm_delta_layers)``).
        scale_factor: s; the output grid is (h/s, w/s).
        rank: r of the delta projections (``mm_delta_rank``).
        depth: number of specialization blocks (``mm_delta_depth``; 0 = none).
        per_level: the paper's per-level delta for keys/values (``mm_delta_per_level``).
        init_gain: gain on the region attention's initial output projection (``mm_delta_init_gain``;
            1 = the released code's ``nn.MultiheadAttention`` init). Initialisation only.
    """

    #: (regex on a released key relative to the projector, replacement) pairs; see
    #: :meth:`convert_released_state_dict`. The released code has exactly one block (``refine.0``).
    released_key_map: tuple[tuple[str, str], ...] = _released_map()

    def __init__(self, *, in_features: int, hidden_size: int, num_levels: int = 4, scale_factor: int = 2,
                 rank: int = 16, depth: int = 1, per_level: bool = False, init_gain: float = 1.0):
        super().__init__()
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be an int >= 1, got {scale_factor!r}")
        if num_levels < 1:
            raise ValueError(f"the delta projector needs at least one feature level, got num_levels={num_levels}")
        if depth < 0:
            raise ValueError(f"mm_delta_depth must be >= 0, got {depth}")
        if in_features % 4:
            raise ValueError(f"the delta projector needs mm_hidden_size divisible by 4 (2D sin-cos), got {in_features}")
        self.in_features, self.out_features = in_features, hidden_size
        self.num_levels, self.scale_factor, self.rank = num_levels, scale_factor, rank
        self.depth, self.per_level = depth, per_level

        self.refine = nn.Sequential(*[SpecializationBlock(in_features) for _ in range(depth)])
        self.query_proj = DeltaProjection(in_features, in_features, rank)
        self.key_proj = DeltaProjection(num_levels * in_features, in_features, rank, num_levels, per_level)
        self.value_proj = DeltaProjection(num_levels * in_features, in_features, rank, num_levels, per_level)
        self.region_attn = RegionAttention(in_features, REGION_HEADS, init_gain)
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        # Fixed position tables per (grid, device, dtype); derived data, so not in the state dict.
        self._position_cache: dict[tuple, torch.Tensor] = {}

    def reset_parameters(self) -> None:
        """Re-initialises every parameter (each submodule's own ``reset_parameters``).

        transformers' generic ``_init_weights`` knows Linear/Conv/LayerNorm but not the raw
        parameters here (``U``, ``V``, ``in_proj_weight``), so a model that materialises this
        projector from the meta device must call this (or each submodule's) method.
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    # -- config adapters --------------------------------------------------------------------

    @classmethod
    def from_config(cls, config, name: str = "delta") -> "DeltaProjector":
        if config.mm_hidden_size is None:
            raise ValueError(f"mm_projector_type {name!r} needs mm_hidden_size (the vision tower width), got None")
        return cls(
            in_features=config.mm_hidden_size,
            hidden_size=config.hidden_size,
            num_levels=len(cls.vision_layers(config)),
            scale_factor=_required(config, "scale_factor"),
            rank=_required(config, "mm_delta_rank"),
            depth=_required(config, "mm_delta_depth"),
            per_level=bool(llava_setting(config, "mm_delta_per_level")),
            init_gain=float(_required(config, "mm_delta_init_gain")),
        )

    @classmethod
    def vision_layers(cls, config) -> tuple[int, ...]:
        """The hidden-state indices of ``mm_delta_layers`` (index 0 = embedding output)."""
        return parse_layers(llava_setting(config, "mm_delta_layers"))

    def output_grid(self, grid: Sequence[int]) -> tuple[int, int]:
        """(h/s, w/s); raises ``ValueError`` naming s and the grid when s does not divide it."""
        return scaled_grid(grid, self.scale_factor)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        hq, wq = self.output_grid(grid)
        return hq * wq

    # -- released checkpoints ---------------------------------------------------------------

    @classmethod
    def uses_released_names(cls, keys) -> bool:
        """Whether projector-relative ``keys`` look like the released code's names (``q_proj_1.*`` ...)."""
        return any(re.match(r"(q_proj_1|k_proj_1|v_proj_1|clip_attn|combined_block)\.", k) for k in keys)

    @classmethod
    def convert_released_state_dict(cls, state_dict: dict) -> dict:
        """Renames a released state dict (keys relative to the projector) to this module's names.

        Raises:
            ValueError: naming every key that no pattern maps, or two keys that map to one name.
        """
        converted: dict = {}
        unmapped = []
        for key, value in state_dict.items():
            for pattern, replacement in cls.released_key_map:
                match = re.fullmatch(pattern, key)
                if match:
                    new_key = match.expand(replacement)
                    if new_key in converted:
                        raise ValueError(f"released delta keys map twice to {new_key!r} (last: {key!r})")
                    converted[new_key] = value
                    break
            else:
                unmapped.append(key)
        if unmapped:
            raise ValueError(f"released delta projector keys with no mapping: {unmapped}")
        return converted

    # -- forward ----------------------------------------------------------------------------

    def position_table(self, grid: tuple[int, int], out_grid: tuple[int, int], device, dtype) -> torch.Tensor:
        """The fixed sin-cos table for the raw ``grid`` resized to ``out_grid``: [1, h'*w', C]."""
        key = (tuple(grid), tuple(out_grid), str(device), dtype)
        table = self._position_cache.get(key)
        if table is None:
            table = resized_sincos_table(self.in_features, tuple(grid), tuple(out_grid)).to(device=device, dtype=dtype)
            self._position_cache[key] = table
        return table

    def forward(self, features: VisionFeatures) -> torch.Tensor:
        """Args:
            features: ``VisionFeatures`` with ``patch`` [B, h*w(+1), C], ``levels`` [B, h*w, L*C]
                and ``grid`` (h, w).
        Returns:
            [B, (h/s)*(w/s), H], in the dtype of ``features.patch``.
        """
        if not isinstance(features, VisionFeatures):
            raise ValueError(
                f"the delta projector needs VisionFeatures with multi-level features, got {type(features).__name__}"
                + (f" of shape {tuple(features.shape)}" if isinstance(features, torch.Tensor) else "")
            )
        C, L = self.in_features, self.num_levels
        grid = (int(features.grid[0]), int(features.grid[1]))
        hq, wq = self.output_grid(grid)
        patch = grid_tokens(features.patch, grid, "patch features")  # (B, h*w, C)
        if features.levels is None:
            raise ValueError(
                f"the delta projector needs multi-level features [B, {grid[0] * grid[1]}, {L * C}] "
                f"(layers {L} x width {C}), got levels=None with patch {tuple(features.patch.shape)}"
            )
        levels = grid_tokens(features.levels, grid, "multi-level features")  # (B, h*w, L*C)
        if patch.shape[-1] != C or levels.shape[-1] != L * C or levels.shape[0] != patch.shape[0]:
            raise ValueError(
                f"the delta projector expects patch [B, {grid[0] * grid[1]}, {C}] and levels "
                f"[B, {grid[0] * grid[1]}, {L * C}] ({L} levels x {C}), got patch {tuple(features.patch.shape)} "
                f"and levels {tuple(features.levels.shape)}"
            )
        B, h, w = patch.shape[0], grid[0], grid[1]

        # 1. queries: downsample the select-layer grid.
        z = patch.transpose(1, 2).reshape(B, C, h, w)  # (B, C, h, w)
        if (hq, wq) != (h, w):
            z = F.interpolate(z, size=(hq, wq), mode="bilinear", align_corners=False)  # (B, C, h', w')
        # 2. specialization block(s).
        z = self.refine(z)  # (B, C, h', w')
        # 3. fixed 2D position.
        z = z.flatten(2).transpose(1, 2)  # (B, h'*w', C)
        z = z + self.position_table(grid, (hq, wq), z.device, z.dtype)
        # 4. base alignment of queries, keys, values.
        q = self.query_proj(z)  # (B, h'*w', C)
        k = self.key_proj(levels)  # (B, h*w, C), or (B, h*w, L, C) per level
        v = self.value_proj(levels)  # same as k
        # 5. each query attends to the s x s window (x L levels) under it.
        out = self.region_attn(q, k, v, grid, self.scale_factor)  # (B, h'*w', C)
        # 6. to the LLM width.
        return self.mlp(out).to(patch.dtype)  # (B, h'*w', H)
