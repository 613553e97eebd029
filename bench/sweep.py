"""The README's 30-cell Wikipedia sweep, timed, beside one solo seed of the full faithful protocol
measured in the same run on the same machine (the unit that makes sweep times comparable across
processors).

    python bench/sweep.py                      # 5 ratios x 2 strategies x 3 seeds, --jobs 2 --batched, eval_every 0
    python bench/sweep.py --one-by-one         # and the same sweep one cell at a time, every epoch evaluated
    python bench/sweep.py --device cuda        # on a GPU (bench/gpu.sh runs it)

Order: one solo seed (``mixbench train`` on the recipe's own store, every epoch evaluated: the
faithful protocol), then the batched sweep (``mixbench.sweep.run_sweep(..., jobs, batched=True)``
with ``[train] eval_every = 0``: the final figures are those of every-epoch evaluation, see
``train.dm2c.FaithfulTrainer.next_kmeans_seed``), then, with ``--one-by-one``, the sweep cell by
cell with every epoch evaluated (its table is the batched one's up to the stacked runs' float
rounding). Prints each wall time, the sweep in solo-seed units, and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from _common import benchmark_store, setup_logging  # noqa: E402

log = logging.getLogger("bench.sweep")


def solo_seed(recipe: Path, work: Path, device: str) -> dict[str, Any]:
    """One seed of the recipe's own training (the full faithful protocol), timed in this process."""
    from train import train

    _, root, rec = benchmark_store(recipe, work)
    cfg = rec.section("train") | {"device": device, "seed": 0}
    t0 = time.perf_counter()
    m = train(root / "unpair", work / "solo-train", cfg, overwrite=True)["metrics"]
    return {"seconds": time.perf_counter() - t0, "test_acc": m["methods"]["dm2c"]["test"]["acc"]}


def timed_sweep(a: argparse.Namespace, out: Path, *, batched: bool, eval_every: int, jobs: int) -> dict[str, Any]:
    from mixbench.sweep import run_sweep

    overrides = {"train": {"eval_every": eval_every, "device": a.device}}
    t0 = time.perf_counter()
    res = run_sweep(a.recipe, ratios=a.ratios, strategies=a.strategies, seeds=a.seeds, out=out, jobs=jobs,
                    batched=batched, overrides=overrides)
    seconds = time.perf_counter() - t0
    accs = [c["methods"]["dm2c"]["test"]["acc"] for c in res["cells"] if "dm2c" in c["methods"]]
    return {"seconds": seconds, "cells": len(res["cells"]), "jobs": jobs, "batched": batched, "eval_every": eval_every,
            "dm2c_test_acc": accs, "table": res["table"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=REPO / "data" / "recipes" / "wikipedia.toml")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--strategies", nargs="+", default=["random", "loss-highest"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="cells (batched: stacked programs) at a time")
    p.add_argument("--device", default="cpu")
    p.add_argument("--one-by-one", action="store_true",
                   help="also the sweep cell by cell with every epoch evaluated (the slow baseline; about 20 min on 2 cores)")
    p.add_argument("--no-solo", action="store_true", help="skip the solo-seed unit")
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-sweep")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep-cpu.json")
    a = p.parse_args(argv)
    setup_logging()
    os.environ.setdefault("MPLBACKEND", "Agg")
    result: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                              "cores": os.cpu_count(), "load_before": os.getloadavg()}
    if not a.no_solo:
        result["solo_seed"] = solo_seed(a.recipe, a.work / "solo", a.device)
        log.info("one solo seed, full protocol: %.1f s", result["solo_seed"]["seconds"])
    result["batched"] = timed_sweep(a, a.work / "batched", batched=True, eval_every=0, jobs=a.jobs)
    log.info("sweep, %d cells, --jobs %d --batched, eval_every 0: %.1f s", result["batched"]["cells"], a.jobs,
             result["batched"]["seconds"])
    if a.one_by_one:
        result["one_by_one"] = timed_sweep(a, a.work / "one-by-one", batched=False, eval_every=1, jobs=a.jobs)
        log.info("sweep, one cell at a time per job, every epoch evaluated: %.1f s", result["one_by_one"]["seconds"])
    result["load_after"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["batched"]["table"])
    print(f"\n| {a.device}, {os.cpu_count()} cores | wall time | in solo seeds |\n|---|---|---|")
    unit = result.get("solo_seed", {}).get("seconds")
    for key, label in (("solo_seed", "one solo seed, full protocol"), ("batched", f"sweep --jobs {a.jobs} --batched"),
                       ("one_by_one", f"sweep --jobs {a.jobs}, one by one, every epoch evaluated")):
        if key in result:
            s = result[key]["seconds"]
            print(f"| {label} | {s:.1f} s | {s / unit:.2f}× |" if unit else f"| {label} | {s:.1f} s | — |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
