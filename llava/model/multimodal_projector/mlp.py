"""LLaVA's projectors: ``identity``, ``linear`` and the ``mlp{N}x_gelu`` family.

LLaVA-1.5 (Liu et al., "Improved Baselines with Visual Instruction Tuning", arXiv 2310.03744)
maps every patch to one LLM token with a 2-layer GELU MLP: ``[B, N, C] -> [B, N, H]``, N = h*w
(576 for CLIP-L/14 at 336 px). Parameter names match upstream checkpoints
(``mm_projector.0.weight``, ``mm_projector.2.weight``, ... for the MLPs, ``mm_projector.weight``
for ``linear``).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.registry import Projector, register_projector, register_projector_family

_MLP_PATTERN = r"mlp(\d+)x_gelu"


class _PerTokenProjector(Projector):
    """A projector mapping every input token to one visual token (a CLS token included)."""

    keeps_cls = True

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]


@register_projector("identity")
class IdentityProjector(_PerTokenProjector):
    """Passes patch features through; needs mm_hidden_size == hidden_size."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.out_features = hidden_size

    @classmethod
    def from_config(cls, config, name: str) -> "IdentityProjector":
        if config.mm_hidden_size != config.hidden_size:
            raise ValueError(
                f"mm_projector_type 'identity' needs mm_hidden_size == hidden_size, "
                f"got {config.mm_hidden_size} and {config.hidden_size}"
            )
        return cls(config.hidden_size)

    def forward(self, features: VisionFeatures | torch.Tensor) -> torch.Tensor:
        return self.patch_tensor(features)


class _SequentialProjector(nn.Sequential, _PerTokenProjector):
    """An ``nn.Sequential`` so state-dict names are upstream's (``0.weight``, ``2.weight``)."""

    def forward(self, features: VisionFeatures | torch.Tensor) -> torch.Tensor:
        return nn.Sequential.forward(self, self.patch_tensor(features))


@register_projector("linear")
class LinearProjector(nn.Linear, _PerTokenProjector):
    """One Linear(C, H) per patch. A bare ``nn.Linear`` as upstream builds it, so the state-dict
    names are upstream's (``mm_projector.weight``, ``mm_projector.bias``)."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__(in_features, hidden_size)
        self.out_features = hidden_size

    @classmethod
    def from_config(cls, config, name: str) -> "LinearProjector":
        return cls(config.mm_hidden_size, config.hidden_size)

    @classmethod
    def convert_released_state_dict(cls, state_dict: dict) -> dict:
        """Reads the ``0.weight`` / ``0.bias`` names this project's earlier ``mm_projector.bin``
        files used for ``linear`` (a one-layer Sequential then)."""
        if set(state_dict) != {"0.weight", "0.bias"}:
            raise ValueError(f"expected weight and bias (or 0.weight and 0.bias), got {sorted(state_dict)[:8]}")
        return {"weight": state_dict["0.weight"], "bias": state_dict["0.bias"]}

    def forward(self, features: VisionFeatures | torch.Tensor) -> torch.Tensor:
        return nn.Linear.forward(self, self.patch_tensor(features))


@register_projector_family("mlp{N}x_gelu", _MLP_PATTERN)
class MLPProjector(_SequentialProjector):
    """``depth`` Linear layers with GELU between: Linear(C, H), then (GELU, Linear(H, H)) * (depth-1)."""

    def __init__(self, in_features: int, hidden_size: int, depth: int = 2):
        if depth < 1:
            raise ValueError(f"MLP projector depth must be >= 1, got {depth}")
        layers: list[nn.Module] = [nn.Linear(in_features, hidden_size)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        super().__init__(*layers)
        self.out_features = hidden_size

    @classmethod
    def from_config(cls, config, name: str) -> "MLPProjector":
        depth = int(re.fullmatch(_MLP_PATTERN, name).group(1))
        return cls(config.mm_hidden_size, config.hidden_size, depth)
