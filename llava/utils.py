"""Helpers upstream scripts import from ``llava.utils``.

Upstream's eval scripts call ``disable_torch_init()`` before ``load_pretrained_model``; scripts
copied from there keep working. Loading here no longer needs it (transformers creates the
weights on the meta device and fills them from the checkpoint), so it only saves the time of a
random initialisation for models built by hand afterwards.
"""

from __future__ import annotations

import logging
import os
import sys

import torch


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``mps`` on Apple silicon, else ``cpu``.

    Upstream's scripts default to cuda and fail on a machine without one.
    """
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def disable_torch_init() -> None:
    """Makes ``nn.Linear`` and ``nn.LayerNorm`` skip their random initialisation from now on, in this
    process (as upstream): only for models whose weights are all loaded afterwards."""
    torch.nn.Linear.reset_parameters = lambda self: None
    torch.nn.LayerNorm.reset_parameters = lambda self: None


def end_process(code: int = 0) -> None:
    """Ends the process now, after its work: flushes logging and stdio, then ``os._exit(code)``.

    For the ends of long-running entry points (a training rank, the web demo, a model worker). A
    normal exit also runs the C++ teardown of torch and the collective backends, which aborted now
    and then ("terminate called without an active exception", SIGABRT) when a thread was still
    joinable: a gloo rank after its checkpoint was written, the demo stopped by SIGTERM during its
    preloaded answer. Everything worth keeping is written by then; only call it from ``__main__``.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be written anyway
            pass
    os._exit(code)
