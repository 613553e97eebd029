"""Wikipedia cross-modal dataset, original features (Rasiwasia et al., ACM MM 2010).

Files (in ``root``): ``raw_features.mat`` (``I_tr``/``I_te``: 128-d SIFT bag of visual words,
``T_tr``/``T_te``: 10-d LDA topic proportions), ``trainset_txt_img_cat.list`` and
``testset_txt_img_cat.list`` (``text-id<TAB>image-id<TAB>category 1..10``, line i ↔ feature row
i) and ``categories.list`` (10 names). Official split: 2,173 train / 693 test pairs.

Ids: image rows use the image id, text rows the text id; pair ids are 0..2865 in file order
(train first). Labels are 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixbench.config import option
from mixbench.errors import DataError

from .base import (
    Adapter,
    AdapterConfig,
    PairedData,
    SplitData,
    check_features,
    check_unique,
    require_file,
    resolve,
)

EXPECTED_ROWS = {"train": 2173, "test": 693}
LISTS = {"train": "trainset_txt_img_cat.list", "test": "testset_txt_img_cat.list"}
MAT_KEYS = {"train": ("I_tr", "T_tr"), "test": ("I_te", "T_te")}


@dataclass(frozen=True)
class WikipediaConfig(AdapterConfig):
    adapter: str = option("wikipedia", "dataset adapter name")
    root: str = option("data/wikipedia", "folder with raw_features.mat and the .list files")
    check_counts: bool = option(True, "require the official 2,173 / 693 rows (false: accept other counts)")


def input_files(cfg: WikipediaConfig, base_dir: Path) -> dict[str, Path]:
    root = resolve(base_dir, cfg.root)
    names = ["raw_features.mat", "categories.list", *LISTS.values()]
    return {n: root / n for n in names}


def _read_list(path: Path, n_classes: int) -> tuple[list[str], list[str], np.ndarray]:
    text_ids: list[str] = []
    image_ids: list[str] = []
    labels: list[int] = []
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); the list files are plain ASCII.") from None
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            raise DataError(
                f"{path}:{lineno}: expected 3 tab-separated fields (text id, image id, category), got {len(parts)}."
            )
        t, i, c = (p.strip() for p in parts)
        if not t or not i:
            raise DataError(f"{path}:{lineno} [{'text id' if not t else 'image id'}]: empty id.")
        try:
            cat = int(c)
        except ValueError:
            raise DataError(f"{path}:{lineno} [category]: {c!r} is not an integer 1..{n_classes}.") from None
        if not 1 <= cat <= n_classes:
            raise DataError(
                f"{path}:{lineno} [category]: {cat} is out of range; expected 1..{n_classes} "
                f"(categories.list has {n_classes} names)."
            )
        text_ids.append(t)
        image_ids.append(i)
        labels.append(cat - 1)
    return text_ids, image_ids, np.asarray(labels, dtype=np.int64)


def read(cfg: WikipediaConfig, base_dir: Path) -> PairedData:
    import scipy.io

    files = input_files(cfg, base_dir)
    fix = "Copy the dataset files there (see data/wikipedia/README.md) or set [prep] root."
    for name, path in files.items():
        require_file(path, f"Wikipedia {name}", fix)
    from ..validate import check_sha256sums

    verified = check_sha256sums(resolve(base_dir, cfg.root), list(files))
    classes = [c.strip() for c in files["categories.list"].read_text(encoding="utf-8").splitlines() if c.strip()]
    if not classes:
        raise DataError(f"{files['categories.list']}: no category names.")
    try:
        mat = scipy.io.loadmat(files["raw_features.mat"])
    except Exception as exc:  # scipy raises several types for damaged files
        raise DataError(f"{files['raw_features.mat']}: cannot read as a MATLAB file ({exc}).") from None
    splits: dict[str, SplitData] = {}
    offset = 0
    all_text: list[str] = []
    all_image: list[str] = []
    for split in ("train", "test"):
        list_path = files[LISTS[split]]
        text_ids, image_ids, labels = _read_list(list_path, len(classes))
        ikey, tkey = MAT_KEYS[split]
        for key in (ikey, tkey):
            if key not in mat:
                raise DataError(f"{files['raw_features.mat']} [{key}]: variable missing; found {sorted(k for k in mat if not k.startswith('__'))}.")
        img = check_features(mat[ikey], str(files["raw_features.mat"]), ikey, ids=image_ids)
        txt = check_features(mat[tkey], str(files["raw_features.mat"]), tkey, ids=text_ids)
        n = len(labels)
        for key, arr in ((ikey, img), (tkey, txt)):
            if arr.shape[0] != n:
                raise DataError(
                    f"{files['raw_features.mat']} [{key}] has {arr.shape[0]} rows but {list_path} has {n} lines; "
                    "row i of the features must match line i of the list."
                )
        if cfg.check_counts and n != EXPECTED_ROWS[split]:
            raise DataError(
                f"{list_path}: {n} rows, the official {split} split has {EXPECTED_ROWS[split]}; "
                "set [prep] check_counts = false to accept another count."
            )
        all_text += text_ids
        all_image += image_ids
        splits[split] = SplitData(
            pair=np.arange(offset, offset + n, dtype=np.int64),
            labels=labels,
            tables={
                "image": {"id": np.asarray(image_ids, dtype=object), "feat": img.astype(np.float32)},
                "text": {"id": np.asarray(text_ids, dtype=object), "feat": txt.astype(np.float32)},
            },
        )
        offset += n
    check_unique(all_image, f"{files[LISTS['train']].parent}/*.list", "image id")
    check_unique(all_text, f"{files[LISTS['train']].parent}/*.list", "text id")
    return PairedData(
        dataset="wikipedia",
        classes=classes,
        splits=splits,
        info={
            "source": "Rasiwasia et al., A New Approach to Cross-Modal Multimedia Retrieval, ACM MM 2010",
            "features": {"image": "128-d SIFT bag of visual words", "text": "10-d LDA topic proportions"},
            "split": "official 2,173 / 693",
            "sha256sums_checked": verified,
        },
    )


ADAPTER = Adapter(
    name="wikipedia",
    config_cls=WikipediaConfig,
    input_files=input_files,
    read=read,
    description="Wikipedia image/text (Rasiwasia 2010): 128-d SIFT-BoW image, 10-d LDA text, 10 classes",
)
