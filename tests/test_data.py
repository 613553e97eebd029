"""BenchmarkData: what DM2C loads from a store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixbench.store.manifest import lineage_entry
from mixbench.store.shards import StoreWriter, feature_schema
from train.data import BenchmarkData


def _store(path: Path, splits: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    schema = {m: feature_schema(4) for m in ("image", "text")}
    writer = StoreWriter(path, kind="benchmark", dataset="toy", classes=["a", "b"], schema=schema,
                         lineage=[lineage_entry("unpair", {}, {})], run_key="k")
    for split, n in splits.items():
        tables = {}
        for m in ("image", "text"):
            tables[m] = {"id": [f"{split}-{m}-{i}" for i in range(n)], "label": np.arange(n) % 2,
                         "pair": np.full(n, -1), "feat": rng.standard_normal((n, 4))}
        writer.write_shard(split, 0, tables)
    writer.finish()
    return path


def test_loads_train_and_test_only(tmp_path: Path) -> None:
    """A retrieval `database` split (DCMH/DADH adapters) is not loaded onto the device."""
    store = _store(tmp_path / "s", {"train": 6, "test": 4, "database": 50})
    data = BenchmarkData.from_store(store)
    assert set(data.splits) == {"train", "test"}
    assert data.splits["train"].n() == 12 and data.splits["test"].n("image") == 4
    assert set(BenchmarkData.from_store(store, splits=("database",)).splits) == {"database"}
