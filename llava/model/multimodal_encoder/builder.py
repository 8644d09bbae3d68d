"""``build_vision_tower(config)``: upstream's entry point."""

from __future__ import annotations

from llava.model.language_model.configuration_llava import llava_setting
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower


def build_vision_tower(vision_tower_cfg, extra_layers: tuple[int, ...] | None = None,
                       delay_load: bool = False) -> CLIPVisionTower:
    """Builds the CLIP tower named by ``mm_vision_tower`` (or ``vision_tower``) in the config.

    Any local path is accepted, whatever its name; hub names must already be in the local cache.

    Args:
        vision_tower_cfg: model config, training arguments or any namespace with ``mm_vision_tower``;
            ``mm_vision_select_layer`` and ``mm_vision_select_feature`` default to LLaVA-1.5's
            -2 and ``"patch"`` when it has no such attribute (upstream defaults the feature only).
        extra_layers: hidden-state indices the projector asks for, computed in the same pass;
            by default those of the config's ``mm_projector_type`` (none for upstream's), so
            ``build_vision_projector(cfg)(build_vision_tower(cfg)(images))`` works for every projector.
    """
    name = getattr(vision_tower_cfg, "mm_vision_tower", None) or getattr(vision_tower_cfg, "vision_tower", None)
    if not name:
        raise ValueError("No vision tower configured: set mm_vision_tower (config) or --vision_tower (training)")
    if extra_layers is None:
        extra_layers = projector_vision_layers(vision_tower_cfg)
    return CLIPVisionTower(
        name,
        select_layer=llava_setting(vision_tower_cfg, "mm_vision_select_layer"),
        select_feature=llava_setting(vision_tower_cfg, "mm_vision_select_feature"),
        extra_layers=tuple(extra_layers),
        delay_load=delay_load,
    )


def projector_vision_layers(config) -> tuple[int, ...]:
    """The hidden-state indices the config's projector reads besides the selected layer (none for
    upstream's projectors)."""
    from llava.model.multimodal_projector.registry import projector_class  # the registry imports this package

    projector = getattr(config, "mm_projector_type", None)
    return tuple(projector_class(projector).vision_layers(config)) if projector else ()
