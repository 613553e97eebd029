"""[embed] log_ratio: the centred log-ratio transform of compositional features, alone and in the stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA
from test_embed_stage import make_store, sign_aligned

import embed
from embed.logratio import clr
from mixbench.errors import ConfigError, DataError
from mixbench.store.shards import Store


def test_clr_is_scale_free_sums_to_zero_and_matches_the_formula() -> None:
    x = np.array([[0.5, 0.25, 0.25], [2.0, 1.0, 1.0], [0.0, 0.5, 0.5]])
    y = clr(x, eps=1e-6)
    np.testing.assert_allclose(y.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y[0], y[1])  # a composition does not depend on its total
    logs = np.log(np.array([0.0, 0.5, 0.5]) + 1e-6)
    np.testing.assert_allclose(y[2], logs - logs.mean())
    assert y.dtype == np.float64


@pytest.mark.parametrize(("row", "what"), [([0.2, -0.1, 0.9], "a negative part"), ([0.0, 0.0, 0.0], "all parts zero"),
                                            ([0.2, np.nan, 0.8], "a non-finite part"), ([np.inf, 0.1, 0.1], "a non-finite part")])
def test_clr_names_the_row_that_is_not_a_composition(row: list[float], what: str) -> None:
    x = np.array([[0.2, 0.3, 0.5], row, row])
    with pytest.raises(DataError, match=rf"shard 3: id 'b' \(row 1 of the shard, field 'feat'\) has {what}.*2 such row"):
        clr(x, eps=1e-6, ids=np.array(["a", "b", "c"]), where="shard 3")


def test_stage_applies_clr_before_the_pca_and_records_it(wiki_paired: Path, tmp_path: Path) -> None:
    manifest = embed.embed(wiki_paired, tmp_path / "clr", {"dim": 9, "log_ratio": ["text"]})
    src, res = Store(wiki_paired), Store(tmp_path / "clr")
    sk = SkPCA(9, svd_solver="full").fit(clr(src.load("train", "text")["feat"], eps=1e-6))
    for split in ("train", "test"):
        ref = sk.transform(clr(src.load(split, "text")["feat"], eps=1e-6))
        got = res.load(split, "text")["feat"].astype(np.float64)
        np.testing.assert_allclose(sign_aligned(got, ref), ref, atol=2e-6 * np.abs(ref).max())
    info = manifest["info"]["reduce"]
    assert info["text"]["log_ratio"] == "clr" and info["text"]["log_ratio_eps"] == 1e-6
    assert "log_ratio" not in info["image"]  # the image side is untouched
    plain = embed.embed(wiki_paired, tmp_path / "plain", {"dim": 9})
    assert plain["lineage"][-1]["run_key"] != manifest["lineage"][-1]["run_key"]


def test_stage_refuses_non_compositions_and_unknown_modalities(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {"train": 8, "test": 4}, dims={"image": 4, "text": 3})
    with pytest.raises(DataError, match=r"split 'train' shard 0, modality 'text': id 't0'.*negative part"):
        embed.embed(store, tmp_path / "o", {"dim": 2, "log_ratio": ["text"]})  # the text feats are N(0, 1)
    assert not (tmp_path / "o" / "manifest.json").exists()
    with pytest.raises(ConfigError, match="log_ratio: the store has no modality 'audio'"):
        embed.embed(store, tmp_path / "o2", {"dim": 2, "log_ratio": ["audio"]})
    with pytest.raises(ConfigError, match="log_ratio_eps = 0"):
        embed.embed(store, tmp_path / "o3", {"dim": 2, "log_ratio": ["image"], "log_ratio_eps": 0.0})
