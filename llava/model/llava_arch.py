"""LLaVA's multimodal mixins: build the tower and projector from the config, encode images, and
splice visual tokens into the text sequence. This is the only module that splices."""

from __future__ import annotations

import logging

import torch

from llava.constants import (
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_PATCH_TOKEN,
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
)
from llava.model.multimodal_encoder.builder import build_vision_tower, projector_vision_layers
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.multimodal_projector.delta import parse_layers
from llava.model.multimodal_projector.registry import OwnInit, canonical_projector_name

logger = logging.getLogger(__name__)


def _check_merge_type(config) -> None:
    """Only upstream's ``flat`` layout of visual tokens is built (at load and before training alike)."""
    if config.mm_patch_merge_type != "flat":
        raise ValueError(f"mm_patch_merge_type {config.mm_patch_merge_type!r} is not supported; use 'flat'")


class LlavaMetaModel:
    """Mixin for the base model (``model.*``): owns ``vision_tower`` and ``mm_projector``."""

    def __init__(self, config):
        super().__init__(config)
        if getattr(config, "mm_vision_tower", None):
            _check_merge_type(config)
            self.vision_tower = build_vision_tower(config, delay_load=True)
            self.mm_projector = build_vision_projector(config)
            self._projector_signature = _signature(config)
            self._check_grid()

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return getattr(self, "vision_tower", None)

    def _init_weights(self, module) -> None:
        # transformers dispatches initialisation to the nearest PreTrainedModel, which is this base
        # model (it owns the projector), and calls it only for modules whose weights were not loaded.
        super()._init_weights(module)
        if isinstance(module, OwnInit):
            module.reset_parameters()

    def _check_grid(self) -> None:
        """Fails at build time, not at the first image, when the projector cannot use the tower's
        grid (e.g. a scale_factor that does not divide it)."""
        side = self.vision_tower.num_patches_per_side
        self.mm_projector.num_tokens((side, side))

    def initialize_vision_modules(self, model_args) -> None:
        """Builds (or rebuilds) tower and projector from training arguments, records the choice in
        the config, and loads ``pretrain_mm_mlp_adapter`` when given.

        Args:
            model_args: has ``vision_tower``, ``mm_vision_select_layer``, ``mm_vision_select_feature``,
                ``mm_projector_type``, ``mm_patch_merge_type``, ``pretrain_mm_mlp_adapter`` and the
                projector's own keys (``scale_factor``, ``mm_delta_*``), when present.
        """
        from llava.model import weights  # local: weights imports the projector registry too

        config = self.config
        config.mm_vision_tower = model_args.vision_tower
        for key in ("mm_vision_select_layer", "mm_vision_select_feature", "mm_projector_type", "mm_patch_merge_type",
                    "scale_factor", "mm_delta_rank", "mm_delta_layers", "mm_delta_depth", "mm_delta_per_level",
                    "mm_delta_init_gain"):
            if getattr(model_args, key, None) is not None:
                setattr(config, key, getattr(model_args, key))
        _check_merge_type(config)  # as at load time, so no run trains what cannot be loaded
        tower = self.get_vision_tower()
        if tower is None or tower.vision_tower_name != config.mm_vision_tower:
            tower = build_vision_tower(config)
            self.vision_tower = tower
        else:
            # The checkpoint's own tower: it read the layers the checkpoint's config named, and
            # must read those the training arguments name, as the saved config will say.
            before = (tower.select_layer, tower.select_feature, tower.extra_layers)
            tower.select(config.mm_vision_select_layer, config.mm_vision_select_feature,
                         projector_vision_layers(config))
            after = (tower.select_layer, tower.select_feature, tower.extra_layers)
            if before != after:
                logger.warning("The training arguments change the vision features the projector reads from the "
                               "checkpoint's: %s", ", ".join(f"{name} {b} -> {a}" for name, b, a in zip(
                                   ("select layer", "select feature", "extra layers"), before, after) if a != b))
            tower.load_model()
        config.use_mm_proj = True
        config.mm_hidden_size = tower.hidden_size
        # Keep a projector that already matches the config (e.g. from a stage-1 checkpoint); a
        # changed projector type or shape gets a fresh one.
        signature = _signature(config)
        if getattr(self, "mm_projector", None) is None or self._projector_signature != signature:
            if getattr(self, "mm_projector", None) is not None:
                old = dict(self._projector_signature)
                changed = ", ".join(f"{k} {old[k]} -> {v}" for k, v in signature if old[k] != v)
                logger.warning("The training arguments replace the checkpoint's %s projector with a new %s projector "
                               "(%s); its weights are not used", old["type"], config.mm_projector_type, changed)
            self.mm_projector = build_vision_projector(config).to(
                device=self.embed_tokens.weight.device, dtype=self.embed_tokens.weight.dtype)
            self._projector_signature = signature
        self._check_grid()
        for p in self.mm_projector.parameters():
            p.requires_grad = True
        adapter = getattr(model_args, "pretrain_mm_mlp_adapter", None)
        if adapter:
            with weights.zero3_gathered(list(self.mm_projector.parameters())):  # partitioned under ZeRO-3
                weights.load_projector_weights(self.mm_projector, weights.read_state_dict(adapter),
                                               config.mm_projector_type, source=adapter)


def _signature(config) -> tuple:
    """What fixes the projector's modules and shapes, as ``(name, value)`` pairs. Aliases of one
    projector (``delatallava``, the released code's name for ``delta``) are the same projector."""
    return (("type", canonical_projector_name(config.mm_projector_type)), ("mm_hidden_size", config.mm_hidden_size), ("hidden_size", config.hidden_size),
            ("scale_factor", config.scale_factor), ("mm_delta_rank", config.mm_delta_rank),
            ("mm_delta_layers", _layers_key(config.mm_delta_layers)), ("mm_delta_depth", config.mm_delta_depth),
            ("mm_delta_per_level", config.mm_delta_per_level))


def _layers_key(value) -> str:
    """``mm_delta_layers`` as one spelling ("1,2,3" for "1, 2, 3" and [1, 2, 3]), so that the same
    layers written another way keep a trained projector."""
    try:
        return ",".join(map(str, parse_layers(value)))
    except ValueError:
        return str(value)  # refused where the projector reads it


class LlavaMetaForCausalLM:
    """Mixin for the causal LM: ``encode_images`` and the splice of visual tokens into the text."""

    def get_model(self) -> LlavaMetaModel:
        return self.model

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return self.get_model().get_vision_tower()

    def num_image_tokens(self) -> int:
        """Visual tokens per image: the projector's count for the tower's grid (never assumed),
        plus the CLS token when the tower keeps it and the projector maps every token."""
        tower = self.get_vision_tower()
        projector = self.get_model().mm_projector
        tokens = projector.num_tokens((tower.num_patches_per_side, tower.num_patches_per_side))
        return tokens + int(projector.keeps_cls and getattr(tower, "select_feature", "patch") == "cls_patch")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """
        Args:
            images: [B, 3, S, S] pixel values.
        Returns:
            [B, N', H] visual tokens, N' = ``num_image_tokens()``.
        """
        model = self.get_model()
        features = model.get_vision_tower()(images)
        projector = model.mm_projector
        proj_dtype = next(projector.parameters(), model.embed_tokens.weight).dtype
        return projector(features.to(dtype=proj_dtype))

    def prepare_inputs_labels_for_multimodal(
        self, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None,
        padding_side: str | None = None,
    ):
        """Replaces each ``IMAGE_TOKEN_INDEX`` by that image's visual tokens.

        Args:
            input_ids: [B, T] with one -200 per image; padding marked by ``attention_mask``.
            images: [n, 3, S, S] (or a list of [3, S, S] / [k, 3, S, S]); n equals the number of
                image tokens, or that plus the number of text-only samples (training batches give
                text-only samples a placeholder image so every rank runs the projector).
            padding_side: "left" or "right" to re-pad on; by default the config's
                ``tokenizer_padding_side`` (training's side). Generation passes "left".
        Returns:
            (None, position_ids, attention_mask, past_key_values, inputs_embeds [B, T', H], labels),
            truncated to ``tokenizer_model_max_length`` and re-padded on ``padding_side``.
        """
        tower = self.get_vision_tower()
        # A one-token step without an image token is a cached decoding step: nothing to splice.
        # (A prompt that is only ``<image>``, as the ``plain`` template gives, still is spliced.)
        decode_step = input_ids.shape[1] == 1 and not bool((input_ids == IMAGE_TOKEN_INDEX).any())
        if tower is None or images is None or decode_step:
            return input_ids, position_ids, attention_mask, past_key_values, None, labels

        if isinstance(images, (list, tuple)):
            images = torch.cat([img if img.ndim == 4 else img.unsqueeze(0) for img in images], dim=0)
        elif images.ndim == 5:
            images = images.flatten(0, 1)
        image_features = self.encode_images(images)  # (n, N', H)

        image_mask = input_ids == IMAGE_TOKEN_INDEX
        tokens_per_sample = image_mask.sum(dim=1).tolist()
        num_tokens, num_text_only = sum(tokens_per_sample), sum(1 for n in tokens_per_sample if n == 0)
        if len(image_features) == num_tokens:
            placeholder_images = False
        elif len(image_features) == num_tokens + num_text_only:
            placeholder_images = True
        else:
            raise ValueError(
                f"Image features and image tokens do not match: tokens {num_tokens}, images {len(image_features)}"
            )

        keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        target = labels if labels is not None else torch.full_like(input_ids, IGNORE_INDEX)
        text_embeds = self.get_model().embed_tokens(input_ids.masked_fill(image_mask, 0))  # (B, T, H)

        seq_embeds, seq_labels, seq_is_image = [], [], []
        next_image = 0
        for b in range(input_ids.shape[0]):
            ids, emb, lab = input_ids[b][keep[b]], text_embeds[b][keep[b]], target[b][keep[b]]
            cuts = torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist()
            if not cuts:
                # Text-only: a zero-length slice keeps the projector in the graph on every rank
                # (ZeRO-3 otherwise waits forever for the ranks that skipped it).
                emb = torch.cat([emb, image_features[min(next_image, len(image_features) - 1)][:0]])
                seq_embeds.append(emb)
                seq_labels.append(lab)
                seq_is_image.append(torch.zeros(len(lab), dtype=torch.bool, device=lab.device))
                next_image += int(placeholder_images)
                continue
            parts_e, parts_l, parts_i, start = [], [], [], 0
            for cut in cuts + [len(ids)]:
                parts_e.append(emb[start:cut])
                parts_l.append(lab[start:cut])
                parts_i.append(torch.zeros(cut - start, dtype=torch.bool, device=lab.device))
                if cut < len(ids):
                    feat = image_features[next_image]
                    next_image += 1
                    parts_e.append(feat)
                    parts_l.append(torch.full((len(feat),), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
                    parts_i.append(torch.ones(len(feat), dtype=torch.bool, device=lab.device))
                start = cut + 1
            seq_embeds.append(torch.cat(parts_e))
            seq_labels.append(torch.cat(parts_l))
            seq_is_image.append(torch.cat(parts_i))

        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len is not None:
            for b, is_img in enumerate(seq_is_image):
                if len(is_img) > max_len and is_img[max_len - 1] and is_img[max_len]:
                    raise ValueError(
                        f"Sample {b} is {len(is_img)} tokens long with its visual tokens; truncating to "
                        f"tokenizer_model_max_length={max_len} would cut through an image"
                    )
            seq_embeds = [e[:max_len] for e in seq_embeds]
            seq_labels = [lab[:max_len] for lab in seq_labels]

        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right")
        return (None, *self._pad_spliced(seq_embeds, seq_labels, position_ids, attention_mask, labels, side),)

    def _pad_spliced(self, seq_embeds, seq_labels, position_ids, attention_mask, labels, side):
        """Pads spliced sequences back into a batch on ``side``; returns (position_ids,
        attention_mask, past_key_values=None, inputs_embeds, labels)."""
        batch, longest = len(seq_embeds), max(len(e) for e in seq_embeds)
        hidden = seq_embeds[0].shape[-1]
        ref = seq_embeds[0]
        embeds = ref.new_zeros((batch, longest, hidden))
        new_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=seq_labels[0].dtype, device=ref.device)
        mask = torch.zeros((batch, longest), dtype=torch.bool, device=ref.device)
        positions = torch.zeros((batch, longest), dtype=torch.long, device=ref.device)
        if side not in ("left", "right"):
            raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
        left = side == "left"
        for b, (emb, lab) in enumerate(zip(seq_embeds, seq_labels)):
            n = len(emb)
            span = slice(longest - n, longest) if left else slice(0, n)
            embeds[b, span] = emb
            new_labels[b, span] = lab
            mask[b, span] = True
            positions[b, span] = torch.arange(n, device=ref.device)
        return (
            positions if position_ids is not None else None,
            mask.to(attention_mask.dtype) if attention_mask is not None else None,
            None,
            embeds,
            new_labels if labels is not None else None,
        )

    def initialize_vision_tokenizer(self, model_args, tokenizer) -> None:
        """Adds ``<im_patch>`` / ``<im_start>``/``<im_end>`` tokens when the arguments ask for them;
        with ``pretrain_mm_mlp_adapter``, the start/end rows stage 1 trained come from that file."""
        from llava.model import weights  # local: weights imports the projector registry too

        added = 0
        if model_args.mm_use_im_patch_token:
            added += tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
        if model_args.mm_use_im_start_end:
            added += tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
        if added:
            self.resize_token_embeddings(len(tokenizer))
            inp, out = self.get_input_embeddings().weight.data, self.get_output_embeddings().weight.data
            # New rows start at the mean of the existing ones, as upstream does.
            inp[-added:] = inp[:-added].mean(dim=0, keepdim=True)
            out[-added:] = out[:-added].mean(dim=0, keepdim=True)
            # Stage 1 learns the start/end rows with the projector; the checkpoint saver keeps
            # ``embed_tokens`` only then. An ``<im_patch>`` row alone is never read (images
            # replace the placeholder), so the embeddings stay frozen for it.
            if model_args.tune_mm_mlp_adapter and model_args.mm_use_im_start_end:
                self.get_input_embeddings().requires_grad_(True)
                # With tied embeddings (SmolLM2, for one) the LM head is the same matrix: freezing
                # it would freeze the rows that must train.
                if self.get_output_embeddings().weight is not self.get_input_embeddings().weight:
                    self.get_output_embeddings().requires_grad_(False)
            adapter = getattr(model_args, "pretrain_mm_mlp_adapter", None)
            if adapter and model_args.mm_use_im_start_end:
                if not weights.copy_new_token_rows(inp, weights.read_state_dict(adapter), added, adapter):
                    logger.warning("%s has no %s: the %d new token rows start at the mean embedding", adapter,
                                   weights.EMBED_KEY, added)
