"""bench/gpu.sh, the one-shot GPU check: valid bash, its help, and a run whose budget is spent
(every step skipped cleanly, the summary JSON still written). The real dry run, `bench/gpu.sh
--cpu --quick`, takes a minute or more and is not part of the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _run(*args: str, out: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["bash", str(SCRIPT), *args] + (["--out", str(out)] if out else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)


def test_syntax_and_help() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    res = _run("--help")
    assert res.returncode == 0 and "One-shot GPU check" in res.stdout and "--cpu --quick" in res.stdout
    bad = _run("--nope")
    assert bad.returncode == 2 and "unknown option --nope" in bad.stderr


def test_spent_budget_skips_every_step_and_writes_the_summary(tmp_path: Path) -> None:
    res = _run("--cpu", "--quick", "--budget", "1", out=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "gpu.json").read_text())
    names = [s["step"] for s in summary["steps"]]
    assert names[:4] == ["dm2c", "kmeans-a", "kmeans-b", "reduce"] and "embed" in names
    assert {s["status"] for s in summary["steps"]} == {"skipped"}
    assert summary["environment"]["device"] == "cpu" and summary["quick"] is True
    assert (tmp_path / "gpu.log").exists()
