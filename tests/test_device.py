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
        ("all", True),
        ("avx512_core_bf16", True),
        ("AVX512_CORE_AMX", True),
        ("AVX512_CORE_FP16", True),
        ("AVX10_1_512", True),
        ("AVX10_2_512", True),
        ("AVX2", False),
        ("AVX2_VNNI_2", False),  # bf16 conversions, no bf16 dot products
        ("AVX512_CORE", False),
        ("AVX512_CORE_VNNI", False),
    ],
)
def test_onednn_isa_cap_decides_whether_bf16_is_native(cap, allowed):
    environ = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert device.onednn_isa_allows_bf16(environ) is allowed
    assert device.onednn_isa_allows_bf16({"DNNL_MAX_CPU_ISA": cap} if cap else {}) is allowed


def test_the_new_name_of_the_cap_wins_over_the_old():
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "ALL"}
    assert not device.onednn_isa_allows_bf16(environ)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_takes_bf16_only_on_a_native_cpu_without_a_cap(monkeypatch, native):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert device.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert device.resolve_precision("auto", cpu) == "fp32"
    assert device.resolve_precision("bf16", cpu) == "bf16"  # asked for: taken as asked


def test_unknown_precision_is_a_user_error():
    with pytest.raises(MasksynthError, match="fp16"):
        device.resolve_precision("fp16", torch.device("cpu"))
