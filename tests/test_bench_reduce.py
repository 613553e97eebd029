"""bench/reduce.py: scikit-learn timed in its own process, after a warm-up, over repeats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_reduce_bench_runs_sklearn_in_its_own_process(repo_root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}  # as the README's commands run it
    proc = subprocess.run(
        [sys.executable, str(repo_root / "bench" / "reduce.py"), "--n", "3000", "--d", "64", "--k", "8", "--rank", "8",
         "--repeats", "2", "--top", "4", "--no-stream"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "medians of 2 runs after a warm-up; scikit-learn in its own process" in out
    # the same data on both sides: the leading components agree
    line = next(x for x in out.splitlines() if x.startswith("components max |1-|cos||"))
    assert float(line.split("top 4 ")[1].split(",")[0]) < 1e-6
