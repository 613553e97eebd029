"""[embed] unit_scale: one scale per modality after the PCA (components average unit variance,
geometry kept), against scikit-learn's PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA as SkPCA
from test_embed_stage import sign_aligned

import embed
from embed.reduce import PCA, load_state
from mixbench.errors import ConfigError
from mixbench.store.shards import Store


def test_pca_unit_scale_is_sklearn_divided_by_one_number() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6)) + 3.0
    sk = SkPCA(4, svd_solver="full").fit(x)
    ref = sk.transform(x) / np.sqrt(sk.explained_variance_.mean())
    ours = PCA(4, unit_scale=True, device="cpu").fit(x)
    got = ours.transform(x)
    np.testing.assert_allclose(sign_aligned(got, ref), ref, atol=1e-9)
    np.testing.assert_allclose(got.var(axis=0, ddof=1).mean(), 1.0, rtol=1e-9)
    # the variance ratios between components (the geometry) are those of the plain PCA
    np.testing.assert_allclose(got.var(axis=0, ddof=1) / got.var(axis=0, ddof=1)[0],
                               sk.explained_variance_ / sk.explained_variance_[0], rtol=1e-9)
    back = PCA.from_state(ours.to_state(), device="cpu")
    np.testing.assert_array_equal(back.transform(x), got)
    with pytest.raises(ConfigError, match="exclusive"):
        PCA(4, whiten=True, unit_scale=True)


def test_stage_unit_scale_records_the_scale_and_refuses_whiten(wiki_paired: Path, tmp_path: Path) -> None:
    manifest = embed.embed(wiki_paired, tmp_path / "u", {"dim": 10, "unit_scale": True})
    res = Store(tmp_path / "u")
    for m in ("image", "text"):
        feat = res.load("train", m)["feat"].astype(np.float64)
        assert feat.var(axis=0, ddof=1).mean() == pytest.approx(1.0, rel=1e-5)
        rms = manifest["info"]["reduce"][m]["unit_scale"]
        state = load_state(res.file(f"pca-{m}.npz"))
        assert bool(state["unit_scale"]) and rms == pytest.approx(np.sqrt(state["explained_variance"].mean()))
    with pytest.raises(ConfigError, match="whiten and unit_scale are exclusive"):
        embed.embed(wiki_paired, tmp_path / "x", {"dim": 10, "unit_scale": True, "whiten": True})
