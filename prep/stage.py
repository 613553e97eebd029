"""The prep stage: adapter → validated :class:`PairedData` → paired store."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mixbench.errors import DataError
from mixbench.stagekit import OutputLock, reusable_store
from mixbench.store.manifest import lineage_entry, run_key, sha256_file
from mixbench.store.shards import STRING_DTYPE, Column, StoreWriter, base_schema

from .adapters import AdapterConfig, PairedData, get_adapter, make_config
from .validate import REJECTS_FILE, check_classes, check_reject_fraction

log = logging.getLogger(__name__)


def input_record(files: Mapping[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in files.items():
        if not path.exists():
            raise DataError(f"{path}: missing (input '{name}'); check the [prep] paths.")
        out[name] = {"path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def _label_source(cfg: AdapterConfig, base: Path) -> str:
    """Where the labels were read from, for messages: the ``labels`` key where the adapter has one."""
    labels = getattr(cfg, "labels", None)
    if isinstance(labels, str) and labels:
        return str(base / labels)
    root = getattr(cfg, "root", None)
    return f"[prep] adapter {cfg.adapter!r}" + (f" ({base / str(root)})" if root else "")


def schema_of(data: PairedData) -> dict[str, dict[str, Column]]:
    """Store schema inferred from the first split's tables (all splits must agree)."""
    n_labels = len(data.classes) if data.multilabel else None
    schema: dict[str, dict[str, Column]] = {}
    for split, sd in data.splits.items():
        for m, table in sd.tables.items():
            cols = base_schema(n_labels=n_labels)
            for name, arr in table.items():
                if name in ("id", "label", "pair"):
                    continue
                if name in ("path", "text") or getattr(arr, "dtype", None) is None or np.asarray(arr[:0]).dtype == object:
                    cols[name] = Column(STRING_DTYPE)
                else:
                    cols[name] = Column(np.dtype(arr.dtype).name, tuple(int(s) for s in arr.shape[1:]))
            if m in schema and schema[m] != cols:
                raise DataError(f"split '{split}' modality '{m}': columns {cols} differ from another split's {schema[m]}.")
            schema[m] = cols
    return schema


def prepare(
    config: AdapterConfig | Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] = ".",
    overwrite: bool = False,
    reuse: bool = True,
) -> dict[str, Any]:
    """Read a raw paired dataset with its adapter and write a paired store to ``out``.

    Returns the manifest. An identical earlier run (same config, same input checksums) is
    reused (``reuse=True``); a different complete store at ``out`` needs ``overwrite=True``. The
    output folder is locked while the stage runs (:class:`mixbench.stagekit.OutputLock`).
    """
    with OutputLock(out, "prep"):
        return _prepare(config, out, base_dir=base_dir, overwrite=overwrite, reuse=reuse)


def _prepare(
    config: AdapterConfig | Mapping[str, Any],
    out: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str],
    overwrite: bool,
    reuse: bool,
) -> dict[str, Any]:
    cfg = config if isinstance(config, AdapterConfig) else make_config(config)
    adapter = get_adapter(cfg.adapter)
    base = Path(base_dir)
    inputs = input_record(adapter.input_files(cfg, base))
    if adapter.fingerprint is not None:
        inputs.update(adapter.fingerprint(cfg, base))
    conf = cfg.to_dict()
    key = run_key("prep", conf, inputs)
    if reuse and (done := reusable_store(out, key, "prep")) is not None:
        log.info("prep: %s is complete with the same config and inputs; reusing it", out)
        return {**done, "reused": True}
    entry = lineage_entry("prep", conf, inputs, seed=getattr(cfg, "seed", None))
    data = adapter.read(cfg, base)
    check_classes(data, _label_source(cfg, base))
    limit = getattr(cfg, "max_reject_fraction", None)
    if limit is not None and "rejects" in data.info:
        check_reject_fraction(data.info["rejects"], data.info.get("accounting", {}), limit, out,
                              str(data.files.get(REJECTS_FILE, "")))
    schema = schema_of(data)
    writer = StoreWriter(
        out, kind=data.kind, dataset=data.dataset, classes=data.classes, schema=schema,
        lineage=[entry], run_key=key, multilabel=data.multilabel, overwrite=overwrite,
    )
    for split, sd in data.splits.items():
        # Paired data: row i of every table is half of pair i (labels/pair shared). Benchmark
        # data carries its own label/pair columns per table, and tables may differ in length.
        n = max(sd.n_rows(m) for m in sd.tables)
        n_shards = max(1, math.ceil(n / cfg.shard_rows))
        for k in tqdm(range(n_shards), desc=f"prep {split}", unit="shard", disable=n_shards < 4):
            if writer.shard_done(split, k):
                continue
            a, b = k * cfg.shard_rows, (k + 1) * cfg.shard_rows
            tables = {}
            for m, table in sd.tables.items():
                t = {name: np.asarray(arr[a:b]) if name not in ("id", "path", "text") else np.asarray(arr[a:b], dtype=object)
                     for name, arr in table.items()}
                t.setdefault("label", sd.labels[a:b])
                t.setdefault("pair", sd.pair[a:b])
                tables[m] = t
            writer.write_shard(split, k, tables)
    for name, content in data.files.items():
        writer.add_file(name, content, role="rejects" if name == REJECTS_FILE else "aux")
    info = dict(data.info)
    if data.kind == "paired":
        info["pairs"] = {split: len(sd) for split, sd in data.splits.items()}
    manifest = writer.finish(info)
    log.info("prep: wrote %s (%s)", out, "; ".join(
        f"{s}: " + ", ".join(f"{m} {sd.n_rows(m)}" for m in sd.tables) for s, sd in data.splits.items()))
    return manifest
