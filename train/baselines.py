"""k-means baselines reported next to every DM2C result.

Methods (each fitted on the ``train`` split and applied with ``predict`` to every other split, as
DM2C's evaluation does; k = the number of classes):

- ``kmeans-pooled``: k-means on the pooled instances of both modalities, features as they are.
- ``kmeans-centred``: the same after centring each modality on the mean of its own **train**
  instances (the same train means are subtracted in every split).
- ``kmeans-concat``: only for pairs still linked (``pair >= 0`` in both modalities): each linked
  pair becomes one row, the concatenation of its two halves, and the metrics are computed on
  **those pairs only** (``n_rows`` says how many). Not a mixed-modal method: it shows what the
  pairing would be worth. Left out when the train split has no linked pair; a split without
  linked pairs gets no entry.

- ``kmeans-linked``: only when the train split has linked pairs: k-means on each modality alone
  (its train rows, in its own feature space, so the dims may differ), then the second modality's
  clusters are mapped one-to-one onto the first's by the linked training pairs (the matching that
  maximises the pairs whose halves land in matched clusters). Every row of every split is an
  instance, as for DM2C. It shows what the links are worth for aligning the modalities: at
  ``ratio = 1`` there are none and the method is left out; compare ``train.headroom``'s random and
  oracle alignment.

Each entry holds the seven :data:`train.metrics.METRICS` plus diagnostics: ``n_rows`` (rows
evaluated), and for the pooled methods ``acc_<modality>`` (ACC of that modality's rows, with the
Hungarian matching done within them, as the reference diagnostics) and ``modality_nmi`` (NMI
between clusters and the modality of each row: high means the clusters split by modality).

>>> from train.data import BenchmarkData                                # doctest: +SKIP
>>> res = kmeans_baselines(BenchmarkData.from_store("out/bench"))       # doctest: +SKIP
>>> res["kmeans-pooled"]["test"]["acc"]                                 # doctest: +SKIP
0.336...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from mixbench.errors import DataError

from .data import BenchmarkData, SplitTensors
from .kmeans import KMeans
from .metrics import METRICS, clustering_metrics, hungarian

log = logging.getLogger(__name__)

METHODS = ("kmeans-pooled", "kmeans-centred", "kmeans-concat", "kmeans-linked")
DIAGNOSTICS = ("n_rows", "modality_nmi")
"""Diagnostic keys besides :data:`METRICS` (plus ``acc_<modality>`` per modality for pooled methods)."""

Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(features, labels, modality index per row or None)."""


def _pooled(split: SplitTensors, shift: dict[str, torch.Tensor] | None = None) -> Rows:
    xs = split.x if shift is None else {m: v - shift[m] for m, v in split.x.items()}
    return SplitTensors(xs, split.y, split.pair, split.ids).pooled()


def _concat(split: SplitTensors, name: str) -> Rows | None:
    """One row per linked pair: the two halves side by side; None when no pair is linked."""
    a, b = split.modalities[:2]
    ia, ib = split.linked()
    if len(ia) == 0:
        return None
    ya, yb = split.y[a][ia], split.y[b][ib]
    bad = ya != yb
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise DataError(
            f"split '{name}': linked pair {int(split.pair[a][ia[i]])} has label {int(ya[i])} in '{a}' but "
            f"{int(yb[i])} in '{b}' ({int(bad.sum())} such pairs); the two halves of a pair must share "
            "their label. Rebuild the benchmark store."
        )
    return torch.cat([split.x[a][ia], split.x[b][ib]], dim=1), ya, None


def _scores(labels: Any, y: torch.Tensor, flags: torch.Tensor | None, modalities: list[str]) -> dict[str, float]:
    y_np = y.cpu().numpy()
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    out = clustering_metrics(y_np, lab)
    out["n_rows"] = float(len(y_np))
    if flags is not None:
        f = flags.cpu().numpy()
        for i, m in enumerate(modalities):
            sel = f == i
            if sel.any():
                out[f"acc_{m}"] = clustering_metrics(y_np[sel], lab[sel])["acc"]
        out["modality_nmi"] = clustering_metrics(f, lab)["nmi"]
    return out


def kmeans_baselines(
    data: BenchmarkData,
    *,
    seed: int = 0,
    n_init: int = 20,
    device: str | torch.device | None = None,
    max_iter: int = 1000,
    tol: float = 5e-5,
    modality_models: Mapping[str, KMeans] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {split: metrics}}`` for the k-means baselines of ``data`` (see the module doc).

    k-means: :class:`train.kmeans.KMeans` with ``n_clusters = data.n_classes`` and the given
    ``n_init``, ``max_iter``, ``tol`` and ``seed``, on ``device`` (default: where the features are).
    ``modality_models``: :func:`modality_kmeans` of ``data`` with the same settings, when the caller
    has it already (``kmeans-linked`` then fits nothing)."""
    if "train" not in data.splits:
        raise DataError(f"the benchmark has no 'train' split (splits: {list(data.splits)}); baselines are fitted on train.")
    if data.n_classes < 1:
        raise DataError("the benchmark has no classes; k-means baselines need k = number of classes ≥ 1.")
    train = data.splits["train"]
    order = ["train"] + [s for s in data.splits if s != "train"]
    mods = list(data.modalities)

    makers: dict[str, Callable[[SplitTensors, str], Rows | None]] = {}
    dims = {m: int(v.shape[1]) for m, v in train.x.items()}
    if len(set(dims.values())) == 1:
        means = {m: train.x[m].mean(0) if len(train.x[m]) else train.x[m].new_zeros(dims[m]) for m in mods}
        makers["kmeans-pooled"] = lambda s, name: _pooled(s)
        makers["kmeans-centred"] = lambda s, name: _pooled(s, means)
    else:
        log.warning(
            "modalities have different feature dims %s: kmeans-pooled and kmeans-centred need one shared "
            "dimension and are skipped (set [embed] dim to a common value).", dims,
        )
    makers["kmeans-concat"] = _concat

    results: dict[str, dict[str, dict[str, float]]] = {}
    k = data.n_classes
    for method, make in makers.items():
        rows = make(train, "train")
        if rows is None:
            log.info("%s: the train split has no linked pairs; skipped.", method)
            continue
        x, y, flags = rows
        if len(x) < k:
            raise DataError(
                f"{method}: the train split has {len(x)} rows for k = {k} clusters; k-means needs at least k rows."
            )
        km = KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, device=device or "auto").fit(x)
        per_split = {"train": _scores(km.labels_, y, flags, mods)}
        for name in order[1:]:
            rows = make(data.splits[name], name)
            if rows is None:
                log.info("%s: split '%s' has no linked pairs; no entry.", method, name)
                continue
            xs, ys, fs = rows
            if len(xs) == 0:
                log.info("%s: split '%s' has no rows; no entry.", method, name)
                continue
            per_split[name] = _scores(km.predict(xs), ys, fs, mods)
        results[method] = per_split
        for name, m in per_split.items():
            log.info(
                "%s [%s] %d rows: %s", method, name, int(m["n_rows"]), ", ".join(f"{key} {m[key]:.4f}" for key in METRICS)
            )
    linked = _linked(data, seed=seed, n_init=n_init, device=device, max_iter=max_iter, tol=tol,
                     models=modality_models)
    if linked is not None:
        results["kmeans-linked"] = linked
    if not results:
        raise DataError(
            "no k-means baseline could run: the modalities have different dims and no pair is linked in train."
        )
    return results


def modality_kmeans(
    data: BenchmarkData,
    *,
    seed: int = 0,
    n_init: int = 20,
    device: str | torch.device | None = None,
    max_iter: int = 1000,
    tol: float = 5e-5,
) -> dict[str, KMeans]:
    """k-means (k = the number of classes) fitted on each modality's train rows alone, in its own
    feature space: the partitions behind ``kmeans-linked`` and :func:`train.headroom.headroom`.
    Every modality needs at least k train rows (callers check)."""
    train, k = data.splits["train"], data.n_classes
    return {m: KMeans(k, n_init=n_init, max_iter=max_iter, tol=tol, seed=seed, device=device or "auto").fit(train.x[m])
            for m in data.modalities}


def _linked(
    data: BenchmarkData,
    *,
    seed: int,
    n_init: int,
    device: str | torch.device | None,
    max_iter: int,
    tol: float,
    models: Mapping[str, KMeans] | None = None,
) -> dict[str, dict[str, float]] | None:
    """``kmeans-linked`` (module doc), or None when the train split has no linked pair or a modality has
    fewer train rows than clusters. ``models``: per-modality k-means already fitted with the same
    settings (:func:`modality_kmeans`), to share them with the headroom figures."""
    train, k = data.splits["train"], data.n_classes
    mods = list(data.modalities)[:2]
    ia, ib = train.linked()
    if len(ia) == 0:
        log.info("kmeans-linked: the train split has no linked pairs; skipped.")
        return None
    if any(train.n(m) < k for m in mods):
        log.info("kmeans-linked: a modality has fewer than k = %d train rows; skipped.", k)
        return None
    if models is None:
        models = modality_kmeans(data, seed=seed, n_init=n_init, device=device, max_iter=max_iter, tol=tol)
    la = torch.as_tensor(models[mods[0]].labels_).cpu().numpy()[ia.cpu().numpy()]
    lb = torch.as_tensor(models[mods[1]].labels_).cpu().numpy()[ib.cpu().numpy()]
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (lb, la), 1)
    rows, cols = hungarian(counts)
    to_first = np.empty(k, dtype=np.int64)
    to_first[rows] = cols  # cluster c of the second modality -> cluster to_first[c] of the first
    out: dict[str, dict[str, float]] = {}
    for name, split in data.splits.items():
        if split.n() == 0:
            continue
        preds, ys, flags = [], [], []
        for i, m in enumerate(mods):
            if split.n(m) == 0:
                continue
            p = models[m].labels_ if name == "train" else models[m].predict(split.x[m])
            p = torch.as_tensor(p).cpu().numpy()
            preds.append(to_first[p] if i == 1 else p)
            ys.append(split.y[m].cpu())
            flags.append(torch.full((split.n(m),), i, dtype=torch.long))
        out[name] = _scores(np.concatenate(preds), torch.cat(ys), torch.cat(flags), mods)
        out[name]["linked_pairs"] = float(len(ia))
    return out
