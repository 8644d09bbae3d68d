"""The one place that maps ``mm_projector_type`` names to projector classes.

Exact names are registered with :func:`register_projector`; a family of names that carries a
parameter (``mlp{N}x_gelu``) is one parsed entry registered with :func:`register_projector_family`.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from llava.model.multimodal_encoder.features import VisionFeatures

PROJECTORS: dict[str, type["Projector"]] = {}
PROJECTOR_FAMILIES: dict[str, tuple[re.Pattern, type["Projector"]]] = {}


class Projector(nn.Module):
    """Base class of vision projectors: ``VisionFeatures -> [B, N', H]``.

    A projector says what it needs from the vision tower (:meth:`vision_layers`) and how many
    tokens it makes from a grid (:meth:`num_tokens`), so no other code assumes a token count.
    Subclasses take explicit ints in ``__init__`` and adapt a model config in :meth:`from_config`.
    """

    #: Hidden size of the language model (set by subclasses).
    out_features: int
    #: True for projectors that map every input token, so with ``mm_vision_select_feature
    #: "cls_patch"`` the CLS token becomes one more visual token (upstream's linear / MLPs).
    keeps_cls: bool = False

    @classmethod
    def from_config(cls, config, name: str) -> "Projector":
        raise NotImplementedError

    @classmethod
    def vision_layers(cls, config) -> tuple[int, ...]:
        """Extra hidden-state indices this projector needs besides ``mm_vision_select_layer``."""
        return ()

    def num_tokens(self, grid: tuple[int, int]) -> int:
        """Number of visual tokens produced for an (h, w) patch grid."""
        raise NotImplementedError

    @staticmethod
    def patch_tensor(features: VisionFeatures | torch.Tensor) -> torch.Tensor:
        """Accepts a bare [B, N, C] tensor too, as upstream's projectors do."""
        return features.patch if isinstance(features, VisionFeatures) else features


class OwnInit:
    """Marks a projector part that holds raw ``nn.Parameter``s transformers' ``_init_weights`` does
    not know (not inside a Linear/Conv/LayerNorm); the model calls its ``reset_parameters()`` when
    those parameters were not loaded from a checkpoint."""

    def reset_parameters(self) -> None:
        raise NotImplementedError


def register_projector(*names: str) -> Callable[[type[Projector]], type[Projector]]:
    """Class decorator registering a projector under one or more exact names."""

    def wrap(cls: type[Projector]) -> type[Projector]:
        for name in names:
            if name in PROJECTORS or name in PROJECTOR_FAMILIES:
                raise ValueError(f"mm_projector_type {name!r} is already registered to {PROJECTORS.get(name)}")
            PROJECTORS[name] = cls
        return cls

    return wrap


def register_projector_family(label: str, pattern: str) -> Callable[[type[Projector]], type[Projector]]:
    """Class decorator registering a parsed family such as ``mlp{N}x_gelu`` (``pattern`` is a regex)."""

    def wrap(cls: type[Projector]) -> type[Projector]:
        if label in PROJECTOR_FAMILIES or label in PROJECTORS:
            raise ValueError(f"mm_projector_type family {label!r} is already registered")
        PROJECTOR_FAMILIES[label] = (re.compile(pattern), cls)
        return cls

    return wrap


def known_projectors() -> list[str]:
    return sorted([*PROJECTORS, *PROJECTOR_FAMILIES])


def canonical_projector_name(name: str) -> str:
    """The first name a projector was registered under (``delatallava`` -> ``delta``); other names as given."""
    cls = PROJECTORS.get(name)
    return next(n for n, c in PROJECTORS.items() if c is cls) if cls is not None else name


def projector_class(name: str) -> type[Projector]:
    """Exact-name lookup; raises ``ValueError`` naming the known types."""
    if name in PROJECTORS:
        return PROJECTORS[name]
    for pattern, cls in PROJECTOR_FAMILIES.values():
        if pattern.fullmatch(name):
            return cls
    raise ValueError(f"Unknown mm_projector_type {name!r}; known: {known_projectors()}")
