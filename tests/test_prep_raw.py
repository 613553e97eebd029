"""Raw image + text pairs: manifest and folder layouts, the rejects contract, and manifest errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import prep
from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Store

CLASSES = ["bird", "cat", "dog"]


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, size=(8, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _manifest(root: Path, n: int = 12) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        name = f"img/{i:02d}.{'png' if i % 2 else 'jpg'}"
        _image(root / name, i)
        rows.append({"id": f"p{i:02d}", "image": name, "text": f"a {CLASSES[i % 3]} photo number {i}",
                     "label": CLASSES[i % 3]})
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]], raw_text: dict[int, bytes] | None = None) -> None:
    cols = list(rows[0])
    lines = [",".join(cols).encode()]
    for i, r in enumerate(rows):
        cells = [r[c].encode() if c != "text" or i not in (raw_text or {}) else raw_text[i] for c in cols]  # type: ignore[index]
        lines.append(b",".join(b'"' + c.replace(b'"', b'""') + b'"' for c in cells))
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def broken(tmp_path: Path) -> tuple[Path, list[dict[str, str]]]:
    rows = _manifest(tmp_path)
    (tmp_path / rows[1]["image"]).unlink()  # missing file
    (tmp_path / rows[4]["image"]).write_bytes(b"")  # empty file
    rows[6]["text"] = "   "  # empty caption
    _write_csv(tmp_path / "pairs.csv", rows, raw_text={8: b"caf\xe9 au lait"})  # latin-1, not UTF-8
    return tmp_path, rows


def test_manifest_with_rejects(broken: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = broken
    out = root / "store"
    man = prep.prepare({"adapter": "raw-pairs", "manifest": str(root / "pairs.csv"), "max_reject_fraction": 0.5,
                        "test_fraction": 0.25, "seed": 0}, out)
    s = Store(out)
    assert s.kind == "paired" and s.classes == CLASSES and not s.multilabel
    assert list(s.schema["image"]) == ["id", "label", "pair", "path"]
    assert list(s.schema["text"]) == ["id", "label", "pair", "text"]
    assert man["info"]["image_root"] == str(root.resolve())
    rej = s.info["rejects"]
    assert rej["count"] == 8  # 4 bad rows, both halves each
    assert rej["by_reason"] == {
        "empty file": 1, "empty text": 1, "invalid UTF-8": 1, "missing file": 1,
        "partner-rejected: empty file": 1, "partner-rejected: empty text": 1,
        "partner-rejected: invalid UTF-8": 1, "partner-rejected: missing file": 1,
    }
    by_id = {(it["id"], it["modality"]): it for it in rej["items"]}
    assert by_id[("p01", "image")]["reason"] == "missing file" and by_id[("p01", "image")]["file"] == "img/01.png"
    assert by_id[("p01", "text")]["reason"] == "partner-rejected: missing file"
    assert by_id[("p08", "text")]["reason"] == "invalid UTF-8" and by_id[("p08", "image")]["pair"] == 8
    acc = s.info["accounting"]
    total_in = sum(c["input"] for row in acc.values() for c in row.values())
    assert total_in == 24
    for row in acc.values():
        for c in row.values():
            assert c["input"] == c["kept"] + c["rejected"]
    kept = {m: sum(acc[sp][m]["kept"] for sp in acc) for m in ("image", "text")}
    assert kept == {"image": 8, "text": 8}
    jsonl = [json.loads(x) for x in s.file("rejects.jsonl").read_text().splitlines()]
    assert jsonl == rej["items"] and len(jsonl) == 8
    # kept rows: paths relative to image_root, the pair stays whole, texts stripped
    ids, paths, texts = [], [], []
    for split in s.splits:
        img, txt = s.load(split, "image"), s.load(split, "text")
        np.testing.assert_array_equal(img["pair"], txt["pair"])
        ids += list(img["id"])
        paths += list(img["path"])
        texts += list(txt["text"])
    assert sorted(ids) == ["p00", "p02", "p03", "p05", "p07", "p09", "p10", "p11"]
    assert all((root / p).is_file() and not Path(p).is_absolute() for p in paths)
    assert "a dog photo number 5" in texts


def test_reject_fraction_limit(broken: tuple[Path, list[dict[str, str]]]) -> None:
    root, _ = broken
    with pytest.raises(DataError, match=r"8 of 24 input rows rejected \(33.3%\), above max_reject_fraction = 0.05.*"
                                        r"Report: .*rejects-report.jsonl"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(root / "pairs.csv")}, root / "store")
    report = root / "store" / "rejects-report.jsonl"
    assert len(report.read_text().splitlines()) == 8
    assert not (root / "store" / "manifest.json").exists() and not list((root / "store").glob("*.h5"))


def test_fixing_an_image_changes_the_run_key(broken: tuple[Path, list[dict[str, str]]]) -> None:
    root, rows = broken
    cfg = {"adapter": "raw-pairs", "manifest": str(root / "pairs.csv"), "max_reject_fraction": 0.5}
    prep.prepare(cfg, root / "store")
    assert prep.prepare(cfg, root / "store").get("reused") is True
    _image(root / rows[1]["image"], 1)  # restore the missing image
    man = prep.prepare(cfg, root / "store", overwrite=True)
    assert not man.get("reused") and man["info"]["rejects"]["count"] == 6


def test_manifest_errors(tmp_path: Path) -> None:
    rows = _manifest(tmp_path, 6)
    dup = [dict(r) for r in rows]
    dup[4]["id"] = "p01"
    _write_csv(tmp_path / "dup.csv", dup)
    with pytest.raises(DataError, match=r"dup.csv:6 \[id\]: id 'p01' is already used at .*dup.csv:3"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "dup.csv")}, tmp_path / "o")
    bad = [dict(r, split="train") for r in rows]
    bad[2]["split"] = "holdout"
    _write_csv(tmp_path / "split.csv", bad)
    with pytest.raises(DataError, match=r"split.csv:4 \[split\]: unknown split 'holdout'"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "split.csv")}, tmp_path / "o")
    nolabel = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    _write_csv(tmp_path / "nolabel.csv", nolabel)
    with pytest.raises(DataError, match=r"no 'label' or 'labels' column"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "nolabel.csv")}, tmp_path / "o")
    (tmp_path / "names.txt").write_text("bird\ncat\n")
    _write_csv(tmp_path / "ok.csv", rows)
    with pytest.raises(DataError, match=r"ok.csv:4 \[label\]: unknown class 'dog'"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "ok.csv"), "classes": str(tmp_path / "names.txt")},
                     tmp_path / "o")
    with pytest.raises(ConfigError, match="give either manifest"):
        prep.make_config({"adapter": "raw-pairs"})
    (tmp_path / "bad.jsonl").write_text('{"image": "img/00.jpg", "text": "x", "label": "cat"}\n{"image": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a JSON object"):
        prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "bad.jsonl")}, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_jsonl_multilabel_and_single_label_selection(tmp_path: Path) -> None:
    lines = []
    for i in range(24):
        name = f"im/{i}.jpg"
        _image(tmp_path / name, i)
        labels = [["sky"], ["sea"], ["sky", "sea"], ["tree"]][i % 4]
        lines.append(json.dumps({"image": name, "text": f"tags {i}, {' '.join(labels)}", "labels": labels,
                                 "split": "test" if i >= 20 else "train"}))
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    man = prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "pairs.jsonl")}, tmp_path / "ml")
    s = Store(tmp_path / "ml")
    assert s.multilabel and s.classes == ["sea", "sky", "tree"] and s.schema["image"]["label"].shape == (3,)
    lab = s.load("train", "image")["label"]
    assert lab.shape == (20, 3) and lab[2].tolist() == [1, 1, 0]
    assert man["splits"]["test"]["rows"]["text"] == 4
    # NUS-WIDE-10K rule: 2 largest concepts (sea 12, sky 12), exactly one of them, 3 per class
    prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "pairs.jsonl"), "single_label_top_k": 2,
                  "single_label_per_class": 3, "seed": 7}, tmp_path / "sl")
    s = Store(tmp_path / "sl")
    assert not s.multilabel and s.classes == ["sea", "sky"]
    sel = s.info["single_label"]
    assert sel["concepts_kept"] == ["sea", "sky"] and sel["counts"] == {"sea": 3, "sky": 3} and sel["seed"] == 7
    ids = [i for sp in s.splits for i in s.load(sp, "text")["text"]]
    assert len(ids) == 6 and not any("sky sea" in t for t in ids)


def test_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    for c in ("cat", "dog"):
        for i in range(5):
            _image(root / c / f"{c}{i}.{'png' if i % 2 else 'jpeg'}", i)
            (root / c / f"{c}{i}.txt").write_text(f"a {c} number {i}\n", encoding="utf-8")
    (root / "cat" / "cat3.txt").unlink()
    (root / "dog" / "dog1.txt").write_bytes(b"\xff\xfe broken")
    (root / "dog" / "notes.md").write_text("ignored")
    man = prep.prepare({"adapter": "raw-pairs", "root": str(root), "max_reject_fraction": 0.25, "test_fraction": 0.5},
                       tmp_path / "o")
    s = Store(tmp_path / "o")
    assert s.classes == ["cat", "dog"]
    assert man["info"]["rejects"]["by_reason"]["missing caption file"] == 1
    assert man["info"]["rejects"]["by_reason"]["invalid UTF-8"] == 1
    img = np.concatenate([s.load(sp, "image")["path"] for sp in s.splits])
    assert sorted(img)[0] == "cat/cat0.jpeg" and "cat/cat3.png" not in img
    ids = np.concatenate([s.load(sp, "text")["id"] for sp in s.splits])
    assert "dog/dog4" in ids and len(ids) == 8
    (root / "dog" / "dog4.jpg").write_bytes((root / "dog" / "dog4.jpeg").read_bytes())
    with pytest.raises(DataError, match=r"dog4.jpg \[id\]: id 'dog/dog4' is already used at .*dog4.jpeg"):
        prep.prepare({"adapter": "raw-pairs", "root": str(root)}, tmp_path / "o2")


def test_rejects_report_cap_and_absolute_paths(tmp_path: Path) -> None:
    from prep.validate import Rejects

    r = Rejects()
    r.count_input("train", ["image", "text"], 5)
    for i in range(3):
        assert r.reject_pair("train", i, {"image": (f"x{i}", f"{i}.jpg", "missing file"), "text": (f"x{i}", "", None)})
    assert not r.reject_pair("train", 3, {"image": ("x3", "3.jpg", None), "text": ("x3", "", None)})
    s = r.summary(cap=4)
    assert s["count"] == 6 and len(s["items"]) == 4 and "capped at 4 of 6" in s["note"]
    assert len(r.jsonl().splitlines()) == 6
    assert r.accounting() == {"train": {"image": {"input": 5, "kept": 2, "rejected": 3},
                                        "text": {"input": 5, "kept": 2, "rejected": 3}}}
    # a manifest elsewhere with absolute image paths: stored relative to image_root
    rows = _manifest(tmp_path / "imgs", 4)
    for row in rows:
        row["image"] = str(tmp_path / "imgs" / row["image"])
    (tmp_path / "m").mkdir()
    _write_csv(tmp_path / "m" / "pairs.csv", rows)
    prep.prepare({"adapter": "raw-pairs", "manifest": str(tmp_path / "m" / "pairs.csv"),
                  "image_root": str(tmp_path / "imgs"), "test_fraction": 0.0}, tmp_path / "o")
    s2 = Store(tmp_path / "o")
    assert sorted(s2.load("train", "image")["path"]) == ["img/00.jpg", "img/01.png", "img/02.jpg", "img/03.png"]
