"""Attention backend choice, through transformers' ``attn_implementation`` (no monkey patching)."""

from __future__ import annotations

import importlib

import torch

BACKENDS = ("flash_attention_2", "sdpa", "eager")


def flash_attn_status() -> tuple[bool, str]:
    """(available, reason): whether ``flash_attn`` imports, and the real error when it does not."""
    try:
        importlib.import_module("flash_attn")
    except ImportError as err:  # the reason is reported, not hidden
        return False, f"flash_attn does not import: {err}"
    return True, "flash_attn imports"


def select_attn_implementation(device: str | torch.device | None = None, requested: str | None = None) -> str:
    """``flash_attention_2`` when flash-attn imports and the device is CUDA, else ``sdpa``.

    Args:
        requested: an explicit backend; ``flash_attention_2`` raises ``ImportError`` with the reason
            when it cannot be used, instead of silently falling back.
    """
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if requested is not None:
        if requested not in BACKENDS:
            raise ValueError(f"Unknown attn_implementation {requested!r}; known: {list(BACKENDS)}")
        if requested == "flash_attention_2":
            ok, reason = flash_attn_status()
            if not ok or not on_cuda:
                raise ImportError(f"attn_implementation='flash_attention_2' needs CUDA and flash-attn: "
                                  f"{reason}; device {device}")
        return requested
    if on_cuda and flash_attn_status()[0]:
        return "flash_attention_2"
    return "sdpa"
