"""``load_pretrained_model``: what to load is decided from the files present and the config.

Upstream decides from substrings of the folder name ("llava", "lora"); here:

- ``adapter_config.json`` present             -> LoRA: base LLM + ``non_lora_trainables.bin`` + adapter
- full weights (model.safetensors / .bin)     -> a full checkpoint
- only ``mm_projector.{safetensors,bin}``     -> ``model_base`` LLM + this projector
- a config without ``mm_vision_tower``        -> a plain language model (no image processor)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.model import weights
from llava.model.attention import select_attn_implementation
from llava.model.language_model.configuration_llava import LlavaConfig
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

logger = logging.getLogger(__name__)

# Kept in full precision under 8-/4-bit loading. transformers matches these as regexes from the
# start of a module's name, so they are anchored at any depth.
UNQUANTIZED_MODULES = [r"(.*\.)?mm_projector", r"(.*\.)?vision_tower", "lm_head"]


def read_config_dict(folder: str | os.PathLike) -> dict:
    path = Path(folder, "config.json")
    if not path.is_file():
        raise FileNotFoundError(f"No config.json in {folder}")
    config = weights.read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not an object of config keys")
    return config


def is_multimodal_config(config: dict) -> bool:
    return bool(config.get("mm_vision_tower")) or any("Llava" in a for a in config.get("architectures") or [])


def llava_config_from_dict(config: dict, **overrides) -> LlavaConfig:
    """Our config from any LLaVA config.json, including released ones that say ``model_type: llava``."""
    values = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "architectures")}
    values.update(overrides)
    return LlavaConfig(**values)


def resolve_local(path: str | os.PathLike, what: str = "Model path", cache_dir: str | None = None,
                  revision: str | None = None) -> str:
    """A local folder for ``path``: the folder itself, or the Hugging Face cache's snapshot of a hub
    id such as ``liuhaotian/llava-v1.5-7b`` that was downloaded before (from ``cache_dir`` when
    given, at ``revision`` when given). Nothing is downloaded here.

    Raises:
        FileNotFoundError: neither a folder nor a cached hub id, saying how to download it.
    """
    path = str(path)
    if not path.strip():
        raise FileNotFoundError(f"{what} is empty: pass a local folder or a cached hub id")
    if Path(path).is_dir():
        return path
    parts = path.split("/")
    if len(parts) == 2 and all(parts) and not path.startswith((".", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return snapshot_download(path, local_files_only=True, cache_dir=cache_dir, revision=revision)
        except (LocalEntryNotFoundError, OSError, ValueError):
            pass
        raise FileNotFoundError(
            f"{what} {path} is not a local folder, and the Hugging Face cache has no copy of the hub model "
            f"{path!r} (nothing is downloaded at run time): download it first with `hf download {path}`, "
            f"or pass the folder it is in")
    raise FileNotFoundError(f"{what} {path} is not a local folder (nothing is downloaded)")


def checkpoint_kind(model_path: str | os.PathLike, model_base: str | None = None) -> str:
    """One of ``"lora"``, ``"full"``, ``"projector"``, decided from the files in ``model_path``."""
    folder = Path(model_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model path {model_path} is not a local folder (nothing is downloaded)")
    if (folder / "adapter_config.json").is_file():
        if model_base is None:
            base = _adapter_base(folder)
            raise ValueError(f"{model_path} holds a LoRA adapter (adapter_config.json); pass model_base, the "
                             f"language model it was trained on" + (f" (the adapter names {base!r})" if base else ""))
        return "lora"
    if weights.has_full_weights(folder):
        return "full"
    if any((folder / name).is_file() for name in weights.PROJECTOR_FILES):
        if model_base is None:
            raise ValueError(f"{model_path} holds only projector weights ({'/'.join(weights.PROJECTOR_FILES)}); "
                             f"pass model_base (the language model it was trained on)")
        return "projector"
    raise FileNotFoundError(
        f"{model_path} has no weights: expected one of {list(weights.FULL_WEIGHT_FILES)}, "
        f"{list(weights.PROJECTOR_FILES)} or a LoRA adapter (adapter_config.json)"
    )


def _adapter_base(folder: Path) -> str | None:
    """``base_model_name_or_path`` of a LoRA adapter folder, for messages."""
    try:
        return json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


def _quantization(load_8bit: bool, load_4bit: bool, compute_dtype: torch.dtype) -> BitsAndBytesConfig | None:
    if load_8bit and load_4bit:
        raise ValueError("load_8bit and load_4bit are exclusive")
    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=UNQUANTIZED_MODULES)
    if load_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_type="nf4",
            llm_int8_skip_modules=UNQUANTIZED_MODULES,
        )
    return None


def load_pretrained_model(
    model_path,
    model_base=None,
    model_name=None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map="auto",
    device: str = "cuda",
    use_flash_attn: bool = False,
    **kwargs,
):
    """Loads a LLaVA checkpoint for inference.

    Args:
        model_path: local folder: full checkpoint, projector-only (stage 1) or LoRA adapter; or a
            hub id (``liuhaotian/llava-v1.5-7b``) already in the Hugging Face cache.
        model_base: the base LLM (folder or cached hub id) for projector-only and LoRA checkpoints.
        model_name: accepted for upstream compatibility; not used to decide anything.
        device: "cuda", "cuda:1", "cpu", "mps", ... ; on CPU the model loads in float32.
        use_flash_attn: flash-attention 2 when it imports and ``device`` is CUDA, else SDPA with a
            warning that says why (an explicit ``attn_implementation="flash_attention_2"`` raises).
        kwargs: ``torch_dtype``/``dtype`` to override the precision; ``attn_implementation``;
            ``cache_dir`` and ``revision`` for hub ids in the cache; anything else goes to the model's
            ``from_pretrained``, as upstream.
    Returns:
        (tokenizer, model, image_processor or None, context_len)
    """
    if model_base is not None and not str(model_base).strip():
        raise ValueError("model_base is empty: pass the language model a projector-only or LoRA checkpoint was "
                         "trained on, or None (leave --model-base out) for a full checkpoint")
    cache_dir, revision = kwargs.pop("cache_dir", None), kwargs.pop("revision", None)
    model_path = resolve_local(model_path, cache_dir=cache_dir, revision=revision)
    device = torch.device(device)
    dtype = kwargs.pop("dtype", None) or kwargs.pop("torch_dtype", None) or (
        torch.float16 if device.type == "cuda" else torch.float32)
    if isinstance(dtype, str) and dtype != "auto":  # "auto": the checkpoint's own dtype, as transformers reads it
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype {dtype!r} is not a torch dtype (e.g. 'float16', 'bfloat16', 'float32', 'auto')")
        dtype = getattr(torch, dtype)
    attn = select_attn_implementation(device, kwargs.pop("attn_implementation", None), prefer_flash=use_flash_attn)
    compute_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float16 if device.type == "cuda" else torch.float32
    quant = _quantization(load_8bit, load_4bit, compute_dtype)
    load_kwargs = dict(kwargs, dtype=dtype, attn_implementation=attn, local_files_only=True)
    if quant is not None:
        load_kwargs["quantization_config"] = quant
    if device.type == "cuda":
        load_kwargs["device_map"] = device_map if (device_map != "auto" or device.index is None) else {"": device}
    elif quant is not None:
        load_kwargs["device_map"] = {"": device}

    kind = checkpoint_kind(model_path, model_base)
    if model_base is not None and (kind != "full" or not _has_tokenizer(model_path)):  # else it is not read
        model_base = resolve_local(model_base, "model_base", cache_dir=cache_dir)
    config_dict = read_config_dict(model_path)
    if "vision_config" in config_dict and "text_config" in config_dict and not config_dict.get("mm_vision_tower"):
        raise ValueError(
            f"{model_path} is a transformers-format LLaVA checkpoint (architectures "
            f"{config_dict.get('architectures')}, with vision_config and text_config); load it with transformers' "
            f"own class (e.g. LlavaForConditionalGeneration). load_pretrained_model reads LLaVA's own layout "
            f"(mm_vision_tower and mm_projector in config.json)")
    if not is_multimodal_config(config_dict):
        if kind != "full":
            raise ValueError(f"{model_path} has no mm_vision_tower in config.json, so it must be a full language model")
        weights.check_safetensors(model_path)
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        model, info = AutoModelForCausalLM.from_pretrained(model_path, output_loading_info=True, **load_kwargs)
        _check_llm_weights(info["missing_keys"], model_path)
        return _finish(tokenizer, model, None, device, quant)
    base_dict = _check_base(model_base, config_dict, model_path) if kind != "full" else None
    weights.check_safetensors(model_path if kind == "full" else model_base)

    config = llava_config_from_dict(config_dict)
    tokenizer_dir = model_path if _has_tokenizer(model_path) else model_base
    if tokenizer_dir is None:
        raise FileNotFoundError(f"No tokenizer files in {model_path} and no model_base given")
    if not _has_tokenizer(tokenizer_dir):
        raise FileNotFoundError(f"No tokenizer files in {model_path} or in model_base {model_base} "
                                f"({', '.join(TOKENIZER_FILES)}): model_base must be a language model's folder")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)

    if kind == "full":
        if model_base is not None:
            logger.warning("%s is a full checkpoint; model_base %s is not used", model_path, model_base)
        model, info = LlavaLlamaForCausalLM.from_pretrained(
            model_path, config=config, output_loading_info=True, key_mapping=weights.CHECKPOINT_KEY_MAPPING,
            **load_kwargs)
        missing = set(info["missing_keys"])
        _check_llm_weights(missing, model_path)
        load_unmatched_projector(model, missing, model_path)
    else:
        # The config counts the tokens the run added (<im_start>, ...); the base has its own vocabulary,
        # and _add_image_tokens grows it below.
        base_vocab = base_dict.get("vocab_size")
        base_config = config
        if base_vocab and base_vocab != config.vocab_size:
            base_config = llava_config_from_dict({**config.to_dict(), "vocab_size": base_vocab})
        model, info = LlavaLlamaForCausalLM.from_pretrained(
            model_base, config=base_config, output_loading_info=True, key_mapping=weights.CHECKPOINT_KEY_MAPPING,
            **load_kwargs)
        missing = set(info["missing_keys"])
        if kind == "lora" and config.vocab_size != model.get_input_embeddings().weight.shape[0]:
            # The run added tokens (<im_patch>, <im_start>/<im_end>): peft saved the grown embedding
            # matrices with the adapter, which fit only once the base has the run's vocabulary.
            model.resize_token_embeddings(config.vocab_size)
        if kind == "projector":
            stage1 = weights.read_state_dict(model_path)
            weights.load_projector_weights(model.get_model().mm_projector, stage1, config.mm_projector_type,
                                           source=model_path)
        else:
            model, loaded = _apply_lora(model, model_path, config)
            # The projector, and a tower trained with the adapters, come from non_lora_trainables.bin.
            missing = {k for k in missing if not k.startswith(weights.PROJECTOR_PREFIX) and k not in loaded}
        _check_llm_weights(missing, model_base)

    tower = model.get_vision_tower()
    if tower is None:
        # A LLaVA model trained without a vision tower (no --vision_tower): a language model.
        _add_image_tokens(tokenizer, model, config)
        return _finish(tokenizer, model, None, device, quant)
    if any(k.startswith("model.vision_tower.") for k in missing):
        # The checkpoint does not carry the tower: read it from mm_vision_tower, which must have weights
        # (training accepts a config-only tower folder as a random tower; answering with one is a mistake).
        if not tower.has_weights_on_disk:
            raise FileNotFoundError(
                f"{model_path} does not hold the vision tower's weights and its tower folder "
                f"{tower.vision_tower_name} (mm_vision_tower) has no *.safetensors or pytorch_model*.bin")
        tower.load_model()
    else:
        tower.is_loaded = True
    added = _add_image_tokens(tokenizer, model, config)
    if kind == "projector" and config.mm_use_im_start_end and added:
        # Stage 1 trained the <im_start>/<im_end> rows and saved them with the projector.
        weights.copy_new_token_rows(model.get_input_embeddings().weight.data, stage1, added, model_path)
    return _finish(tokenizer, model, tower.image_processor, device, quant)


def load_unmatched_projector(model, missing_keys, checkpoint: str) -> None:
    """Loads a full checkpoint's projector when ``from_pretrained`` matched none of its keys.

    Released Delta-LLaVA checkpoints store the projector under the released code's names, which
    ``from_pretrained`` leaves unloaded (and the projector at its random init); this reads them from
    ``checkpoint`` (a folder, or a hub id in the local cache) and maps them. A no-op when the
    projector loaded.

    Raises:
        ValueError: the checkpoint has no projector weights that fit (names the folder and keys).
    """
    if not any(k.startswith(weights.PROJECTOR_PREFIX) for k in missing_keys):
        return
    projector = model.get_model().mm_projector
    checkpoint = resolve_local(checkpoint)
    tensors = weights.read_checkpoint_tensors(checkpoint, lambda k: "mm_projector." in k)
    with weights.zero3_gathered(list(projector.parameters())):  # partitioned under ZeRO-3
        weights.load_projector_weights(projector, tensors, model.config.mm_projector_type, source=checkpoint)


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")
# Language-model sizes a base must share with the checkpoint trained on it.
BASE_SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "num_key_value_heads")


def _has_tokenizer(folder: str) -> bool:
    return any(Path(folder, n).is_file() for n in TOKENIZER_FILES)


def _check_base(model_base: str, config: dict, model_path: str) -> dict:
    """``model_base``'s config.json, checked against the checkpoint's ``config`` before any weights are
    read: a language model of the same sizes.

    Raises:
        ValueError: model_base is not a language model, or one of another size (names the key).
    """
    base = read_config_dict(model_base)
    if not base.get("vocab_size"):
        raise ValueError(f"model_base {model_base} is not a language model (its config.json has model_type "
                         f"{base.get('model_type')!r} and no vocab_size); pass the LLM {model_path} was trained on")
    for key in BASE_SHAPE_KEYS:
        if config.get(key) is not None and base.get(key) is not None and base[key] != config[key]:
            raise ValueError(f"model_base {model_base} has {key} {base[key]}, the checkpoint {model_path} expects "
                             f"{config[key]}: pass the LLM it was trained on")
    return base


def _check_llm_weights(missing_keys, folder: str) -> None:
    """from_pretrained leaves weights absent from the files at random init and only logs them; the
    language model's must all be there. The tower's and projector's are checked where they are read,
    and tied weights (an LM head that is the embedding matrix) are not reported missing.

    Raises:
        ValueError: naming the folder, how many weights it lacks and the first of them.
    """
    llm = sorted(k for k in missing_keys if not k.startswith(("model.vision_tower.", weights.PROJECTOR_PREFIX)))
    if llm:
        raise ValueError(f"{folder} lacks {len(llm)} of the language model's weights, which would be left at random "
                         f"init: {llm[:6]}{' ...' if len(llm) > 6 else ''}; its weight files are incomplete")


def _apply_lora(model, model_path: str, config: LlavaConfig):
    """Loads ``non_lora_trainables.bin`` and merges the adapter; returns the merged model and the
    keys that file supplied."""
    from peft import PeftModel

    trainables = weights.read_non_lora_trainables(model_path)
    own = model.state_dict()
    # Projector keys are checked by load_projector_weights, which also maps the released code's names.
    unknown = sorted(k for k in set(trainables) - set(own) if not k.startswith(weights.PROJECTOR_PREFIX))
    if unknown:
        raise ValueError(f"{weights.NON_LORA_FILE} in {model_path} has keys the model lacks: {unknown[:8]}")
    projector = {k: v for k, v in trainables.items() if k.startswith(weights.PROJECTOR_PREFIX)}
    if projector:
        weights.load_projector_weights(model.get_model().mm_projector, projector, config.mm_projector_type,
                                       source=f"{model_path}/{weights.NON_LORA_FILE}")
    rest = {k: v for k, v in trainables.items() if not k.startswith(weights.PROJECTOR_PREFIX)}
    model.load_state_dict(rest, strict=False)
    model = PeftModel.from_pretrained(model, model_path)
    return model.merge_and_unload(), set(trainables)


def _add_image_tokens(tokenizer, model, config: LlavaConfig) -> int:
    """Adds the config's image tokens the tokenizer lacks; returns how many were added."""
    added = []
    if config.mm_use_im_patch_token:
        added.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if config.mm_use_im_start_end:
        added += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    count = tokenizer.add_tokens(added, special_tokens=True) if added else 0
    if count or len(tokenizer) > model.get_input_embeddings().weight.shape[0]:  # grow only: keep padded vocabularies
        model.resize_token_embeddings(len(tokenizer))
    return count


def _finish(tokenizer, model, image_processor, device: torch.device, quant):
    if quant is None and device.type != "cuda":
        model.to(device)
    elif quant is not None:
        # bitsandbytes kept these unquantized; make sure they sit on the right device.
        tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
        if tower is not None:
            tower.to(device)
            model.get_model().mm_projector.to(device)
    model.eval()
    config = model.config
    context_len = (getattr(config, "max_sequence_length", None) or getattr(config, "tokenizer_model_max_length", None)
                   or 2048)
    return tokenizer, model, image_processor, context_len
