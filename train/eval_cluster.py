"""The evaluation k-means as plain data, so it can run in another thread or process.

:class:`ClusterSpec` holds what a trainer's evaluation clustering needs (the faithful k-means
settings, the splits to label and, for variants that fit on part of the train rows, which rows);
:func:`cluster_runs` fits one or more runs' k-means from their specs, embeddings and seeds. Both
are picklable (a frozen dataclass, a module-level function), which is what
``[train] eval_background = "process"`` needs (:mod:`train.eval_queue`). With ``portable`` the
tensors cross the process boundary as numpy arrays, both ways (exact: a float32 array holds the
same bits), so a fit in the worker equals the fit in the trainer's process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from .kmeans import KMeans


def numpy_labels(x: Any) -> np.ndarray:
    """Cluster labels (tensor or array) as an int64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().astype(np.int64)
    return np.asarray(x, dtype=np.int64)


@dataclass(frozen=True)
class ClusterSpec:
    """One run's evaluation k-means: fit on the train embedding (or its rows ``fit_rows``), label
    every split in ``splits``. With ``fit_rows`` None the train rows take the fit's labels and the
    other splits ``predict`` (the faithful protocol); with a ``(start, stop)`` row range every split,
    train included, is labelled by ``predict``."""

    n_clusters: int
    n_init: int
    max_iter: int
    tol: float
    device: str
    splits: tuple[str, ...]
    fit_rows: tuple[int, int] | None = None

    def kmeans(self, seed: int) -> KMeans:
        return KMeans(self.n_clusters, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol, seed=seed,
                      device=self.device)

    def __call__(self, emb: dict[str, torch.Tensor], seed: int) -> tuple[KMeans, dict[str, np.ndarray]]:
        if self.fit_rows is None:
            km = self.kmeans(seed).fit(emb["train"])
            preds = {"train": numpy_labels(km.labels_)}
            for s in self.splits:
                if s != "train":
                    preds[s] = numpy_labels(km.predict(emb[s]))
            return km, preds
        start, stop = self.fit_rows
        km = self.kmeans(seed).fit(emb["train"][start:stop])
        return km, {s: numpy_labels(km.predict(emb[s])) for s in self.splits}


class _Array(NamedTuple):
    """A CPU tensor carried as a numpy array (see :func:`cluster_runs`'s ``portable``)."""

    array: np.ndarray


def _to_host(x: Any) -> Any:
    return _Array(x.detach().cpu().numpy()) if isinstance(x, torch.Tensor) else x


def _from_host(x: Any) -> Any:
    return torch.from_numpy(x.array) if isinstance(x, _Array) else x


def _kmeans_to_host(km: KMeans) -> KMeans:
    for k, v in vars(km).items():
        setattr(km, k, _to_host(v))
    return km


def kmeans_from_host(km: KMeans) -> KMeans:
    """Undo the worker side's conversion: the fitted attributes as tensors again."""
    for k, v in vars(km).items():
        setattr(km, k, _from_host(v))
    return km


def embeddings_to_host(embs: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """Every run's embeddings as numpy arrays, to send to a worker process."""
    return [{s: _to_host(t) for s, t in e.items()} for e in embs]


def cluster_runs(specs: list[ClusterSpec], embs: list[dict[str, Any]], seeds: list[int], portable: bool = False
                 ) -> tuple[list[tuple[KMeans, dict[str, np.ndarray]]], float]:
    """Each run's k-means (``specs[i]`` on ``embs[i]`` with ``seeds[i]``), one after the other, and
    the seconds they took. ``portable``: the embeddings came as numpy arrays
    (:func:`embeddings_to_host`) and the fitted models go back with numpy arrays
    (:func:`kmeans_from_host` restores them)."""
    t0 = time.perf_counter()
    out = []
    for spec, emb, seed in zip(specs, embs, seeds):
        if portable:
            emb = {s: _from_host(v) for s, v in emb.items()}
        km, preds = spec(emb, seed)
        out.append((_kmeans_to_host(km) if portable else km, preds))
    return out, time.perf_counter() - t0
