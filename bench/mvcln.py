"""MvCLN / SURE benchmarks: the reference code against mixbench on the reference's Scene-15 protocol,
and the methods on mixbench recipes at several unpairing ratios.

    # reference (a checkout of XLearning-SCU/2021-CVPR-MvCLN, never part of this repo) vs ours, Scene-15
    python bench/mvcln.py scene --ref /work/refs/MvCLN --seeds 2 --epochs 8 --neg-prop 5
    # the methods through the train stage on decouple stores, beside the k-means baselines
    python bench/mvcln.py table data/recipes/wikipedia.toml data/recipes/uci-mfeat.toml --ratios 0.5 0.8 \
        --methods mvcln mvcln:mvcln-plus sure --seeds 5

``scene``: both sides get the reference's data protocol (Scene15.mat views 0 and 1, ``aligned_prop``
of the rows aligned, the rest of view 1 shuffled; all rows re-aligned and clustered, one row per
instance with its view-0 label) and the same training settings; the reference runs its own
``data_loader.loader``, ``models.MvCLNfcScene``, ``run.NoiseRobustLoss``/``run.train``,
``alignment.tiny_infer`` and ``Clustering.Clustering``, ours :class:`train.mvcln.PartialAlignment`.
Shims, only for today's libraries: ``np.int`` (removed from numpy) and a ``munkres`` module backed
by scipy's ``linear_sum_assignment`` (the Hungarian matching of the reference's ACC). The reference
evaluates every epoch; here both sides evaluate once, after the final epoch (``--eval-every-epoch``
runs the reference's per-epoch evaluation for its timing). Times: training seconds (the reference's
own ``epoch_time`` sum) and wall seconds per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from _common import mean_std, setup_logging  # noqa: E402

log = logging.getLogger("bench.mvcln")


# ---------------------------------------------------------------------------------------------
# the reference, loaded from a checkout
# ---------------------------------------------------------------------------------------------


def load_reference(path: Path) -> types.SimpleNamespace:
    """Import the reference modules from the checkout ``path`` (with the two library shims)."""
    path = Path(path).resolve()
    if not (path / "run.py").exists() or not (path / "models.py").exists():
        raise SystemExit(f"{path}: not a checkout of XLearning-SCU/2021-CVPR-MvCLN (run.py, models.py missing).")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if not hasattr(np, "int"):
        np.int = int  # type: ignore[attr-defined]  # utils.TT_split uses the removed alias
    if "munkres" not in sys.modules:
        from scipy.optimize import linear_sum_assignment

        class Munkres:
            def compute(self, cost: Any) -> list[tuple[int, int]]:
                r, c = linear_sum_assignment(np.asarray(cost))
                return list(zip(r.tolist(), c.tolist()))

        sys.modules["munkres"] = types.SimpleNamespace(Munkres=Munkres)  # type: ignore[assignment]
    sys.path.insert(0, str(path))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0]]
    try:
        import alignment  # type: ignore[import-not-found]
        import Clustering  # type: ignore[import-not-found]
        import data_loader  # type: ignore[import-not-found]
        import models  # type: ignore[import-not-found]
        import run  # type: ignore[import-not-found]
    finally:
        sys.argv = saved_argv
    return types.SimpleNamespace(path=path, run=run, models=models, data_loader=data_loader, alignment=alignment,
                                 Clustering=Clustering)


def reference_run(ref: types.SimpleNamespace, *, seed: int, epochs: int, neg_prop: int, aligned: float,
                  batch_size: int, eval_every_epoch: bool) -> dict[str, Any]:
    """The reference's main() on Scene-15, on the CPU; ``seed`` seeds its data division (the reference
    leaves it unseeded) — its network seed stays its own 64."""
    t0 = time.perf_counter()
    random.seed(seed)
    np.random.seed(64)
    torch.manual_seed(64)
    cwd = os.getcwd()
    os.chdir(ref.path)
    try:
        train_loader, all_loader, divide_seed = ref.data_loader.loader(batch_size, neg_prop, aligned, True, "Scene15")
    finally:
        os.chdir(cwd)
    model = ref.models.MvCLNfcScene()
    crit = ref.run.NoiseRobustLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    args = argparse.Namespace(gpu="cpu", epochs=epochs, margin=5, robust=1, switching_time=1.0, start_fine=False,
                              neg_prop=neg_prop, noisy_training=True)
    logging.getLogger().setLevel(logging.WARNING)
    train_time = 0.0
    losses = []
    for epoch in range(epochs + 1):
        if epoch == 0:
            with torch.no_grad():
                out = ref.run.train(train_loader, model, crit, opt, epoch, args)
        else:
            out = ref.run.train(train_loader, model, crit, opt, epoch, args)
        train_time += out[4]
        losses.append(float(out[0] + out[1]))
        if eval_every_epoch or epoch == epochs:
            v0, v1, labels, car = ref.alignment.tiny_infer(model, "cpu", all_loader)
            _, ret = ref.Clustering.Clustering([v0, v1], labels)
    logging.getLogger().setLevel(logging.INFO)
    km = ret["kmeans"]
    return {"acc": float(km["accuracy"]), "nmi": float(km["NMI"]), "ari": float(km["ARI"]), "car": float(car),
            "train_seconds": train_time, "wall_seconds": time.perf_counter() - t0, "divide_seed": divide_seed,
            "margin": args.margin, "switched": bool(args.start_fine)}


def scene_benchmark(ref_path: Path, *, seed: int, aligned: float) -> Any:
    """Scene-15 (the reference's file) as an in-memory :class:`BenchmarkData`: one split, view 0 / view 1,
    ``aligned`` of the rows linked, the rest unlinked (partners known: the same row)."""
    import scipy.io as sio

    from train.data import BenchmarkData, SplitTensors

    mat = sio.loadmat(ref_path / "datasets" / "Scene15.mat")
    x0, x1 = (np.asarray(v, dtype=np.float32) for v in mat["X"][0][0:2])
    y = np.squeeze(mat["Y"]).astype(np.int64)
    y = y - y.min()
    n = len(y)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_al = int(np.ceil(aligned * n))
    pair = np.full(n, -1, dtype=np.int64)
    pair[perm[:n_al]] = perm[:n_al]
    ids = np.array([f"r{i}" for i in range(n)])
    split = SplitTensors({"v0": torch.as_tensor(x0), "v1": torch.as_tensor(x1)},
                         {"v0": torch.as_tensor(y), "v1": torch.as_tensor(y)},
                         {"v0": torch.as_tensor(pair), "v1": torch.as_tensor(pair)},
                         {"v0": ids, "v1": ids})
    classes = [str(c) for c in range(int(y.max()) + 1)]
    return BenchmarkData(["v0", "v1"], classes, {"train": split}, {"v0": x0.shape[1], "v1": x1.shape[1]}, {})


#: mixbench's speed options (``--fast``): bf16 matrix products with fused Adam, dropout masks from random bits.
FAST = {"precision": "bf16", "dropout_masks": "bits"}


def ours_run(ref_path: Path, *, seed: int, epochs: int, neg_prop: int, aligned: float, batch_size: int,
             options: dict[str, Any] | None = None) -> dict[str, Any]:
    from train.mvcln import MvCLNOptions, PartialAlignment
    from train.repairing import repair_scores

    t0 = time.perf_counter()
    data = scene_benchmark(ref_path, seed=seed, aligned=aligned)
    opts = MvCLNOptions(epochs=epochs, neg_prop=neg_prop, batch_size=batch_size, **(options or {}))
    trainer = PartialAlignment(data, opts, seed=seed, device=torch.device("cpu"), sure=False)
    while trainer.epoch < epochs:
        trainer.run_epoch()
    ev = trainer.evaluate()
    slots = ev["slots"]["train"]
    y = data.splits["train"].y["v0"].numpy()
    unl = np.flatnonzero(data.splits["train"].pair["v0"].numpy() < 0)
    rep = repair_scores(rows_a=slots.a, chosen_b=slots.b, y_a=y, y_b=y, partners=(unl, unl))
    pm = ev["pairs"]["train"]
    return {"acc": pm["acc"], "nmi": pm["nmi"], "ari": pm["ari"], "car": rep["car"],
            "partner_found": rep.get("partner_found"), "train_seconds": trainer.train_seconds,
            "wall_seconds": time.perf_counter() - t0, "margin": trainer.margin, "switched": trainer.fine}


def cmd_scene(a: argparse.Namespace) -> int:
    ref = load_reference(a.ref)
    rows: dict[str, list[dict[str, Any]]] = {"reference": [], "mixbench": [], "mixbench-fast": []}
    for s in range(a.seeds):
        if not a.ours_only:
            r = reference_run(ref, seed=s, epochs=a.epochs, neg_prop=a.neg_prop, aligned=a.aligned,
                              batch_size=a.batch_size, eval_every_epoch=a.eval_every_epoch)
            log.info("reference seed %d: %s", s, r)
            rows["reference"].append(r)
        sides = ([("mixbench", {})] if not a.fast_only else []) + ([("mixbench-fast", FAST)] if a.fast or a.fast_only else [])
        for side, options in sides:
            o = ours_run(a.ref, seed=s, epochs=a.epochs, neg_prop=a.neg_prop, aligned=a.aligned,
                         batch_size=a.batch_size, options=options)
            log.info("%s seed %d: %s", side, s, o)
            rows[side].append(o)
        _write(a.out, {"protocol": vars(a) | {"ref": str(a.ref), "out": str(a.out)}, "runs": rows,
                       "threads": torch.get_num_threads()})
    print(scene_table(rows))
    return 0


def scene_table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Mean ± std per side; the speed-up is the reference's mean training seconds over the side's,
    the same seeds run one after the other in this process."""
    keys = ("acc", "nmi", "ari", "car", "train_seconds", "wall_seconds")
    out = ["| side | runs | " + " | ".join(keys) + " | training speed-up vs reference |", "|---|---|" + "---|" * (len(keys) + 1)]
    base = [float(r["train_seconds"]) for r in rows.get("reference") or []]
    for side, rs in rows.items():
        if rs:
            t = [float(r["train_seconds"]) for r in rs]
            ratio = f"{np.mean(base) / np.mean(t):.2f}x" if base else "—"
            out.append(f"| {side} | {len(rs)} | " + " | ".join(mean_std([float(r[k]) for r in rs]) for k in keys)
                       + f" | {ratio} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# the methods on recipes
# ---------------------------------------------------------------------------------------------


def cmd_table(a: argparse.Namespace) -> int:
    from train import train

    results: list[dict[str, Any]] = []
    if a.out.exists():
        results = json.loads(a.out.read_text()).get("runs", [])
    done = {(r["recipe"], r["ratio"], r["method"], r["seed"]) for r in results}
    for recipe in a.recipes:
        for ratio in a.ratios:
            from mixbench.recipe import load_recipe

            rec = load_recipe(recipe).with_overrides({"unpair": {"mode": a.mode}})
            tmp = a.work / "recipes"
            tmp.mkdir(parents=True, exist_ok=True)
            name, root, _ = _store(rec, a.work, ratio)
            for spec in a.methods:
                method, _, variant = spec.partition(":")
                opts = dict(json.loads(a.options)) if a.options else {}
                if variant:
                    opts["variant"] = variant
                for seed in range(a.seeds):
                    key = (name, ratio, spec, seed)
                    if key in done:
                        continue
                    t0 = time.perf_counter()
                    run_dir = a.work / "runs" / f"{name.replace(' ', '-')}-{spec.replace(':', '-')}-s{seed}"
                    cfg: dict[str, Any] = {"method": method, "seed": seed, "device": a.device, "plots": False}
                    if method == "dm2c":  # a DM2C variant: its own [train] keys (--dm2c-options), not method_options
                        cfg |= dict(json.loads(a.dm2c_options)) if a.dm2c_options else {}
                        cfg["variant"] = variant or "faithful"
                    else:
                        cfg["method_options"] = opts
                    try:
                        m = train(root / "unpair", run_dir, cfg, overwrite=True)["metrics"]
                    except Exception as exc:  # recorded, e.g. a store without linked pairs
                        log.info("%s %s seed %d: %s", name, spec, seed, exc)
                        results.append({"recipe": name, "ratio": ratio, "method": spec, "seed": seed, "error": str(exc)})
                        _write(a.out, {"runs": results})
                        break
                    label = next(k for k in m["methods"] if not k.startswith("kmeans"))
                    results.append({"recipe": name, "ratio": ratio, "method": spec, "seed": seed,
                                    "metrics": m["methods"][label], "kmeans_linked": m["methods"].get("kmeans-linked"),
                                    "baselines": {k: v for k, v in m["methods"].items() if k.startswith("kmeans")},
                                    "headroom": m.get("headroom"), "repairing": m.get("repairing"),
                                    "seconds": time.perf_counter() - t0})
                    log.info("%s %s seed %d: test acc %.3f (kmeans-linked %s) %.0f s", name, spec, seed,
                             m["methods"][label]["test"]["acc"],
                             f"{m['methods']['kmeans-linked']['test']['acc']:.3f}" if "kmeans-linked" in m["methods"] else "—",
                             time.perf_counter() - t0)
                    _write(a.out, {"runs": results, "options": opts})
    print(results_table(results))
    return 0


def _store(recipe: Any, work: Path, ratio: float) -> tuple[str, Path, Any]:
    from mixbench.run import run_recipe

    rec = recipe.with_overrides({"unpair": {"ratio": ratio}})
    name = f"{recipe.name} r={ratio:g}"
    root = work / name.replace(" ", "-")
    run_recipe(rec, out=root, until="unpair")
    return name, root, rec


def results_table(results: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["recipe"], r["ratio"], r["method"]), []).append(r)
    out = ["| recipe | method | seeds | test ACC | test NMI | kmeans-linked ACC | train CAR | test CAR | "
           "test partner found (in k) | random / oracle alignment |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (recipe, _, method), rs in sorted(groups.items()):
        ok = [r for r in rs if "metrics" in r]
        if not ok:
            out.append(f"| {recipe} | {method} | 0 | {rs[0].get('error', '')[:60]} | | | | | |")
            continue
        kl = [r["kmeans_linked"]["test"]["acc"] for r in ok if r.get("kmeans_linked")]
        if not kl:  # no link left (r = 1): the pooled baseline instead
            kl = [r["baselines"]["kmeans-pooled"]["test"]["acc"] for r in ok if "kmeans-pooled" in (r.get("baselines") or {})]
            kl_note = " (pooled)" if kl else ""
        else:
            kl_note = ""

        def rep(split: str, key: str) -> str:
            vals = [(r.get("repairing") or {}).get(split, {}).get(key) for r in ok]
            return mean_std([v for v in vals if v is not None]) if any(v is not None for v in vals) else "—"

        found = rep("test", "partner_found") if any("partner_found" in (r.get("repairing") or {}).get("test", {}) for r in ok) \
            else "(" + rep("test", "partner_in_k") + ")" if any(r.get("repairing") for r in ok) else "—"
        hr = [r["headroom"]["test"] for r in ok if r.get("headroom") and "test" in r["headroom"]]
        bounds = f"{mean_std([h['aligned_random'] for h in hr])} / {mean_std([h['aligned_oracle'] for h in hr])}" if hr else "—"
        out.append(f"| {recipe} | {method} | {len(ok)} | {mean_std([r['metrics']['test']['acc'] for r in ok])} | "
                   f"{mean_std([r['metrics']['test']['nmi'] for r in ok])} | {mean_std(kl) + kl_note} | {rep('train', 'car')} | "
                   f"{rep('test', 'car')} | {found} | {bounds} |")
    return "\n".join(out)


def cmd_report(a: argparse.Namespace) -> int:
    """One table from several ``table`` result files."""
    runs: list[dict[str, Any]] = []
    for f in a.results:
        runs += json.loads(Path(f).read_text()).get("runs", [])
    print(results_table(runs))
    return 0


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scene", help="reference vs mixbench on the reference's Scene-15 protocol")
    s.add_argument("--ref", type=Path, default=Path(os.environ.get("MVCLN_REF", "/work/refs/MvCLN")),
                   help="checkout of XLearning-SCU/2021-CVPR-MvCLN (default: $MVCLN_REF)")
    s.add_argument("--seeds", type=int, default=5)
    s.add_argument("--epochs", type=int, default=80, help="the reference: 80")
    s.add_argument("--neg-prop", type=int, default=30, help="the reference: 30")
    s.add_argument("--aligned", type=float, default=0.5, help="aligned share (the reference: 0.5)")
    s.add_argument("--batch-size", type=int, default=1024)
    s.add_argument("--eval-every-epoch", action="store_true", help="the reference's per-epoch evaluation (timing)")
    s.add_argument("--ours-only", action="store_true")
    s.add_argument("--fast", action="store_true", help=f"also run mixbench with its speed options {FAST}")
    s.add_argument("--fast-only", action="store_true", help="of mixbench, run only the speed options")
    s.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mvcln-scene.json")
    s.set_defaults(func=cmd_scene)
    t = sub.add_parser("table", help="methods × recipes × ratios × seeds through the train stage")
    t.add_argument("recipes", nargs="+", type=Path)
    t.add_argument("--ratios", nargs="+", type=float, default=[0.2, 0.5, 0.8, 1.0])
    t.add_argument("--methods", nargs="+", default=["mvcln", "mvcln:mvcln-plus", "sure"],
                   help="method or method:variant")
    t.add_argument("--mode", default="decouple", help="[unpair] mode of the stores")
    t.add_argument("--seeds", type=int, default=5)
    t.add_argument("--options", default="", help="JSON of method_options shared by every run (a shortened protocol)")
    t.add_argument("--dm2c-options", default="",
                   help="JSON of [train] keys for the dm2c specs (e.g. dm2c:dm2c-linked), instead of --options")
    t.add_argument("--device", default="cpu")
    t.add_argument("--work", type=Path, default=REPO / "out" / "bench-mvcln")
    t.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "mvcln-table.json")
    t.set_defaults(func=cmd_table)
    r = sub.add_parser("report", help="one markdown table from several `table` result files")
    r.add_argument("results", nargs="+", type=Path)
    r.set_defaults(func=cmd_report)
    a = p.parse_args(argv)
    setup_logging()
    return int(a.func(a))


if __name__ == "__main__":
    raise SystemExit(main())
