"""The ``avgpool`` projector: average s x s patches, then LLaVA-1.5's 2-layer GELU MLP.

This is the same-token-budget ablation baseline for the ``delta`` projector of
"Delta-LLaVA: Base-then-Specialize Alignment for Token-Efficient Vision-Language Models"
(arXiv 2512.18910): it makes exactly as many visual tokens as ``delta`` does for the same
``scale_factor`` (144 from a 24 x 24 grid at s = 2), but with no multi-level features, no
attention and no learned pooling -- just the ``mlp2x_gelu`` projector applied to an
average-pooled grid. A gap between the two isolates what delta's alignment adds beyond
simply having fewer tokens.

Shape legend (grid h x w, N = h*w, s = ``scale_factor``):

    patch [B, N, C] -> [B, C, h, w] -> avg-pool -> [B, C, h/s, w/s] -> [B, (h/s)*(w/s), C] -> MLP -> [B, (h/s)*(w/s), H]

Parameter names are ``mlp2x_gelu``'s (``0.weight``, ``2.weight``), so a trained LLaVA-1.5
projector file loads into it unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.multimodal_projector.delta import grid_tokens, scaled_grid
from llava.model.multimodal_projector.mlp import MLPProjector
from llava.model.multimodal_projector.registry import register_projector


@register_projector("avgpool")
class AvgPoolProjector(MLPProjector):
    """Adaptive average pooling of the patch grid to (h/s, w/s), then Linear(C, H) -> GELU -> Linear(H, H).

    Args (keyword-only):
        in_features: C (``mm_hidden_size``).
        hidden_size: H.
        scale_factor: s; must divide both sides of the grid (checked per call).
    """

    keeps_cls = False  # pools the patch grid; a CLS token is dropped

    def __init__(self, *, in_features: int, hidden_size: int, scale_factor: int = 2):
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be an int >= 1, got {scale_factor!r}")
        super().__init__(in_features, hidden_size, depth=2)
        self.scale_factor = scale_factor

    @classmethod
    def from_config(cls, config, name: str = "avgpool") -> "AvgPoolProjector":
        return cls(in_features=config.mm_hidden_size, hidden_size=config.hidden_size, scale_factor=config.scale_factor)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        hq, wq = scaled_grid(grid, self.scale_factor)
        return hq * wq

    def forward(self, features: VisionFeatures | torch.Tensor) -> torch.Tensor:
        """Args:
            features: ``VisionFeatures`` (patch [B, h*w(+1), C], grid (h, w)) or a bare [B, N, C]
                tensor with N (or N - 1, then token 0 is CLS) a perfect square: a square grid is assumed.
        Returns:
            [B, (h/s)*(w/s), H].
        """
        if isinstance(features, VisionFeatures):
            grid = (int(features.grid[0]), int(features.grid[1]))
        else:
            patches = features.shape[1] - (0 if math.isqrt(features.shape[1]) ** 2 == features.shape[1] else 1)
            side = math.isqrt(max(patches, 0))
            if side * side != patches:
                raise ValueError(
                    f"avgpool got a bare tensor of shape {tuple(features.shape)}; pass VisionFeatures "
                    f"with its grid when the patch count is not a perfect square"
                )
            grid = (side, side)
        hq, wq = scaled_grid(grid, self.scale_factor)
        patch = grid_tokens(self.patch_tensor(features), grid, "patch features")  # (B, h*w, C)
        B, _, C = patch.shape
        x = patch.transpose(1, 2).reshape(B, C, *grid)  # (B, C, h, w)
        x = F.adaptive_avg_pool2d(x, (hq, wq))  # (B, C, h', w')
        x = x.flatten(2).transpose(1, 2)  # (B, h'*w', C)
        return super().forward(x)  # (B, h'*w', H)
