"""Where and how tensors compute: device choice and mixed precision that pays on this hardware."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from masksynth.errors import MasksynthError


def pick_device(requested: str = "auto") -> torch.device:
    """'auto' takes the GPU when there is one; 'cuda' without a GPU is a user error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MasksynthError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
        )
    return device


@functools.cache
def cpu_info() -> str:
    """/proc/cpuinfo, read once ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX)."""
    return any(flag in cpu_info() for flag in (" avx512_bf16", " amx_bf16"))


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively and oneDNN may use it: then autocast pays."""
    return cpu_has_native_bf16() and onednn_isa_allows_bf16(os.environ)


def onednn_isa_allows_bf16(environ: Mapping[str, str]) -> bool:
    """False when oneDNN's instruction-set cap (ONEDNN_MAX_CPU_ISA, or its old name
    DNNL_MAX_CPU_ISA) stops below AVX-512 BF16: its convolutions then run bf16 without the
    bf16 instructions, several times slower than fp32 (as on an AVX2-only CPU)."""
    cap = (environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if cap in ("", "ALL", "DEFAULT"):
        return True
    # the caps from AVX512_CORE_BF16 up: AVX512_CORE_BF16, AVX10_1_512 (AVX512_CORE_FP16),
    # the AMX ones and AVX10_2_512. Not AVX2_VNNI_2: it converts to bf16 but has no bf16
    # dot products.
    return any(isa in cap for isa in ("BF16", "AMX", "AVX10", "AVX512_CORE_FP16"))


def resolve_precision(requested: str, device: torch.device) -> str:
    """'auto' -> 'bf16' where it is fast (most GPUs, AVX-512 BF16 CPUs), else 'fp32'."""
    if requested not in ("auto", "fp32", "bf16"):
        raise MasksynthError(f"--precision must be auto, fp32 or bf16 (got {requested!r})")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` ('fp32' gives a no-op context)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# The classifiers' memory layout, on every device. On a 2-core AMD EPYC (AVX-512 BF16),
# timed in turn with the default layout (benchmarks/classifier_speed.py channels_last_gain),
# channels_last trains EfficientNet-lite0 at 128 px 1.18x as fast in bf16 and 1.6x in fp32,
# ResNet18 at 64 px 1.07x and 1.04x; with oneDNN and ATen capped at AVX2 (fp32) 1.6x and
# 1.05x (an early, noisy measurement on a real AVX2 CPU had ResNet18 7 % slower). It pays
# on GPUs too.
CLASSIFIER_MEMORY_FORMAT = torch.channels_last
