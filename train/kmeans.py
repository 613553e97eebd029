"""k-means on the device of the data, with every restart batched into one tensor program.

:class:`KMeans` follows scikit-learn's ``KMeans`` (Lloyd's algorithm, greedy k-means++ seeding,
``tol`` relative to the data's variance, best of ``n_init`` restarts by inertia) so that DM2C's
evaluation (``KMeans(10, n_init=20, max_iter=1000, tol=5e-5)`` fitted on train, ``predict`` on
test) can run where the embeddings already are, without a round trip through numpy. From the
same starting centres it stops at the same iteration as scikit-learn with the same labels
(tests/test_kmeans.py checks this on the Wikipedia features).

How it is computed
------------------
- All ``n_init`` restarts are one batch: centroids are an ``R × K × D`` tensor, and one matmul of
  all ``R·K`` centroids against a row chunk gives every restart's distances at once
  (``||x||² − 2x·c + ||c||²`` in float32, clamped at 0). The buffer is cluster-major, so the
  minimum over clusters is a reduction over the outer dimension, and comparing with it in place
  turns the buffer into the one-hot assignment; the M-step is a second matmul (or, on CPU for
  k ≥ 24, an ``index_add``, see :func:`_m_step_by_index`). Rows are processed in chunks so the
  ``R·K × B`` buffer stays bounded (2²⁴ floats on CPU, 2²⁶ on CUDA; ``chunk_rows`` overrides):
  1M × 128 with k = 100 needs a few hundred MiB beyond the data.
- The data are centred (float64 mean) before clustering, as scikit-learn does, which keeps the
  float32 expansion of the squared distance accurate; centres are shifted back on output.
- k-means++ is scikit-learn's greedy variant: ``2 + ⌊ln k⌋`` candidates per step, sampled with
  probability ∝ D² through a float64 cumulative sum, keeping the candidate that lowers the
  potential most; all restarts step together.
- Convergence per restart, with scikit-learn's semantics: stop when the squared centre shift
  (summed over centres) is ≤ ``tol × mean per-feature variance``; unchanged labels give a zero
  shift, so they stop it too. A converged restart is frozen on the device (a ``where``); the
  host looks every ``check_every`` iterations (1 on CPU, where a sync is free; 8 on CUDA, so
  the loop runs without host syncs in between) and drops the finished restarts from the batch.
- Empty clusters get the points farthest from their centres (the j-th empty cluster of a restart
  takes its j-th farthest point), and those points leave their old clusters, as in
  scikit-learn. Sync-free runs do this branch-free every iteration (a no-op when nothing is
  empty); with ``check_every = 1`` only when a cluster is empty. Exact distance ties go to the
  lower cluster index, as ``argmin``.
- After the loop every restart's inertia is recomputed at its final centres, the lowest is kept,
  and its labels and ``inertia_`` are computed at those centres (inertia in float64).
- Randomness: one CPU ``torch.Generator`` seeded with ``seed`` draws every random number of the
  seeding up front, so a seed gives the same clustering on a device whatever the chunking;
  CPU and CUDA agree up to float rounding.

Backends
--------
``backend="torch"`` is the above. ``backend="sklearn"`` calls scikit-learn's ``KMeans`` (Lloyd,
same settings, ``random_state = seed``) on the host and converts its result (labels and inertia
recomputed at its centres as above). ``backend="faiss"`` calls ``faiss.Kmeans`` (faiss-cpu, an
optional dependency; k-means++ or random seeding, ``niter = max_iter``, ``nredo = n_init``, no
subsampling; faiss has no ``tol``) for comparison. ``"auto"`` picks ``"torch"`` on accelerators
and for explicit initial centres; on CPU it picks ``"sklearn"`` where that is faster
(:func:`sklearn_is_faster`: many restarts of shallow rows), so that it is never slower than
scikit-learn there. It never picks FAISS: FAISS qualifies only where it reaches scikit-learn's inertia within 1 %, and it does not on
clustered data. Measured with bench/kmeans.py (inertia recomputed the same way for all,
2-core CPU, faiss-cpu 1.15.1):

- 2,173 × 8 Wikipedia features, k = 10, 20 restarts: torch, FAISS and scikit-learn all reach
  the same inertia (ratios to scikit-learn 0.9998–1.0000), at similar CPU times; torch runs on
  the data's device and needs no host copy.
- blobs, k = 20 (20,000 × 32, 3 restarts): FAISS with k-means++ seeding stops at 1.61× the
  inertia of scikit-learn and of this module; at 200,000 × 128, k = 100 it is 1.9× (k-means++)
  to 5× (random seeding) (``python bench/kmeans.py``), while this module matches
  scikit-learn.

>>> import numpy as np
>>> x = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 10].astype("float32")
>>> km = KMeans(2, n_init=4, seed=0, device="cpu").fit(x)
>>> sorted(km.cluster_centers_[:, 0].round(3).tolist()), km.inertia_
([0.0, 10.0], 0.0)
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mixbench.device import resolve_device
from mixbench.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INITS = ("k-means++", "random")
BACKENDS = ("auto", "torch", "sklearn", "faiss")
_BUDGET = {"cpu": 1 << 24, "cuda": 1 << 26}
"""Elements of one ``B × R·K`` float32 buffer per row chunk (CPU: 64 MiB; CUDA: 256 MiB)."""


def _default_check_every(device: torch.device) -> int:
    """Lloyd iterations between host checks: 1 on CPU (a sync is free there), 8 on accelerators."""
    return 1 if device.type == "cpu" else 8


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _as_2d(X: Any, name: str = "X") -> tuple[torch.Tensor, bool]:
    """``X`` as a floating torch tensor (not yet moved), and whether it came as a tensor."""
    is_tensor = isinstance(X, torch.Tensor)
    if is_tensor:
        t = X.detach()
    else:
        arr = np.asarray(X)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DataError(f"{name}: dtype {arr.dtype} is not numeric; pass a float array of features.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim != 2:
        hint = " Reshape your data with X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one row." if t.ndim == 1 else ""
        raise DataError(f"{name}: expected a 2-D array (rows × features), got shape {tuple(t.shape)}.{hint}")
    if t.is_complex():
        raise DataError(f"{name}: complex values; k-means needs real features.")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    return t, is_tensor


def _check_finite(x: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        row, col = (int(v) for v in torch.nonzero(bad)[0])
        raise DataError(
            f"{name}: row {row}, feature {col} is {float(x[row, col])}; k-means needs finite features. "
            "Drop or impute the bad rows first (the embed stage never writes NaN: check the store with "
            "`mixbench inspect`)."
        )


def _out_kind(labels: torch.Tensor, as_tensor: bool) -> Any:
    return labels if as_tensor else labels.cpu().numpy()


def _centre(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """``x − mean`` as float32 (``mean`` float64); float64 input is centred in float64 first.
    ``fit`` and ``predict`` share it, so ``predict(X)`` reproduces ``labels_`` exactly."""
    if x.dtype == torch.float64:
        return (x - mean).to(torch.float32)
    return x.to(torch.float32) - mean.to(torch.float32)


# --------------------------------------------------------------------------------------------
# batched building blocks (x: N × D centred float32, xx: N squared norms)
# --------------------------------------------------------------------------------------------
def _chunks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for b0 in range(0, n, rows):
        yield b0, min(n, b0 + rows)


def _neg2_dot_plus(cc: torch.Tensor, xb: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """``||c||² − 2 x·c`` for a row chunk against the flat centre list ``cf`` (M × D): B × M."""
    return torch.addmm(cc.unsqueeze(0), xb, cf.T, beta=1.0, alpha=-2.0)


def _dist_from(pts: torch.Tensor, pp: torch.Tensor, xb: torch.Tensor, xxb: torch.Tensor) -> torch.Tensor:
    """Squared distances of the points ``pts`` (M × D, squared norms ``pp``) to a row chunk: M × B, ≥ 0."""
    d = torch.addmm(pp.unsqueeze(1), pts, xb.T, beta=1.0, alpha=-2.0)
    return d.add_(xxb).clamp_(min=0.0)


def _kmeans_pp(x: torch.Tensor, xx: torch.Tensor, n_restarts: int, k: int, gen: torch.Generator, rows: int) -> torch.Tensor:
    """Greedy k-means++ seeding (scikit-learn's variant) for ``n_restarts`` restarts at once: R × K × D.

    For each new centre, ``2 + ⌊ln k⌋`` candidates per restart are drawn with probability ∝ D²
    (inverse CDF over a float64 cumulative sum), and the one giving the lowest potential is kept."""
    n, d = x.shape
    dev = x.device
    r = n_restarts
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (r,), generator=gen).to(dev)
    u = torch.rand(r, max(k - 1, 0), trials, generator=gen, dtype=torch.float64).to(dev)
    centres = torch.empty(r, k, d, dtype=x.dtype, device=dev)
    centres[:, 0] = x[first]
    closest = torch.empty(r, n, dtype=x.dtype, device=dev)  # squared distance to the nearest chosen centre
    new = x[first]
    newn = (new * new).sum(1)
    for b0, b1 in _chunks(n, rows):
        closest[:, b0:b1] = _dist_from(new, newn, x[b0:b1], xx[b0:b1])
    for c in range(1, k):
        cum = closest.to(torch.float64).cumsum_(1)
        vals = u[:, c - 1] * cum[:, -1:]
        cand = torch.searchsorted(cum, vals).clamp_(max=n - 1)  # R × L
        pts = x[cand.reshape(-1)]  # R·L × D
        ppn = (pts * pts).sum(1)
        if rows >= n:  # one chunk: keep the candidates' distances, no second pass
            dist = torch.minimum(_dist_from(pts, ppn, x, xx).view(r, trials, n), closest.unsqueeze(1))
            best = dist.sum(2, dtype=torch.float64).argmin(1, keepdim=True)
            closest = dist[torch.arange(r, device=dev), best.squeeze(1)]
            centres[:, c] = x[cand.gather(1, best).squeeze(1)]
            continue
        pots = torch.zeros(r, trials, dtype=torch.float64, device=dev)
        for b0, b1 in _chunks(n, rows):
            dist = _dist_from(pts, ppn, x[b0:b1], xx[b0:b1]).view(r, trials, b1 - b0)
            pots += torch.minimum(dist, closest[:, None, b0:b1]).sum(2, dtype=torch.float64)
        best = pots.argmin(1, keepdim=True)
        new = x[cand.gather(1, best).squeeze(1)]  # R × D
        centres[:, c] = new
        newn = (new * new).sum(1)
        for b0, b1 in _chunks(n, rows):
            torch.minimum(closest[:, b0:b1], _dist_from(new, newn, x[b0:b1], xx[b0:b1]), out=closest[:, b0:b1])
    return centres


def _random_init(x: torch.Tensor, n_restarts: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` distinct rows per restart, uniformly: R × K × D."""
    idx = torch.stack([torch.randperm(x.shape[0], generator=gen)[:k] for _ in range(n_restarts)])
    return x[idx.to(x.device)]


def _relocate_empty(
    x: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    centres: torch.Tensor,
    mind: torch.Tensor,
) -> None:
    """Give every empty cluster (count 0) of every restart one of the points farthest from their
    current centre, in place on ``sums`` (R × K × D) and ``counts`` (R × K, float64).

    The j-th empty cluster of restart r takes the j-th farthest point of r (``mind``: R × N
    squared distances of the E-step), which leaves its old cluster. Branch-free: with no empty
    cluster, nothing changes."""
    r, k, d = sums.shape
    n = x.shape[0]
    empty = counts == 0  # R × K
    m = min(k, n)
    far = mind.topk(m, dim=1).indices  # R × m, farthest first
    rank = (empty.cumsum(1) - 1).clamp_(0, m - 1)
    pts = far.gather(1, rank)  # R × K (meaningful where empty)
    xp = x[pts.reshape(-1)].view(r, k, d)
    # the old cluster of each such point: its nearest current centre (as in the E-step)
    cc = (centres * centres).sum(2)  # R × K
    g = torch.baddbmm(cc.unsqueeze(1), xp, centres.transpose(1, 2), beta=1.0, alpha=-2.0)  # R × K(points) × K
    old = g.argmin(2)  # R × K
    w = empty.to(sums.dtype)
    flat = (old + torch.arange(r, device=x.device).unsqueeze(1) * k).reshape(-1)
    sums.view(r * k, d).index_add_(0, flat, -(xp * w.unsqueeze(2)).view(r * k, d))
    counts.view(-1).index_add_(0, flat, -empty.to(counts.dtype).view(-1))
    sums.copy_(torch.where(empty.unsqueeze(2), xp, sums))
    counts.copy_(torch.where(empty, torch.ones_like(counts), counts))


def _first_only(onehot: torch.Tensor) -> None:
    """Keep only the first 1 of each column of a (K, M) 0/1 matrix (ties between equal distances)."""
    onehot.mul_(onehot.cumsum(0) == 1)


def _m_step_by_index(device: torch.device, k: int) -> bool:
    """M-step by ``index_add`` (O(N·D) per restart) rather than a one-hot matmul (O(N·D·K)).

    On CPU the matmul wins for small k (its per-element cost is far lower than ``index_add``'s)
    and loses for large k. One Lloyd step, one thread, best of 20 on a shared (busy) 2-core
    machine, so indicative only: 2,173 × 8, 20 restarts, k = 10: matmul about 2.5× faster;
    20,000 × 128, 3 restarts: matmul faster at k = 16, index_add faster from k = 24 (1.3× at
    k = 24, 1.5× at k = 100). On accelerators the matmul is kept: it is deterministic and needs
    no atomics."""
    return device.type == "cpu" and k >= 24


def _lloyd_step(x: torch.Tensor, xx: torch.Tensor, centres: torch.Tensor, rows: int, sync_free: bool) -> torch.Tensor:
    """One Lloyd iteration for R restarts: labels from ``centres`` (R × K × D), new centres.

    Layout: the distance chunk is (K·R) × B, cluster-major, so that the minimum over clusters is a
    reduction over the outer dimension (vectorised on CPU); comparing with that minimum in place
    turns the buffer into the one-hot assignment. The M-step is then one matmul
    ``x_bᵀ · onehotᵀ`` or, for large k on CPU, an ``index_add`` of the rows by cluster.
    Exact ties are broken towards the lower cluster index (as argmin): always on accelerators
    (no sync), on CPU only when a chunk shows one."""
    r, k, d = centres.shape
    n = x.shape[0]
    dev = x.device
    by_index = _m_step_by_index(dev, k)
    ck = centres.transpose(0, 1).reshape(k * r, d)  # row k·R + r
    cc = (ck * ck).sum(1).unsqueeze(1)
    if by_index:
        sums = torch.zeros(r, k, d, dtype=x.dtype, device=dev)
        kidx = torch.arange(k, dtype=x.dtype, device=dev)
        roff = (torch.arange(r, device=dev) * k).unsqueeze(1)
    else:
        sums_t = torch.zeros(d, k * r, dtype=x.dtype, device=dev)  # column k·R + r
    counts = torch.zeros(k * r, dtype=torch.float64, device=dev)
    mind = torch.empty(r, n, dtype=x.dtype, device=dev) if sync_free else None
    for b0, b1 in _chunks(n, rows):
        b = b1 - b0
        xb = x[b0:b1]
        g = torch.addmm(cc, ck, xb.T, beta=1.0, alpha=-2.0)  # (K·R) × B
        gv = g.view(k, r * b)
        vals = gv.amin(0)
        if mind is not None:
            torch.add(vals.view(r, b), xx[b0:b1], out=mind[:, b0:b1])
        gv.eq_(vals)  # one-hot in place (float 1/0); an exact tie gives a column two 1s
        per_cluster = g.sum(1)  # rows per (cluster, restart) in this chunk: exact small integers
        if sync_free or float(per_cluster.sum(dtype=torch.float64)) != r * b:
            _first_only(gv)  # keep the first of equal distances, as argmin does
            per_cluster = g.sum(1)
        if by_index:
            lab = torch.mv(gv.T, kidx).to(torch.long).view(r, b)
            for j in range(r):  # per restart: no R-fold copy of the chunk
                sums[j].index_add_(0, lab[j], xb)
            flat = (lab + roff).view(-1)
            counts += torch.bincount(flat, minlength=r * k).to(torch.float64).view(r, k).T.reshape(-1)
        else:
            sums_t.addmm_(xb.T, g.T)
            counts += per_cluster
    if not by_index:
        sums = sums_t.T.reshape(k, r, d).transpose(0, 1).contiguous()
    counts = counts.view(k, r).T.contiguous()
    if sync_free or bool((counts == 0).any()):
        if mind is None:  # CPU, rare: the distances of this E-step, recomputed
            mind = _min_dist(x, xx, centres, rows)
        _relocate_empty(x, sums, counts, centres, mind)
    return sums / counts.clamp(min=1.0).unsqueeze(2).to(sums.dtype)


def _lloyd(
    x: torch.Tensor,
    xx: torch.Tensor,
    centres: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    rows: int,
    check_every: int,
    sync_free: bool,
    progress: bool,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Lloyd iterations for all restarts: final centres (R × K × D), iterations and converged flags."""
    n_restarts, k, _ = centres.shape
    dev = x.device
    final = centres.clone()
    n_iter = np.zeros(n_restarts, dtype=np.int64)
    converged = np.zeros(n_restarts, dtype=bool)
    active = np.arange(n_restarts)
    c = centres
    done = torch.zeros(n_restarts, dtype=torch.bool, device=dev)
    its = torch.zeros(n_restarts, dtype=torch.long, device=dev)
    bar = tqdm(total=max_iter, desc="k-means", unit="it", disable=not progress, leave=False)
    it = 0
    for it in range(1, max_iter + 1):
        new = _lloyd_step(x, xx, c, rows, sync_free)
        shift = (new - c).pow_(2).sum((1, 2))
        its += ~done
        c = torch.where(done.view(-1, 1, 1), c, new)
        done |= shift <= tol  # a frozen restart stays done
        bar.update(1)
        if it % check_every == 0 or it == max_iter:
            fin = done.cpu().numpy()
            if fin.any():
                ids = active[fin]
                final[torch.as_tensor(ids, device=dev)] = c[torch.as_tensor(fin, device=dev)]
                n_iter[ids] = its[torch.as_tensor(fin, device=dev)].cpu().numpy()
                converged[ids] = True
                keep = torch.as_tensor(~fin, device=dev)
                active = active[~fin]
                if len(active) == 0:
                    break
                c, done, its = c[keep], done[keep], its[keep]
    bar.close()
    if len(active):
        final[torch.as_tensor(active, device=dev)] = c
        n_iter[active] = its.cpu().numpy()
    return final, n_iter, converged


def _min_dist(x: torch.Tensor, xx: torch.Tensor, centres: torch.Tensor, rows: int, *, reduce: bool = False) -> torch.Tensor:
    """Squared distance of every row to its nearest centre, for every restart: R × N (float32),
    or with ``reduce`` the per-restart sums, the inertias (R, float64)."""
    r, k, d = centres.shape
    n = x.shape[0]
    ck = centres.transpose(0, 1).reshape(k * r, d)
    cc = (ck * ck).sum(1).unsqueeze(1)
    out = torch.zeros(r, dtype=torch.float64, device=x.device) if reduce else torch.empty(r, n, dtype=x.dtype, device=x.device)
    for b0, b1 in _chunks(n, rows):
        b = b1 - b0
        val = torch.addmm(cc, ck, x[b0:b1].T, beta=1.0, alpha=-2.0).view(k, r, b).amin(0)
        val = (val + xx[b0:b1]).clamp_(min=0.0)
        if reduce:
            out += val.sum(1, dtype=torch.float64)
        else:
            out[:, b0:b1] = val
    return out


def _assign(x: torch.Tensor, centres: torch.Tensor, rows: int, *, inertia: bool) -> tuple[torch.Tensor, float]:
    """Nearest centre (K × D) of every row, and the inertia in float64 (exact differences)."""
    cc = (centres * centres).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    c64 = centres.to(torch.float64) if inertia else None
    for b0, b1 in _chunks(x.shape[0], rows):
        lab = _neg2_dot_plus(cc, x[b0:b1], centres).argmin(1)
        labels[b0:b1] = lab
        if inertia:
            diff = x[b0:b1].to(torch.float64) - c64[lab]
            total += (diff * diff).sum()
    return labels, float(total) if inertia else float("nan")


# --------------------------------------------------------------------------------------------
# backend choice
# --------------------------------------------------------------------------------------------
SKLEARN_MAX_DIM = 32
SKLEARN_MIN_BUFFER = 1 << 23


def sklearn_is_faster(n: int, d: int, k: int, n_init: int) -> bool:
    """Whether scikit-learn's ``KMeans`` fits faster than the torch backend on CPU (``backend="auto"``).

    The torch backend materialises every restart's distances (an ``N × n_init·k`` buffer per
    iteration) and wins while that buffer stays in cache or the matmul has enough depth (``d``)
    to be compute-bound; scikit-learn runs restarts one after the other with fused, cache-sized
    chunks and wins on a large buffer of shallow rows. Measured with bench/kmeans.py (2-core CPU,
    one process each, medians): 2,173 × 8, k = 10, 20 restarts (buffer 4·10⁵): torch faster;
    200,000 × 128, k = 100, 3 restarts (6·10⁷, d = 128): torch faster; 20,000 × 16, k = 50,
    150 restarts (1.5·10⁸, d = 16): scikit-learn faster. Rule: scikit-learn when ``d ≤ 32`` and
    the buffer holds at least 2²³ elements."""
    return d <= SKLEARN_MAX_DIM and n * k * n_init >= SKLEARN_MIN_BUFFER


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
class KMeans:
    """k-means (Lloyd) with greedy k-means++ seeding and all restarts batched on one device.

    Parameters (stored as given; checked in :meth:`fit`)
    ----------
    n_clusters: number of clusters k (≥ 1; the data need at least k rows).
    n_init: restarts; the one with the lowest inertia is kept. Ignored (1) for an explicit ``init``.
    max_iter: Lloyd iterations per restart at most.
    tol: scikit-learn's relative tolerance: a restart stops when the summed squared centre shift is
        ≤ ``tol × mean per-feature variance of X`` (or its labels stop changing).
    init: ``"k-means++"`` (greedy, 2 + ⌊ln k⌋ trials per centre), ``"random"`` (k distinct rows), or
        a k × D array of starting centres.
    seed: seeds the one ``torch.Generator`` that draws every random number.
    random_state: scikit-learn's name for ``seed`` (an int; when given, it is the seed; giving both
        with different values is an error).
    device: ``"auto"`` (the device of a tensor ``X``; for numpy input CUDA when present, else CPU),
        or a device name / ``torch.device`` (the data are moved there).
    backend: ``"torch"``, ``"sklearn"`` (scikit-learn's ``KMeans``, on the host), ``"faiss"``
        (faiss-cpu, for comparison) or ``"auto"`` (see the module doc: torch, or scikit-learn on CPU
        for the sizes where it is faster).
    chunk_rows: rows per chunk of the distance computation (default: from a memory budget).
    check_every: Lloyd iterations between host checks for convergence (default: 1 on CPU, 8 on
        accelerators). With 1, the loop syncs every iteration and only then relocates empty
        clusters or breaks ties; above 1 it runs sync-free (branch-free relocation and
        tie-breaking every iteration, converged restarts frozen on the device). Results agree.
    verbose: show a progress bar over the Lloyd iterations.

    Fitted attributes: ``cluster_centers_`` (k × D, numpy for numpy input, else a tensor on the
    compute device, in the input's float dtype), ``labels_`` (same kind as ``X``, int64),
    ``inertia_`` (float, sum of squared distances to the nearest centre, computed in float64),
    ``n_iter_`` (iterations of the kept restart), ``inertias_`` (every restart, float64 numpy),
    ``n_iters_`` (every restart), ``converged_`` (the kept restart met ``tol`` before ``max_iter``),
    ``n_features_in_``, ``backend_``, ``device_``, ``fit_seconds_``.
    """

    def __init__(
        self,
        n_clusters: int,
        *,
        n_init: int = 20,
        max_iter: int = 1000,
        tol: float = 5e-5,
        init: Any = "k-means++",
        seed: int = 0,
        random_state: int | None = None,
        device: str | torch.device | None = "auto",
        backend: str = "auto",
        chunk_rows: int | None = None,
        check_every: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.init = init
        self.seed = seed
        self.random_state = random_state
        self.device = device
        self.backend = backend
        self.chunk_rows = chunk_rows
        self.check_every = check_every
        self.verbose = verbose

    # -- sklearn-style parameter access -------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor settings, as given (``deep`` is accepted for scikit-learn compatibility)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: getattr(self, p) for p in names}

    def set_params(self, **params: Any) -> KMeans:
        valid = self.get_params()
        for key, value in params.items():
            if key not in valid:
                raise ConfigError(f"KMeans: unknown parameter {key!r}. Valid parameters: {', '.join(valid)}.")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"KMeans({args})"

    # -- checks ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        def need_int(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"The '{name}' parameter of KMeans must be an int in the range [{low}, inf). Got {v!r} instead.")

        need_int("n_clusters", 1)
        need_int("n_init", 1)
        need_int("max_iter", 1)
        if self.chunk_rows is not None:
            need_int("chunk_rows", 1)
        if self.check_every is not None:
            need_int("check_every", 1)
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float, np.floating)) or not self.tol >= 0:
            raise ConfigError(f"The 'tol' parameter of KMeans must be a float in the range [0, inf). Got {self.tol!r} instead.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"The 'seed' parameter of KMeans must be an int. Got {self.seed!r} instead.")
        rs = self.random_state
        if rs is not None:
            if isinstance(rs, bool) or not isinstance(rs, (int, np.integer)):
                raise ConfigError(
                    f"The 'random_state' parameter of KMeans must be an int or None (a RandomState instance is not "
                    f"supported: every random number comes from one seeded torch.Generator). Got {rs!r} instead."
                )
            if self.seed not in (0, rs):
                raise ConfigError(
                    f"KMeans: seed = {self.seed} and random_state = {rs} disagree; give one of them (random_state is "
                    "scikit-learn's name for seed)."
                )
        if isinstance(self.init, str) and self.init not in INITS:
            raise ConfigError(f"The 'init' parameter of KMeans must be one of {INITS} or a k × D array. Got {self.init!r} instead.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"The 'backend' parameter of KMeans must be one of {BACKENDS}. Got {self.backend!r} instead.")

    def _check_fitted(self) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise ConfigError("This KMeans instance is not fitted yet; call fit(X) before predict(X).")

    def _device_for(self, X: torch.Tensor, is_tensor: bool) -> torch.device:
        if self.device in (None, "", "auto"):
            return X.device if is_tensor else resolve_device("auto")
        return resolve_device(self.device)

    @property
    def seed_(self) -> int:
        """The seed in use: ``random_state`` when given, else ``seed``."""
        return int(self.random_state if self.random_state is not None else self.seed)

    def _rows(self, device: torch.device, width: int, n: int) -> int:
        if self.chunk_rows is not None:
            return int(min(self.chunk_rows, n))
        budget = _BUDGET.get(device.type, _BUDGET["cuda"])
        return int(max(1, min(n, budget // max(width, 1))))

    # -- fitting --------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, X: Any) -> KMeans:
        """Cluster the rows of ``X`` (N × D numpy array or torch tensor)."""
        self._check_params()
        t, is_tensor = _as_2d(X)
        n, d = t.shape
        k = int(self.n_clusters)
        if n < k:
            raise DataError(
                f"X has {n} rows but n_clusters = {k}: k-means needs at least as many rows as clusters. "
                "Lower n_clusters or cluster more rows."
            )
        if d == 0:
            raise DataError("X has 0 features (shape N × 0); k-means needs at least one feature column.")
        explicit = not isinstance(self.init, str)
        start = time.perf_counter()
        backend = self._choose_backend(t, is_tensor, explicit)
        if backend == "sklearn":
            self._fit_sklearn(t, is_tensor, explicit)
        elif backend == "faiss":
            if explicit:
                raise ConfigError("backend = 'faiss' takes init = 'k-means++' or 'random', not explicit centres; use backend = 'torch'.")
            self._fit_faiss(t, is_tensor)
        else:
            self._fit_torch(t, is_tensor, explicit)
        if isinstance(self.labels_, torch.Tensor):
            if self.device_.type == "cuda":
                torch.cuda.synchronize(self.device_)
        self.fit_seconds_ = time.perf_counter() - start
        self.backend_ = backend
        self.n_features_in_ = d
        used = len(np.unique(self.labels_.cpu().numpy() if isinstance(self.labels_, torch.Tensor) else self.labels_))
        if used < k:
            log.warning(
                "k-means found %d distinct clusters, fewer than n_clusters = %d; X probably has fewer than %d "
                "distinct rows.", used, k, k,
            )
        log.debug(
            "k-means: %d × %d, k=%d, %d restart(s), %s on %s: inertia %.6g, %d iterations (kept restart), %.3f s",
            n, d, k, len(self.inertias_), backend, self.device_, self.inertia_, self.n_iter_, self.fit_seconds_,
        )
        return self

    def _choose_backend(self, t: torch.Tensor, is_tensor: bool, explicit: bool) -> str:
        if self.backend != "auto":
            return self.backend
        if self._device_for(t, is_tensor).type != "cpu" or explicit:
            return "torch"
        n, d = t.shape
        restarts = int(self.n_init)
        return "sklearn" if sklearn_is_faster(n, d, int(self.n_clusters), restarts) else "torch"

    def _fit_sklearn(self, t: torch.Tensor, is_tensor: bool, explicit: bool) -> None:
        """scikit-learn's ``KMeans`` (Lloyd) with the same settings, seeded with ``seed``; the result
        is converted to this class's attributes (``inertias_``/``n_iters_``: the kept restart only,
        scikit-learn keeps no others)."""
        from sklearn.cluster import KMeans as SKKMeans

        dev = t.device if is_tensor else torch.device("cpu")
        in_dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        x = t.detach().cpu().to(in_dtype)
        _check_finite(x, "X")
        init: Any = self.init
        if explicit:
            init = np.asarray(self.init, dtype=x.numpy().dtype)
        km = SKKMeans(int(self.n_clusters), init=init, n_init=1 if explicit else int(self.n_init),
                      max_iter=int(self.max_iter), tol=float(self.tol), random_state=self.seed_,
                      algorithm="lloyd").fit(x.numpy())
        n = x.shape[0]
        mean = x.sum(0, dtype=torch.float64) / n
        centres = torch.from_numpy(np.ascontiguousarray(km.cluster_centers_))
        cc = (centres.to(torch.float64) - mean).to(torch.float32)
        xc = _centre(x, mean)
        labels, inertia = _assign(xc, cc, self._rows(torch.device("cpu"), cc.shape[0], n), inertia=True)
        self.device_ = dev
        self._mean = mean.to(dev)
        self._centres = cc.to(dev)
        self.cluster_centers_ = centres.to(dev, in_dtype) if is_tensor else km.cluster_centers_.astype(
            np.float64 if in_dtype == torch.float64 else np.float32
        )
        self.labels_ = _out_kind(labels.to(dev), is_tensor)
        self.inertia_ = inertia
        self.inertias_ = np.array([inertia])
        self.n_iter_ = int(km.n_iter_)
        self.n_iters_ = np.array([self.n_iter_])
        self.converged_ = self.n_iter_ < int(self.max_iter)

    def _fit_torch(self, t: torch.Tensor, is_tensor: bool, explicit: bool) -> None:
        dev = self._device_for(t, is_tensor)
        in_dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        x = t.to(dev)
        _check_finite(x, "X")
        n, d = x.shape
        k = int(self.n_clusters)
        mean = x.sum(0, dtype=torch.float64) / n
        x = _centre(x, mean)
        xx = (x * x).sum(1)
        tol_abs = float(self.tol) * float(xx.sum(dtype=torch.float64)) / (n * d)
        gen = torch.Generator(device="cpu").manual_seed(self.seed_)

        if explicit:
            c0, _ = _as_2d(self.init, "init")
            if tuple(c0.shape) != (k, d):
                raise ConfigError(f"init: explicit centres must have shape (n_clusters, n_features) = ({k}, {d}); got {tuple(c0.shape)}.")
            _check_finite(c0, "init")
            n_restarts = 1
            if self.n_init != 1:
                log.info("KMeans: explicit init centres given, so n_init = %d is ignored (one run).", self.n_init)
            centres = (c0.to(dev, torch.float64) - mean).to(torch.float32).unsqueeze(0)
        else:
            n_restarts = int(self.n_init)
            trials = 2 + int(math.log(k))
            if self.init == "k-means++":
                centres = _kmeans_pp(x, xx, n_restarts, k, gen, self._rows(dev, n_restarts * trials, n))
            else:
                centres = _random_init(x, n_restarts, k, gen)

        rows = self._rows(dev, n_restarts * k, n)
        check_every = int(self.check_every) if self.check_every is not None else _default_check_every(dev)
        sync_free = check_every > 1
        final, n_iters, converged = _lloyd(
            x, xx, centres,
            max_iter=int(self.max_iter), tol=tol_abs, rows=rows,
            check_every=check_every, sync_free=sync_free, progress=bool(self.verbose),
        )
        inertias = _min_dist(x, xx, final, rows, reduce=True).cpu().numpy()
        best = int(np.argmin(inertias))
        labels, inertia = _assign(x, final[best], self._rows(dev, k, n), inertia=True)
        if not converged[best]:
            log.info("k-means: the kept restart did not converge within max_iter = %d iterations.", self.max_iter)

        centres_out = final[best].to(torch.float64) + mean
        self.device_ = dev
        self._mean = mean
        self._centres = final[best]  # centred, float32, for predict
        self.cluster_centers_ = centres_out.to(in_dtype) if is_tensor else centres_out.cpu().numpy().astype(
            np.float64 if in_dtype == torch.float64 else np.float32
        )
        self.labels_ = _out_kind(labels, is_tensor)
        self.inertia_ = inertia
        self.inertias_ = inertias
        self.n_iters_ = n_iters
        self.n_iter_ = int(n_iters[best])
        self.converged_ = bool(converged[best])

    def _fit_faiss(self, t: torch.Tensor, is_tensor: bool) -> None:
        try:
            import faiss
        except ImportError:
            raise ConfigError(
                "backend = 'faiss' needs the faiss package: pip install faiss-cpu (or use backend = 'torch')."
            ) from None
        dev = t.device if is_tensor else torch.device("cpu")
        x = t.cpu().to(torch.float32)
        _check_finite(x, "X")
        n, d = x.shape
        k = int(self.n_clusters)
        xn = np.ascontiguousarray(x.numpy())
        method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS if self.init == "k-means++" else faiss.ClusteringInitMethod_RANDOM
        km = faiss.Kmeans(
            d, k, niter=int(self.max_iter), nredo=int(self.n_init), seed=self.seed_ & 0x7FFFFFFF,
            max_points_per_centroid=max(256, -(-n // k) + 1), init_method=method, verbose=False,
        )
        km.train(xn)
        centres = torch.from_numpy(np.asarray(km.centroids, dtype=np.float32))
        mean = x.sum(0, dtype=torch.float64) / n
        xc = _centre(t.cpu() if t.dtype == torch.float64 else x, mean)
        cc = (centres.to(torch.float64) - mean).to(torch.float32)
        labels, inertia = _assign(xc, cc, self._rows(torch.device("cpu"), k, n), inertia=True)
        self.device_ = dev
        self._mean = mean.to(dev)
        self._centres = cc.to(dev)
        in_dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
        self.cluster_centers_ = centres.to(dev, in_dtype) if is_tensor else centres.numpy().astype(
            np.float64 if in_dtype == torch.float64 else np.float32
        )
        self.labels_ = _out_kind(labels.to(dev), is_tensor)
        self.inertia_ = inertia
        self.inertias_ = np.array([inertia])
        iters = len(getattr(km, "iteration_stats", [])) or int(self.max_iter) * int(self.n_init)
        self.n_iters_ = np.array([iters // max(int(self.n_init), 1)])
        self.n_iter_ = int(self.n_iters_[0])
        self.converged_ = True

    # -- using the fit -------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, X: Any) -> Any:
        """Index of the nearest fitted centre for every row of ``X`` (same kind as ``X``, int64)."""
        self._check_fitted()
        t, is_tensor = _as_2d(X)
        if t.shape[1] != self.n_features_in_:
            raise DataError(f"X has {t.shape[1]} features, but KMeans was fitted on {self.n_features_in_} features.")
        dev = t.device if is_tensor else self.device_
        x = t.to(dev)
        _check_finite(x, "X")
        x = _centre(x, self._mean.to(dev))
        centres = self._centres.to(dev)
        labels, _ = _assign(x, centres, self._rows(dev, centres.shape[0], max(len(x), 1)), inertia=False)
        return _out_kind(labels, is_tensor)

    def fit_predict(self, X: Any) -> Any:
        """``fit(X)`` and return ``labels_``."""
        return self.fit(X).labels_


def kmeans(X: Any, n_clusters: int, **kwargs: Any) -> tuple[Any, Any, float]:
    """Functional form: ``(cluster_centers, labels, inertia)`` of ``KMeans(n_clusters, **kwargs).fit(X)``."""
    km = KMeans(n_clusters, **kwargs).fit(X)
    return km.cluster_centers_, km.labels_, km.inertia_
