"""The store: a directory of HDF5 shards plus ``manifest.json`` (README: the store format).

A store holds, per split, one table per modality. Every table has the columns ``id`` (str),
``label`` (int64, or uint8 multi-hot for multi-label sets) and ``pair`` (int64 pair id linking
the two halves of an original pair; -1 once unpaired), and then either ``feat`` (float32/float16,
N×D) or raw references (``path``, ``text``), plus optional columns such as ``present`` (uint8,
0 for a zero-filled row in ``zero`` unpairing mode).

Shards are ``{split}-{k:05d}.h5``; each holds one HDF5 group per modality. Writes are atomic:
a shard is written under a temp name and renamed when complete, then a progress marker
(``.progress/<shard>.json``, with the shard's sha256 and the run key) records it as finished.
An interrupted stage, started again with the same run key, keeps the finished shards and
redoes the rest. ``manifest.json`` is written last, atomically; a store without it is not
complete and no reader accepts it.

Readers check every shard's sha256 against the manifest before using it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from mixbench.errors import DataError, StoreError, WriteError

from .manifest import (
    MANIFEST,
    MANIFEST_CHECKSUM,
    SCHEMA,
    SCHEMA_VERSION,
    atomic_write_json,
    now,
    seal,
    seal_ok,
    sha256_file,
)

log = logging.getLogger(__name__)

SPLIT_ORDER = ("train", "val", "test")
REQUIRED_COLUMNS = ("id", "label", "pair")
STRING_DTYPE = "str"
FEAT_DTYPES = ("float32", "float16")
PROGRESS_DIR = ".progress"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.h5"


def split_sort_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


@dataclass(frozen=True)
class Column:
    """Schema of one column: dtype name (numpy name or ``"str"``) and per-row shape."""

    dtype: str
    shape: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Column:
        return cls(dtype=str(d["dtype"]), shape=tuple(int(s) for s in d.get("shape", ())))


def feature_schema(dim: int, dtype: str = "float32", *, n_labels: int | None = None, extra: Mapping[str, Column] | None = None) -> dict[str, Column]:
    """Columns of a feature table: id, label, pair, feat (and ``extra``).

    ``n_labels`` set means multi-hot labels (uint8, N×n_labels)."""
    cols = base_schema(n_labels=n_labels)
    cols["feat"] = Column(dtype, (int(dim),))
    cols.update(extra or {})
    return cols


def base_schema(*, n_labels: int | None = None) -> dict[str, Column]:
    label = Column("uint8", (n_labels,)) if n_labels else Column("int64")
    return {"id": Column(STRING_DTYPE), "label": label, "pair": Column("int64")}


Tables = dict[str, dict[str, np.ndarray]]


def _normalise_table(
    modality: str, table: Mapping[str, Any], schema: Mapping[str, Column], where: str
) -> dict[str, np.ndarray]:
    missing = [c for c in schema if c not in table]
    unknown = [c for c in table if c not in schema]
    if missing or unknown:
        raise StoreError(
            f"{where} [{modality}]: columns do not match the store schema "
            f"(missing: {missing or 'none'}, unknown: {unknown or 'none'}); schema: {list(schema)}."
        )
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, col in schema.items():
        value = table[name]
        if col.dtype == STRING_DTYPE:
            arr = np.asarray(value, dtype=object)
            if arr.ndim != 1:
                raise StoreError(f"{where} [{modality}.{name}]: expected a 1-D column of strings, got shape {arr.shape}.")
            arr = np.array([str(x) for x in arr], dtype=object)
        else:
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            if arr.ndim != 1 + len(col.shape) or tuple(arr.shape[1:]) != col.shape:
                raise StoreError(
                    f"{where} [{modality}.{name}]: shape {arr.shape} does not match the schema "
                    f"(rows × {list(col.shape)})."
                )
            if np.issubdtype(np.dtype(col.dtype), np.integer) and not np.issubdtype(arr.dtype, np.integer):
                whole = np.issubdtype(arr.dtype, np.number) and bool(np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1) == 0))
                if arr.size and not whole:
                    raise DataError(f"{where} [{modality}.{name}]: expected integers, got dtype {arr.dtype}.")
            arr = arr.astype(col.dtype, copy=False)
            if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
                bad = int(np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))[0])
                rid = table["id"][bad] if "id" in table else bad
                raise DataError(
                    f"{where} [{modality}.{name}]: row {bad} (id {rid!s}) holds NaN or inf; "
                    "clean the input features (or drop that row at prep) and rerun."
                )
        if n is None:
            n = len(arr)
        elif len(arr) != n:
            raise StoreError(f"{where} [{modality}]: column '{name}' has {len(arr)} rows, others have {n}.")
        out[name] = arr
    ids = out["id"]
    if len(set(ids.tolist())) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise DataError(f"{where} [{modality}.id]: id {dup!r} appears more than once; ids must be unique.")
    return out


def write_shard_file(path: Path, split: str, index: int, tables: Tables, schema: Mapping[str, Mapping[str, Column]]) -> None:
    """Write one shard to ``path`` (caller handles temp name + rename)."""
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = SCHEMA
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["split"] = split
        f.attrs["index"] = index
        for modality, cols in schema.items():
            g = f.create_group(modality)
            table = tables[modality]
            for name, col in cols.items():
                arr = table[name]
                if col.dtype == STRING_DTYPE:
                    g.create_dataset(name, data=arr.astype(object), dtype=str_dt)
                else:
                    g.create_dataset(name, data=arr)


T = TypeVar("T")


def _replace_when_written(final: Path, write: Callable[[Path], T]) -> T:
    """Run ``write`` on a temp name beside ``final``, then rename it to ``final`` (atomic); the temp
    file is removed on any failure, and a file-system error becomes one :class:`WriteError` line."""
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        result = write(tmp)
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError.from_os(exc, final) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return result


class StoreWriter:
    """Writes a store shard by shard; ``finish()`` writes the manifest (last, atomically).

    Parameters
    ----------
    path: the store directory.
    kind: ``"paired"``, ``"features"`` or ``"benchmark"``.
    dataset: dataset name; ``classes`` the class names (label i ↔ ``classes[i]``).
    schema: ``{modality: {column: Column}}``.
    lineage: the lineage list of the input store plus this stage's entry (last).
    run_key: identifies this run (config + input checksums); finished shards of an
        interrupted run with the same key are kept, others are removed.
    overwrite: replace a complete store at ``path``; without it a complete store is an error.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        kind: str,
        dataset: str,
        classes: Sequence[str],
        schema: Mapping[str, Mapping[str, Column]],
        lineage: list[dict[str, Any]],
        run_key: str,
        multilabel: bool = False,
        overwrite: bool = False,
        rank: int = 0,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.dataset = dataset
        self.classes = [str(c) for c in classes]
        self.schema = {m: dict(cols) for m, cols in schema.items()}
        for m, cols in self.schema.items():
            for c in REQUIRED_COLUMNS:
                if c not in cols:
                    raise StoreError(f"schema of modality '{m}' lacks the required column '{c}'.")
        self.lineage = lineage
        self.run_key = run_key
        self.multilabel = multilabel
        self.rank = rank
        self.files: dict[str, dict[str, Any]] = {}
        manifest = self.path / MANIFEST
        if manifest.exists():
            if not overwrite:
                raise StoreError(
                    f"{self.path} already holds a complete store; pass overwrite=True (CLI: --overwrite) "
                    "to replace it, or choose another output folder."
                )
            if rank == 0:
                clear_store(self.path)
        self.progress = self.path / PROGRESS_DIR
        self.progress.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            self._drop_stale()

    # -- resume ---------------------------------------------------------------------------
    def _drop_stale(self) -> None:
        """Remove temp files and shards that are not recorded as finished by this run key."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        for tmp in self.path.glob("*.h5.tmp-*"):
            tmp.unlink(missing_ok=True)
        kept = 0
        for shard in sorted(self.path.glob("*.h5")):
            rec = self._marker(shard.name)
            if rec is not None and rec.get("run_key") == self.run_key and rec.get("sha256") == sha256_file(shard):
                kept += 1
                continue
            log.info("removing unfinished or stale shard %s", shard)
            shard.unlink()
            (self.progress / f"{shard.name}.json").unlink(missing_ok=True)
        for marker in self.progress.glob("*.json"):
            if not (self.path / marker.name[: -len(".json")]).exists():
                marker.unlink()
        if kept:
            log.info("resuming %s: %d finished shard(s) kept", self.path, kept)

    def _marker(self, name: str) -> dict[str, Any] | None:
        p = self.progress / f"{name}.json"
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def shard_done(self, split: str, index: int) -> bool:
        """True when this shard was finished by an earlier (interrupted) run with the same key."""
        name = shard_name(split, index)
        rec = self._marker(name)
        return rec is not None and rec.get("run_key") == self.run_key and (self.path / name).exists()

    # -- writing --------------------------------------------------------------------------
    def write_shard(self, split: str, index: int, tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Validate and write one shard atomically; returns its record (file, rows, sha256)."""
        name = shard_name(split, index)
        where = f"{self.path / name}"
        missing = [m for m in self.schema if m not in tables]
        if missing:
            raise StoreError(f"{where}: no table for modality {missing}; write an empty table instead.")
        norm = {m: _normalise_table(m, tables[m], self.schema[m], where) for m in self.schema}
        final = self.path / name

        def write(tmp: Path) -> str:
            write_shard_file(tmp, split, index, norm, self.schema)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            return sha256_file(tmp)

        digest = _replace_when_written(final, write)
        rec = {
            "file": name,
            "split": split,
            "index": index,
            "rows": {m: int(len(norm[m]["id"])) for m in self.schema},
            "bytes": final.stat().st_size,
            "sha256": digest,
            "run_key": self.run_key,
        }
        atomic_write_json(self.progress / f"{name}.json", rec)
        return rec

    def add_file(self, name: str, write: Any, *, role: str = "") -> dict[str, Any]:
        """Write an auxiliary file atomically. ``write`` is bytes, a str, or ``fn(tmp_path)``."""
        final = self.path / name
        final.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(write, (bytes, str)):
            data = write.encode("utf-8") if isinstance(write, str) else write
            _replace_when_written(final, lambda tmp: tmp.write_bytes(data))
        else:
            _replace_when_written(final, write)
        rec = {"file": name, "role": role, "bytes": final.stat().st_size, "sha256": sha256_file(final)}
        self.files[name] = rec
        return rec

    def finish(self, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Collect every finished shard (from all ranks), write ``manifest.json``; returns it."""
        shards = []
        for marker in sorted(self.progress.glob("*.h5.json")):
            rec = json.loads(marker.read_text())
            if rec.get("run_key") != self.run_key:
                raise StoreError(f"{marker}: shard from another run (run key differs); rerun the stage.")
            rec = {k: v for k, v in rec.items() if k != "run_key"}
            shards.append(rec)
        shards.sort(key=lambda r: (split_sort_key(r["split"]), r["index"]))
        splits: dict[str, dict[str, Any]] = {}
        for rec in shards:
            s = splits.setdefault(rec["split"], {"shards": 0, "rows": {m: 0 for m in self.schema}})
            s["shards"] += 1
            for m, n in rec["rows"].items():
                s["rows"][m] += n
        for split, s in splits.items():
            idx = sorted(r["index"] for r in shards if r["split"] == split)
            if idx != list(range(len(idx))):
                raise StoreError(f"{self.path}: shards of split '{split}' are not contiguous: {idx}.")
        lineage = [dict(e) for e in self.lineage]
        if lineage:
            lineage[-1]["run_key"] = self.run_key
            if lineage[-1].get("finished") is None:
                lineage[-1]["finished"] = now()
        manifest = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "dataset": self.dataset,
            "classes": self.classes,
            "multilabel": self.multilabel,
            "modalities": {m: {c: col.to_dict() for c, col in cols.items()} for m, cols in self.schema.items()},
            "splits": {k: splits[k] for k in sorted(splits, key=split_sort_key)},
            "shards": shards,
            "files": [self.files[k] for k in sorted(self.files)],
            "lineage": lineage,
            "info": dict(info or {}),
        }
        manifest = seal(manifest)
        atomic_write_json(self.path / MANIFEST, manifest)
        shutil.rmtree(self.progress, ignore_errors=True)
        return manifest


def clear_store(path: Path) -> None:
    """Remove a store's own files (manifest, shards, markers, listed files); nothing else."""
    manifest = path / MANIFEST
    listed: list[str] = []
    if manifest.exists():
        try:
            listed = [f["file"] for f in json.loads(manifest.read_text()).get("files", [])]
        except (OSError, json.JSONDecodeError, KeyError):
            listed = []
        manifest.unlink()
    for p in path.glob("*.h5"):
        p.unlink()
    for name in listed:
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / PROGRESS_DIR, ignore_errors=True)


class Store:
    """Read a complete store. Every shard's sha256 is checked against the manifest before use.

    >>> store = Store("out/wikipedia/prep")                 # doctest: +SKIP
    >>> store.load("train", "image")["feat"].shape         # doctest: +SKIP
    (2173, 128)
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such store folder; run the stage that writes it first.")
        if not mpath.exists():
            raise StoreError(
                f"{self.path} is not a complete store (no {MANIFEST}): the stage writing it did not "
                "finish. Rerun that stage; it resumes from its finished shards."
            )
        raw = mpath.read_bytes()
        self.manifest: dict[str, Any] = parse_manifest(raw, mpath)
        import hashlib

        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        if self.manifest.get("schema") != SCHEMA:
            raise StoreError(f"{mpath}: schema {self.manifest.get('schema')!r} is not {SCHEMA!r}; not a mixbench store.")
        if self.manifest.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"{mpath}: schema version {self.manifest.get('schema_version')} is not supported "
                f"(this mixbench reads version {SCHEMA_VERSION}); rebuild the store."
            )
        self.verify_checksums = verify
        self._verified: set[str] = set()
        self.schema = {
            m: {c: Column.from_dict(spec) for c, spec in cols.items()} for m, cols in self.manifest["modalities"].items()
        }

    # -- metadata -------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def n_classes(self) -> int:
        return len(self.manifest["classes"])

    @property
    def multilabel(self) -> bool:
        return bool(self.manifest.get("multilabel", False))

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["modalities"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    @property
    def lineage(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("lineage", []))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.manifest.get("info", {}))

    def input_record(self) -> dict[str, Any]:
        """How a downstream stage records this store in its lineage ``inputs``."""
        return {"path": str(self.path), "manifest_sha256": self.manifest_sha256, "dataset": self.dataset}

    def shards(self, split: str) -> list[dict[str, Any]]:
        if split not in self.manifest["splits"]:
            raise StoreError(f"{self.path}: no split '{split}'; splits: {self.splits}.")
        return [s for s in self.manifest["shards"] if s["split"] == split]

    def rows(self, split: str, modality: str) -> int:
        return int(self.manifest["splits"][split]["rows"][modality])

    def has_column(self, modality: str, column: str) -> bool:
        return column in self.schema[modality]

    def feat_dim(self, modality: str) -> int:
        col = self.schema[modality].get("feat")
        if col is None:
            raise StoreError(f"{self.path}: modality '{modality}' has no 'feat' column (a raw store?); run embed first.")
        return int(col.shape[0])

    def file(self, name: str) -> Path:
        """Path of an auxiliary file listed in the manifest, after checking its sha256."""
        rec = next((f for f in self.manifest.get("files", []) if f["file"] == name), None)
        if rec is None:
            raise StoreError(f"{self.path}: no file '{name}' in the manifest.")
        self._check(self.path / name, rec["sha256"])
        return self.path / name

    # -- checking -------------------------------------------------------------------------
    def _check(self, path: Path, expected: str) -> None:
        if not self.verify_checksums or path.name in self._verified:
            return
        if not path.exists():
            raise StoreError(f"{path}: listed in the manifest but missing; the store is damaged, rerun its stage with --overwrite.")
        got = sha256_file(path)
        if got != expected:
            raise StoreError(
                f"{path}: sha256 {got[:16]}… does not match the manifest ({expected[:16]}…); the file was "
                "changed or damaged after the store was written. Rerun the stage that wrote this store "
                "with --overwrite (CLI: mixbench run RECIPE --force STAGE)."
            )
        self._verified.add(path.name)

    def verify(self) -> list[str]:
        """Re-check every checksum and the schema of every shard; returns the problems found."""
        problems: list[str] = []
        saved, self.verify_checksums = self.verify_checksums, True
        self._verified.clear()
        try:
            for rec in self.manifest["shards"]:
                try:
                    self._check(self.path / rec["file"], rec["sha256"])
                    tables = self.read_shard(rec)
                    for m, cols in self.schema.items():
                        n = rec["rows"][m]
                        for c, col in cols.items():
                            arr = tables[m][c]
                            if len(arr) != n:
                                problems.append(f"{rec['file']} [{m}.{c}]: {len(arr)} rows, manifest says {n}.")
                            if col.dtype != STRING_DTYPE and tuple(arr.shape[1:]) != col.shape:
                                problems.append(f"{rec['file']} [{m}.{c}]: shape {arr.shape[1:]}, manifest says {col.shape}.")
                except (StoreError, OSError, KeyError) as exc:
                    problems.append(str(exc))
            for rec in self.manifest.get("files", []):
                try:
                    self._check(self.path / rec["file"], rec["sha256"])
                except StoreError as exc:
                    problems.append(str(exc))
        finally:
            self.verify_checksums = saved
        return problems

    # -- reading --------------------------------------------------------------------------
    def read_shard(
        self, rec: Mapping[str, Any], modalities: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> Tables:
        path = self.path / rec["file"]
        self._check(path, rec["sha256"])
        out: Tables = {}
        try:
            with h5py.File(path, "r") as f:
                for m in modalities or self.modalities:
                    g = f[m]
                    cols = [c for c in (columns or self.schema[m]) if c in self.schema[m]]
                    table: dict[str, np.ndarray] = {}
                    for c in cols:
                        if self.schema[m][c].dtype == STRING_DTYPE:
                            table[c] = np.asarray(g[c].asstr()[...], dtype=object)
                        else:
                            table[c] = g[c][...]
                    out[m] = table
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the shard ({exc}); rerun its stage with --overwrite.") from None
        return out

    def iter_shards(
        self, split: str, modalities: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[tuple[dict[str, Any], Tables]]:
        """Stream a split shard by shard (bounded memory): yields ``(record, tables)``."""
        for rec in self.shards(split):
            yield rec, self.read_shard(rec, modalities, columns)

    def load(
        self, split: str, modality: str, columns: Sequence[str] | None = None, device: Any = None
    ) -> dict[str, Any]:
        """Load a whole split of one modality. With ``device`` set, numeric columns become torch
        tensors on that device (float16 features are kept as stored; cast as needed)."""
        parts: dict[str, list[np.ndarray]] = {}
        cols = list(columns or self.schema[modality])
        for c in cols:
            if c not in self.schema[modality]:
                raise StoreError(f"{self.path}: modality '{modality}' has no column '{c}'; columns: {list(self.schema[modality])}.")
        for _, tables in self.iter_shards(split, [modality], cols):
            for c, arr in tables[modality].items():
                parts.setdefault(c, []).append(arr)
        out: dict[str, Any] = {}
        for c in cols:
            col = self.schema[modality][c]
            chunks = parts.get(c, [])
            if chunks:
                arr = np.concatenate(chunks)
            elif col.dtype == STRING_DTYPE:
                arr = np.empty(0, dtype=object)
            else:
                arr = np.empty((0, *col.shape), dtype=col.dtype)
            if device is not None and col.dtype != STRING_DTYPE:
                import torch

                arr = torch.from_numpy(np.ascontiguousarray(arr)).to(device)
            out[c] = arr
        return out


def parse_manifest(raw: bytes, mpath: Path) -> dict[str, Any]:
    """The manifest in ``raw`` (read from ``mpath``), after checking its own checksum."""
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{mpath}: not valid JSON ({exc}); the store is damaged, rerun the stage with --overwrite.") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{mpath}: not a mixbench manifest (a JSON {type(manifest).__name__}); rerun the stage with --overwrite.")
    ok = seal_ok(manifest)
    if ok is None and manifest.get("schema") == SCHEMA:
        raise StoreError(
            f"{mpath}: no checksum of its own ('{MANIFEST_CHECKSUM}'): written by an older mixbench or edited by "
            "hand; rerun the stage that wrote it with --overwrite (CLI: mixbench run RECIPE --force STAGE)."
        )
    if ok is False:
        raise StoreError(
            f"{mpath}: the manifest does not match its own checksum: it was edited after the stage wrote it "
            "(row counts, class names...); rerun that stage with --overwrite (CLI: mixbench run RECIPE --force "
            "STAGE) instead of editing the manifest."
        )
    return manifest


def read_manifest(mpath: Path) -> dict[str, Any]:
    """Read and check ``manifest.json`` (see :func:`parse_manifest`)."""
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise StoreError(f"{mpath}: cannot read ({exc.strerror or exc}).") from None
    return parse_manifest(raw, mpath)


def reusable(path: str | os.PathLike[str], run_key: str) -> dict[str, Any] | None:
    """The manifest of a complete store at ``path`` written by a run with ``run_key`` whose manifest
    matches its own checksum, else None. (Stages use :func:`mixbench.stagekit.reusable_store`, which
    also re-hashes the files the manifest lists.)"""
    mpath = Path(path) / MANIFEST
    if not mpath.exists():
        return None
    try:
        manifest = read_manifest(mpath)
    except StoreError as exc:
        log.warning("%s; not reused", exc)
        return None
    lineage = manifest.get("lineage") or [{}]
    return manifest if lineage[-1].get("run_key") == run_key else None
