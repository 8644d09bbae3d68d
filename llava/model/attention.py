"""Attention backend choice, through transformers' ``attn_implementation`` (no monkey patching)."""

from __future__ import annotations

import importlib
import logging

import torch

logger = logging.getLogger(__name__)

BACKENDS = ("flash_attention_2", "sdpa", "eager")


def flash_attn_status() -> tuple[bool, str]:
    """(available, reason): whether ``flash_attn`` imports, and the real error when it does not."""
    try:
        importlib.import_module("flash_attn")
    except ImportError as err:  # the reason is reported, not hidden
        return False, f"flash_attn does not import: {err}"
    return True, "flash_attn imports"


def select_attn_implementation(device: str | torch.device | None = None, requested: str | None = None,
                               prefer_flash: bool = False) -> str:
    """``flash_attention_2`` when flash-attn imports and the device is CUDA, else ``sdpa``.

    Args:
        requested: an explicit backend; ``flash_attention_2`` raises ``ImportError`` with the reason
            when it cannot be used, instead of silently falling back.
        prefer_flash: upstream's ``use_flash_attn`` / ``--use-flash-attn``: flash-attn when it can be
            used, else ``sdpa`` with a warning that gives the reason (upstream's commands pass the
            flag on machines where flash-attn is not installed).
    """
    on_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if requested is None and prefer_flash:
        ok, reason = flash_attn_status()
        if ok and on_cuda:
            return "flash_attention_2"
        logger.warning("use_flash_attn: flash-attention 2 cannot be used (%s; device %s); using sdpa",
                       reason if not ok else "flash_attn imports", device)
        return "sdpa"
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
