"""``LlavaConfig``: a Llama config plus every multimodal key, each declared once with its default."""

from __future__ import annotations

from transformers import LlamaConfig


class LlavaConfig(LlamaConfig):
    """Llama config with LLaVA's ``mm_*`` keys and the delta projector's settings.

    A config.json without the newer keys loads with these defaults and behaves as before.
    Released LLaVA configs that say ``"model_type": "llava"`` are read through
    :func:`llava.model.builder.load_pretrained_model`, which picks this class from the
    ``architectures`` / ``mm_*`` keys instead of the model type.
    """

    # transformers turns every config subclass into a keyword-only dataclass itself.
    model_type = "llava_llama"

    # Vision tower and projector (upstream names and defaults).
    mm_vision_tower: str | None = None
    mm_hidden_size: int | None = None
    mm_projector_type: str = "linear"
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_patch_merge_type: str = "flat"
    image_aspect_ratio: str = "square"
    image_grid_pinpoints: list | None = None
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    use_mm_proj: bool = False
    tune_mm_mlp_adapter: bool = False
    freeze_mm_mlp_adapter: bool = False
    unfreeze_mm_vision_tower: bool = False
    mm_projector_lr: float | None = None
    mm_vision_tower_lr: float | None = None
    tokenizer_padding_side: str = "right"
    tokenizer_model_max_length: int | None = None
    # The delta projector (arXiv 2512.18910); released checkpoints store `scale_factor` top-level.
    scale_factor: int = 2
    mm_delta_rank: int = 16
    mm_delta_layers: str = "12,16,22,23"
    mm_delta_depth: int = 1
    mm_delta_per_level: bool = False
    mm_delta_init_gain: float = 1.0  # initialisation only: see DeltaProjector
    # Conversation template used at inference when none is given (e.g. "vicuna_v1", "chatml").
    conv_mode: str | None = None


def llava_setting(config, key: str):
    """``config.<key>``, or :class:`LlavaConfig`'s default when ``config`` has no such attribute (a
    plain LlamaConfig, training arguments or a namespace, as upstream code passes to
    ``build_vision_tower`` / ``build_vision_projector``). An explicit None stays None; the reader
    refuses it where it must."""
    if hasattr(config, key):
        return getattr(config, key)
    return getattr(LlavaConfig, key)
