"""Cross-modal hashing .mat layouts: DCMH (raw images + tags) and DADH (CNN features + tags).

**DCMH** (jiangqy/DCMH-CVPR2017 data, also used by AGAH, JDSH and UMML): ``IAll`` raw RGB
images (uint8; MATLAB H×W×3×N, so a v7.3/HDF5 file read with h5py shows N×3×W×H), ``YAll`` tag
bag-of-words (N×T), ``LAll`` multi-hot labels (N×C). The variables may sit in one file or in
``{prefix}-iall.mat``, ``{prefix}-yall.mat``, ``{prefix}-lall.mat``. Stored as an image table
column ``pixels`` (uint8, H×W×3 RGB; read shard by shard from v7.3 files, never whole) and a text
table column ``feat`` (float32 BoW).

**DADH** (Zjut-MultimediaPlus/DADH): one file with ``images`` (or ``image``) 4,096-d CNN-F
features, ``YAll`` (or ``text``) tags and ``LAll`` (or ``label``) labels; ``feat`` on both sides.
(DADH's loader z-scores image features with one global mean/std at training time; that is model
preprocessing and is not applied here.)

Splits (``split``), as the UMML and DADH releases make them; query → ``test``, train → ``train``,
database → ``database`` (kept with ``keep_database``; it overlaps train, as in the originals):

- ``umml``: train = rows [0, train_size), database = [0, db_size), query = the last query_size rows
  (db_size 0: every row but the query tail) — UMML's AGAH/DADH loaders;
- ``dadh``: query = [0, query_size), train = [query_size, query_size + train_size), database =
  [query_size, query_size + db_size) (db_size 0: every row after the query) — DADH's own;
- ``stratified``: a seeded split by ``test_fraction``/``val_fraction`` (by first label when
  multi-label).

Labels stay multi-hot (manifest ``multilabel: true``) unless ``single_label_top_k`` applies the
NUS-WIDE-10K selection (:mod:`prep.multilabel`). Ids ``{name}-{row:06d}``, pair id = row index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.config import option
from mixbench.errors import DataError

from .base import Adapter, AdapterConfig, PairedData, check_features, require_file, resolve
from .paired_features import mat_variables, read_class_names, read_mat

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "HWCN", "NHWC", "NCHW")
SPLITS = ("umml", "dadh", "stratified")


# -- images read on demand ----------------------------------------------------------------------
class ImageRows:
    """Rows ``index`` of a 4-D image array, served as N×H×W×C uint8 slices.

    ``array`` is either an in-memory array in MATLAB axis order ``layout`` (v5 files) or, for
    v7.3 files, ``(path, key)``: the HDF5 dataset (axes reversed from MATLAB's) is read one slice
    at a time, so a shard never needs the whole image set in memory."""

    def __init__(self, array: np.ndarray | tuple[Path, str], layout: str, index: np.ndarray,
                 matlab_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.array = array
        self.layout = layout
        self.index = np.asarray(index, dtype=np.int64)
        self.matlab_shape = matlab_shape
        self.dtype = np.dtype(dtype)
        dims = dict(zip(layout, matlab_shape))
        self.shape = (len(self.index), dims["H"], dims["W"], dims["C"])

    def __len__(self) -> int:
        return len(self.index)

    def take_rows(self, idx: np.ndarray) -> ImageRows:
        return ImageRows(self.array, self.layout, self.index[np.asarray(idx, dtype=np.int64)], self.matlab_shape, self.dtype)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("ImageRows supports slices only")
        rows = self.index[key]
        if isinstance(self.array, np.ndarray):
            n_axis = self.layout.index("N")
            block = np.take(self.array, rows, axis=n_axis)
            return np.ascontiguousarray(np.transpose(block, [self.layout.index(a) for a in "NHWC"]))
        import h5py

        raw_layout = self.layout[::-1]
        n_axis = raw_layout.index("N")
        path, name = self.array
        if len(rows) == 0:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        with h5py.File(path, "r") as f:
            ds = f[name]
            sel: list[Any] = [slice(None)] * 4
            if rows[-1] - rows[0] + 1 == len(rows) and (np.diff(rows) == 1).all():
                sel[n_axis] = slice(int(rows[0]), int(rows[-1]) + 1)
                block = ds[tuple(sel)]
            else:
                uniq, inverse = np.unique(rows, return_inverse=True)
                sel[n_axis] = uniq.tolist()
                block = np.take(ds[tuple(sel)], inverse, axis=n_axis)
        return np.ascontiguousarray(np.transpose(block, [raw_layout.index(a) for a in "NHWC"]))


def detect_layout(shape: tuple[int, ...], n: int, layout: str, where: str) -> str:
    """The MATLAB axis order of a 4-D image array holding ``n`` images."""
    if len(shape) != 4:
        raise DataError(f"{where}: expected a 4-D image array (H×W×3×N in MATLAB), got shape {shape}.")
    if layout != "auto":
        dims = dict(zip(layout, shape))
        if dims["N"] != n or dims["C"] != 3:
            raise DataError(f"{where}: shape {shape} read as {layout} gives {dims['N']} images with {dims['C']} "
                            f"channels; expected {n} RGB images. Check image_layout.")
        return layout
    candidates = [("HWCN", shape[3] == n and shape[2] == 3), ("NHWC", shape[0] == n and shape[3] == 3),
                  ("NCHW", shape[0] == n and shape[1] == 3)]
    for name, ok in candidates:
        if ok:
            return name
    raise DataError(
        f"{where}: cannot tell the axis order of shape {shape} (MATLAB order) for {n} RGB images; set "
        f"[prep] image_layout to one of {', '.join(LAYOUTS[1:])}."
    )


def open_images(path: Path, key: str, n: int, layout: str) -> ImageRows:
    import h5py

    require_file(path, "DCMH images")
    where = f"{path} [{key}]"
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise DataError(f"{where}: no such variable; variables: {mat_variables(path)}.")
            ds = f[key]
            shape = tuple(int(s) for s in ds.shape[::-1])
            dtype = ds.dtype
        lay = detect_layout(shape, n, layout, where)
        src: np.ndarray | tuple[Path, str] = (path, key)
    else:
        arr = read_mat(path, key, "DCMH images")
        shape, dtype = tuple(arr.shape), arr.dtype
        lay = detect_layout(shape, n, layout, where)
        src = arr
    if np.dtype(dtype) != np.uint8:
        raise DataError(f"{where}: pixels are {np.dtype(dtype)}; expected uint8 RGB images (DCMH IAll).")
    return ImageRows(src, lay, np.arange(n), shape, np.dtype(np.uint8))


# -- shared config and split logic ----------------------------------------------------------------
@dataclass(frozen=True)
class _HashingConfig(AdapterConfig):
    classes: str = option("", "optional file with one class (concept) name per line")
    split: str = option("umml", "umml, dadh (query/train/database by position) or stratified (seeded)", choices=SPLITS)
    query_size: int = option(2000, "query rows (→ test) for the umml/dadh splits", low=0)
    train_size: int = option(10000, "training rows for the umml/dadh splits", low=1)
    db_size: int = option(0, "database rows for the umml/dadh splits (0: every row but the query block)", low=0)
    keep_database: bool = option(True, "write the database rows as split 'database' (overlaps train)")
    test_fraction: float = option(0.2, "test share of the stratified split", low=0.0, high=1.0, high_open=True)
    val_fraction: float = option(0.0, "val share of the stratified split", low=0.0, high=1.0, high_open=True)
    seed: int = option(0, "seed of the stratified split and of the single-label selection")
    single_label_top_k: int = option(0, "keep the K largest concepts and rows with exactly one (NUS-WIDE-10K rule; 0: off)",
                                     low=0)
    single_label_per_class: int = option(0, "with single_label_top_k: rows drawn per concept (0: all)", low=0)


def positional_split(cfg: _HashingConfig, n: int, where: str) -> dict[str, np.ndarray]:
    q, t = cfg.query_size, cfg.train_size
    db = cfg.db_size or n - q
    if cfg.split == "umml":
        if t > n - q or db > n - q:
            raise DataError(f"{where}: {n} rows cannot hold train_size {t} / db_size {db} before a query tail of {q}; "
                            "lower the sizes.")
        out = {"train": np.arange(0, t), "test": np.arange(n - q, n), "database": np.arange(0, db)}
    else:
        if q + t > n or q + db > n:
            raise DataError(f"{where}: {n} rows cannot hold query_size {q} + train_size {t} (or + db_size {db}); "
                            "lower the sizes.")
        out = {"train": np.arange(q, q + t), "test": np.arange(0, q), "database": np.arange(q, q + db)}
    return {k: v.astype(np.int64) for k, v in out.items()}


def build(cfg: _HashingConfig, base: Path, *, dataset: str, n: int, labels: np.ndarray,
          tables: dict[str, dict[str, Any]], where: str, info: dict[str, Any]) -> PairedData:
    """Labels/classes, optional single-label selection, split, → PairedData."""
    from ..multilabel import check_multihot, select_single_label
    from ..validate import stratified_split, take_splits

    y = check_multihot(labels, where, "labels")
    if y.shape[0] != n:
        hint = " (transposed? rows must be samples)" if y.shape[1] == n else ""
        raise DataError(f"{where}: labels have {y.shape[0]} rows but the images have {n}{hint}.")
    classes = (read_class_names(resolve(base, cfg.classes)) if cfg.classes
               else [str(i) for i in range(y.shape[1])])
    if len(classes) != y.shape[1]:
        raise DataError(f"{cfg.classes}: {len(classes)} class names but the labels have {y.shape[1]} columns.")
    rows = np.arange(n, dtype=np.int64)
    labels_out: np.ndarray = y
    multilabel = True
    if cfg.single_label_top_k:
        sel = select_single_label(y, classes, top_k=cfg.single_label_top_k, per_class=cfg.single_label_per_class,
                                  rng=np.random.default_rng(cfg.seed), seed=cfg.seed, source=where)
        rows, classes, multilabel = sel.rows, sel.classes, False
        labels_out = np.full(n, -1, dtype=np.int64)
        labels_out[rows] = sel.labels
        info["single_label"] = sel.info
    if cfg.split == "stratified":
        local, split_info = stratified_split(labels_out[rows], test_fraction=cfg.test_fraction,
                                             val_fraction=cfg.val_fraction, rng=np.random.default_rng(cfg.seed))
        index = {s: rows[i] for s, i in local.items()}
        split_info["seed"] = cfg.seed
    else:
        index = positional_split(cfg, n, where)
        if not cfg.keep_database:
            index.pop("database")
        if cfg.single_label_top_k:
            index = {s: np.intersect1d(v, rows) for s, v in index.items()}
        split_info = {"method": cfg.split, "query_size": cfg.query_size, "train_size": cfg.train_size,
                      "db_size": cfg.db_size or n - cfg.query_size, "query_split": "test",
                      "database_kept": cfg.keep_database}
    split_info["rows"] = {s: int(len(v)) for s, v in index.items()}
    info["split"] = split_info
    pair = np.arange(n, dtype=np.int64)
    ids = np.asarray([f"{dataset}-{i:06d}" for i in range(n)], dtype=object)
    full_tables = {m: {"id": ids, **cols} for m, cols in tables.items()}
    return PairedData(dataset=dataset, classes=classes, splits=take_splits(index, labels_out, pair, full_tables),
                      multilabel=multilabel, info=info)


# -- DCMH ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DcmhConfig(_HashingConfig):
    adapter: str = option("dcmh", "dataset adapter name")
    name: str = option("mirflickr25k", "dataset name (also the id prefix)")
    root: str = option(".", "folder with the .mat files")
    prefix: str = option("mirflickr25k", "files {prefix}-iall.mat, {prefix}-yall.mat, {prefix}-lall.mat")
    file: str = option("", "one .mat file holding every variable (instead of the three files)")
    image_key: str = option("IAll", "variable with the images")
    text_key: str = option("YAll", "variable with the tag vectors")
    label_key: str = option("LAll", "variable with the multi-hot labels")
    image_layout: str = option("auto", "MATLAB axis order of the images", choices=LAYOUTS)
    shard_rows: int = option(1024, "pairs per shard (raw 224×224 images: about 150 MB per 1,000)", low=1)


def _dcmh_files(cfg: DcmhConfig, base: Path) -> dict[str, Path]:
    root = resolve(base, cfg.root)
    if cfg.file:
        p = resolve(root, cfg.file)
        return {"images": p, "text": p, "labels": p}
    return {"images": root / f"{cfg.prefix}-iall.mat", "text": root / f"{cfg.prefix}-yall.mat",
            "labels": root / f"{cfg.prefix}-lall.mat"}


def dcmh_input_files(cfg: DcmhConfig, base_dir: Path) -> dict[str, Path]:
    files = _dcmh_files(cfg, base_dir)
    out = {p.name: p for p in files.values()}
    if cfg.classes:
        out["classes"] = resolve(base_dir, cfg.classes)
    return out


def dcmh_read(cfg: DcmhConfig, base_dir: Path) -> PairedData:
    files = _dcmh_files(cfg, base_dir)
    for what, p in files.items():
        require_file(p, f"DCMH {what}", "Check [prep] root/prefix (or file).")
    labels = read_mat(files["labels"], cfg.label_key, "DCMH labels")
    n = labels.shape[0] if labels.ndim == 2 else len(labels)
    images = open_images(files["images"], cfg.image_key, n, cfg.image_layout)
    tags = read_mat(files["text"], cfg.text_key, "DCMH tags")
    if tags.ndim != 2 or tags.shape[0] != n:
        raise DataError(f"{files['text']} [{cfg.text_key}]: shape {tags.shape}; expected {n} rows (one tag vector per "
                        f"image, as in {files['labels']} [{cfg.label_key}]).")
    tags = check_features(tags, str(files["text"]), cfg.text_key).astype(np.float32)
    info = {
        "format": "DCMH (IAll/YAll/LAll)",
        "files": {k: p.name for k, p in files.items()},
        "image_layout": images.layout,
        "image_shape": list(images.shape[1:]),
        "text_dim": int(tags.shape[1]),
    }
    return build(cfg, base_dir, dataset=cfg.name, n=n, labels=labels,
                 tables={"image": {"pixels": images}, "text": {"feat": tags}},
                 where=str(files["labels"]), info=info)


# -- DADH ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DadhConfig(_HashingConfig):
    adapter: str = option("dadh", "dataset adapter name")
    name: str = option("flickr25k", "dataset name (also the id prefix)")
    file: str = option("FLICKR-25K.mat", "the .mat file (images/YAll/LAll or image/text/label)")
    image_key: str = option("", "image feature variable (empty: 'images' or 'image')")
    text_key: str = option("", "text variable (empty: 'YAll' or 'text')")
    label_key: str = option("", "label variable (empty: 'LAll' or 'label')")


DADH_KEYS = {"image": ("images", "image"), "text": ("YAll", "text"), "label": ("LAll", "label")}


def dadh_input_files(cfg: DadhConfig, base_dir: Path) -> dict[str, Path]:
    out = {"file": resolve(base_dir, cfg.file)}
    if cfg.classes:
        out["classes"] = resolve(base_dir, cfg.classes)
    return out


def dadh_read(cfg: DadhConfig, base_dir: Path) -> PairedData:
    path = require_file(resolve(base_dir, cfg.file), "DADH .mat", "Check [prep] file.")
    names = mat_variables(path)
    keys: dict[str, str] = {}
    for role, given in (("image", cfg.image_key), ("text", cfg.text_key), ("label", cfg.label_key)):
        if given:
            keys[role] = given
            continue
        found = [k for k in DADH_KEYS[role] if k in names]
        if not found:
            raise DataError(f"{path}: no {role} variable ({' or '.join(DADH_KEYS[role])}); variables: {names}. "
                            f"Set [prep] {role}_key.")
        keys[role] = found[0]
    labels = read_mat(path, keys["label"], "DADH labels")
    n = labels.shape[0] if labels.ndim == 2 else len(labels)
    feats = {}
    for m, role in (("image", "image"), ("text", "text")):
        x = read_mat(path, keys[role], f"DADH {role}")
        if x.ndim != 2 or x.shape[0] != n:
            raise DataError(f"{path} [{keys[role]}]: shape {x.shape}; expected {n} rows, one per label row of "
                            f"[{keys['label']}].")
        feats[m] = check_features(x, str(path), keys[role]).astype(np.float32)
    info = {"format": "DADH", "file": path.name, "keys": keys,
            "feature_dims": {m: int(x.shape[1]) for m, x in feats.items()}}
    return build(cfg, base_dir, dataset=cfg.name, n=n, labels=labels,
                 tables={m: {"feat": x} for m, x in feats.items()}, where=str(path), info=info)


ADAPTERS = [
    Adapter(name="dcmh", config_cls=DcmhConfig, input_files=dcmh_input_files, read=dcmh_read,
            description="DCMH .mat (IAll raw images uint8, YAll tags, LAll multi-hot), v5 or v7.3"),
    Adapter(name="dadh", config_cls=DadhConfig, input_files=dadh_input_files, read=dadh_read,
            description="DADH .mat (images/image CNN features, YAll/text tags, LAll/label multi-hot)"),
]
