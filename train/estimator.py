"""``DM2C``: a scikit-learn-style estimator over the DM2C trainers (the stage and CLI are thin layers on it).

>>> model = DM2C(epochs=220, seed=0)                        # doctest: +SKIP
>>> model.fit("out/wikipedia/unpair")                       # a benchmark store, or BenchmarkData
>>> model.transform("test").shape                           # unified embeddings, (693, 8)
>>> model.predict("test")                                   # cluster ids from the fitted k-means
>>> model.score("test")["acc"]                              # the seven metrics

Settings are the ``[train]`` keys (:class:`train.config.TrainConfig`), checked when the estimator is
built; ``get_params()`` returns exactly the config recorded in lineage. Fitted state ends in ``_``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mixbench.errors import ConfigError, DataError

from .config import TrainConfig
from .data import BenchmarkData, SplitTensors
from .dm2c import EpochCallback, Evaluation, FaithfulTrainer
from .registry import get_variant
from .runlog import RunLog

log = logging.getLogger(__name__)

class NotFittedError(ConfigError):
    """``transform``/``predict``/``score`` called before ``fit``."""


class DM2C:
    """Deep mixed-modal clustering (DM2C) with a fitted k-means on its unified embeddings.

    Parameters: any ``[train]`` key (``variant``, ``seed``, ``epochs``, ``pretrain_epochs``, ``lr_g``, ...),
    or ``config=TrainConfig(...)``.

    Fitted attributes: ``trainer_`` (the variant's trainer), ``model_`` (its ``DM2CNet``), ``data_``
    (the :class:`BenchmarkData` fitted on), ``kmeans_`` (k-means of the final evaluation),
    ``labels_`` (train cluster ids), ``evaluation_`` (final :class:`Evaluation`), ``history_``
    (per-epoch rows), ``timings_`` (seconds per part), ``n_clusters_``, ``resumed_``.
    """

    def __init__(self, config: TrainConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        if isinstance(config, TrainConfig):
            cfg = config.replace(**settings) if settings else config
        else:
            cfg = TrainConfig.from_dict({**dict(config or {}), **settings}, where="DM2C(...)")
        self.config = cfg

    # -- sklearn protocol -------------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return self.config.to_dict()

    def set_params(self, **params: Any) -> DM2C:
        self.config = TrainConfig.from_dict({**self.config.to_dict(), **params}, where="DM2C.set_params(...)")
        return self

    def __repr__(self) -> str:
        defaults = TrainConfig().to_dict()
        changed = {k: v for k, v in self.config.to_dict().items() if defaults.get(k) != v}
        return f"DM2C({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # -- fit --------------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        runlog: RunLog | None = None,
        input_sha256: str | None = None,
        callback: EpochCallback | None = None,
        resume: bool = True,
    ) -> DM2C:
        """Train on a benchmark: a store folder, a :class:`mixbench.store.shards.Store` or a :class:`BenchmarkData`.

        ``checkpoint_dir``: checkpoints go there, and a compatible ``last.pt`` is resumed (``resume``).
        ``y`` is ignored (labels come from the store; they are used only for the metrics)."""
        from mixbench.device import resolve_device

        device = resolve_device(self.config.device)
        data, sha = self._load(X, device)
        input_sha256 = input_sha256 or sha
        variant = get_variant(self.config.variant)
        trainer: FaithfulTrainer = variant.trainer(
            self.config, data, checkpoint_dir=checkpoint_dir, runlog=runlog,
            input_sha256=input_sha256, callback=callback,
        )
        self.resumed_ = bool(resume and trainer.restore())
        t0 = time.perf_counter()
        ev = trainer.run()
        self.fit_seconds_ = time.perf_counter() - t0
        self.trainer_ = trainer
        self.model_ = trainer.net
        self.data_ = data
        self.evaluation_: Evaluation = ev
        self.kmeans_ = ev.kmeans
        self.labels_ = ev.predictions["train"]
        self.history_ = list(trainer.history)
        self.timings_ = dict(trainer.timer.seconds)
        self.n_clusters_ = trainer.n_clusters
        self.architecture_ = trainer.arch
        return self

    @staticmethod
    def _load(X: Any, device: torch.device) -> tuple[BenchmarkData, str | None]:
        from mixbench.store.shards import Store

        if isinstance(X, BenchmarkData):
            return X, None
        if isinstance(X, (str, os.PathLike)):
            X = Store(X)
        if isinstance(X, Store):
            return BenchmarkData.from_store(X, device=device), X.manifest_sha256
        raise DataError(
            f"DM2C.fit: cannot train on a {type(X).__name__}; pass a benchmark store folder, a mixbench.store.shards.Store "
            "or a train.data.BenchmarkData."
        )

    # -- after fit --------------------------------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "trainer_"):
            raise NotFittedError(f"This DM2C instance is not fitted yet; call fit(...) before {method}().")

    def _split(self, X: Any, method: str) -> SplitTensors:
        self._check_fitted(method)
        if isinstance(X, str):
            if X not in self.data_.splits:
                raise DataError(f"DM2C.{method}: no split {X!r} in the fitted data; splits: {list(self.data_.splits)}.")
            return self.data_.splits[X]
        if isinstance(X, SplitTensors):
            dims = {m: int(v.shape[1]) for m, v in X.x.items()}
            if dims != self.data_.dims:
                raise DataError(
                    f"DM2C.{method}: the split has feature dims {dims}, the model was fitted on {self.data_.dims}."
                )
            return X
        if isinstance(X, tuple) and len(X) == 2:
            return self._split_from_arrays(X[0], X[1], method)
        raise DataError(
            f"DM2C.{method}: expected a split name ('train', 'test'), a SplitTensors, or (features, modality), "
            f"got {type(X).__name__}."
        )

    def _split_from_arrays(self, feats: Any, modality: Any, method: str) -> SplitTensors:
        """``(features N×d, modality N)`` with modality 0 = first, 1 = second: rows regrouped by modality."""
        dev = self.trainer_.device
        x = torch.as_tensor(np.asarray(feats.cpu() if isinstance(feats, torch.Tensor) else feats), dtype=torch.float32, device=dev)
        flag = torch.as_tensor(np.asarray(modality.cpu() if isinstance(modality, torch.Tensor) else modality)).long().view(-1)
        d = self.trainer_.dim
        if x.ndim != 2 or x.shape[1] != d:
            raise DataError(f"DM2C.{method}: features of shape {tuple(x.shape)}; the model expects N × {d}.")
        if len(flag) != len(x):
            raise DataError(f"DM2C.{method}: {len(x)} feature rows but {len(flag)} modality flags.")
        if not bool(((flag == 0) | (flag == 1)).all()):
            raise DataError(f"DM2C.{method}: modality flags must be 0 (first modality) or 1 (second).")
        self._array_order = torch.argsort(flag, stable=True)
        mods = self.trainer_.modalities
        xs = {m: x[flag.to(dev) == i] for i, m in enumerate(mods)}
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return SplitTensors(x=xs, y={m: empty for m in mods}, pair={m: empty for m in mods}, ids={m: np.empty(0) for m in mods})

    def _unsort(self, X: Any, values: np.ndarray) -> np.ndarray:
        """Rows back in the caller's order for ``(features, modality)`` input."""
        if isinstance(X, tuple):
            out = np.empty_like(values)
            out[self._array_order.cpu().numpy()] = values
            return out
        return values

    def transform(self, X: Any = "test") -> np.ndarray:
        """Unified embeddings (rows: first modality, then second, for a split; caller's order for arrays)."""
        s = self._split(X, "transform")
        return self._unsort(X, self.trainer_.embed(s).cpu().numpy())

    def predict(self, X: Any = "test") -> np.ndarray:
        """Cluster ids from the fitted k-means (``labels_`` for the training split)."""
        s = self._split(X, "predict")
        emb = self.trainer_.embed(s)
        pred = self.kmeans_.predict(emb)
        if isinstance(pred, torch.Tensor):
            pred = pred.cpu().numpy()
        return self._unsort(X, np.asarray(pred, dtype=np.int64))

    def fit_predict(self, X: Any, y: None = None, **fit_kw: Any) -> np.ndarray:
        return self.fit(X, **fit_kw).labels_

    def score(self, X: Any = "test") -> dict[str, float]:
        """The seven clustering metrics of :meth:`predict` against the split's labels."""
        from .metrics import clustering_metrics

        if isinstance(X, tuple):
            raise DataError("DM2C.score: needs labels; pass a split name or a SplitTensors.")
        s = self._split(X, "score")
        y = np.concatenate([s.y[m].cpu().numpy() for m in self.trainer_.modalities])
        return clustering_metrics(y, self.predict(s))

    @property
    def metrics_(self) -> dict[str, dict[str, float]]:
        """Final-epoch metrics per split (``train`` from ``labels_``, ``test`` from ``predict``)."""
        self._check_fitted("metrics_")
        return self.evaluation_.metrics
