"""LLaVA training: the two-stage recipe through transformers' Trainer and DeepSpeed ZeRO.

Launch as upstream does (``scripts/v1_5/*.sh``)::

    deepspeed llava/train/train_mem.py --deepspeed ./scripts/zero2.json \\
        --model_name_or_path lmsys/vicuna-7b-v1.5 --version plain \\
        --data_path blip_laion_cc_sbu_558k.json --image_folder images \\
        --vision_tower openai/clip-vit-large-patch14-336 --mm_projector_type delta --scale_factor 2 \\
        --tune_mm_mlp_adapter True --output_dir ./checkpoints/llava-v1.5-7b-delta-pretrain ...

What happens, in order:

1. arguments (:mod:`llava.train.arguments`), flag combinations and the LLM and tower paths are
   checked; under ZeRO-3 the process group starts first;
2. the data file is checked (every bad sample reported at once, see :mod:`llava.data.validation`);
3. the base LLM loads as ``LlavaLlamaForCausalLM`` (optionally 4/8-bit, optionally with LoRA),
   the vision tower and projector are built and every ``mm_*`` setting goes into its config;
4. the first samples are tokenized (mismatches and over-long samples stop the run here);
5. ``LLaVATrainer`` trains, resuming from the last complete ``checkpoint-N`` in ``output_dir``;
6. the result is saved: the projector (stage 1), a full checkpoint (stage 2) or a LoRA adapter
   with ``non_lora_trainables.bin``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, BitsAndBytesConfig, PreTrainedConfig

from llava.conversation import SeparatorStyle
from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.dataset import LazySupervisedDataset, check_tokenization
from llava.data.preprocess import conv_mode_for_version, conversation_template
from llava.data.validation import DataCheckReport, check_data_file, enforce_report, has_image
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from llava.model import weights
from llava.model.builder import UNQUANTIZED_MODULES, llava_config_from_dict, load_unmatched_projector, resolve_local
from llava.model.multimodal_encoder.clip_encoder import load_vision_config
from llava.train.arguments import DataArguments, ModelArguments, TrainingArguments, parse_arguments
from llava.train.llava_trainer import LLaVATrainer, unwrap_llava
from llava.utils import end_process

logger = logging.getLogger(__name__)

__all__ = ["DataArguments", "ModelArguments", "TrainingArguments", "find_all_linear_names",
           "lora_target_modules", "make_supervised_data_module", "safe_save_model_for_hf_trainer", "train"]

# Modules LoRA never wraps (upstream's list, plus the LM head).
LORA_EXCLUDED = ("mm_projector", "vision_tower", "vision_resampler", "lm_head")
# Keys of our config that are LLaVA's own (everything LlavaConfig adds to LlamaConfig).
LLAVA_CONFIG_KEYS = tuple(k for k in LlavaConfig.__dataclass_fields__
                          if k not in transformers.LlamaConfig.__dataclass_fields__)


def _is_main(training_args: TrainingArguments) -> bool:
    return training_args.process_index == 0


def _setup_logging(training_args: TrainingArguments) -> None:
    level = logging.INFO if training_args.should_log else logging.WARNING
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("llava").setLevel(level)


def _compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16:
        return torch.float16
    return torch.float32


def _load_dtype(training_args: TrainingArguments) -> torch.dtype:
    """Weights' dtype at load time. bf16 as upstream; fp16 only under DeepSpeed (which keeps fp32
    master weights; without it the Trainer's fp16 needs fp32 weights). ZeRO-3 needs the model
    built in the precision it trains in."""
    if training_args.bf16:
        return torch.bfloat16
    if training_args.fp16 and training_args.deepspeed:
        return torch.float16
    return torch.float32


def _zero3_enabled() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def check_quantization_fits(training_args: TrainingArguments) -> None:
    """Refuses ``--bits 4/8`` under ZeRO-3 before anything loads.

    Raises:
        ValueError: names the DeepSpeed config and the one to use instead.
    """
    if training_args.bits in (4, 8) and _zero3_enabled():
        raise ValueError(
            f"--bits {training_args.bits} (QLoRA) cannot run under ZeRO-3 (--deepspeed {training_args.deepspeed}): "
            f"bitsandbytes keeps each quantized weight whole on one device, which ZeRO-3's partitioning does not "
            f"allow. Use --deepspeed ./scripts/zero2.json, as upstream's finetune_qlora.sh does")


def check_stage_flags(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """Refuses stage-1 flags under which nothing, or not what was asked for, would train, before
    anything is read or loaded.

    Raises:
        ValueError: names the flags that contradict each other.
    """
    if not model_args.tune_mm_mlp_adapter:
        return
    if not model_args.vision_tower:
        # No tower, no projector: the whole LLM would train and an empty projector file be saved.
        raise ValueError("--tune_mm_mlp_adapter True trains only the projector, and there is none without "
                         "--vision_tower: pass --vision_tower, or leave --tune_mm_mlp_adapter False to train the LLM")
    if training_args.freeze_mm_mlp_adapter:
        raise ValueError("--tune_mm_mlp_adapter True trains only the projector and --freeze_mm_mlp_adapter True "
                         "freezes it: nothing would train. Pass one of the two")
    if training_args.lora_enable:
        # Upstream also freezes everything but the projector here and saves the projector only.
        raise ValueError("--tune_mm_mlp_adapter True trains only the projector, so the LoRA adapters of "
                         "--lora_enable True would stay frozen and not be saved: drop --lora_enable for stage 1, "
                         "or --tune_mm_mlp_adapter for a LoRA fine-tune")


def check_model_paths(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """Finds the LLM and the vision tower before the data check and the model load, so that a wrong
    path stops the run at once. Nothing is downloaded, as for the vision tower and at inference.

    Raises:
        FileNotFoundError: ``--model_name_or_path`` is neither a folder with a ``config.json`` nor a
            hub id in the local cache (or ``--vision_tower`` is neither), naming the flag.
    """
    path = model_args.model_name_or_path
    folder = resolve_local(path, "--model_name_or_path", cache_dir=training_args.cache_dir)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"--model_name_or_path {path} has no config.json: pass the folder of a base LLM or "
                                f"of a LLaVA checkpoint")
    if model_args.vision_tower:
        load_vision_config(model_args.vision_tower)


def _init_distributed(training_args: TrainingArguments) -> None:
    """ZeRO-3 partitions weights while the model is built, so the process group must exist first
    (gloo on CPU, nccl on CUDA)."""
    if not training_args.deepspeed or not _zero3_enabled():
        return
    import deepspeed

    # accelerate may already have started torch.distributed; DeepSpeed's own comm layer (which
    # zero.Init asks for the world size) still needs this call.
    if not deepspeed.comm.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def shutdown_distributed() -> None:
    """Ends a multi-process run cleanly: every rank waits for the others, then leaves the group.

    Without it the ranks exit while the collective backend's threads still run; on 2 CPU
    processes with gloo a rank then sometimes aborts at exit ("terminate called without an
    active exception", SIGABRT) after the checkpoint is already written, and the launcher
    reports the whole run as failed.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def finish_launched_run() -> None:
    """The end of a launched training process (``train.py`` / ``train_mem.py`` as a script).

    Leaves the process group (:func:`shutdown_distributed`). Then, on CPU ranks of a multi-process
    gloo run, it ends the process with ``os._exit(0)`` once the output is flushed and an active
    Weights & Biases run is finished: the C++ teardown of a normal exit still aborted a rank now and
    then ("terminate called without an active exception", SIGABRT, after the checkpoint was
    written), and the launcher then called the whole run failed. Nothing is left to run at that
    point; GPU (NCCL) runs and single processes exit normally.
    """
    multi_gloo = (torch.distributed.is_available() and torch.distributed.is_initialized()
                  and torch.distributed.get_world_size() > 1 and torch.distributed.get_backend() == "gloo")
    shutdown_distributed()
    if not multi_gloo:
        return
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    end_process(0)


# ------------------------------------------------------------------------------------ model


def find_all_linear_names(model) -> list[str]:
    """Leaf names of the Linear layers LoRA wraps (upstream's function): every Linear (or
    bitsandbytes 4/8-bit Linear) outside the projector and the vision tower, except ``lm_head``."""
    classes: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb
    except ImportError:  # bitsandbytes is optional unless --bits 4/8 is used
        pass
    else:
        classes += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, classes) and not any(part in name for part in LORA_EXCLUDED):
            names.add(name.split(".")[-1])
    return sorted(names)


def lora_target_modules(model) -> str:
    """A regex for peft's ``target_modules`` matching the full names of those Linear layers.

    Differs from upstream on purpose: upstream passes leaf names, which peft also matches inside
    the vision tower (CLIP has ``q_proj``/``k_proj``/``v_proj`` too).
    """
    leaves = "|".join(re.escape(n) for n in find_all_linear_names(model))
    excluded = "|".join(re.escape(n) for n in LORA_EXCLUDED)
    return rf"(?!.*(?:{excluded})).*\.(?:{leaves})"


def build_tokenizer(model_args: ModelArguments, training_args: TrainingArguments):
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, cache_dir=training_args.cache_dir,
                                              model_max_length=training_args.model_max_length, padding_side="right")
    if tokenizer.unk_token is not None and model_args.version != "v0":
        tokenizer.pad_token = tokenizer.unk_token  # upstream pads with unk for every v1-era template
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _base_config(model_args: ModelArguments, training_args: TrainingArguments) -> LlavaConfig:
    config_dict, _ = PreTrainedConfig.get_config_dict(model_args.model_name_or_path, cache_dir=training_args.cache_dir)
    return llava_config_from_dict(config_dict)


def build_model(model_args: ModelArguments, training_args: TrainingArguments, attn_implementation: str | None):
    """Loads the base LLM as ``LlavaLlamaForCausalLM`` (quantized and/or with LoRA when asked).

    The vision modules are added afterwards by :func:`add_vision_modules`, as upstream does.
    """
    compute_dtype = _compute_dtype(training_args)
    kwargs = dict(config=_base_config(model_args, training_args), dtype=_load_dtype(training_args),
                  attn_implementation=attn_implementation, cache_dir=training_args.cache_dir)
    if training_args.bits in (4, 8):
        kwargs["device_map"] = {"": training_args.device}
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=training_args.bits == 4,
            load_in_8bit=training_args.bits == 8,
            llm_int8_skip_modules=UNQUANTIZED_MODULES,  # the projector stays in full precision
            llm_int8_threshold=6.0,
            llm_int8_has_fp16_weight=False,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=training_args.double_quant,
            bnb_4bit_quant_type=training_args.quant_type,
        )
    model, info = LlavaLlamaForCausalLM.from_pretrained(model_args.model_name_or_path, output_loading_info=True,
                                                        key_mapping=weights.CHECKPOINT_KEY_MAPPING, **kwargs)
    if model.get_model().get_vision_tower() is not None:
        # A LLaVA checkpoint: its projector must load (released Delta-LLaVA names are mapped here).
        load_unmatched_projector(model, info["missing_keys"], model_args.model_name_or_path)
    tower = model.get_vision_tower()
    if tower is not None and not any(".vision_tower." in key for key in info["missing_keys"]):
        # A LLaVA checkpoint that holds its tower (trained with --unfreeze_mm_vision_tower, say): keep
        # those weights rather than reading the tower folder over them.
        tower.is_loaded = True
    model.config.use_cache = False
    if model_args.freeze_backbone:
        model.get_model().requires_grad_(False)
    # Later transformers 5 releases renamed --gradient_checkpointing (still accepted) to
    # --activation_checkpointing; 5.17 has only the old name.
    checkpointing = bool(getattr(training_args, "activation_checkpointing", False)
                         or training_args.gradient_checkpointing)
    if training_args.bits in (4, 8):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    if checkpointing:
        # The embeddings are frozen; their output must require grad for checkpointed layers.
        model.enable_input_require_grads()
    if training_args.lora_enable:
        from peft import LoraConfig, get_peft_model

        lora_config = LoraConfig(r=training_args.lora_r, lora_alpha=training_args.lora_alpha,
                                 target_modules=lora_target_modules(model), lora_dropout=training_args.lora_dropout,
                                 bias=training_args.lora_bias, task_type="CAUSAL_LM")
        if training_args.bits == 16 and compute_dtype != torch.float32:
            model.to(compute_dtype)
        logger.info("Adding LoRA adapters (r=%d, alpha=%d) to %s", training_args.lora_r, training_args.lora_alpha,
                    find_all_linear_names(model))
        # Under DeepSpeed the adapters take the model's dtype, as upstream: peft's default makes them
        # fp32 next to a bf16 projector, and ZeRO-3 cannot flatten a mix of dtypes (an AssertionError
        # before the first step). Without DeepSpeed, keep_trainable_fp32 gives every trainable one fp32.
        model = get_peft_model(model, lora_config, autocast_adapter_dtype=not training_args.deepspeed)
    return model


def add_vision_modules(model, model_args: ModelArguments, data_args: DataArguments,
                       training_args: TrainingArguments, tokenizer) -> None:
    """Builds the vision tower and projector (loading ``--pretrain_mm_mlp_adapter``), sets what
    trains, and records every setting in the config."""
    llava = unwrap_llava(model)
    llava.get_model().initialize_vision_modules(model_args)
    tower = llava.get_vision_tower()
    tower_dtype = _compute_dtype(training_args) if training_args.bits in (4, 8) else _load_dtype(training_args)
    tower.to(dtype=tower_dtype, device=training_args.device)
    projector = llava.get_model().mm_projector
    if model_args.tune_mm_mlp_adapter:
        model.requires_grad_(False)
        projector.requires_grad_(True)
    if training_args.freeze_mm_mlp_adapter:
        projector.requires_grad_(False)
    tower.requires_grad_(model_args.unfreeze_mm_vision_tower)
    if training_args.bits in (4, 8):
        projector.to(dtype=_compute_dtype(training_args), device=training_args.device)
    llava.initialize_vision_tokenizer(model_args, tokenizer)


def keep_trainable_fp32(model, training_args: TrainingArguments) -> int:
    """Mixed precision without DeepSpeed: casts the trainable parameters of a bf16 model to fp32.

    Under ``--bf16`` the model loads in bf16, as upstream. DeepSpeed then keeps fp32 master weights;
    the plain Trainer does not, and AdamW would update the bf16 weights in place, losing every
    update below bf16's resolution (about 0.4% of a weight). With fp32 trainable parameters the
    Trainer's bf16 autocast does the arithmetic in bf16 while the updates accumulate in fp32; frozen
    weights (the LLM in stage 1, the tower, a LoRA base) stay bf16 and cost nothing extra.

    Returns:
        The number of parameters cast (0 when it does not apply: fp32 or fp16 training, DeepSpeed,
        a quantized LLM, or ``--fp32_master_weights False``).
    """
    if not (training_args.bf16 and training_args.fp32_master_weights and not training_args.deepspeed
            and training_args.bits == 16):
        return 0
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += param.numel()
    if cast:
        logger.info("bf16 autocast with fp32 master weights: %.2fM trainable parameters kept in fp32", cast / 1e6)
    return cast


def record_training_settings(config: LlavaConfig, model_args: ModelArguments, data_args: DataArguments,
                             training_args: TrainingArguments, tokenizer) -> None:
    """Copies every LLaVA config key given on the command line into the config (keys and their
    defaults are declared once, in ``LlavaConfig``), plus the tokenizer settings and ``conv_mode``."""
    for key in LLAVA_CONFIG_KEYS:
        for args in (model_args, data_args, training_args):
            value = getattr(args, key, None)
            if value is not None and key != "mm_vision_tower":
                setattr(config, key, value)
    config.mm_vision_tower = model_args.vision_tower
    config.tokenizer_padding_side = tokenizer.padding_side
    config.tokenizer_model_max_length = training_args.model_max_length
    conv_mode = conv_mode_for_version(model_args.version)
    if conv_mode is not None:
        config.conv_mode = conv_mode


def _log_model_summary(model, num_image_tokens: int) -> None:
    def numel(p) -> int:
        return getattr(p, "ds_numel", None) or p.numel()  # ZeRO-3 leaves an empty local shard

    total = sum(numel(p) for p in model.parameters())
    trainable = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            part = ("mm_projector" if "mm_projector." in name else "vision_tower" if "vision_tower." in name
                    else "lora" if "lora_" in name else "llm")
            trainable[part] = trainable.get(part, 0) + numel(p)
    logger.info("Model: %.1fM parameters, trainable: %s; %d visual tokens per image", total / 1e6,
                ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in trainable.items()) or "none", num_image_tokens)


# ------------------------------------------------------------------------------------ data


def make_supervised_data_module(tokenizer, data_args: DataArguments, *, samples, conv, num_image_tokens: int,
                                model_max_length: int, image_processor, mm_use_im_start_end: bool,
                                version: str) -> dict:
    """Upstream's name: ``{"train_dataset", "eval_dataset", "data_collator"}``.

    Args:
        samples: ``(index in file, sample)`` pairs that passed the data check.
    """
    dataset = LazySupervisedDataset(
        [s for _, s in samples], tokenizer, conv, num_image_tokens=num_image_tokens,
        model_max_length=model_max_length, image_folder=data_args.image_folder, image_processor=image_processor,
        image_aspect_ratio=data_args.image_aspect_ratio, mm_use_im_start_end=mm_use_im_start_end, version=version,
        indices=[i for i, _ in samples])
    collator = DataCollatorForSupervisedDataset(tokenizer=tokenizer, image_shape=dataset.image_shape)
    return {"train_dataset": dataset, "eval_dataset": None, "data_collator": collator}


def _report_file(training_args: TrainingArguments, name: str) -> str:
    return os.path.join(training_args.output_dir, name)


def check_data(data_args: DataArguments, model_args: ModelArguments, training_args: TrainingArguments, conv):
    """Step 2: reads and checks the data file; returns the usable ``(index, sample)`` pairs and the report."""
    if not data_args.data_path:
        raise ValueError("--data_path is required")
    good, report = check_data_file(data_args.data_path, data_args.image_folder,
                                   plain=conv.sep_style == SeparatorStyle.PLAIN, check_images=data_args.check_images)
    report_file = None
    if report.bad and _is_main(training_args):
        report_file = report.write(_report_file(training_args, "data_check_report.json"))
    enforce_report(report, data_args.skip_bad_samples, report_file=report_file, log=logger)
    with_images = sum(1 for _, s in good if has_image(s))
    if with_images and not model_args.vision_tower:
        raise ValueError(f"{with_images} samples in {data_args.data_path} have images but no --vision_tower is given")
    if not good:
        raise ValueError(f"No usable sample in {data_args.data_path}")
    logger.info("Data check: %d usable samples (%d with an image) in %s", len(good), with_images, data_args.data_path)
    return good, report


def check_samples_tokenize(data_module: dict, data_args: DataArguments, training_args: TrainingArguments,
                           data_report: DataCheckReport | None = None) -> None:
    """Step 4: tokenizes the first samples; drops (or reports) over-long ones, stops on mismatches."""
    dataset: LazySupervisedDataset = data_module["train_dataset"]
    # With --skip_bad_samples every sample's length is checked now, so that one which cannot fit is
    # skipped and counted instead of stopping the run when training reaches it.
    check = check_tokenization(dataset, data_args.tokenization_check_samples,
                               check_all_lengths=data_args.skip_bad_samples)
    if check.too_long:
        # One report file per run: the samples the data check found, and these.
        earlier = data_report.bad if data_report else []
        report = DataCheckReport(data_args.data_path,
                                 num_samples=data_report.num_samples if data_report else len(dataset),
                                 bad=sorted([*earlier, *check.too_long],
                                            key=lambda b: -1 if b.index is None else b.index))
        report_file = None
        if _is_main(training_args):
            report_file = report.write(_report_file(training_args, "data_check_report.json"))
        enforce_report(DataCheckReport(data_args.data_path, num_samples=len(dataset), bad=check.too_long),
                       data_args.skip_bad_samples, report_file=report_file, log=logger)
        drop = {b.index for b in check.too_long}
        keep = [j for j, index in enumerate(dataset.indices) if index not in drop]
        dataset.samples = [dataset.samples[j] for j in keep]
        dataset.indices = [dataset.indices[j] for j in keep]
        if not dataset.samples:
            raise ValueError(f"No usable sample in {data_args.data_path}: every sample left after the data check "
                             f"is too long for model_max_length (see {report_file or 'the log'})")
    if check.truncated:
        logger.warning("%s. Raise --model_max_length to train on all of them.", check.truncation_message())
    if check.mismatched:
        ratio = len(check.mismatched) / max(1, check.checked)
        message = (f"{check.mismatch_message()}. Their labels cannot be aligned with the replies; check that "
                   f"--version fits the tokenizer.")
        if ratio > data_args.max_tokenization_mismatch_ratio:
            raise ValueError(f"{message} That is {ratio:.2%} of the checked samples, more than "
                             f"--max_tokenization_mismatch_ratio {data_args.max_tokenization_mismatch_ratio}.")
        logger.warning("%s They are not trained on (%.3f%%, allowed %s).", message, 100 * ratio,
                       data_args.max_tokenization_mismatch_ratio)
    logger.info("Tokenization check: %d samples tokenized, %d mismatched; lengths of %d checked: %d too long, "
                "%d cut to fit", check.checked, len(check.mismatched), check.length_checked, len(check.too_long),
                len(check.truncated))


# ------------------------------------------------------------------------------------ run


def last_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` that was written completely (has
    ``trainer_state.json``, which the Trainer writes last); a run killed while saving leaves an
    incomplete one, which is skipped."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), str(child)))
    return max(found)[1] if found else None


def safe_save_model_for_hf_trainer(trainer: LLaVATrainer, output_dir: str) -> None:
    """Saves the result (upstream's name): the projector (stage 1), a full checkpoint gathered
    from ZeRO-3 shards (stage 2), or the LoRA adapter with ``non_lora_trainables.bin``."""
    trainer.save_model(output_dir)


def train(attn_implementation: str | None = None, *, argv: list[str] | None = None, callbacks=None) -> LLaVATrainer:
    """Runs training from command-line arguments (upstream's entry point).

    Args:
        attn_implementation: passed to ``from_pretrained`` (``train_mem.py`` picks one).
        argv: arguments instead of ``sys.argv[1:]``.
        callbacks: extra ``TrainerCallback``s.
    Returns:
        The trainer, after saving.
    """
    model_args, data_args, training_args = parse_arguments(argv)
    _setup_logging(training_args)
    check_stage_flags(model_args, training_args)
    check_quantization_fits(training_args)
    conv = conversation_template(model_args.version)
    check_model_paths(model_args, training_args)
    _init_distributed(training_args)
    samples, data_report = check_data(data_args, model_args, training_args, conv)
    # The new projector's initial weights come from the global RNG: seed it before building.
    transformers.set_seed(training_args.seed)

    tokenizer = build_tokenizer(model_args, training_args)
    model = build_model(model_args, training_args, attn_implementation)
    llava = unwrap_llava(model)
    num_image_tokens, image_processor = 0, None
    if model_args.vision_tower:
        add_vision_modules(model, model_args, data_args, training_args, tokenizer)
        num_image_tokens = llava.num_image_tokens()
        image_processor = llava.get_vision_tower().image_processor
    record_training_settings(llava.config, model_args, data_args, training_args, tokenizer)
    keep_trainable_fp32(model, training_args)
    _log_model_summary(model, num_image_tokens)

    data_module = make_supervised_data_module(
        tokenizer, data_args, samples=samples, conv=conv, num_image_tokens=num_image_tokens,
        model_max_length=training_args.model_max_length, image_processor=image_processor,
        mm_use_im_start_end=model_args.mm_use_im_start_end, version=model_args.version)
    check_samples_tokenize(data_module, data_args, training_args, data_report)

    ds_config = getattr(training_args, "hf_deepspeed_config", None)
    if ds_config is not None and "optimizer" in ds_config.config and (
            training_args.mm_projector_lr is not None or training_args.mm_vision_tower_lr is not None):
        logger.warning("The DeepSpeed config %s brings its own optimizer: --mm_projector_lr / --mm_vision_tower_lr "
                       "do not apply (use zero3.json, whose optimizer the Trainer builds)", training_args.deepspeed)
    trainer = LLaVATrainer(model=model, processing_class=tokenizer, args=training_args, callbacks=callbacks,
                           projector_only=model_args.tune_mm_mlp_adapter,
                           max_tokenization_mismatch_ratio=data_args.max_tokenization_mismatch_ratio, **data_module)
    resume = training_args.resume_from_checkpoint or last_checkpoint(training_args.output_dir)
    if resume:
        logger.info("Resuming from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_state()
    llava.config.use_cache = True
    safe_save_model_for_hf_trainer(trainer, training_args.output_dir)
    logger.info("Saved to %s", training_args.output_dir)
    return trainer


if __name__ == "__main__":
    from llava.entry import run_main

    run_main(train)
    finish_launched_run()
