"""Benchmark: the retrieval methods side by side on one benchmark store, several seeds, final epoch.

Builds each recipe's benchmark store through the real stages (``mixbench run --until unpair``),
then trains every method configuration with seeds 0..N-1 through the train stage and prints one
table per recipe: mAP I→T, T→I and their mean, mean ± std over seeds, with the mean's difference
to CCA (the anchor), and writes the per-seed figures as JSON. Also draws the PR curves of seed 0.

    python bench/retrieval.py                                   # Wikipedia, 5 seeds
    python bench/retrieval.py --recipes data/recipes/uci-mfeat-retrieval.toml --seeds 5
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# the packages first: bench/embed.py would shadow the embed package
sys.path[:] = [str(REPO)] + [p for p in sys.path if p != str(REPO)]
if str(REPO / "bench") not in sys.path:
    sys.path.append(str(REPO / "bench"))

from _common import benchmark_store, mean_std, setup_logging  # noqa: E402

log = logging.getLogger("bench.retrieval")

#: (row name, [train] method, method_options)
CONFIGS = [
    ("cca", "retrieval-cca", {}),
    ("hash 16 bits", "retrieval-hash", {"bits": 16}),
    ("hash 32 bits", "retrieval-hash", {"bits": 32}),
    ("hash 64 bits", "retrieval-hash", {"bits": 64}),
    ("two-tower (pairs)", "retrieval-twotower", {}),
    ("two-tower (pairs + labels)", "retrieval-twotower", {"labels": True}),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=[str(REPO / "data/recipes/wikipedia-retrieval.toml")])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--configs", help="comma-separated row names to run (default: all)")
    ap.add_argument("--work", default=str(REPO / "out" / "bench-retrieval"))
    ap.add_argument("--out", help="JSON with every figure")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    setup_logging()
    import torch

    import train
    from train.retrieval.evaluate import RankingScores
    from train.retrieval.methods import pr_plot

    torch.set_num_threads(1)  # small models: one thread is fastest on a shared 2-core machine
    chosen = [c for c in CONFIGS if not args.configs or c[0] in args.configs.split(",")]
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for recipe_path in args.recipes:
        name, root, _ = benchmark_store(Path(recipe_path), Path(args.work))
        results[name] = {}
        curves = {}
        for row, method, opts in chosen:
            per_seed = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                out = root / "runs" / row.replace(" ", "_") / f"s{seed}"
                res = train.train(root / "unpair", out, {"method": method, "method_options": opts, "seed": seed,
                                                         "device": args.device, "plots": False}, overwrite=True)
                m = res["metrics"]["methods"][method]["test"]
                per_seed.append({"map_i2t": m["map_i2t"], "map_t2i": m["map_t2i"], "map_mean": m["map_mean"],
                                 "map_at_r_mean": m["map_at_r_mean"], "seconds": time.perf_counter() - t0})
                log.info("%s | %s | seed %d: I→T %.4f T→I %.4f (%.1f s)", name, row, seed, m["map_i2t"], m["map_t2i"],
                         per_seed[-1]["seconds"])
                if seed == 0:
                    pr = res["metrics"]["retrieval"]["pr"]
                    curves[row] = {d: RankingScores(m[f"map_{d}"], m[f"map_at_r_{d}"], {}, pr[d]["recall"],
                                                    pr[d]["precision"], pr[d]["cutoff"], 0, 0, 0) for d in pr}
            results[name][row] = per_seed
        base = statistics.fmean(r["map_mean"] for r in results[name]["cca"]) if "cca" in results[name] else None
        print(f"\n{name}: mAP over the whole ranking, mean ± std over {args.seeds} seed(s), final epoch\n")
        print("| method | mAP I→T | mAP T→I | mean | Δ mean vs CCA | mAP@R mean | s / seed |")
        print("|---|---|---|---|---|---|---|")
        for row, per_seed in results[name].items():
            vals = {k: [r[k] for r in per_seed] for k in per_seed[0]}
            delta = "—" if base is None or row == "cca" else f"{statistics.fmean(vals['map_mean']) - base:+.3f}"
            print(f"| {row} | {mean_std(vals['map_i2t'])} | {mean_std(vals['map_t2i'])} | {mean_std(vals['map_mean'])} | "
                  f"{delta} | {mean_std(vals['map_at_r_mean'])} | {statistics.fmean(vals['seconds']):.1f} |")
        stem = Path(args.out).stem + ("" if len(args.recipes) == 1 else f"-{root.name}") if args.out else ""
        plot = Path(args.out).with_name(stem + "-pr.png") if args.out else root / "pr.png"
        pr_plot(curves, plot, f"{name}: precision-recall, seed 0")
        print(f"\nPR curves: {plot}")
    if args.out:
        Path(args.out).write_text(json.dumps({"seeds": args.seeds, "configs": CONFIGS, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
