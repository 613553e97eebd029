"""Kill-and-resume: an encode run killed with SIGKILL after its k-th output shard, rerun with the
same run key, keeps the finished shards (not recomputed) and ends with the same store, shard by
shard (sha256), as an uninterrupted run.

The killed run is a subprocess with the test process's torch thread count; the rerun and the
uninterrupted reference run in this process (fewer interpreter start-ups on a 2-core CI box)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mixbench.store

from test_encode import build_raw_store, clip_table, standard_rows, write_images, write_tiny_clip

REPO = Path(__file__).resolve().parent.parent

#: Runs encode_store in a fresh process. Test hook (here, not in the library): the shard writer
#: logs every shard it writes and the process SIGKILLs itself after the k-th one.
WORKER = r'''
import json, os, signal, sys
from pathlib import Path

import mixbench.store

import prep
from mixbench.store.shards import StoreWriter
from embed.encode import encode_store

src, out, enc_json, kill_after, log_path = sys.argv[1:6]
kill_after = int(kill_after)
written = []
real_write = StoreWriter.write_shard

def write_shard(self, split, index, tables):
    rec = real_write(self, split, index, tables)
    written.append(rec["file"])
    with open(log_path, "a") as f:
        f.write(rec["file"] + "\n")
    if kill_after and len(written) >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return rec

StoreWriter.write_shard = write_shard
encode_store(mixbench.store.Store(src), Path(out), json.loads(enc_json), base_dir=Path("."), device="cpu", lineage=[],
             run_key="resume-key", max_reject_fraction=1.0, dtype="float32", overwrite=False)
'''


def run_worker(tmp: Path, src: Path, out: Path, encoders: dict[str, Any], kill_after: int, log: Path) -> int:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    import torch

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, str(script), str(src), str(out), json.dumps(encoders), str(kill_after),
                           str(log)], env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def shard_digests(store: mixbench.store.Store) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in store.manifest["shards"]}


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_store(tmp_path: Path) -> None:
    names = write_images(tmp_path / "images", 12)
    src = build_raw_store(tmp_path / "raw", tmp_path / "images", standard_rows(names), shard_rows=4)
    n_shards = len(src.manifest["shards"])
    assert n_shards == 6
    clip = write_tiny_clip(tmp_path / "models")
    encoders = {"image": clip_table(clip, workers=1, batch_size=3), "text": {"encoder": "tfidf"}}

    from embed.encode import encode_store
    from mixbench.store.shards import StoreWriter

    written: list[str] = []
    real_write = StoreWriter.write_shard

    def logged(self: StoreWriter, split: str, index: int, tables: Any) -> dict[str, Any]:
        rec = real_write(self, split, index, tables)
        written.append(rec["file"])
        return rec

    def encode_here(out: Path) -> mixbench.store.Store:
        return encode_store(src, out, encoders, base_dir=Path("."), device="cpu", lineage=[], run_key="resume-key",
                            max_reject_fraction=1.0, dtype="float32", overwrite=False)

    out = tmp_path / "resumed"
    assert run_worker(tmp_path, src.path, out, encoders, 2, tmp_path / "part.log") == -signal.SIGKILL
    first = (tmp_path / "part.log").read_text().split()
    assert len(first) == 2 and not (out / "manifest.json").exists()
    with pytest.raises(Exception):
        mixbench.store.Store(out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(StoreWriter, "write_shard", logged)
        resumed = encode_here(out)
        second = list(written)
        full = encode_here(tmp_path / "full")
    assert sorted(first + second) == sorted(s["file"] for s in src.manifest["shards"])
    assert not set(first) & set(second)  # finished shards were not recomputed
    assert shard_digests(resumed) == shard_digests(full)
    assert resumed.info["rejects"] == full.info["rejects"] and resumed.info["rejects"]["count"] == 10
    assert resumed.info["accounting"] == full.info["accounting"]
    assert resumed.info["encoders"]["text"]["fit_sha256"] == full.info["encoders"]["text"]["fit_sha256"]
    assert resumed.verify() == []
