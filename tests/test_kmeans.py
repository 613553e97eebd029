"""train.kmeans: scikit-learn's results and semantics on real data (Wikipedia features), determinism,
predict, tol/max_iter, input kinds, bad input, empty clusters. All on CPU, a few seconds."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SKKMeans
from threadpoolctl import threadpool_limits

import train.kmeans as km_mod
from mixbench.errors import ConfigError, DataError
from train.kmeans import KMeans, kmeans


def _inertia64(x: np.ndarray, centres: np.ndarray) -> float:
    d = ((x.astype(np.float64)[:, None, :] - np.asarray(centres, np.float64)[None]) ** 2).sum(2)
    return float(d.min(1).sum())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wiki8(wikipedia_dir: Path) -> np.ndarray:
    """The 2,173 Wikipedia training pairs as an embedding-like 2173 × 8 matrix: image ⊕ text
    z-scored, PCA to 8, z-scored (the size of DM2C's evaluation k-means)."""
    from prep.adapters.wikipedia import WikipediaConfig, read

    data = read(WikipediaConfig(root=str(wikipedia_dir)), wikipedia_dir)
    tables = data.splits["train"].tables
    parts = []
    for m in sorted(tables):
        f = np.asarray(tables[m]["feat"], dtype=np.float64)
        parts.append((f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), 1.0))
    x = np.hstack(parts)
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:8].T
    return ((z - z.mean(0)) / z.std(0)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(wiki8: np.ndarray) -> KMeans:
    return KMeans(10, n_init=20, max_iter=1000, tol=5e-5, seed=0, device="cpu").fit(wiki8)


def test_inertia_matches_sklearn_best_of_20(wiki8: np.ndarray, fitted: KMeans) -> None:
    with threadpool_limits(1):  # small data: threads only add barrier stalls on a shared 2-core machine
        sk = SKKMeans(10, n_init=20, max_iter=1000, tol=5e-5, random_state=0).fit(wiki8)
    ref = _inertia64(wiki8, sk.cluster_centers_)
    ours = _inertia64(wiki8, fitted.cluster_centers_)
    assert ours <= ref * 1.001, (ours, ref)
    assert fitted.inertia_ == pytest.approx(ours, rel=1e-9)  # inertia_ is float64, at the final centres
    assert len(fitted.inertias_) == 20 and fitted.inertia_ == pytest.approx(fitted.inertias_.min(), rel=1e-5)
    assert fitted.cluster_centers_.shape == (10, 8) and fitted.cluster_centers_.dtype == np.float32
    assert fitted.labels_.dtype == np.int64 and len(np.unique(fitted.labels_)) == 10


def test_same_semantics_as_sklearn_from_the_same_start(wiki8: np.ndarray) -> None:
    """Given the same initial centres, Lloyd stops at the same iteration (tol relative to the
    mean variance; tol = 0 means until labels stop changing) with the same labels."""
    rng = np.random.default_rng(0)
    for k, tol in ((10, 5e-5), (10, 0.0), (10, 1e-2), (30, 5e-5)):  # k = 30: the index_add M-step on CPU
        c0 = wiki8[rng.choice(len(wiki8), k, replace=False)]
        with threadpool_limits(1):
            sk = SKKMeans(k, init=c0, n_init=1, max_iter=1000, tol=tol).fit(wiki8)
        ours = KMeans(k, init=c0, n_init=1, tol=tol, device="cpu").fit(wiki8)
        assert ours.n_iter_ == sk.n_iter_, (k, tol)
        np.testing.assert_array_equal(ours.labels_, sk.labels_)
        np.testing.assert_allclose(ours.cluster_centers_, sk.cluster_centers_, atol=1e-5)


def test_deterministic_under_seed_and_chunking(wiki8: np.ndarray, fitted: KMeans) -> None:
    again = KMeans(10, seed=0, device="cpu").fit(wiki8)
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    np.testing.assert_array_equal(again.cluster_centers_, fitted.cluster_centers_)
    assert again.n_iter_ == fitted.n_iter_
    # the sync-free loop (accelerators' default): same clustering, same iterations per restart
    free = KMeans(10, seed=0, device="cpu", check_every=8).fit(wiki8)
    np.testing.assert_array_equal(free.labels_, fitted.labels_)
    np.testing.assert_array_equal(free.n_iters_, fitted.n_iters_)
    # many row chunks (k-means++ two-pass path, chunked Lloyd): the same clustering up to rounding
    chunked = KMeans(10, seed=0, device="cpu", chunk_rows=300).fit(wiki8)
    assert chunked.inertia_ == pytest.approx(fitted.inertia_, rel=1e-5)
    assert (chunked.labels_ == fitted.labels_).mean() > 0.99


def test_predict_is_the_nearest_centre(wiki8: np.ndarray, fitted: KMeans) -> None:
    np.testing.assert_array_equal(fitted.predict(wiki8), fitted.labels_)
    new = wiki8[:500] * 1.3 + 0.2
    pred = fitted.predict(new)
    d = ((new.astype(np.float64)[:, None, :] - fitted.cluster_centers_.astype(np.float64)[None]) ** 2).sum(2)
    chosen = d[np.arange(len(new)), pred]
    assert np.all(chosen <= d.min(1) + 1e-4 * (1 + d.min(1)))  # nearest, up to float32 near-ties
    assert (pred == d.argmin(1)).mean() > 0.99


def test_torch_and_numpy_inputs(wiki8: np.ndarray, fitted: KMeans) -> None:
    xt = torch.from_numpy(wiki8)
    km = KMeans(10, seed=0).fit(xt)  # device "auto": the tensor's device
    assert isinstance(km.labels_, torch.Tensor) and km.labels_.dtype == torch.int64
    assert isinstance(km.cluster_centers_, torch.Tensor) and km.cluster_centers_.device == xt.device
    np.testing.assert_array_equal(km.labels_.numpy(), fitted.labels_)
    pred = km.predict(xt[:100])
    assert isinstance(pred, torch.Tensor) and torch.equal(pred, km.labels_[:100])
    assert isinstance(km.predict(wiki8[:5]), np.ndarray)
    # float64 in, float64 centres out; same clustering
    k64 = KMeans(10, seed=0, device="cpu").fit(wiki8.astype(np.float64))
    assert k64.cluster_centers_.dtype == np.float64
    assert k64.inertia_ == pytest.approx(fitted.inertia_, rel=1e-5)
    centres, labels, inertia = kmeans(wiki8, 10, seed=0, device="cpu")
    np.testing.assert_array_equal(labels, fitted.labels_)
    assert inertia == fitted.inertia_ and centres.shape == (10, 8)
    assert KMeans(10, seed=0, device="cpu").fit_predict(wiki8).tolist() == fitted.labels_.tolist()


def test_max_iter_and_tol_are_respected(wiki8: np.ndarray) -> None:
    one = KMeans(10, n_init=5, max_iter=1, device="cpu").fit(wiki8)
    assert one.n_iter_ == 1 and (one.n_iters_ == 1).all() and not one.converged_
    loose = KMeans(10, n_init=5, tol=1e6, device="cpu").fit(wiki8)
    assert (loose.n_iters_ == 1).all() and loose.converged_
    exact = KMeans(10, n_init=3, tol=0.0, device="cpu").fit(wiki8)
    assert exact.converged_ and exact.n_iter_ > 1
    # tol = 0 stops only at a fixed point: the centres are the means of their clusters
    x = wiki8.astype(np.float64)
    means = np.stack([x[exact.labels_ == j].mean(0) for j in range(10)])
    np.testing.assert_allclose(exact.cluster_centers_, means, atol=1e-5)


def test_m_step_variants_agree(wiki8: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-hot matmul and the index_add M-steps give the same clustering, each against the other:
    at k = 30 (index_add by default on CPU, matmul forced) and k = 10 (matmul by default, index_add forced)."""
    assert km_mod._m_step_by_index(torch.device("cpu"), 30) and not km_mod._m_step_by_index(torch.device("cpu"), 10)
    default = {k: KMeans(k, n_init=3, seed=1, device="cpu").fit(wiki8) for k in (30, 10)}
    calls: list[int] = []

    def forced(use_index: bool) -> object:
        return lambda device, k: calls.append(k) or use_index

    for k, use_index in ((30, False), (10, True)):
        monkeypatch.setattr(km_mod, "_m_step_by_index", forced(use_index))
        other = KMeans(k, n_init=3, seed=1, device="cpu").fit(wiki8)
        assert calls and calls[-1] == k  # the patched choice was the one used
        assert other.inertia_ == pytest.approx(default[k].inertia_, rel=1e-6)
        assert (other.labels_ == default[k].labels_).mean() > 0.99


def test_empty_cluster_is_relocated_in_both_code_paths() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(10, 1, (60, 2))].astype(np.float32)
    init = np.array([[0, 0], [10, 10], [1e4, 1e4]], dtype=np.float32)  # the third centre gets no point
    ref = KMeans(3, init=init, n_init=1, device="cpu").fit(x)
    assert sorted(np.bincount(ref.labels_, minlength=3).tolist())[0] > 0  # every cluster used
    assert np.abs(ref.cluster_centers_).max() < 20
    # the sync-free path used on accelerators (branch-free relocation) gives the same result
    free = KMeans(3, init=init, n_init=1, device="cpu", check_every=8).fit(x)
    np.testing.assert_array_equal(free.labels_, ref.labels_)
    np.testing.assert_allclose(free.cluster_centers_, ref.cluster_centers_, atol=1e-5)
    assert free.n_iter_ == ref.n_iter_


def test_fewer_distinct_rows_than_clusters(caplog: pytest.LogCaptureFixture) -> None:
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 12 rows, 3 distinct
    with caplog.at_level(logging.WARNING, logger="train.kmeans"):
        km = KMeans(5, n_init=4, device="cpu").fit(x)
    assert "3 distinct clusters" in caplog.text
    assert np.isfinite(km.cluster_centers_).all() and km.inertia_ == pytest.approx(0.0, abs=1e-9)
    # exact ties (integer data) are broken consistently
    ties = np.array([[0, 0], [2, 0], [1, 0], [1, 0]], dtype=np.float32)
    km = KMeans(2, init=np.array([[0, 0], [2, 0]], np.float32), n_init=1, device="cpu").fit(ties)
    assert np.isfinite(km.cluster_centers_).all() and km.labels_.shape == (4,)


def test_bad_input_and_settings_give_clear_errors(wiki8: np.ndarray) -> None:
    with pytest.raises(DataError, match="has 5 rows but n_clusters = 10"):
        KMeans(10, device="cpu").fit(wiki8[:5])
    with pytest.raises(DataError, match=r"expected a 2-D array.*reshape"):
        KMeans(2, device="cpu").fit(wiki8[:, 0])
    bad = wiki8[:50].copy()
    bad[17, 3] = np.nan
    with pytest.raises(DataError, match="row 17, feature 3 is nan"):
        KMeans(2, device="cpu").fit(bad)
    for kwargs, match in [
        ({"n_clusters": 0}, "'n_clusters' parameter of KMeans must be an int in the range"),
        ({"n_clusters": 2, "n_init": 0}, "'n_init'"),
        ({"n_clusters": 2, "tol": -1.0}, "'tol'"),
        ({"n_clusters": 2, "init": "kmeans"}, "'init'"),
        ({"n_clusters": 2, "backend": "cuml"}, "'backend'"),
    ]:
        with pytest.raises(ConfigError, match=match):
            KMeans(**kwargs).fit(wiki8)
    with pytest.raises(ConfigError, match="not fitted yet"):
        KMeans(2).predict(wiki8)
    km = KMeans(2, n_init=1, device="cpu").fit(wiki8)
    with pytest.raises(DataError, match="X has 3 features, but KMeans was fitted on 8"):
        km.predict(wiki8[:, :3])
    with pytest.raises(ConfigError, match="explicit centres must have shape"):
        KMeans(2, init=np.zeros((3, 8), np.float32), device="cpu").fit(wiki8)


def test_params_are_stored_as_given() -> None:
    km = KMeans(7, n_init=3, seed=5)
    params = km.get_params()
    assert params["n_clusters"] == 7 and params["n_init"] == 3 and params["seed"] == 5 and params["backend"] == "auto"
    assert KMeans(**params).get_params() == params
    km.set_params(n_init=4)
    assert km.n_init == 4
    with pytest.raises(ConfigError, match="unknown parameter 'ninit'"):
        km.set_params(ninit=2)


def test_random_state_is_sklearns_name_for_seed(wiki8: np.ndarray, fitted: KMeans) -> None:
    by_name = KMeans(10, n_init=20, max_iter=1000, tol=5e-5, random_state=0, device="cpu").fit(wiki8)
    np.testing.assert_array_equal(by_name.labels_, fitted.labels_)
    seven = KMeans(10, n_init=2, random_state=7, device="cpu").fit(wiki8)
    np.testing.assert_array_equal(seven.cluster_centers_, KMeans(10, n_init=2, seed=7, device="cpu").fit(wiki8).cluster_centers_)
    assert KMeans(3, random_state=4).get_params()["random_state"] == 4
    with pytest.raises(ConfigError, match="seed = 1 and random_state = 2 disagree"):
        KMeans(3, seed=1, random_state=2).fit(wiki8)
    with pytest.raises(ConfigError, match="'random_state' parameter of KMeans must be an int or None"):
        KMeans(3, random_state=np.random.RandomState(0)).fit(wiki8)


def test_sklearn_backend_and_the_auto_rule(wiki8: np.ndarray, fitted: KMeans) -> None:
    with threadpool_limits(1):
        km = KMeans(10, n_init=20, max_iter=1000, tol=5e-5, seed=0, backend="sklearn").fit(wiki8)
        sk = SKKMeans(10, n_init=20, max_iter=1000, tol=5e-5, random_state=0).fit(wiki8)
        xt = torch.from_numpy(wiki8)
        kt = KMeans(10, n_init=2, seed=3, backend="sklearn").fit(xt)
    # scikit-learn's own result, in this class's attributes
    np.testing.assert_array_equal(km.cluster_centers_, sk.cluster_centers_)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    assert km.backend_ == "sklearn" and km.n_iter_ == sk.n_iter_ and km.converged_
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=1e-5)
    assert km.inertia_ <= fitted.inertia_ * 1.001 and fitted.inertia_ <= km.inertia_ * 1.001
    np.testing.assert_array_equal(km.predict(wiki8), km.labels_)
    assert isinstance(kt.labels_, torch.Tensor) and torch.equal(kt.predict(xt), kt.labels_)
    # auto: torch for DM2C's evaluation size and for deep rows; scikit-learn for many restarts of shallow rows
    assert not km_mod.sklearn_is_faster(2173, 8, 10, 20)
    assert not km_mod.sklearn_is_faster(200_000, 128, 100, 3)
    assert km_mod.sklearn_is_faster(20_000, 16, 50, 150)
    assert fitted.backend_ == "torch"
    small = np.ascontiguousarray(wiki8[:1200])
    with threadpool_limits(1):
        auto = KMeans(50, n_init=150, max_iter=50, seed=0, device="cpu").fit(small)  # 1200·50·150 ≥ 2²³
    assert auto.backend_ == "sklearn"


def test_faiss_backend(wiki8: np.ndarray, fitted: KMeans) -> None:
    pytest.importorskip("faiss")
    km = KMeans(10, n_init=3, max_iter=300, seed=0, backend="faiss").fit(wiki8)
    assert km.backend_ == "faiss" and km.labels_.shape == (len(wiki8),)
    assert km.inertia_ == pytest.approx(_inertia64(wiki8, km.cluster_centers_), rel=1e-6)
    assert km.inertia_ < fitted.inertia_ * 1.02
    np.testing.assert_array_equal(km.predict(wiki8), km.labels_)


def test_faiss_missing_is_a_clear_error(wiki8: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match="pip install faiss-cpu"):
        KMeans(2, backend="faiss").fit(wiki8)
    assert KMeans(2, n_init=1, device="cpu").fit(wiki8).backend_ == "torch"  # auto never needs faiss


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(wiki8: np.ndarray, fitted: KMeans) -> None:
    xc = torch.from_numpy(wiki8).cuda()
    km = KMeans(10, seed=0).fit(xc)  # the tensor's device, sync-free loop (check_every 8)
    assert km.labels_.is_cuda and km.cluster_centers_.is_cuda
    assert km.inertia_ == pytest.approx(fitted.inertia_, rel=1e-4)
    synced = KMeans(10, seed=0, check_every=1).fit(xc)
    assert synced.inertia_ == pytest.approx(km.inertia_, rel=1e-6)
    assert torch.equal(km.predict(xc), km.labels_)
    from_numpy = KMeans(10, seed=0, device="cuda").fit(wiki8)
    assert isinstance(from_numpy.labels_, np.ndarray) and from_numpy.device_.type == "cuda"
