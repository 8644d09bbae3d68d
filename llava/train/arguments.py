"""The training command line: upstream LLaVA's three dataclasses, names and defaults, plus the
projector flags, the data-check flags and aliases for arguments transformers 5 renamed.

Parse with :func:`parse_arguments` (``HfArgumentParser`` over the three dataclasses). Keys that
end up in the model config (``mm_*``, ``scale_factor``, ...) are declared with their defaults in
``LlavaConfig``; an argument left at ``None`` here means "the config's default".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import transformers
from transformers import HfArgumentParser

from llava.model.weights import read_json


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default="facebook/opt-125m",
                                           metadata={"help": "base LLM folder (or a locally cached hub name)"})
    version: str | None = field(default="v0", metadata={"help": "conversation template: plain, v1, chatml, ..."})
    freeze_backbone: bool = field(default=False)
    tune_mm_mlp_adapter: bool = field(default=False, metadata={"help": "stage 1: train the projector only"})
    vision_tower: str | None = field(default=None)
    mm_vision_select_layer: int | None = field(default=-1)
    pretrain_mm_mlp_adapter: str | None = field(default=None, metadata={"help": "stage-1 projector file or folder"})
    mm_projector_type: str | None = field(default="linear")
    mm_use_im_start_end: bool = field(default=False)
    mm_use_im_patch_token: bool = field(default=True)
    mm_patch_merge_type: str | None = field(default="flat")
    mm_vision_select_feature: str | None = field(default="patch")
    # New here.
    unfreeze_mm_vision_tower: bool = field(
        default=False, metadata={"help": "train the vision tower too (needed when it is not pretrained)"})
    scale_factor: int | None = field(default=None, metadata={"help": "delta: s, tokens = (h/s)*(w/s)"})
    mm_delta_rank: int | None = field(default=None, metadata={"help": "delta: rank of the low-rank deltas"})
    mm_delta_layers: str | None = field(default=None, metadata={"help": "delta: tower layers, e.g. 12,16,22,23"})
    mm_delta_depth: int | None = field(default=None, metadata={"help": "delta: number of refine blocks"})
    mm_delta_per_level: bool | None = field(default=None, metadata={"help": "delta: the paper's per-level deltas"})
    mm_delta_init_gain: float | None = field(
        default=None, metadata={"help": "delta: gain on the region attention's initial output projection"})


@dataclass
class DataArguments:
    data_path: str | None = field(default=None, metadata={"help": "JSON list or JSONL of LLaVA samples"})
    lazy_preprocess: bool = False  # accepted for upstream recipes; preprocessing is always lazy
    is_multimodal: bool = False  # accepted for upstream recipes; set from --vision_tower
    image_folder: str | None = field(default=None)
    image_aspect_ratio: str = "square"
    # New here: the data check before training.
    skip_bad_samples: bool = field(
        default=False, metadata={"help": "train on the good samples and report the bad ones (default: stop)"})
    check_images: bool = field(default=True, metadata={"help": "decode every image before training (else: exists)"})
    tokenization_check_samples: int = field(
        default=2000, metadata={"help": "samples tokenized before training (-1: all); the rest are checked as used, "
                                        "but with --skip_bad_samples every sample's length is checked before"})
    max_tokenization_mismatch_ratio: float = field(
        default=0.001, metadata={"help": "share of samples whose labels may fail to align before the run stops"})

    def __post_init__(self):
        # Upstream centre-crops for any value but "pad" and records the value, typo included.
        if self.image_aspect_ratio not in ("square", "pad"):
            raise ValueError(f"--image_aspect_ratio must be 'pad' or 'square' (LLaVA-1.5's two), got "
                             f"{self.image_aspect_ratio!r}")
        if not 0 <= self.max_tokenization_mismatch_ratio <= 1:
            raise ValueError(f"--max_tokenization_mismatch_ratio is a share of the samples, in [0, 1]; got "
                             f"{self.max_tokenization_mismatch_ratio}")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    mpt_attn_impl: str | None = field(default="triton")  # accepted for upstream recipes; unused
    model_max_length: int = field(
        default=512, metadata={"help": "longest sequence, visual tokens included; longer text is cut at the end"})
    double_quant: bool = field(default=True, metadata={"help": "QLoRA: quantize the quantization constants"})
    quant_type: str = field(default="nf4", metadata={"help": "QLoRA: fp4 or nf4"})
    bits: int = field(default=16, metadata={"help": "16, or 8 / 4 to load the LLM quantized (QLoRA)"})
    lora_enable: bool = False
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_weight_path: str = ""
    lora_bias: str = "none"
    mm_projector_lr: float | None = None
    group_by_modality_length: bool = field(default=False)
    # New here.
    mm_vision_tower_lr: float | None = field(default=None, metadata={"help": "with --unfreeze_mm_vision_tower"})
    fp32_master_weights: bool = field(default=True, metadata={
        "help": "with --bf16 and no DeepSpeed: keep the trainable parameters in fp32 and run bf16 as autocast "
                "(frozen weights stay bf16); False trains bf16 weights in place, as upstream does"})
    # transformers 5 renamed these; upstream recipes still pass the old names.
    evaluation_strategy: str | None = field(default=None, metadata={"help": "alias of --eval_strategy"})
    warmup_ratio: float | None = field(default=None, metadata={"help": "alias: --warmup_steps with a value < 1"})

    def __post_init__(self):
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ValueError("pass --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio  # transformers 5 reads a value < 1 as a ratio
        if self.bits not in (4, 8, 16):
            raise ValueError(f"--bits must be 4, 8 or 16, got {self.bits}")
        if self.quant_type not in ("nf4", "fp4"):
            raise ValueError(f"--quant_type must be nf4 or fp4, got {self.quant_type!r}")
        if self.lora_bias not in ("none", "all", "lora_only"):
            raise ValueError(f"--lora_bias must be none, all or lora_only, got {self.lora_bias!r}")
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be a positive rank, got {self.lora_r}")
        if self.bits in (4, 8) and not self.lora_enable:
            # transformers' Trainer refuses to train a quantized model without adapters (stage 1's
            # projector alone included), after the model has loaded.
            raise ValueError(f"--bits {self.bits} loads the LLM quantized, which trains only through LoRA adapters: "
                             f"add --lora_enable True (QLoRA), or leave --bits at 16")
        if self.model_max_length < 1:
            raise ValueError(f"--model_max_length must be a positive number of tokens, got {self.model_max_length}")
        check_deepspeed_file(self.deepspeed)
        super().__post_init__()


def check_deepspeed_file(deepspeed) -> None:
    """Names the file when ``--deepspeed`` is not a readable JSON file; accelerate's errors do not.

    A dict, or a string that is no file name (accelerate also takes the config as a JSON or
    base64 string), is left to accelerate.

    Raises:
        FileNotFoundError: a ``.json`` path that does not exist.
        ValueError: a directory, invalid JSON (line and column), or JSON that is not an object.
    """
    if not isinstance(deepspeed, str):
        return
    if os.path.isdir(deepspeed):
        raise ValueError(f"--deepspeed {deepspeed} is a directory; pass a DeepSpeed config file in it, such as "
                         f"./scripts/zero2.json")
    if not os.path.isfile(deepspeed):
        if deepspeed.endswith(".json"):
            raise FileNotFoundError(f"--deepspeed config file not found: {deepspeed}")
        return
    try:
        config = read_json(deepspeed)
    except ValueError as err:  # names the file, line and column
        raise ValueError(f"Cannot read --deepspeed: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"Cannot read --deepspeed {deepspeed}: expected a JSON object, got a JSON "
                         f"{type(config).__name__}")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, TrainingArguments)


def make_parser() -> HfArgumentParser:
    return HfArgumentParser(ARGUMENT_CLASSES)


def parse_arguments(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parses ``argv`` (default: ``sys.argv[1:]``); unknown arguments are an error."""
    model_args, data_args, training_args = make_parser().parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args
