"""Device selection shared by the stages (CUDA when present, else CPU)."""

from __future__ import annotations

import logging
import os

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when available, else ``cpu``; ``"cuda"`` without CUDA is an error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r}: CUDA is not available on this machine; use 'auto' or 'cpu'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(f"device = {name!r}: this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1}); "
                          "use 'cuda', 'auto' or an index that exists.")
    return dev


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
