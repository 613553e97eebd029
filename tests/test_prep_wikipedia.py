"""The Wikipedia adapter on the real files shipped in data/wikipedia."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import prep
from mixbench.errors import DataError
from mixbench.store.shards import Store

COUNTS = [172, 360, 340, 333, 267, 236, 237, 185, 285, 451]  # per class over all 2,866 pairs


def test_real_store(wiki_paired: Path, wikipedia_dir: Path) -> None:
    s = Store(wiki_paired)
    assert s.kind == "paired" and s.dataset == "wikipedia" and not s.multilabel
    assert s.classes[0] == "art" and s.classes[-1] == "warfare" and s.n_classes == 10
    assert s.splits == ["train", "test"]
    assert [s.rows("train", m) for m in s.modalities] == [2173, 2173]
    assert [s.rows("test", m) for m in s.modalities] == [693, 693]
    assert s.feat_dim("image") == 128 and s.feat_dim("text") == 10
    tr_i, tr_t = s.load("train", "image"), s.load("train", "text")
    te_i = s.load("test", "image")
    labels = np.concatenate([tr_i["label"], te_i["label"]])
    assert labels.min() == 0 and labels.max() == 9
    assert np.bincount(labels).tolist() == COUNTS
    np.testing.assert_array_equal(tr_i["label"], tr_t["label"])
    np.testing.assert_array_equal(tr_i["pair"], np.arange(2173))
    np.testing.assert_array_equal(te_i["pair"], np.arange(2173, 2866))
    # ids come from the list files: line i = text id, image id, category
    first = (wikipedia_dir / "trainset_txt_img_cat.list").read_text().splitlines()[0].split("\t")
    assert tr_t["id"][0] == first[0] and tr_i["id"][0] == first[1] and tr_i["label"][0] == int(first[2]) - 1
    mat = scipy.io.loadmat(wikipedia_dir / "raw_features.mat")
    np.testing.assert_allclose(tr_i["feat"], mat["I_tr"].astype(np.float32))
    np.testing.assert_allclose(s.load("test", "text")["feat"], mat["T_te"].astype(np.float32))
    entry = s.lineage[0]
    assert entry["stage"] == "prep" and entry["inputs"]["raw_features.mat"]["sha256"].startswith("ca628f76")


def _copy(wikipedia_dir: Path, dst: Path) -> Path:
    """A copy to damage on purpose: without SHA256SUMS, which would (rightly) stop prep first."""
    shutil.copytree(wikipedia_dir, dst, ignore=shutil.ignore_patterns("SHA256SUMS"))
    return dst


def test_bad_list_lines_and_counts(tmp_path: Path, wikipedia_dir: Path) -> None:
    root = _copy(wikipedia_dir, tmp_path / "wiki")
    lst = root / "testset_txt_img_cat.list"
    lines = lst.read_text().splitlines()
    lst.write_text("\n".join(lines[:-1]) + "\n")  # one line fewer than the feature rows
    with pytest.raises(DataError, match=r"\[I_te\] has 693 rows but .*testset_txt_img_cat.list has 692 lines"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o1")
    t, i, _ = lines[5].split("\t")
    lst.write_text("\n".join(lines[:5] + [f"{t}\t{i}\t11"] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r"testset_txt_img_cat.list:6 \[category\]: 11 is out of range"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o2")
    lst.write_text("\n".join(lines[:5] + [f"{t}\t{i}\tart"] + lines[6:]) + "\n")
    with pytest.raises(DataError, match=r":6 \[category\]: 'art' is not an integer"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o3")
    lst.write_text("\n".join(lines[:5] + [lines[3]] + lines[6:]) + "\n")  # an id listed twice
    with pytest.raises(DataError, match="already used on row"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o4")
    assert not (tmp_path / "o4" / "manifest.json").exists()


def test_missing_unreadable_and_nan(tmp_path: Path, wikipedia_dir: Path) -> None:
    root = _copy(wikipedia_dir, tmp_path / "wiki")
    (root / "categories.list").unlink()
    with pytest.raises(DataError, match=r"categories.list: missing"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o")
    shutil.copy(wikipedia_dir / "categories.list", root / "categories.list")
    mat = scipy.io.loadmat(root / "raw_features.mat")
    mat = {k: v for k, v in mat.items() if not k.startswith("__")}
    mat["T_tr"] = mat["T_tr"].copy()
    mat["T_tr"][17, 3] = np.inf
    scipy.io.savemat(root / "raw_features.mat", mat)
    with pytest.raises(DataError, match=r"\[T_tr\]: row 17 \(id [^)]+\), column 3 is inf"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o")
    (root / "raw_features.mat").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read as a MATLAB file"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "o")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_bundled_copy_is_the_documented_one(wikipedia_dir: Path, shared_data_dir: Path) -> None:
    """data/wikipedia is a byte copy of the steering repo's shared/data/wikipedia."""
    from mixbench.store.manifest import sha256_file

    shared = shared_data_dir / "wikipedia"
    if not shared.is_dir():
        pytest.skip("shared/data/wikipedia is absent")
    for name in ("raw_features.mat", "trainset_txt_img_cat.list", "testset_txt_img_cat.list", "categories.list"):
        assert sha256_file(wikipedia_dir / name) == sha256_file(shared / name), name


def test_damaged_copy_fails_its_sha256sums(wikipedia_dir: Path, tmp_path: Path) -> None:
    import shutil

    import prep

    root = tmp_path / "wiki"
    shutil.copytree(wikipedia_dir, root)
    with open(root / "categories.list", "a") as f:
        f.write("\n")
    with pytest.raises(DataError, match=r"categories.list: sha256 .* does not match .*SHA256SUMS"):
        prep.prepare({"adapter": "wikipedia", "root": str(root)}, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()
