"""DM2C import (dm2c-mat adapter) and the exporters (dm2c, dadh, npz): layouts, round trips, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import prep
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.export import export_store
from mixbench.store.shards import Column, Store, StoreWriter, feature_schema

D, C = 6, 4


def _dm2c_files(root: Path, rng: np.random.Generator, n: int, name: str, with_file: bool = True) -> list[tuple]:
    """A DM2C file as its code writes it: X = N×3 cell rows (feature, file, modality), y 1 × N 1-based."""
    rows = [(rng.normal(size=D), f"{name}_{i:03d}.{'jpg' if i % 3 else 'xml'}", int(i % 3 == 0), int(rng.integers(1, C + 1)))
            for i in range(n)]
    X = np.empty((n, 3 if with_file else 2), dtype=object)
    for i, (f, fn, m, _) in enumerate(rows):
        X[i, 0] = f
        if with_file:
            X[i, 1] = fn
        X[i, -1] = m
    y = np.array([r[3] for r in rows])
    scipy.io.savemat(root / f"{name}_file.mat", {"X": X, "y": y})
    return rows


@pytest.fixture(scope="module")
def dm2c_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[tuple]]]:
    root = tmp_path_factory.mktemp("dm2c")
    rng = np.random.default_rng(0)
    return root, {"train": _dm2c_files(root, rng, 30, "train"), "test": _dm2c_files(root, rng, 12, "test")}


@pytest.fixture(scope="module")
def bench(dm2c_src: tuple[Path, dict[str, list[tuple]]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "store"
    prep.prepare({"adapter": "dm2c-mat", "root": str(dm2c_src[0]), "shard_rows": 8}, out)
    return out


def test_import_dm2c(bench: Path, dm2c_src: tuple[Path, dict[str, list[tuple]]]) -> None:
    _, src = dm2c_src
    s = Store(bench)
    assert s.kind == "benchmark" and s.modalities == ["image", "text"] and s.classes == ["0", "1", "2", "3"]
    for split, rows in src.items():
        for flag, m in enumerate(("image", "text")):
            t = s.load(split, m)
            exp = [r for r in rows if r[2] == flag]
            assert list(t["id"]) == [r[1] for r in exp]
            np.testing.assert_array_equal(t["feat"], np.stack([r[0] for r in exp]).astype(np.float32))
            np.testing.assert_array_equal(t["label"], [r[3] - 1 for r in exp])
            assert (t["pair"] == -1).all()
    assert s.rows("train", "text") == 10 and s.rows("train", "image") == 20
    assert s.info["modality_flags"] == {"image": 0, "text": 1}


def _reference_load(path: Path, has_filename: bool) -> list[tuple[np.ndarray, float, float]]:
    """What DM2C's MFeatDataSet (code/utils.py) does with a file, re-stated: index X's rows,
    squeeze the feature to float32, label = y[0][i] - 1, modality = modality[0]."""
    mat = scipy.io.loadmat(path)
    out = []
    for index in range(len(mat["X"])):
        if has_filename:
            feat, _file, modality = mat["X"][index]
        else:
            feat, modality = mat["X"][index]
        feat = feat.squeeze().astype(np.float32)
        label = np.float32(mat["y"][0][index]) - 1
        out.append((feat, float(np.float32(modality[0]).reshape(-1)[0]), float(label)))
    return out


def _reference_single(path: Path) -> list[np.ndarray]:
    """DM2C's SFeatDataSet: the first cell of each row of X."""
    mat = scipy.io.loadmat(path)
    return [mat["X"][i][0].squeeze().astype(np.float32) for i in range(len(mat["X"]))]


def test_export_dm2c_reference_loader_and_round_trip(bench: Path, dm2c_src: tuple[Path, dict[str, list[tuple]]],
                                                     tmp_path: Path) -> None:
    _, src = dm2c_src
    rec = export_store(bench, tmp_path / "x", "dm2c")
    names = sorted(f["file"] for f in rec["files"])
    assert names == ["test_file.mat", "train_file.mat", "train_img.mat", "train_txt.mat"]
    for split in ("train", "test"):
        got = _reference_load(tmp_path / "x" / f"{split}_file.mat", has_filename=True)
        exp = sorted((r[2], r[1]) for r in src[split])
        mat = scipy.io.loadmat(tmp_path / "x" / f"{split}_file.mat")
        files = [str(mat["X"][i][1][0]) for i in range(len(mat["X"]))]
        assert sorted(zip([int(g[1]) for g in got], files)) == exp
        by_file = {r[1]: r for r in src[split]}
        for (feat, modality, label), fn in zip(got, files):
            r = by_file[fn]
            np.testing.assert_array_equal(feat, r[0].astype(np.float32))
            assert modality == r[2] and label == r[3] - 1
    img = _reference_single(tmp_path / "x" / "train_img.mat")
    txt = _reference_single(tmp_path / "x" / "train_txt.mat")
    assert len(img) == 20 and len(txt) == 10 and img[0].shape == (D,)
    # import what we exported: the same store rows
    prep.prepare({"adapter": "dm2c-mat", "root": str(tmp_path / "x")}, tmp_path / "again")
    a, b = Store(bench), Store(tmp_path / "again")
    for split in a.splits:
        for m in a.modalities:
            ta, tb = a.load(split, m), b.load(split, m)
            for c in ("id", "label", "pair", "feat"):
                np.testing.assert_array_equal(ta[c], tb[c])
    # the NUS-WIDE layout (no file names) reads too
    export_store(bench, tmp_path / "nus", "dm2c", with_names=False)
    assert len(_reference_load(tmp_path / "nus" / "test_file.mat", has_filename=False)) == 12
    prep.prepare({"adapter": "dm2c-mat", "root": str(tmp_path / "nus")}, tmp_path / "nus-store")
    assert Store(tmp_path / "nus-store").load("test", "text")["id"][0].startswith("test-")


def test_exports_are_deterministic(bench: Path, tmp_path: Path) -> None:
    for fmt in ("dm2c", "dadh", "npz"):
        r1 = export_store(bench, tmp_path / f"{fmt}1", fmt)
        r2 = export_store(bench, tmp_path / f"{fmt}2", fmt)
        assert [f["sha256"] for f in r1["files"]] == [f["sha256"] for f in r2["files"]]
    head = (tmp_path / "dm2c1" / "train_file.mat").read_bytes()[:116]
    assert head.startswith(b"MATLAB 5.0 MAT-file, written by mixbench")


@pytest.fixture(scope="module")
def uci_paired(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("ucip") / "store"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["mor", "zer"], "test_fraction": 0.25}, out)
    return out


def test_dadh_round_trip_of_a_paired_store(uci_paired: Path, tmp_path: Path) -> None:
    rec = export_store(uci_paired, tmp_path / "d", "dadh")
    det = json.loads((tmp_path / "d" / "export.json").read_text())["details"]
    assert det["query_size"] == 500 and det["training_size"] == 1500 and det["zero_filled"] == {"mor": 0, "zer": 0}
    mat = scipy.io.loadmat(tmp_path / "d" / rec["details"]["file"])
    assert mat["images"].shape == (2000, 6) and mat["YAll"].shape == (2000, 47) and mat["LAll"].shape == (2000, 10)
    prep.prepare({"adapter": "dadh", "file": str(tmp_path / "d" / "uci-mfeat.mat"), "split": "dadh",
                  "query_size": 500, "train_size": 1500, "keep_database": False}, tmp_path / "back")
    a, b = Store(uci_paired), Store(tmp_path / "back")
    for split in ("train", "test"):
        for ma, mb in (("mor", "image"), ("zer", "text")):
            ta, tb = a.load(split, ma), b.load(split, mb)
            np.testing.assert_array_equal(ta["feat"], tb["feat"])
            np.testing.assert_array_equal(ta["label"], tb["label"].argmax(axis=1))
            assert (tb["label"].sum(axis=1) == 1).all()


def test_dm2c_export_of_a_paired_store_and_padding(uci_paired: Path, tmp_path: Path) -> None:
    rec = export_store(uci_paired, tmp_path / "x", "dm2c")
    assert rec["details"]["rows"]["train"] == {"mor": 1500, "zer": 1500}  # each pair gives two instances
    prep.prepare({"adapter": "dm2c-mat", "root": str(tmp_path / "x"), "modalities": ["mor", "zer"]}, tmp_path / "pad")
    s = Store(tmp_path / "pad")
    assert s.feat_dim("mor") == 47 and s.feat_dim("zer") == 47 and s.info["padded_to"] == 47
    orig = Store(uci_paired).load("test", "mor")
    t = s.load("test", "mor")
    np.testing.assert_array_equal(t["feat"][:, :6], orig["feat"])
    assert not t["feat"][:, 6:].any() and list(t["id"]) == list(orig["id"])
    prep.prepare({"adapter": "dm2c-mat", "root": str(tmp_path / "x"), "pad": False}, tmp_path / "nopad")
    assert Store(tmp_path / "nopad").feat_dim("image") == 6


def _zero_mode_store(path: Path) -> Path:
    """A benchmark store as the 'zero' unpairing mode leaves it: rows kept, missing halves masked."""
    schema = {m: feature_schema(3, extra={"present": Column("uint8")}) for m in ("image", "text")}
    w = StoreWriter(path, kind="benchmark", dataset="toy", classes=["a", "b"], schema=schema,
                    lineage=[{"stage": "test"}], run_key="k")
    n = 6
    img = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + 1
    txt = -img
    present_img = np.array([1, 1, 0, 1, 1, 1], np.uint8)  # pair 2: image missing
    present_txt = np.array([1, 0, 1, 1, 1, 0], np.uint8)  # pairs 1, 5: text missing
    lab = np.array([0, 1, 0, 1, 0, 1])
    for split in ("train", "test"):
        w.write_shard(split, 0, {
            "image": {"id": [f"{split}-i{i}" for i in range(n)], "label": lab, "pair": np.arange(n),
                      "feat": img * present_img[:, None], "present": present_img},
            "text": {"id": [f"{split}-t{i}" for i in range(n)], "label": lab, "pair": np.arange(n),
                     "feat": txt * present_txt[:, None], "present": present_txt},
        })
    w.finish()
    return path


def test_zero_filled_rows(tmp_path: Path) -> None:
    store = _zero_mode_store(tmp_path / "z")
    rec = export_store(store, tmp_path / "dm", "dm2c")
    assert rec["details"]["rows"]["train"] == {"image": 5, "text": 4}  # masked rows are not instances
    rec = export_store(store, tmp_path / "dd", "dadh", keys="nus")
    assert rec["details"]["zero_filled"] == {"image": 2, "text": 4}
    mat = scipy.io.loadmat(tmp_path / "dd" / "toy.mat")
    assert set(mat) >= {"image", "text", "label"} and mat["image"].shape == (12, 3)
    # test rows come first; pair 2 keeps its text with a zero image row, pair 1 a zero text row
    img, txt = mat["image"][:6], mat["text"][:6]
    np.testing.assert_array_equal(img[:5], (np.arange(18).reshape(6, 3) + 1)[[0, 1, 3, 4, 5]])
    assert not txt[1].any() and not txt[4].any() and not img[5].any()
    np.testing.assert_array_equal(txt[5], -(np.arange(18).reshape(6, 3) + 1)[2])
    np.testing.assert_array_equal(mat["label"][:6].argmax(axis=1), [0, 1, 1, 0, 1, 0])


def test_npz_export(uci_paired: Path, tmp_path: Path) -> None:
    export_store(uci_paired, tmp_path / "n", "npz")
    s = Store(uci_paired)
    with np.load(tmp_path / "n" / "uci-mfeat.npz", allow_pickle=False) as z:
        assert list(z["classes"]) == s.classes
        t = s.load("test", "zer")
        np.testing.assert_array_equal(z["test/zer/feat"], t["feat"])
        assert list(z["test/zer/id"]) == list(t["id"])
        np.testing.assert_array_equal(z["train/mor/pair"], s.load("train", "mor")["pair"])


def test_export_errors(tmp_path: Path, bench: Path, dm2c_src: tuple[Path, dict[str, list[tuple]]]) -> None:
    with pytest.raises(ConfigError, match="unknown export format; available: dm2c, dadh, npz"):
        export_store(bench, tmp_path / "x", "csv")
    export_store(bench, tmp_path / "x", "npz")
    with pytest.raises(StoreError, match="already exist; pass overwrite=True"):
        export_store(bench, tmp_path / "x", "npz")
    export_store(bench, tmp_path / "x", "npz", overwrite=True)
    with pytest.raises(StoreError, match="not a complete store"):
        export_store(tmp_path / "x", tmp_path / "y", "dm2c")
    # DM2C import errors: a bad modality flag, a y of the wrong length
    root = tmp_path / "bad"
    root.mkdir()
    X = np.empty((2, 2), dtype=object)
    X[0, 0], X[0, 1], X[1, 0], X[1, 1] = np.ones(3), 0, np.ones(3), 2
    scipy.io.savemat(root / "train_file.mat", {"X": X, "y": np.array([1, 2])})
    with pytest.raises(DataError, match=r"train_file.mat \[X\]: row 1, modality 2; expected 0 \(image\) or 1 \(text\)"):
        prep.prepare({"adapter": "dm2c-mat", "root": str(root), "test_file": ""}, tmp_path / "o")
    X[1, 1] = 1
    scipy.io.savemat(root / "train_file.mat", {"X": X, "y": np.array([1, 2, 3])})
    with pytest.raises(DataError, match="X has 2 rows but y has 3"):
        prep.prepare({"adapter": "dm2c-mat", "root": str(root), "test_file": ""}, tmp_path / "o")
    scipy.io.savemat(root / "train_file.mat", {"X": X, "y": np.array([1, 0])})
    with pytest.raises(DataError, match=r"train_file.mat:1 \[y\]: class 0 is out of range; expected 1..2"):
        prep.prepare({"adapter": "dm2c-mat", "root": str(root), "test_file": "", "n_classes": 2}, tmp_path / "o")
    X[1, 0] = np.ones(4)
    scipy.io.savemat(root / "train_file.mat", {"X": X, "y": np.array([1, 2])})
    prep.prepare({"adapter": "dm2c-mat", "root": str(root), "test_file": ""}, tmp_path / "o")  # dims 3 / 4: padded
    assert Store(tmp_path / "o").feat_dim("image") == 4
    X[1, 1] = 0
    scipy.io.savemat(root / "train_file.mat", {"X": X, "y": np.array([1, 2])})
    with pytest.raises(DataError, match=r"row 1 \(image\) has 4 features, other image rows have 3"):
        prep.prepare({"adapter": "dm2c-mat", "root": str(root), "test_file": ""}, tmp_path / "o2")


def test_export_needs_single_label_features(tmp_path: Path) -> None:
    from mixbench.store.shards import base_schema

    raw = StoreWriter(tmp_path / "raw", kind="paired", dataset="r", classes=["a"],
                      schema={m: {**base_schema(), "text": Column("str")} for m in ("image", "text")},
                      lineage=[{"stage": "t"}], run_key="k")
    raw.write_shard("train", 0, {m: {"id": ["x"], "label": [0], "pair": [0], "text": ["hi"]} for m in ("image", "text")})
    raw.finish()
    with pytest.raises(StoreError, match="modality 'image' has no 'feat' column .*run embed first"):
        export_store(tmp_path / "raw", tmp_path / "o", "dm2c")
    ml = StoreWriter(tmp_path / "ml", kind="paired", dataset="m", classes=["a", "b"],
                     schema={m: feature_schema(2, n_labels=2) for m in ("image", "text")},
                     lineage=[{"stage": "t"}], run_key="k", multilabel=True)
    ml.write_shard("train", 0, {m: {"id": ["x"], "label": [[1, 1]], "pair": [0], "feat": [[0.0, 1.0]]}
                                for m in ("image", "text")})
    ml.finish()
    with pytest.raises(DataError, match="multi-label store; DM2C needs one class per row"):
        export_store(tmp_path / "ml", tmp_path / "o", "dm2c")
    rec = export_store(tmp_path / "ml", tmp_path / "o", "dadh")  # DADH keeps multi-hot labels
    assert scipy.io.loadmat(tmp_path / "o" / rec["details"]["file"])["LAll"].tolist() == [[1.0, 1.0]]
    assert not (tmp_path / "o" / "train_file.mat").exists()
