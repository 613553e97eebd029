"""Wall time and accuracy of the full faithful DM2C protocol on the Wikipedia benchmark, beside the
reference code measured in the same run.

The benchmark is built through the real stages, as the default recipe does: prep (data/wikipedia)
→ embed (PCA to 10 dims, whiten = the reference's ``std10`` input) → unpair (ratio 1, test_ratio 1,
drop, random); or ``--store`` names an existing benchmark store. Then, for each seed, the whole
protocol (AE pre-training 2 × 150 epochs, 220 joint epochs with an evaluation every epoch) runs
in-process, and the script prints the time of each part (pre-training per modality, joint training
steps, evaluation embedding, k-means, metrics) and the final-epoch test ACC / NMI (mean ± sample
std over seeds).

With ``--reference DIR`` (a checkout of jiangyangby/DM2C, never vendored: e.g. ``git clone
https://github.com/jiangyangby/DM2C``) the reference code runs the same protocol on the same store,
exported in its own format, in a child process on the same machine right after ours
(``bench/dm2c_reference.py``), and the speed-up is that measured ratio. Without it no ratio is
printed: a reference time recorded on another processor or GPU says nothing about this one.

    python bench/dm2c.py                                  # 1 seed, full protocol, device auto
    python bench/dm2c.py --reference ../DM2C              # and the reference, side by side
    python bench/dm2c.py --seeds 5 --out bench-dm2c.json
    python bench/dm2c.py --seeds 5 --jobs 2                # seeds two at a time, one process each
    python bench/dm2c.py --seeds 5 --batched               # and the five as one stacked program
    python bench/dm2c.py --quick                          # short schedule (a smoke run)

Timings taken while other work loads the cores are noisy: the script records the load average
before and after, and a ratio measured in one run is fair only if the load stayed the same.
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
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before this folder's scripts of the same name

log = logging.getLogger("bench.dm2c")

REFERENCE_ACC = (0.319, 0.020)
REFERENCE_NMI = (0.172, 0.022)
"""The reference code's final-epoch test ACC / NMI on this benchmark, 3 seeds (for context only)."""
PARTS = ("pretrain-image", "pretrain-text", "joint-train", "eval-embed", "kmeans", "metrics")
REF_PARTS = ("pretrain-img", "pretrain-txt", "joint-train", "eval-embed", "kmeans", "metrics")
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


def _seed_worker(store: str, seed: int, device: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """One seed in a worker process (``--jobs``): load the store there, run, report peak memory."""
    import resource

    from train.data import BenchmarkData

    data = BenchmarkData.from_store(store, device=device)
    r = run_seed(data, seed, device, overrides)
    r["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return r


def run_seeds(store: Path, data: Any, seeds: int, device: str, overrides: dict[str, Any], jobs: int) -> list[dict[str, Any]]:
    """Seeds 0..N-1, one after the other in this process, or ``jobs`` at a time in worker processes
    (each a solo run with its own RNG streams, so the results are the same)."""
    if jobs <= 1 or seeds <= 1:
        return [run_seed(data, s, device, overrides) for s in range(seeds)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, seeds), mp_context=ctx) as pool:
        futures = [pool.submit(_seed_worker, str(store), s, device, overrides) for s in range(seeds)]
        return [f.result() for f in futures]


def run_seed(data: Any, seed: int, device: str, overrides: dict[str, Any]) -> dict[str, Any]:
    from train import DM2C

    model = DM2C(seed=seed, device=device, **overrides)
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(data)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    test = model.metrics_.get("test", model.metrics_["train"])
    return {"seed": seed, "seconds": wall, "cpu_seconds": cpu, "parts": {k: model.timings_.get(k, 0.0) for k in PARTS},
            "test": test, "train": model.metrics_["train"], "skipped_batches": model.trainer_.skipped_batches,
            "threads": model.trainer_.intra_op_threads()}


def run_stacked(data: Any, seeds: int, device: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Seeds 0..N-1 as one stacked program (:class:`train.dm2c_stacked.StackedTrainer`): each run
    with its own RNG streams, as its solo run."""
    import resource

    from train.config import TrainConfig
    from train.dm2c import FaithfulTrainer
    from train.dm2c_stacked import StackedTrainer

    t0, c0 = time.perf_counter(), time.process_time()
    trainers = [FaithfulTrainer(TrainConfig.from_dict({"seed": s, "device": device, **overrides}), data)
                for s in range(seeds)]
    stacked = StackedTrainer(trainers)
    evs = stacked.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    runs = [{"seed": s, "test": ev.metrics.get("test", ev.metrics["train"]), "train": ev.metrics["train"],
             "skipped_batches": t.skipped_batches} for s, (t, ev) in enumerate(zip(trainers, evs))]
    return {"seconds": wall, "cpu_seconds": cpu, "parts": {k: stacked.timer.seconds.get(k, 0.0) for k in PARTS},
            "runs": runs, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_reference(ref: Path, store: Path, work: Path, seed: int, schedule: dict[str, int], device: Any) -> dict[str, Any]:
    """The reference code on ``store`` in a child process (``bench/dm2c_reference.py``); adds the
    child's wall time (interpreter start-up included) as ``wall``."""
    import os
    import subprocess

    from mixbench.store.export import export_store

    data = work / "ref-data"
    if not (data / "export.json").exists():
        export_store(store, data, "dm2c", overwrite=True)
    out = work / f"ref-seed{seed}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(REPO / "bench" / "dm2c_reference.py"), "--reference", str(ref), "--data", str(data),
           "--work", str(work / f"ref-seed{seed}"), "--seed", str(seed), "--out", str(out),
           "--pretrain-epochs", str(schedule["pretrain_epochs"]), "--epochs", str(schedule["epochs"]),
           "--n-init", str(schedule["n_init"])]
    env = dict(os.environ)
    if device.type != "cuda":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the reference uses CUDA whenever it sees a GPU
    import resource

    log_path = work / f"ref-seed{seed}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and its DataLoader workers
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc != 0:
        raise SystemExit(f"the reference run failed (exit {rc}); its output is in {log_path}")
    result = json.loads(out.read_text())
    result["wall"] = wall
    result["cpu_seconds"] = cpu
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, help="an existing benchmark store (default: build one under --work)")
    p.add_argument("--work", type=Path, default=REPO / "out" / "bench-dm2c", help="where the benchmark stores are built")
    p.add_argument("--wikipedia", type=Path, default=REPO / "data" / "wikipedia", help="the raw Wikipedia folder")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1")
    p.add_argument("--jobs", type=int, default=1,
                   help="seeds run at a time, each in its own process (default 1: one after the other, in-process)")
    p.add_argument("--batched", action="store_true",
                   help="also train the seeds as one stacked program (train.dm2c_stacked) after the solo runs, and "
                        "print its time against one solo seed's and both ACC distributions")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--quick", action="store_true", help=f"short schedule {QUICK} (smoke run)")
    p.add_argument("--pretrain-epochs", type=int, help="override the pre-training epochs (both sides)")
    p.add_argument("--epochs", type=int, help="override the joint epochs (both sides)")
    p.add_argument("--eval-every", type=int, help="override [train] eval_every (ours only; 0: evaluate the final epoch "
                   "only, as a sweep that reads final-epoch figures needs; not the reference's protocol)")
    p.add_argument("--eval-background", choices=("auto", "process", "thread", "off"),
                   help="override [train] eval_background (ours only, solo and stacked alike; default: the config's, "
                        "auto). Where the per-epoch k-means runs; the results are the same in every mode")
    p.add_argument("--reference", type=Path, metavar="DIR",
                   help="a checkout of jiangyangby/DM2C: run it on the same store in this run and print the measured ratio")
    p.add_argument("--reference-seeds", type=int, default=1, help="seeds 0..N-1 for the reference (default 1)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.reference is not None and not (args.reference / "code" / "model.py").is_file():
        p.error(f"--reference {args.reference}: no code/model.py there; pass a checkout of jiangyangby/DM2C")

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
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.pretrain_epochs is not None:
        overrides["pretrain_epochs"] = args.pretrain_epochs
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.eval_every is not None:
        if args.reference is not None:
            p.error("--eval-every changes our protocol only; do not combine it with --reference")
        overrides["eval_every"] = args.eval_every
    if args.eval_background is not None:
        overrides["eval_background"] = args.eval_background
    schedule = {"pretrain_epochs": 150, "epochs": 220, "n_init": 20, **overrides}
    schedule.pop("eval_background", None)  # where the k-means runs, not what it computes
    full = schedule == {"pretrain_epochs": 150, "epochs": 220, "n_init": 20}
    rows = {s: {m: t.n(m) for m in data.modalities} for s, t in data.splits.items()}
    print(f"benchmark: {store}  rows {rows}  dims {data.dims}")
    print(f"device: {device_name(device)}  torch {torch.__version__}  schedule: "
          f"{'full (150 + 150 pre-training, 220 joint, eval every epoch)' if full else schedule}")
    from train.config import TrainConfig

    eval_mode = overrides.get("eval_background", TrainConfig().eval_background)
    print(f"evaluation: [train] eval_background = {eval_mode} (with a worker process, 'kmeans' below is the "
          "worker's time, overlapped with training)")
    load_before = loadavg()
    print(f"load average before: {load_before}")

    t_seeds = time.perf_counter()
    results = run_seeds(Path(store), data, args.seeds, str(device), overrides, args.jobs)
    seeds_wall = time.perf_counter() - t_seeds
    for r in results:
        parts = "  ".join(f"{k} {v:.2f}" for k, v in r["parts"].items())
        mem = f"  peak RSS {r['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in r else ""
        print(f"seed {r['seed']}: {r['seconds']:.2f} s  ({parts})  test ACC {r['test']['acc']:.4f} "
              f"NMI {r['test']['nmi']:.4f}{mem}")

    secs = [r["seconds"] for r in results]
    accs = [r["test"]["acc"] for r in results]
    nmis = [r["test"]["nmi"] for r in results]
    sd = (lambda v: statistics.stdev(v) if len(v) > 1 else float("nan"))
    mean_s = statistics.fmean(secs)
    ours_total = mean_s + import_s
    cpu_mean = statistics.fmean(r["cpu_seconds"] for r in results)
    print()
    print(f"mixbench: protocol {mean_s:.2f} s per seed (min {min(secs):.2f}); imports {import_s:.2f} s once; "
          f"protocol + imports {ours_total:.2f} s; CPU time {cpu_mean:.2f} s per seed")
    if args.seeds > 1:
        print(f"{args.seeds} seeds, {args.jobs} at a time: {seeds_wall:.2f} s wall in all "
              f"({seeds_wall / statistics.fmean(secs):.2f}× one seed's protocol time)")
    print(f"final-epoch test ACC {statistics.fmean(accs):.4f} ± {sd(accs):.4f}, NMI {statistics.fmean(nmis):.4f} ± {sd(nmis):.4f}"
          f"  (reference, recorded: ACC {REFERENCE_ACC[0]} ± {REFERENCE_ACC[1]}, NMI {REFERENCE_NMI[0]} ± {REFERENCE_NMI[1]})")

    batched: dict[str, Any] | None = None
    if args.batched:
        batched = run_stacked(data, args.seeds, str(device), overrides)
        b_acc = [r["test"]["acc"] for r in batched["runs"]]
        b_nmi = [r["test"]["nmi"] for r in batched["runs"]]
        parts = "  ".join(f"{k} {v:.2f}" for k, v in batched["parts"].items())
        batched.update({"ratio_to_one_seed": batched["seconds"] / mean_s, "speedup_vs_solo_seeds": seeds_wall / batched["seconds"],
                        "test_acc": [statistics.fmean(b_acc), sd(b_acc)], "test_nmi": [statistics.fmean(b_nmi), sd(b_nmi)]})
        print(f"batched: {args.seeds} seeds as one program {batched['seconds']:.2f} s ({parts}); "
              f"{batched['ratio_to_one_seed']:.2f}× one solo seed's {mean_s:.2f} s, {batched['speedup_vs_solo_seeds']:.2f}× faster "
              f"than the {args.seeds} solo seeds ({seeds_wall:.2f} s); per run {batched['seconds'] / args.seeds:.2f} s; "
              f"peak RSS {batched['peak_rss_mib']:.0f} MiB")
        print(f"batched final-epoch test ACC {statistics.fmean(b_acc):.4f} ± {sd(b_acc):.4f}, NMI {statistics.fmean(b_nmi):.4f} "
              f"± {sd(b_nmi):.4f}  (solo: {statistics.fmean(accs):.4f} ± {sd(accs):.4f}, {statistics.fmean(nmis):.4f} ± {sd(nmis):.4f}); "
              f"per seed solo/batched ACC: " + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(accs, b_acc)))

    reference: dict[str, Any] | None = None
    if args.reference is not None:
        refs = []
        for seed in range(args.reference_seeds):
            rr = run_reference(args.reference.resolve(), Path(store), args.work.resolve(), seed, schedule, device)
            refs.append(rr)
            rs = rr["seconds"]
            parts = "  ".join(f"{k} {rs.get(k, 0.0):.2f}" for k in REF_PARTS)
            print(f"reference seed {seed}: wall {rr['wall']:.2f} s, CPU {rr['cpu_seconds']:.2f} s, in-process {rs['in-process']:.2f} s "
                  f"(imports {rs['imports']:.2f}  {parts})  test ACC {rr['test']['acc']:.4f} NMI {rr['test']['nmi']:.4f}")
        ref_wall = statistics.fmean(r["wall"] for r in refs)
        ref_inproc = statistics.fmean(r["seconds"]["in-process"] for r in refs)
        ref_cpu = statistics.fmean(r["cpu_seconds"] for r in refs)
        reference = {"dir": str(args.reference), "seeds": refs, "mean_wall": ref_wall, "mean_in_process": ref_inproc,
                     "mean_cpu": ref_cpu, "speedup_wall": ref_wall / ours_total, "speedup_protocol": ref_inproc / mean_s,
                     "speedup_cpu": ref_cpu / cpu_mean}
        print(f"speed-up, measured in this run on {device_name(device)}: {ref_wall / ours_total:.1f}x wall-clock "
              f"(reference {ref_wall:.2f} s incl. interpreter start-up and imports, mixbench {ours_total:.2f} s incl. "
              f"imports); {ref_inproc / mean_s:.1f}x in-process (reference {ref_inproc:.2f} s incl. imports, mixbench "
              f"protocol {mean_s:.2f} s); {ref_cpu / cpu_mean:.1f}x in CPU time (reference {ref_cpu:.2f} s with its "
              f"DataLoader workers, mixbench {cpu_mean:.2f} s; the fairer figure on a loaded machine)")
    else:
        print("speed-up: not measured (pass --reference DIR, a checkout of jiangyangby/DM2C, to run it side by side)")
    if not full:
        print(f"schedule {schedule}: not the full protocol")
    load_after = loadavg()
    print(f"load average after: {load_after}")
    if args.out:
        args.out.write_text(json.dumps({
            "store": str(store), "device": device_name(device), "schedule": schedule, "full_protocol": full,
            "overrides": overrides, "seeds": results, "mean_seconds": mean_s, "import_seconds": import_s,
            "jobs": args.jobs, "seeds_wall_seconds": seeds_wall,
            "test_acc": [statistics.fmean(accs), sd(accs)], "test_nmi": [statistics.fmean(nmis), sd(nmis)],
            "reference": reference, "batched": batched, "loadavg": {"before": load_before, "after": load_after},
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
