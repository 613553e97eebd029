"""``mixbench inspect DIR``: a readable summary of a store (or of a train run folder).

``describe(path)`` prints kind, dataset, classes, modalities with their columns, per split the
rows per modality, linked pairs and unpaired / zero-filled rows, the label histogram, the
rejects and accounting report (when the stage recorded one), auxiliary files and the lineage.
``verify_store(path)`` rechecks every checksum and the schema and returns the problems found.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.errors import StoreError

from .manifest import MANIFEST, sha256_file
from .shards import STRING_DTYPE, Column, Store

RUN_RECORD = "run.json"
MAX_ITEMS = 5


def _col(c: Column) -> str:
    shape = f"[{'×'.join(str(s) for s in c.shape)}]" if c.shape else ""
    return f"{c.dtype}{shape}"


def _short(h: Any, n: int = 12) -> str:
    return f"{str(h)[:n]}…" if h else "-"


def split_stats(store: Store, split: str) -> dict[str, Any]:
    """Per-modality rows, zero-filled rows, linked pairs, unpaired rows and label counts."""
    mods = store.modalities
    pairs: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"rows": {}, "zero_filled": {}, "labels": {}, "unpaired": {}}
    for m in mods:
        cols = ["label", "pair"] + (["present"] if store.has_column(m, "present") else [])
        t = store.load(split, m, cols)
        present = t["present"].astype(bool) if "present" in t else np.ones(len(t["pair"]), dtype=bool)
        out["rows"][m] = int(len(t["pair"]))
        out["zero_filled"][m] = int((~present).sum())
        pairs[m] = np.asarray(t["pair"])[present]
        lab = np.asarray(t["label"])[present]
        if store.multilabel:
            counts = lab.sum(axis=0).astype(np.int64) if len(lab) else np.zeros(store.n_classes, np.int64)
        else:
            counts = (np.bincount(lab.astype(np.int64), minlength=store.n_classes) if len(lab)
                      else np.zeros(store.n_classes, np.int64))
        out["labels"][m] = counts
    linked = None
    for m in mods:
        ids = set(pairs[m][pairs[m] >= 0].tolist())
        linked = ids if linked is None else linked & ids
    linked = linked or set()
    out["linked"] = len(linked)
    for m in mods:
        out["unpaired"][m] = int(sum(1 for p in pairs[m].tolist() if p < 0 or p not in linked))
    return out


def _histogram(counts: np.ndarray, classes: list[str], width: int = 100) -> list[str]:
    parts = [f"{name} {int(n)}" for name, n in zip(classes, counts)]
    lines, cur = [], ""
    for p in parts:
        if cur and len(cur) + len(p) + 2 > width:
            lines.append(cur)
            cur = p
        else:
            cur = f"{cur}, {p}" if cur else p
    if cur:
        lines.append(cur)
    return lines


def _rejects(info: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    rej = info.get("rejects")
    if isinstance(rej, Mapping):
        out.append(f"rejects    {rej.get('count', 0)} row(s)" + (f"; full list: {rej['file']}" if rej.get("file") else ""))
        for reason, n in (rej.get("by_reason") or {}).items():
            out.append(f"  {n:>7}  {reason}")
        items = rej.get("items") or []
        for item in items[:MAX_ITEMS]:
            file = f" {item['file']}" if item.get("file") else ""
            out.append(f"  e.g. [{item.get('split')}/{item.get('modality')}] id {item.get('id')} pair {item.get('pair')}"
                       f"{file}: {item.get('reason')}")
        if len(items) > MAX_ITEMS or rej.get("note"):
            out.append(f"  ({rej.get('note') or f'{len(items) - MAX_ITEMS} more in the manifest'})")
    acc = info.get("accounting")
    if isinstance(acc, Mapping):
        out.append("accounting split/modality: input = kept + rejected")
        for split, row in acc.items():
            for m, c in row.items():
                ok = "" if c.get("input") == c.get("kept", 0) + c.get("rejected", 0) else "  (does not add up!)"
                out.append(f"  {split}/{m}: {c.get('input')} = {c.get('kept')} + {c.get('rejected')}{ok}")
    return out


def _info_lines(info: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in info.items():
        if k in ("rejects", "accounting"):
            continue
        text = json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v
        if len(text) > 160:
            text = text[:157] + "..."
        out.append(f"  {k}: {text}")
    return out


def _lineage(lineage: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for i, e in enumerate(lineage, start=1):
        vers = e.get("versions") or {}
        vtext = ", ".join(f"{k} {v}" for k, v in vers.items())
        out.append(f"  {i}. {e.get('stage')}  config {_short(e.get('config_hash'))}  seed {e.get('seed')}  "
                   f"{e.get('started', '')} → {e.get('finished', '')}")
        out.append(f"     mixbench {e.get('mixbench_version')}; {vtext}")
        for name, rec in (e.get("inputs") or {}).items():
            if isinstance(rec, Mapping):
                sums = ", ".join(f"{k} {_short(v)}" for k, v in rec.items() if "sha256" in k)
                where = rec.get("path") or rec.get("root") or ""
                out.append(f"     input {name}: {where} {sums}".rstrip())
            else:
                out.append(f"     input {name}: {rec}")
        cfg = e.get("config")
        if cfg:
            text = json.dumps(cfg, ensure_ascii=False, sort_keys=True, default=str)
            out.append(f"     config {text if len(text) <= 300 else text[:297] + '...'}")
    return out


def describe_store(store: Store) -> str:
    man = store.manifest
    lines = [
        f"store      {store.path}",
        f"kind       {store.kind}",
        f"dataset    {store.dataset}",
        f"classes    {store.n_classes}: {', '.join(store.classes[:20])}{', ...' if store.n_classes > 20 else ''}",
        f"multilabel {'yes (multi-hot labels)' if store.multilabel else 'no'}",
        "modalities",
    ]
    for m, cols in store.schema.items():
        lines.append(f"  {m}: " + ", ".join(f"{c} {_col(col)}" for c, col in cols.items()))
        raw = [c for c, col in cols.items() if col.dtype == STRING_DTYPE and c != "id"]
        if raw:
            lines.append(f"    raw columns: {', '.join(raw)}")
    for split in store.splits:
        s = man["splits"][split]
        st = split_stats(store, split)
        lines.append(f"split {split} ({s['shards']} shard{'s' if s['shards'] != 1 else ''})")
        lines.append("  rows       " + ", ".join(f"{m} {n}" for m, n in st["rows"].items()))
        lines.append(f"  linked     {st['linked']} pair(s)")
        lines.append("  unpaired   " + ", ".join(f"{m} {n}" for m, n in st["unpaired"].items()))
        if any(st["zero_filled"].values()):
            lines.append("  zero-filled " + ", ".join(f"{m} {n}" for m, n in st["zero_filled"].items()))
        mods = store.modalities
        same = all(np.array_equal(st["labels"][mods[0]], st["labels"][m]) for m in mods[1:])
        if same:
            title = "  labels     " + ("(per-class counts) " if store.multilabel else "")
            hist = _histogram(st["labels"][mods[0]], store.classes)
            lines.append(title + hist[0] if hist else title)
            lines += [" " * 13 + h for h in hist[1:]]
        else:
            for m in mods:
                hist = _histogram(st["labels"][m], store.classes)
                lines.append(f"  labels {m}: " + (hist[0] if hist else ""))
                lines += [" " * 13 + h for h in hist[1:]]
    info = store.info
    rej = _rejects(info)
    if rej:
        lines += rej
    other = _info_lines(info)
    if other:
        lines.append("info")
        lines += other
    files = man.get("files") or []
    if files:
        lines.append("files")
        for f in files:
            lines.append(f"  {f['file']}  {f.get('role') or ''}  {f.get('bytes')} bytes  sha256 {_short(f.get('sha256'))}")
    lines.append("lineage")
    lines += _lineage(store.lineage)
    return "\n".join(lines)


def _flatten(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    if isinstance(obj, Mapping) and depth < 3:
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        return out
    if isinstance(obj, float):
        return [(prefix, f"{obj:.4f}")]
    if isinstance(obj, list) and len(obj) > 8:
        return [(prefix, f"[{len(obj)} items]")]
    text = json.dumps(obj, ensure_ascii=False, default=str) if not isinstance(obj, str) else obj
    return [(prefix, text if len(text) <= 120 else text[:117] + "...")]


def _methods_table(methods: Mapping[str, Any]) -> list[str]:
    """``methods[name][split][metric]`` as one line per method and split."""
    out = []
    for name, splits in methods.items():
        if not isinstance(splits, Mapping):
            continue
        for split, metrics in splits.items():
            if isinstance(metrics, Mapping):
                vals = "  ".join(f"{k} {v:.4f}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in metrics.items())
                out.append(f"  {name:<22} {split:<6} {vals}")
    return out


def describe_run(path: Path) -> str:
    """A train run folder: its ``run.json`` record and, when present, the results in ``metrics.json``."""
    try:
        rec = json.loads((path / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path / RUN_RECORD}: cannot read ({exc}).") from None
    lines = [f"run folder {path}"]
    if not isinstance(rec, Mapping):
        return "\n".join(lines + [f"  {rec!r}"])
    for key, value in _flatten(rec):
        lines.append(f"  {key}: {value}")
    metrics_path = path / "metrics.json"
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            metrics = None
            lines.append(f"metrics.json: cannot read ({exc})")
        if isinstance(metrics, Mapping):
            facts = {k: metrics[k] for k in ("dataset", "modalities", "seed", "epochs", "final_epoch", "device")
                     if k in metrics}
            wall = metrics.get("wall_time")
            if isinstance(wall, Mapping) and isinstance(wall.get("total"), (int, float)):
                facts["wall_time_s"] = round(float(wall["total"]), 1)
            if facts:
                lines.append("run        " + ", ".join(f"{k} {v}" for k, v in facts.items()))
            if isinstance(metrics.get("methods"), Mapping):
                lines.append("results")
                lines += _methods_table(metrics["methods"])
    others = sorted(p.name for p in path.iterdir() if p.name != RUN_RECORD)
    if others:
        lines.append("contents   " + ", ".join(others[:30]) + (", ..." if len(others) > 30 else ""))
    return "\n".join(lines)


def describe(path: str | os.PathLike[str]) -> str:
    """The summary ``mixbench inspect PATH`` prints (a store, or a train run folder)."""
    p = Path(path)
    if not (p / MANIFEST).exists() and (p / RUN_RECORD).exists():
        return describe_run(p)
    return describe_store(Store(p, verify=False))  # checksums: verify_store (--verify)


def _run_files(obj: Any) -> list[tuple[str, str]]:
    """(file, sha256) records anywhere in a run.json: ``{"file": ..., "sha256": ...}`` entries and
    ``"files": {name: sha256}`` maps."""
    out: list[tuple[str, str]] = []
    if isinstance(obj, Mapping):
        files = obj.get("files")
        if isinstance(files, Mapping):
            out += [(k, v) for k, v in files.items() if isinstance(v, str) and len(v) == 64]
        name = obj.get("file") or obj.get("path")
        if isinstance(name, str) and isinstance(obj.get("sha256"), str):
            out.append((name, obj["sha256"]))
        for v in obj.values():
            out += _run_files(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _run_files(v)
    return out


def verify_store(path: str | os.PathLike[str]) -> list[str]:
    """Recheck every checksum and the schema; returns the problems (empty: all good)."""
    p = Path(path)
    if not (p / MANIFEST).exists() and (p / RUN_RECORD).exists():
        try:
            rec = json.loads((p / RUN_RECORD).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            return [f"{p / RUN_RECORD}: cannot read ({exc})."]
        problems = []
        for name, digest in _run_files(rec):
            f = p / name
            if not f.exists():
                problems.append(f"{f}: listed in {RUN_RECORD} but missing.")
            elif sha256_file(f) != digest:
                problems.append(f"{f}: sha256 does not match {RUN_RECORD}.")
        return problems
    try:
        store = Store(p, verify=True)
    except StoreError as exc:
        return [str(exc)]
    problems = store.verify()
    problems += _schema_problems(store)
    return problems


def _schema_problems(store: Store) -> list[str]:
    """Column presence and dtypes of every shard, and the manifest's row totals."""
    import h5py

    problems: list[str] = []
    totals: dict[str, dict[str, int]] = {}
    for rec in store.manifest["shards"]:
        path = store.path / rec["file"]
        for m, n in rec["rows"].items():
            totals.setdefault(rec["split"], {}).setdefault(m, 0)
            totals[rec["split"]][m] += int(n)
        if not path.exists():
            continue  # reported by Store.verify
        try:
            with h5py.File(path, "r") as f:
                for m, cols in store.schema.items():
                    if m not in f:
                        problems.append(f"{rec['file']}: no group for modality '{m}'.")
                        continue
                    for c, col in cols.items():
                        if c not in f[m]:
                            problems.append(f"{rec['file']} [{m}.{c}]: column missing.")
                            continue
                        ds = f[m][c]
                        is_str = h5py.check_string_dtype(ds.dtype) is not None
                        if (col.dtype == STRING_DTYPE) != is_str or (not is_str and ds.dtype != np.dtype(col.dtype)):
                            problems.append(f"{rec['file']} [{m}.{c}]: dtype {ds.dtype}, manifest says {col.dtype}.")
                    extra = sorted(set(f[m]) - set(cols))
                    if extra:
                        problems.append(f"{rec['file']} [{m}]: columns not in the manifest: {extra}.")
        except OSError as exc:
            problems.append(f"{rec['file']}: cannot open ({exc}).")
    for split, s in store.manifest["splits"].items():
        for m, n in s["rows"].items():
            got = totals.get(split, {}).get(m, 0)
            if got != n:
                problems.append(f"manifest split '{split}' [{m}]: {n} rows, its shards hold {got}.")
    return problems
