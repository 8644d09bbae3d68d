"""Timing, memory and machine description: the device-specific parts of the benchmark, in one place."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib.metadata
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch


class Clock:
    """Wall-clock time that waits for queued GPU work first.

    On CUDA every reading is ``torch.cuda.synchronize()`` then ``time.perf_counter()``, so a
    reading marks the end of all work launched before it; on CPU it is ``time.perf_counter()``.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, which hands freed heap pages back to the OS, if this libc has it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc: freed heap stays in the resident set
        return None
    return lambda: trim(0)


class PeakMemory:
    """Peak memory of one measured phase, in MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only), reset at :meth:`reset`.
    CPU: the process's peak resident set (``VmHWM`` in ``/proc/self/status``). :meth:`reset`
    first returns freed heap to the OS (``gc.collect()``, glibc ``malloc_trim``), then restarts
    the peak from the current resident set by writing ``5`` to ``/proc/self/clear_refs`` (Linux).
    The benchmark measures each setting in a fresh process, so earlier settings do not inflate
    the resident set. Where the reset is not available the reading is ``ru_maxrss``, the peak
    over the whole process so far, and :attr:`kind` says so.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.device = torch.device(device)
        self._trim = None if self.cuda else _malloc_trim()
        if self.cuda:
            self.kind = "torch.cuda.max_memory_allocated (tensors on the GPU), reset per phase"
        elif self._can_reset_rss():
            self.kind = ("peak resident set of the process (VmHWM: weights, activations, Python and libraries), "
                         "reset per phase via /proc/self/clear_refs"
                         + (" after malloc_trim" if self._trim else ""))
        else:
            self.kind = "peak resident set of the whole process since it started (ru_maxrss; cannot be reset here)"

    @staticmethod
    def _can_reset_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return Path("/proc/self/status").is_file()

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            gc.collect()
            if self._trim is not None:
                self._trim()
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass  # ru_maxrss fallback; `kind` records that the peak is process-wide

    def peak_mib(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        status = Path("/proc/self/status")
        if status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def describe_machine(device: torch.device) -> dict:
    """What the numbers were measured on: CPU, cores, RAM, GPU (when used) and the load average."""
    info = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
        info["name"] = props.name
    else:
        info["name"] = f"{info['cpu']}, {info['cpu_cores']} cores, {info['ram_gib']} GiB RAM"
    return info


def describe_versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "peft": _version("peft"),
        "accelerate": _version("accelerate"),
        "flash_attn": _version("flash-attn") or _version("flash_attn"),
        "llava": _version("llava"),
    }
