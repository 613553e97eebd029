"""MIXBENCH_PORTABLE_MATH=1 (mixbench.PORTABLE_MATH): the switch that makes a seed give the same
numbers on any x86-64 CPU is applied before torch loads and recorded in the run's device line.
(That it does make the numbers CPU-independent, and what it costs, is measured by
bench/portable_math.py: a full training imitating an SSE4.2-only CPU.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SWITCHES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MIXBENCH_PORTABLE_MATH")


def _python(code: str, repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**clean, "PYTHONPATH": str(repo), **env})


def test_portable_math_is_applied_before_torch_and_recorded(repo_root: Path) -> None:
    code = ("import train, os, torch; from train.stage import device_name; "
            "print(os.environ.get('MKL_CBWR'), os.environ.get('ATEN_CPU_CAPABILITY')); print(device_name(torch.device('cpu')))")
    on = _python(code, repo_root, MIXBENCH_PORTABLE_MATH="1")
    assert on.returncode == 0, on.stderr[-2000:]
    first, device = on.stdout.splitlines()
    assert first == "COMPATIBLE default" and "portable math: MKL_CBWR=COMPATIBLE" in device
    off = _python(code, repo_root)
    assert off.stdout.splitlines()[0] == "None None" and "portable" not in off.stdout
    late = _python("import torch, mixbench", repo_root, MIXBENCH_PORTABLE_MATH="1")
    assert "torch was imported before mixbench" in late.stderr
