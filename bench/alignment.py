"""Can the modalities' clusters be aligned without pairs? Label-free alignment cues against chance.

On a mixed-modal benchmark (every instance one modality, no pairs) the overall ACC of "cluster each
modality alone, then join the clusters" lies between a random one-to-one join and the label-matched
(oracle) join (``train.headroom``). A method without pairs can only climb that gap if some property
of the data, visible without labels, tells which cluster of one modality goes with which of the
other. This benchmark tries the usual geometric cues on the very per-modality k-means partitions
``train.headroom`` uses (k-means seeds 0..N-1, k = the number of classes, train rows; test rows by
``predict``), each choosing its own settings by its own objective, never by labels:

- ``size``: clusters matched by their size rank.
- ``centroid-gw``: Gromov–Wasserstein matching of the two k × k centroid distance matrices (each
  divided by its mean): ``scipy.optimize.quadratic_assignment`` (FAQ) from 50 random starts, the
  start with the lowest ``‖D_A[π, π] − D_B‖²`` kept.
- ``centroid-rank-gw``: the same on the distances' ranks (robust to each modality's distortions).
- ``w-procrustes``: Wasserstein–Procrustes (unsupervised embedding alignment): both modalities
  centred and scaled to unit mean norm, 500 train rows each; alternate an exact assignment between
  the two samples (``linear_sum_assignment``) and the orthogonal map that best fits it
  (``scipy.linalg.orthogonal_procrustes``), 15 rounds from 20 starts, the lowest transport cost
  kept; clusters matched by the distance between the first modality's centroids and the mapped
  centroids of the second. Needs one shared dimension.

Printed per store (test split, mean ± sample std over the seeds): the overall ACC of each join and
the share of the random→oracle gap it recovers (``random`` and ``oracle`` as ``train.headroom``:
the mean over 1,000 random joins, and each modality matched to the classes with the test labels),
next to ``train-labels`` (the join that the train labels make: what a perfect alignment cue would
give on test), how many of the k clusters a cue joins as ``train-labels`` does (about 1 of k is
chance), and the diagnostic that explains the result: the percentile of the ``train-labels``
join's centroid-GW objective among the 1,000 random joins (near 0 % would mean the objective
singles out the true alignment; near 50 % means it cannot tell it from chance). Labels are used
only to score and to read; every cue chooses its join without them.

    python bench/alignment.py                       # Wikipedia, Wikipedia CLR, UCI mfeat; 5 seeds
    python bench/alignment.py --recipes data/recipes/uci-mfeat.toml --seeds 20 --out bench/results/alignment.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before bench/, whose scripts share their names

# bench/ is on sys.path when a script runs
from _common import benchmark_store, mean_std, setup_logging

from train.headroom import class_cluster_counts, matched_rows

log = logging.getLogger("bench.alignment")
METHODS = ("random", "size", "centroid-gw", "centroid-rank-gw", "w-procrustes", "train-labels", "oracle")
N_RANDOM = 1000
QAP_STARTS = 50
WP_ROWS, WP_STARTS, WP_ROUNDS = 500, 20, 15


# -- joins --------------------------------------------------------------------------------------------
def joined_acc(t_a: np.ndarray, t_b: np.ndarray, perm: np.ndarray) -> float:
    """Overall ACC when cluster ``c`` of the second modality joins cluster ``perm[c]`` of the first
    (``t_*``: class × cluster counts of each modality's rows)."""
    joined = t_a.copy()
    joined[:, perm] += t_b
    return matched_rows(joined) / int(t_a.sum() + t_b.sum())


def oracle_perm(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """The label-matched join: both modalities' clusters matched to the classes, then to each other."""
    from train.metrics import hungarian

    cls_a, clu_a = hungarian(t_a)
    cls_b, clu_b = hungarian(t_b)
    to_a = dict(zip(cls_a.tolist(), clu_a.tolist()))
    perm = np.arange(t_a.shape[1])
    for cls, c in zip(cls_b.tolist(), clu_b.tolist()):
        perm[c] = to_a[cls]
    return perm


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    return np.stack([x[labels == j].mean(0) if np.any(labels == j) else np.zeros(x.shape[1]) for j in range(k)])


def _distances(c: np.ndarray, rank: bool) -> np.ndarray:
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import rankdata

    d = pdist(c)
    d = rankdata(d) if rank else d
    d = squareform(d)
    return d / d.mean()


def gw_objective(d_a: np.ndarray, d_b: np.ndarray, perm: np.ndarray) -> float:
    """``‖D_A[π, π] − D_B‖²``: how badly the join ``π`` (second modality's cluster → first's) distorts distances."""
    return float(np.sum((d_a[np.ix_(perm, perm)] - d_b) ** 2))


def centroid_gw(c_a: np.ndarray, c_b: np.ndarray, rng: np.random.Generator, rank: bool) -> np.ndarray:
    from scipy.optimize import quadratic_assignment

    d_a, d_b = _distances(c_a, rank), _distances(c_b, rank)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(QAP_STARTS):
        res = quadratic_assignment(d_b, d_a, method="faq", options={
            "maximize": True, "P0": "randomized", "rng": np.random.default_rng(int(rng.integers(2**31)))})
        loss = gw_objective(d_a, d_b, res.col_ind)
        if best is None or loss < best[0]:
            best = (loss, res.col_ind)
    assert best is not None
    return best[1]


def size_match(n_a: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    perm = np.empty(len(n_a), dtype=np.int64)
    perm[np.argsort(n_b, kind="stable")] = np.argsort(n_a, kind="stable")
    return perm


def w_procrustes(x_a: np.ndarray, x_b: np.ndarray, l_a: np.ndarray, l_b: np.ndarray, k: int,
                 rng: np.random.Generator) -> np.ndarray:
    from scipy.linalg import orthogonal_procrustes
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist
    from scipy.stats import special_ortho_group

    def norm(x: np.ndarray) -> np.ndarray:
        x = x - x.mean(0)
        return x / np.linalg.norm(x, axis=1).mean()

    z_a, z_b = norm(x_a), norm(x_b)
    n = min(WP_ROWS, len(z_a), len(z_b))
    s_a, s_b = z_a[rng.choice(len(z_a), n, replace=False)], z_b[rng.choice(len(z_b), n, replace=False)]
    d = z_a.shape[1]
    starts = [np.diag(rng.choice([-1.0, 1.0], d)) for _ in range(WP_STARTS // 2)]
    starts += [special_ortho_group.rvs(d, random_state=int(rng.integers(2**31))) for _ in range(WP_STARTS - len(starts))]
    best: tuple[float, np.ndarray] | None = None
    for w in starts:
        for _ in range(WP_ROUNDS):
            rows, cols = linear_sum_assignment(cdist(s_a, s_b @ w.T, "sqeuclidean"))
            r, _ = orthogonal_procrustes(s_b[cols], s_a[rows])  # s_b @ r ≈ s_a on the assigned pairs
            w = r.T
        cost = cdist(s_a, s_b @ w.T, "sqeuclidean")
        total = float(cost[linear_sum_assignment(cost)].sum())
        if best is None or total < best[0]:
            best = (total, w)
    assert best is not None
    c_a, c_b = _centroids(z_a, l_a, k), _centroids(z_b, l_b, k) @ best[1].T
    rows, cols = linear_sum_assignment(cdist(c_a, c_b))  # rows: first's clusters, cols: second's
    perm = np.empty(k, dtype=np.int64)
    perm[cols] = rows
    return perm


# -- one store ------------------------------------------------------------------------------------------
def run_store(data: Any, seeds: int) -> dict[str, Any]:
    import torch

    from train.baselines import modality_kmeans

    a, b = list(data.modalities)[:2]
    k = data.n_classes
    train, test = data.splits["train"], data.splits["test"]
    x = {m: train.x[m].cpu().numpy().astype(np.float64) for m in (a, b)}
    y_train = {m: train.y[m].cpu().numpy() for m in (a, b)}
    y_test = {m: test.y[m].cpu().numpy() for m in (a, b)}
    same_dim = x[a].shape[1] == x[b].shape[1]
    per_seed: list[dict[str, Any]] = []
    for seed in range(seeds):
        models = modality_kmeans(data, seed=seed)
        lab = {m: torch.as_tensor(models[m].labels_).cpu().numpy().astype(np.int64) for m in (a, b)}
        pred = {m: torch.as_tensor(models[m].predict(test.x[m])).cpu().numpy().astype(np.int64) for m in (a, b)}
        t_test = {m: class_cluster_counts(y_test[m], pred[m], k) for m in (a, b)}
        truth = oracle_perm(class_cluster_counts(y_train[a], lab[a], k), class_cluster_counts(y_train[b], lab[b], k))
        rng = np.random.default_rng(seed)
        c = {m: _centroids(x[m], lab[m], k) for m in (a, b)}
        perms: dict[str, np.ndarray] = {"train-labels": truth, "size": size_match(np.bincount(lab[a], minlength=k),
                                                                                  np.bincount(lab[b], minlength=k))}
        timings: dict[str, float] = {}
        for name, rank in (("centroid-gw", False), ("centroid-rank-gw", True)):
            t0 = time.perf_counter()
            perms[name] = centroid_gw(c[a], c[b], rng, rank)
            timings[name] = time.perf_counter() - t0
        if same_dim:
            t0 = time.perf_counter()
            perms["w-procrustes"] = w_procrustes(x[a], x[b], lab[a], lab[b], k, rng)
            timings["w-procrustes"] = time.perf_counter() - t0
        randoms = [rng.permutation(k) for _ in range(N_RANDOM)]
        row: dict[str, Any] = {"seed": seed, "timings": timings}
        row["acc"] = {name: joined_acc(t_test[a], t_test[b], p) for name, p in perms.items()}
        row["acc"]["random"] = float(np.mean([joined_acc(t_test[a], t_test[b], p) for p in randoms]))
        row["acc"]["oracle"] = (matched_rows(t_test[a]) + matched_rows(t_test[b])) / int(t_test[a].sum() + t_test[b].sum())
        row["correct"] = {name: int(np.sum(p == truth)) for name, p in perms.items()}
        d_a, d_b = _distances(c[a], False), _distances(c[b], False)
        truth_loss = gw_objective(d_a, d_b, truth)
        row["truth_gw_percentile"] = float(np.mean([gw_objective(d_a, d_b, p) < truth_loss for p in randoms]))
        per_seed.append(row)
        log.info("seed %d: %s", seed, {m: round(v, 3) for m, v in row["acc"].items()})
    return {"modalities": [a, b], "k": k, "seeds": per_seed}


def table(results: dict[str, Any]) -> str:
    head = ["dataset", *METHODS, "train-labels join's GW-objective percentile"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        per = res["seeds"]
        rnd = statistics.fmean(r["acc"]["random"] for r in per)
        orc = statistics.fmean(r["acc"]["oracle"] for r in per)
        cells = [name]
        for m in METHODS:
            vals = [r["acc"][m] for r in per if m in r["acc"]]
            if not vals:
                cells.append("—")
                continue
            cell = mean_std(vals)
            if m not in ("random", "oracle", "train-labels"):
                gap = (statistics.fmean(vals) - rnd) / (orc - rnd) if orc > rnd else float("nan")
                cell += f" ({gap:+.2f} of gap; {statistics.fmean(r['correct'][m] for r in per):.1f}/{res['k']} right)"
            cells.append(cell)
        cells.append(f"{100 * statistics.fmean(r['truth_gw_percentile'] for r in per):.0f} %")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", type=Path, default=[
        REPO / "data" / "recipes" / f"{r}.toml" for r in ("wikipedia", "wikipedia-clr", "uci-mfeat")])
    p.add_argument("--seeds", type=int, default=5, help="k-means seeds (the benchmark store stays the recipe's)")
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-variants")
    p.add_argument("--out", type=Path, help="also write the per-seed figures as JSON here")
    args = p.parse_args(argv)
    setup_logging()

    from train.data import BenchmarkData

    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for path in args.recipes:
        name, root, _ = benchmark_store(path, args.work)
        log.info("%s", name)
        results[name] = run_store(BenchmarkData.from_store(root / "unpair", device="cpu"), args.seeds)
    print(f"\ntest ACC, mean ± std over k-means seeds 0..{args.seeds - 1} ({time.perf_counter() - t0:.0f} s); "
          "gap = share of the random→oracle gap recovered; right = clusters joined as the train labels join them (chance: 1)\n")
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
