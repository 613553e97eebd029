"""Benchmark: TAC's / DXMC's clustering methods (concat-kmeans, tac, dxmc) on the real UCI mfeat
views (fou + kar as the two halves of each row, raw features, 1,600 train / 400 test rows),
paired and with part of the training pairs broken, over seeds; final epoch, TAC's defaults.

    python bench/heads.py                                   # ratios 0 and 0.5, seeds 0-4
    python bench/heads.py --ratios 0,0.5,0.8 --seeds 3 --out bench/results/heads-uci.json

The test split keeps its pairs (TAC's setting); with broken training pairs the heads train on the
linked ones and every row (image, text, linked or not) is labelled and scored, as
`train.tac` documents. The table gives test ACC and NMI of every row and of the first view's rows
alone (`-image`, TAC's figure), mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]  # bench/embed.py shadows embed
sys.path.insert(0, str(_HERE))
from _common import mean_std, setup_logging  # noqa: E402

sys.path.remove(str(_HERE))

METHODS = ("concat-kmeans", "tac", "dxmc")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratios", default="0,0.5")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    setup_logging()
    import prep
    import train
    import unpair

    repo = _HERE.parent
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="mixbench-bench-heads-") as work:
        root = Path(work)
        prep.prepare({"adapter": "uci-mfeat", "root": str(repo / "data" / "uci-mfeat"), "views": ["fou", "kar"]},
                     root / "prep")
        for ratio in (float(r) for r in args.ratios.split(",")):
            for seed in range(args.seeds):
                store = root / f"unpair-{ratio}-{seed}"
                unpair.unpair(root / "prep", store, {"ratio": ratio, "test_ratio": 0.0, "seed": seed})
                for method in args.methods.split(","):
                    r = train.train(store, root / f"run-{method}-{ratio}-{seed}",
                                    {"method": method, "seed": seed, "device": "cpu", "plots": False,
                                     "baselines": False})
                    for row, m in r["metrics"]["methods"].items():
                        cell = results.setdefault(f"r={ratio:g}", {}).setdefault(row, {})
                        for k in ("acc", "nmi"):
                            cell.setdefault(k, []).append(m["test"][k])
    print("| UCI fou+kar | method (rows) | test ACC | test NMI |\n|---|---|---|---|")
    for ratio, rows in results.items():
        for row, cell in rows.items():
            print(f"| {ratio} | {row} | {mean_std(cell['acc'])} | {mean_std(cell['nmi'])} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
