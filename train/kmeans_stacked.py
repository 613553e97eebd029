"""The evaluation k-means of several DM2C runs at once (:class:`train.dm2c_stacked.StackedTrainer`).

Every (run, restart) pair is one element of a batch: its own rows (the run's train embedding,
padded to the longest run and masked), its own centres. The algorithm is :mod:`train.kmeans`'s
torch backend step for step — the run's rows centred on their float64 mean, greedy k-means++ from
a CPU generator seeded with the run's k-means seed (the same draws in the same order), Lloyd with
scikit-learn's tolerance per restart, empty clusters relocated to the farthest points, the best
restart by inertia — so a run gets what ``KMeans(...).fit`` gives it, up to float rounding of the
batched sums. Finished restarts leave the batch, as in the solo loop. The result of each run is a
fitted :class:`train.kmeans.KMeans` (``predict`` works on it).

Where it is used: on accelerators, where one batched program replaces ``S`` fits' kernel launches
(GPU figure still open). On CPU :func:`cluster_many` fits each run with :class:`~train.kmeans.KMeans`:
there the solo loop drops converged restarts from its batch and is faster — five fits of
2,173 × 8 rows, k = 10, 20 restarts, one thread: 0.10 s one by one, 0.23 s batched here, with
bit-identical inertias and labels (tests/test_dm2c_stacked.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .kmeans import KMeans, _assign, _centre, _relocate_empty


def _dist(pts: torch.Tensor, pp: torch.Tensor, x: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
    """Squared distances of points ``B × M × D`` (norms ``B × M``) to rows ``B × N × D``: ``B × M × N``, ≥ 0."""
    d = torch.baddbmm(pp.unsqueeze(2), pts, x.transpose(1, 2), beta=1.0, alpha=-2.0)
    return d.add_(xx.unsqueeze(1)).clamp_(min=0.0)


@torch.no_grad()
def fit_many(xs: Sequence[torch.Tensor], k: int, seeds: Sequence[int], *, n_init: int, max_iter: int, tol: float
             ) -> list[KMeans]:
    """k-means of every ``xs[i]`` (``n_i × D``, float32, one device) with seed ``seeds[i]``."""
    S = len(xs)
    dev = xs[0].device
    d = xs[0].shape[1]
    R = int(n_init)
    ns = [int(len(x)) for x in xs]
    N = max(ns)
    means = [x.sum(0, dtype=torch.float64) / len(x) for x in xs]
    X = torch.zeros(S, N, d, device=dev)
    W = torch.zeros(S, N, device=dev)
    for s, x in enumerate(xs):
        X[s, :ns[s]] = _centre(x, means[s])
        W[s, :ns[s]] = 1.0
    XX = (X * X).sum(2)
    tol_abs = torch.tensor([float(tol) * float(XX[s].sum(dtype=torch.float64)) / (ns[s] * d) for s in range(S)],
                           device=dev)
    run = torch.arange(S, device=dev).repeat_interleave(R)  # element b = run b // R, restart b % R
    B = S * R
    Xb, XXb, Wb = X[run], XX[run], W[run]
    last = torch.as_tensor(ns, device=dev)[run] - 1

    # greedy k-means++, the same draws per run as KMeans (first rows, then the uniforms)
    trials = 2 + int(math.log(k))
    firsts, us = [], []
    for s in range(S):
        gen = torch.Generator(device="cpu").manual_seed(int(seeds[s]))
        firsts.append(torch.randint(ns[s], (R,), generator=gen))
        us.append(torch.rand(R, max(k - 1, 0), trials, generator=gen, dtype=torch.float64))
    first = torch.cat(firsts).to(dev)
    u = torch.cat(us).to(dev)
    bix = torch.arange(B, device=dev)
    centres = torch.empty(B, k, d, device=dev)
    new = Xb[bix, first]  # B × D
    centres[:, 0] = new
    closest = _dist(new.unsqueeze(1), (new * new).sum(1, keepdim=True), Xb, XXb).squeeze(1) * Wb
    for c in range(1, k):
        cum = closest.to(torch.float64).cumsum_(1)
        total = cum.gather(1, last.unsqueeze(1))
        cand = torch.searchsorted(cum, u[:, c - 1] * total)
        cand = torch.minimum(cand, last.unsqueeze(1))  # B × L
        pts = Xb[bix.unsqueeze(1), cand]  # B × L × D
        dist = torch.minimum(_dist(pts, (pts * pts).sum(2), Xb, XXb), closest.unsqueeze(1)) * Wb.unsqueeze(1)
        best = dist.sum(2, dtype=torch.float64).argmin(1)
        closest = dist[bix, best]
        centres[:, c] = Xb[bix, cand[bix, best]]

    # Lloyd per run: its R restarts share its rows (one bmm per run); a converged restart is frozen,
    # a run whose restarts have all converged leaves the batch
    final = centres.view(S, R, k, d).clone()
    n_iter = np.zeros((S, R), dtype=np.int64)
    runs = torch.arange(S, device=dev)
    c = final.clone()
    done = torch.zeros(S, R, dtype=torch.bool, device=dev)
    its = torch.zeros(S, R, dtype=torch.long, device=dev)
    xa, xxa, wa = X, XX, W
    for it in range(1, int(max_iter) + 1):
        sa = len(runs)
        ck = c.reshape(sa, R * k, d)
        cc = (ck * ck).sum(2)
        g = torch.baddbmm(cc.unsqueeze(2), ck, xa.transpose(1, 2), beta=1.0, alpha=-2.0).view(sa, R, k, N)
        onehot = g.eq_(g.amin(2, keepdim=True))  # in place: one-hot, float 1/0
        if bool((onehot.sum(2) > 1).any()):  # an exact tie: keep the lower cluster, as argmin
            onehot.mul_(onehot.cumsum(2) == 1)
        onehot.mul_(wa.view(sa, 1, 1, N))
        # D × (R·K) per run, as KMeans's x_bᵀ·onehotᵀ; counts are exact small integers in float32
        sums = torch.bmm(xa.transpose(1, 2), onehot.view(sa, R * k, N).transpose(1, 2)).transpose(1, 2).reshape(sa, R, k, d)
        counts = onehot.sum(3).to(torch.float64)  # sa × R × K
        empty = counts == 0
        if bool(empty.any()):
            for i, r in torch.nonzero(empty.any(2)).tolist():
                nj = ns[int(runs[i])]
                cj = c[i, r]
                gj = torch.addmm((cj * cj).sum(1).unsqueeze(1), cj, xa[i, :nj].T, beta=1.0, alpha=-2.0)
                mind = (gj.amin(0) + xxa[i, :nj]).unsqueeze(0)
                s_j, c_j = sums[i, r:r + 1].clone(), counts[i, r:r + 1].clone()
                _relocate_empty(xa[i, :nj], s_j, c_j, cj.unsqueeze(0), mind)
                sums[i, r], counts[i, r] = s_j[0], c_j[0]
        newc = sums / counts.clamp(min=1.0).unsqueeze(3).to(sums.dtype)
        shift = (newc - c).pow_(2).sum((2, 3))
        its += ~done
        c = torch.where(done.view(sa, R, 1, 1), c, newc)
        done |= shift <= tol_abs[runs].unsqueeze(1)
        fin = done.all(1)
        if bool(fin.any()) or it == max_iter:
            if it == max_iter:
                fin = torch.ones_like(fin)
            ids = runs[fin]
            final[ids] = c[fin]
            n_iter[ids.cpu().numpy()] = its[fin].cpu().numpy()
            keep = ~fin
            runs, c, done, its = runs[keep], c[keep], done[keep], its[keep]
            if len(runs) == 0:
                break
            xa, xxa, wa = X[runs], XX[runs], W[runs]
    final = final.view(B, k, d)
    n_iter = n_iter.reshape(-1)

    # inertia per restart, best per run, labels at its centres
    cc = (final * final).sum(2)
    g = torch.baddbmm(cc.unsqueeze(2), final, Xb.transpose(1, 2), beta=1.0, alpha=-2.0)
    mind = (g.amin(1) + XXb).clamp_(min=0.0) * Wb
    inertias = mind.sum(1, dtype=torch.float64).view(S, R).cpu().numpy()
    out: list[KMeans] = []
    for s in range(S):
        best = int(np.argmin(inertias[s]))
        cen = final[s * R + best]
        x = X[s, :ns[s]]
        labels, inertia = _assign(x, cen, ns[s], inertia=True)
        km = KMeans(k, n_init=R, max_iter=max_iter, tol=tol, seed=int(seeds[s]), device=dev)
        km.device_ = dev
        km._mean = means[s]
        km._centres = cen
        km.cluster_centers_ = (cen.to(torch.float64) + means[s]).to(torch.float32)
        km.labels_ = labels
        km.inertia_ = inertia
        km.inertias_ = inertias[s]
        km.n_iters_ = n_iter[s * R:(s + 1) * R]
        km.n_iter_ = int(km.n_iters_[best])
        km.converged_ = km.n_iter_ < int(max_iter)
        km.n_features_in_ = d
        km.backend_ = "torch-stacked"
        km.fit_seconds_ = float("nan")
        out.append(km)
    return out


def cluster_many(trainers: Sequence[Any], embs: list[dict[str, torch.Tensor]], seeds: list[int]
                 ) -> list[tuple[Any, dict[str, np.ndarray]]]:
    """Each run's evaluation k-means (its trainer's settings and ``seeds[i]``) on its train
    embedding, and ``predict`` on the other splits: what :meth:`FaithfulTrainer.cluster` returns, per run."""
    t0 = trainers[0]
    if t0.device.type == "cpu":  # measured: the solo fits are faster on CPU (see the module docstring)
        return [t.cluster(emb, seed) for t, emb, seed in zip(trainers, embs, seeds)]
    cfg = t0.cfg
    kms = fit_many([e["train"] for e in embs], t0.n_clusters, seeds, n_init=cfg.n_init,
                   max_iter=cfg.kmeans_max_iter, tol=cfg.kmeans_tol)
    out = []
    for km, emb in zip(kms, embs):
        preds = {"train": km.labels_.cpu().numpy().astype(np.int64)}
        for split, e in emb.items():
            if split != "train":
                preds[split] = km.predict(e).cpu().numpy().astype(np.int64)
        out.append((km, preds))
    return out
