"""Benchmark: mAP@all over a Hamming ranking, ours (train.retrieval.evaluate) against the per-query
loop of the DCMH/DADH code bases, same codes, same labels, same run.

The baseline is our own copy of that loop's structure (DADH ``utils.calc_map_k`` with ``k = None``,
DCMH ``calc_map``): for each query, relevance = label inner product > 0; skip a query without a
relevant item (it still counts in the mean); Hamming distances ``0.5 · (K − q · Bᵀ)``; sort them;
gather the relevance in ranked order; ``mean(count / position)`` over the relevant items; finally
divide by the number of queries. Two changes, both so that the values are well defined: the sort
is **stable** (the originals use an unstable sort, whose order among tied distances is arbitrary,
so their mAP depends on the sort's implementation) and the per-query mean is float64 (theirs is
float32). Ours must then give the same mAP to 1e-6 and the same per-query APs.

Data: multi-hot labels over 24 classes (MIRFlickr-like, each class on with probability 0.15, at
least one per row) and K-bit codes that depend on the labels (the sign of a random projection of
the labels plus Gaussian noise), so that mAP is far from trivial and ties are everywhere.

    python bench/map.py                                   # 10,000 × 200,000, 64 bits; baseline on 1,000 queries
    python bench/map.py --baseline-queries 10000          # the baseline on every query too (20-35 min on 2 cores)
    python bench/map.py --device cuda                     # ours on the GPU (baseline as the originals: same device)

The baseline's time is measured on the first ``--baseline-queries`` queries and scaled to all
queries (its cost is the same for every query: one matrix-vector product and one sort of the
whole database); ours is timed on all queries, and also on the baseline's subset to compare values.
"Ours" is ``rank_scores`` with its default engine (``auto``: on a CPU the numpy engine, popcounts
and a radix sort per query; on a GPU the torch engine); the torch engine is also timed on the
baseline's subset and its APs compared, so that both code paths are checked at full size.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mixbench.device import resolve_device  # noqa: E402
from train.retrieval.evaluate import rank_scores  # noqa: E402

log = logging.getLogger("bench.map")


def make_data(n_query: int, n_db: int, bits: int, classes: int, seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    n = n_query + n_db
    labels = (torch.rand(n, classes, generator=g) < 0.15).to(torch.float32)
    empty = labels.sum(1) == 0
    labels[empty, torch.randint(0, classes, (int(empty.sum()),), generator=g)] = 1
    proj = torch.randn(classes, bits, generator=g)
    codes = torch.sign(labels @ proj + 1.5 * torch.randn(n, bits, generator=g))
    codes[codes == 0] = 1
    return (codes[:n_query].to(device), codes[n_query:].to(device),
            labels[:n_query].to(device), labels[n_query:].to(device))


def baseline_map(q_b: torch.Tensor, r_b: torch.Tensor, q_l: torch.Tensor, r_l: torch.Tensor,
                 stable: bool = True) -> tuple[float, torch.Tensor]:
    """The per-query loop (our copy of its structure; stable sort, float64 mean). Returns mAP and per-query AP.
    ``stable=False``: the originals' unstable sort (ties in whatever order torch leaves them)."""
    num_query = q_l.shape[0]
    bits = q_b.shape[1]
    ap = torch.zeros(num_query, dtype=torch.float64)
    total = 0.0
    for i in range(num_query):
        gnd = (q_l[i].unsqueeze(0).mm(r_l.t()) > 0).to(torch.float32).squeeze(0)
        tsum = int(torch.sum(gnd))
        if tsum == 0:
            continue
        hamm = 0.5 * (bits - q_b[i].unsqueeze(0).mm(r_b.t())).squeeze(0)
        ind = torch.sort(hamm, stable=stable).indices
        gnd = gnd[ind]
        count = torch.arange(1, tsum + 1, dtype=torch.float64, device=gnd.device)
        tindex = torch.nonzero(gnd).squeeze(1).to(torch.float64) + 1.0
        ap[i] = float(torch.mean(count / tindex))
        total += float(ap[i])
    return total / num_query, ap


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--database", type=int, default=200_000)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--classes", type=int, default=24)
    p.add_argument("--baseline-queries", type=int, default=1_000, help="queries the baseline loop runs on (time scaled)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    device = resolve_device(args.device)
    q_b, r_b, q_l, r_l = make_data(args.queries, args.database, args.bits, args.classes, args.seed, device)
    nb = min(args.baseline_queries, args.queries)

    rank_scores(q_b[:8], r_b, q_l[:8], r_l, ks=(), pr_points=1)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    ours_sub = rank_scores(q_b[:nb], r_b, q_l[:nb], r_l, ks=(), pr_points=1, keep_ap=True)
    _sync(device)
    t_ours_sub = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = rank_scores(q_b, r_b, q_l, r_l, ks=(), pr_points=1)
    _sync(device)
    t_ours = time.perf_counter() - t0
    log.info("ours: mAP %.6f over %d queries in %.2f s", ours.map, args.queries, t_ours)

    t0 = time.perf_counter()
    torch_sub = rank_scores(q_b[:nb], r_b, q_l[:nb], r_l, ks=(), pr_points=1, keep_ap=True, engine="torch")
    _sync(device)
    t_torch_sub = time.perf_counter() - t0
    log.info("torch engine: %d queries in %.2f s", nb, t_torch_sub)

    t0 = time.perf_counter()
    base_map, base_ap = baseline_map(q_b[:nb], r_b, q_l[:nb], r_l)
    _sync(device)
    t_base_sub = time.perf_counter() - t0
    t_base = t_base_sub * args.queries / nb
    nu = min(nb, 200)
    unstable_map, _ = baseline_map(q_b[:nu], r_b, q_l[:nu], r_l, stable=False)
    stable_map_nu = float(base_ap[:nu].mean())
    diff_map = abs(base_map - ours_sub.map)
    diff_ap = float((base_ap - ours_sub.ap).abs().max())
    diff_ap_torch = float((base_ap - torch_sub.ap).abs().max())
    result = {
        "queries": args.queries, "database": args.database, "bits": args.bits, "classes": args.classes,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "baseline_queries": nb, "baseline_s_measured": t_base_sub, "baseline_s_all_queries": t_base,
        "baseline_scaled": nb < args.queries,
        "engine": "numpy" if device.type == "cpu" else "torch",
        "ours_s_all_queries": t_ours, "ours_s_baseline_queries": t_ours_sub,
        "torch_engine_s_baseline_queries": t_torch_sub, "max_abs_diff_ap_torch_engine": diff_ap_torch,
        "speedup": t_base / t_ours, "speedup_same_queries": t_base_sub / t_ours_sub,
        "map_ours_all": ours.map, "map_ours_subset": ours_sub.map, "map_baseline_subset": base_map,
        "abs_diff_map": diff_map, "max_abs_diff_ap": diff_ap,
        "unstable_sort_queries": nu, "map_unstable_sort": unstable_map, "map_stable_sort": stable_map_nu,
    }
    print(json.dumps(result, indent=2))
    print(f"\nmAP@all, {args.queries:,} queries × {args.database:,} items, {args.bits} bits, {device}:")
    print(f"  ours {t_ours:.2f} s; baseline loop {t_base:.1f} s"
          + (f" (measured on {nb:,} queries: {t_base_sub:.1f} s, scaled)" if nb < args.queries else "")
          + f" → {t_base / t_ours:.1f}× faster; same {nb:,} queries: {t_base_sub / t_ours_sub:.1f}×")
    print(f"  |ΔmAP| = {diff_map:.2e}, max |ΔAP| per query = {diff_ap:.2e} (target ≤ 1e-6)")
    print(f"  engine='torch' (flat sort per chunk) on the same {nb:,} queries: {t_torch_sub:.1f} s, "
          f"max |ΔAP| {diff_ap_torch:.2e}")
    print(f"  the originals' unstable sort on {nu} queries: mAP {unstable_map:.6f} against {stable_map_nu:.6f} with ties "
          f"by index (Δ {unstable_map - stable_map_nu:+.2e}: the tie order is part of the figure)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if diff_map <= 1e-6 and diff_ap <= 1e-6 and diff_ap_torch <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
