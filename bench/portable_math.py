"""What it costs to make a seed reproduce on any x86-64 CPU, and whether it does.

The train stage runs the default recipe's training (faithful DM2C, full schedule, seed 0) on the
Wikipedia benchmark store, each time in a fresh process (the switches below are read when torch
loads), under four settings; ``MKL_ENABLE_INSTRUCTIONS`` then imitates a CPU with another
instruction set on this machine:

- ``default``: as installed (MKL and ATen pick the widest kernels this CPU has);
- ``portable``: ``MKL_CBWR=COMPATIBLE`` (MKL's conditional numerical reproducibility: the same
  kernels on every x86-64 CPU) and ``ATEN_CPU_CAPABILITY=default`` (torch's own vectorised
  kernels, e.g. reductions, without AVX2/AVX-512);

each once as this CPU and once as an SSE4.2-only one (no AVX: an old x86-64 CPU; on this AMD
EPYC an AVX2-only imitation gave the same bytes as the default, so it shows nothing). Printed: wall time of the train stage, test
ACC, and whether metrics.json's figures are identical between the two "CPUs" of a setting.

    python bench/portable_math.py --store out/wikipedia/unpair --out bench/results/portable-math.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PORTABLE = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}
OLD_CPU = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}
SETTINGS = {
    "default": {},
    "default, as an SSE4.2-only CPU": OLD_CPU,
    "portable": PORTABLE,
    "portable, as an SSE4.2-only CPU": {**PORTABLE, **OLD_CPU},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="benchmark store (mixbench run data/recipes/wikipedia.toml --until unpair)")
    p.add_argument("--epochs", type=int, help="joint epochs (default: the recipe's 220)")
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in SETTINGS.items():
            out = Path(tmp) / name.replace(" ", "_").replace(",", "")
            cmd = [sys.executable, "-m", "mixbench.cli", "train", args.store, str(out), "--set", "plots=false",
                   "--seed", "0", "-q"]
            if args.epochs is not None:
                cmd += ["--epochs", str(args.epochs)]
            full_env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY",
                                                                         "MKL_ENABLE_INSTRUCTIONS")}
            full_env.update(env, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=full_env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            metrics = json.loads((out / "metrics.json").read_text())
            results[name] = {"env": env, "wall_s": round(wall, 2),
                             "train_s": metrics["wall_time"]["total"],
                             "test": metrics["methods"]["dm2c"]["test"]}
            print(f"{name:32s} {wall:6.1f} s  test ACC {results[name]['test']['acc']:.4f}  "
                  f"NMI {results[name]['test']['nmi']:.4f}", flush=True)
    for base in ("default", "portable"):
        same = results[base]["test"] == results[f"{base}, as an SSE4.2-only CPU"]["test"]
        print(f"{base}: figures identical as this CPU and as an SSE4.2-only CPU: {same}")
        results[f"{base} identical across the two CPUs"] = same
    slow = results["portable"]["train_s"] / results["default"]["train_s"]
    print(f"cost of the portable switch: train stage {slow:.2f}× the default's time")
    results["portable / default train time"] = round(slow, 3)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
