"""Exact PCA from summed per-shard statistics.

The fit is two streaming passes over the shards of the fit split, each shard reduced to
float64 statistics whose size does not depend on its row count:

1. ``shard_sums(X)`` → ``(n, Σx)``; summed over shards → the mean ``μ = Σx / n``;
2. ``shard_scatter(X, μ)`` → the centred scatter ``(X-μ)ᵀ(X-μ)`` (D×D); summed over shards.

``fit_from_stats(n, Σx, scatter)`` then standardises (optional: ``Z = (X-μ)/σ`` with the
population std, as scikit-learn's ``StandardScaler``; the scaled scatter is ``S / σσᵀ``, so no
third pass is needed), divides by ``n - 1`` and eigendecomposes in float64 on the device
(``torch.linalg.eigh``). Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``: the
largest-magnitude entry of every component is positive.

Callers that sum the statistics of many shards do so **in shard order** (the embed stage does
it round by round under torchrun), so the result never depends on how shards were split
across processes. Everything here is deterministic; on CPU the eigendecomposition runs on
one thread because MKL's ``syevd`` gives thread-count dependent bits.

Accuracy: statistics, eigendecomposition and ``transform`` all run in float64 (inputs are
float32/float16 features), so components match an SVD of the centred data to ~1e-12 for
well-separated eigenvalues; outputs are cast to the caller's dtype at the end.

>>> import numpy as np
>>> X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
>>> pca = PCA(3, device="cpu").fit(X)
>>> pca.transform(X).shape, pca.components_.shape
((500, 3), (3, 8))
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from mixbench import __version__
from mixbench.device import resolve_device
from mixbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Rows per block when a statistic or a transform runs over a large array: bounds the float64
#: temporaries. Part of the numerics (block sums are added in order), so it is a constant.
CHUNK_ROWS = 65536

STATE_FORMAT = "mixbench-pca-1"

ArrayLike = np.ndarray | torch.Tensor


class NotFittedError(ValueError, AttributeError):
    """``transform``/``to_state`` called before ``fit``."""


# -- statistics -------------------------------------------------------------------------------
def _rows(X: ArrayLike, device: torch.device, what: str = "X") -> torch.Tensor:
    """``X`` as a 2-D float tensor on ``device`` (float32/float16 kept; cast per block later)."""
    if isinstance(X, np.ndarray):
        if X.dtype.kind not in "fiu":
            raise DataError(f"{what}: expected a numeric array, got dtype {X.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(X))
    elif isinstance(X, torch.Tensor):
        t = X
    else:
        raise DataError(f"{what}: expected a numpy array or a torch tensor, got {type(X).__name__}.")
    if t.ndim != 2:
        raise DataError(f"{what}: expected a 2-D array (rows × features), got shape {tuple(t.shape)}; "
                        "reshape a single row with X.reshape(1, -1).")
    return t.to(device)


def _blocks(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """Row blocks of ``t`` in float64 (finite values checked)."""
    for a in range(0, t.shape[0], CHUNK_ROWS):
        block = t[a : a + CHUNK_ROWS].to(torch.float64)
        # column sums are non-finite whenever a column holds NaN/inf: a cheap screen (elementwise
        # isfinite over the block costs ~10× more); the exact row is looked up only then
        if not bool(torch.isfinite(block.sum(dim=0)).all()):
            rows = torch.nonzero(~torch.isfinite(block).all(dim=1))
            if len(rows):
                bad = a + int(rows[0, 0])
                raise DataError(f"row {bad} holds NaN or inf; clean the features (or drop that row) and rerun.")
        yield block


def shard_sums(X: ArrayLike, device: str | torch.device = "cpu") -> tuple[int, np.ndarray]:
    """Pass 1 of one shard: ``(n_rows, float64 column sums)``."""
    dev = resolve_device(device)
    t = _rows(X, dev)
    total = torch.zeros(t.shape[1], dtype=torch.float64, device=dev)
    for block in _blocks(t):
        total += block.sum(dim=0)
    return int(t.shape[0]), total.cpu().numpy()


def shard_scatter(
    X: ArrayLike, mean: np.ndarray, device: str | torch.device = "cpu", *, diagonal: bool = False
) -> np.ndarray:
    """Pass 2 of one shard: the centred scatter ``(X-μ)ᵀ(X-μ)`` in float64 (D×D), or only its
    diagonal (the centred sums of squares, D) with ``diagonal=True``."""
    dev = resolve_device(device)
    t = _rows(X, dev)
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64), device=dev)
    if mu.shape != (t.shape[1],):
        raise DataError(f"mean has shape {tuple(mu.shape)}, X has {t.shape[1]} features.")
    d = t.shape[1]
    total = torch.zeros(d if diagonal else (d, d), dtype=torch.float64, device=dev)
    for block in _blocks(t):
        centred = block - mu
        if diagonal:
            total += (centred * centred).sum(dim=0)
        elif dev.type == "cpu":
            # numpy turns ``A.T @ A`` of one buffer into BLAS syrk (half the flops of a general
            # product; measured 2.2× faster than torch's mm at 25k × 1024, bits stable across thread counts)
            c = np.ascontiguousarray(centred.numpy())
            total += torch.from_numpy(c.T @ c)
        else:
            total += centred.T @ centred
    return total.cpu().numpy()


def mean_from_sums(n_samples: int, sum_: np.ndarray) -> np.ndarray:
    """The mean from pass-1 totals (the one formula every caller uses, so pass 2 is centred on
    exactly the mean that ``fit_from_stats`` records)."""
    if n_samples < 1:
        raise DataError("no rows to fit on (n_samples = 0).")
    return np.asarray(sum_, dtype=np.float64) / float(n_samples)


def standard_scale(n_samples: int, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature scale (population std) and the mask of constant features, whose scale is 1.

    A feature counts as constant when its variance is within float64 rounding of zero, the rule
    scikit-learn's ``StandardScaler`` uses (``n·eps·var + (n·mean·eps)²``)."""
    eps = np.finfo(np.float64).eps
    var = np.maximum(np.asarray(var, dtype=np.float64), 0.0)
    bound = n_samples * eps * var + (n_samples * np.asarray(mean, dtype=np.float64) * eps) ** 2
    constant = (var <= bound) | (np.sqrt(var) < 10 * eps)
    scale = np.where(constant, 1.0, np.sqrt(var))
    return scale, constant


def svd_flip_rows(components: np.ndarray) -> np.ndarray:
    """Make the largest-|.| entry of every row positive (scikit-learn's ``svd_flip`` with
    ``u_based_decision=False``; ties: the first such entry)."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


@contextlib.contextmanager
def _deterministic_threads(device: torch.device) -> Iterator[None]:
    """On CPU, run the enclosed LAPACK call on one thread (MKL's eigh bits depend on the
    thread count; one D×D eigh is cheap next to the scatter pass)."""
    if device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _check_fitted(est: Any, attr: str) -> None:
    if getattr(est, attr, None) is None:
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet; call fit (or fit_from_stats) first.")


def _check_features(X: torch.Tensor, expected: int, name: str) -> None:
    if X.shape[1] != expected:
        raise DataError(f"X has {X.shape[1]} features, but {name} was fitted on {expected} features.")


def _transform_blocks(X: ArrayLike, device: torch.device, n_features: int, name: str,
                      fn: Any) -> ArrayLike:
    """Apply ``fn`` (float64 block → float64 block) over row blocks; numpy in → numpy out (input
    float dtype, float64 for integers), tensor in → tensor on ``device``."""
    t = _rows(X, device)
    _check_features(t, n_features, name)
    out = [fn(block) for block in _blocks(t)]
    if not out:
        probe = fn(torch.zeros((0, n_features), dtype=torch.float64, device=device))
        out = [probe]
    y = torch.cat(out)
    in_dtype = X.dtype if isinstance(X, torch.Tensor) else torch.from_numpy(np.zeros(0, X.dtype)).dtype
    if in_dtype.is_floating_point:
        y = y.to(in_dtype)
    return y if isinstance(X, torch.Tensor) else y.cpu().numpy()


# -- estimators -------------------------------------------------------------------------------
NULL_RTOL = 1e-10


def null_components(variance: np.ndarray) -> np.ndarray:
    """Components whose variance is ≤ ``NULL_RTOL`` × the largest: directions the data do not
    span (float64 eigenvalues are only accurate to ~1e-16 × the largest), e.g. the 10th PCA
    direction of 10-d topic proportions that sum to 1. Whitening leaves them at 0."""
    variance = np.asarray(variance, dtype=np.float64)
    top = float(variance.max()) if variance.size else 0.0
    return variance <= NULL_RTOL * top if top > 0 else np.ones_like(variance, dtype=bool)


class PCA:
    """Exact PCA (optionally on standardised features, optionally whitened) fitted from summed
    shard statistics; memory is D×D whatever the number of rows.

    Parameters
    ----------
    n_components: number of components kept (1 ≤ n_components ≤ min(n_samples, n_features)).
    standardize: z-score every feature with the fit data's mean and population std first
        (constant features get scale 1), as ``StandardScaler`` before ``PCA``.
    whiten: divide each component by its standard deviation (as ``PCA(whiten=True)``).
    unit_scale: divide every component by one number, the root of the mean variance of the kept
        components: the output's components average unit variance while the modality's geometry
        (the ratios between its components' variances) is kept. Exclusive with ``whiten``.
    device: where statistics, eigendecomposition and transforms run (``"auto"``: CUDA if present).

    Attributes (after fit)
    ----------------------
    components_ (k×D), mean_ (D), scale_ (D, only with ``standardize``), explained_variance_
    (k, ddof=1), explained_variance_ratio_ (k), singular_values_ (k), noise_variance_,
    n_components_, n_samples_, n_features_in_, n_constant_features_.
    """

    def __init__(
        self, n_components: int, *, standardize: bool = False, whiten: bool = False, unit_scale: bool = False,
        device: str | torch.device = "auto",
    ) -> None:
        if whiten and unit_scale:
            raise ConfigError("PCA: whiten and unit_scale are exclusive (whiten scales each component, unit_scale all "
                              "of them by one number); choose one.")
        self.n_components = n_components
        self.standardize = standardize
        self.whiten = whiten
        self.unit_scale = unit_scale
        self.device = device
        self.components_: np.ndarray | None = None

    def __repr__(self) -> str:
        return (f"PCA(n_components={self.n_components}, standardize={self.standardize}, "
                f"whiten={self.whiten}, unit_scale={self.unit_scale}, device={str(self.device)!r})")

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    # -- streaming statistics (the stage's API) ------------------------------------------
    def shard_sums(self, X: ArrayLike) -> tuple[int, np.ndarray]:
        """Pass 1 of one shard: ``(n_rows, float64 column sums)``."""
        return shard_sums(X, self._device)

    def shard_scatter(self, X: ArrayLike, mean: np.ndarray) -> np.ndarray:
        """Pass 2 of one shard: the centred scatter ``(X-μ)ᵀ(X-μ)`` (float64, D×D)."""
        return shard_scatter(X, mean, self._device)

    def fit_from_stats(self, n_samples: int, sum_: np.ndarray, scatter: np.ndarray) -> Self:
        """Fit from totals: ``n_samples``, the column sums and the scatter centred on
        ``mean_from_sums(n_samples, sum_)``."""
        k, n = self.n_components, int(n_samples)
        sum_ = np.asarray(sum_, dtype=np.float64)
        scatter = np.asarray(scatter, dtype=np.float64)
        d = sum_.shape[0]
        if scatter.shape != (d, d):
            raise DataError(f"scatter has shape {scatter.shape}, expected ({d}, {d}) for {d} features.")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= min(n, d):
            raise ConfigError(
                f"n_components = {k!r}: must be an integer in [1, min(n_samples, n_features)] = "
                f"[1, {min(n, d)}] (n_samples = {n}, n_features = {d})."
            )
        if n < 2:
            raise ConfigError(f"PCA needs at least 2 rows to estimate a variance, got {n}.")
        mean = mean_from_sums(n, sum_)
        cov = scatter
        self.n_constant_features_ = 0
        self.scale_: np.ndarray | None = None
        if self.standardize:
            scale, constant = standard_scale(n, mean, np.diag(scatter) / n)
            self.scale_ = scale
            self.n_constant_features_ = int(constant.sum())
            if constant.any():
                log.info("standardize: %d constant feature(s) keep scale 1 (e.g. feature %d)",
                         int(constant.sum()), int(np.flatnonzero(constant)[0]))
            cov = scatter / np.outer(scale, scale)
        cov = cov / (n - 1)
        cov = 0.5 * (cov + cov.T)
        dev = self._device
        with _deterministic_threads(dev):
            w, v = torch.linalg.eigh(torch.as_tensor(cov, device=dev))
        w = np.clip(w.cpu().numpy()[::-1], 0.0, None)
        vt = v.cpu().numpy()[:, ::-1].T
        components = svd_flip_rows(np.ascontiguousarray(vt[:k]))
        total_var = float(w.sum())
        self.mean_ = mean
        self.components_ = components
        self.explained_variance_ = w[:k].copy()
        self.explained_variance_ratio_ = w[:k] / total_var if total_var > 0 else np.zeros(k)
        self.singular_values_ = np.sqrt(w[:k] * (n - 1))
        rank = min(n, d)
        self.noise_variance_ = float(w[k:rank].mean()) if k < rank else 0.0
        self.n_components_ = k
        self.n_samples_ = n
        self.n_features_in_ = d
        if self.whiten and (null := int(null_components(self.explained_variance_).sum())):
            log.warning(
                "whiten: %d of %d component(s) have numerically zero variance (≤ %.0e × the largest; the data span "
                "fewer dimensions, e.g. proportions that sum to 1). Whitening them would blow rounding noise up to "
                "unit variance, so they are output as 0; a smaller dim avoids them.", null, k, NULL_RTOL)
        return self

    # -- in-memory API ---------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: Any = None) -> Self:
        """Fit on an in-memory array with the same two passes (blocks of ``CHUNK_ROWS``)."""
        n, sum_ = self.shard_sums(X)
        return self.fit_from_stats(n, sum_, self.shard_scatter(X, mean_from_sums(max(n, 1), sum_)))

    def transform(self, X: ArrayLike) -> ArrayLike:
        """Project ``X`` (numpy → numpy of X's float dtype; tensor → tensor on the device).

        Math in float64: ``((X - mean_) / scale_) @ components_.T`` (÷ √explained_variance_
        when whitening, the variance floored at float64 eps as scikit-learn does; a component
        with numerically zero variance (:func:`null_components`) is output as 0 instead of
        rounding noise blown up to unit variance)."""
        _check_fitted(self, "components_")
        assert self.components_ is not None
        return _transform_blocks(X, self._device, self.n_features_in_, "PCA", self._projector(self._device))

    def fit_transform(self, X: ArrayLike, y: Any = None) -> ArrayLike:
        return self.fit(X).transform(X)

    def transform_tensor(self, X: torch.Tensor) -> torch.Tensor:
        """The float64 projection of a tensor already on the device (no dtype cast back)."""
        _check_fitted(self, "components_")
        t = _rows(X, self._device)
        _check_features(t, self.n_features_in_, "PCA")
        fn = self._projector(self._device)
        blocks = [fn(b) for b in _blocks(t)]
        return torch.cat(blocks) if blocks else torch.zeros((0, self.n_components), dtype=torch.float64, device=self._device)

    def _projector(self, dev: torch.device) -> Any:
        assert self.components_ is not None
        mean = torch.as_tensor(self.mean_, device=dev)
        scale = torch.as_tensor(self.scale_, device=dev) if self.scale_ is not None else None
        proj = torch.as_tensor(self.components_, device=dev).T.contiguous()
        std = None
        if self.whiten:
            s = np.sqrt(self.explained_variance_)
            s = np.where(null_components(self.explained_variance_), np.inf, np.maximum(s, np.finfo(np.float64).eps))
            std = torch.as_tensor(s, device=dev)
        elif self.unit_scale:
            rms = float(np.sqrt(np.mean(self.explained_variance_)))
            std = torch.as_tensor(rms if rms > 0 else 1.0, dtype=torch.float64, device=dev)

        def fn(block: torch.Tensor) -> torch.Tensor:
            z = block - mean
            if scale is not None:
                z = z / scale
            y = z @ proj
            return y / std if std is not None else y

        return fn

    # -- state -----------------------------------------------------------------------------
    def to_state(self) -> dict[str, np.ndarray]:
        """Fitted state as arrays (what the feature store keeps in ``pca-<modality>.npz``)."""
        _check_fitted(self, "components_")
        assert self.components_ is not None
        d = self.n_features_in_
        return {
            "format": np.array(STATE_FORMAT),
            "mixbench_version": np.array(__version__),
            "n_components": np.array(self.n_components, dtype=np.int64),
            "standardize": np.array(self.standardize),
            "whiten": np.array(self.whiten),
            "unit_scale": np.array(self.unit_scale),
            "components": self.components_,
            "mean": self.mean_,
            "scale": self.scale_ if self.scale_ is not None else np.ones(d),
            "explained_variance": self.explained_variance_,
            "explained_variance_ratio": self.explained_variance_ratio_,
            "singular_values": self.singular_values_,
            "noise_variance": np.array(self.noise_variance_),
            "n_samples": np.array(self.n_samples_, dtype=np.int64),
            "n_constant_features": np.array(self.n_constant_features_, dtype=np.int64),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, device: str | torch.device = "auto") -> PCA:
        """Rebuild a fitted PCA from :meth:`to_state` arrays (e.g. ``np.load(path)``)."""
        fmt = str(np.asarray(state.get("format", "")))
        if fmt != STATE_FORMAT:
            raise DataError(f"PCA state format {fmt!r} is not {STATE_FORMAT!r}; refit the PCA (rerun embed).")
        pca = cls(int(state["n_components"]), standardize=bool(state["standardize"]),
                  whiten=bool(state["whiten"]), unit_scale=bool(state.get("unit_scale", False)), device=device)
        pca.components_ = np.asarray(state["components"], dtype=np.float64)
        pca.mean_ = np.asarray(state["mean"], dtype=np.float64)
        pca.scale_ = np.asarray(state["scale"], dtype=np.float64) if pca.standardize else None
        pca.explained_variance_ = np.asarray(state["explained_variance"], dtype=np.float64)
        pca.explained_variance_ratio_ = np.asarray(state["explained_variance_ratio"], dtype=np.float64)
        pca.singular_values_ = np.asarray(state["singular_values"], dtype=np.float64)
        pca.noise_variance_ = float(state["noise_variance"])
        pca.n_samples_ = int(state["n_samples"])
        pca.n_components_ = int(pca.components_.shape[0])
        pca.n_features_in_ = int(pca.components_.shape[1])
        pca.n_constant_features_ = int(state.get("n_constant_features", 0))
        return pca

    def save(self, path: str | os.PathLike[str]) -> None:
        save_state(path, self.to_state())

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device = "auto") -> PCA:
        return cls.from_state(load_state(path), device=device)


class Standardizer:
    """z-scores with the fit data's mean and population std (constant features: scale 1); the
    ``dim = 0, standardize = true`` path. Same streaming API as :class:`PCA`, except that
    ``shard_scatter`` returns only the diagonal (centred sums of squares)."""

    def __init__(self, *, device: str | torch.device = "auto") -> None:
        self.device = device
        self.scale_: np.ndarray | None = None

    @property
    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def shard_sums(self, X: ArrayLike) -> tuple[int, np.ndarray]:
        return shard_sums(X, self._device)

    def shard_scatter(self, X: ArrayLike, mean: np.ndarray) -> np.ndarray:
        return shard_scatter(X, mean, self._device, diagonal=True)

    def fit_from_stats(self, n_samples: int, sum_: np.ndarray, sumsq: np.ndarray) -> Self:
        n = int(n_samples)
        if n < 1:
            raise ConfigError("standardize needs at least 1 row in the fit split, got 0.")
        self.mean_ = mean_from_sums(n, sum_)
        self.scale_, constant = standard_scale(n, self.mean_, np.asarray(sumsq, dtype=np.float64) / n)
        self.n_constant_features_ = int(constant.sum())
        if constant.any():
            log.info("standardize: %d constant feature(s) keep scale 1", self.n_constant_features_)
        self.n_samples_ = n
        self.n_features_in_ = int(self.mean_.shape[0])
        return self

    def fit(self, X: ArrayLike, y: Any = None) -> Self:
        n, sum_ = self.shard_sums(X)
        return self.fit_from_stats(n, sum_, self.shard_scatter(X, mean_from_sums(max(n, 1), sum_)))

    def transform(self, X: ArrayLike) -> ArrayLike:
        _check_fitted(self, "scale_")
        return _transform_blocks(X, self._device, self.n_features_in_, "Standardizer", self._fn(self._device))

    def transform_tensor(self, X: torch.Tensor) -> torch.Tensor:
        _check_fitted(self, "scale_")
        t = _rows(X, self._device)
        _check_features(t, self.n_features_in_, "Standardizer")
        fn = self._fn(self._device)
        blocks = [fn(b) for b in _blocks(t)]
        return torch.cat(blocks) if blocks else torch.zeros((0, self.n_features_in_), dtype=torch.float64, device=self._device)

    def _fn(self, dev: torch.device) -> Any:
        mean = torch.as_tensor(self.mean_, device=dev)
        scale = torch.as_tensor(self.scale_, device=dev)
        return lambda block: (block - mean) / scale

    def to_state(self) -> dict[str, np.ndarray]:
        _check_fitted(self, "scale_")
        assert self.scale_ is not None
        return {
            "format": np.array("mixbench-standardizer-1"),
            "mixbench_version": np.array(__version__),
            "mean": self.mean_,
            "scale": self.scale_,
            "n_samples": np.array(self.n_samples_, dtype=np.int64),
            "n_constant_features": np.array(self.n_constant_features_, dtype=np.int64),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, device: str | torch.device = "auto") -> Standardizer:
        est = cls(device=device)
        est.mean_ = np.asarray(state["mean"], dtype=np.float64)
        est.scale_ = np.asarray(state["scale"], dtype=np.float64)
        est.n_samples_ = int(state["n_samples"])
        est.n_features_in_ = int(est.mean_.shape[0])
        est.n_constant_features_ = int(state.get("n_constant_features", 0))
        return est


# -- deterministic .npz ------------------------------------------------------------------------
def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` (readable by ``np.load``) whose bytes depend only on the arrays: fixed zip
    timestamps and key order, so the same fit gives the same file sha256 on every run."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, arr_buf.getvalue())
    return buf.getvalue()


def save_state(path: str | os.PathLike[str], state: Mapping[str, np.ndarray]) -> None:
    Path(path).write_bytes(npz_bytes(state))


def load_state(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
