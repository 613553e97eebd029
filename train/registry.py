"""The train stage's registries: clustering/retrieval **methods** and DM2C **variants**.

- A *method* (``[train] method = "<name>"``) is a training backend with its own options table
  (``[train] method_options``): ``dm2c`` (DM2C and its variants, the default) and the backends
  registered beside it (``mixbench list methods``). A method is a :class:`Method`: a ``run``
  function over the loaded benchmark that returns a :class:`MethodResult`; the stage
  (:mod:`train.stage`) owns everything around it (run folder, lock, reuse, baselines, lineage,
  metrics.json, report, run.json).
- A *variant* (``[train] variant = "<name>"``, DM2C only) is a named :class:`train.dm2c.FaithfulTrainer`
  subclass with its own options table (``[train] variant_options``).

Both registries answer an unknown name with the closest match and the list of what exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from mixbench.config import Config
from mixbench.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .config import TrainConfig
    from .data import BenchmarkData
    from .dm2c import FaithfulTrainer
    from .runlog import RunLog

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry, with one error shape for unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, where: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{where} = {name!r}: unknown {self.kind}.{hint} Available: {', '.join(self.names())}.")
        return self._entries[name]

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries[n] for n in self.names())


@dataclass(frozen=True)
class NoOptions(Config):
    """A variant or method without options."""

    section: ClassVar[str] = "train.options"


# ---------------------------------------------------------------------------------------------
# DM2C variants
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A named DM2C trainer: ``trainer`` is a :class:`FaithfulTrainer` subclass (or the class itself)
    and ``options_cls`` the config class of ``[train] variant_options``."""

    name: str
    trainer: type[FaithfulTrainer]
    options_cls: type[Config]
    description: str


VARIANTS: Registry[Variant] = Registry("variant")


def register_variant(variant: Variant) -> None:
    """Add a variant to the registry (``mixbench list variants`` shows it)."""
    VARIANTS.register(variant.name, variant)


def list_variants() -> list[str]:
    return VARIANTS.names()


def get_variant(name: str, where: str = "[train] variant") -> Variant:
    return VARIANTS.get(name, where)


# ---------------------------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------------------------


@dataclass
class MethodResult:
    """What a method's ``run`` hands back to the stage.

    ``metrics``: ``{row name: {split: {metric: value}}}`` — the rows of the results table (a
    clustering method reports the seven metrics of :mod:`train.metrics`; a retrieval method its
    mAP figures); the stage adds the k-means baselines when ``[train] baselines`` is on and the
    method's ``clustering`` is true. ``final_epoch``: the epoch the figures are from (the last
    one; never a best epoch chosen with labels). ``extra``: further top-level fields of
    metrics.json (for example ``"repairing"``); ``report_sections``: markdown blocks added to
    report.md, in order. ``embeddings``: arrays for ``embeddings.npz``. Per-epoch rows go through
    ``ctx.runlog`` (epochs.jsonl/csv and the curves). ``timings``: seconds per part.
    ``plot_view``: ``embedding``, ``y_true``, ``y_pred``, ``modality`` of the evaluated split for
    the embedding map and confusion plots. ``table``: the markdown the CLI prints for a method
    whose metrics are not the clustering seven (default: the clustering tables)."""

    metrics: dict[str, dict[str, dict[str, float]]]
    final_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    report_sections: list[str] = field(default_factory=list)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    resumed: bool = False
    plot_view: dict[str, np.ndarray] | None = None
    table: str | None = None


@dataclass(frozen=True)
class RunContext:
    """What the stage gives a method's ``run``: the config (``cfg.method_options`` already
    validated into ``options``), the device, the run folder and its per-epoch log, and the
    checkpoint folder (``None``: no checkpoints, e.g. from the estimator without a folder).
    ``input_sha256`` identifies the benchmark store (checkpoints record it)."""

    cfg: TrainConfig
    options: Config
    device: torch.device
    out: Path | None
    runlog: RunLog | None
    checkpoint_dir: Path | None
    input_sha256: str


@dataclass(frozen=True)
class Method:
    """A training backend of the train stage.

    ``run(data, ctx)`` trains on the loaded benchmark and evaluates it (final epoch).
    ``clustering``: the results are cluster assignments (the k-means baselines and the headroom
    figures go beside them); false for retrieval methods. ``check(data, ctx)`` (optional) refuses
    a benchmark the method cannot use before any work, with a one-line :class:`DataError`.
    ``shared_dim``: every modality must have one feature dimension (``mixbench run`` refuses
    ``[embed] dim = 0`` on modalities of different dims right after prep, not at train).
    ``load(store, device, options)`` (optional) loads the store the method's own way (retrieval
    methods: the query/database protocol, multi-hot labels); default ``BenchmarkData.from_store``.
    What it returns must have ``modalities``, ``classes``, ``dims``, ``splits`` (each with
    ``n(modality)``) and ``warnings``."""

    name: str
    run: Callable[[BenchmarkData, RunContext], MethodResult]
    options_cls: type[Config] = NoOptions
    description: str = ""
    clustering: bool = True
    family: str = ""
    check: Callable[[BenchmarkData, RunContext], None] | None = None
    shared_dim: bool = False
    load: Callable[[Any, torch.device, Config], Any] | None = None


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method) -> None:
    """Add a training method (``mixbench list methods`` shows it)."""
    METHODS.register(method.name, method)


def list_methods() -> list[str]:
    return METHODS.names()


def get_method(name: str, where: str = "[train] method") -> Method:
    return METHODS.get(name, where)


def method_options(cfg: TrainConfig, options: Mapping[str, Any] | None = None) -> Config:
    """``[train] method_options`` checked against the chosen method's options class."""
    method = get_method(cfg.method, where=f"[{cfg.section}] method")
    return method.options_cls.from_dict(dict(options if options is not None else cfg.method_options),
                                        where=f"[{cfg.section}] method_options ({cfg.method})")
