"""resolve_device on a (simulated) CUDA machine: a device index that does not exist is a
ConfigError up front, not 'invalid device ordinal' from deep inside model loading."""

from __future__ import annotations

import pytest
import torch

from mixbench.device import resolve_device
from mixbench.errors import ConfigError


@pytest.fixture
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_existing_cuda_devices_resolve(one_gpu: None) -> None:
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_missing_cuda_index_is_a_config_error(one_gpu: None) -> None:
    with pytest.raises(ConfigError, match=r"device = 'cuda:1'.*1 CUDA device\(s\) \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:1")


def test_no_cuda_is_still_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda:1")
    assert resolve_device("auto") == torch.device("cpu")
