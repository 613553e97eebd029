"""`mixbench inspect`: the store summary, rejects/accounting, run folders, and --verify."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import prep
from mixbench.cli import main
from mixbench.store.inspect import describe, split_stats, verify_store
from mixbench.store.manifest import seal, sha256_file
from mixbench.store.shards import Column, Store, StoreWriter, feature_schema


def test_describe_paired_store(wiki_paired: Path) -> None:
    text = describe(wiki_paired)
    for expected in (
        "kind       paired",
        "dataset    wikipedia",
        "classes    10: art, biology, geography",
        "multilabel no",
        "image: id str, label int64, pair int64, feat float32[128]",
        "split train (3 shards)",
        "rows       image 2173, text 2173",
        "linked     2173 pair(s)",
        "unpaired   image 0, text 0",
        "labels     art 138, biology 272",
        "split test (1 shard)",
        "lineage",
        "1. prep  config ",
        "input raw_features.mat: ",
        "sha256 ca628f765a69",
    ):
        assert expected in text, expected
    assert "zero-filled" not in text


def _benchmark(path: Path) -> Path:
    """Mixed-modal: 4 linked pairs, 2 image-only rows, 1 text-only row, 1 zero-filled text row."""
    schema = {m: feature_schema(2, extra={"present": Column("uint8")}) for m in ("image", "text")}
    w = StoreWriter(path, kind="benchmark", dataset="toy", classes=["a", "b", "c"], schema=schema,
                    lineage=[{"stage": "unpair", "config_hash": "abc123",
                              "inputs": {"store": {"path": "x", "manifest_sha256": "f" * 64}}}],
                    run_key="k")
    w.write_shard("train", 0, {
        "image": {"id": [f"i{k}" for k in range(6)], "label": [0, 1, 2, 0, 1, 1], "pair": [0, 1, 2, 3, -1, -1],
                  "feat": np.ones((6, 2)), "present": np.ones(6, np.uint8)},
        "text": {"id": [f"t{k}" for k in range(6)], "label": [0, 1, 2, 0, 2, 1], "pair": [0, 1, 2, 3, -1, 9],
                 "feat": np.ones((6, 2)), "present": [1, 1, 1, 1, 1, 0]},
    })
    w.finish({"unpair": {"ratio": 0.5}})
    return path


def test_describe_benchmark_counts_links_and_zero_filled(tmp_path: Path) -> None:
    store = _benchmark(tmp_path / "b")
    st = split_stats(Store(store), "train")
    assert st["linked"] == 4 and st["unpaired"] == {"image": 2, "text": 1}
    assert st["zero_filled"] == {"image": 0, "text": 1}
    text = describe(store)
    assert "kind       benchmark" in text
    assert "linked     4 pair(s)" in text and "unpaired   image 2, text 1" in text
    assert "zero-filled image 0, text 1" in text
    assert "labels image: a 2, b 3, c 1" in text and "labels text: a 2, b 1, c 2" in text
    assert 'unpair: {"ratio": 0.5}' in text and "input store: x manifest_sha256 ffffffffffff" in text


def test_describe_rejects_and_multilabel(tmp_path: Path) -> None:
    from PIL import Image

    lines = []
    for i in range(8):
        name = f"im{i}.png"
        if i != 3:
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(tmp_path / name)
        labels = ["x", "y"] if i % 2 else ["y"]
        lines.append(json.dumps({"id": f"r{i}", "image": name, "text": "" if i == 5 else f"t {i}", "labels": labels}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "m.jsonl"), "max_reject_fraction": 0.5,
                  "test_fraction": 0.25}, tmp_path / "s")
    text = describe(tmp_path / "s")
    assert "multilabel yes (multi-hot labels)" in text
    assert "labels     (per-class counts) x " in text
    assert "rejects    4 row(s); full list: rejects.jsonl" in text
    assert "        1  missing file" in text and "        1  partner-rejected: empty text" in text
    assert "e.g. [" in text and "id r3" in text
    assert "accounting split/modality: input = kept + rejected" in text
    assert "path" in text and "raw columns: path" in text and "raw columns: text" in text
    assert "rejects.jsonl  rejects" in text
    for split in Store(tmp_path / "s").splits:
        assert f"  {split}/image: " in text


def test_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    metrics = {"dataset": "wikipedia", "seed": 3, "epochs": 220, "wall_time": {"total": 12.345},
               "methods": {"dm2c": {"test": {"acc": 0.27204, "nmi": 0.15}},
                           "kmeans-pooled": {"test": {"acc": 0.2291, "nmi": 0.1003}}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "report.md").write_text("# report\n")
    rec = {"schema": "mixbench-run", "run_key": "ab" * 32, "config_hash": "cd" * 32, "finished": "2026-01-01",
           "files": {"metrics.json": sha256_file(run / "metrics.json"), "report.md": sha256_file(run / "report.md")}}
    (run / "run.json").write_text(json.dumps(rec))
    text = describe(run)
    assert text.startswith(f"run folder {run}") and "schema: mixbench-run" in text and "finished: 2026-01-01" in text
    assert "run        dataset wikipedia, seed 3, epochs 220, wall_time_s 12.3" in text
    assert "dm2c                   test   acc 0.2720  nmi 0.1500" in text and "kmeans-pooled" in text
    assert "contents   metrics.json, report.md" in text
    assert verify_store(run) == []
    (run / "report.md").write_text("# changed\n")
    assert verify_store(run) == [f"{run / 'report.md'}: sha256 does not match run.json."]
    (run / "metrics.json").unlink()
    assert f"{run / 'metrics.json'}: listed in run.json but missing." in verify_store(run)


def test_verify_catches_schema_drift(tmp_path: Path, uci_dir: Path) -> None:
    out = tmp_path / "u"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["mor", "fou"]}, out)
    assert verify_store(out) == []
    shard = out / "test-00000.h5"
    with h5py.File(shard, "r+") as f:  # label stored as float: the manifest says int64
        lab = f["mor/label"][...]
        del f["mor/label"]
        f["mor/label"] = lab.astype(np.float64)
    man = json.loads((out / "manifest.json").read_text())
    for rec in man["shards"]:
        if rec["file"] == shard.name:
            rec["sha256"] = sha256_file(shard)  # the checksum alone would not notice
    (out / "manifest.json").write_text(json.dumps(seal(man)))  # re-sealed: only the shard's content is wrong
    problems = verify_store(out)
    assert problems == ["test-00000.h5 [mor.label]: dtype float64, manifest says int64."]


def test_cli_inspect(wiki_paired: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(wiki_paired), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "dataset    wikipedia" in out and "verify: OK" in out
    store = _benchmark(tmp_path / "b")
    raw = bytearray((store / "train-00000.h5").read_bytes())
    raw[-5] ^= 0x01
    (store / "train-00000.h5").write_bytes(bytes(raw))
    assert main(["inspect", str(store), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "verify: 1 problem(s):" in out and "train-00000.h5: sha256" in out
