"""embed.reduce: exact streaming PCA against scikit-learn (the reference), on CPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA
from sklearn.preprocessing import StandardScaler

from embed.reduce import (
    PCA,
    NotFittedError,
    Standardizer,
    load_state,
    mean_from_sums,
    npz_bytes,
    save_state,
    shard_scatter,
    shard_sums,
)
from mixbench.errors import ConfigError, DataError


def low_rank(n: int = 2000, d: int = 32, rank: int = 10, seed: int = 0) -> np.ndarray:
    """Low-rank signal with a decaying spectrum + isotropic noise + offsets and mixed scales
    (so centring and standardisation both matter), float32 like stored features."""
    g = np.random.default_rng(seed)
    rank = min(rank, d)
    basis = np.linalg.qr(g.standard_normal((d, rank)))[0]
    signal = (g.standard_normal((n, rank)) * np.geomspace(8.0, 0.8, rank)) @ basis.T
    x = signal + 0.05 * g.standard_normal((n, d))
    x = x * g.uniform(0.2, 5.0, d) + g.uniform(-3, 3, d)
    return x.astype(np.float32)


def aligned(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a``'s rows with signs flipped to match ``b``'s (for 'equal up to sign' checks)."""
    signs = np.sign(np.sum(a * b, axis=1))
    signs[signs == 0] = 1
    return a * signs[:, None]


def sk_reference(x: np.ndarray, k: int, standardize: bool, whiten: bool) -> tuple[SkPCA, np.ndarray]:
    x64 = x.astype(np.float64)
    z = StandardScaler().fit_transform(x64) if standardize else x64
    return SkPCA(k, whiten=whiten, svd_solver="full").fit(z), z


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("whiten", [False, True])
def test_equals_sklearn(standardize: bool, whiten: bool) -> None:
    x = low_rank()
    k = 8
    ours = PCA(k, standardize=standardize, whiten=whiten, device="cpu").fit(x)
    sk, z = sk_reference(x, k, standardize, whiten)
    comps = aligned(ours.components_, sk.components_)
    np.testing.assert_allclose(comps, sk.components_, atol=1e-10)
    # same sign convention as scikit-learn (largest |entry| positive), not just up to sign
    np.testing.assert_array_equal(np.sign(ours.components_), np.sign(sk.components_))
    np.testing.assert_allclose(ours.explained_variance_, sk.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_ratio_, sk.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(ours.singular_values_, sk.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(ours.noise_variance_, sk.noise_variance_, rtol=1e-8)
    np.testing.assert_allclose(ours.mean_, x.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    assert ours.n_samples_ == len(x) and ours.n_features_in_ == x.shape[1]
    y = ours.transform(x.astype(np.float64))
    np.testing.assert_allclose(y, sk.transform(z), atol=1e-9)
    if whiten:
        np.testing.assert_allclose(y.std(0, ddof=1), 1.0, rtol=1e-9)
    if standardize:
        np.testing.assert_allclose(ours.scale_, x.astype(np.float64).std(0), rtol=1e-10)
    else:
        assert ours.scale_ is None


def test_transform_keeps_dtype_and_container() -> None:
    x = low_rank(n=500, d=16)
    pca = PCA(4, device="cpu").fit(x)
    y32 = pca.transform(x)
    assert isinstance(y32, np.ndarray) and y32.dtype == np.float32 and y32.shape == (500, 4)
    np.testing.assert_allclose(y32, pca.transform(x.astype(np.float64)), rtol=1e-6, atol=1e-5)
    t = pca.transform(torch.from_numpy(x))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), y32)
    np.testing.assert_array_equal(pca.transform(x[:0]), np.zeros((0, 4), np.float32))
    half = pca.transform(x.astype(np.float16))
    assert half.dtype == np.float16


def test_streaming_over_shards_equals_in_memory() -> None:
    x = low_rank(n=2500, d=40)
    cuts = [0, 700, 701, 1500, 2500]  # uneven shards, one of a single row
    shards = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    for standardize in (False, True):
        est = PCA(6, standardize=standardize, device="cpu")
        n, total = 0, np.zeros(x.shape[1])
        for s in shards:
            k, part = est.shard_sums(s)
            n, total = n + k, total + part
        mean = mean_from_sums(n, total)
        scatter = sum(est.shard_scatter(s, mean) for s in shards)
        stream = est.fit_from_stats(n, total, scatter)
        mem = PCA(6, standardize=standardize, device="cpu").fit(x)
        np.testing.assert_allclose(stream.mean_, mem.mean_, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(aligned(stream.components_, mem.components_), mem.components_, atol=1e-11)
        np.testing.assert_array_equal(np.sign(stream.components_), np.sign(mem.components_))
        np.testing.assert_allclose(stream.explained_variance_, mem.explained_variance_, rtol=1e-11)
        np.testing.assert_allclose(stream.transform(x), mem.transform(x), atol=1e-4)


def test_statistics_are_exact_float64() -> None:
    g = np.random.default_rng(3)
    x = (g.standard_normal((300, 5)) + 1e3).astype(np.float32)  # large offset: centring matters
    n, s = shard_sums(x)
    assert n == 300
    np.testing.assert_allclose(s, x.astype(np.float64).sum(0), rtol=1e-15)
    mean = mean_from_sums(n, s)
    xc = x.astype(np.float64) - mean
    np.testing.assert_allclose(shard_scatter(x, mean), xc.T @ xc, rtol=1e-12)
    np.testing.assert_allclose(shard_scatter(x, mean, diagonal=True), (xc * xc).sum(0), rtol=1e-12)
    zero_n, zero_s = shard_sums(x[:0])
    assert zero_n == 0 and zero_s.shape == (5,) and not zero_s.any()


def test_too_many_components_is_a_config_error() -> None:
    x = low_rank(n=50, d=12)
    with pytest.raises(ConfigError, match=r"n_components = 13.*\[1, 12\].*n_features = 12"):
        PCA(13, device="cpu").fit(x)
    with pytest.raises(ConfigError, match=r"n_components = 11.*\[1, 10\].*n_samples = 10"):
        PCA(11, device="cpu").fit(x[:10])
    with pytest.raises(ConfigError, match="n_components = 0"):
        PCA(0, device="cpu").fit(x)


def test_bad_input_errors() -> None:
    x = low_rank(n=100, d=8)
    pca = PCA(3, device="cpu")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        pca.transform(x)
    pca.fit(x)
    with pytest.raises(DataError, match="X has 7 features, but PCA was fitted on 8 features"):
        pca.transform(x[:, :7])
    with pytest.raises(DataError, match="2-D"):
        pca.transform(x[0])
    bad = x.copy()
    bad[42, 3] = np.nan
    with pytest.raises(DataError, match="row 42 holds NaN"):
        PCA(3, device="cpu").fit(bad)


def test_constant_features_with_standardize() -> None:
    x = low_rank(n=800, d=20).astype(np.float64)
    x[:, 5] = 7.25  # constant
    x[:, 11] = 0.0
    ours = PCA(5, standardize=True, device="cpu").fit(x)
    assert ours.n_constant_features_ == 2
    assert ours.scale_[5] == 1.0 and ours.scale_[11] == 1.0
    sk, z = sk_reference(x, 5, True, False)
    np.testing.assert_allclose(aligned(ours.components_, sk.components_), sk.components_, atol=1e-10)
    np.testing.assert_allclose(ours.transform(x), sk.transform(z), atol=1e-9)


def test_standardizer_equals_standard_scaler() -> None:
    x = low_rank(n=600, d=10)
    x[:, 2] = 3.0
    est = Standardizer(device="cpu").fit(x)
    ref = StandardScaler().fit(x.astype(np.float64))
    np.testing.assert_allclose(est.scale_, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(est.transform(x.astype(np.float64)), ref.transform(x.astype(np.float64)), atol=1e-12)
    assert est.n_constant_features_ == 1
    again = Standardizer.from_state(est.to_state(), device="cpu")
    np.testing.assert_array_equal(again.transform(x), est.transform(x))


def test_state_round_trip_and_deterministic_npz(tmp_path) -> None:
    x = low_rank(n=400, d=12)
    pca = PCA(4, standardize=True, whiten=True, device="cpu").fit(x)
    path = tmp_path / "pca.npz"
    pca.save(path)
    back = PCA.load(path, device="cpu")
    for attr in ("components_", "mean_", "scale_", "explained_variance_", "explained_variance_ratio_"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(pca, attr))
    assert (back.n_components, back.standardize, back.whiten, back.n_samples_) == (4, True, True, 400)
    np.testing.assert_array_equal(back.transform(x), pca.transform(x))
    # the same state gives the same bytes (no zip timestamps), and numpy reads it
    assert npz_bytes(pca.to_state()) == npz_bytes(PCA(4, standardize=True, whiten=True, device="cpu").fit(x).to_state())
    with np.load(io.BytesIO(npz_bytes(pca.to_state()))) as z:
        assert z["components"].shape == (4, 12)
    save_state(tmp_path / "s.npz", {"a": np.arange(3)})
    np.testing.assert_array_equal(load_state(tmp_path / "s.npz")["a"], np.arange(3))
    bad = dict(pca.to_state(), format=np.array("something-else"))
    with pytest.raises(DataError, match="format"):
        PCA.from_state(bad)


def test_fit_is_bit_reproducible_across_thread_counts() -> None:
    """The eigendecomposition runs single-threaded on CPU, so the fit does not depend on
    torch's thread count (what makes torchrun output byte-identical to one process)."""
    x = low_rank(n=2000, d=64)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = PCA(16, standardize=True, device="cpu").fit(x)
        torch.set_num_threads(max(2, saved))
        b = PCA(16, standardize=True, device="cpu").fit(x)
    finally:
        torch.set_num_threads(saved)
    assert a.components_.tobytes() == b.components_.tobytes()
    assert a.transform(x).tobytes() == b.transform(x).tobytes()


def test_whiten_leaves_null_directions_at_zero(wikipedia_dir) -> None:
    """Wikipedia's text features are topic proportions summing to 1: 10 columns spanning 9
    directions. Whitening the 10th (zero-variance) direction would turn rounding noise into a
    unit-variance column with no signal; it is output as 0, the other 9 match scikit-learn."""
    import scipy.io
    from sklearn.decomposition import PCA as SkPCA

    from embed.reduce import PCA

    text = scipy.io.loadmat(wikipedia_dir / "raw_features.mat")["T_tr"]
    ours = PCA(10, whiten=True, device="cpu").fit(text)
    out = ours.transform(text)
    assert np.all(out[:, 9] == 0.0)
    ref = SkPCA(9, whiten=True, svd_solver="full").fit(text).transform(text)
    np.testing.assert_allclose(np.abs(out[:, :9]), np.abs(ref), atol=1e-6)
    np.testing.assert_allclose(out[:, :9].std(axis=0, ddof=1), 1.0, atol=1e-9)
