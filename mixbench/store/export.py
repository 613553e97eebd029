"""Export a store's features to other tools' formats.

``export_store(store_path, out_dir, format)`` with ``format``:

- ``dm2c``: the four files of jiangyangby/DM2C (``code/utils.py``): ``train_file.mat`` and
  ``test_file.mat`` (``X`` a cell array, one row (feature, id, modality flag) per instance, flag 0
  for the store's first modality and 1 for the second; ``y`` 1 × N, 1-based), ``train_img.mat`` and
  ``train_txt.mat`` (``X``: the training rows of one modality in the same row layout, which DM2C's
  single-modality loader reads by their first cell). Every instance is one row: halves of a
  still-linked pair become two rows; rows zero-filled by the ``zero`` unpairing mode
  (``present == 0``) are not instances and are left out.
- ``dadh``: one ``.mat`` in the DADH feature layout (``images``/``YAll``/``LAll``, or
  ``image``/``text``/``label`` with ``keys = "nus"``), one row per pair: query (test) rows first,
  then train, then val and the database rows not already written (DADH's ``query_size``,
  ``training_size``, ``db_size`` are in ``export.json``). A missing half is a zero-filled row, as
  UMML does. Labels are one-hot (single-label stores) or multi-hot.
- ``npz``: ``{split}/{modality}/{column}`` arrays (strings as unicode arrays) plus ``classes``.

Every file is written atomically and deterministically (fixed MATLAB header text, fixed zip
times), then ``export.json`` (last) lists the files with their sha256 and the store they came from.
Command line: ``python -m mixbench.store.export STORE OUT --format dm2c``.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.errors import ConfigError, DataError, MixbenchError, StoreError

from .manifest import atomic_write_bytes, atomic_write_json, now, sha256_file
from .shards import SPLIT_ORDER, STRING_DTYPE, Store, split_sort_key

log = logging.getLogger(__name__)

FORMATS = ("dm2c", "dadh", "npz")
EXPORT_RECORD = "export.json"
MAT_HEADER = b"MATLAB 5.0 MAT-file, written by mixbench (mixbench.store.export)"
DADH_KEYS = {"flickr": ("images", "YAll", "LAll"), "nus": ("image", "text", "label")}


# -- deterministic writers ------------------------------------------------------------------------
def mat_bytes(variables: dict[str, Any]) -> bytes:
    """``scipy.io.savemat`` output (v5) with the creation-time header replaced by fixed text."""
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=False, oned_as="row")
    raw = bytearray(buf.getvalue())
    raw[:116] = MAT_HEADER.ljust(116, b" ")
    return bytes(raw)


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """An ``.npz`` (readable by ``np.load``) with fixed member times and sorted member order."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[name]), allow_pickle=False)
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


# -- reading the store -------------------------------------------------------------------------------
def _instances(store: Store, split: str, modality: str) -> dict[str, np.ndarray]:
    """id, label, pair, feat of the rows of one modality that are instances (present != 0)."""
    cols = ["id", "label", "pair", "feat"] + (["present"] if store.has_column(modality, "present") else [])
    t = store.load(split, modality, cols)
    if "present" in t:
        keep = t.pop("present").astype(bool)
        t = {k: v[keep] for k, v in t.items()}
    t["feat"] = np.asarray(t["feat"], dtype=np.float32)
    return t


def _require_features(store: Store) -> None:
    for m in store.modalities:
        if not store.has_column(m, "feat"):
            raise StoreError(f"{store.path}: modality '{m}' has no 'feat' column (a raw store); run embed first, "
                             "then export the features store.")
    if len(store.modalities) != 2:
        raise StoreError(f"{store.path}: export needs exactly two modalities, the store has {store.modalities}.")


# -- formats -----------------------------------------------------------------------------------------
def _dm2c_cells(rows: list[tuple[np.ndarray, str, int]], with_names: bool) -> np.ndarray:
    """DM2C's X: one cell row per instance, (feature, file name, flag) or (feature, flag)."""
    X = np.empty((len(rows), 3 if with_names else 2), dtype=object)
    for i, (feat, rid, flag) in enumerate(rows):
        X[i, 0] = np.asarray(feat, dtype=np.float32).reshape(1, -1)
        if with_names:
            X[i, 1] = str(rid)
        X[i, -1] = np.array([[flag]], dtype=np.float64)
    return X


def export_dm2c(store: Store, with_names: bool = True) -> tuple[dict[str, bytes], dict[str, Any]]:
    """``with_names``: rows carry the id as DM2C's file name cell (its Wikipedia layout,
    ``has_filename = True``); false gives its NUS-WIDE layout (feature, flag)."""
    _require_features(store)
    if store.multilabel:
        raise DataError(f"{store.path}: multi-label store; DM2C needs one class per row. Use single_label_top_k at prep.")
    if "train" not in store.splits:
        raise StoreError(f"{store.path}: no 'train' split; DM2C's train_file.mat needs one.")
    m0, m1 = store.modalities
    files: dict[str, bytes] = {}
    record: dict[str, Any] = {"modality_flags": {m0: 0, m1: 1}, "rows": {}, "has_filename": with_names}
    for split, fname in (("train", "train_file.mat"), ("test", "test_file.mat")):
        if split not in store.splits:
            log.warning("export dm2c: %s has no '%s' split; %s not written", store.path, split, fname)
            continue
        rows: list[tuple[np.ndarray, str, int]] = []
        labels: list[np.ndarray] = []
        per_mod: dict[str, list[tuple[np.ndarray, str, int]]] = {}
        for flag, m in enumerate((m0, m1)):
            t = _instances(store, split, m)
            mod_rows = [(t["feat"][i], str(t["id"][i]), flag) for i in range(len(t["id"]))]
            per_mod[m] = mod_rows
            rows += mod_rows
            labels.append(t["label"])
        y = (np.concatenate(labels).astype(np.float64) + 1.0).reshape(1, -1)
        files[fname] = mat_bytes({"X": _dm2c_cells(rows, with_names), "y": y})
        record["rows"][split] = {m: len(v) for m, v in per_mod.items()}
        if split == "train":
            files["train_img.mat"] = mat_bytes({"X": _dm2c_cells(per_mod[m0], with_names)})
            files["train_txt.mat"] = mat_bytes({"X": _dm2c_cells(per_mod[m1], with_names)})
            record["train_img.mat"], record["train_txt.mat"] = m0, m1
    skipped = [s for s in store.splits if s not in ("train", "test")]
    if skipped:
        record["splits_not_exported"] = skipped
    return files, record


def export_dadh(store: Store, keys: str = "flickr", file_name: str | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    _require_features(store)
    if keys not in DADH_KEYS:
        raise ConfigError(f"keys = {keys!r}: must be one of {', '.join(DADH_KEYS)}.")
    m0, m1 = store.modalities
    d0, d1 = store.feat_dim(m0), store.feat_dim(m1)
    n_classes = store.n_classes
    order = ["test", "train", "val"] + sorted((s for s in store.splits if s not in SPLIT_ORDER), key=split_sort_key)
    blocks: dict[str, list[np.ndarray]] = {"a": [], "b": [], "y": []}
    seen_pairs: set[int] = set()
    sizes: dict[str, int] = {}
    zero_filled = {m0: 0, m1: 0}
    for split in [s for s in order if s in store.splits]:
        ta, tb = _instances(store, split, m0), _instances(store, split, m1)
        where_b = {int(p): i for i, p in enumerate(tb["pair"]) if p >= 0}
        used_b = np.zeros(len(tb["id"]), dtype=bool)
        xa: list[np.ndarray] = []
        xb: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        zero_a, zero_b = np.zeros(d0, np.float32), np.zeros(d1, np.float32)

        skip_seen = split not in ("test", "train", "val")  # database rows overlap train: skip repeats
        for i in range(len(ta["id"])):
            p = int(ta["pair"][i])
            j = where_b.get(p) if p >= 0 else None
            if j is not None:
                used_b[j] = True
                if not np.array_equal(ta["label"][i], tb["label"][j]):
                    raise DataError(f"{store.path} [{split}]: pair {p} has label {ta['label'][i]} in {m0} but "
                                    f"{tb['label'][j]} in {m1}; the store is inconsistent.")
            if skip_seen and p >= 0 and p in seen_pairs:
                continue
            if p >= 0:
                seen_pairs.add(p)
            if j is None:
                zero_filled[m1] += 1
            xa.append(ta["feat"][i])
            xb.append(tb["feat"][j] if j is not None else zero_b)
            ys.append(ta["label"][i])
        for j in np.flatnonzero(~used_b).tolist():
            p = int(tb["pair"][j])
            if skip_seen and p >= 0 and p in seen_pairs:
                continue
            if p >= 0:
                seen_pairs.add(p)
            zero_filled[m0] += 1
            xa.append(zero_a)
            xb.append(tb["feat"][j])
            ys.append(tb["label"][j])
        sizes[split] = len(ys)
        if ys:
            blocks["a"].append(np.stack(xa))
            blocks["b"].append(np.stack(xb))
            blocks["y"].append(np.stack(ys))
    if not blocks["y"]:
        raise StoreError(f"{store.path}: no rows to export.")
    a = np.concatenate(blocks["a"]).astype(np.float64)
    b = np.concatenate(blocks["b"]).astype(np.float64)
    y = np.concatenate(blocks["y"])
    if not store.multilabel:
        onehot = np.zeros((len(y), n_classes), dtype=np.float64)
        onehot[np.arange(len(y)), y.astype(np.int64)] = 1.0
        y = onehot
    else:
        y = y.astype(np.float64)
    ki, kt, kl = DADH_KEYS[keys]
    name = file_name or f"{store.dataset}.mat"
    q = sizes.get("test", 0)
    record = {
        "file": name,
        "keys": {m0: ki, m1: kt, "labels": kl},
        "rows": int(len(y)),
        "split_rows": sizes,
        "query_size": q,
        "training_size": sizes.get("train", 0),
        "db_size": int(len(y)) - q,
        "zero_filled": zero_filled,
        "row_order": "query (test) rows, then train, then val, then further splits (rows not already written)",
    }
    return {name: mat_bytes({ki: a, kt: b, kl: y})}, record


def export_npz(store: Store, compress: bool = False) -> tuple[dict[str, bytes], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {"classes": np.asarray(store.classes, dtype=str)}
    for split in store.splits:
        for m in store.modalities:
            t = store.load(split, m)
            for c, v in t.items():
                if store.schema[m][c].dtype == STRING_DTYPE:
                    v = np.asarray([str(s) for s in v], dtype=str) if len(v) else np.empty(0, dtype="<U1")
                arrays[f"{split}/{m}/{c}"] = v
    record = {"arrays": sorted(arrays), "layout": "{split}/{modality}/{column}"}
    return {f"{store.dataset}.npz": npz_bytes(arrays, compress)}, record


EXPORTERS: dict[str, Callable[..., tuple[dict[str, bytes], dict[str, Any]]]] = {
    "dm2c": export_dm2c,
    "dadh": export_dadh,
    "npz": export_npz,
}


def export_store(store_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], format: str, *,
                 overwrite: bool = False, **options: Any) -> dict[str, Any]:
    """Export the store at ``store_path`` to ``out_dir`` in ``format`` (``dm2c``, ``dadh``, ``npz``).

    ``options`` go to the format (``dadh``: ``keys="flickr"|"nus"``, ``file_name``; ``npz``:
    ``compress``). Returns the export record (also written as ``out_dir/export.json``).
    Existing files are replaced only with ``overwrite=True``."""
    if format not in EXPORTERS:
        raise ConfigError(f"format = {format!r}: unknown export format; available: {', '.join(FORMATS)}.")
    store = Store(store_path)
    files, details = EXPORTERS[format](store, **options)
    out = Path(out_dir)
    clash = [n for n in [*files, EXPORT_RECORD] if (out / n).exists()]
    if clash and not overwrite:
        raise StoreError(f"{out}: {', '.join(clash)} already exist; pass overwrite=True (CLI: --overwrite) or choose "
                         "another folder.")
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_RECORD).unlink(missing_ok=True)  # no stale record while files change
    listed = []
    for name in sorted(files):
        atomic_write_bytes(out / name, files[name])
        listed.append({"file": name, "bytes": len(files[name]), "sha256": sha256_file(out / name)})
    record = {
        "format": format,
        "options": options,
        "store": store.input_record(),
        "dataset": store.dataset,
        "classes": store.classes,
        "files": listed,
        "details": details,
        "written": now(),
    }
    atomic_write_json(out / EXPORT_RECORD, record)
    log.info("exported %s → %s (%s: %s)", store.path, out, format, ", ".join(files))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixbench.store.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="store folder (a features or benchmark store)")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--keys", default="flickr", choices=tuple(DADH_KEYS), help="dadh: variable names")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = {"keys": args.keys} if args.format == "dadh" else {}
    try:
        rec = export_store(args.store, args.out, args.format, overwrite=args.overwrite, **opts)
    except MixbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in rec["files"]:
        print(f"{Path(args.out) / f['file']}  {f['bytes']} bytes  sha256 {f['sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    sys.exit(main())
