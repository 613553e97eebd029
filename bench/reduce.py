"""Benchmark: mixbench's exact PCA (embed.reduce) against scikit-learn's PCA, same data, same run.

Data: a float32 matrix built in memory from a low-rank signal with a power-law spectrum plus
isotropic noise and per-feature offsets (what CLIP-like features look like to a PCA). Then:

1. in memory: ``embed.PCA(k).fit(X)`` + ``transform(X)`` vs ``sklearn.decomposition.PCA(k)``
   (its ``auto`` solver by default; ``--sk-solver`` picks another) — times, time ratio, and the
   agreement of the components (max |1 - |cos|| per component) and explained variances.
   scikit-learn runs in its own process (only numpy and scikit-learn loaded: no torch or MKL
   thread pool of ours beside its BLAS), on the same data rebuilt from the same seed; both sides
   do one untimed warm-up fit on a slice, then ``--repeats`` timed fit + transform, median reported;
2. streaming: the same matrix written as a real store (``--shard-rows`` rows per shard, not
   timed), then the two-pass streaming fit over its shards and the whole embed stage
   (fit + transform + write) timed.

    python bench/reduce.py                 # 200,000 × 1024 → 256 (about 1.6 GB of RAM)
    python bench/reduce.py --quick         # 20,000 × 256 → 64, a small CPU run
    python bench/reduce.py --device cuda --sk-solver covariance_eigh --reference

The last line is a one-line summary for the README.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # first, also when PYTHONPATH names it: bench/embed.py must not shadow `embed`

from embed import embed
from embed.reduce import PCA, mean_from_sums
from mixbench.device import resolve_device
from mixbench.store.shards import Column, Store, StoreWriter, base_schema

log = logging.getLogger("bench.reduce")


def make_data(n: int, d: int, rank: int, seed: int, chunk: int = 20000) -> np.ndarray:
    """Low-rank signal (power-law spectrum) + noise + offsets, float32, built chunk by chunk."""
    g = np.random.default_rng(seed)
    basis = np.linalg.qr(g.standard_normal((d, rank)))[0].astype(np.float32)
    spectrum = (10.0 * np.arange(1, rank + 1) ** -0.8).astype(np.float32)
    offset = g.normal(0.0, 1.0, d).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        z = g.standard_normal((b - a, rank), dtype=np.float32) * spectrum
        x[a:b] = z @ basis.T + 0.3 * g.standard_normal((b - a, d), dtype=np.float32) + offset
    return x


SK_CHILD = """
import json, sys, time
import numpy as np
from sklearn import __version__ as sk_version
from sklearn.decomposition import PCA
{make_data}
p = json.loads(sys.argv[1])
x = make_data(p["n"], p["d"], p["rank"], p["seed"])
PCA(min(p["k"], 8), svd_solver=p["solver"], random_state=p["seed"]).fit(x[:2048]).transform(x[:16])  # warm-up
fits, transforms = [], []
for _ in range(p["repeats"]):
    sk = PCA(p["k"], svd_solver=p["solver"], random_state=p["seed"])
    t0 = time.perf_counter(); sk.fit(x); t1 = time.perf_counter(); sk.transform(x); t2 = time.perf_counter()
    fits.append(t1 - t0); transforms.append(t2 - t1)
np.savez(p["out"], components=sk.components_, explained_variance=sk.explained_variance_,
         explained_variance_ratio=sk.explained_variance_ratio_)
print(json.dumps({{"fit": fits, "transform": transforms, "version": sk_version,
                  "solver": getattr(sk, "_fit_svd_solver", p["solver"])}}))
"""


def sklearn_in_own_process(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """scikit-learn's PCA timed in a fresh Python process on the same data (rebuilt from the seed)."""
    import inspect
    import json
    import subprocess

    code = SK_CHILD.format(make_data=inspect.getsource(make_data))
    params = {"n": args.n, "d": args.d, "rank": args.rank, "seed": args.seed, "k": args.k,
              "solver": args.sk_solver, "repeats": args.repeats, "out": str(out)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(params)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"scikit-learn process failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as z:
        res.update({k: z[k] for k in z.files})
    return res


def timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def agreement(ours: np.ndarray, theirs: np.ndarray, ev_ours: np.ndarray, ev_theirs: np.ndarray, top: int) -> dict[str, float]:
    """max |1 - |cos|| between matching components and max relative difference of their
    explained variances, over the ``top`` first components and over all of them."""
    cos = np.abs(np.sum(ours * theirs, axis=1)) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    err = np.abs(1.0 - cos)
    rel = np.abs(ev_ours / ev_theirs - 1.0)
    return {"cos_top": float(err[:top].max()), "cos_all": float(err.max()),
            "ev_top": float(rel[:top].max()), "ev_all": float(rel.max())}


def write_store(x: np.ndarray, path: Path, shard_rows: int) -> Store:
    """``x`` as the train split of a one-modality store (plus a small test split)."""
    n, d = x.shape
    schema = {"x": {**base_schema(), "feat": Column("float32", (d,))}}
    w = StoreWriter(path, kind="features", dataset="bench", classes=["c"], schema=schema,
                    lineage=[{"stage": "bench", "config": {}}], run_key="bench", overwrite=True)
    for k, a in enumerate(range(0, n, shard_rows)):
        b = min(n, a + shard_rows)
        w.write_shard("train", k, {"x": {"id": np.array([str(i) for i in range(a, b)], dtype=object),
                                         "label": np.zeros(b - a, np.int64), "pair": np.arange(a, b),
                                         "feat": x[a:b]}})
    t = min(n, shard_rows)
    w.write_shard("test", 0, {"x": {"id": np.array([f"t{i}" for i in range(t)], dtype=object),
                                    "label": np.zeros(t, np.int64), "pair": np.arange(t), "feat": x[:t]}})
    w.finish()
    return Store(path)


def stream_fit(store: Store, k: int, device: torch.device) -> PCA:
    """The embed stage's two passes over the shards (one process)."""
    pca = PCA(k, device=device)
    n, total = 0, None
    for _, tables in store.iter_shards("train", ["x"], ["feat"]):
        m, s = pca.shard_sums(tables["x"]["feat"])
        n, total = n + m, s if total is None else total + s
    assert total is not None
    mean = mean_from_sums(n, total)
    scatter = None
    for _, tables in store.iter_shards("train", ["x"], ["feat"]):
        c = pca.shard_scatter(tables["x"]["feat"], mean)
        scatter = c if scatter is None else scatter + c
    return pca.fit_from_stats(n, total, scatter)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="rows")
    p.add_argument("--d", type=int, default=1024, help="input features")
    p.add_argument("--k", type=int, default=256, help="components kept")
    p.add_argument("--rank", type=int, default=128, help="rank of the signal part")
    p.add_argument("--top", type=int, default=10, help="agreement also reported over the first TOP components")
    p.add_argument("--shard-rows", type=int, default=25_000, help="rows per shard of the streamed store")
    p.add_argument("--device", default="auto", help="device of our PCA (auto: CUDA if present)")
    p.add_argument("--sk-solver", default="auto", help="scikit-learn svd_solver (auto, full, covariance_eigh, randomized)")
    p.add_argument("--no-stream", action="store_true", help="skip the from-store timings")
    p.add_argument("--workdir", help="folder for the streamed store (default: a temp folder, removed)")
    p.add_argument("--reference", action="store_true",
                   help="also fit scikit-learn's covariance_eigh on a float64 copy (2× memory) and report both "
                        "PCAs' distance to it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each side after one warm-up (median)")
    p.add_argument("--quick", action="store_true", help="small run: 20,000 × 256 → 64, shards of 5,000")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.d, args.k, args.rank, args.shard_rows = 20_000, 256, 64, 48, 5_000
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("embed", "prep"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = resolve_device(args.device)
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    from sklearn.decomposition import PCA as SkPCA  # the float64 reference (--reference) only

    log.info("making %d × %d float32 data (signal rank %d)", args.n, args.d, args.rank)
    x = make_data(args.n, args.d, args.rank, args.seed)
    print(f"data: {args.n} × {args.d} float32 in memory → {args.k} components; our device: {dev_name}")

    # warm-up (CUDA context, kernels) on a small slice, not timed
    PCA(min(args.k, 8), device=device).fit(x[:2048, :]).transform(x[:16])

    fits, transforms = [], []
    for _ in range(args.repeats):
        ours, t = timed(lambda: PCA(args.k, device=device).fit(x), device)
        y, t2 = timed(lambda: ours.transform(x), device)
        fits.append(t)
        transforms.append(t2)
        del y
    t_fit, t_tr = float(np.median(fits)), float(np.median(transforms))
    with tempfile.TemporaryDirectory() as tmp:
        skr = sklearn_in_own_process(args, Path(tmp) / "sk.npz")
    sk_fit, sk_tr = float(np.median(skr["fit"])), float(np.median(skr["transform"]))
    solver, sk_version = skr["solver"], skr["version"]
    agree = agreement(ours.components_, skr["components"].astype(np.float64), ours.explained_variance_,
                      skr["explained_variance"].astype(np.float64), args.top)
    ours_total, sk_total = t_fit + t_tr, sk_fit + sk_tr

    print(f"{'':36s}{'fit s':>10s}{'transform s':>13s}{'total s':>10s}")
    print(f"{'mixbench exact PCA':36s}{t_fit:10.3f}{t_tr:13.3f}{ours_total:10.3f}")
    print(f"{f'sklearn {sk_version} ({solver})':36s}{sk_fit:10.3f}{sk_tr:13.3f}{sk_total:10.3f}")
    print(f"time ratio sklearn / mixbench: fit {sk_fit / t_fit:.2f}×, total {sk_total / ours_total:.2f}×")
    print(f"components max |1-|cos||: top {args.top} {agree['cos_top']:.2e}, all {args.k} {agree['cos_all']:.2e}")
    print(f"explained variance max rel. diff: top {args.top} {agree['ev_top']:.2e}, all {args.k} {agree['ev_all']:.2e}")
    print(f"explained variance ratio kept: mixbench {ours.explained_variance_ratio_.sum():.6f}, "
          f"sklearn {skr['explained_variance_ratio'].sum():.6f}")
    print(f"(medians of {args.repeats} runs after a warm-up; scikit-learn in its own process; fit times "
          f"ours {', '.join(f'{t:.2f}' for t in fits)} s, scikit-learn {', '.join(f'{t:.2f}' for t in skr['fit'])} s)")
    if args.reference:
        ref = SkPCA(args.k, svd_solver="covariance_eigh").fit(x.astype(np.float64))
        for name, comp, ev in (("mixbench", ours.components_, ours.explained_variance_),
                               (f"sklearn ({solver})", skr["components"], skr["explained_variance"])):
            a = agreement(comp.astype(np.float64), ref.components_, ev.astype(np.float64), ref.explained_variance_,
                          args.top)
            print(f"vs float64 reference, {name}: max |1-|cos|| top {args.top} {a['cos_top']:.2e}, all {a['cos_all']:.2e}; "
                  f"explained variance max rel. diff top {args.top} {a['ev_top']:.2e}, all {a['ev_all']:.2e}")
        del ref

    stream = ""
    if not args.no_stream:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            log.info("writing the store (%d-row shards) to %s (not timed)", args.shard_rows, tmp)
            store = write_store(x, Path(tmp) / "store", args.shard_rows)
            n_shards = len(store.shards("train"))
            fitted, t_stream = timed(lambda: stream_fit(store, args.k, device), device)
            same = agreement(fitted.components_, ours.components_, fitted.explained_variance_,
                             ours.explained_variance_, args.top)
            _, t_stage = timed(lambda: embed(store.path, Path(tmp) / "out",
                                             {"dim": args.k, "device": str(device)}, overwrite=True), device)
            print(f"streaming from the store ({n_shards} train shards of {args.shard_rows} rows, HDF5, page cache warm): "
                  f"two-pass fit {t_stream:.3f} s; embed stage (fit + transform + write, train + test) {t_stage:.3f} s")
            print(f"streaming vs in-memory fit: max |1-|cos|| {same['cos_all']:.2e}, "
                  f"explained variance max rel. diff {same['ev_all']:.2e}")
            stream = f"; from a store of {n_shards} shards: fit {t_stream:.2f} s, whole embed stage {t_stage:.2f} s"

    print(f"SUMMARY: exact PCA {args.n:,}×{args.d}→{args.k} on {dev_name}: mixbench {ours_total:.2f} s vs "
          f"scikit-learn {sk_version} ({solver}) {sk_total:.2f} s = {sk_total / ours_total:.1f}× "
          f"(top-{args.top} components max |1-|cos|| {agree['cos_top']:.1e}){stream}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
