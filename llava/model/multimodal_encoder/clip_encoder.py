"""CLIP vision tower: one forward pass that returns every hidden layer a projector asked for.

Upstream loads ``CLIPVisionModel`` from a hub name and rejects some local paths. Here the tower
is always read from local files (a folder, or a hub name already in the local cache), or built
from a config with random weights; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
# The PIL implementation is upstream LLaVA's preprocessing and needs no torchvision.
from transformers import CLIPImageProcessorPil as CLIPImageProcessor
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.multimodal_encoder.features import VisionFeatures
from llava.model.weights import zero3_gathered

# CLIP's preprocessing constants, used when a tower folder has no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resolve_layer(index: int, num_states: int, what: str) -> int:
    """Maps a (possibly negative) index into the ``hidden_states`` tuple to a non-negative one."""
    resolved = index + num_states if index < 0 else index
    if not 0 <= resolved < num_states:
        raise ValueError(
            f"{what} {index} is out of range for a vision tower with {num_states - 1} layers "
            f"(hidden_states has {num_states} entries, index 0 is the embedding output)"
        )
    return resolved


def clip_hidden_states(model: CLIPVisionModel, images: torch.Tensor, wanted: set[int]) -> dict[int, torch.Tensor]:
    """Selected entries of ``model(images, output_hidden_states=True).hidden_states``, by
    non-negative index (0 = embedding output), without the work nobody reads.

    Runs ``CLIPVisionModel.forward``'s own modules in its order -- embeddings, pre-LayerNorm,
    encoder layers -- but stops after the deepest layer asked for and skips the post-LayerNorm of
    the pooled output. The states are therefore bit-identical to the full forward's. Upstream runs
    every layer; with LLaVA's ``mm_vision_select_layer=-2`` the last one was computed for nothing.

    Args:
        model: the tower.
        images: [B, 3, S, S] pixel values on the tower's device, in its dtype.
        wanted: indices into ``hidden_states``, each in 0 ... num_hidden_layers.
    Returns:
        {index: [B, 1 + h*w, C]} for every wanted index.
    """
    # Some transformers releases nest the transformer under `vision_model` (4.x, early 5.x); 5.23 does not.
    core = getattr(model, "vision_model", model)
    hidden = core.pre_layrnorm(core.embeddings(images))  # (B, 1 + h*w, C)
    states = {0: hidden} if 0 in wanted else {}
    for index, layer in enumerate(core.encoder.layers[: max(wanted)], start=1):
        hidden = layer(hidden, None)  # (B, 1 + h*w, C); no attention mask, as the full forward
        if index in wanted:
            states[index] = hidden
    return states


def load_vision_config(name_or_path: str) -> CLIPVisionConfig:
    """Reads a CLIP vision config from a local folder or the local cache, never from the network."""
    try:
        return CLIPVisionConfig.from_pretrained(name_or_path, local_files_only=True)
    except OSError as err:
        raise FileNotFoundError(
            f"Vision tower {name_or_path!r} is neither a local folder with a config.json nor in the "
            f"local Hugging Face cache (nothing is downloaded). Point mm_vision_tower (--vision_tower in "
            f"training) at a local copy. Original error: {err}"
        ) from err


def build_image_processor(name_or_path: str, config: CLIPVisionConfig) -> CLIPImageProcessor:
    """The tower's own preprocessor_config.json if present, else CLIP preprocessing at its image size."""
    if Path(name_or_path, "preprocessor_config.json").is_file() or not os.path.isdir(name_or_path):
        try:
            return CLIPImageProcessor.from_pretrained(name_or_path, local_files_only=True)
        except OSError:
            pass  # no processor saved with this tower: fall back to CLIP's defaults below
    size = config.image_size
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


class CLIPVisionTower(nn.Module):
    """Wraps ``CLIPVisionModel``; state-dict names stay upstream's (``vision_tower.*``).

    Args:
        vision_tower: local folder (config.json, optional weights) or a locally cached hub name.
        select_layer: index into ``hidden_states`` for the single-level stream (LLaVA: -2).
        select_feature: ``"patch"`` drops CLS, ``"cls_patch"`` keeps it.
        extra_layers: hidden-state indices the projector also wants (delta: 12, 16, 22, 23).
        delay_load: build the module with random weights now; call :meth:`load_model` for weights.
    """

    def __init__(
        self,
        vision_tower: str,
        select_layer: int = -2,
        select_feature: str = "patch",
        extra_layers: tuple[int, ...] = (),
        delay_load: bool = False,
    ):
        super().__init__()
        self.vision_tower_name = str(vision_tower)
        self.cfg_only = load_vision_config(self.vision_tower_name)
        self.select(select_layer, select_feature, extra_layers)
        self.image_processor = build_image_processor(self.vision_tower_name, self.cfg_only)
        # The module exists from the start (random init) so that a checkpoint that contains the
        # tower's weights fills it; load_model() reads the tower folder's own weights instead.
        self.vision_tower = CLIPVisionModel(self.cfg_only)
        self.vision_tower.requires_grad_(False)
        self.is_loaded = False
        if not delay_load:
            self.load_model()

    def select(self, select_layer: int, select_feature: str, extra_layers: tuple[int, ...] = ()) -> None:
        """Sets which hidden states the forward returns (also on a tower already built, when training
        on from a checkpoint with other settings).

        Raises:
            ValueError: an unknown ``select_feature``, or a layer index out of the tower's range.
        """
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"Unexpected mm_vision_select_feature {select_feature!r}; expected 'patch' or 'cls_patch'")
        num_states = self.cfg_only.num_hidden_layers + 1
        self.select_feature = select_feature
        self.select_layer = resolve_layer(select_layer, num_states, "mm_vision_select_layer")
        self.extra_layers = tuple(resolve_layer(i, num_states, "vision layer") for i in extra_layers)

    @property
    def has_weights_on_disk(self) -> bool:
        folder = Path(self.vision_tower_name)
        return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin")) or not folder.is_dir()

    def load_model(self, device_map=None) -> None:
        """Loads the tower's pretrained weights from its folder (random init is kept if it has none)."""
        if self.is_loaded:
            return
        if self.has_weights_on_disk:
            loaded = CLIPVisionModel.from_pretrained(self.vision_tower_name, local_files_only=True, device_map=device_map)
            # Under ZeRO-3 either model may be partitioned (empty tensors): gather both to copy.
            with zero3_gathered([*loaded.parameters(), *self.vision_tower.parameters()]):
                self.vision_tower.load_state_dict(loaded.state_dict())
        self.vision_tower.requires_grad_(False)
        self.is_loaded = True

    @property
    def layers_needed(self) -> int:
        """Deepest encoder layer any stream reads; layers past it are never run."""
        return max((self.select_layer, *self.extra_layers))

    def hidden_states(self, images: torch.Tensor) -> dict[int, torch.Tensor]:
        """The hidden states that some stream reads, by index (0 = embedding output).

        Args:
            images: [B, 3, S, S] pixel values (cast to the tower's device and dtype).
        Returns:
            {index: [B, 1 + h*w, C]} for ``select_layer`` and every extra layer.
        """
        return clip_hidden_states(self.vision_tower, images.to(device=self.device, dtype=self.dtype),
                                  {self.select_layer, *self.extra_layers})

    def forward(self, images: torch.Tensor) -> VisionFeatures:
        """
        Args:
            images: [B, 3, S, S] pixel values.
        Returns:
            VisionFeatures with patch [B, N, C] and levels [B, h*w, L*C] (or None).
        """
        # A frozen tower builds no autograd graph (upstream decorates this forward with no_grad).
        # That matters under gradient checkpointing: transformers' enable_input_require_grads hooks
        # the input embeddings of every sub-model, this tower's patch embedding included, and every
        # tower activation would then require grad -- the frozen tower recomputed and
        # back-propagated through at each training step, for gradients nobody reads.
        trainable = any(p.requires_grad for p in self.vision_tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            states = self.hidden_states(images)
        patch = states[self.select_layer]
        if self.select_feature == "patch":
            patch = patch[:, 1:]
        levels = torch.cat([states[i][:, 1:] for i in self.extra_layers], dim=-1) if self.extra_layers else None
        return VisionFeatures(patch=patch, levels=levels, grid=(self.num_patches_per_side, self.num_patches_per_side))

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.embeddings.patch_embedding.weight.device

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.cfg_only.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.cfg_only.image_size // self.cfg_only.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2


def save_random_vision_tower(path: str | os.PathLike, config: CLIPVisionConfig, seed: int = 0) -> str:
    """Writes a randomly initialised CLIP vision tower folder (weights + preprocessor), for tests,
    benchmarks and the quickstart's stage 0 starting point."""
    torch.manual_seed(seed)
    model = CLIPVisionModel(config)
    model.save_pretrained(path)
    build_image_processor(str(path), config).save_pretrained(path)
    return str(path)
