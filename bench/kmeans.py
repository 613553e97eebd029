"""Benchmark: mixbench's k-means (train.kmeans) against scikit-learn and FAISS, same data, same run.

Every method runs in its own fresh process (scikit-learn's and torch's thread pools slow each
other down when they share one), gets the same float32 matrix and one untimed warm-up call; the
time covers the fit alone (for ours on CUDA, the data are already on the device, as DM2C's embeddings are, and the
clock stops after a device synchronise). Each timed repeat uses another seed (0, 1, ...); the
table gives medians. Inertia is recomputed the same way for every method: float64, all points,
nearest final centroid.

Cases
-----
(a) DM2C's evaluation size: the 2,173 Wikipedia training pairs (data/wikipedia), image (128-d)
    and text (10-d) features z-scored per feature and concatenated, PCA'd to 8 dimensions and
    z-scored again (an embedding-like 2,173 × 8 input); k = 10, 20 restarts, max_iter 1000,
    tol 5e-5 — sklearn ``KMeans(10, n_init=20, max_iter=1000, tol=5e-5)``, as DM2C's evaluation.
(b) ``make_blobs(N, 128, centers=100, cluster_std=1, random_state=0)``, k = 100: N = 1,000,000
    on an accelerator, 200,000 on a CPU (the reference anchors' size), 3 restarts each.
(c) mid-size, many restarts: ``make_blobs(20000, 16, centers=50, cluster_std=1, random_state=0)``,
    k = 50, 150 restarts (shallow rows, a large restart batch: the size where scikit-learn's
    sequential, cache-sized restarts beat the batched torch program on CPU).

Methods: ``ours`` (``train.kmeans.KMeans``, backend torch, on ``--device``), ``auto``
(``train.kmeans.KMeans`` with ``backend="auto"``, what mixbench uses; run only where it picks
another backend than torch, else it is ``ours``), ``sklearn``
(``sklearn.cluster.KMeans``, lloyd), ``faiss`` (``faiss.Kmeans`` with ``niter = max_iter``,
``nredo = n_init``, k-means++ seeding, no subsampling; faiss stops a redo once its objective
stops improving, so ``niter`` is a cap). Ratios are against sklearn: ``speed-up`` = sklearn
time / method time, ``inertia ratio`` = method inertia / sklearn inertia. ``iterations``: Lloyd
iterations of the kept restart (median over repeats; FAISS: not reported, ``-``).

    python bench/kmeans.py                      # both cases, full sizes for the device
    python bench/kmeans.py --quick              # a small CPU run (case b at 20,000 × 32, k = 20)
    python bench/kmeans.py --device cuda --case b --repeats 3
    python bench/kmeans.py --case c --repeats 3

The targets (for a GPU machine): (a) ≥ 20× sklearn at equal inertia (±0.1 %); (b) faster than
FAISS while reaching sklearn's inertia (±1 %).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the packages (embed, train, ...) before bench/, whose scripts share their names

from mixbench.device import resolve_device
from train.kmeans import KMeans

log = logging.getLogger("bench.kmeans")

MAX_ITER = 1000
TOL = 5e-5


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def wikipedia_8d(root: Path) -> np.ndarray:
    """Case (a): Wikipedia train pairs → z-scored image ⊕ text → PCA to 8 → z-scored (2173 × 8)."""
    from prep.adapters.wikipedia import WikipediaConfig, read

    data = read(WikipediaConfig(root=str(root)), REPO)
    train = data.splits["train"]
    parts = []
    for m in sorted(train.tables):
        f = np.asarray(train.tables[m]["feat"], dtype=np.float64)
        parts.append((f - f.mean(0)) / np.where(f.std(0) > 0, f.std(0), 1.0))
    x = np.hstack(parts)
    x -= x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    z = x @ vt[:8].T
    z = (z - z.mean(0)) / z.std(0)
    return np.ascontiguousarray(z, dtype=np.float32)


def blobs(n: int, d: int, centers: int, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import make_blobs

    x, _ = make_blobs(n_samples=n, n_features=d, centers=centers, cluster_std=1.0, random_state=seed)
    return np.ascontiguousarray(x, dtype=np.float32)


def inertia64(x: np.ndarray, centres: np.ndarray, chunk: int = 16384) -> float:
    """Σ over all rows of the squared distance to the nearest centre, in float64."""
    c = torch.as_tensor(np.asarray(centres, dtype=np.float64))
    cc = (c * c).sum(1)
    total = 0.0
    for a in range(0, len(x), chunk):
        xb = torch.as_tensor(x[a : a + chunk], dtype=torch.float64)
        d = (xb * xb).sum(1, keepdim=True) - 2.0 * xb @ c.T + cc
        total += float(d.amin(1).clamp_(min=0).sum())
    return total


# --------------------------------------------------------------------------------------------
# methods: each returns (seconds, centres as numpy)
# --------------------------------------------------------------------------------------------
Run = tuple[float, np.ndarray, int | None]
"""(seconds, final centres, Lloyd iterations of the kept restart or None)."""


def run_ours(x_dev: torch.Tensor, k: int, n_init: int, seed: int, check_every: int | None = None,
             backend: str = "torch") -> Run:
    dev = x_dev.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    km = KMeans(k, n_init=n_init, max_iter=MAX_ITER, tol=TOL, random_state=seed, backend=backend,
                check_every=check_every).fit(x_dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0, km.cluster_centers_.cpu().numpy(), int(km.n_iter_)


def run_sklearn(x: np.ndarray, k: int, n_init: int, seed: int) -> Run:
    from sklearn.cluster import KMeans as SKKMeans

    t0 = time.perf_counter()
    km = SKKMeans(k, n_init=n_init, max_iter=MAX_ITER, tol=TOL, random_state=seed).fit(x)
    return time.perf_counter() - t0, km.cluster_centers_, int(km.n_iter_)


def run_faiss(x: np.ndarray, k: int, n_init: int, seed: int) -> Run:
    import faiss

    km = faiss.Kmeans(
        x.shape[1], k, niter=MAX_ITER, nredo=n_init, seed=seed + 1, verbose=False,
        max_points_per_centroid=-(-len(x) // k) + 1, init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    )
    t0 = time.perf_counter()
    km.train(x)
    return time.perf_counter() - t0, np.asarray(km.centroids), None


def make_data(spec: dict[str, Any]) -> np.ndarray:
    """The matrix of a case, from its description (rebuilt identically in every worker)."""
    if spec["case"] == "a":
        return wikipedia_8d(Path(spec["wikipedia"]))
    return blobs(spec["rows"], spec["dim"], spec.get("centers", spec["k"]))


def worker(method: str, spec: dict[str, Any], device: str, repeats: int, check_every: int | None) -> list[Run]:
    """One method on one case, in a fresh process: a warm-up, then ``repeats`` timed seeds.

    Separate processes matter: in one process, scikit-learn's OpenMP threads and torch's thread
    pools slow each other down badly (scikit-learn 8× slower after a torch k-means at 200,000 ×
    128 on the 2-core machine)."""
    logging.basicConfig(level=logging.WARNING)
    x = make_data(spec)
    k, n_init = spec["k"], spec["n_init"]
    if method == "ours":
        x_dev = torch.as_tensor(x).to(resolve_device(device))
        fn: Callable[[int], Run] = lambda s: run_ours(x_dev, k, n_init, s, check_every)
    elif method == "auto":
        x_dev = torch.as_tensor(x).to(resolve_device(device))
        fn = lambda s: run_ours(x_dev, k, n_init, s, check_every, backend="auto")
    elif method == "sklearn":
        fn = lambda s: run_sklearn(x, k, n_init, s)
    else:
        fn = lambda s: run_faiss(x, k, n_init, s)
    fn(10_000)  # warm-up (CUDA context, kernels, thread pools), untimed
    return [fn(seed) for seed in range(repeats)]


def run_case(
    spec: dict[str, Any], device: torch.device, methods: list[str], repeats: int, check_every: int | None = None
) -> dict[str, Any]:
    x = make_data(spec)
    out: dict[str, Any] = {
        "case": spec["case"], "rows": len(x), "dim": x.shape[1], "k": spec["k"], "n_init": spec["n_init"], "results": {}
    }
    ctx = multiprocessing.get_context("spawn")
    for m in methods:
        if m == "faiss" and importlib.util.find_spec("faiss") is None:
            log.warning("faiss is not installed (pip install faiss-cpu): skipped.")
            continue
        if m == "auto":
            chosen = auto_backend(len(x), x.shape[1], spec["k"], spec["n_init"], device)
            out["auto_backend"] = chosen
            if chosen == "torch":
                log.info("case %s: auto picks torch (= ours); not run twice", spec["case"])
                continue
        log.info("case %s: %s ...", spec["case"], m)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            runs = pool.submit(worker, m, spec, str(device), repeats, check_every).result()
        times = [sec for sec, _, _ in runs]
        inertias = [inertia64(x, centres) for _, centres, _ in runs]
        iters = [it for _, _, it in runs if it is not None]
        for seed, (sec, inert) in enumerate(zip(times, inertias)):
            log.info("%s seed %d: %.4f s, inertia %.6g", m, seed, sec, inert)
        out["results"][m] = {
            "time_s": statistics.median(times), "inertia": statistics.median(inertias), "times": times, "inertias": inertias,
            "iterations": statistics.median(iters) if iters else None, "iterations_all": iters,
        }
    ref = out["results"].get("sklearn")
    for m, r in out["results"].items():
        if ref:
            r["speedup_vs_sklearn"] = ref["time_s"] / r["time_s"]
            r["inertia_ratio_vs_sklearn"] = r["inertia"] / ref["inertia"]
    return out


def auto_backend(n: int, d: int, k: int, n_init: int, device: torch.device) -> str:
    """The backend ``KMeans(backend="auto")`` picks for this case on ``device``."""
    from train.kmeans import sklearn_is_faster

    return "sklearn" if device.type == "cpu" and sklearn_is_faster(n, d, k, n_init) else "torch"


def table(case: dict[str, Any]) -> str:
    lines = [
        (f"case ({case['case']}): {case['rows']:,} × {case['dim']}, k = {case['k']}, n_init = {case['n_init']}, "
         f"max_iter = {MAX_ITER}, tol = {TOL}"),
        "| method | time (s, median) | speed-up vs sklearn | inertia (median) | inertia ratio vs sklearn | iterations (median) |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in case["results"].items():
        sp = f"{r['speedup_vs_sklearn']:.2f}×" if "speedup_vs_sklearn" in r else "-"
        ir = f"{r['inertia_ratio_vs_sklearn']:.5f}" if "inertia_ratio_vs_sklearn" in r else "-"
        it = f"{r['iterations']:g}" if r.get("iterations") is not None else "-"
        name = f"auto ({case.get('auto_backend')})" if m == "auto" else m
        lines.append(f"| {name} | {r['time_s']:.4f} | {sp} | {r['inertia']:.6g} | {ir} | {it} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=["a", "b", "c", "all"], default="all", help="which case to run")
    p.add_argument("--device", default="auto", help="device of ours: auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--quick", action="store_true", help="small CPU-sized run: case (b) at 20,000 × 32, k = 20; 2 repeats")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 5 for a, 3 for b; quick: 2)")
    p.add_argument("--rows", type=int, default=None, help="rows of case (b) (default: 1,000,000 on an accelerator, 200,000 on CPU) and of case (c) (20,000)")
    p.add_argument("--n-init", type=int, default=None, help="restarts of case (b) (default 3) and of case (c) (150)")
    p.add_argument("--methods", default="ours,auto,sklearn,faiss", help="comma-separated subset of ours,auto,sklearn,faiss")
    p.add_argument("--wikipedia", default=str(REPO / "data" / "wikipedia"), help="folder of the Wikipedia files (case a)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of every method (OMP/MKL/OpenBLAS and torch; default: the libraries' own, "
                        "all cores). On a shared machine, 1 avoids thread-barrier stalls that swamp small cases")
    p.add_argument("--check-every", type=int, default=None,
                   help="ours: Lloyd iterations between host checks (default: 1 on CPU, 8 on CUDA; 1 = sync each iteration)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("train.kmeans").setLevel(logging.WARNING)

    if args.threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)  # read by the worker processes at start
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = set(methods) - {"ours", "auto", "sklearn", "faiss"}
    if bad:
        p.error(f"--methods: unknown {sorted(bad)}; choose from ours, auto, sklearn, faiss")
    env = {
        "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": args.threads or "default",
    }
    try:
        import sklearn

        env["sklearn"] = sklearn.__version__
    except ImportError:
        pass
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        pass
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))

    results = []
    if args.case in ("a", "all"):
        spec = {"case": "a", "wikipedia": str(Path(args.wikipedia).resolve()), "k": 10, "n_init": 20}
        reps = args.repeats or (2 if args.quick else 5)
        results.append(run_case(spec, device, methods, reps, args.check_every))
        print(table(results[-1]))
    if args.case in ("b", "all"):
        if args.quick:
            n, d, k = args.rows or 20_000, 32, 20
        else:
            n, d, k = args.rows or (200_000 if device.type == "cpu" else 1_000_000), 128, 100
        n_init = args.n_init or 3
        if not args.quick and device.type == "cpu" and args.rows is None:
            print(f"case (b) on CPU: {n:,} × {d} with n_init = {n_init} (1,000,000 × 128 is meant for an accelerator)")
        spec = {"case": "b", "rows": n, "dim": d, "k": k, "n_init": n_init}
        reps = args.repeats or (2 if args.quick else 3)
        results.append(run_case(spec, device, methods, reps, args.check_every))
        print(table(results[-1]))
    if args.case in ("c", "all"):
        n, d, k = (args.rows or (2_000 if args.quick else 20_000)), 16, 50
        n_init = args.n_init or (15 if args.quick else 150)
        spec = {"case": "c", "rows": n, "dim": d, "k": k, "centers": 50, "n_init": n_init}
        reps = args.repeats or (2 if args.quick else 3)
        results.append(run_case(spec, device, methods, reps, args.check_every))
        print(table(results[-1]))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
