"""encode_store end to end on small raw stores built here: real JPEG/PNG/WebP files (RGB,
grayscale, CMYK, RGBA, a truncated JPEG, a zero-byte file, a missing file, a text file and a
PNG named .jpg), captions (one empty), a tiny random-init open_clip model and TF-IDF.

The builders at the top are also used by test_encode_resume.py and test_encode_distributed.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

import mixbench.store

from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Column, StoreWriter, base_schema

TINY = "MixbenchTinyCLIP"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# -- builders ------------------------------------------------------------------------------------
def write_tiny_clip(folder: Path) -> Path:
    """A tiny open_clip architecture (random init, ~2M parameters) as a model_config file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    return path


def clip_table(config_path: Path, **kw: Any) -> dict[str, Any]:
    table = {"encoder": "open_clip", "model": TINY, "model_config": str(config_path), "allow_random": True,
             "batch_size": 4, "workers": 0, "decode": "cpu"}
    table.update(kw)
    return table


def photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A small image with a gradient, a few shapes and noise (not a flat colour)."""
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = (np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2) * rng.uniform(80, 255, 3)).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        draw.ellipse([x0, y0, x0 + int(rng.integers(6, w // 2)), y0 + int(rng.integers(6, h // 2))],
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 12, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


#: file name → expected reject reason (None: kept)
ODD_FILES = {
    "gray.png": None,
    "cmyk.jpg": None,
    "rgba.webp": None,
    "palette.png": None,
    "png_named.jpg": None,
    "truncated.jpg": "truncated-image",
    "zero.jpg": "empty-file",
    "notimage.jpg": "undecodable-image",
    "missing.jpg": "missing-file",
}


def write_images(root: Path, n_plain: int, seed: int = 0) -> list[str]:
    """``n_plain`` RGB JPEGs of varied sizes plus the odd files of :data:`ODD_FILES`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_plain):
        name = f"img{i:03d}.jpg"
        photo(rng, int(rng.integers(48, 120)), int(rng.integers(40, 100))).save(root / name, "JPEG", quality=90)
        names.append(name)
    im = photo(rng, 80, 60)
    im.convert("L").save(root / "gray.png")
    im.convert("CMYK").save(root / "cmyk.jpg", "JPEG", quality=90)
    rgba = im.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.webp", "WEBP")
    im.convert("P").save(root / "palette.png")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    (root / "png_named.jpg").write_bytes(buf.getvalue())
    full = io.BytesIO()
    photo(rng, 96, 80).save(full, "JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) * 2 // 3])
    (root / "zero.jpg").write_bytes(b"")
    (root / "notimage.jpg").write_text("this is a caption, not an image\n")
    return names


def build_raw_store(out: Path, image_root: Path, rows: dict[str, list[tuple[str, str, int]]], shard_rows: int = 4,
                    classes: tuple[str, ...] = ("cat", "dog", "car")) -> mixbench.store.Store:
    """A raw paired store: per split a list of (image path, caption, label); pair id = row number."""
    schema = {"image": {**base_schema(), "path": Column("str")}, "text": {**base_schema(), "text": Column("str")}}
    writer = StoreWriter(out, kind="paired", dataset="toy", classes=classes, schema=schema, lineage=[],
                         run_key="raw", overwrite=True)
    pair = 0
    for split, items in rows.items():
        for k in range(0, max(1, len(items)), shard_rows):
            part = items[k : k + shard_rows]
            ids = list(range(pair, pair + len(part)))
            pair += len(part)
            writer.write_shard(split, k // shard_rows, {
                "image": {"id": [f"img-{i}" for i in ids], "label": [p[2] for p in part], "pair": ids,
                          "path": [p[0] for p in part]},
                "text": {"id": [f"txt-{i}" for i in ids], "label": [p[2] for p in part], "pair": ids,
                         "text": [p[1] for p in part]},
            })
    writer.finish({"image_root": str(image_root)})
    return mixbench.store.Store(out)


WORDS = ["red", "blue", "small", "large", "cat", "dog", "car", "on", "a", "mat", "road", "sofa", "green"]


def caption(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(3, 8))))


def standard_rows(names: list[str], seed: int = 1) -> dict[str, list[tuple[str, str, int]]]:
    """Train: the plain JPEGs (one with an empty caption). Test: the odd files + a caption with an
    unseen word."""
    rng = np.random.default_rng(seed)
    train = [(n, caption(rng), i % 3) for i, n in enumerate(names)]
    train[1] = (train[1][0], "   ", train[1][2])
    test = [(n, caption(rng), i % 3) for i, n in enumerate(ODD_FILES)]
    test.append((names[0], "zebra " + caption(rng), 0))
    return {"train": train, "test": test}


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("encode")
    names = write_images(tmp / "images", 10)
    rows = standard_rows(names)
    src = build_raw_store(tmp / "raw", tmp / "images", rows)
    return {"tmp": tmp, "src": src, "rows": rows, "clip": write_tiny_clip(tmp / "models")}


def run_encode(src: mixbench.store.Store, out: Path, encoders: dict[str, Any], **kw: Any) -> mixbench.store.Store:
    from embed.encode import encode_store

    args: dict[str, Any] = {"base_dir": Path("."), "device": "cpu", "lineage": [], "run_key": "test-key",
                            "max_reject_fraction": 1.0, "dtype": "float32", "overwrite": True}
    args.update(kw)
    return encode_store(src, out, encoders, **args)


# -- tests -----------------------------------------------------------------------------------------
def test_end_to_end_rejects_accounting_and_manifest(toy: dict[str, Any]) -> None:
    enc = {"image": clip_table(toy["clip"], workers=1), "text": {"encoder": "tfidf"}}
    store = run_encode(toy["src"], toy["tmp"] / "enc", enc, dtype="float16", max_reject_fraction=0.5)
    info = store.info
    rej = info["rejects"]
    expected_img = {f"img-{10 + i}": r for i, r in enumerate(ODD_FILES.values()) if r}
    got = {(it["modality"], it["id"]): it["reason"] for it in rej["items"]}
    for rid, reason in expected_img.items():
        assert got[("image", rid)] == reason
        assert got[("text", rid.replace("img", "txt"))] == f"partner-rejected: {reason}"
    assert got[("text", "txt-1")] == "empty-text"
    assert got[("image", "img-1")] == "partner-rejected: empty-text"
    assert rej["count"] == len(got) == 2 * (len(expected_img) + 1)
    assert sum(rej["by_reason"].values()) == rej["count"]
    assert {it["file"] for it in rej["items"] if it["modality"] == "image" and it["id"] != "img-1"} == \
        {n for n, r in ODD_FILES.items() if r}
    # input = kept + rejected, everywhere, and the store holds exactly the kept rows
    acc = info["accounting"]
    for split in ("train", "test"):
        for m in ("image", "text"):
            a = acc[split][m]
            assert a["input"] == a["kept"] + a["rejected"] == len(toy["rows"][split])
            assert store.rows(split, m) == a["kept"]
    assert acc["test"]["image"]["kept"] == 1 + sum(r is None for r in ODD_FILES.values())
    # grayscale, CMYK, RGBA, palette and a PNG named .jpg are converted, not rejected
    kept = set(store.load("test", "image", ["id"])["id"])
    assert {f"img-{10 + i}" for i, r in enumerate(ODD_FILES.values()) if r is None} <= kept
    feat = store.load("train", "image")["feat"]
    assert feat.dtype == np.float16 and feat.shape == (9, 32)
    assert np.allclose(np.linalg.norm(feat.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # manifest records encoder, weights, preprocessing and precision; the report and vocabulary are files
    e = info["encoders"]["image"]
    assert e["encoder"] == "open_clip" and e["tower"] == "image" and e["weights"] == {"source": "random", "seed": 0}
    assert e["preprocess"]["size"] == [64, 64] and e["preprocess"]["interpolation"] == "bicubic"
    assert len(e["preprocess"]["mean"]) == 3 and e["precision"] == "fp32" and e["input_column"] == "path"
    assert info["encoders"]["text"]["encoder"] == "tfidf" and info["encoders"]["text"]["fitted_on"] == "train"
    files = {f["file"] for f in store.manifest["files"]}
    assert {"rejects.json", "vocabulary-text.json"} <= files
    vocab = json.loads(store.file("vocabulary-text.json").read_text())["vocabulary"]
    assert "zebra" not in vocab and "cat" in vocab  # fitted on train only
    assert store.kind == "features" and store.manifest["shards"][0]["file"] == "train-00000.h5"
    assert [(s["split"], s["index"]) for s in store.manifest["shards"]] == \
        [(s["split"], s["index"]) for s in toy["src"].manifest["shards"]]
    assert not (toy["tmp"] / "enc" / ".encode").exists()
    assert store.verify() == []


def test_device_decode_path_gives_the_same_store(toy: dict[str, Any]) -> None:
    """decode = "device" runs the CUDA code path (batched decode_jpeg, resize on the device) on
    the CPU; the pixels and features equal the PIL-in-worker path exactly."""
    enc_cpu = {"image": clip_table(toy["clip"], decode="cpu"), "text": {"encoder": "bow"}}
    enc_dev = {"image": clip_table(toy["clip"], decode="device"), "text": {"encoder": "bow"}}
    a = run_encode(toy["src"], toy["tmp"] / "cpu", enc_cpu)
    b = run_encode(toy["src"], toy["tmp"] / "dev", enc_dev)
    assert [s["sha256"] for s in a.manifest["shards"]] == [s["sha256"] for s in b.manifest["shards"]]
    assert a.info["rejects"] == b.info["rejects"]


def test_too_many_rejects_fail_with_counts_and_report(toy: dict[str, Any]) -> None:
    out = toy["tmp"] / "strict"
    enc = {"image": clip_table(toy["clip"]), "text": {"encoder": "bow"}}
    with pytest.raises(DataError) as err:
        run_encode(toy["src"], out, enc, max_reject_fraction=0.05)
    msg = str(err.value)
    assert "max_reject_fraction = 0.05" in msg and str(out / "rejects.json") in msg
    assert "test: 8 of 20 rows (40.00%)" in msg and "train: 2 of 20 rows (10.00%)" in msg
    assert "truncated-image: 1" in msg
    assert not (out / "manifest.json").exists()
    report = json.loads((out / "rejects.json").read_text())
    assert report["rejects"]["count"] == 10
    with pytest.raises(Exception):
        mixbench.store.Store(out)


def test_sha256_mismatch_writes_nothing(toy: dict[str, Any], tmp_path: Path) -> None:
    import torch

    ckpt = tmp_path / "tiny.pt"
    torch.save({"x": torch.zeros(1)}, ckpt)
    enc = {"image": clip_table(toy["clip"], allow_random=False, pretrained=str(ckpt), sha256="0" * 64,
                               preprocess_from="model-default")}
    out = tmp_path / "never"
    with pytest.raises(ConfigError, match="sha256"):
        run_encode(toy["src"], out, enc)
    assert not out.exists()


def test_config_errors_name_the_modality_and_the_fix(toy: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"modality 'audio' is not in the input store"):
        run_encode(toy["src"], tmp_path / "x", {"audio": {"encoder": "tfidf"}})
    with pytest.raises(ConfigError, match=r"\[embed.encoders.text\] encoder = 'cnn' reads image.*Encoders that fit"):
        run_encode(toy["src"], tmp_path / "x", {"image": clip_table(toy["clip"]),
                                                "text": {"encoder": "cnn", "allow_random": True, "model": "timm:resnet18"}})
    with pytest.raises(ConfigError, match=r"modality 'text' .* has no 'feat' column"):
        run_encode(toy["src"], tmp_path / "x", {"image": clip_table(toy["clip"])})
    with pytest.raises(ConfigError, match="unknown encoder.*Did you mean 'open_clip'"):
        run_encode(toy["src"], tmp_path / "x", {"image": {"encoder": "openclip"}})
    assert not (tmp_path / "x").exists()


def test_pixels_tags_present_and_passthrough(tmp_path: Path, toy: dict[str, Any]) -> None:
    """A store with a ``pixels`` image column, tag vectors (tf-idf weighted), a ``present`` column
    (zero-filled placeholder rows are kept as zeros, not decoded) and a passthrough modality."""
    rng = np.random.default_rng(3)
    n = 6
    pixels = np.stack([np.asarray(photo(rng, 40, 30)) for _ in range(n)])
    tags = rng.integers(0, 3, (n, 12)).astype(np.float32)
    tags[2] = 0  # no tags at all → rejected, and its image partner too
    present = np.ones(n, dtype=np.uint8)
    present[4] = 0
    pixels[4] = 0
    schema = {
        "image": {**base_schema(), "pixels": Column("uint8", (30, 40, 3)), "present": Column("uint8")},
        "tags": {**base_schema(), "feat": Column("float32", (12,)), "present": Column("uint8")},
        "extra": {**base_schema(), "feat": Column("float32", (5,)), "present": Column("uint8")},
    }
    w = StoreWriter(tmp_path / "raw", kind="paired", dataset="px", classes=["a", "b"], schema=schema,
                    lineage=[], run_key="raw")
    for split in ("train", "test"):
        base = {"label": np.arange(n) % 2, "pair": np.arange(n), "present": present}
        w.write_shard(split, 0, {
            "image": {**base, "id": [f"{split}i{i}" for i in range(n)], "pixels": pixels},
            "tags": {**base, "id": [f"{split}t{i}" for i in range(n)], "feat": tags},
            "extra": {**base, "id": [f"{split}e{i}" for i in range(n)],
                      "feat": rng.normal(size=(n, 5)).astype(np.float32)},
        })
    w.finish({})
    src = mixbench.store.Store(w.path)
    store = run_encode(src, tmp_path / "enc", {"image": clip_table(toy["clip"]), "tags": {"encoder": "tfidf"}})
    img = store.load("train", "image")
    assert list(img["id"]) == ["traini0", "traini1", "traini3", "traini4", "traini5"]
    assert np.all(img["feat"][3] == 0) and img["present"][3] == 0
    assert np.allclose(np.linalg.norm(img["feat"][[0, 1, 2, 4]], axis=1), 1.0, atol=1e-5)
    reasons = {(it["modality"], it["id"]): it["reason"] for it in store.info["rejects"]["items"]}
    assert reasons[("tags", "traint2")] == "empty-tags"
    assert reasons[("image", "traini2")] == "partner-rejected: empty-tags"
    assert reasons[("extra", "traine2")] == "partner-rejected: empty-tags"
    ex = store.load("test", "extra")
    raw = src.load("test", "extra")
    assert np.array_equal(ex["feat"], raw["feat"][[0, 1, 3, 4, 5]])
    assert store.info["encoders"]["extra"]["encoder"] == "features"
    assert store.info["encoders"]["image"]["input_column"] == "pixels"
    # tf-idf on tags: idf from the train split, as scikit-learn computes it
    from sklearn.feature_extraction.text import TfidfTransformer

    train_tags = tags[[0, 1, 3, 5]]  # used rows: tagged and present
    ref = TfidfTransformer().fit(train_tags).transform(tags[[0, 1, 3, 4, 5]]).toarray()
    got = store.load("test", "tags")["feat"]
    assert np.allclose(got[[0, 1, 2, 4]], ref[[0, 1, 2, 4]], atol=1e-6)
    assert np.all(got[3] == 0)  # absent row


def test_resume_redoes_shards_written_with_other_weights(toy: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Same run key, but the encoder is not the same (here another random seed; in practice a
    weights file replaced in place): finished shards of the interrupted run are encoded again."""
    from mixbench.store.shards import StoreWriter

    real = StoreWriter.write_shard
    calls: list[str] = []

    def failing(self: StoreWriter, split: str, index: int, tables: Any) -> dict[str, Any]:
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted after 2 shards")
        calls.append(f"{split}-{index}")
        return real(self, split, index, tables)

    out = tmp_path / "enc"
    with monkeypatch.context() as mp:
        mp.setattr(StoreWriter, "write_shard", failing)
        with pytest.raises(KeyboardInterrupt):
            run_encode(toy["src"], out, {"image": clip_table(toy["clip"], seed=1), "text": {"encoder": "bow"}})
    assert len(list(out.glob("*.h5"))) == 2 and not (out / "manifest.json").exists()
    enc2 = {"image": clip_table(toy["clip"], seed=2), "text": {"encoder": "bow"}}
    with caplog.at_level("WARNING"):
        resumed = run_encode(toy["src"], out, enc2, overwrite=False)
    assert "encoded with other encoder weights or settings" in caplog.text
    fresh = run_encode(toy["src"], tmp_path / "fresh", enc2)
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [s["sha256"] for s in fresh.manifest["shards"]]
