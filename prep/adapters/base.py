"""What a dataset adapter is: a config class plus a reader that returns :class:`PairedData`.

An adapter only reads and validates raw files; ``prep.stage.prepare`` owns sharding, checksums
and the manifest (the split Hugging Face datasets makes between a builder and its examples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.config import Config, option
from mixbench.errors import DataError


@dataclass(frozen=True)
class AdapterConfig(Config):
    """Keys every adapter has. Subclasses add their own (``root``, file names, ...)."""

    section = "prep"
    adapter: str = option("", "dataset adapter name (see `mixbench list adapters`)")
    shard_rows: int = option(4096, "pairs per shard", low=1)


@dataclass
class SplitData:
    """One split of a paired dataset. ``tables[modality]`` holds at least ``id`` and either
    ``feat`` or raw columns (``path``/``text``); ``labels`` and ``pair`` are shared by both
    modalities (row i of every table is half of pair i)."""

    pair: np.ndarray
    labels: np.ndarray
    tables: dict[str, dict[str, Any]]

    def __len__(self) -> int:
        return len(self.pair)

    def n_rows(self, modality: str) -> int:
        """Rows of one modality: ``len(self)`` for paired data; benchmark data (per-modality
        ``label``/``pair`` columns inside the table) may differ per modality."""
        return len(self.tables[modality]["id"])


@dataclass
class PairedData:
    """What an adapter returns. ``kind`` is the store kind written (``"paired"``; an importer of
    an already mixed-modal layout returns ``"benchmark"`` with per-modality ``label``/``pair``
    columns in its tables). ``files`` are auxiliary files (name → bytes or text) added to the
    store, e.g. the rejects report."""

    dataset: str
    classes: list[str]
    splits: dict[str, SplitData]
    multilabel: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    kind: str = "paired"
    files: dict[str, bytes | str] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        first = next(iter(self.splits.values()))
        return list(first.tables)


@dataclass(frozen=True)
class Adapter:
    """A registered adapter: its name, config class, the raw files it reads, and the reader."""

    name: str
    config_cls: type[AdapterConfig]
    input_files: Callable[[Any, Path], dict[str, Path]]
    read: Callable[[Any, Path], PairedData]
    description: str = ""
    # Optional: extra lineage inputs for content the adapter reads but does not list as
    # files (e.g. {"images": {"listing_sha256": ...}} over paths, sizes and mtimes).
    fingerprint: Callable[[Any, Path], dict[str, Any]] | None = None


def resolve(base_dir: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else Path(base_dir) / p).resolve()


def require_file(path: Path, what: str, fix: str = "") -> Path:
    if not path.exists():
        raise DataError(f"{path}: missing ({what}). {fix}".rstrip())
    if not path.is_file():
        raise DataError(f"{path}: not a file ({what}).")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc}); check its permissions ({what}).") from None
    return path


def check_features(x: np.ndarray, source: str, field_name: str, row_offset: int = 0, ids: Any = None) -> np.ndarray:
    """A 2-D finite float matrix, or a DataError naming the first bad row and column."""
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source} [{field_name}]: not a numeric matrix ({exc}).") from None
    if x.ndim == 1:
        raise DataError(
            f"{source} [{field_name}]: a 1-D array of {len(x)} values, not a matrix (rows × features); save it as "
            f"one row per instance, e.g. reshape to ({len(x)}, 1) for a single feature, or point at the right array."
        )
    if x.ndim != 2:
        raise DataError(f"{source} [{field_name}]: expected a 2-D matrix (rows × features), got shape {x.shape}.")
    if x.shape[1] == 0:
        raise DataError(
            f"{source} [{field_name}]: 0 feature columns (shape {x.shape}); the file holds no features. Point "
            "at the array with the features, or write them again."
        )
    bad = ~np.isfinite(x)
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        rid = f" (id {ids[r]})" if ids is not None else ""
        raise DataError(
            f"{source} [{field_name}]: row {r + row_offset}{rid}, column {c} is {float(x[r, c])!r}; "
            f"{int(bad.any(axis=1).sum())} row(s) hold NaN/inf. Clean or impute them before prep."
        )
    return x


def check_labels(y: Any, n_classes: int, source: str, field_name: str = "label", *, one_based: bool = False,
                 row_offset: int = 0) -> np.ndarray:
    """Integer class labels in range (0-based after conversion), or a DataError naming the row."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.size == max(arr.shape, default=0) else arr
    if arr.ndim != 1:
        raise DataError(f"{source} [{field_name}]: expected one label per row, got shape {arr.shape}.")
    if arr.dtype.kind not in "iuf":
        for i, v in enumerate(arr):
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise DataError(f"{source}:{i + row_offset} [{field_name}]: {_plain(v)!r} is not an integer class id.") from None
            if not fv.is_integer():
                raise DataError(f"{source}:{i + row_offset} [{field_name}]: {_plain(v)!r} is not an integer class id.")
        arr = arr.astype(np.float64)
    if arr.dtype.kind == "f":
        frac = ~np.isfinite(arr) | (np.mod(arr, 1) != 0)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise DataError(f"{source}:{i + row_offset} [{field_name}]: {arr[i].item()!r} is not an integer class id.")
    arr = arr.astype(np.int64) - (1 if one_based else 0)
    lo, hi = (1, n_classes) if one_based else (0, n_classes - 1)
    out = (arr < 0) | (arr >= n_classes)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise DataError(
            f"{source}:{i + row_offset} [{field_name}]: class {arr[i] + (1 if one_based else 0)} is out of range; "
            f"expected {lo}..{hi} ({n_classes} classes)."
        )
    return arr


def check_unique(ids: Any, source: str, field_name: str = "id", row_offset: int = 0) -> None:
    seen: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v in seen:
            raise DataError(
                f"{source}:{i + row_offset} [{field_name}]: id {v!r} already used on row {seen[v] + row_offset}; "
                "ids must be unique (remove the duplicate row or fix its id)."
            )
        seen[v] = i


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value (so messages read ``2.5``, not ``np.float64(2.5)``)."""
    return value.item() if isinstance(value, np.generic) else value
