"""The embed stage on real stores: PCA fitted on train (checked against scikit-learn), resume,
lineage, reuse, validation, pass-through, and the contract with the encoders."""

from __future__ import annotations

import argparse
import string
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

import embed
from embed import EmbedConfig
from embed.reduce import PCA, Standardizer, load_state
from mixbench import cli
from mixbench.errors import ConfigError, StoreError
from mixbench.store.shards import STRING_DTYPE, Column, Store, StoreWriter, base_schema

SPLITS = ("train", "test")


# -- helpers ------------------------------------------------------------------------------------
def sign_aligned(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``y``'s columns with signs flipped to match ``ref``'s."""
    s = np.sign(np.sum(y * ref, axis=0))
    s[s == 0] = 1
    return y * s


def shard_digests(path: Path) -> dict[str, str]:
    m = Store(path).manifest
    return {r["file"]: r["sha256"] for r in m["shards"]} | {f["file"]: f["sha256"] for f in m["files"]}


def make_store(path: Path, rows: dict[str, int], *, dims: dict[str, int], raw_text: bool = False,
               shard_rows: int = 4, seed: int = 0) -> Path:
    """A small paired store written with StoreWriter: modality ``image`` has ``feat`` plus a raw
    ``path`` column and a ``present`` column; ``text`` has ``feat`` or (``raw_text``) strings."""
    g = np.random.default_rng(seed)
    schema = {
        "image": {**base_schema(), "feat": Column("float32", (dims["image"],)),
                  "path": Column(STRING_DTYPE), "present": Column("uint8")},
        "text": {**base_schema(), **({"text": Column(STRING_DTYPE)} if raw_text else
                                     {"feat": Column("float32", (dims["text"],))})},
    }
    w = StoreWriter(path, kind="paired", dataset="tiny", classes=["a", "b"], schema=schema,
                    lineage=[{"stage": "prep", "config": {}}], run_key="tiny")
    pair0 = 0
    for split, n in rows.items():
        for k, a in enumerate(range(0, n, shard_rows)):
            b = min(n, a + shard_rows)
            pair = np.arange(pair0 + a, pair0 + b)
            label = pair % 2
            img = {"id": [f"i{p}" for p in pair], "label": label, "pair": pair,
                   "feat": g.standard_normal((b - a, dims["image"])).astype(np.float32) + 2,
                   "path": [f"img/{p}.jpg" for p in pair], "present": np.ones(b - a, np.uint8)}
            if raw_text:
                words = ["".join(g.choice(list(string.ascii_lowercase), size=g.integers(3, 30))) for _ in pair]
                if split == "train" and k == 0:
                    words[1] = ""  # rejected by the fake encoder below
                txt: dict[str, Any] = {"text": words}
            else:
                txt = {"feat": g.standard_normal((b - a, dims["text"])).astype(np.float32)}
            w.write_shard(split, k, {"image": img, "text": {"id": [f"t{p}" for p in pair], "label": label,
                                                             "pair": pair, **txt}})
        pair0 += n
    w.finish({"note": "tiny test store"})
    return path


# -- the real Wikipedia store -----------------------------------------------------------------
def test_wikipedia_matches_sklearn_fitted_on_train(wiki_paired: Path, tmp_path: Path) -> None:
    out = tmp_path / "embed"
    manifest = embed.embed(wiki_paired, out, {"dim": 10})
    src, res = Store(wiki_paired), Store(out)
    assert res.kind == "features" and res.splits == src.splits and res.modalities == ["image", "text"]
    assert [(r["file"], r["rows"]) for r in res.manifest["shards"]] == [(r["file"], r["rows"]) for r in src.manifest["shards"]]
    for m, d_in in (("image", 128), ("text", 10)):
        train = src.load("train", m)
        sk = SkPCA(10, svd_solver="full").fit(train["feat"].astype(np.float64))
        for split in SPLITS:
            x = src.load(split, m)
            y = res.load(split, m)
            assert y["feat"].dtype == np.float32 and y["feat"].shape == (len(x["id"]), 10)
            ref = sk.transform(x["feat"].astype(np.float64))
            np.testing.assert_allclose(sign_aligned(y["feat"].astype(np.float64), ref), ref,
                                       atol=2e-6 * np.abs(ref).max())
            for c in ("id", "label", "pair"):
                np.testing.assert_array_equal(y[c], x[c])
        info = manifest["info"]["reduce"][m]
        assert manifest["info"]["dims"][m] == {"in": d_in, "out": 10}
        assert info["fit_split"] == "train" and info["fit_rows"] == 2173 and info["method"] == "pca"
        np.testing.assert_allclose(info["explained_variance_ratio"], sk.explained_variance_ratio_, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(info["explained_variance_ratio_sum"], sk.explained_variance_ratio_.sum(), rtol=1e-10)
        # the saved state reproduces the stored features
        pca = PCA.from_state(load_state(res.file(f"pca-{m}.npz")), device="cpu")
        np.testing.assert_array_equal(pca.transform(src.load("test", m)["feat"]), res.load("test", m)["feat"])
    assert "feat" in res.schema["image"] and "path" not in res.schema["image"]
    assert manifest["info"]["upstream"]["pairs"] == {"train": 2173, "test": 693}


def test_lineage_reuse_and_overwrite(wiki_paired: Path, tmp_path: Path) -> None:
    out = tmp_path / "embed"
    cfg = EmbedConfig(dim=4, standardize=True)
    first = embed.embed(wiki_paired, out, cfg)
    src = Store(wiki_paired)
    lineage = first["lineage"]
    assert [e["stage"] for e in lineage] == ["prep", "embed"]
    assert lineage[0] == src.lineage[0]
    entry = lineage[-1]
    assert entry["config"] == cfg.to_dict() and entry["config_hash"] == cfg.config_hash()
    assert entry["inputs"]["store"]["manifest_sha256"] == src.manifest_sha256
    assert entry["seed"] == 0 and entry["finished"] and entry["run_key"]
    assert first["info"]["reduce"]["image"]["standardized"] is True
    again = embed.embed(wiki_paired, out, cfg.to_dict())
    assert again["reused"] is True and again["shards"] == first["shards"]
    with pytest.raises(StoreError, match="already holds a complete store.*overwrite"):
        embed.embed(wiki_paired, out, {"dim": 5})
    assert shard_digests(out) == {r["file"]: r["sha256"] for r in first["shards"]} | {
        f["file"]: f["sha256"] for f in first["files"]}
    redone = embed.embed(wiki_paired, out, {"dim": 5}, overwrite=True)
    assert redone["info"]["dims"]["image"]["out"] == 5 and "reused" not in redone


def test_resume_after_interruption(wiki_paired: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embed.embed(wiki_paired, tmp_path / "ref", {"dim": 10})
    reference = shard_digests(tmp_path / "ref")
    out = tmp_path / "resumed"
    original = StoreWriter.write_shard
    calls: list[str] = []

    def failing(self: StoreWriter, split: str, index: int, tables: Any) -> dict[str, Any]:
        if calls:
            raise RuntimeError("simulated crash after the first shard")
        calls.append(f"{split}-{index}")
        return original(self, split, index, tables)

    monkeypatch.setattr(StoreWriter, "write_shard", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed.embed(wiki_paired, out, {"dim": 10})
    with pytest.raises(StoreError, match="not a complete store"):
        Store(out)
    first = out / "train-00000.h5"
    stat = first.stat()

    rewritten: list[tuple[str, int]] = []

    def counting(self: StoreWriter, split: str, index: int, tables: Any) -> dict[str, Any]:
        rewritten.append((split, index))
        return original(self, split, index, tables)

    monkeypatch.setattr(StoreWriter, "write_shard", counting)
    embed.embed(wiki_paired, out, {"dim": 10})
    assert rewritten == [("train", 1), ("train", 2), ("test", 0)]  # the finished shard was kept
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert shard_digests(out) == reference
    assert Store(out).verify() == []


def test_pass_through_and_standardize_only(wiki_paired: Path, tmp_path: Path) -> None:
    src = Store(wiki_paired)
    copied = embed.embed(wiki_paired, tmp_path / "copy", {"dim": 0, "dtype": "float16"})
    res = Store(tmp_path / "copy")
    assert copied["files"] == [] and copied["info"]["reduce"]["image"]["method"] == "none"
    for split in SPLITS:
        np.testing.assert_array_equal(res.load(split, "image")["feat"], src.load(split, "image")["feat"].astype(np.float16))
    assert res.schema["image"]["feat"] == Column("float16", (128,))

    embed.embed(wiki_paired, tmp_path / "std", {"dim": 0, "standardize": True})
    std = Store(tmp_path / "std")
    for m in ("image", "text"):
        z = std.load("train", m)["feat"].astype(np.float64)
        x = src.load("train", m)["feat"].astype(np.float64)
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
        np.testing.assert_allclose(z.std(0), np.where(x.std(0) > 0, 1.0, 0.0), atol=1e-5)
        est = Standardizer.from_state(load_state(std.file(f"scaler-{m}.npz")), device="cpu")
        np.testing.assert_allclose(est.mean_, x.mean(0), rtol=1e-10, atol=1e-12)


def test_whiten_on_store(wiki_paired: Path, tmp_path: Path) -> None:
    embed.embed(wiki_paired, tmp_path / "w", {"dim": 6, "whiten": True, "standardize": True})
    y = Store(tmp_path / "w").load("train", "image")["feat"].astype(np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0, ddof=1), 1.0, rtol=1e-5)


# -- validation ---------------------------------------------------------------------------------
def test_dim_larger_than_features_or_rows(wiki_paired: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dim = 11: larger than the feature dimension of modality 'text' \(10\).*dim <= 10"):
        embed.embed(wiki_paired, tmp_path / "a", {"dim": 11})
    small = make_store(tmp_path / "small", {"train": 5, "test": 3}, dims={"image": 8, "text": 8})
    with pytest.raises(ConfigError, match=r"dim = 6: larger than the number of train rows of modality 'image' \(5\)"):
        embed.embed(small, tmp_path / "b", {"dim": 6})
    with pytest.raises(ConfigError, match=r"fit_split = 'val': the store has no such split; its splits are train, test"):
        embed.embed(small, tmp_path / "c", {"dim": 2, "fit_split": "val"})
    for name in "abc":  # nothing written by a rejected config
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_modality_without_feat_or_encoder(tmp_path: Path) -> None:
    raw = make_store(tmp_path / "raw", {"train": 6, "test": 2}, dims={"image": 4, "text": 0}, raw_text=True)
    with pytest.raises(ConfigError, match=r"modality 'text' has no 'feat' column \(columns: id, label, pair, text\) "
                                          r"and no encoder.*encoders.text.encoder"):
        embed.embed(raw, tmp_path / "out", {"dim": 2})
    with pytest.raises(ConfigError, match="encoders.audio: the store has no modality 'audio'"):
        embed.embed(raw, tmp_path / "out", {"encoders": {"audio": {"encoder": "x"}}})


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="whiten = true needs a PCA"):
        EmbedConfig.from_dict({"whiten": True})
    with pytest.raises(ConfigError, match=r"\[embed\]: unknown key 'dimm'. Did you mean 'dim'"):
        EmbedConfig.from_dict({"dimm": 3})
    with pytest.raises(ConfigError, match=r"dtype = 'float64': must be one of"):
        EmbedConfig.from_dict({"dtype": "float64"})
    with pytest.raises(ConfigError, match=r"dim = -1: must be an integer in \[0, inf\)"):
        EmbedConfig.from_dict({"dim": -1})
    with pytest.raises(ConfigError, match="encoders.image: no 'encoder' key"):
        EmbedConfig.from_dict({"encoders": {"image": {"model": "ViT-B-32"}}})


def test_cli_flags_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe")
    parser.add_argument("--set", action="append")
    EmbedConfig.add_arguments(parser)
    args = parser.parse_args(["--dim", "10", "--standardize", "true", "--dtype", "float16",
                              "--set", "encoders.image.encoder=open_clip", "--set", "encoders.image.model=ViT-B-32",
                              "--set", "encoders.text.encoder=tfidf"])
    cfg, _ = cli._stage_config(args, "embed", EmbedConfig)
    assert (cfg.dim, cfg.standardize, cfg.dtype, cfg.whiten) == (10, True, "float16", False)
    assert cfg.encoders == {"image": {"encoder": "open_clip", "model": "ViT-B-32"}, "text": {"encoder": "tfidf"}}
    assert "--encoders" not in parser.format_help()


# -- the contract with embed.encode -------------------------------------------------------------
def letters_encode_store(src: Store, out: Path, encoders: dict[str, dict[str, Any]], *, base_dir: Path,
                         device: torch.device, lineage: list[dict[str, Any]], run_key: str,
                         max_reject_fraction: float, dtype: str, overwrite: bool) -> Store:
    """A real (small) encoder behind the documented ``encode_store`` contract: letter counts of
    ``text`` (26-d); empty texts are rejected together with their image partner."""
    assert isinstance(device, torch.device) and isinstance(base_dir, Path)
    LETTERS_CALLS.append({"encoders": encoders, "lineage": lineage, "run_key": run_key, "dtype": dtype,
                          "overwrite": overwrite, "max_reject_fraction": max_reject_fraction})
    schema = {m: {c: col for c, col in cols.items() if c not in ("text", "path")} for m, cols in src.schema.items()}
    schema["text"]["feat"] = Column(dtype, (26,))
    w = StoreWriter(out, kind="features", dataset=src.dataset, classes=src.classes, schema=schema,
                    lineage=lineage, run_key=run_key, overwrite=overwrite)
    items, acct = [], {}
    for split in src.splits:
        for rec, tables in src.iter_shards(split):
            words = tables["text"]["text"]
            keep = np.array([len(t) > 0 for t in words])
            for i in np.flatnonzero(~keep):
                items.append({"split": split, "modality": "text", "id": tables["text"]["id"][i],
                              "pair": int(tables["text"]["pair"][i]), "file": "", "reason": "empty text"})
            counts = np.array([[t.count(c) for c in string.ascii_lowercase] for t in words], dtype=np.float32)
            out_t = {m: {c: tables[m][c][keep] for c in schema[m] if c != "feat" or m == "image"} for m in schema}
            out_t["text"]["feat"] = counts[keep]
            w.write_shard(split, rec["index"], out_t)
            a = acct.setdefault(split, {m: {"input": 0, "kept": 0, "rejected": 0} for m in schema})
            for m in schema:
                a[m]["input"] += len(keep)
                a[m]["kept"] += int(keep.sum())
                a[m]["rejected"] += int((~keep).sum())
    w.finish({"rejects": {"count": len(items), "by_reason": {"empty text": len(items)}, "items": items},
              "accounting": acct, "encoders": {"text": {"encoder": "letters", "dim": 26}}})
    return Store(out)


LETTERS_CALLS: list[dict[str, Any]] = []


def test_encoders_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("embed.encode")
    fake.encode_store = letters_encode_store  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embed.encode", fake)
    LETTERS_CALLS.clear()
    raw = make_store(tmp_path / "raw", {"train": 40, "test": 10}, dims={"image": 12, "text": 0},
                     raw_text=True, shard_rows=16)
    out = tmp_path / "emb"
    cfg = {"dim": 5, "encoders": {"text": {"encoder": "letters"}}, "dtype": "float16"}
    manifest = embed.embed(raw, out, cfg)
    (call,) = LETTERS_CALLS
    assert call["dtype"] == "float32" and call["overwrite"] is True and call["max_reject_fraction"] == 0.05
    assert [e["stage"] for e in call["lineage"]] == ["prep", "embed.encode"]
    enc = Store(out / "encoded")
    res = Store(out)
    assert res.manifest["info"]["rejects"]["count"] == 1
    assert res.manifest["info"]["accounting"]["train"]["text"] == {"input": 40, "kept": 39, "rejected": 1}
    assert res.manifest["info"]["encoders"] == {"text": {"encoder": "letters", "dim": 26}}
    assert manifest["info"]["dims"] == {"image": {"in": 12, "out": 5}, "text": {"in": 26, "out": 5}}
    assert [r["rows"] for r in res.manifest["shards"]] == [r["rows"] for r in enc.manifest["shards"]]
    assert res.rows("train", "text") == 39 and set(res.schema["text"]) == {"id", "label", "pair", "feat"}
    assert set(res.schema["image"]) == {"id", "label", "pair", "present", "feat"}  # raw `path` dropped
    x = enc.load("train", "text")["feat"].astype(np.float64)
    ref = SkPCA(5, svd_solver="full").fit(x).transform(x)
    y = res.load("train", "text")["feat"].astype(np.float64)
    np.testing.assert_allclose(sign_aligned(y, ref), ref, atol=2e-3 * np.abs(ref).max())
    # another dim: the encoded store (same encoders, same input) is reused, not re-encoded
    embed.embed(raw, out, {**cfg, "dim": 3}, overwrite=True)
    assert len(LETTERS_CALLS) == 1 and Store(out).manifest["info"]["dims"]["text"]["out"] == 3


def test_real_encoders_passthrough_gives_the_same_store(wiki_paired: Path, tmp_path: Path) -> None:
    """Through the real ``embed.encode`` with the ``features`` encoder (a pass-through), the
    reduced shards are byte-identical to reducing the store's own features directly."""
    direct = embed.embed(wiki_paired, tmp_path / "direct", {"dim": 10})
    via = embed.embed(wiki_paired, tmp_path / "via", {"dim": 10, "encoders": {"text": {"encoder": "features"}}})
    assert [r["sha256"] for r in via["shards"]] == [r["sha256"] for r in direct["shards"]]
    assert via["info"]["accounting"]["train"]["text"] == {"input": 2173, "kept": 2173, "rejected": 0}
    assert via["info"]["rejects"]["count"] == 0
    assert via["info"]["encoders"]["text"]["encoder"] == "features"
    assert Store(tmp_path / "via" / "encoded").lineage[-1]["stage"] == "embed.encode"
    assert [e["stage"] for e in via["lineage"]] == ["prep", "embed"]


def test_local_weights_enter_the_run_key(tmp_path) -> None:
    """A weights file replaced in place must not let embed reuse features made with the old one."""
    from embed.config import EmbedConfig
    from embed.stage import _weights_inputs

    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"old weights")
    cfg = EmbedConfig.from_dict({"encoders": {"image": {"encoder": "open_clip", "pretrained": "w.pt"}}})
    before = _weights_inputs(cfg, tmp_path)
    assert set(before) == {"image.pretrained"}
    ckpt.write_bytes(b"new weights")
    after = _weights_inputs(cfg, tmp_path)
    assert after["image.pretrained"]["sha256"] != before["image.pretrained"]["sha256"]
    tag = EmbedConfig.from_dict({"encoders": {"image": {"encoder": "open_clip", "pretrained": "laion2b_s34b_b79k"}}})
    assert _weights_inputs(tag, tmp_path) == {}  # a pretrained tag is not a file: its name is in the config


def test_pca_on_fewer_rows_than_features(uci_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """n < d (UCI pix, 240-d, 40 train rows): whitening shrinks held-out rows, so the default scales the
    modality by one number instead (small_n), the held-out variance share is recorded and warned about,
    and fit_split = 'all' (transductive) is accepted."""
    import logging

    import prep

    paired = tmp_path / "p"
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["pix", "fou"], "test_fraction": 0.98,
                  "seed": 0}, paired)
    with caplog.at_level(logging.WARNING):
        man = embed.embed(paired, tmp_path / "a", {"dim": 10, "whiten": True})
    pix = man["info"]["reduce"]["pix"]
    assert pix["fit_rows"] == 40 and not pix["whitened"] and pix["unit_scale"] > 0 and "small_n" in pix
    assert man["info"]["reduce"]["fou"]["whitened"] is False  # 76 features > 40 rows too
    assert "scaled by one number instead" in caplog.text
    assert 0.0 < pix["heldout_variance_ratio"]["test"] < 1.0

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        man = embed.embed(paired, tmp_path / "w", {"dim": 10, "whiten": True, "small_n": "whiten"})
    pix, fou = man["info"]["reduce"]["pix"], man["info"]["reduce"]["fou"]
    assert pix["whitened"] and "small_n" not in pix
    ratio = fou["heldout_variance_ratio"]["test"]
    assert ratio < 0.8  # the whitened test rows are shrunk: 0.63 of the train rows' variance
    assert "'fou': PCA fitted on 40 train rows of 76 features" in caplog.text
    assert f"keep {ratio:.2f} of the fit rows' variance after the transform (whitened)" in caplog.text
    x = Store(tmp_path / "w").load("train", "pix")["feat"].astype(np.float64)
    np.testing.assert_allclose(x.var(0, ddof=1), 1.0, rtol=1e-4)  # whitened on the fit rows

    man = embed.embed(paired, tmp_path / "all", {"dim": 10, "whiten": True, "fit_split": "all"})
    pix = man["info"]["reduce"]["pix"]
    assert pix["fit_split"] == "all" and pix["fit_rows"] == 2000 and pix["whitened"]
    assert "heldout_variance_ratio" not in pix
    s = Store(tmp_path / "all")
    x = np.concatenate([s.load(sp, "pix")["feat"] for sp in s.splits]).astype(np.float64)
    np.testing.assert_allclose(x.var(0, ddof=1), 1.0, rtol=1e-4)  # unit variance over every row
