"""Validation shared by the adapters (and by the encoders): the rejects report, seeded stratified
splits, split values from a file, UTF-8 checks and SHA256SUMS checks.

The **rejects contract** (written by prep for raw pairs, extended by embed for decode errors,
printed by ``mixbench inspect``)::

    info["rejects"] = {"count": n, "by_reason": {reason: n}, "items": [{"split", "modality", "id",
                       "pair", "file", "reason"}, ...], "items_total": n, "note": "..."}
    info["accounting"] = {split: {modality: {"input": n, "kept": k, "rejected": r}}}

``input == kept + rejected`` always. ``items`` is capped (``ITEMS_CAP``); the full list is the
auxiliary file ``rejects.jsonl``. When one half of a pair is rejected, the other half is rejected
too, with reason ``"partner-rejected: <reason>"``: pairs stay whole in a paired store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.errors import DataError

from .adapters.base import SplitData

log = logging.getLogger(__name__)

ITEMS_CAP = 10_000
REJECTS_FILE = "rejects.jsonl"
REPORT_ON_FAILURE = "rejects-report.jsonl"
SPLIT_VALUES = ("train", "val", "test")
PARTNER = "partner-rejected: "


class Rejects:
    """Collects rejected rows of one stage run and the per-split, per-modality accounting.

    >>> r = Rejects()
    >>> r.count_input("train", ["image", "text"])
    >>> r.reject_pair("train", 7, {"image": ("a", "img/a.jpg", "missing file"), "text": ("a", "", None)})
    True
    >>> r.summary()["by_reason"]
    {'missing file': 1, 'partner-rejected: missing file': 1}
    """

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._input: dict[str, dict[str, int]] = {}
        self._rejected: dict[str, dict[str, int]] = {}

    # -- recording ----------------------------------------------------------------------------
    def count_input(self, split: str, modalities: Iterable[str], n: int = 1) -> None:
        """Count ``n`` input rows of ``split`` for each modality."""
        row = self._input.setdefault(split, {})
        for m in modalities:
            row[m] = row.get(m, 0) + n

    def add(self, *, split: str, modality: str, id: str, pair: int, file: str, reason: str) -> None:
        """Record one rejected row (its input must have been counted with :meth:`count_input`)."""
        self.items.append(
            {"split": split, "modality": modality, "id": str(id), "pair": int(pair), "file": str(file), "reason": reason}
        )
        row = self._rejected.setdefault(split, {})
        row[modality] = row.get(modality, 0) + 1

    def reject_pair(self, split: str, pair: int, halves: Mapping[str, tuple[str, str, str | None]]) -> bool:
        """Apply the partner rule to one pair: ``halves[modality] = (id, file, reason or None)``.

        If any half has a reason, every half is rejected; halves without their own reason get
        ``"partner-rejected: <first reason>"``. Returns True when the pair was rejected."""
        reasons = [r for (_, _, r) in halves.values() if r]
        if not reasons:
            return False
        for m, (rid, file, reason) in halves.items():
            self.add(split=split, modality=m, id=rid, pair=pair, file=file, reason=reason or PARTNER + reasons[0])
        return True

    # -- reporting ----------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self.items)

    def by_reason(self) -> dict[str, int]:
        counts = Counter(item["reason"] for item in self.items)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def accounting(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for split, row in self._input.items():
            out[split] = {}
            for m, n in row.items():
                r = self._rejected.get(split, {}).get(m, 0)
                out[split][m] = {"input": n, "kept": n - r, "rejected": r}
        return out

    def input_rows(self) -> int:
        return sum(n for row in self._input.values() for n in row.values())

    def fraction(self) -> float:
        """Rejected rows / input rows over every split and modality (0 with no input)."""
        total = self.input_rows()
        return self.count / total if total else 0.0

    def summary(self, cap: int = ITEMS_CAP) -> dict[str, Any]:
        out: dict[str, Any] = {
            "count": self.count,
            "by_reason": self.by_reason(),
            "items": self.items[:cap],
            "items_total": self.count,
            "file": REJECTS_FILE,
        }
        if self.count > cap:
            out["note"] = f"items capped at {cap} of {self.count}; the full list is {REJECTS_FILE}."
        return out

    def jsonl(self) -> str:
        return "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in self.items)

    def info(self, cap: int = ITEMS_CAP) -> dict[str, Any]:
        """The two manifest ``info`` keys of the contract."""
        return {"rejects": self.summary(cap), "accounting": self.accounting()}


def check_reject_fraction(rejects: Mapping[str, Any], accounting: Mapping[str, Any], limit: float,
                          report_dir: str | os.PathLike[str], jsonl: str) -> None:
    """Fail (DataError) when the rejected fraction of input rows exceeds ``limit``.

    The full report is written first to ``report_dir/rejects-report.jsonl`` (outside any store
    manifest) so the message can point at it."""
    total = sum(int(c["input"]) for row in accounting.values() for c in row.values())
    count = int(rejects.get("count", 0))
    frac = count / total if total else 0.0
    if frac <= limit:
        return
    from mixbench.store.manifest import atomic_write_text

    report = Path(report_dir) / REPORT_ON_FAILURE
    atomic_write_text(report, jsonl)
    reasons = ", ".join(f"{r} {n}" for r, n in list(rejects.get("by_reason", {}).items())[:5])
    raise DataError(
        f"{count} of {total} input rows rejected ({frac:.1%}), above max_reject_fraction = {limit:g}; "
        f"by reason: {reasons}. Report: {report}. Fix the inputs, or raise [prep] max_reject_fraction "
        "to accept the loss."
    )


# -- text -----------------------------------------------------------------------------------
def decode_utf8(raw: bytes) -> str:
    """Decode bytes keeping invalid sequences as lone surrogates (see :func:`utf8_error`)."""
    return raw.decode("utf-8", errors="surrogateescape")


def utf8_error(text: str) -> str | None:
    """If ``text`` came from :func:`decode_utf8` and held invalid UTF-8, where; else None."""
    for i, ch in enumerate(text):
        if "\udc80" <= ch <= "\udcff":
            return f"byte 0x{ord(ch) - 0xDC00:02x} at character {i}"
    return None


# -- splits ---------------------------------------------------------------------------------
def _strata(labels: np.ndarray) -> np.ndarray:
    """One stratum per row: the class, or for multi-hot labels the first positive class (-1: none)."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    has = labels.any(axis=1)
    return np.where(has, labels.argmax(axis=1), -1).astype(np.int64)


def stratified_split(labels: np.ndarray, *, test_fraction: float, val_fraction: float = 0.0,
                     rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A seeded split with exact per-class counts.

    For each class (ascending) with ``n`` rows, a permutation drawn from ``rng`` puts
    ``round(n * test_fraction)`` rows in test, ``round(n * val_fraction)`` in val and the rest in
    train (halves round up). Returns ``({split: sorted row indices}, record)``; the record holds
    the method, fractions and per-class counts (for the manifest). Multi-hot labels are
    stratified by their first positive class."""
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise DataError(
            f"test_fraction = {test_fraction:g}, val_fraction = {val_fraction:g}: each must be in [0, 1) "
            "and their sum below 1."
        )
    strata = _strata(labels)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}, "test": {}}
    for c in np.unique(strata):
        rows = np.flatnonzero(strata == c)
        n = len(rows)
        n_test = int(math.floor(n * test_fraction + 0.5))
        n_val = min(n - n_test, int(math.floor(n * val_fraction + 0.5)))
        perm = rows[rng.permutation(n)]
        chosen = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        for split, idx in chosen.items():
            parts[split].append(idx)
            counts[split][str(int(c))] = int(len(idx))
    index = {s: np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for s, p in parts.items()}
    index = {s: idx.astype(np.int64) for s, idx in index.items() if s != "val" or len(idx)}
    record = {
        "method": "stratified" if np.asarray(labels).ndim == 1 else "stratified by first label",
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "rows": {s: int(len(idx)) for s, idx in index.items()},
        "per_class": {s: counts[s] for s in index},
    }
    return index, record


def split_from_values(values: Sequence[Any], source: str, field_name: str = "split",
                      row_offset: int = 0) -> dict[str, np.ndarray]:
    """Row indices per split from a column of ``train``/``val``/``test`` values (or DataError)."""
    out: dict[str, list[int]] = {s: [] for s in SPLIT_VALUES}
    for i, v in enumerate(values):
        s = str(v).strip().lower()
        if s not in out:
            raise DataError(
                f"{source}:{i + row_offset} [{field_name}]: unknown split {v!r}; allowed: "
                f"{', '.join(SPLIT_VALUES)}."
            )
        out[s].append(i)
    return {s: np.asarray(idx, dtype=np.int64) for s, idx in out.items() if idx}


def take_splits(index: Mapping[str, np.ndarray], labels: np.ndarray, pair: np.ndarray,
                tables: Mapping[str, Mapping[str, Any]]) -> dict[str, SplitData]:
    """Cut row-aligned global arrays into :class:`SplitData` per split (train, val, test order
    first, then any other split name)."""
    order = [s for s in SPLIT_VALUES if s in index] + [s for s in index if s not in SPLIT_VALUES]
    out: dict[str, SplitData] = {}
    for split in order:
        idx = np.asarray(index[split], dtype=np.int64)
        if len(idx) == 0:
            continue
        out[split] = SplitData(
            pair=np.asarray(pair)[idx].astype(np.int64),
            labels=np.asarray(labels)[idx],
            tables={m: {c: _take(v, idx) for c, v in cols.items()} for m, cols in tables.items()},
        )
    return out


def _take(values: Any, idx: np.ndarray) -> Any:
    take = getattr(values, "take_rows", None)
    if take is not None:  # lazy row sources (e.g. an HDF5 image array) select without reading
        return take(idx)
    return np.asarray(values)[idx]


# -- checksums ------------------------------------------------------------------------------
def check_sha256sums(root: Path, names: Iterable[str], sums_file: str = "SHA256SUMS") -> list[str]:
    """Check the named files against ``root/SHA256SUMS`` when that file lists them.

    Returns the names checked; a mismatch is a DataError (the copy is damaged or not the
    documented one)."""
    sums_path = root / sums_file
    if not sums_path.exists():
        return []
    expected: dict[str, str] = {}
    for lineno, line in enumerate(sums_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{sums_path}:{lineno}: expected '<sha256>  <file name>', got {line!r}.")
        expected[parts[1].lstrip("*")] = parts[0].lower()
    checked = []
    for name in names:
        if name not in expected or not (root / name).exists():
            continue
        h = hashlib.sha256()
        with open(root / name, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        if h.hexdigest() != expected[name]:
            raise DataError(
                f"{root / name}: sha256 {h.hexdigest()[:16]}… does not match {sums_path} ({expected[name][:16]}…); "
                "the file is damaged or not the documented copy. Restore it (see the README in that folder)."
            )
        checked.append(name)
    return checked


def check_classes(data: Any, source: str) -> None:
    """At least two classes must have rows: with one, clustering is trivial and every metric reads
    1.0. ``data`` is a :class:`prep.adapters.PairedData`; ``source`` names where labels came from."""
    present: set[int] = set()
    for sd in data.splits.values():
        arrays = [sd.labels] if data.kind == "paired" else [t["label"] for t in sd.tables.values() if "label" in t]
        for arr in arrays:
            a = np.asarray(arr)
            if not a.size:
                continue
            if data.multilabel:
                present |= {int(i) for i in np.flatnonzero(a.reshape(len(a), -1).any(axis=0))}
            else:
                present |= {int(v) for v in np.unique(a)}
    if len(present) < 2:
        names = ", ".join(repr(data.classes[i]) if 0 <= i < len(data.classes) else repr(i) for i in sorted(present))
        raise DataError(
            f"{source}: the labels hold {len(present)} class(es) ({names or 'none'}); clustering and its metrics "
            "need at least 2 classes with rows (with one, every metric reads 1.0). Check the label file or "
            "column, or add the rows of the other classes."
        )
