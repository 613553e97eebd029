"""``torchrun --nproc_per_node=2 -m embed`` (CPU, gloo) writes the same bytes as one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import embed
from mixbench.store.shards import Store

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def digests(path: Path) -> dict[str, str]:
    m = Store(path).manifest
    return {r["file"]: r["sha256"] for r in m["shards"]} | {f["file"]: f["sha256"] for f in m["files"]}


def test_two_processes_give_the_single_process_store(wiki_paired: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    # in this process: torch's default thread count (the torchrun workers use one thread each)
    embed.embed(wiki_paired, single, {"dim": 10, "standardize": True})

    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "embed", str(wiki_paired), str(out), "--dim", "10", "--standardize", "true"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert f"wrote {out}" in proc.stdout

    two, one = Store(out), Store(single)
    assert digests(out) == digests(single)
    assert len(digests(out)) == 6  # 4 shards (3 train, 1 test) + one PCA state per modality
    assert two.manifest["shards"] == one.manifest["shards"]
    assert two.manifest["info"] == one.manifest["info"]
    assert two.lineage[-1]["run_key"] == one.lineage[-1]["run_key"]
    assert two.verify() == []
