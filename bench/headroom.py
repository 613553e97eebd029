"""How much a mixed-modal benchmark lets a method gain (``train.headroom``), next to measured results.

For each recipe the benchmark store is built through the real stages (``mixbench run --until unpair``),
each modality is clustered alone with k-means (seeds 0..N-1), and the test split's per-modality ACC,
the overall ACC under a random and under the label-matched (oracle) cross-modal alignment, and the
supervised linear accuracy are printed as mean ± sample std over the seeds. With ``--variants`` (the
JSON ``bench/variants.py --out`` writes) the measured final-epoch test ACC of each variant is printed
beside them, so a result can be read against the alignment it implies.

    python bench/headroom.py                                      # Wikipedia + UCI mfeat, 5 seeds
    python bench/headroom.py --recipes data/recipes/{wikipedia,wikipedia-clr,uci-mfeat}.toml \
        --variants bench/results/variants.json bench/results/variants-wikipedia-clr.json --out bench/results/headroom.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before bench/, whose scripts share their names

# bench/ is on sys.path when a script runs
from _common import benchmark_store, mean_std, setup_logging

log = logging.getLogger("bench.headroom")
KEYS = ("aligned_random", "aligned_oracle", "supervised")


def run(recipes: list[Path], seeds: int, work: Path, device: str) -> dict[str, Any]:
    from train.data import BenchmarkData
    from train.headroom import headroom

    results: dict[str, Any] = {}
    for path in recipes:
        name, root, _ = benchmark_store(path, work)
        data = BenchmarkData.from_store(root / "unpair", device="cpu" if device == "auto" else device)
        per = [headroom(data, seed=s)["test"] for s in range(seeds)]
        results[name] = {"modalities": list(data.modalities), "test": per}
        log.info("%s: %s", name, {k: round(statistics.fmean(r[k] for r in per), 4) for k in per[0]})
    return results


def table(results: dict[str, Any], variants: dict[str, Any] | None) -> str:
    names = sorted({v for per in (variants or {}).values() for v in per})
    head = ["dataset"] + [f"ACC {m} alone" for m in ("first", "second")] + ["random alignment", "oracle alignment",
                                                                            "supervised (labels)"]
    head += [f"measured: {v}" for v in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        per = res["test"]
        cells = [name] + [f"{m}: {mean_std([r[f'acc_{m}'] for r in per])}" for m in res["modalities"]]
        cells += [mean_std([r[k] for r in per]) for k in KEYS]
        measured = (variants or {}).get(name, {})
        cells += [mean_std([r["acc"] for r in measured[v]]) if v in measured else "—" for v in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", type=Path,
                   default=[REPO / "data" / "recipes" / "wikipedia.toml", REPO / "data" / "recipes" / "uci-mfeat.toml"])
    p.add_argument("--seeds", type=int, default=5, help="k-means seeds (the benchmark store stays the recipe's)")
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-variants")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", type=Path, nargs="+", default=[],
                   help="per-seed variant results (bench/variants.py --out files) to print beside")
    p.add_argument("--out", type=Path, help="also write the per-seed headroom figures as JSON here")
    args = p.parse_args(argv)
    setup_logging()
    results = run(args.recipes, args.seeds, args.work, args.device)
    variants = {name: per for path in args.variants for name, per in json.loads(path.read_text()).items()} or None
    print(f"\ntest split, mean ± std over k-means seeds 0..{args.seeds - 1} (measured: final-epoch test ACC)\n")
    print(table(results, variants))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
