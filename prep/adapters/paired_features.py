"""Generic paired features: two row-aligned matrices, labels, optional ids and split.

Every input is a *source* ``path`` or ``path:key``:

- ``.npy`` (no key), ``.npz`` (key = array name);
- ``.csv`` / ``.tsv`` (key = a column by header name or 0-based index, negative from the end;
  without a key, a feature source takes every column not used by another source of the same file);
- ``.txt`` (whitespace matrix for features; one value per line for ids, labels, split, classes);
- ``.mat`` (key = variable; MATLAB v5 via scipy, v7.3 via h5py, axes as MATLAB shows them).
  The common multi-view layout, a cell array ``X`` of views and labels ``y``/``Y``/``gt``, is read
  with ``X{i}`` keys: ``features = ["data.mat:X{1}", "data.mat:X{2}"]``, ``labels = "data.mat:y"``
  (cells count from 1, as in MATLAB; the labels key may be left out when exactly one of ``y``,
  ``Y``, ``gt``, ``gnd`` is in the file). A trailing ``'`` transposes a view stored features ×
  samples: ``"data.mat:X{1}'"``;
- ``.h5`` / ``.hdf5`` (key = dataset path, e.g. ``/feats/image``).

Example recipe table::

    [prep]
    adapter = "paired-features"
    features = ["img.npy", "txt.mat:T"]
    modalities = ["image", "text"]
    labels = "meta.csv:label"
    ids = ["meta.csv:id"]
    split = "meta.csv:split"        # train/val/test; empty: seeded stratified split

Row i of every source is pair i. Bad input (a missing file, row counts that disagree, NaN/inf,
labels that are not integer class ids or out of range, duplicate ids, unknown split values)
is a DataError naming the file, the row, the field and the fix.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import Adapter, AdapterConfig, PairedData, check_features, check_labels, check_unique, require_file, resolve

log = logging.getLogger(__name__)

EXTENSIONS = ("npy", "npz", "csv", "tsv", "txt", "mat", "h5", "hdf5")
_SPEC = re.compile(r"^(?P<path>.+?\.(?:" + "|".join(EXTENSIONS) + r"))(?::(?P<key>.*))?$", re.IGNORECASE)


# -- sources ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A file and an optional key inside it (variable, dataset path, array name or column)."""

    spec: str
    path: Path
    key: str | None

    @property
    def kind(self) -> str:
        ext = self.path.suffix.lower().lstrip(".")
        return "h5" if ext == "hdf5" else ext

    def __str__(self) -> str:
        return f"{self.path}" + (f":{self.key}" if self.key else "")


def parse_source(spec: str, base_dir: Path, field_name: str) -> Source:
    m = _SPEC.match(spec.strip())
    if not m:
        raise ConfigError(
            f"[prep] {field_name} = {spec!r}: expected 'file' or 'file:key' with a file ending in "
            f"{', '.join('.' + e for e in EXTENSIONS)}."
        )
    key = m.group("key")
    return Source(spec=spec, path=resolve(base_dir, m.group("path")), key=key if key else None)


@dataclass
class _Csv:
    header: list[str] | None
    rows: list[list[str]]
    first_line: int  # file line number of rows[0]

    def column_index(self, key: str, src: Source) -> int:
        n_cols = len(self.rows[0]) if self.rows else len(self.header or [])
        if self.header is not None and key in self.header:
            return self.header.index(key)
        try:
            i = int(key)
        except ValueError:
            cols = ", ".join(self.header or []) or "none (the file has no header row)"
            raise DataError(f"{src.path}: no column {key!r}; columns: {cols}.") from None
        if not -n_cols <= i < n_cols:
            raise DataError(f"{src.path}: column index {i} out of range; the file has {n_cols} columns.")
        return i % n_cols


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> _Csv:
    """Parse a CSV/TSV; the first row is a header when any of its fields is not a number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc}).") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); save the file as UTF-8.") from None
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [r for r in csv.reader(io.StringIO(text), delimiter=delim)]
    while rows and not any(x.strip() for x in rows[-1]):
        rows.pop()
    header = None
    first_line = 1
    if rows and any(not _is_number(x.strip()) for x in rows[0]):
        header = [x.strip() for x in rows[0]]
        rows = rows[1:]
        first_line = 2
    width = len(header) if header is not None else (len(rows[0]) if rows else 0)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(f"{path}:{i + first_line}: {len(r)} fields, expected {width} (as in the first row).")
    return _Csv(header, rows, first_line)


def mat_variables(path: Path) -> list[str]:
    """Variable names of a MATLAB file (v5 or v7.3)."""
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            return sorted(k for k in f.keys() if not k.startswith("#"))
    import scipy.io

    try:
        return sorted(name for name, _, _ in scipy.io.whosmat(path))
    except Exception as exc:  # scipy raises several types for damaged files
        raise DataError(f"{path}: cannot read as a MATLAB file ({exc}).") from None


_MAT_KEY = re.compile(r"^(?P<var>[^{}']+?)(?:\{(?P<cell>\d+)\})?(?P<t>')?$")
LABEL_NAMES = ("y", "Y", "gt", "gnd", "truth", "labels", "label")


def _h5_to_numpy(ds: Any, matlab: bool) -> np.ndarray:
    arr = ds[()]
    if matlab:
        cls = ds.attrs.get("MATLAB_class", b"")
        cls = cls.decode() if isinstance(cls, bytes) else str(cls)
        if cls == "cell" or arr.dtype.kind == "O":
            raise DataError(f"{ds.file.filename} [{ds.name.lstrip('/')}]: a MATLAB cell array; select one cell, "
                            f"e.g. '{Path(ds.file.filename).name}:{ds.name.lstrip('/')}{{1}}' (cells count from 1).")
        arr = np.transpose(arr)  # h5py shows MATLAB's column-major arrays with reversed axes
        if cls == "char":
            return np.asarray(["".join(chr(c) for c in row).rstrip("\x00") for row in np.atleast_2d(arr)], dtype=object)
    return arr


def _is_cell_v73(ds: Any) -> bool:
    cls = ds.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    return cls == "cell" or ds.dtype.kind == "O"


def _cell_error(path: Path, var: str, n_cells: int, what: str) -> DataError:
    views = ", ".join(f"{var}{{{i}}}" for i in range(1, min(n_cells, 4) + 1)) + (", ..." if n_cells > 4 else "")
    return DataError(f"{path} [{var}]: a MATLAB cell array of {n_cells} cells (the multi-view layout: one view per "
                     f"cell); select one for {what} as '{path.name}:{var}{{1}}' ({views}; cells count from 1, "
                     f"as in MATLAB; add ' to transpose a d × n view, '{var}{{1}}'').")


def read_mat(path: Path, key: str | None, what: str) -> np.ndarray:
    """One variable of a MATLAB file, with MATLAB's axis order (rows × columns as MATLAB shows).

    ``key`` may be omitted when the file holds a single variable (for labels: when exactly one of
    the usual label names ``y``, ``Y``, ``gt``, ``gnd``, ... is present). ``NAME{i}`` selects cell
    ``i`` (1-based, MATLAB's linear order) of a cell array: the common multi-view layout stores
    views as ``X{1}``, ``X{2}``, ... and labels as ``y``/``Y``/``gt``. A trailing ``'`` transposes
    (MATLAB's operator), for views stored features × samples: ``X{2}'``. v5 files are read with
    scipy, v7.3 files with h5py (a cell is a dataset of object references)."""
    import h5py

    require_file(path, what)
    names = mat_variables(path)
    if key is None:
        found = [n for n in LABEL_NAMES if n in names] if "label" in what else []
        if len(names) == 1:
            key = names[0]
        elif len(found) == 1:
            key = found[0]
        else:
            raise DataError(f"{path}: give the variable as '{path.name}:NAME' ({what}); the file holds {names}.")
    m = _MAT_KEY.match(key.strip())
    if not m:
        raise DataError(f"{path} [{key}]: expected NAME, NAME{{i}} (cell i of a cell array) or either followed by ' "
                        f"(transposed) for {what}.")
    var, cell, transpose = m.group("var").strip(), m.group("cell"), bool(m.group("t"))
    if var not in names:
        raise DataError(f"{path} [{var}]: no such variable ({what}); variables: {names}.")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            obj = f[var]
            if not isinstance(obj, h5py.Dataset):
                raise DataError(f"{path} [{var}]: a MATLAB struct, not a matrix or cell array ({what}).")
            if _is_cell_v73(obj):
                refs = np.asarray(obj[()]).reshape(-1)  # h5py's reversed axes, C order = MATLAB's linear order
                if cell is None:
                    raise _cell_error(path, var, len(refs), what)
                i = int(cell)
                if not 1 <= i <= len(refs):
                    raise DataError(f"{path} [{key}]: the cell array {var} holds {len(refs)} cells ({var}{{1}}.."
                                    f"{var}{{{len(refs)}}}).")
                target = f[refs[i - 1]]
                if not isinstance(target, h5py.Dataset):
                    raise DataError(f"{path} [{key}]: cell {i} of {var} is not a matrix ({what}).")
                arr = _h5_to_numpy(target, matlab=True)
            elif cell is not None:
                raise DataError(f"{path} [{key}]: {var} is not a cell array (a {'×'.join(map(str, obj.shape[::-1]))} "
                                f"matrix); use '{path.name}:{var}' without {{{cell}}}.")
            else:
                arr = _h5_to_numpy(obj, matlab=True)
        return arr.T if transpose else arr
    import scipy.io

    try:
        arr = scipy.io.loadmat(path, variable_names=[var])[var]
    except Exception as exc:
        raise DataError(f"{path} [{var}]: cannot read ({exc}).") from None
    is_cell = arr.dtype.kind == "O" and not all(isinstance(v, str) for v in arr.reshape(-1)) and any(
        isinstance(v, np.ndarray) and v.dtype.kind in "biufc" and v.size > 1 for v in arr.reshape(-1))
    if cell is not None:
        if arr.dtype.kind != "O":
            raise DataError(f"{path} [{key}]: {var} is not a cell array (a {'×'.join(map(str, arr.shape))} matrix); "
                            f"use '{path.name}:{var}' without {{{cell}}}.")
        cells = arr.reshape(-1, order="F")  # MATLAB's linear (column-major) order
        i = int(cell)
        if not 1 <= i <= len(cells):
            raise DataError(f"{path} [{key}]: the cell array {var} holds {len(cells)} cells ({var}{{1}}..{var}{{{len(cells)}}}).")
        arr = np.asarray(cells[i - 1])
        if arr.dtype.kind == "O":
            raise DataError(f"{path} [{key}]: cell {i} of {var} is itself a cell array or struct, not a matrix ({what}).")
    elif is_cell and "feature" in what:
        raise _cell_error(path, var, arr.size, what)
    return arr.T if transpose else arr


def read_h5(path: Path, key: str | None, what: str) -> np.ndarray:
    import h5py

    require_file(path, what)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot read as HDF5 ({exc}).") from None
    with f:
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        if key is None:
            if len(datasets) != 1:
                raise DataError(f"{path}: give the dataset as '{path.name}:/PATH' ({what}); datasets: {datasets}.")
            key = datasets[0]
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataError(f"{path} [{key}]: no such dataset ({what}); datasets: {datasets}.")
        ds = f[key]
        if ds.dtype.kind in "OS" or h5py.check_string_dtype(ds.dtype) is not None:
            return np.asarray(ds.asstr()[()], dtype=object)
        return ds[()]


class Reader:
    """Reads sources once each (a CSV used for features and labels is parsed once)."""

    def __init__(self) -> None:
        self._csv: dict[Path, _Csv] = {}
        self.used_columns: dict[Path, set[int]] = {}

    def csv(self, src: Source) -> _Csv:
        if src.path not in self._csv:
            require_file(src.path, src.spec)
            self._csv[src.path] = read_csv(src.path)
        return self._csv[src.path]

    def reserve(self, src: Source) -> None:
        """Mark a CSV column as used by a non-feature source (features of that file skip it)."""
        if src.kind in ("csv", "tsv") and src.key is not None:
            table = self.csv(src)
            self.used_columns.setdefault(src.path, set()).add(table.column_index(src.key, src))

    def row_offset(self, src: Source) -> int:
        """What to add to a 0-based row index to name it in messages (file line for CSV/TXT)."""
        if src.kind in ("csv", "tsv"):
            return self.csv(src).first_line
        return 1 if src.kind == "txt" else 0

    def location(self, src: Source) -> str:
        return f"{src.path}" + (f" [{src.key}]" if src.key else "")

    def matrix(self, src: Source, what: str) -> np.ndarray:
        """A 2-D numeric matrix (rows × features)."""
        kind = src.kind
        if kind in ("csv", "tsv"):
            table = self.csv(src)
            if src.key is not None:
                cols = [table.column_index(src.key, src)]
            else:
                skip = self.used_columns.get(src.path, set())
                width = len(table.rows[0]) if table.rows else 0
                cols = [c for c in range(width) if c not in skip]
            out = np.empty((len(table.rows), len(cols)), dtype=np.float64)
            for i, r in enumerate(table.rows):
                for j, c in enumerate(cols):
                    try:
                        out[i, j] = float(r[c])
                    except ValueError:
                        name = table.header[c] if table.header else str(c)
                        raise DataError(
                            f"{src.path}:{i + table.first_line} [{name}]: {r[c]!r} is not a number ({what})."
                        ) from None
            return out
        arr = self._array(src, what)
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{self.location(src)}: expected a numeric matrix for {what}, got dtype {arr.dtype}.")
        return arr

    def column(self, src: Source, what: str) -> np.ndarray:
        """A 1-D column (numbers or strings); a 2-D numeric array is returned as is (multi-hot)."""
        kind = src.kind
        if kind in ("csv", "tsv"):
            table = self.csv(src)
            if src.key is None:
                width = len(table.rows[0]) if table.rows else 0
                if width != 1:
                    raise DataError(f"{src.path}: {width} columns; name the column as '{src.path.name}:COLUMN' ({what}).")
                c = 0
            else:
                c = table.column_index(src.key, src)
            return np.asarray([r[c].strip() for r in table.rows], dtype=object)
        if kind == "txt":
            require_file(src.path, what)
            try:
                lines = src.path.read_bytes().decode("utf-8-sig").splitlines()
            except UnicodeDecodeError as exc:
                raise DataError(f"{src.path}: not UTF-8 text ({exc}); save the file as UTF-8.") from None
            while lines and not lines[-1].strip():
                lines.pop()
            return np.asarray([x.strip() for x in lines], dtype=object)
        arr = self._array(src, what)
        if arr.ndim == 2 and 1 in arr.shape and arr.dtype.kind != "O":
            arr = arr.reshape(-1)
        if arr.dtype.kind == "O" and arr.ndim == 2 and 1 in arr.shape:  # MATLAB cellstr
            arr = np.asarray([np.asarray(v).reshape(-1)[0] if np.size(v) else "" for v in arr.reshape(-1)], dtype=object)
        if arr.dtype.kind in "US":
            arr = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)], dtype=object)
        return arr

    def _array(self, src: Source, what: str) -> np.ndarray:
        kind = src.kind
        require_file(src.path, what)
        if kind in ("npy", "npz") and src.path.stat().st_size == 0:
            raise DataError(f"{src.path}: the file is empty (0 bytes; {what}); write the array again "
                            f"(np.save / np.savez) or point at the right file.")
        if kind == "npy":
            try:
                return np.load(src.path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"{src.path}: cannot read as .npy ({exc}).") from None
        if kind == "npz":
            try:
                with np.load(src.path, allow_pickle=False) as z:
                    names = list(z.files)
                    key = src.key if src.key is not None else (names[0] if len(names) == 1 else None)
                    if key is None or key not in names:
                        raise DataError(f"{src.path}: give the array as '{src.path.name}:NAME' ({what}); arrays: {names}.")
                    return z[key]
            except (OSError, ValueError, EOFError) as exc:
                raise DataError(f"{src.path}: cannot read as .npz ({exc}).") from None
        if kind == "mat":
            return read_mat(src.path, src.key, what)
        if kind == "h5":
            return read_h5(src.path, src.key, what)
        if kind == "txt":
            try:
                return np.loadtxt(src.path, dtype=np.float64, ndmin=2)
            except ValueError as exc:
                raise DataError(f"{src.path}: not a whitespace-separated numeric matrix ({exc}).") from None
        raise DataError(f"{src.path}: unsupported file type {src.path.suffix!r} ({what}).")


def int_labels(values: np.ndarray, source: str, field_name: str, row_offset: int) -> np.ndarray:
    """Integer class ids (no range check), or a DataError naming the first bad row."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    out = np.empty(len(arr), dtype=np.int64)
    for i, v in enumerate(arr.tolist()):
        try:
            fv = float(v)
        except (TypeError, ValueError):
            fv = float("nan")
        if not np.isfinite(fv) or not fv.is_integer() or isinstance(v, bool):
            raise DataError(
                f"{source}:{i + row_offset} [{field_name}]: {v!r} is not an integer class id; labels must be "
                "whole numbers (0-based, or 1-based with label_base = 1)."
            )
        out[i] = int(fv)
    return out


# -- the adapter --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedFeaturesConfig(AdapterConfig):
    """Sources are 'file' or 'file:key': .npy; .npz:ARRAY; .csv/.tsv:COLUMN (name or 0-based index;
    features without a key take every column no other source uses); .txt (whitespace matrix, or one
    value per line); .mat:VARIABLE (v5 or v7.3), .mat:X{i} for cell i of a cell array (the multi-view
    layout: views X{1}, X{2}, ..., labels y/Y/gt; a trailing ' transposes a d × n view: X{1}');
    .h5:/DATASET. Row i of every source is pair i. Example:
        features = ["data.mat:X{1}", "data.mat:X{2}"]   labels = "data.mat:y"   label_base = 1"""

    adapter: str = option("paired-features", "dataset adapter name")
    name: str = option("paired-features", "dataset name recorded in the manifest")
    features: list[str] = option([], "two feature sources 'file[:key]', one per modality, row i = pair i")
    modalities: list[str] = option(["image", "text"], "names of the two modalities")
    labels: str = option("", "label source 'file[:key]' (integer class ids, or a 0/1 multi-hot matrix)")
    label_base: int = option(0, "0: labels are 0-based; 1: 1-based (MATLAB)", choices=(0, 1))
    classes: str = option("", "optional file with one class name per line (else '0'..'C-1')")
    n_classes: int = option(0, "number of classes when no class file is given (0: max label + 1)", low=0)
    ids: list[str] = option([], "optional id sources: none (generated), one (shared) or one per modality")
    split: str = option("", "optional split source with values train/val/test (else a seeded stratified split)")
    test_fraction: float = option(0.2, "test share of the seeded stratified split", low=0.0, high=1.0, high_open=True)
    val_fraction: float = option(0.0, "val share of the seeded stratified split", low=0.0, high=1.0, high_open=True)
    seed: int = option(0, "seed of the stratified split")
    dtype: str = option("float32", "stored feature dtype", choices=("float32", "float16"))

    def validate(self) -> None:
        if len(self.features) != 2:
            raise ConfigError(f"[prep] features = {self.features!r}: give exactly two sources, one per modality.")
        if len(self.modalities) != 2 or len(set(self.modalities)) != 2 or not all(m.strip() for m in self.modalities):
            raise ConfigError(f"[prep] modalities = {self.modalities!r}: give two distinct non-empty names.")
        if not self.labels:
            raise ConfigError("[prep] labels: required; a source 'file[:key]' with one class id per row.")
        if len(self.ids) > 2:
            raise ConfigError(f"[prep] ids = {self.ids!r}: give at most two sources (one per modality).")


def _sources(cfg: PairedFeaturesConfig, base: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "features": [parse_source(s, base, f"features[{i}]") for i, s in enumerate(cfg.features)],
        "labels": parse_source(cfg.labels, base, "labels"),
        "ids": [parse_source(s, base, f"ids[{i}]") for i, s in enumerate(cfg.ids)],
        "split": parse_source(cfg.split, base, "split") if cfg.split else None,
        "classes": resolve(base, cfg.classes) if cfg.classes else None,
    }
    return out


def input_files(cfg: PairedFeaturesConfig, base_dir: Path) -> dict[str, Path]:
    src = _sources(cfg, base_dir)
    files: dict[str, Path] = {}
    for s in [*src["features"], src["labels"], *src["ids"], *([src["split"]] if src["split"] else [])]:
        files[str(s.path)] = s.path
    if src["classes"] is not None:
        files[str(src["classes"])] = src["classes"]
    for path in files.values():
        require_file(path, "paired-features input", "Check the [prep] paths.")
    return files


def read_class_names(path: Path) -> list[str]:
    require_file(path, "class names")
    try:
        names = [x.strip() for x in path.read_bytes().decode("utf-8-sig").splitlines() if x.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}).") from None
    if not names:
        raise DataError(f"{path}: no class names (expected one per line).")
    check_unique(names, str(path), "class name", row_offset=1)
    return names


@dataclass
class _Rows:
    """Row counts seen so far, to name both files when they disagree."""

    counts: list[tuple[str, int]] = field(default_factory=list)

    def add(self, what: str, n: int) -> None:
        if self.counts and n != self.counts[0][1]:
            first, n0 = self.counts[0]
            raise DataError(
                f"{what} has {n} rows but {first} has {n0}; row i of every source must describe pair i. "
                "Fix the files so they have the same rows in the same order."
            )
        self.counts.append((what, n))


def read(cfg: PairedFeaturesConfig, base_dir: Path) -> PairedData:
    from ..validate import split_from_values, stratified_split, take_splits

    src = _sources(cfg, base_dir)
    reader = Reader()
    for s in [src["labels"], *src["ids"], *([src["split"]] if src["split"] else [])]:
        reader.reserve(s)
    rows = _Rows()

    feats: dict[str, np.ndarray] = {}
    for m, s in zip(cfg.modalities, src["features"]):
        x = reader.matrix(s, f"features of '{m}'")
        x = check_features(x, str(s.path), s.key or f"features of '{m}'", row_offset=reader.row_offset(s))
        try:
            rows.add(reader.location(s), len(x))
        except DataError as exc:
            n0 = rows.counts[0][1]
            if s.kind == "mat" and x.shape[1] == n0 and not (s.key or "").endswith("'"):
                raise DataError(f"{exc} This view looks stored features × samples ({x.shape[0]} × {x.shape[1]}): "
                                f"transpose it with a trailing ', '{s.path.name}:{s.key}''.") from None
            raise
        if np.abs(x).max(initial=0) > np.finfo(cfg.dtype).max:
            raise DataError(
                f"{s.path}: values exceed the {cfg.dtype} range (largest magnitude {float(np.abs(x).max()):.4g})"
                + ("; use dtype = 'float32'." if cfg.dtype != "float32" else
                   "; rescale the features (e.g. divide by their maximum, or take a log) before prep.")
            )
        feats[m] = x.astype(cfg.dtype)

    ls = src["labels"]
    raw_labels = reader.column(ls, "labels")
    lab_where = str(ls.path)
    lab_off = reader.row_offset(ls)
    classes = read_class_names(src["classes"]) if src["classes"] is not None else None
    multilabel = raw_labels.ndim == 2
    if multilabel:
        from ..multilabel import check_multihot

        labels = check_multihot(raw_labels, lab_where, ls.key or "labels")
        n_classes = labels.shape[1]
        if classes is not None and len(classes) != n_classes:
            raise DataError(f"{lab_where}: {n_classes} label columns but {src['classes']} lists {len(classes)} names.")
    else:
        ints = int_labels(raw_labels, lab_where, ls.key or "label", lab_off) - cfg.label_base
        if classes is not None:
            n_classes = len(classes)
        elif cfg.n_classes:
            n_classes = cfg.n_classes
        else:
            n_classes = int(ints.max(initial=-1)) + 1
        labels = check_labels(ints + cfg.label_base, n_classes, lab_where, ls.key or "label",
                              one_based=cfg.label_base == 1, row_offset=lab_off)
    rows.add(reader.location(ls), len(labels))
    if classes is None:
        classes = [str(i) for i in range(n_classes)]
    n = len(labels)
    if n == 0:
        raise DataError(f"{lab_where}: no rows; the inputs must hold at least one pair.")

    ids: dict[str, np.ndarray] = {}
    if not src["ids"]:
        shared = np.asarray([f"{cfg.name}-{i:06d}" for i in range(n)], dtype=object)
        ids = {m: shared for m in cfg.modalities}
    else:
        id_srcs = src["ids"] if len(src["ids"]) == 2 else [src["ids"][0]] * 2
        for m, s in zip(cfg.modalities, id_srcs):
            col = reader.column(s, f"ids of '{m}'")
            if col.ndim != 1:
                raise DataError(f"{reader.location(s)}: expected one id per row, got shape {col.shape}.")
            col = np.asarray([str(v).strip() for v in col], dtype=object)
            rows.add(reader.location(s), len(col))
            off = reader.row_offset(s)
            empty = [i for i, v in enumerate(col) if not v]
            if empty:
                raise DataError(f"{s.path}:{empty[0] + off} [{s.key or 'id'}]: empty id; every row needs an id.")
            check_unique(col.tolist(), str(s.path), s.key or "id", row_offset=off)
            ids[m] = col

    rng = np.random.default_rng(cfg.seed)
    if src["split"] is not None:
        ss = src["split"]
        values = reader.column(ss, "split")
        rows.add(reader.location(ss), len(values))
        index = split_from_values(values.tolist(), str(ss.path), ss.key or "split", reader.row_offset(ss))
        split_info: dict[str, Any] = {"method": "from source", "source": ss.spec,
                                      "rows": {s: int(len(i)) for s, i in index.items()}}
    else:
        index, split_info = stratified_split(labels, test_fraction=cfg.test_fraction,
                                             val_fraction=cfg.val_fraction, rng=rng)
        split_info["seed"] = cfg.seed

    pair = np.arange(n, dtype=np.int64)
    tables = {m: {"id": ids[m], "feat": feats[m]} for m in cfg.modalities}
    splits = take_splits(index, labels, pair, tables)
    return PairedData(
        dataset=cfg.name,
        classes=classes,
        splits=splits,
        multilabel=multilabel,
        info={
            "source": {"features": list(cfg.features), "labels": cfg.labels, "ids": list(cfg.ids), "split": cfg.split},
            "split": split_info,
            "feature_dims": {m: int(feats[m].shape[1]) for m in cfg.modalities},
        },
    )


ADAPTER = Adapter(
    name="paired-features",
    config_cls=PairedFeaturesConfig,
    input_files=input_files,
    read=read,
    description="two row-aligned feature matrices (.npy/.npz/.csv/.txt/.mat/.h5) with labels, optional ids and split",
)
