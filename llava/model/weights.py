"""Weight files: the only module that knows file formats and key prefixes.

Projector files are written as ``mm_projector.safetensors`` and upstream's ``mm_projector.bin``
(keys ``model.mm_projector.*``); either is read. ``torch.load`` runs with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

PROJECTOR_FILES = ("mm_projector.safetensors", "mm_projector.bin")
NON_LORA_FILE = "non_lora_trainables.bin"
TOWER_WEIGHTS_FILE = "model.safetensors"  # a trained tower's folder, as transformers writes it
PROJECTOR_PREFIX = "model.mm_projector."
FULL_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Upstream's tower wraps transformers-4 CLIPVisionModel, whose weights sit under `vision_model.`;
# transformers 5 dropped that level. Used as `from_pretrained(key_mapping=...)`.
CHECKPOINT_KEY_MAPPING = {r"^model\.vision_tower\.vision_tower\.vision_model\.": "model.vision_tower.vision_tower."}


def read_json(path: str | os.PathLike):
    """A JSON file's content; a file that does not parse is named with the line and column."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg}: line {err.lineno} column {err.colno})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason})") from None


def check_safetensors(folder: str | os.PathLike) -> None:
    """Reads the header of each ``*.safetensors`` file of the checkpoint in ``folder`` (the index's
    shards, or ``model.safetensors``), which also checks that the file is as long as the header says:
    an empty or cut copy is named here, before any weights are read.

    Raises:
        ValueError: naming the file and what the header check found.
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / name for name in read_json(index).get("weight_map", {}).values()})
    else:
        files = [folder / "model.safetensors"]
    for file in files:
        if not file.is_file():
            continue  # a missing shard is named by from_pretrained
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as err:
            raise ValueError(f"{file} ({file.stat().st_size} bytes) is not a complete safetensors file ({err}); "
                             f"copy or download it again") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a ``.safetensors`` or ``.bin`` file; a folder means its projector file.

    Raises:
        FileNotFoundError: naming the path (and, for a folder, the file names looked for).
    """
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in PROJECTOR_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"No projector weights in {path}: expected one of {list(PROJECTOR_FILES)}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"Weight file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


EMBED_KEY = "model.embed_tokens.weight"


def copy_new_token_rows(embeddings: torch.Tensor, state_dict: dict[str, torch.Tensor], num_new: int,
                        source: str) -> bool:
    """Copies the rows of the ``num_new`` added tokens (``<im_start>``/``<im_end>``...) that stage 1
    trained, from a projector file's ``model.embed_tokens.weight``, into ``embeddings`` (upstream's
    rule: the whole matrix, or only the new rows).

    Returns:
        False when the file has no embedding rows (a stage 1 without ``mm_use_im_start_end``).
    Raises:
        ValueError: the saved matrix fits neither form; names ``source``.
    """
    saved = state_dict.get(EMBED_KEY)
    if saved is None:
        return False
    if saved.shape == embeddings.shape:
        rows = saved[-num_new:]
    elif saved.shape[0] == num_new and saved.shape[1:] == embeddings.shape[1:]:
        rows = saved
    else:
        raise ValueError(f"{EMBED_KEY} in {source} has shape {tuple(saved.shape)}; expected "
                         f"{tuple(embeddings.shape)} or the {num_new} new rows only")
    with torch.no_grad():
        embeddings[-num_new:] = rows.to(device=embeddings.device, dtype=embeddings.dtype)
    return True


def projector_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keeps keys containing ``mm_projector.`` and strips everything up to it (upstream's rule)."""
    marker = "mm_projector."
    if not any(marker in key for key in state_dict):
        return dict(state_dict)  # already relative to the projector
    return {key.split(marker, 1)[1]: value for key, value in state_dict.items() if marker in key}


def load_projector_weights(projector: nn.Module, state_dict: dict[str, torch.Tensor], projector_type: str,
                           source: str = "state dict") -> None:
    """Loads projector weights with upstream or released key names, checking every key and shape.

    Released Delta-LLaVA names are mapped by the projector class's ``convert_released_state_dict``.

    Raises:
        ValueError: naming missing/unexpected keys or the first mismatched shape, and ``source``.
    """
    weights = projector_state_dict(state_dict)
    expected = projector.state_dict()
    convert = getattr(type(projector), "convert_released_state_dict", None)
    released = getattr(type(projector), "uses_released_names", None)
    # Only a file in the released code's names is converted; one in this project's names that does
    # not fit (another depth, say) is reported below by its missing and unexpected keys.
    if set(weights) != set(expected) and convert is not None and (released is None or released(weights)):
        try:
            weights = convert(weights)
        except ValueError as err:  # not released names either: most likely another projector type's file
            raise ValueError(
                f"Projector weights in {source} do not fit mm_projector_type {projector_type!r}: their keys "
                f"{sorted(weights)[:8]}{' ...' if len(weights) > 8 else ''} are neither this projector's nor its "
                f"released names ({err}). Was the file trained with another --mm_projector_type?") from err
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        hint = "" if set(weights) & set(expected) else (
            ". None of its keys is this projector's: was the file trained with another --mm_projector_type?")
        raise ValueError(
            f"Projector weights in {source} do not fit mm_projector_type {projector_type!r}: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}{hint}"
        )
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"Projector weight {key!r} in {source} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(expected[key].shape)} (check mm_hidden_size, hidden_size and the projector settings)"
            )
    projector.load_state_dict(weights, strict=True)


def save_projector(output_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor],
                   prefix: str = PROJECTOR_PREFIX) -> list[Path]:
    """Writes ``mm_projector.bin`` (upstream's format) and ``mm_projector.safetensors`` side by side.

    Args:
        state_dict: keys relative to the projector, or already carrying a prefix containing
            ``mm_projector.`` (e.g. ``model.mm_projector.0.weight``), or other trainables such
            as ``model.embed_tokens.weight`` which are kept as given.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    full = {}
    for key, value in state_dict.items():
        name = key if "." in key and (key.startswith("model.") or "mm_projector." in key) else prefix + key
        full[name] = value.detach().to("cpu").contiguous()
    paths = [output_dir / "mm_projector.bin", output_dir / "mm_projector.safetensors"]
    torch.save(full, paths[0])
    save_file(full, str(paths[1]), metadata={"format": "pt"})
    return paths


def save_non_lora_trainables(output_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> Path:
    """Writes ``non_lora_trainables.bin`` (upstream's name and format: a torch pickle whose keys keep
    peft's ``base_model.model.`` prefix); :func:`read_non_lora_trainables` reads it back."""
    path = Path(output_dir, NON_LORA_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, path)
    return path


def save_tower_weights(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor]) -> Path:
    """Writes a CLIP tower's weights as ``<folder>/model.safetensors`` (keys as the vision model's
    ``state_dict``), the file ``CLIPVisionModel.from_pretrained(folder)`` reads."""
    path = Path(folder, TOWER_WEIGHTS_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}, str(path),
              metadata={"format": "pt"})
    return path


def zero3_gathered(params, modifier_rank: int | None = 0):
    """A context in which ZeRO-3-partitioned parameters are whole, so weights can be read or loaded
    (``deepspeed.zero.GatheredParameters``; changes made on ``modifier_rank`` are kept). A no-op
    for ordinary parameters. Under ZeRO-3 every rank must enter it (it is a collective)."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank)


def has_full_weights(folder: str | os.PathLike) -> bool:
    return any(Path(folder, name).is_file() for name in FULL_WEIGHT_FILES)


def read_checkpoint_tensors(folder: str | os.PathLike, keep) -> dict[str, torch.Tensor]:
    """Reads only the tensors whose key satisfies ``keep(key)`` from a (possibly sharded) checkpoint."""
    folder = Path(folder)
    files: list[Path] = []
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            weight_map = read_json(folder / index_name)["weight_map"]
            files = sorted({folder / name for key, name in weight_map.items() if keep(key)})
            break
    else:
        files = [folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as handle:
                tensors.update({key: handle.get_tensor(key) for key in handle.keys() if keep(key)})
        else:
            tensors.update({k: v for k, v in torch.load(str(file), map_location="cpu", weights_only=True).items()
                            if keep(k)})
    return tensors


def read_non_lora_trainables(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``non_lora_trainables.bin`` with peft's ``base_model.model.`` prefix removed (keys ``model.*``)."""
    weights = read_state_dict(Path(folder, NON_LORA_FILE))
    out = {}
    for key, value in weights.items():
        key = key.removeprefix("base_model.").removeprefix("model.") if key.startswith("base_model.") else key
        out[key if key.startswith(("model.", "lm_head.")) else "model." + key] = value
    return out


# transformers' LlavaForConditionalGeneration names, for parity checks and exports (MLP projectors).
def to_hf_llava_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames a ``LlavaLlamaForCausalLM`` state dict with an ``mlp2x_gelu`` projector to
    transformers' ``LlavaForConditionalGeneration`` names."""
    rules = (
        ("model.vision_tower.vision_tower.", "model.vision_tower."),
        ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
        ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
        ("model.", "model.language_model."),
    )
    out = {}
    for key, value in state_dict.items():
        for old, new in rules:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    if any(".mm_projector." in key for key in out):
        raise ValueError("to_hf_llava_state_dict supports the mlp2x_gelu projector only")
    return out


def to_hf_llava_config(config, image_token_index: int):
    """A transformers ``LlavaConfig`` equivalent to our config (mlp2x_gelu, CLS dropped)."""
    from transformers import CLIPVisionConfig, LlamaConfig
    from transformers import LlavaConfig as HFLlavaConfig

    if config.mm_projector_type != "mlp2x_gelu":
        raise ValueError(f"transformers' Llava has an mlp2x_gelu projector only, got {config.mm_projector_type!r}")
    text = LlamaConfig(**{k: v for k, v in config.to_dict().items()
                          if k in LlamaConfig.__dataclass_fields__ and not k.startswith("mm_")})
    vision = CLIPVisionConfig.from_pretrained(config.mm_vision_tower, local_files_only=True)
    return HFLlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_index=image_token_index,
        vision_feature_layer=config.mm_vision_select_layer,
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
