"""Faithful DM2C against the named variants, same data, same run: test ACC / NMI, mean ± sample std
over seeds, final epoch (no epoch is picked with test labels), and the paired gain per seed.

For each recipe the benchmark store is built through the real stages (``mixbench run --until
unpair``), then every variant trains on it with seeds 0..N-1 (the training seed; the benchmark
store stays the recipe's). The variants train with the same schedule as faithful DM2C.

    python bench/variants.py                                  # Wikipedia + UCI mfeat, 5 seeds
    python bench/variants.py --recipes data/recipes/wikipedia.toml --seeds 3
    python bench/variants.py --quick                          # short schedule (a smoke run)
    python bench/variants.py --recipes data/recipes/uci-mfeat.toml --ratio 0.5,0.8 \
        --variants faithful,dm2c-anchor,dm2c-linked --kmeans-linked   # partly linked benchmarks

``--ratio`` overrides the recipe's ``[unpair] ratio`` (one benchmark per value, named
``<recipe> r=<ratio>``): below 1 some train pairs stay linked, which ``dm2c-linked`` uses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before bench/, whose scripts share their names

# bench/ is on sys.path when a script runs
from _common import benchmark_store, mean_std, setup_logging

log = logging.getLogger("bench.variants")
QUICK = {"pretrain_epochs": 3, "epochs": 4, "n_init": 3}


def run(recipes: list[Path], variants: list[str], seeds: int, work: Path, quick: bool, device: str,
        ratios: list[float] | None = None, kmeans_linked: bool = False) -> dict[str, Any]:
    import train
    from mixbench.run import stage_configs
    from train.baselines import kmeans_baselines
    from train.data import BenchmarkData

    results: dict[str, Any] = {}
    for path, ratio in [(p, r) for p in recipes for r in (ratios or [None])]:
        name, root, recipe = benchmark_store(path, work, ratio)
        base = stage_configs(recipe)["train"]
        per: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        data = BenchmarkData.from_store(root / "unpair") if kmeans_linked else None
        for seed in range(seeds):
            for variant in variants:
                cfg = base.replace(variant=variant, seed=seed, device=device, baselines=False, plots=False,
                                   **(QUICK if quick else {}))
                res = train.train(root / "unpair", root / "train" / variant / f"s{seed}", cfg, overwrite=True)
                test = res["metrics"]["methods"]["dm2c"]["test"]
                per[variant].append({"acc": test["acc"], "nmi": test["nmi"]})
                log.info("%s %s seed %d: test ACC %.4f NMI %.4f", name, variant, seed, test["acc"], test["nmi"])
            if data is not None:  # the k-means baseline that uses the links, same seed (absent at ratio 1)
                linked = kmeans_baselines(data, seed=seed, n_init=base.n_init).get("kmeans-linked")
                if linked is not None:
                    per.setdefault("kmeans-linked", []).append({"acc": linked["test"]["acc"], "nmi": linked["test"]["nmi"]})
        results[name] = per
    return results


def table(results: dict[str, Any], variants: list[str]) -> str:
    base = variants[0]
    lines = ["| dataset | variant | test ACC | test NMI | ΔACC vs " + base + " (paired) |", "|---|---|---|---|---|"]
    for name, per in results.items():
        for v in [*variants, *(m for m in per if m not in variants)]:
            accs = [r["acc"] for r in per[v]]
            nmis = [r["nmi"] for r in per[v]]
            delta = [a - b["acc"] for a, b in zip(accs, per[base])]
            lines.append(f"| {name} | {v} | {mean_std(accs)} | {mean_std(nmis)} | {'—' if v == base else mean_std(delta)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", type=Path,
                   default=[REPO / "data" / "recipes" / "wikipedia.toml", REPO / "data" / "recipes" / "uci-mfeat.toml"])
    p.add_argument("--variants", default="faithful,dm2c-anchor", help="comma-separated; the first is the baseline")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-variants")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help=f"short schedule {QUICK}")
    p.add_argument("--ratio", help="comma-separated [unpair] ratios overriding the recipe's (one benchmark each)")
    p.add_argument("--kmeans-linked", action="store_true",
                   help="also report the kmeans-linked baseline (per-modality k-means joined by the linked pairs)")
    p.add_argument("--out", type=Path, help="also write the per-seed results as JSON here")
    args = p.parse_args(argv)
    setup_logging()
    variants = [v for v in args.variants.split(",") if v]
    ratios = [float(r) for r in args.ratio.split(",")] if args.ratio else None
    results = run(args.recipes, variants, args.seeds, args.work, args.quick, args.device, ratios, args.kmeans_linked)
    print(f"\nfinal-epoch test metrics, seeds 0..{args.seeds - 1}{' (QUICK schedule)' if args.quick else ''}\n")
    print(table(results, variants))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
