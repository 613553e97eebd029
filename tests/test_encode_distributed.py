"""Two processes (torchrun, gloo, CPU) split the shards and write the same store as one process:
byte-identical shards, the same rejects and accounting; rank 0 writes the manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mixbench.store

from test_encode import build_raw_store, clip_table, standard_rows, write_images, write_tiny_clip

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import json, os, sys
from pathlib import Path

import mixbench.store

import prep
from mixbench import dist
from embed.encode import encode_store

src, out, enc_json = sys.argv[1:4]
d = dist.init()
assert d.world == int(os.environ["WORLD_SIZE"]) == 2, d
store = encode_store(mixbench.store.Store(src), Path(out), json.loads(enc_json), base_dir=Path("."), device="cpu",
                     lineage=[], run_key="dist-key", max_reject_fraction=1.0, dtype="float32", overwrite=False)
mine = [r["file"] for r in dist.my_items(sorted(mixbench.store.Store(src).manifest["shards"],
                                                 key=lambda r: ((r["split"] != "train"), r["index"])), d)]
with open(Path(out).parent / f"rank{d.rank}.json", "w") as f:
    json.dump({"rank": d.rank, "world": d.world, "shards": mine, "complete": len(store.manifest["shards"])}, f)
'''


@pytest.mark.slow
def test_two_processes_write_the_same_store_as_one(tmp_path: Path) -> None:
    from embed.encode import encode_store

    names = write_images(tmp_path / "images", 9)
    src = build_raw_store(tmp_path / "raw", tmp_path / "images", standard_rows(names), shard_rows=3)
    clip = write_tiny_clip(tmp_path / "models")
    encoders = {"image": clip_table(clip, batch_size=2), "text": {"encoder": "tfidf"}}

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(src.path), str(tmp_path / "two"), json.dumps(encoders)]
    proc = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    one = encode_store(src, tmp_path / "one", encoders, base_dir=Path("."), device="cpu", lineage=[],
                       run_key="dist-key", max_reject_fraction=1.0, dtype="float32", overwrite=False)
    two = mixbench.store.Store(tmp_path / "two")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    split_a, split_b = set(ranks[0]["shards"]), set(ranks[1]["shards"])
    assert split_a and split_b and not split_a & split_b  # the shards were split between the ranks
    assert [(s["file"], s["sha256"], s["rows"]) for s in two.manifest["shards"]] == \
        [(s["file"], s["sha256"], s["rows"]) for s in one.manifest["shards"]]
    for s in one.manifest["shards"]:
        assert (tmp_path / "two" / s["file"]).read_bytes() == (tmp_path / "one" / s["file"]).read_bytes()
    assert two.info["rejects"] == one.info["rejects"] and two.info["accounting"] == one.info["accounting"]
    assert two.info["runtime"]["world"] == 2 and one.info["runtime"]["world"] == 1
    assert two.verify() == []
