"""The store: round trip, schema checks, checksums, atomic shards and resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import prep
from mixbench.errors import DataError, StoreError
from mixbench.store.inspect import verify_store
from mixbench.store.shards import Column, Store, StoreWriter, base_schema, feature_schema, reusable


def _schema() -> dict[str, dict[str, Column]]:
    return {
        "image": feature_schema(4, "float16", extra={"present": Column("uint8")}),
        "text": {**base_schema(), "text": Column("str")},
    }


def _table(rng: np.random.Generator, n: int, start: int) -> dict[str, dict[str, np.ndarray]]:
    ids = np.asarray([f"ü-{i}" for i in range(start, start + n)], dtype=object)
    return {
        "image": {"id": ids, "label": rng.integers(0, 3, n), "pair": np.arange(start, start + n),
                  "feat": rng.normal(size=(n, 4)).astype(np.float16), "present": np.ones(n, np.uint8)},
        "text": {"id": ids, "label": rng.integers(0, 3, n), "pair": np.arange(start, start + n),
                 "text": np.asarray([f"caption {i} – ✓" for i in range(start, start + n)], dtype=object)},
    }


def _writer(path: Path, key: str = "k1", **kw: object) -> StoreWriter:
    return StoreWriter(path, kind="paired", dataset="toy", classes=["a", "b", "c"], schema=_schema(),
                       lineage=[{"stage": "test"}], run_key=key, **kw)  # type: ignore[arg-type]


def test_round_trip_streaming_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = _writer(tmp_path / "s")
    written = {("train", 0): _table(rng, 5, 0), ("train", 1): _table(rng, 3, 5), ("test", 0): _table(rng, 2, 8)}
    for (split, k), t in written.items():
        w.write_shard(split, k, t)
    w.add_file("notes.txt", "hello", role="aux")
    man = w.finish({"x": 1})
    assert man["splits"]["train"]["rows"] == {"image": 8, "text": 8}
    assert not (tmp_path / "s" / ".progress").exists()

    s = Store(tmp_path / "s")
    assert s.splits == ["train", "test"] and s.modalities == ["image", "text"] and s.classes == ["a", "b", "c"]
    assert s.feat_dim("image") == 4 and s.info == {"x": 1}
    got = s.load("train", "image")
    exp = [written[("train", 0)]["image"], written[("train", 1)]["image"]]
    np.testing.assert_array_equal(got["feat"], np.concatenate([e["feat"] for e in exp]))
    assert got["feat"].dtype == np.float16
    assert list(got["id"]) == [f"ü-{i}" for i in range(8)]
    assert list(s.load("test", "text")["text"]) == ["caption 8 – ✓", "caption 9 – ✓"]
    shards = list(s.iter_shards("train", ["text"], ["id"]))
    assert [len(t["text"]["id"]) for _, t in shards] == [5, 3] and list(shards[0][1]["text"]) == ["id"]
    import torch

    on_dev = s.load("train", "image", ["label", "feat"], device="cpu")
    assert isinstance(on_dev["feat"], torch.Tensor) and on_dev["feat"].shape == (8, 4)
    assert s.file("notes.txt").read_text() == "hello"
    assert verify_store(tmp_path / "s") == []
    assert reusable(tmp_path / "s", "k1") is not None and reusable(tmp_path / "s", "other") is None


def test_complete_store_needs_overwrite(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = _writer(tmp_path / "s")
    w.write_shard("train", 0, _table(rng, 2, 0))
    w.finish()
    with pytest.raises(StoreError, match="already holds a complete store.*overwrite"):
        _writer(tmp_path / "s")
    w = _writer(tmp_path / "s", overwrite=True)
    assert not (tmp_path / "s" / "manifest.json").exists() and not list((tmp_path / "s").glob("*.h5"))


def test_schema_and_value_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    w = _writer(tmp_path / "s")
    bad = _table(rng, 3, 0)
    bad["image"]["feat"] = bad["image"]["feat"].astype(np.float32)
    bad["image"]["feat"][1, 2] = np.nan
    with pytest.raises(DataError, match=r"row 1 \(id ü-1\) holds NaN or inf"):
        w.write_shard("train", 0, bad)
    dup = _table(rng, 3, 0)
    dup["text"]["id"][2] = "ü-0"
    with pytest.raises(DataError, match="id 'ü-0' appears more than once"):
        w.write_shard("train", 0, dup)
    extra = _table(rng, 3, 0)
    extra["text"]["feat"] = np.zeros((3, 2))
    with pytest.raises(StoreError, match=r"unknown: \['feat'\]"):
        w.write_shard("train", 0, extra)
    short = _table(rng, 3, 0)
    short["image"]["pair"] = np.arange(2)
    with pytest.raises(StoreError, match="'pair' has 2 rows"):
        w.write_shard("train", 0, short)
    frac = _table(rng, 3, 0)
    frac["image"]["label"] = np.array([0.0, 2.5, 1.0])
    with pytest.raises(DataError, match="expected integers"):
        w.write_shard("train", 0, frac)
    # nothing half-written: no shard, no temp file
    assert not list((tmp_path / "s").glob("*.h5*"))


def test_incomplete_store_is_not_readable(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = _writer(tmp_path / "s")
    w.write_shard("train", 0, _table(rng, 2, 0))
    with pytest.raises(StoreError, match="not a complete store.*Rerun"):
        Store(tmp_path / "s")
    assert verify_store(tmp_path / "s")[0].startswith(f"{tmp_path / 's'} is not a complete store")
    with pytest.raises(StoreError, match="no such store folder"):
        Store(tmp_path / "nowhere")


def test_damaged_shard_is_caught_by_readers_and_verify(tmp_path: Path, wikipedia_dir: Path) -> None:
    out = tmp_path / "w"
    prep.prepare({"adapter": "wikipedia", "root": str(wikipedia_dir), "shard_rows": 1000}, out)
    shard = out / "train-00001.h5"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # flip one byte of the data
    shard.write_bytes(bytes(raw))
    s = Store(out)
    assert len(s.load("test", "image", ["id"])["id"]) == 693  # other shards still read
    stream = s.iter_shards("train")
    next(stream)  # shard 0 is intact
    with pytest.raises(StoreError, match=r"train-00001.h5: sha256 .* does not match the manifest"):
        next(stream)
    with pytest.raises(StoreError, match="does not match"):
        Store(out).load("train", "text")
    problems = verify_store(out)
    assert len(problems) == 1 and "train-00001.h5" in problems[0] and "does not match" in problems[0]
    # an aux file or the manifest itself edited
    man = json.loads((out / "manifest.json").read_text())
    man["shards"][0]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(man))
    assert any("manifest.json" in p and "its own checksum" in p for p in verify_store(out))


def _uci_cfg(uci_dir: Path) -> dict[str, object]:
    return {"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["mor", "zer"], "shard_rows": 300}


def test_interrupted_stage_resumes_keeping_finished_shards(tmp_path: Path, uci_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "u"
    original = StoreWriter.write_shard
    calls = {"n": 0}

    def failing(self: StoreWriter, split: str, index: int, tables: dict) -> dict:
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls["n"] += 1
        return original(self, split, index, tables)

    monkeypatch.setattr(StoreWriter, "write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(_uci_cfg(uci_dir), out)
    monkeypatch.setattr(StoreWriter, "write_shard", original)
    assert not (out / "manifest.json").exists()
    done = sorted(p.name for p in out.glob("*.h5"))
    assert done == ["train-00000.h5", "train-00001.h5"]
    before = {n: ((out / n).stat().st_ino, (out / n).stat().st_mtime_ns) for n in done}
    with pytest.raises(StoreError):
        Store(out)

    # leftovers that must never count as finished: a temp file, and a shard without its marker
    (out / "train-00002.h5.tmp-4242").write_bytes(b"partial")
    (out / "train-00003.h5").write_bytes(b"not finished")

    written: list[tuple[str, int]] = []

    def spy(self: StoreWriter, split: str, index: int, tables: dict) -> dict:
        written.append((split, index))
        return original(self, split, index, tables)

    monkeypatch.setattr(StoreWriter, "write_shard", spy)
    man = prep.prepare(_uci_cfg(uci_dir), out)
    assert ("train", 0) not in written and ("train", 1) not in written
    assert ("train", 2) in written and ("train", 3) in written
    for n, (ino, mtime) in before.items():
        st = (out / n).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{n} was rewritten"
    assert not list(out.glob("*.tmp-*"))
    assert man["splits"]["train"]["rows"] == {"mor": 1600, "zer": 1600}
    assert verify_store(out) == []
    s = Store(out)
    assert len(set(s.load("train", "mor")["id"])) == 1600


def test_resume_with_other_config_discards_old_shards(tmp_path: Path, uci_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "u"
    original = StoreWriter.write_shard

    def fail_second(self: StoreWriter, split: str, index: int, tables: dict) -> dict:
        if index == 1:
            raise RuntimeError("boom")
        return original(self, split, index, tables)

    monkeypatch.setattr(StoreWriter, "write_shard", fail_second)
    with pytest.raises(RuntimeError):
        prep.prepare(_uci_cfg(uci_dir), out)
    monkeypatch.setattr(StoreWriter, "write_shard", original)
    prep.prepare({**_uci_cfg(uci_dir), "seed": 5}, out)  # another run key: nothing is reused
    s = Store(out)
    assert s.lineage[-1]["config"]["seed"] == 5 and verify_store(out) == []
    # every shard holds the seed-5 split: train and test ids partition the 2,000 rows
    train_ids = set(s.load("train", "mor")["id"])
    test_ids = set(s.load("test", "mor")["id"])
    assert len(train_ids) == 1600 and len(test_ids) == 400 and not train_ids & test_ids
    fresh = prep.prepare({**_uci_cfg(uci_dir), "seed": 5}, tmp_path / "fresh")
    assert Store(tmp_path / "fresh").load("train", "mor")["id"].tolist() == s.load("train", "mor")["id"].tolist()
    assert fresh["splits"] == s.manifest["splits"]


def test_identical_rerun_is_reused(tmp_path: Path, uci_dir: Path) -> None:
    out = tmp_path / "u"
    m1 = prep.prepare(_uci_cfg(uci_dir), out)
    st = (out / "test-00000.h5").stat()
    m2 = prep.prepare(_uci_cfg(uci_dir), out)
    assert m2.get("reused") is True and m2["lineage"] == m1["lineage"]
    assert (out / "test-00000.h5").stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(StoreError, match="already holds a complete store"):
        prep.prepare({**_uci_cfg(uci_dir), "seed": 1}, out)
    m3 = prep.prepare({**_uci_cfg(uci_dir), "seed": 1}, out, overwrite=True)
    assert m3["lineage"][-1]["run_key"] != m1["lineage"][-1]["run_key"]
