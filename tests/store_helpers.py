"""Building test stores (imported by the test modules and conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixbench.store.manifest import lineage_entry, run_key
from mixbench.store.shards import Store, StoreWriter, feature_schema


def build_wiki_benchmark(paired: Path, out: Path, *, dim: int = 10, seed: int = 0) -> Path:
    """A kind="benchmark" store from the Wikipedia paired store, made the way the embed and unpair
    stages do for the default recipe: PCA(dim, whiten) per modality fitted on the training pairs, then
    each pair of each split kept as image-only (the first ceil(n/2) of a seeded permutation) or
    text-only (the rest), pair links broken (-1); written with the real StoreWriter."""
    src = Store(paired)
    tables = {s: {m: src.load(s, m) for m in src.modalities} for s in src.splits}
    proj = {}
    for m in src.modalities:
        x = tables["train"][m]["feat"].astype(np.float64)
        mu = x.mean(0)
        _, sv, vt = np.linalg.svd(x - mu, full_matrices=False)
        proj[m] = (mu, vt[:dim].T / (sv[:dim] / np.sqrt(len(x) - 1)))
    conf = {"dim": dim, "whiten": True, "ratio": 1.0, "mode": "drop", "seed": seed}
    inputs = {"store": src.input_record()}
    writer = StoreWriter(
        out, kind="benchmark", dataset=src.dataset, classes=src.classes,
        schema={m: feature_schema(dim) for m in src.modalities},
        lineage=src.lineage + [lineage_entry("test-benchmark", conf, inputs, seed=seed)],
        run_key=run_key("test-benchmark", conf, inputs),
    )
    for split in src.splits:
        n = len(tables[split][src.modalities[0]]["id"])
        perm = np.random.default_rng(seed).permutation(n)
        first = np.zeros(n, dtype=bool)
        first[perm[: (n + 1) // 2]] = True
        shard = {}
        for i, m in enumerate(src.modalities):
            keep = first if i == 0 else ~first
            t = tables[split][m]
            mu, p = proj[m]
            shard[m] = {"id": t["id"][keep], "label": t["label"][keep], "pair": np.full(int(keep.sum()), -1),
                        "feat": ((t["feat"][keep] - mu) @ p).astype(np.float32)}
        writer.write_shard(split, 0, shard)
    writer.finish({"test_fixture": "PCA whiten per modality + random halves"})
    return out
