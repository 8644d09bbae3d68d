"""What a vision tower hands to a projector: one forward pass, every stream a projector asked for."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class VisionFeatures:
    """Features of a batch of images from one vision-tower forward pass.

    Attributes:
        patch: [B, N, C] hidden state at ``mm_vision_select_layer`` (CLS dropped unless
            ``mm_vision_select_feature == "cls_patch"``, then N = h*w + 1).
        levels: [B, h*w, L*C] hidden states of the extra layers the projector asked for,
            patches only, concatenated on channels in the order asked; ``None`` if none.
        grid: (h, w) patch grid, h*w patch tokens.
    """

    patch: torch.Tensor
    levels: torch.Tensor | None
    grid: tuple[int, int]

    def to(self, *args, **kwargs) -> "VisionFeatures":
        levels = self.levels.to(*args, **kwargs) if self.levels is not None else None
        return VisionFeatures(self.patch.to(*args, **kwargs), levels, self.grid)
