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
from pathlib import Path
from typing import Any, ClassVar

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


# ---------------------------------------------------------------------------------------------
# MvCLN / SURE (partially aligned clustering, train.mvcln)
# ---------------------------------------------------------------------------------------------


class MvCLN:
    """Partially view-aligned clustering (MvCLN; :class:`SURE` beside it), scikit-learn style.

    >>> model = MvCLN(epochs=30, seed=0)                       # doctest: +SKIP
    >>> model.fit("out/uci-mfeat/unpair")                      # a decouple store (or a Store / BenchmarkData)
    >>> model.labels_                                          # train rows: first modality, then second
    >>> model.predict("test")                                  # test rows' cluster ids (the fit's evaluation)
    >>> model.predict((x_a, x_b))                              # new rows, all unlinked: re-paired, then clustered
    >>> model.score("test")["acc"]                             # the seven metrics
    >>> model.repairing_["test"]["car"]                        # re-pairing scores, as in metrics.json

    Parameters: the fields of :class:`train.mvcln.MvCLNOptions` (``variant``, ``epochs``, ``hiddens``, ...;
    a variant's preset sits under the options given explicitly), ``seed`` (``random_state`` is accepted as
    its scikit-learn name), ``device`` and ``n_clusters`` (0: the store's number of classes). The same
    seed and settings give the same fit, bit for bit, as ``[train] method = "mvcln"`` through the stage.

    Fitted attributes: ``trainer_`` (:class:`train.mvcln.PartialAlignment`), ``model_`` (its towers),
    ``data_``, ``kmeans_``, ``labels_``, ``evaluation_`` (per split: ``metrics``, ``pairs``, ``slots``,
    ``views``), ``metrics_`` (per split), ``repairing_`` (CAR, partner recovery per split),
    ``history_`` (per-epoch rows), ``n_clusters_``, ``resumed_``, ``fit_seconds_``.
    """

    sure: ClassVar[bool] = False
    _run_keys: ClassVar[tuple[str, ...]] = ("seed", "device", "n_clusters")

    def __init__(self, *, random_state: int | None = None, seed: int = 0, device: str = "auto", n_clusters: int = 0,
                 **options: Any) -> None:
        from .mvcln import MvCLNOptions

        if random_state is not None:
            if seed not in (0, random_state):
                raise ConfigError(f"{self._name()}(...): seed={seed} and random_state={random_state} disagree; give one.")
            seed = random_state
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"{self._name()}(...): seed must be an integer ≥ 0, got {seed!r}.")
        if not isinstance(n_clusters, int) or isinstance(n_clusters, bool) or n_clusters < 0:
            raise ConfigError(f"{self._name()}(...): n_clusters must be an integer ≥ 0 (0: the classes), got {n_clusters!r}.")
        self.options = MvCLNOptions.from_dict(dict(options), where=f"{self._name()}(...)")
        self._given = dict(options)
        self.seed, self.device, self.n_clusters = seed, device, n_clusters

    @classmethod
    def _name(cls) -> str:
        return cls.__name__

    # -- sklearn protocol -------------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The settings the method runs with (a variant's preset filled in), so ``type(m)(**m.get_params())``
        is the same estimator."""
        return {**self.resolved_options.to_dict(), "seed": self.seed, "device": self.device, "n_clusters": self.n_clusters}

    def set_params(self, **params: Any) -> MvCLN:
        """Change settings; the options given so far stay given (a new ``variant`` brings its own preset)."""
        run = {"seed": self.seed, "device": self.device, "n_clusters": self.n_clusters}
        if "random_state" in params:
            run["seed"] = params.pop("random_state")
        self.__init__(**{**run, **self._given, **params})  # type: ignore[misc]
        return self

    def __repr__(self) -> str:
        from .mvcln import MvCLNOptions

        defaults = {**MvCLNOptions().to_dict(), "seed": 0, "device": "auto", "n_clusters": 0}
        given = {**self.options.to_dict(), "seed": self.seed, "device": self.device, "n_clusters": self.n_clusters}
        changed = {k: v for k, v in given.items() if defaults.get(k) != v}
        return f"{self._name()}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @property
    def resolved_options(self) -> Any:
        """The options the method runs with: the variant's preset under the explicitly given ones."""
        from .mvcln import resolved

        return resolved(self.options, self._given)

    # -- fit --------------------------------------------------------------------------------------
    def fit(self, X: Any, y: None = None, *, checkpoint_dir: str | os.PathLike[str] | None = None,
            runlog: RunLog | None = None, input_sha256: str | None = None) -> MvCLN:
        """Train on a benchmark (a store folder, a :class:`~mixbench.store.shards.Store` or a
        :class:`BenchmarkData`) and evaluate it: the unlinked rows of every split are re-paired or
        imputed and clustered. ``checkpoint_dir``: checkpoints go there (every ``checkpoint_every``
        epochs and at the end); a ``last.pt`` of the same config is resumed, another is refused.
        ``y`` is ignored (the labels come from the store and only score)."""
        from mixbench.device import resolve_device

        from .mvcln import PartialAlignment, check_data, partner_scores
        from .repairing import hidden_partners

        device = resolve_device(self.device)
        data, sha = DM2C._load(X, device)
        sha = input_sha256 or sha or ""
        opts = self.resolved_options
        check_data(data, opts, sure=self.sure, n_clusters=self.n_clusters)
        trainer = PartialAlignment(data, opts, seed=self.seed, device=device, sure=self.sure, n_clusters=self.n_clusters)
        name = "sure" if self.sure else "mvcln"
        config = {"method": name, "seed": self.seed, "n_clusters": self.n_clusters, **opts.to_dict()}
        ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
        self.resumed_ = bool(ckpt is not None and ckpt.exists())
        if self.resumed_:
            trainer.restore(ckpt, config, sha)  # type: ignore[arg-type]
            if runlog is not None:
                runlog.restore(list(trainer.history))
        t0 = time.perf_counter()
        while trainer.epoch < opts.epochs:
            row = trainer.run_epoch()
            if runlog is not None:
                runlog.append(row)
            e = trainer.epoch
            if ckpt is not None and opts.checkpoint_every and e > 0 and e % opts.checkpoint_every == 0 and e < opts.epochs:
                trainer.save(ckpt, config, sha)
        ev = trainer.evaluate()
        if ckpt is not None:
            trainer.save(ckpt, config, sha)
        self.fit_seconds_ = time.perf_counter() - t0
        self.trainer_, self.model_, self.data_ = trainer, trainer.model, data
        self.evaluation_ = ev
        self.kmeans_ = ev["kmeans"]
        self.metrics_: dict[str, dict[str, float]] = ev["metrics"]
        self.labels_ = np.concatenate([ev["views"]["train"]["row_a"], ev["views"]["train"]["row_b"]])
        self.history_ = list(trainer.history)
        self.n_clusters_ = trainer.n_clusters
        self.repairing_ = partner_scores(trainer, ev, hidden_partners(data) if _has_partners(data) else None)
        return self

    # -- after fit --------------------------------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "trainer_"):
            raise NotFittedError(f"This {self._name()} instance is not fitted yet; call fit(...) before {method}().")

    def _arranged(self, X: Any, method: str) -> tuple[SplitTensors | None, np.ndarray, torch.Tensor]:
        """``(split, row clusters, per-row k-means features)`` for a split name, a SplitTensors or ``(x_a, x_b)``."""
        self._check_fitted(method)
        t = self.trainer_
        if isinstance(X, str):
            if X not in self.evaluation_["views"]:
                raise DataError(f"{self._name()}.{method}: no split {X!r} in the fitted data; splits: "
                                f"{list(self.evaluation_['views'])}.")
            v, slots = self.evaluation_["views"][X], self.evaluation_["slots"][X]
            return self.data_.splits[X], np.concatenate([v["row_a"], v["row_b"]]), _row_features(v["features"], slots,
                                                                                             self.data_.splits[X], t)
        split = X if isinstance(X, SplitTensors) else self._split_from_arrays(X, method) if isinstance(X, tuple) and len(X) == 2 else None
        if split is None:
            raise DataError(f"{self._name()}.{method}: expected a split name ('train', 'test'), a SplitTensors or "
                            f"(x_a, x_b) (two arrays of unlinked rows), got {type(X).__name__}.")
        dims = {m: int(split.x[m].shape[1]) for m in (t.a, t.b)} if set(split.x) >= {t.a, t.b} else None
        if dims != {m: self.data_.dims[m] for m in (t.a, t.b)}:
            raise DataError(f"{self._name()}.{method}: the rows have feature dims {dims}; the model was fitted on "
                            f"{ {m: self.data_.dims[m] for m in (t.a, t.b)} }.")
        for m in (t.a, t.b):
            if split.n(m) == 0:
                raise DataError(f"{self._name()}.{method}: no rows of modality '{m}'; every row is paired or re-paired "
                                "across both modalities.")
        gen = torch.Generator().manual_seed(self.seed + 1)
        ha, hb = t.embed(split)
        slots, ea, eb = t.arrange(split, ha, hb, gen)
        feats = t.features(split, slots, ea, eb, self.evaluation_["stats"])
        pred = np.asarray(self.kmeans_.predict(feats).cpu())
        row_a, row_b = np.full(split.n(t.a), -1), np.full(split.n(t.b), -1)
        row_a[slots.a[slots.a >= 0]] = pred[slots.a >= 0]
        row_b[slots.b[slots.b >= 0]] = pred[slots.b >= 0]
        return split, np.concatenate([row_a, row_b]), _row_features(feats, slots, split, t)

    def _split_from_arrays(self, X: tuple[Any, Any], method: str) -> SplitTensors:
        t = self.trainer_
        xs = {}
        for m, arr in zip((t.a, t.b), X):
            x = torch.as_tensor(np.asarray(arr.cpu() if isinstance(arr, torch.Tensor) else arr), dtype=torch.float32)
            if x.ndim != 2:
                raise DataError(f"{self._name()}.{method}: modality '{m}' rows of shape {tuple(x.shape)}; expected N × d.")
            xs[m] = x.to(t.device)
        none = {m: torch.full((len(xs[m]),), -1, dtype=torch.long, device=t.device) for m in xs}
        return SplitTensors(x=xs, y=none, pair=none, ids={m: np.arange(len(xs[m])).astype(str) for m in xs})

    def predict(self, X: Any = "test") -> np.ndarray:
        """Cluster ids per row: the first modality's rows, then the second's (``labels_`` for ``"train"``).
        A split name gives the fit's evaluation; a SplitTensors or ``(x_a, x_b)`` (rows all unlinked) is
        re-paired or imputed as the fit's splits were (seeded by ``seed``) and clustered by ``kmeans_``."""
        return self._arranged(X, "predict")[1]

    def transform(self, X: Any = "test") -> np.ndarray:
        """What k-means sees, per row (rows as in :meth:`predict`): the features of the row's pair
        (``cluster_on``: ``[h_a, h_b]``, the standardized inputs, or both)."""
        return self._arranged(X, "transform")[2].cpu().numpy()

    def fit_predict(self, X: Any, y: None = None, **fit_kw: Any) -> np.ndarray:
        return self.fit(X, **fit_kw).labels_

    def score(self, X: Any = "test") -> dict[str, float]:
        """The seven clustering metrics of :meth:`predict` against the split's labels."""
        from .metrics import clustering_metrics

        if isinstance(X, tuple):
            raise DataError(f"{self._name()}.score: needs labels; pass a split name or a SplitTensors.")
        split, pred, _ = self._arranged(X, "score")
        t = self.trainer_
        assert split is not None
        y = np.concatenate([split.y[m].cpu().numpy() for m in (t.a, t.b)])
        return clustering_metrics(y, pred)


class SURE(MvCLN):
    """SURE (:class:`MvCLN` plus decoders and imputed halves): also fits ``drop`` / ``zero`` stores."""

    sure: ClassVar[bool] = True


def _has_partners(data: BenchmarkData) -> bool:
    from .mvcln import store_mode

    return store_mode(data) in ("decouple", None)


def _row_features(feats: torch.Tensor, slots: Any, split: SplitTensors, t: Any) -> torch.Tensor:
    """Per-slot features spread to rows (first modality's rows, then the second's)."""
    pos_a = torch.as_tensor(_slot_of(slots.a, split.n(t.a)), device=feats.device)
    pos_b = torch.as_tensor(_slot_of(slots.b, split.n(t.b)), device=feats.device)
    return torch.cat([feats[pos_a], feats[pos_b]])


def _slot_of(rows: np.ndarray, n: int) -> np.ndarray:
    pos = np.zeros(n, dtype=np.int64)
    have = rows >= 0
    pos[rows[have]] = np.flatnonzero(have)
    return pos
