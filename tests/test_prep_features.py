"""Generic paired-features adapter: every input format, and every bad input named precisely."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from mat_helpers import write_mat_v73, write_multiview_mat

import prep
from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Store

N = 30


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(N) % 3
    return {
        "a": rng.normal(size=(N, 5)),
        "b": rng.normal(size=(N, 4)),
        "y": y,
        "ids": np.asarray([f"s{i:03d}" for i in range(N)]),
        "split": np.asarray(["train"] * 20 + ["val"] * 4 + ["test"] * 6),
    }


def _write_csv(path: Path, header: list[str], columns: list[np.ndarray]) -> None:
    lines = [",".join(header)]
    for i in range(N):
        lines.append(",".join(repr(float(c[i])) if np.asarray(c).dtype.kind == "f" else str(c[i]) for c in columns))
    path.write_text("\n".join(lines) + "\n")


def _layout(kind: str, d: dict[str, np.ndarray], root: Path) -> dict[str, object]:
    """Write the data in one format; return the [prep] table that reads it."""
    if kind == "npy":
        np.save(root / "a.npy", d["a"])
        np.save(root / "b.npy", d["b"])
        np.save(root / "y.npy", d["y"])
        np.save(root / "ids.npy", d["ids"])
        return {"features": ["a.npy", "b.npy"], "labels": "y.npy", "ids": ["ids.npy"]}
    if kind == "npz":
        np.savez(root / "all.npz", img=d["a"], txt=d["b"], lab=d["y"].astype(float))
        return {"features": ["all.npz:img", "all.npz:txt"], "labels": "all.npz:lab"}
    if kind == "csv":
        # one table: features of 'a', an id column and a label column; 'b' in its own file
        _write_csv(root / "a.csv", ["id"] + [f"f{j}" for j in range(5)] + ["label"],
                   [d["ids"], *d["a"].T, d["y"]])
        _write_csv(root / "b.csv", [f"g{j}" for j in range(4)], list(d["b"].T))
        return {"features": ["a.csv", "b.csv"], "labels": "a.csv:label", "ids": ["a.csv:id"]}
    if kind == "txt":
        np.savetxt(root / "a.txt", d["a"], fmt="%.17g")
        np.savetxt(root / "b.txt", d["b"], fmt="%.17g")
        (root / "y.txt").write_text("\n".join(str(v) for v in d["y"]) + "\n")
        (root / "ids.txt").write_text("\n".join(d["ids"]) + "\n")
        return {"features": ["a.txt", "b.txt"], "labels": "y.txt", "ids": ["ids.txt"]}
    if kind == "mat":
        scipy.io.savemat(root / "d.mat", {"A": d["a"], "B": d["b"], "Y": (d["y"] + 1).reshape(-1, 1)})
        return {"features": ["d.mat:A", "d.mat:B"], "labels": "d.mat:Y", "label_base": 1}
    if kind == "mat73":
        write_mat_v73(root / "d.mat", {"A": d["a"], "B": d["b"], "Y": d["y"].reshape(-1, 1).astype(float)})
        return {"features": ["d.mat:A", "d.mat:B"], "labels": "d.mat:Y"}
    if kind in ("mat-cells", "mat73-cells"):
        # the common multi-view layout: a cell array X of views (here three: the 2nd stored d × n) and y
        write_multiview_mat(root / "mv.mat", [d["b"][:, :2], d["a"], d["b"].T], d["y"] + 1,
                            v73=kind == "mat73-cells")
        return {"features": ["mv.mat:X{2}", "mv.mat:X{3}'"], "labels": "mv.mat:y", "label_base": 1}
    if kind == "h5":
        with h5py.File(root / "d.h5", "w") as f:
            f["feats/image"] = d["a"]
            f["feats/text"] = d["b"]
            f["meta/label"] = d["y"]
            f["meta/id"] = d["ids"].astype(object)
        return {"features": ["d.h5:/feats/image", "d.h5:/feats/text"], "labels": "d.h5:/meta/label",
                "ids": ["d.h5:/meta/id"]}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["npy", "npz", "csv", "txt", "mat", "mat73", "mat-cells", "mat73-cells", "h5"])
def test_every_format_gives_the_same_rows(kind: str, data: dict[str, np.ndarray], tmp_path: Path) -> None:
    table = _layout(kind, data, tmp_path)
    out = tmp_path / "store"
    man = prep.prepare({"adapter": "paired-features", "test_fraction": 0.2, "seed": 1, **table}, out,
                       base_dir=tmp_path)
    s = Store(out)
    assert s.modalities == ["image", "text"] and s.classes == ["0", "1", "2"]
    assert s.feat_dim("image") == 5 and s.feat_dim("text") == 4
    assert man["splits"]["train"]["rows"]["image"] == 24 and man["splits"]["test"]["rows"]["image"] == 6
    for split in ("train", "test"):
        img, txt = s.load(split, "image"), s.load(split, "text")
        rows = img["pair"]
        np.testing.assert_array_equal(txt["pair"], rows)
        np.testing.assert_array_equal(img["feat"], data["a"][rows].astype(np.float32))
        np.testing.assert_array_equal(txt["feat"], data["b"][rows].astype(np.float32))
        np.testing.assert_array_equal(img["label"], data["y"][rows])
        if table.get("ids"):
            assert list(img["id"]) == list(data["ids"][rows])
        else:
            assert list(img["id"]) == [f"paired-features-{r:06d}" for r in rows]
    assert np.bincount(s.load("test", "image")["label"]).tolist() == [2, 2, 2]


def test_split_column_class_names_and_options(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    _write_csv(tmp_path / "meta.csv", ["img_id", "txt_id", "label", "split"],
               [data["ids"], np.char.add("t", data["ids"]), data["y"], data["split"]])
    np.save(tmp_path / "a.npy", data["a"])
    np.save(tmp_path / "b.npy", data["b"])
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n")
    table = {"adapter": "paired-features", "name": "toy", "features": ["a.npy", "b.npy"],
             "modalities": ["photo", "caption"], "labels": "meta.csv:label", "ids": ["meta.csv:img_id", "meta.csv:txt_id"],
             "split": "meta.csv:split", "classes": "names.txt", "dtype": "float16"}
    prep.prepare(table, tmp_path / "o", base_dir=tmp_path)
    s = Store(tmp_path / "o")
    assert s.dataset == "toy" and s.classes == ["cat", "dog", "bird"] and s.modalities == ["photo", "caption"]
    assert s.splits == ["train", "val", "test"] and s.rows("val", "photo") == 4
    assert s.schema["photo"]["feat"].dtype == "float16"
    assert s.load("test", "caption")["id"][0] == "ts024" and s.info["split"]["method"] == "from source"


def _bad(tmp_path: Path, data: dict[str, np.ndarray]) -> dict[str, object]:
    np.save(tmp_path / "a.npy", data["a"])
    np.save(tmp_path / "b.npy", data["b"])
    np.save(tmp_path / "y.npy", data["y"])
    return {"adapter": "paired-features", "features": ["a.npy", "b.npy"], "labels": "y.npy"}


def _run(table: dict[str, object], tmp_path: Path) -> None:
    prep.prepare(table, tmp_path / "out", base_dir=tmp_path)


def test_missing_and_unreadable_files(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    with pytest.raises(DataError, match=r"c.npy: missing"):
        _run({**t, "features": ["a.npy", "c.npy"]}, tmp_path)
    (tmp_path / "dir.npy").mkdir()
    with pytest.raises(DataError, match=r"dir.npy: not a file"):
        _run({**t, "features": ["a.npy", "dir.npy"]}, tmp_path)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"junk.npy: cannot read as .npy"):
        _run({**t, "features": ["a.npy", "junk.npy"]}, tmp_path)
    scipy.io.savemat(tmp_path / "m.mat", {"P": data["a"], "Q": data["b"]})
    with pytest.raises(DataError, match=r"m.mat: give the variable as 'm.mat:NAME' .*\['P', 'Q'\]"):
        _run({**t, "features": ["m.mat", "b.npy"]}, tmp_path)
    with pytest.raises(DataError, match=r"m.mat \[Z\]: no such variable .*variables: \['P', 'Q'\]"):
        _run({**t, "features": ["m.mat:Z", "b.npy"]}, tmp_path)
    with pytest.raises(ConfigError, match="give exactly two sources"):
        _run({**t, "features": ["a.npy"]}, tmp_path)
    with pytest.raises(ConfigError, match=r"features\[1\] = 'b.parquet': expected 'file' or 'file:key'"):
        _run({**t, "features": ["a.npy", "b.parquet"]}, tmp_path)
    assert not (tmp_path / "out").exists()


def test_row_counts_nan_and_labels(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    np.save(tmp_path / "short.npy", data["y"][:-1])
    with pytest.raises(DataError, match=r"short.npy has 29 rows but .*a.npy has 30"):
        _run({**t, "labels": "short.npy"}, tmp_path)
    b = data["b"].copy()
    b[7, 2] = np.nan
    np.save(tmp_path / "nan.npy", b)
    with pytest.raises(DataError, match=r"nan.npy \[features of 'text'\]: row 7, column 2 is nan"):
        _run({**t, "features": ["a.npy", "nan.npy"]}, tmp_path)
    _write_csv(tmp_path / "inf.csv", [f"c{j}" for j in range(4)], list(data["b"].T))
    (tmp_path / "inf.csv").write_text((tmp_path / "inf.csv").read_text().replace(repr(float(data["b"][3, 1])), "inf", 1))
    with pytest.raises(DataError, match=r"inf.csv \[features of 'text'\]: row 5, column 1 is inf"):
        _run({**t, "features": ["a.npy", "inf.csv"]}, tmp_path)  # row 5 = file line (header is line 1)
    for value, message in ((2.5, r"y2.txt:4 \[label\]: '2.5' is not an integer class id"),
                           ("cat", r"y2.txt:4 \[label\]: 'cat' is not an integer class id"),
                           (-1, r"y2.txt:4 \[label\]: class -1 is out of range")):
        ys = [str(v) for v in data["y"]]
        ys[3] = str(value)
        (tmp_path / "y2.txt").write_text("\n".join(ys) + "\n")
        with pytest.raises(DataError, match=message):
            _run({**t, "labels": "y2.txt"}, tmp_path)
    (tmp_path / "names.txt").write_text("x\ny\n")  # 2 classes, labels go up to 2
    with pytest.raises(DataError, match=r"y.npy:2 \[label\]: class 2 is out of range; expected 0..1 \(2 classes\)"):
        _run({**t, "classes": "names.txt"}, tmp_path)
    np.save(tmp_path / "yf.npy", data["y"] + 0.5)
    with pytest.raises(DataError, match=r"yf.npy:0 \[label\]: 0.5 is not an integer class id"):
        _run({**t, "labels": "yf.npy"}, tmp_path)
    np.save(tmp_path / "y1.npy", data["y"])
    with pytest.raises(DataError, match=r"class 0 is out of range; expected 1..3"):
        _run({**t, "labels": "y1.npy", "label_base": 1, "n_classes": 3}, tmp_path)


def test_duplicate_ids_and_unknown_split(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    ids = list(data["ids"])
    ids[9] = ids[2]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    with pytest.raises(DataError, match=r"ids.txt:10 \[id\]: id 's002' already used on row 3"):
        _run({**t, "ids": ["ids.txt"]}, tmp_path)
    split = list(data["split"])
    split[11] = "dev"
    _write_csv(tmp_path / "split.csv", ["split"], [np.asarray(split)])
    with pytest.raises(DataError, match=r"split.csv:13 \[split\]: unknown split 'dev'; allowed: train, val, test"):
        _run({**t, "split": "split.csv:split"}, tmp_path)
    assert not (tmp_path / "out").exists()


# -- refused early with the fix (issue 10 §1, §2) -----------------------------------------------


def test_single_class_dataset_is_refused(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    np.save(tmp_path / "one.npy", np.zeros(N, dtype=np.int64))
    with pytest.raises(DataError, match=r"one.npy.*1 class.*at least 2"):
        _run({**t, "labels": "one.npy"}, tmp_path)


def test_features_without_columns_or_1d_are_refused(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    np.save(tmp_path / "empty.npy", np.zeros((N, 0)))
    with pytest.raises(DataError, match=r"empty.npy \[features of 'text'\]: 0 feature columns"):
        _run({**t, "features": ["a.npy", "empty.npy"]}, tmp_path)
    np.save(tmp_path / "flat.npy", np.arange(N, dtype=float))
    with pytest.raises(DataError, match=r"flat.npy \[features of 'text'\]: a 1-D array.*reshape"):
        _run({**t, "features": ["a.npy", "flat.npy"]}, tmp_path)


def test_float32_overflow_advice_fits_the_dtype(data: dict[str, np.ndarray], tmp_path: Path) -> None:
    t = _bad(tmp_path, data)
    big = data["b"].copy()
    big[3, 1] = 1e39
    np.save(tmp_path / "big.npy", big)
    with pytest.raises(DataError) as err:
        _run({**t, "features": ["a.npy", "big.npy"]}, tmp_path)
    assert "float32 range" in str(err.value) and "use dtype = 'float32'" not in str(err.value)
    big[3, 1] = 1e5
    np.save(tmp_path / "big.npy", big)
    with pytest.raises(DataError, match="float16 range.*use dtype = 'float32'"):
        _run({**t, "features": ["a.npy", "big.npy"], "dtype": "float16"}, tmp_path)


@pytest.mark.parametrize("v73", [False, True])
def test_multiview_cell_array_errors_say_cell_array(v73: bool, data: dict[str, np.ndarray], tmp_path: Path) -> None:
    """A cell array X of views is read by X{i}; every misuse is one line that says "cell array"."""
    write_multiview_mat(tmp_path / "mv.mat", [data["a"], data["b"].T], data["y"], label_name="gt", v73=v73)

    def run(features: list[str], **kw: object) -> None:
        prep.prepare({"adapter": "paired-features", "features": features, **kw}, tmp_path / "o",
                     base_dir=tmp_path, overwrite=True)

    with pytest.raises(DataError, match=r"mv.mat \[X\]: a MATLAB cell array of 2 cells .*'mv.mat:X\{1\}'"):
        run(["mv.mat:X", "mv.mat:X{2}'"], labels="mv.mat:gt")
    with pytest.raises(DataError, match=r"the cell array X holds 2 cells \(X\{1\}..X\{2\}\)"):
        run(["mv.mat:X{1}", "mv.mat:X{3}"], labels="mv.mat:gt")
    with pytest.raises(DataError, match=r"gt is not a cell array"):
        run(["mv.mat:X{1}", "mv.mat:gt{1}"], labels="mv.mat:gt")
    with pytest.raises(DataError, match=r"looks stored features × samples .*'mv.mat:X\{2\}''"):
        run(["mv.mat:X{1}", "mv.mat:X{2}"], labels="mv.mat:gt")
    # the labels key may be left out: 'gt' is the only usual label name in the file
    run(["mv.mat:X{1}", "mv.mat:X{2}'"], labels="mv.mat")
    s = Store(tmp_path / "o")
    assert s.feat_dim("image") == 5 and s.feat_dim("text") == 4
