"""``build_vision_projector(config)``: upstream's entry point, backed by the projector registry."""

from __future__ import annotations

# Importing the projector modules fills the registry; each import is explicit so a broken
# projector fails loudly here instead of disappearing from the list of known types.
from llava.model.multimodal_projector import mlp  # noqa: F401
from llava.model.multimodal_projector import delta, pooling  # noqa: F401
from llava.model.multimodal_projector.registry import (
    PROJECTORS,
    Projector,
    known_projectors,
    projector_class,
    register_projector,
    register_projector_family,
)

__all__ = [
    "PROJECTORS",
    "Projector",
    "build_vision_projector",
    "known_projectors",
    "projector_class",
    "register_projector",
    "register_projector_family",
]


def build_vision_projector(config, delay_load: bool = False, **kwargs) -> Projector:
    """Builds the projector named by ``config.mm_projector_type`` (default ``linear``, as upstream).

    Args:
        config: a model config with ``mm_projector_type``, ``mm_hidden_size`` and ``hidden_size``
            (plus the projector's own keys).
    Returns:
        A :class:`Projector` mapping ``VisionFeatures`` (or a [B, N, C] tensor) to [B, N', H].
    """
    name = getattr(config, "mm_projector_type", None) or "linear"
    return projector_class(name).from_config(config, name)
