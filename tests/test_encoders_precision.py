"""precision = "auto" on (simulated) GPUs: bf16 only where the GPU supports it natively.

torch.cuda.is_bf16_supported() defaults to including_emulation=True, which is True on any CUDA
GPU (a bf16 tensor can be created everywhere), so without asking for native support the
documented fp16 fallback for pre-Ampere GPUs (V100, T4) would never be taken."""

from __future__ import annotations

import pytest
import torch

from embed.encoders.base import resolve_precision

CUDA = torch.device("cuda")


def _gpu(monkeypatch: pytest.MonkeyPatch, native_bf16: bool) -> None:
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native_bf16 or including_emulation  # emulated bf16 works on every CUDA GPU

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


def test_auto_is_fp16_on_a_gpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, native_bf16=False)
    assert resolve_precision("auto", CUDA) == "fp16"


def test_auto_is_bf16_on_a_gpu_with_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, native_bf16=True)
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"


def test_explicit_and_cpu_precisions_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpu(monkeypatch, native_bf16=False)
    assert resolve_precision("bf16", CUDA) == "bf16"
    assert resolve_precision("fp32", CUDA) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
