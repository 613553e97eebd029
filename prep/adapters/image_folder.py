"""Image-only data (CIFAR, STL, ImageNet subsets, any folder of class sub-folders) → a raw store
with one modality, ``image``. embed gives it a text half (``[embed.text_source]``, TAC's WordNet
noun retrieval), after which it is a paired store that unpair accepts.

Two input layouts:

- a folder ``root/<class>/<name>.{jpg,jpeg,png,webp}`` (id ``<class>/<name>``), optionally with
  split folders ``root/<split>/<class>/...`` (``split_folders = true``; split names train/val/test);
- a list file, CSV (header row) or JSONL, with the columns ``image`` (path relative to
  ``image_root``, default the list's folder), ``label`` (class name or integer id), optionally
  ``split`` and ``id``.

Store schema: image table ``id, label, pair, path``. Checks, rejects and accounting are
raw-pairs' (:func:`prep.adapters.raw_pairs.image_problem`, :class:`prep.validate.Rejects`): a
missing, empty or unreadable image file is rejected with its reason (decode errors are caught by
the encoder in embed and accounted there); more than ``max_reject_fraction`` fails the stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mixbench.config import option
from mixbench.errors import ConfigError, DataError

from .base import Adapter, AdapterConfig, PairedData, SplitData, require_file, resolve
from .raw_pairs import (
    IMAGE_EXTENSIONS,
    Row,
    _classes,
    _folder_items,
    _relative,
    _unique_ids,
    image_problem,
    listing_fingerprint,
    read_records,
)

log = logging.getLogger(__name__)

MODALITY = "image"


@dataclass(frozen=True)
class ImageFolderConfig(AdapterConfig):
    adapter: str = option("image-folder", "dataset adapter name")
    name: str = option("image-folder", "dataset name recorded in the manifest")
    root: str = option("", "folder layout root/<class>/<name>.<ext> (or root/<split>/<class>/... with split_folders)")
    list: str = option("", "CSV or JSONL list (columns image, label, [split], [id]) instead of a folder")
    image_root: str = option("", "folder the list's image paths are relative to (default: the list's folder)")
    split_folders: bool = option(False, "folder layout: the first level is the split (train/val/test), then classes")
    classes: str = option("", "optional file with one class name per line (fixes the label order)")
    test_fraction: float = option(0.2, "test share of the seeded stratified split (when no split is given)",
                                  low=0.0, high=1.0, high_open=True)
    val_fraction: float = option(0.0, "val share of the seeded stratified split", low=0.0, high=1.0, high_open=True)
    seed: int = option(0, "seed of the split")
    max_reject_fraction: float = option(0.05, "fail when more than this share of input images is rejected",
                                        low=0.0, high=1.0)

    def validate(self) -> None:
        if bool(self.root) == bool(self.list):
            raise ConfigError("[prep]: give either root = 'folder' or list = 'images.csv|.jsonl' (one of the two).")
        if self.list and not self.list.lower().endswith((".csv", ".jsonl", ".json")):
            raise ConfigError(f"[prep] list = {self.list!r}: expected a .csv or .jsonl file.")
        if self.list and self.split_folders:
            raise ConfigError("[prep] split_folders is for the folder layout; a list gives splits in a 'split' column.")


def _image_root(cfg: ImageFolderConfig, base: Path) -> Path:
    if cfg.list:
        return resolve(base, cfg.image_root) if cfg.image_root else resolve(base, cfg.list).parent
    return resolve(base, cfg.root)


def _list_rows(cfg: ImageFolderConfig, path: Path) -> list[Row]:
    require_file(path, "image-folder list", "Check [prep] list.")
    columns, records = read_records(path)
    for need in ("image", "label"):
        if need not in columns:
            raise DataError(f"{path}: no '{need}' column; columns: {sorted(columns)}. Required: image, label.")
    rows = []
    for i, (lineno, rec) in enumerate(records):
        label = str(rec.get("label") or "").strip()
        if not label:
            raise DataError(f"{path}:{lineno} [label]: empty; every row needs a class (name or integer id).")
        rid = str(rec.get("id") or "").strip() if "id" in columns else f"{cfg.name}-{i:06d}"
        if not rid:
            raise DataError(f"{path}:{lineno} [id]: empty id; give every row an id or drop the id column.")
        split = str(rec.get("split") or "").strip().lower() if "split" in columns else None
        rows.append(Row(line=lineno, id=rid, image=str(rec.get("image") or "").strip(), text="", labels=[label],
                        split=split, where=f"{path}:{lineno}"))
    if not rows:
        raise DataError(f"{path}: no rows; list one image per row (columns image, label, [split], [id]).")
    return rows


def _folder_rows(cfg: ImageFolderConfig, root: Path) -> list[Row]:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (image-folder root). Check [prep] root.")
    from ..validate import SPLIT_VALUES

    tops: list[tuple[str | None, Path]] = [(None, root)]
    if cfg.split_folders:
        tops = [(s, root / s) for s in SPLIT_VALUES if (root / s).is_dir()]
        if not tops:
            raise DataError(f"{root}: split_folders = true but no train/val/test sub-folder; expected "
                            "root/<split>/<class>/<name>.jpg.")
    rows: list[Row] = []
    for split, top in tops:
        for cls, img in _folder_items(top):
            rel = img.relative_to(root).as_posix()
            rows.append(Row(line=len(rows), id=rel.rsplit(".", 1)[0], image=rel, text="", labels=[cls],
                            split=split, where=str(img)))
    if not rows:
        raise DataError(f"{root}: no images found; expected root/<class>/<name>.{{{','.join(e[1:] for e in IMAGE_EXTENSIONS)}}}"
                        f"{' under root/<split>/' if cfg.split_folders else ''}.")
    return rows


def _rows(cfg: ImageFolderConfig, base: Path) -> tuple[list[Row], str]:
    if cfg.list:
        path = resolve(base, cfg.list)
        return _list_rows(cfg, path), str(path)
    root = resolve(base, cfg.root)
    return _folder_rows(cfg, root), str(root)


def fingerprint(cfg: ImageFolderConfig, base_dir: Path) -> dict[str, Any]:
    """A checksum over the listed images (relative path, size, mtime), as raw-pairs'."""
    rows, _ = _rows(cfg, base_dir)
    return listing_fingerprint(_image_root(cfg, base_dir), [[r.image] for r in rows])


def input_files(cfg: ImageFolderConfig, base_dir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if cfg.list:
        files["list"] = resolve(base_dir, cfg.list)
    if cfg.classes:
        files["classes"] = resolve(base_dir, cfg.classes)
    return files


def read(cfg: ImageFolderConfig, base_dir: Path) -> PairedData:
    from ..validate import REJECTS_FILE, SPLIT_VALUES, Rejects, stratified_split, utf8_error

    rows, where = _rows(cfg, base_dir)
    image_root = _image_root(cfg, base_dir)
    _unique_ids(rows)
    classes, lookup, classes_from = _classes(cfg, base_dir, rows, where, "label")  # type: ignore[arg-type]
    labels = np.asarray([lookup[r.labels[0]] for r in rows], dtype=np.int64)
    pair = np.arange(len(rows), dtype=np.int64)
    if any(r.split is not None for r in rows):
        for r in rows:
            if r.split not in SPLIT_VALUES:
                raise DataError(f"{r.where} [split]: unknown split {r.split!r}; allowed: {', '.join(SPLIT_VALUES)}.")
        index = {s: np.asarray([i for i, r in enumerate(rows) if r.split == s], dtype=np.int64) for s in SPLIT_VALUES}
        index = {s: v for s, v in index.items() if len(v)}
        split_info: dict[str, Any] = {"method": "from split folders" if cfg.split_folders else "from the list's split column"}
    else:
        index, split_info = stratified_split(labels, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                                             rng=np.random.default_rng(cfg.seed))
        split_info["seed"] = cfg.seed
    order = [s for s in ("train", "val", "test") if s in index]

    rejects = Rejects()
    splits: dict[str, SplitData] = {}
    kept_count: dict[str, int] = {}
    for split in order:
        idx = index[split]
        rejects.count_input(split, [MODALITY], len(idx))
        kept = []
        for i in idx:
            r = rows[int(i)]
            reason = ("missing file" if not r.image else "invalid UTF-8 in path" if utf8_error(r.image)
                      else image_problem(image_root / r.image))
            if rejects.reject_pair(split, int(pair[i]), {MODALITY: (r.id, r.image, reason)}):
                continue
            kept.append(int(i))
        kept_count[split] = len(kept)
        if not kept:
            log.warning("image-folder: every image of split '%s' was rejected", split)
            continue
        k = np.asarray(kept, dtype=np.int64)
        splits[split] = SplitData(pair=pair[k], labels=labels[k], tables={MODALITY: {
            "id": np.asarray([rows[i].id for i in k], dtype=object),
            "path": np.asarray([_relative(rows[i].image, image_root) for i in k], dtype=object)}})
    if not splits:
        raise DataError(f"{where}: every image was rejected ({rejects.by_reason()}); nothing to write.")
    split_info["rows_kept"] = kept_count
    info = {"layout": "list" if cfg.list else "folder", "source": str(Path(where).resolve()),
            "image_root": str(image_root.resolve()), "classes_from": classes_from, "split": split_info,
            "image_only": True, **rejects.info()}
    return PairedData(dataset=cfg.name, classes=classes, splits=splits, info=info,
                      files={REJECTS_FILE: rejects.jsonl()})


ADAPTER = Adapter(
    name="image-folder",
    config_cls=ImageFolderConfig,
    input_files=input_files,
    read=read,
    description="image-only data: class folders root/<class>/*.jpg or a CSV/JSONL list → raw store with one "
                "modality (embed's text_source gives it a text half)",
    fingerprint=fingerprint,
)
