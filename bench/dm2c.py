"""Wall time and accuracy of the full faithful DM2C protocol on the Wikipedia benchmark.

The benchmark is built through the real stages, as the default recipe does: prep (data/wikipedia)
→ embed (PCA to 10 dims, whiten = the reference's ``std10`` input) → unpair (ratio 1, test_ratio 1,
drop, random); or ``--store`` names an existing benchmark store. Then, for each seed, the whole
protocol (AE pre-training 2 × 150 epochs, 220 joint epochs with an evaluation every epoch) runs
in-process, and the script prints the time of each part (pre-training per modality, joint training
steps, evaluation embedding, k-means, metrics), the final-epoch test ACC / NMI (mean ± sample std
over seeds), and the speed-up over the reference code's measured time on that machine class
(research/reference-dm2c.md §5: 366.7 s on an H100 machine; §10: 428.8 s in-process on a 2-core CPU).

    python bench/dm2c.py                      # 1 seed, full protocol, device auto
    python bench/dm2c.py --seeds 3 --out bench-dm2c.json
    python bench/dm2c.py --quick              # short schedule (a smoke run; timings not comparable)

Run it alone on the machine: timings taken while other work loads the cores mean nothing.
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.dm2c")

REFERENCE_SECONDS = {"cuda": 366.7, "cpu": 428.8}
"""The reference code's full protocol, one seed, in-process (reference-dm2c.md §5 and §10)."""
REFERENCE_ACC = (0.319, 0.020)
REFERENCE_NMI = (0.172, 0.022)
PARTS = ("pretrain-image", "pretrain-text", "joint-train", "eval-embed", "kmeans", "metrics")
QUICK = {"pretrain_epochs": 10, "epochs": 10, "n_init": 5}


def build_benchmark(work: Path, wikipedia: Path) -> Path:
    """prep → embed (10-d, whiten) → unpair (ratio 1, test_ratio 1, drop, random) under ``work``."""
    import embed
    import prep
    import unpair

    prep.prepare({"adapter": "wikipedia", "root": str(wikipedia)}, work / "prep")
    embed.embed(work / "prep", work / "embed", {"dim": 10, "whiten": True})
    unpair.unpair(work / "embed", work / "unpair",
                  {"ratio": 1.0, "test_ratio": 1.0, "mode": "drop", "strategy": "random"})
    return work / "unpair"


def run_seed(data: Any, seed: int, device: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from train import DM2C

    model = DM2C(seed=seed, device=device, **overrides)
    t0 = time.perf_counter()
    model.fit(data)
    wall = time.perf_counter() - t0
    test = model.metrics_.get("test", model.metrics_["train"])
    return {"seed": seed, "seconds": wall, "parts": {k: model.timings_.get(k, 0.0) for k in PARTS},
            "test": test, "train": model.metrics_["train"], "skipped_batches": model.trainer_.skipped_batches,
            "threads": model.trainer_.intra_op_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, help="an existing benchmark store (default: build one under --work)")
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-dm2c", help="where the benchmark stores are built")
    p.add_argument("--wikipedia", type=Path, default=REPO / "data" / "wikipedia", help="the raw Wikipedia folder")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quick", action="store_true", help=f"short schedule {QUICK} (smoke run)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    t0 = time.perf_counter()
    import torch
    import torch._dynamo

    import train.kmeans
    import train.metrics  # noqa: F401
    from mixbench.device import resolve_device
    from train.data import BenchmarkData
    from train.stage import device_name

    import_s = time.perf_counter() - t0

    store = args.store or build_benchmark(args.work, args.wikipedia)
    device = resolve_device(args.device)
    data = BenchmarkData.from_store(store, device=device)
    overrides = dict(QUICK) if args.quick else {}
    rows = {s: {m: t.n(m) for m in data.modalities} for s, t in data.splits.items()}
    print(f"benchmark: {store}  rows {rows}  dims {data.dims}")
    print(f"device: {device_name(device)}  torch {torch.__version__}  schedule: "
          f"{'quick ' + str(QUICK) if args.quick else 'full (150 + 150 pre-training, 220 joint, eval every epoch)'}")

    results = []
    for seed in range(args.seeds):
        r = run_seed(data, seed, str(device), overrides)
        results.append(r)
        parts = "  ".join(f"{k} {v:.2f}" for k, v in r["parts"].items())
        print(f"seed {seed}: {r['seconds']:.2f} s  ({parts})  test ACC {r['test']['acc']:.4f} NMI {r['test']['nmi']:.4f}")

    secs = [r["seconds"] for r in results]
    accs = [r["test"]["acc"] for r in results]
    nmis = [r["test"]["nmi"] for r in results]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
    ref = REFERENCE_SECONDS["cuda" if device.type == "cuda" else "cpu"]
    mean_s = statistics.fmean(secs)
    print()
    print(f"protocol wall time: {mean_s:.2f} s per seed (min {min(secs):.2f}); imports {import_s:.2f} s once")
    print(f"final-epoch test ACC {statistics.fmean(accs):.4f} ± {sd(accs):.4f}, NMI {statistics.fmean(nmis):.4f} ± {sd(nmis):.4f}"
          f"  (reference: ACC {REFERENCE_ACC[0]} ± {REFERENCE_ACC[1]}, NMI {REFERENCE_NMI[0]} ± {REFERENCE_NMI[1]})")
    if args.quick:
        print("quick schedule: the ratio below is not a comparison with the reference protocol")
    total = mean_s + import_s  # the reference's figure includes its imports (4-5 s)
    print(f"speed-up vs the reference on this machine class ({'H100 machine' if device.type == 'cuda' else '2-core CPU'}, "
          f"{ref} s incl. imports): {ref / total:.1f}x (protocol + imports {total:.2f} s)  [device: {device_name(device)}]")
    if args.out:
        args.out.write_text(json.dumps({
            "store": str(store), "device": device_name(device), "quick": args.quick, "overrides": overrides,
            "seeds": results, "mean_seconds": mean_s, "import_seconds": import_s, "reference_seconds": ref,
            "speedup": ref / total,
            "test_acc": [statistics.fmean(accs), sd(accs)], "test_nmi": [statistics.fmean(nmis), sd(nmis)],
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
