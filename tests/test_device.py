"""Precision choice: bf16 autocast only where the CPU, and oneDNN's cap on it, compute bf16."""

import pytest
import torch

from masksynth import device
from masksynth.errors import MasksynthError


@pytest.mark.parametrize(
    ("cap", "allowed"),
    [
        (None, True),
        ("ALL", True),
        ("avx512_core_bf16", True),
        ("AVX512_CORE_AMX", True),
        ("AVX10_1_512", True),
        ("AVX2", False),
        ("AVX512_CORE", False),
        ("AVX512_CORE_VNNI", False),
    ],
)
def test_onednn_isa_cap_decides_whether_bf16_is_native(cap, allowed):
    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert device.onednn_isa_allows_bf16(environ) is allowed
    assert device.onednn_isa_allows_bf16({"DNNL_MAX_CPU_ISA": cap} if cap else {}) is allowed


def test_auto_precision_is_fp32_under_an_avx2_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    device.cpu_has_fast_bf16.cache_clear()
    try:
        assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
        assert device.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for
    finally:
        device.cpu_has_fast_bf16.cache_clear()


def test_unknown_precision_is_a_user_error():
    with pytest.raises(MasksynthError, match="fp16"):
        device.resolve_precision("fp16", torch.device("cpu"))
