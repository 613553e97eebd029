"""DM2C's own mixed-modal layout → a *benchmark* store (every row is one modality).

jiangyangby/DM2C (``code/utils.py``) reads, per dataset folder, ``train_file.mat`` and
``test_file.mat``: ``X`` is a cell array with one row per sample, either (feature, file name,
modality) or (feature, modality), modality 0 = image and 1 = text; ``y`` is 1 × N with 1-based
class ids. (``train_img.mat`` / ``train_txt.mat`` hold the same training rows split by modality,
for auto-encoder pre-training; they add nothing and are not read.)

The store: kind ``benchmark``, splits train/test, the two modalities named by ``modalities``
(flag 0 → first), columns ``id`` (the file name when the rows carry one, else
``{split}-{row:06d}``), ``label`` (0-based), ``pair`` (-1: nothing is paired) and ``feat``
(float32). DM2C needs one shared dimension; with ``pad = true`` a modality with shorter vectors
is zero-padded to the longer one (recorded in the manifest).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import Adapter, AdapterConfig, PairedData, SplitData, check_labels, require_file, resolve
from .paired_features import read_class_names

log = logging.getLogger(__name__)

FILES = {"train": "train_file.mat", "test": "test_file.mat"}


@dataclass(frozen=True)
class Dm2cMatConfig(AdapterConfig):
    adapter: str = option("dm2c-mat", "dataset adapter name")
    name: str = option("dm2c", "dataset name recorded in the manifest")
    root: str = option(".", "folder with train_file.mat and test_file.mat")
    train_file: str = option(FILES["train"], "training rows (DM2C layout)")
    test_file: str = option(FILES["test"], "test rows (DM2C layout; empty: none)")
    modalities: list[str] = option(["image", "text"], "names of modality flag 0 and flag 1")
    classes: str = option("", "optional file with one class name per line (else '0'..'C-1')")
    n_classes: int = option(0, "number of classes when no class file is given (0: the largest y)", low=0)
    pad: bool = option(True, "zero-pad the modality with shorter vectors to the shared (larger) dimension")

    def validate(self) -> None:
        if len(self.modalities) != 2 or len(set(self.modalities)) != 2 or not all(self.modalities):
            raise ConfigError(f"[prep] modalities = {self.modalities!r}: give two distinct non-empty names.")


def input_files(cfg: Dm2cMatConfig, base_dir: Path) -> dict[str, Path]:
    root = resolve(base_dir, cfg.root)
    out = {"train": resolve(root, cfg.train_file)}
    if cfg.test_file:
        out["test"] = resolve(root, cfg.test_file)
    if cfg.classes:
        out["classes"] = resolve(base_dir, cfg.classes)
    return out


@dataclass
class _Rows:
    feats: list[np.ndarray]
    names: list[str | None]
    flags: np.ndarray
    y: np.ndarray


def _scalar(cell: Any) -> float:
    arr = np.asarray(cell)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise ValueError(f"expected one number, got shape {arr.shape} dtype {arr.dtype}")
    return float(arr.reshape(-1)[0])


def _name(cell: Any) -> str | None:
    arr = np.asarray(cell)
    if arr.size == 0:
        return None
    if arr.dtype.kind in "US":
        v = arr.reshape(-1)[0]
        return v.decode() if isinstance(v, bytes) else str(v)
    return None


def read_dm2c_file(path: Path) -> _Rows:
    """Parse one DM2C file: per row the feature vector, optional file name and modality flag."""
    import scipy.io

    require_file(path, "DM2C file", "Check [prep] root/train_file/test_file.")
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: a MATLAB v7.3 file; DM2C files are v5 (scipy.io.savemat). Re-save it with "
                        "save(..., '-v7').") from None
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a MATLAB file ({exc}).") from None
    for key in ("X", "y"):
        if key not in mat:
            raise DataError(f"{path} [{key}]: variable missing; found {sorted(k for k in mat if not k.startswith('__'))}.")
    X = mat["X"]
    if X.size == 0 and np.asarray(mat["y"]).size == 0:
        return _Rows([], [], np.empty(0, np.int64), np.empty(0))
    if X.dtype != object or X.ndim != 2 or X.shape[1] not in (2, 3):
        raise DataError(f"{path} [X]: expected a cell array with one row of 2 or 3 cells per sample "
                        f"(feature, [file name], modality); got {X.dtype} {X.shape}.")
    y_raw = np.asarray(mat["y"])
    if y_raw.ndim != 2 or 1 not in y_raw.shape:
        raise DataError(f"{path} [y]: expected a 1 × N vector, got shape {y_raw.shape}.")
    y = y_raw.reshape(-1)
    if len(y) != X.shape[0]:
        raise DataError(f"{path}: X has {X.shape[0]} rows but y has {len(y)}; one label per row.")
    feats: list[np.ndarray] = []
    names: list[str | None] = []
    flags = np.empty(X.shape[0], dtype=np.int64)
    for i in range(X.shape[0]):
        row = X[i]
        f = np.asarray(row[0])
        if f.dtype.kind not in "biuf" or f.size == 0:
            raise DataError(f"{path} [X]: row {i}, cell 0 is not a numeric feature vector ({f.dtype}, shape {f.shape}).")
        feats.append(f.reshape(-1).astype(np.float64))
        names.append(_name(row[1]) if X.shape[1] == 3 else None)
        try:
            flag = _scalar(row[-1])
        except ValueError as exc:
            raise DataError(f"{path} [X]: row {i}, modality cell: {exc}; expected 0 (image) or 1 (text).") from None
        if flag not in (0.0, 1.0):
            raise DataError(f"{path} [X]: row {i}, modality {flag:g}; expected 0 (image) or 1 (text).")
        flags[i] = int(flag)
    return _Rows(feats, names, flags, y)


def read(cfg: Dm2cMatConfig, base_dir: Path) -> PairedData:
    from .base import check_features, check_unique

    files = {k: v for k, v in input_files(cfg, base_dir).items() if k in FILES}
    parsed = {split: read_dm2c_file(p) for split, p in files.items()}
    if cfg.classes:
        classes = read_class_names(resolve(base_dir, cfg.classes))
    else:
        ys = np.concatenate([r.y for r in parsed.values()]).astype(np.float64)
        finite = ys[np.isfinite(ys)]
        n = cfg.n_classes or int(finite.max(initial=0))
        classes = [str(i) for i in range(n)]
    dims: dict[str, int] = {}
    for split, rows in parsed.items():
        for i, (f, flag) in enumerate(zip(rows.feats, rows.flags)):
            m = cfg.modalities[flag]
            if len(f) != dims.setdefault(m, len(f)):
                raise DataError(f"{files[split]} [X]: row {i} ({m}) has {len(f)} features, other {m} rows have "
                                f"{dims[m]}; every row of one modality needs the same dimension.")
    shared = max(dims.values()) if dims else 0
    splits: dict[str, SplitData] = {}
    for split, rows in parsed.items():
        labels = check_labels(rows.y, len(classes), str(files[split]), "y", one_based=True)
        tables: dict[str, dict[str, Any]] = {}
        for flag, m in enumerate(cfg.modalities):
            idx = np.flatnonzero(rows.flags == flag)
            d = shared if cfg.pad else dims.get(m, 0)
            x = np.zeros((len(idx), d), dtype=np.float64)
            for j, i in enumerate(idx.tolist()):
                x[j, : len(rows.feats[i])] = rows.feats[i]
            x = check_features(x, str(files[split]), f"X ({m})") if len(idx) else x
            have_names = len(idx) > 0 and all(rows.names[i] for i in idx.tolist())
            ids = [rows.names[i] if have_names else f"{split}-{i:06d}" for i in idx]
            check_unique(ids, str(files[split]), f"file name ({m})")
            tables[m] = {
                "id": np.asarray(ids, dtype=object),
                "label": labels[idx],
                "pair": np.full(len(idx), -1, dtype=np.int64),
                "feat": x.astype(np.float32),
            }
        splits[split] = SplitData(pair=np.empty(0, np.int64), labels=np.empty(0, np.int64), tables=tables)
    info = {
        "source": "DM2C layout (jiangyangby/DM2C code/utils.py): X cell rows (feature, [file], modality), y 1-based",
        "files": {s: p.name for s, p in files.items()},
        "modality_flags": {m: i for i, m in enumerate(cfg.modalities)},
        "dims": dims,
        "padded_to": shared if cfg.pad and len(set(dims.values())) > 1 else None,
        "rows": {s: {m: int((r.flags == i).sum()) for i, m in enumerate(cfg.modalities)} for s, r in parsed.items()},
        "unpair": {"mode": "drop", "ratio": 1.0, "note": "imported: every row holds one modality"},
    }
    return PairedData(dataset=cfg.name, classes=classes, splits=splits, info=info, kind="benchmark")


ADAPTER = Adapter(
    name="dm2c-mat",
    config_cls=Dm2cMatConfig,
    input_files=input_files,
    read=read,
    description="DM2C train_file.mat/test_file.mat (mixed-modal rows, 1-based y) → benchmark store",
)
