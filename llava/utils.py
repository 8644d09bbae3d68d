"""Helpers upstream scripts import from ``llava.utils``.

Upstream's eval scripts call ``disable_torch_init()`` before ``load_pretrained_model``; scripts
copied from there keep working. Loading here no longer needs it (transformers creates the
weights on the meta device and fills them from the checkpoint), so it only saves the time of a
random initialisation for models built by hand afterwards.
"""

from __future__ import annotations

import torch


def disable_torch_init() -> None:
    """Makes ``nn.Linear`` and ``nn.LayerNorm`` skip their random initialisation from now on, in this
    process (as upstream): only for models whose weights are all loaded afterwards."""
    torch.nn.Linear.reset_parameters = lambda self: None
    torch.nn.LayerNorm.reset_parameters = lambda self: None
