"""llava.utils: what upstream scripts import from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_disable_torch_init_skips_random_init_of_linear_and_layernorm():
    """In a child process: the patch is process-wide, as upstream's, and must not leak into the suite."""
    code = "\n".join([
        "import torch",
        "from llava.utils import disable_torch_init",
        "before = torch.nn.Linear(4, 4)",
        "disable_torch_init()",
        "for layer in (torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)):",
        "    torch.nn.init.constant_(layer.weight, 7.0)",
        "    layer.reset_parameters()",
        "    assert torch.all(layer.weight == 7.0), layer",
        "torch.nn.init.constant_(before.weight, 7.0)",
        "before.reset_parameters()  # the class is patched, so existing layers skip it too",
        "assert torch.all(before.weight == 7.0)",
        "print('ok')",
    ])
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_end_process_flushes_and_exits_with_the_code(tmp_path):
    script = ("import logging, sys\n"
              "from llava.utils import end_process\n"
              "logging.basicConfig(filename=sys.argv[1], level=logging.INFO)\n"
              "logging.getLogger('x').info('logged')\n"
              "print('printed', end='')\n"
              "end_process(3)\n"
              "print('not reached')\n")
    log = tmp_path / "run.log"
    done = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 3 and done.stdout == "printed"
    assert log.read_text() == "INFO:x:logged\n"


def test_default_device_is_cuda_then_mps_then_cpu(monkeypatch):
    import torch

    from llava.utils import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert default_device() == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert default_device() == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda"
