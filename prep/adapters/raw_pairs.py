"""Raw image + text pairs → a *raw* paired store (the encoders of ``embed`` read it).

Two input layouts:

- a manifest, CSV (header row) or JSONL (one object per line), with the columns ``image`` (path
  relative to ``image_root``, default the manifest's folder), ``text`` (a caption, or space/comma
  separated tags), ``label`` (a class name or integer id) or ``labels`` (several, separated by
  ``label_separator`` in CSV or a list in JSONL: a multi-label set), and optionally ``split``
  (train/val/test) and ``id``;
- a folder ``root/<class>/<name>.{jpg,jpeg,png,webp}`` with the caption ``<name>.txt`` beside
  each image (id ``<class>/<name>``).

Store schema: image table ``id, label, pair, path`` (``path`` relative to ``info["image_root"]``,
recorded absolute), text table ``id, label, pair, text``. Pair id = the row's 0-based position in
the manifest (folder layout: in sorted order).

Checks at prep (no image is decoded here; decode errors are caught by the encoders): the image
file exists, is not empty and can be read; the text is valid UTF-8 and not empty after stripping.
A failing row is *rejected* with its reason and its partner half with ``partner-rejected: …``
(the rejects contract in :mod:`prep.validate`); more than ``max_reject_fraction`` rejected fails
the stage. Structural problems (missing columns, unknown labels or split values, an id listed
twice) are errors naming the file, the line and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import Adapter, AdapterConfig, PairedData, require_file, resolve

log = logging.getLogger(__name__)

MODALITIES = ("image", "text")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
KNOWN_COLUMNS = ("image", "text", "label", "labels", "split", "id")


@dataclass(frozen=True)
class RawPairsConfig(AdapterConfig):
    adapter: str = option("raw-pairs", "dataset adapter name")
    name: str = option("raw-pairs", "dataset name recorded in the manifest")
    manifest: str = option("", "CSV or JSONL manifest (columns image, text, label|labels, [split], [id])")
    root: str = option("", "folder layout root/<class>/<name>.<ext> with <name>.txt captions (instead of a manifest)")
    image_root: str = option("", "folder the manifest's image paths are relative to (default: the manifest's folder)")
    classes: str = option("", "optional file with one class name per line (fixes the label order)")
    label_separator: str = option("|", "separator of several labels in a CSV 'labels' cell")
    test_fraction: float = option(0.2, "test share of the seeded stratified split (when no split column)",
                                  low=0.0, high=1.0, high_open=True)
    val_fraction: float = option(0.0, "val share of the seeded stratified split", low=0.0, high=1.0, high_open=True)
    seed: int = option(0, "seed of the split and of the single-label selection")
    max_reject_fraction: float = option(0.05, "fail when more than this share of input rows is rejected",
                                        low=0.0, high=1.0)
    single_label_top_k: int = option(0, "multi-label only: keep the K largest concepts, rows with exactly one (0: off)",
                                     low=0)
    single_label_per_class: int = option(0, "with single_label_top_k: rows drawn per concept (0: all)", low=0)

    def validate(self) -> None:
        if bool(self.manifest) == bool(self.root):
            raise ConfigError("[prep]: give either manifest = 'pairs.csv|.jsonl' or root = 'folder' (one of the two).")
        if self.manifest and not self.manifest.lower().endswith((".csv", ".jsonl", ".json")):
            raise ConfigError(f"[prep] manifest = {self.manifest!r}: expected a .csv or .jsonl file.")
        if not self.label_separator:
            raise ConfigError("[prep] label_separator: must not be empty.")


# -- input rows ----------------------------------------------------------------------------------
@dataclass
class Row:
    line: int  # manifest line (folder layout: 0-based position)
    id: str
    image: str  # as given (relative to image_root)
    text: str | None  # None: caption file missing / unreadable (reason in text_problem)
    labels: list[str]
    split: str | None
    text_file: str = ""
    text_problem: str | None = None
    where: str = ""  # "manifest:line" or the image file, for messages


def _image_root(cfg: RawPairsConfig, base: Path) -> Path:
    if cfg.manifest:
        return resolve(base, cfg.image_root) if cfg.image_root else resolve(base, cfg.manifest).parent
    return resolve(base, cfg.root)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def read_records(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """A CSV (header row) or JSONL (one object per line) listing: its column names (CSV: header order;
    JSONL: sorted union of the keys) and ``(line number, record)`` per row. UTF-8, a BOM dropped."""
    from ..validate import decode_utf8

    text = decode_utf8(path.read_bytes()).removeprefix("\ufeff")
    records: list[tuple[int, dict[str, Any]]] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        columns = [c.strip() for c in (reader.fieldnames or [])]
        reader.fieldnames = columns
        for rec in reader:
            if None in rec:
                raise DataError(f"{path}:{reader.line_num}: more fields than the {len(columns)} header columns.")
            records.append((reader.line_num, rec))
        return columns, records
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not a JSON object ({exc.msg} at column {exc.colno}).") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line, got {type(rec).__name__}.")
        seen.update(rec)
        records.append((lineno, rec))
    return sorted(seen), records


def _manifest_rows(cfg: RawPairsConfig, path: Path) -> tuple[list[Row], str]:
    """Parse the manifest; returns (rows, label column name)."""
    require_file(path, "raw-pairs manifest", "Check [prep] manifest.")
    columns, records = read_records(path)
    for need in ("image", "text"):
        if need not in columns:
            raise DataError(f"{path}: no '{need}' column; columns: {columns}. Required: image, text, label or labels.")
    if "label" in columns and "labels" in columns:
        raise DataError(f"{path}: both 'label' and 'labels' columns; keep one ('labels' for several per row).")
    label_col = "labels" if "labels" in columns else "label"
    if label_col not in columns:
        raise DataError(f"{path}: no 'label' or 'labels' column; columns: {columns}.")
    extra = [c for c in columns if c not in KNOWN_COLUMNS]
    if extra:
        log.info("%s: ignoring columns %s", path, extra)
    rows: list[Row] = []
    for i, (lineno, rec) in enumerate(records):
        raw_labels = rec.get(label_col)
        if label_col == "labels":
            if isinstance(raw_labels, list):
                labels = [_cell(v).strip() for v in raw_labels]
            else:
                labels = [t.strip() for t in _cell(raw_labels).split(cfg.label_separator)]
            labels = [t for t in labels if t]
        else:
            labels = [_cell(raw_labels).strip()] if _cell(raw_labels).strip() else []
        if not labels:
            raise DataError(f"{path}:{lineno} [{label_col}]: empty; every row needs a class (name or integer id).")
        rid = _cell(rec.get("id")).strip() if "id" in columns else f"{cfg.name}-{i:06d}"
        if not rid:
            raise DataError(f"{path}:{lineno} [id]: empty id; give every row an id or drop the id column.")
        split = _cell(rec.get("split")).strip().lower() if "split" in columns else None
        rows.append(Row(line=lineno, id=rid, image=_cell(rec.get("image")).strip(), text=_cell(rec.get("text")),
                        labels=labels, split=split, where=f"{path}:{lineno}"))
    return rows, label_col


def _folder_items(root: Path) -> Iterator[tuple[str, Path]]:
    """(class name, image path) in sorted order."""
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for img in sorted(cls_dir.iterdir()):
            if img.is_file() and img.suffix.lower() in IMAGE_EXTENSIONS:
                yield cls_dir.name, img


def _folder_rows(root: Path) -> list[Row]:
    from ..validate import decode_utf8

    if not root.is_dir():
        raise DataError(f"{root}: no such folder (raw-pairs root). Check [prep] root.")
    rows: list[Row] = []
    for i, (cls, img) in enumerate(_folder_items(root)):
        cap = img.with_suffix(".txt")
        text: str | None = None
        problem = None
        if not cap.is_file():
            problem = "missing caption file"
        else:
            try:
                text = decode_utf8(cap.read_bytes())
            except OSError:
                problem = "unreadable caption file"
        rows.append(Row(line=i, id=f"{cls}/{img.stem}", image=img.relative_to(root).as_posix(), text=text,
                        labels=[cls], split=None, text_file=cap.relative_to(root).as_posix(), text_problem=problem,
                        where=str(img)))
    if not rows:
        raise DataError(
            f"{root}: no images found; expected root/<class>/<name>.{{{','.join(e[1:] for e in IMAGE_EXTENSIONS)}}} "
            "with <name>.txt captions beside them."
        )
    return rows


def _rows(cfg: RawPairsConfig, base: Path) -> tuple[list[Row], str, str]:
    """(rows, label column, where) for either layout."""
    if cfg.manifest:
        path = resolve(base, cfg.manifest)
        rows, label_col = _manifest_rows(cfg, path)
        return rows, label_col, str(path)
    root = resolve(base, cfg.root)
    return _folder_rows(root), "label", str(root)


# -- labels ------------------------------------------------------------------------------------
def _classes(cfg: RawPairsConfig, base: Path, rows: list[Row], where: str,
             label_col: str) -> tuple[list[str], dict[str, int], str]:
    """Class names, token → id map, and how the class list was made."""
    tokens = sorted({t for r in rows for t in r.labels})
    if cfg.classes:
        from .paired_features import read_class_names

        names = read_class_names(resolve(base, cfg.classes))
        lookup = {n: i for i, n in enumerate(names)}
        for r in rows:
            for t in r.labels:
                if t in lookup:
                    continue
                if t.lstrip("-").isdigit() and 0 <= int(t) < len(names):
                    lookup[t] = int(t)
                    continue
                raise DataError(
                    f"{r.where} [{label_col}]: unknown class {t!r}; {cfg.classes} lists {len(names)} classes "
                    f"({', '.join(names[:10])}{', ...' if len(names) > 10 else ''}). Fix the label or add the class."
                )
        return names, lookup, f"from {cfg.classes}"
    if tokens and all(t.lstrip("-").isdigit() for t in tokens):
        ids = {t: int(t) for t in tokens}
        neg = [t for t in tokens if ids[t] < 0]
        if neg:
            r = next(r for r in rows if neg[0] in r.labels)
            raise DataError(f"{r.where} [{label_col}]: class {neg[0]} is negative; integer labels are 0-based ids.")
        n = max(ids.values()) + 1
        return [str(i) for i in range(n)], ids, "integer ids 0..C-1"
    for r in rows:
        for t in r.labels:
            try:
                fv = float(t)
            except ValueError:
                continue
            if not fv.is_integer():
                raise DataError(f"{r.where} [{label_col}]: {t!r} is not a class name or an integer class id.")
    return tokens, {t: i for i, t in enumerate(tokens)}, "sorted label names"


# -- fingerprint -------------------------------------------------------------------------------
def fingerprint(cfg: RawPairsConfig, base_dir: Path) -> dict[str, Any]:
    """A checksum over the listed images and captions (relative path, size, mtime): the images
    are not hashed, but replacing, adding or fixing one changes the run key."""
    rows, _, _ = _rows(cfg, base_dir)
    return listing_fingerprint(_image_root(cfg, base_dir), [[r.image, r.text_file] for r in rows])


def listing_fingerprint(root: Path, rows: list[list[str]]) -> dict[str, Any]:
    """sha256 over each row's files (relative path, size, mtime; "missing" for an absent one),
    in row order; empty paths are skipped."""
    h = hashlib.sha256()
    for files in rows:
        for rel in files:
            if not rel:
                continue
            try:
                st = (root / rel).stat()
                h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            except OSError:
                h.update(f"{rel}\tmissing\n".encode("utf-8", "surrogateescape"))
    return {"files": {"root": str(root.resolve()), "listing_sha256": h.hexdigest(), "rows": len(rows)}}


def input_files(cfg: RawPairsConfig, base_dir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if cfg.manifest:
        files["manifest"] = resolve(base_dir, cfg.manifest)
    if cfg.classes:
        files["classes"] = resolve(base_dir, cfg.classes)
    return files


# -- checks ------------------------------------------------------------------------------------
def image_problem(path: Path) -> str | None:
    """Why an image file cannot be used (without decoding it), or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing file"
    except OSError:
        return "unreadable file"
    if not path.is_file():
        return "not a file"
    if st.st_size == 0:
        return "empty file"
    try:
        with open(path, "rb") as f:
            f.read(16)
    except OSError:
        return "unreadable file"
    return None


def text_problem(text: str | None) -> str | None:
    from ..validate import utf8_error

    if text is None:
        return "missing text"
    if utf8_error(text):
        return "invalid UTF-8"
    if not text.strip():
        return "empty text"
    return None


def read(cfg: RawPairsConfig, base_dir: Path) -> PairedData:
    from ..multilabel import select_single_label
    from ..validate import REJECTS_FILE, SPLIT_VALUES, Rejects, stratified_split, utf8_error

    rows, label_col, where = _rows(cfg, base_dir)
    image_root = _image_root(cfg, base_dir)
    _unique_ids(rows)
    classes, lookup, classes_from = _classes(cfg, base_dir, rows, where, label_col)
    multilabel = label_col == "labels"
    n_all = len(rows)
    if multilabel:
        labels = np.zeros((n_all, len(classes)), dtype=np.uint8)
        for i, r in enumerate(rows):
            labels[i, [lookup[t] for t in r.labels]] = 1
    else:
        labels = np.asarray([lookup[r.labels[0]] for r in rows], dtype=np.int64)
    if not multilabel and cfg.single_label_top_k:
        raise ConfigError("[prep] single_label_top_k: only for multi-label manifests (a 'labels' column).")
    pair_all = np.arange(n_all, dtype=np.int64)
    info: dict[str, Any] = {}
    keep = np.arange(n_all)
    if multilabel and cfg.single_label_top_k:
        sel = select_single_label(labels, classes, top_k=cfg.single_label_top_k,
                                  per_class=cfg.single_label_per_class, rng=np.random.default_rng(cfg.seed),
                                  seed=cfg.seed, source=where)
        keep, labels, classes, multilabel = sel.rows, sel.labels, sel.classes, False
        info["single_label"] = sel.info
    else:
        labels = labels[keep]
    rows = [rows[i] for i in keep]
    pair = pair_all[keep]

    # split (over input rows, so the accounting is per split)
    if any(r.split is not None for r in rows):
        for r in rows:
            if r.split not in SPLIT_VALUES:
                raise DataError(f"{r.where} [split]: unknown split {r.split!r}; allowed: {', '.join(SPLIT_VALUES)}.")
        index = {s: np.asarray([i for i, r in enumerate(rows) if r.split == s], dtype=np.int64) for s in SPLIT_VALUES}
        index = {s: v for s, v in index.items() if len(v)}
        split_info: dict[str, Any] = {"method": "from the manifest's split column"}
    else:
        index, split_info = stratified_split(labels, test_fraction=cfg.test_fraction,
                                             val_fraction=cfg.val_fraction, rng=np.random.default_rng(cfg.seed))
        split_info["seed"] = cfg.seed
    order = [s for s in ("train", "val", "test") if s in index]

    rejects = Rejects()
    kept: dict[str, list[int]] = {s: [] for s in order}
    for split in order:
        idx = index[split]
        rejects.count_input(split, MODALITIES, len(idx))
        for i in tqdm(idx, desc=f"check {split}", unit="pair", disable=len(idx) < 5000):
            r = rows[int(i)]
            if not r.image:
                img_reason: str | None = "missing file"
            elif utf8_error(r.image):
                img_reason = "invalid UTF-8 in path"
            else:
                img_reason = image_problem(image_root / r.image)
            txt_reason = r.text_problem or text_problem(r.text)
            halves = {"image": (r.id, r.image, img_reason), "text": (r.id, r.text_file, txt_reason)}
            if not rejects.reject_pair(split, int(pair[i]), halves):
                kept[split].append(int(i))

    from .base import SplitData

    splits: dict[str, SplitData] = {}
    for split in order:
        k = np.asarray(kept[split], dtype=np.int64)
        if len(k) == 0:
            log.warning("raw-pairs: every row of split '%s' was rejected", split)
            continue
        ids = np.asarray([rows[i].id for i in k], dtype=object)
        splits[split] = SplitData(
            pair=pair[k],
            labels=labels[k],
            tables={
                "image": {"id": ids, "path": np.asarray([_relative(rows[i].image, image_root) for i in k], dtype=object)},
                "text": {"id": ids, "text": np.asarray([rows[i].text.strip() for i in k], dtype=object)},  # type: ignore[union-attr]
            },
        )
    if not splits:
        raise DataError(f"{where}: every row was rejected ({rejects.by_reason()}); nothing to write.")
    split_info["rows_kept"] = {s: int(len(kept[s])) for s in order}
    info.update({
        "layout": "manifest" if cfg.manifest else "folder",
        "source": str(Path(where).resolve()),
        "image_root": str(image_root.resolve()),
        "classes_from": classes_from,
        "split": split_info,
        **rejects.info(),
    })
    return PairedData(dataset=cfg.name, classes=classes, splits=splits, multilabel=multilabel, info=info,
                      files={REJECTS_FILE: rejects.jsonl()})


def _relative(p: str, image_root: Path) -> str:
    """The stored path: relative to ``image_root`` (absolute manifest paths are made relative)."""
    rel = os.path.relpath(p, image_root) if Path(p).is_absolute() else os.path.normpath(p)
    return Path(rel).as_posix()


def _unique_ids(rows: list[Row]) -> None:
    """An id listed twice is an error naming both rows (manifest lines, or image files)."""
    seen: dict[str, Row] = {}
    for r in rows:
        if r.id in seen:
            raise DataError(
                f"{r.where} [id]: id {r.id!r} is already used at {seen[r.id].where}; ids must be unique "
                "(remove the duplicate row or give it another id)."
            )
        seen[r.id] = r


ADAPTER = Adapter(
    name="raw-pairs",
    config_cls=RawPairsConfig,
    input_files=input_files,
    read=read,
    description="raw image files + captions/tags (CSV/JSONL manifest or class folders) → raw paired store",
    fingerprint=fingerprint,
)
