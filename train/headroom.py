"""How much room a mixed-modal benchmark leaves a clusterer: label-informed bounds, for reading results.

On a mixed-modal benchmark every row is an instance of one modality, and one clustering of all rows is
scored with one Hungarian matching. This module clusters each modality **alone** (k-means on its train
rows in input space, applied to every split with ``predict``) and reports, per split:

- ``acc_<m>``: ACC of modality ``m``'s rows, matched within themselves: how clusterable ``m`` is.
- ``aligned_oracle``: the overall ACC when each modality's clusters are matched to the classes with the
  labels (``Σ_m matched_m / N``): what a method gets if it recovers every modality's k-means partition
  *and* aligns the modalities perfectly. Not a hard ceiling (a method may cluster a modality better
  than k-means does), but the reference point for the next key.
- ``aligned_random``: the expected overall ACC when the other modalities' clusters are joined to the
  first modality's by a uniformly random one-to-one map (mean over ``n_permutations`` maps): what the
  same per-modality partitions are worth when the cross-modal alignment carries no class information.
- ``supervised_<m>`` (splits other than train): accuracy of a logistic regression trained *with the
  labels* on ``m``'s train rows: how much class information ``m``'s features carry (linearly).
- ``supervised``: the row-weighted mean of those.

``aligned_oracle − aligned_random`` is what cross-modal alignment can add on top of per-modality
k-means; a method near ``aligned_random`` has placed the modalities no better than chance relative to
each other. Labels are used here, so these numbers are for reading a benchmark, never for choosing a
model or an epoch.

>>> from train.data import BenchmarkData                            # doctest: +SKIP
>>> headroom(BenchmarkData.from_store("out/wikipedia/unpair"))["test"]["aligned_oracle"]  # doctest: +SKIP
0.38...
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping

import numpy as np
import torch

from mixbench.errors import DataError

from .data import BenchmarkData
from .kmeans import KMeans
from .metrics import hungarian

log = logging.getLogger(__name__)


def matched_rows(table: np.ndarray) -> int:
    """Rows on the Hungarian matching of a class × cluster count table."""
    r, c = hungarian(table)
    return int(table[r, c].sum())


def class_cluster_counts(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """Class × cluster counts with every class and cluster id in ``0..k-1`` (absent ones as zeros)."""
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (y, pred), 1)
    return table


def _supervised(x_train: torch.Tensor, y_train: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.linear_model import LogisticRegression

    xt, yt = x_train.cpu().numpy(), y_train.cpu().numpy()
    if len(np.unique(yt)) < 2:
        return float(np.mean(y.cpu().numpy() == yt[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on near-constant columns
        clf = LogisticRegression(max_iter=2000).fit(xt, yt)
    return float(clf.score(x.cpu().numpy(), y.cpu().numpy()))


def headroom(
    data: BenchmarkData,
    *,
    seed: int = 0,
    n_init: int = 20,
    n_permutations: int = 1000,
    supervised: bool = True,
    device: str | torch.device | None = None,
    models: Mapping[str, KMeans] | None = None,
) -> dict[str, dict[str, float]]:
    """``{split: {key: value}}`` for the keys of the module docstring, plus ``n_rows`` and ``n_<m>``.

    k-means: :func:`train.baselines.modality_kmeans` (k = the number of classes, ``n_init`` restarts,
    ``seed``), or ``models`` where the caller has fitted them already (the train stage shares them with
    ``kmeans-linked``); the random alignments are drawn from ``numpy.random.default_rng(seed)``."""
    if "train" not in data.splits:
        raise DataError(f"the benchmark has no 'train' split (splits: {list(data.splits)}); k-means is fitted on it.")
    k = data.n_classes
    train = data.splits["train"]
    mods = list(data.modalities)
    for m in mods:
        n = train.n(m)
        if n < k:
            raise DataError(
                f"modality '{m}' has {n} train rows but k-means needs at least k = {k}; headroom clusters "
                "each modality alone, so every modality needs k train rows."
            )
    if models is None:
        from .baselines import modality_kmeans

        models = modality_kmeans(data, seed=seed, n_init=n_init, device=device)

    rng = np.random.default_rng(seed)
    perms = [np.stack([rng.permutation(k) for _ in range(n_permutations)]) for _ in mods[1:]]
    out: dict[str, dict[str, float]] = {}
    for name, split in data.splits.items():
        tables, rows = {}, {}
        for m in mods:
            if split.n(m) == 0:
                continue
            pred = torch.as_tensor(models[m].predict(split.x[m])).cpu().numpy().astype(np.int64)
            tables[m] = class_cluster_counts(split.y[m].cpu().numpy(), pred, k)
            rows[m] = split.n(m)
        n = sum(rows.values())
        if n == 0:
            continue
        res: dict[str, float] = {"n_rows": float(n)}
        for m, t in tables.items():
            res[f"n_{m}"] = float(rows[m])
            res[f"acc_{m}"] = matched_rows(t) / rows[m]
        res["aligned_oracle"] = sum(matched_rows(t) for t in tables.values()) / n
        first = tables.get(mods[0], np.zeros((k, k), dtype=np.int64))
        total = []
        for i in range(n_permutations):
            joined = first.copy()
            for j, m in enumerate(mods[1:]):
                if m in tables:
                    joined[:, perms[j][i]] += tables[m]  # cluster c of m joins cluster perm[c] of the first
            total.append(matched_rows(joined))
        res["aligned_random"] = float(np.mean(total)) / n
        if supervised and name != "train":
            accs = {m: _supervised(train.x[m], train.y[m], split.x[m], split.y[m]) for m in tables}
            res.update({f"supervised_{m}": a for m, a in accs.items()})
            res["supervised"] = sum(accs[m] * rows[m] for m in accs) / n
        out[name] = res
        log.debug("headroom [%s]: %s", name, ", ".join(f"{key} {v:.4f}" for key, v in res.items()))
    return out


__all__ = ["class_cluster_counts", "headroom", "matched_rows"]
