"""DCMH (raw images, v7.3 and v5) and DADH (features) .mat adapters, their splits, and the
multi-label → single-label selection."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

import prep
from mixbench.errors import DataError
from prep.multilabel import select_single_label
from mixbench.store.shards import Store
from mat_helpers import write_mat_v73

N, H, W = 40, 6, 5


@pytest.fixture(scope="module")
def toy() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random((N, 5)) < 0.3).astype(np.float64)
    labels[labels.sum(axis=1) == 0, 0] = 1
    return {
        "images": rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8),  # N×H×W×RGB
        "tags": (rng.random((N, 12)) < 0.2).astype(np.float64),
        "labels": labels,
        "feats": rng.normal(size=(N, 16)),
    }


@pytest.fixture(scope="module")
def dcmh_v73(tmp_path_factory: pytest.TempPathFactory, toy: dict[str, np.ndarray]) -> Path:
    root = tmp_path_factory.mktemp("dcmh73")
    # MATLAB holds IAll as H×W×3×N; write_mat_v73 stores it the way MATLAB does (axes reversed)
    write_mat_v73(root / "toy-iall.mat", {"IAll": toy["images"].transpose(1, 2, 3, 0)})
    write_mat_v73(root / "toy-yall.mat", {"YAll": toy["tags"]})
    write_mat_v73(root / "toy-lall.mat", {"LAll": toy["labels"]})
    with h5py.File(root / "toy-iall.mat", "r") as f:
        assert f["IAll"].shape == (N, 3, W, H)  # what h5py shows for the real files
    return root


def _check_rows(s: Store, split: str, toy: dict[str, np.ndarray]) -> np.ndarray:
    img, txt = s.load(split, "image"), s.load(split, "text")
    rows = img["pair"]
    np.testing.assert_array_equal(txt["pair"], rows)
    np.testing.assert_array_equal(img["pixels"], toy["images"][rows])
    np.testing.assert_array_equal(txt["feat"], toy["tags"][rows].astype(np.float32))
    np.testing.assert_array_equal(img["label"], toy["labels"][rows].astype(np.uint8))
    return rows


def test_dcmh_v73_umml_split(dcmh_v73: Path, toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    out = tmp_path / "o"
    man = prep.prepare({"adapter": "dcmh", "name": "toy", "root": str(dcmh_v73), "prefix": "toy", "split": "umml",
                        "query_size": 8, "train_size": 20, "shard_rows": 7}, out)
    s = Store(out)
    assert s.multilabel and man["multilabel"] is True and s.schema["image"]["label"].shape == (5,)
    assert s.schema["image"]["pixels"].dtype == "uint8" and s.schema["image"]["pixels"].shape == (H, W, 3)
    assert s.splits == ["train", "test", "database"]
    np.testing.assert_array_equal(_check_rows(s, "train", toy), np.arange(20))
    np.testing.assert_array_equal(_check_rows(s, "test", toy), np.arange(32, 40))
    np.testing.assert_array_equal(_check_rows(s, "database", toy), np.arange(32))
    assert s.load("test", "image")["id"][0] == "toy-000032"
    assert man["info"]["image_layout"] == "HWCN" and man["info"]["split"]["db_size"] == 32


def test_dcmh_v5_single_file_dadh_split(toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "all.mat", {"IAll": toy["images"].transpose(1, 2, 3, 0), "YAll": toy["tags"],
                                            "LAll": toy["labels"]})
    out = tmp_path / "o"
    prep.prepare({"adapter": "dcmh", "root": str(tmp_path), "file": "all.mat", "split": "dadh", "query_size": 8,
                  "train_size": 20, "keep_database": False}, out)
    s = Store(out)
    assert s.splits == ["train", "test"]
    np.testing.assert_array_equal(_check_rows(s, "train", toy), np.arange(8, 28))
    np.testing.assert_array_equal(_check_rows(s, "test", toy), np.arange(8))


def test_dcmh_stratified_lazy_reads_and_layouts(dcmh_v73: Path, toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    prep.prepare({"adapter": "dcmh", "root": str(dcmh_v73), "prefix": "toy", "split": "stratified",
                  "test_fraction": 0.25, "seed": 2, "shard_rows": 3}, tmp_path / "o")
    s = Store(tmp_path / "o")
    rows = np.concatenate([_check_rows(s, sp, toy) for sp in s.splits])  # non-contiguous row reads
    assert sorted(rows.tolist()) == list(range(N))
    # N×H×W×3 in MATLAB order (as a Python writer might leave it), with the layout named
    scipy.io.savemat(tmp_path / "nhwc.mat", {"IAll": toy["images"], "YAll": toy["tags"], "LAll": toy["labels"]})
    prep.prepare({"adapter": "dcmh", "root": str(tmp_path), "file": "nhwc.mat", "split": "stratified",
                  "image_layout": "NHWC"}, tmp_path / "p")
    _check_rows(Store(tmp_path / "p"), "train", toy)


def test_dcmh_bad_inputs(dcmh_v73: Path, toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope-iall.mat: missing \(input .nope-iall.mat.\); check the \[prep\] paths"):
        prep.prepare({"adapter": "dcmh", "root": str(dcmh_v73), "prefix": "nope"}, tmp_path / "o")
    bad = toy["labels"].copy()
    bad[3, 1] = 2
    scipy.io.savemat(tmp_path / "a.mat", {"IAll": toy["images"].transpose(1, 2, 3, 0), "YAll": toy["tags"], "LAll": bad})
    with pytest.raises(DataError, match=r"a.mat:3 \[labels\]: column 1 is 2.0; multi-hot labels must be 0 or 1"):
        prep.prepare({"adapter": "dcmh", "root": str(tmp_path), "file": "a.mat", "split": "stratified"}, tmp_path / "o")
    scipy.io.savemat(tmp_path / "b.mat", {"IAll": toy["images"].transpose(1, 2, 3, 0).astype(np.float32),
                                          "YAll": toy["tags"], "LAll": toy["labels"]})
    with pytest.raises(DataError, match=r"b.mat \[IAll\]: pixels are float32; expected uint8"):
        prep.prepare({"adapter": "dcmh", "root": str(tmp_path), "file": "b.mat", "split": "stratified"}, tmp_path / "o")
    scipy.io.savemat(tmp_path / "c.mat", {"IAll": toy["images"].transpose(1, 2, 3, 0), "YAll": toy["tags"][:-1],
                                          "LAll": toy["labels"]})
    with pytest.raises(DataError, match=r"c.mat \[YAll\]: shape \(39, 12\); expected 40 rows"):
        prep.prepare({"adapter": "dcmh", "root": str(tmp_path), "file": "c.mat", "split": "stratified"}, tmp_path / "o")
    with pytest.raises(DataError, match=r"40 rows cannot hold query_size 30 \+ train_size 20"):
        prep.prepare({"adapter": "dcmh", "root": str(dcmh_v73), "prefix": "toy", "split": "dadh", "query_size": 30,
                      "train_size": 20},
                     tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_dadh_features_and_nus_keys(toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "FLICKR.mat", {"images": toy["feats"], "YAll": toy["tags"], "LAll": toy["labels"]})
    prep.prepare({"adapter": "dadh", "file": str(tmp_path / "FLICKR.mat"), "split": "dadh", "query_size": 8,
                  "train_size": 20}, tmp_path / "o")
    s = Store(tmp_path / "o")
    assert s.feat_dim("image") == 16 and s.feat_dim("text") == 12 and s.multilabel
    tr = s.load("train", "image")
    np.testing.assert_array_equal(tr["pair"], np.arange(8, 28))
    np.testing.assert_array_equal(tr["feat"], toy["feats"][8:28].astype(np.float32))
    np.testing.assert_array_equal(s.load("database", "text")["pair"], np.arange(8, 40))
    write_mat_v73(tmp_path / "NUS.mat", {"image": toy["feats"], "text": toy["tags"], "label": toy["labels"]})
    man = prep.prepare({"adapter": "dadh", "file": str(tmp_path / "NUS.mat"), "split": "umml", "query_size": 8,
                        "train_size": 20}, tmp_path / "n")
    assert man["info"]["keys"] == {"image": "image", "text": "text", "label": "label"}
    np.testing.assert_array_equal(Store(tmp_path / "n").load("test", "text")["feat"], toy["tags"][32:].astype(np.float32))
    scipy.io.savemat(tmp_path / "nofeat.mat", {"YAll": toy["tags"], "LAll": toy["labels"]})
    with pytest.raises(DataError, match=r"no image variable \(images or image\); variables: \['LAll', 'YAll'\]"):
        prep.prepare({"adapter": "dadh", "file": str(tmp_path / "nofeat.mat")}, tmp_path / "x")


def test_single_label_rule() -> None:
    classes = ["a", "b", "c", "d"]
    y = np.zeros((12, 4), dtype=np.uint8)
    y[[0, 1, 2, 3, 4], 0] = 1  # a: 5
    y[[4, 5, 6, 7], 1] = 1  # b: 4 (row 4 carries a and b)
    y[[8, 9, 10, 11], 2] = 1  # c: 4 (ties with b: b wins, lower index)
    y[[0, 8], 3] = 1  # d: 2 (outside the top 2: does not matter)
    sel = select_single_label(y, classes, top_k=2, rng=np.random.default_rng(0), seed=0)
    assert sel.classes == ["a", "b"]
    np.testing.assert_array_equal(sel.rows, [0, 1, 2, 3, 5, 6, 7])  # row 4 has both a and b
    np.testing.assert_array_equal(sel.labels, [0, 0, 0, 0, 1, 1, 1])
    assert sel.info["eligible"] == {"a": 4, "b": 3} and sel.info["concept_frequency"] == {"a": 5, "b": 4}
    s1 = select_single_label(y, classes, top_k=2, per_class=2, rng=np.random.default_rng(5), seed=5)
    s2 = select_single_label(y, classes, top_k=2, per_class=2, rng=np.random.default_rng(5), seed=5)
    np.testing.assert_array_equal(s1.rows, s2.rows)
    assert s1.info["counts"] == {"a": 2, "b": 2} and set(s1.rows) <= {0, 1, 2, 3, 5, 6, 7}
    with pytest.raises(DataError, match=r"concept 'b' has 3 samples .* fewer than single_label_per_class = 4"):
        select_single_label(y, classes, top_k=2, per_class=4, rng=np.random.default_rng(0))


def test_dcmh_single_label_selection(dcmh_v73: Path, toy: dict[str, np.ndarray], tmp_path: Path) -> None:
    man = prep.prepare({"adapter": "dcmh", "root": str(dcmh_v73), "prefix": "toy", "split": "stratified",
                        "single_label_top_k": 2, "single_label_per_class": 3, "seed": 1}, tmp_path / "o")
    s = Store(tmp_path / "o")
    assert not s.multilabel and s.schema["image"]["label"].shape == ()
    info = man["info"]["single_label"]
    assert info["per_class"] == 3 and sum(info["counts"].values()) == 6 and len(s.classes) == 2
    kept = [int(c) for c in info["concept_index"]]
    for sp in s.splits:
        t = s.load(sp, "text")
        for r, lab in zip(t["pair"], t["label"]):
            assert toy["labels"][r, kept].sum() == 1 and toy["labels"][r, kept[lab]] == 1
