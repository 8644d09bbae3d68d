"""``LLaVATrainer``: transformers' Trainer with LLaVA's learning-rate groups, sampler and checkpoints.

On top of ``transformers.Trainer`` (5.x API: ``processing_class``, ``_get_train_sampler(dataset)``,
``create_optimizer(model)``):

* ``--group_by_modality_length``: :class:`~llava.data.sampler.LengthGroupedSampler`.
* ``--mm_projector_lr`` / ``--mm_vision_tower_lr``: the projector and the vision tower get their
  own learning rate (each with and without weight decay).
* Stage 1 (``projector_only``): every checkpoint holds only the projector
  (``mm_projector.bin`` + ``mm_projector.safetensors``), ``config.json`` and the trainer state
  (optimizer, scheduler, RNG, ``trainer_state.json``; under DeepSpeed its checkpoint without
  the frozen LLM), and ``--resume_from_checkpoint`` restores all of it. Upstream's stage-1
  checkpoints hold the projector only and cannot be resumed.
* LoRA: checkpoints also carry ``non_lora_trainables.bin`` (the projector), so resuming keeps it.
* ZeRO-3: the projector and LoRA weights are gathered before they are written.
* Tokenization mismatches reported by the collator are counted; past
  ``max_tokenization_mismatch_ratio`` of the training samples the run stops, naming the first few.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Iterable

import torch
from transformers import Trainer
from transformers.trainer_utils import _is_peft_model

from llava.data.sampler import LengthGroupedSampler
from llava.model import weights

logger = logging.getLogger(__name__)

SCHEDULER_NAME = "scheduler.pt"
VISION_TOWER_DIR = "vision_tower"


def gathered_state_dict(named_params: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """CPU copies of the given parameters, gathered first when ZeRO-3 partitions them.

    Under ZeRO-3 every rank must call this (the gather is a collective).
    """
    named = list(named_params)
    partitioned = [p for _, p in named if hasattr(p, "ds_id")]
    if partitioned:
        import deepspeed

        context = deepspeed.zero.GatheredParameters(partitioned)
    else:
        context = contextlib.nullcontext()
    with context:
        return {name: p.detach().to("cpu").clone() for name, p in named}


def unwrap_llava(model):
    """The ``LlavaLlamaForCausalLM`` inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if _is_peft_model(model) else model


def save_config(config, output_dir: str) -> None:
    """Writes ``config.json`` without ``quantization_config``: projector and LoRA outputs are
    applied to the base LLM in full precision (QLoRA trains against the quantized weights, but
    the adapter is merged into the original ones)."""
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(output_dir)


class MismatchCounter:
    """Counts the distinct samples whose labels could not be aligned; raises past the allowed number.

    A sample met again (another epoch) is not counted again. Each process counts what it sees and
    compares it with the whole run's allowance, so a run is never stopped for a share of the data
    below the ratio; the data check before training counts over the whole file.

    Args:
        limit: how many mismatched samples the run may have (the ratio times the dataset's size).
        ratio: the ``max_tokenization_mismatch_ratio`` it came from (for the message).
    """

    def __init__(self, limit: float, ratio: float):
        self.limit = limit
        self.ratio = ratio
        self.seen: dict[str, None] = {}  # sample ids in the order first met
        self._unnamed = 0

    @property
    def count(self) -> int:
        return len(self.seen)

    def update(self, flags, sample_ids) -> None:
        flags = flags.tolist() if isinstance(flags, torch.Tensor) else list(flags)
        ids = list(sample_ids) if sample_ids is not None else [None] * len(flags)
        for flag, sid in zip(flags, ids):
            if flag:
                if sid is None:  # no id to tell a repeat by: every one counts
                    self._unnamed += 1
                    sid = f"<unnamed {self._unnamed}>"
                self.seen.setdefault(str(sid), None)
        if self.count > self.limit:
            raise ValueError(
                f"Tokenization mismatch in {self.count} distinct training samples so far (first: "
                f"{list(self.seen)[:5]}); --max_tokenization_mismatch_ratio {self.ratio} allows {int(self.limit)} in "
                f"this run. Their labels could not be aligned with the replies: check that --version fits the "
                f"tokenizer.")


class LLaVATrainer(Trainer):
    """transformers' Trainer for LLaVA.

    Args:
        projector_only: stage 1 (``--tune_mm_mlp_adapter``): save and resume the projector only.
        max_tokenization_mismatch_ratio: share of training samples that may have a tokenization
            mismatch before the run stops.
        *args, **kwargs: as ``transformers.Trainer`` (``processing_class`` is the tokenizer).
    """

    def __init__(self, *args, projector_only: bool = False, max_tokenization_mismatch_ratio: float = 0.001,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.projector_only = projector_only
        num_samples = len(self.train_dataset) if self.train_dataset is not None else 0
        self.mismatches = MismatchCounter(max_tokenization_mismatch_ratio * num_samples,
                                          max_tokenization_mismatch_ratio)

    # ------------------------------------------------------------------------------ data

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not getattr(self.args, "group_by_modality_length", False):
            return super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthGroupedSampler(
            self.args.train_batch_size,
            world_size=self.args.world_size * self.args.gradient_accumulation_steps,
            lengths=dataset.modality_lengths,
            group_by_modality=True,
            seed=seed,
            accumulation_steps=self.args.gradient_accumulation_steps,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        flags = inputs.pop("tokenization_mismatch", None)
        sample_ids = inputs.pop("sample_ids", None)
        if flags is not None and model.training:
            self.mismatches.update(flags, sample_ids)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    # ------------------------------------------------------------------------------ optimizer

    def create_optimizer(self, model=None):
        """Adds learning-rate groups for the projector (``mm_projector_lr``) and the vision tower
        (``mm_vision_tower_lr``), each split by weight decay as the default groups are."""
        opt_model = self.model if model is None else model
        special = {part: lr for part, lr in (("mm_projector", getattr(self.args, "mm_projector_lr", None)),
                                             ("vision_tower", getattr(self.args, "mm_vision_tower_lr", None)))
                   if lr is not None}
        if self.optimizer is not None or not special:
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str | None, bool], list] = {}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            part = next((p for p in special if f"{p}." in name), None)
            groups.setdefault((part, name in decay), []).append(param)
        param_groups = []
        for (part, decays), params in groups.items():
            group = {"params": params, "weight_decay": self.args.weight_decay if decays else 0.0}
            if part is not None:
                group["lr"] = special[part]
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        for (part, decays), params in groups.items():
            logger.info("optimizer group %-12s decay=%-5s lr=%-8g %d tensors", part or "llm", decays,
                        special.get(part, self.args.learning_rate), len(params))
        return self.optimizer

    # ------------------------------------------------------------------------------ saving

    def _config(self):
        return unwrap_llava(self.model).config

    def save_projector(self, output_dir: str) -> None:
        """Writes the projector (and ``embed_tokens`` when start/end tokens were added) with
        ``config.json``; gathered under ZeRO-3, written by the main process."""
        llava = unwrap_llava(self.model)
        config = self._config()
        keys = ["mm_projector."] + (["embed_tokens."] if config.mm_use_im_start_end else [])
        named = [(n, p) for n, p in llava.named_parameters() if any(k in n for k in keys)]
        state = gathered_state_dict(named)
        tower = llava.get_vision_tower()
        tower_dir = None
        if tower is not None and any(p.requires_grad for p in tower.parameters()):
            tower_dir = self.save_vision_tower(output_dir, tower)
        if self.args.should_save:
            weights.save_projector(output_dir, state)
            if tower_dir is not None:
                config = copy.deepcopy(config)
                config.mm_vision_tower = tower_dir
            save_config(config, output_dir)

    def save_vision_tower(self, output_dir: str, tower) -> str:
        """A trained tower (``--unfreeze_mm_vision_tower`` in stage 1) is saved as a CLIP folder,
        ``<output_dir>/vision_tower``, which ``config.json`` then names: stage 2 starts from it with
        ``--vision_tower <output_dir>/vision_tower`` (the projector file holds the projector only)."""
        folder = os.path.join(os.path.abspath(output_dir), VISION_TOWER_DIR)
        state = gathered_state_dict(tower.vision_tower.named_parameters())
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            tower.vision_tower.config.save_pretrained(folder)
            tower.image_processor.save_pretrained(folder)
            buffers = {n: b for n, b in tower.vision_tower.named_buffers() if n in tower.vision_tower.state_dict()}
            weights.save_tower_weights(folder, {**state, **buffers})
            logger.info("The vision tower was trained: saved to %s (stage 2: --vision_tower %s)", folder, folder)
        return folder

    def save_non_lora_trainables(self, output_dir: str) -> None:
        """``non_lora_trainables.bin``: trainable weights outside LoRA (the projector), with peft's
        ``base_model.model.`` prefix, as upstream writes it."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and "lora_" not in n]
        state = gathered_state_dict(named)
        if self.args.should_save:
            weights.save_non_lora_trainables(output_dir, state)
            save_config(self._config(), output_dir)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if self.projector_only:
            self.save_projector(output_dir)
            return
        super().save_model(output_dir, _internal_call=_internal_call)
        if _is_peft_model(self.model):
            self.save_non_lora_trainables(output_dir)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not (self.is_deepspeed_enabled and self.projector_only):
            return super()._save_optimizer_and_scheduler(output_dir)
        # Stage 1 under DeepSpeed: its checkpoint without the frozen LLM (which does not change).
        self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        from accelerate.utils import DeepSpeedSchedulerWrapper

        if self.args.should_save and not isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper):
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    # ------------------------------------------------------------------------------ resuming

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        folder = Path(resume_from_checkpoint)
        if self.projector_only and not weights.has_full_weights(folder):
            self._load_projector_checkpoint(folder, model)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        non_lora = folder / weights.NON_LORA_FILE
        if _is_peft_model(model) and non_lora.is_file():
            state = weights.read_state_dict(non_lora)
            unexpected = model.load_state_dict(state, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"{non_lora} has keys the model lacks: {unexpected[:8]}")

    def _load_projector_checkpoint(self, folder: Path, model) -> None:
        llava = unwrap_llava(model)
        state = weights.read_state_dict(folder)  # mm_projector.safetensors, else mm_projector.bin
        weights.load_projector_weights(llava.get_model().mm_projector, state, llava.config.mm_projector_type,
                                       source=str(folder))
        tower_file = folder / VISION_TOWER_DIR / weights.TOWER_WEIGHTS_FILE
        tower = llava.get_vision_tower()
        if tower_file.is_file() and tower is not None:
            tower.vision_tower.load_state_dict(weights.read_state_dict(tower_file))
        rest = {k: v for k, v in state.items() if "mm_projector." not in k}
        if rest:
            unexpected = llava.load_state_dict(rest, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"Projector checkpoint {folder} has keys the model lacks: {unexpected[:8]}")
        logger.info("Resumed the projector from %s", folder)

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        if resume_from_checkpoint is None or not (self.is_deepspeed_enabled and self.projector_only):
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        # A stage-1 DeepSpeed checkpoint holds only the trainable parameters: load it non-strictly.
        from transformers.integrations.deepspeed import deepspeed_load_checkpoint

        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, None)
        deepspeed_load_checkpoint(self.model_wrapped, resume_from_checkpoint, load_module_strict=False)
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        return model, train_dataloader
