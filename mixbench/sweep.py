"""``mixbench sweep``: ratios × strategies × seeds over one recipe, one table and one plot.

prep and embed run once (they do not depend on the grid) and are shared by every cell; each
cell (strategy, ratio, seed) gets its own unpair store and train run under
``<out>/cells/<strategy>/r<ratio>/s<seed>/``. The seed seeds both the selection (unpair) and
training. Test rows are treated as the recipe says (``[unpair] test_ratio``) in every cell, so
all cells are evaluated on the same kind of test set. Finished cells are reused on a rerun.

``methods`` (CLI ``--methods dm2c,dm2c-linked,mvcln,mvcln-plus,sure``) adds a method axis: every
cell's one unpair store is trained by each method in turn (``train-<label>/`` beside ``unpair/``),
and the table and the plot hold them all beside the k-means baselines (taken from the cell's first
run; every run computes the same ones on the same store). A method that refuses a cell's store
(say ``mvcln`` at ratio 1, no link left) is a "—" in the table, its one-line reason in ``sweep.json``.
"""

from __future__ import annotations

import csv
import io
import logging
import statistics
from pathlib import Path
from typing import Any

from mixbench.store.manifest import atomic_write_bytes, atomic_write_json, atomic_write_text

from .errors import ConfigError
from .recipe import Recipe, load_recipe
from .run import stage_configs
from .stagekit import OutputLock

log = logging.getLogger(__name__)

SCORE_CACHE = "scores"  # the sweep folder's loss-scorer results, one per seed (unpair.plan_split's cache)
SUMMARY_METRICS = ("acc", "nmi", "ari", "f_score", "purity")
RETRIEVAL_METRICS = ("map_mean", "map_i2t", "map_t2i", "map_at_r_mean", "map_at_r_i2t", "map_at_r_t2i")
"""Metrics of the retrieval methods (train.retrieval): ``--metric map_mean`` for a retrieval recipe."""
ALL_METRICS = SUMMARY_METRICS + ("precision", "recall") + RETRIEVAL_METRICS


METRIC_LABELS = {"map_mean": "mAP (I→T and T→I averaged)", "map_i2t": "mAP I→T", "map_t2i": "mAP T→I",
                 "map_at_r_mean": "mAP@R (I→T and T→I averaged)", "map_at_r_i2t": "mAP@R I→T", "map_at_r_t2i": "mAP@R T→I"}


def _label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.upper())


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def run_sweep(
    recipe: str | Path | Recipe,
    *,
    ratios: list[float],
    strategies: list[str],
    seeds: int = 3,
    out: str | Path | None = None,
    metric: str | None = None,
    method: str | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    modes: list[str] | None = None,
    jobs: int = 1,
    batched: bool = False,
    methods: list[str] | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the grid; returns ``{"table", "table_path", "plot_path", "cells"}``.

    ``metric``: the figure tabulated and plotted (default: ``acc`` for clustering methods,
    ``map_mean`` for retrieval methods). ``method``: the row the table leads with and the plot draws (default: the recipe's
    ``[train] method``). ``modes``: unpairing modes to sweep as well (default: the recipe's
    ``[unpair] mode`` alone, cells under ``cells/<strategy>/...``; given: ``cells/<mode>/<strategy>/...``
    and a mode column).
    ``batched``: before the cells run, train the cells' faithful DM2C runs as at most ``jobs`` stacked
    programs (:class:`train.dm2c_stacked.StackedTrainer`, one per worker; cells of any ratio,
    strategy and seed stack, grouped by store size (:func:`stack_groups`), their stores padded to
    the longest of their program); each run's final
    checkpoint goes into its cell's run folder, where the train stage resumes it as finished and
    writes the baselines, metrics and report as usual. Equal to the one-by-one runs up to float
    rounding (see train.dm2c_stacked), not bit for bit.
    ``jobs``: cells run at a time, each in its own worker process (one CPU thread each for the
    small models, as a solo run uses): the results are those of running them one by one.
    ``methods``: method specs trained on every cell (:func:`method_specs`: ``NAME`` or ``NAME:VARIANT``,
    or a bare variant name such as ``dm2c-linked`` or ``mvcln-plus``); ``method_options``: per method
    name, its ``[train] method_options`` (over the recipe's when the recipe names the same method)."""
    import embed
    import prep
    import unpair

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if overrides:
        recipe = recipe.with_overrides(overrides)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: must be at least 1.")
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be at least 1.")
    if metric is not None and metric not in ALL_METRICS:
        raise ConfigError(f"--metric {metric!r}: must be one of {', '.join(ALL_METRICS)}.")
    for m in modes or []:
        if m not in ("drop", "zero", "decouple"):
            raise ConfigError(f"--mode {m!r}: must be one of drop, zero, decouple.")
    known = unpair.list_strategies()
    for s in strategies:
        if s not in known:
            raise ConfigError(f"--strategy {s!r}: unknown; available: {', '.join(known)}.")
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"--ratio {r}: must be in [0, 1].")
    configs = stage_configs(recipe)  # validates everything before any work
    configs["train"] = _eval_with_jobs(configs["train"], jobs)
    specs = method_specs(methods, configs["train"], method_options or {}) if methods else None
    if specs:
        configs["methods"] = specs
        method = method or specs[0][0]
    method = method or configs["train"].method  # the table's first row and the plot's line (dm2c, tac, ...)
    if metric is None:  # the method family's headline metric
        from train.registry import get_method

        first = specs[0][1].method if specs else configs["train"].method
        metric = "map_mean" if get_method(first).family == "retrieval" else "acc"
    retrieval = metric in RETRIEVAL_METRICS
    root = Path(out) if out is not None else Path("out") / f"{recipe.name}-sweep"
    with OutputLock(root, "sweep"):  # one sweep per folder (its stages lock their own folders too)
        prep.prepare(configs["prep"], root / "prep", base_dir=recipe.base_dir, overwrite=True)
        embed.embed(root / "prep", root / "embed", configs["embed"], base_dir=recipe.base_dir, overwrite=True)

        mode_list: list[str | None] = list(modes) if modes else [None]
        grid = [(mode, strategy, ratio, seed) for mode in mode_list for strategy in strategies
                for ratio in ratios for seed in range(seeds)]
        with _Workers(jobs) as workers:
            _score_first(root, configs, grid, workers)
            if batched:
                _stack_groups(root, configs, grid, workers)
            cells = _run_cells(root, configs, grid, workers)
        if modes:  # one table row group per (mode, strategy): fold the mode into the strategy label
            for c in cells:
                c["strategy"] = f"{c['mode']} · {c['strategy']}"
            strategies = [f"{m} · {s}" for m in modes for s in strategies]
        summary = _summarise(cells, strategies, ratios, method)
        labels = [label for label, _ in specs] if specs else None
        table = _table(summary, strategies, ratios, metric, method, seeds, order=labels)
        refused = _refusals(cells)
        if refused:
            table += "\n\n" + "\n".join(f"— {m}: {why}" for m, why in refused.items())
        atomic_write_json(root / "sweep.json", {"recipe": str(recipe.path), "ratios": ratios, "strategies": strategies,
                                                "seeds": seeds, "method": method, "metric": metric,
                                                "methods": labels, "method_configs": {label: cfg.to_dict() for label, cfg in specs}
                                                if specs else None,
                                                "modes": modes, "cells": cells, "summary": summary})
        atomic_write_text(root / "sweep.csv", _csv(summary))
        atomic_write_text(root / "sweep.md", table + "\n")
        plot_path = root / "sweep.png"
        _plot(summary, strategies, ratios, metric, method, plot_path, baselines=not retrieval, methods=labels)
        return {"table": table, "table_path": str(root / "sweep.md"), "plot_path": str(plot_path), "cells": cells,
                "summary": summary}


def _run_cell(root: Path, configs: dict[str, Any], mode: str | None, strategy: str, ratio: float,
              seed: int) -> dict[str, Any]:
    """One cell: its unpair store and its training run under
    ``root/cells/[<mode>/]<strategy>/r<ratio>/s<seed>`` (``mode`` None: the recipe's mode)."""
    import train
    import unpair

    cell = _cell_dir(root, mode, strategy, ratio, seed)
    ucfg = configs["unpair"].replace(ratio=ratio, strategy=strategy, seed=seed, **({"mode": mode} if mode else {}))
    unpair.unpair(root / "embed", cell / "unpair", ucfg, overwrite=True, score_cache=root / SCORE_CACHE)
    where = {"strategy": strategy, "ratio": ratio, "seed": seed, **({"mode": mode} if mode else {})}
    specs = configs.get("methods")
    if not specs:  # the recipe's method alone
        tcfg = configs["train"].replace(seed=seed)
        metrics = train.train(cell / "unpair", cell / "train", tcfg, overwrite=True)["metrics"]
        return {**where, "run_dir": str(cell / "train"), "methods": {m: v for m, v in metrics["methods"].items()},
                "seconds": metrics.get("wall_time", {}).get("total"), "peak_rss_mib": _peak_rss_mib()}
    from .errors import DataError

    rows: dict[str, Any] = {}
    run_dirs: dict[str, str] = {}
    seconds: dict[str, float | None] = {}
    refused: dict[str, str] = {}
    for label, tcfg in specs:
        run_dir = cell / f"train-{label}"
        try:
            metrics = train.train(cell / "unpair", run_dir, tcfg.replace(seed=seed), overwrite=True)["metrics"]
        except DataError as exc:  # the method refuses this store (one line): a "—" in the table
            log.info("sweep cell %s: %s refused: %s", where, label, exc)
            refused[label] = str(exc)
            continue
        own = [m for m in metrics["methods"] if not m.startswith("kmeans")]
        for m in own:  # the method's row(s) under its label (dm2c and dm2c-linked both report "dm2c")
            rows[label if len(own) == 1 else f"{label}/{m}"] = metrics["methods"][m]
        for m, v in metrics["methods"].items():  # baselines: the cell's first run's (all runs compute the same)
            if m.startswith("kmeans"):
                rows.setdefault(m, v)
        run_dirs[label] = str(run_dir)
        seconds[label] = metrics.get("wall_time", {}).get("total")
    return {**where, "run_dir": run_dirs, "methods": rows, "seconds": sum(v or 0.0 for v in seconds.values()),
            "method_seconds": seconds, "refused": refused, "peak_rss_mib": _peak_rss_mib()}


def method_specs(specs: list[str], base: Any, options: dict[str, dict[str, Any]]) -> list[tuple[str, Any]]:
    """``(label, [train] config)`` per method spec, checked before any work.

    A spec is ``NAME`` (a registered method, e.g. ``mvcln``), ``NAME:VARIANT`` (``dm2c:dm2c-linked``: DM2C's
    ``[train] variant``; ``mvcln:mvcln-plus``: the method's ``method_options.variant``) or a bare variant
    name (``dm2c-linked``, ``mvcln-plus``) when exactly one method has it, or one is named in it (``mvcln-plus``
    is also ``sure``'s: ``sure:mvcln-plus``). The label is the variant when one
    is named, else the method. Recipe keys of ``[train]`` carry over (DM2C's schedule, ``seed`` is the
    cell's); ``variant_options`` and ``method_options`` only to the method (and variant) the recipe names,
    ``options[NAME]`` over them."""
    from train.registry import get_method, list_methods, list_variants

    known = set(list_methods())
    dm2c_variants = set(list_variants())
    for name in options:
        if name not in known:
            raise ConfigError(f"--method-options {name}=...: no method {name!r}; methods: {', '.join(sorted(known))}.")
    out: list[tuple[str, Any]] = []
    for spec in specs:
        name, _, variant = spec.partition(":")
        if name not in known:  # a bare variant name
            owners = (["dm2c"] if name in dm2c_variants else []) + sorted(
                m for m in known if m != "dm2c" and name in _option_choices(get_method(m).options_cls, "variant"))
            named = [m for m in owners if name.startswith(m + "-")]  # mvcln-plus: also sure's, but named for mvcln
            owners = named if len(named) == 1 else owners
            if len(owners) != 1 or variant:
                raise ConfigError(f"--methods {spec!r}: not a method, nor a variant of exactly one method "
                                  f"(methods: {', '.join(sorted(known))}; DM2C variants: {', '.join(sorted(dm2c_variants))}); "
                                  "write METHOD or METHOD:VARIANT.")
            name, variant = owners[0], name
        if name == "dm2c":
            v = variant or "faithful"
            keep = base.variant_options if base.method == "dm2c" and base.variant == v else {}
            cfg = base.replace(method="dm2c", variant=v, variant_options=keep, method_options={})
        else:
            opts = {**(base.method_options if base.method == name else {}), **options.get(name, {})}
            if variant:
                if variant not in _option_choices(get_method(name).options_cls, "variant"):
                    raise ConfigError(f"--methods {spec!r}: method {name!r} has no variant {variant!r}.")
                opts["variant"] = variant
            cfg = base.replace(method=name, variant="faithful", variant_options={}, method_options=opts)
        try:
            cfg.validate()
        except ConfigError as exc:
            raise ConfigError(f"--methods {spec!r}: {exc}") from None
        label = variant if variant and variant != "faithful" else name
        if any(label == other for other, _ in out):
            label = spec
        if any(label == other for other, _ in out):
            raise ConfigError(f"--methods: {spec!r} is given twice.")
        out.append((label, cfg))
    return out


def _option_choices(options_cls: Any, field: str) -> tuple[Any, ...]:
    """The allowed values of an option (empty when it has none or no such field)."""
    from dataclasses import fields

    for f in fields(options_cls):
        if f.name == field:
            return tuple(f.metadata.get("choices") or ())
    return ()


def _refusals(cells: list[dict[str, Any]]) -> dict[str, str]:
    """One reason per method that refused some cell, with the cells' ratios."""
    out: dict[str, str] = {}
    for m in sorted({m for c in cells for m in c.get("refused", {})}):
        rs = sorted({c["ratio"] for c in cells if m in c.get("refused", {})})
        why = next(c["refused"][m] for c in cells if m in c.get("refused", {}))
        out[m] = f"refused at r = {', '.join(f'{r:g}' for r in rs)}: {why}"
    return out


def _peak_rss_mib() -> float | None:
    """Peak resident memory of this process (the worker's, with ``jobs`` > 1), in MiB: since
    :func:`_reset_peak_rss` where Linux allows it (``VmHWM``), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _reset_peak_rss() -> None:
    """Reset this process's peak-memory mark to its current resident memory (Linux ≥ 4.0,
    ``/proc/self/clear_refs``), so that a reused worker's earlier peaks do not count for the next cell
    (memory the worker still holds from earlier work does); elsewhere the peak stays the process's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _cell_worker(args: tuple[Path, dict[str, Any], str | None, str, float, int]) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _reset_peak_rss()
    return _run_cell(*args)


def _cell_dir(root: Path, mode: str | None, strategy: str, ratio: float, seed: int) -> Path:
    return root / "cells" / (mode or "") / strategy / f"r{ratio:g}" / f"s{seed}"


def _unpair_cell(args: tuple[Path, dict[str, Any], str | None, str, float, int]) -> None:
    import unpair

    root, configs, mode, strategy, ratio, seed = args
    ucfg = configs["unpair"].replace(ratio=ratio, strategy=strategy, seed=seed, **({"mode": mode} if mode else {}))
    unpair.unpair(root / "embed", _cell_dir(root, mode, strategy, ratio, seed) / "unpair", ucfg, overwrite=True,
                  score_cache=root / SCORE_CACHE)


def _score_first(root: Path, configs: dict[str, Any], grid: list[tuple[str | None, str, float, int]],
                 workers: _Workers) -> None:
    """Unpair one loss-ranked cell per seed first, ``jobs`` at a time, so that the scorer trains once
    per seed (its scores do not depend on the ratio, strategy or mode; they go to ``root/scores``) and
    every other cell of that seed reads them."""
    from unpair.strategies import get_strategy

    first: dict[int, tuple[str | None, str, float, int]] = {}
    for cell in grid:
        if get_strategy(cell[1]).needs_scores:
            first.setdefault(cell[3], cell)
    if first:
        log.info("sweep: training the loss scorer once per seed (%d seed(s))", len(first))
        workers.map(_unpair_cell, [(root, configs, *cell) for cell in first.values()])


def _stack_group(args: tuple[Path, dict[str, Any], list[tuple[str | None, str, float, int]]]) -> int:
    """Train a group of cells' runs (any ratio, strategy and seed) as one stacked program; their final
    checkpoints go to ``<cell>/train/checkpoints/last.pt``. Returns the runs trained."""
    from mixbench.device import resolve_device
    from mixbench.store.shards import Store
    from train.data import BenchmarkData
    from train.dm2c import FaithfulTrainer
    from train.dm2c_stacked import StackedTrainer

    root, configs, cells = args
    trainers = []
    for mode, strategy, ratio, seed in cells:
        cell = _cell_dir(root, mode, strategy, ratio, seed)
        if (cell / "train" / "metrics.json").exists() or (cell / "train" / "checkpoints" / "last.pt").exists():
            continue  # finished or interrupted earlier: the train stage reuses or resumes it on its own
        cfg = configs["train"].replace(seed=seed)
        store = Store(cell / "unpair")
        data = BenchmarkData.from_store(store, device=resolve_device(cfg.device))
        (cell / "train" / "checkpoints").mkdir(parents=True, exist_ok=True)
        trainers.append(FaithfulTrainer(cfg, data, checkpoint_dir=cell / "train" / "checkpoints",
                                        input_sha256=store.manifest_sha256))
    if trainers:
        StackedTrainer(trainers).run()
    return len(trainers)


def _stack_groups(root: Path, configs: dict[str, Any], grid: list[tuple[str | None, str, float, int]],
                  workers: _Workers) -> None:
    """``--batched``: every cell's unpair store, then the cells' training runs as at most ``jobs``
    stacked DM2C programs grouped by store size (:func:`stack_groups`), one per worker (faithful DM2C
    only; other methods train cell by cell)."""
    tcfg = configs["train"]
    if configs.get("methods") or tcfg.method != "dm2c" or tcfg.variant != "faithful":
        log.warning("sweep --batched stacks faithful DM2C runs only; training %s cell by cell",
                    "the --methods" if configs.get("methods") else f"method {tcfg.method!r} variant {tcfg.variant!r}")
        return
    workers.map(_unpair_cell, [(root, configs, *cell) for cell in grid])  # the scored-first cells are reused
    # any cells stack (same config but the seed; stores of one feature dim): one program per job,
    # the cells split by store size so that the programs take about as long as each other
    from mixbench.store.shards import Store

    rows = []
    for cell in grid:
        store = Store(_cell_dir(root, *cell) / "unpair", verify=False)
        rows.append(sum(store.rows("train", m) for m in store.modalities))
    groups = stack_groups(rows, workers.jobs)
    log.info("sweep --batched: %d cells as %d stacked program(s) of %s run(s)", len(grid), len(groups),
             "/".join(str(len(g)) for g in groups))
    workers.map(_stack_group, [(root, configs, [grid[i] for i in g]) for g in groups])


#: A stacked step's cost grows with the runs in it: about ``1 + STACK_RUN_COST * runs`` solo steps
#: (measured on CPU, ``bench/dm2c.py --batched``: 5 runs 1.7×, 15 runs 3.1× one run's time).
STACK_RUN_COST = 0.145


def stack_groups(rows: list[int], jobs: int) -> list[list[int]]:
    """Split runs into at most ``jobs`` stacked programs (lists of indices into ``rows``, each in
    index order) that take about the same time. A program steps through its largest store (``rows``:
    its pooled train rows), every step costing ``1 + STACK_RUN_COST * runs``; so the runs are sorted by
    size and cut into contiguous groups that minimise the largest group's cost (binary search on the
    cost, greedy cut). Stores of one size give groups of equal counts."""
    order = sorted(range(len(rows)), key=lambda i: (-rows[i], i))
    if not order:
        return []
    jobs = max(1, min(jobs, len(order)))

    def cost(first: int, n: int) -> float:
        return rows[order[first]] * (1 + STACK_RUN_COST * n)

    def cuts(budget: float) -> list[list[int]] | None:
        groups: list[list[int]] = []
        start = 0
        while start < len(order):
            n = 1
            while start + n < len(order) and cost(start, n + 1) <= budget:
                n += 1
            groups.append(order[start:start + n])
            start += n
            if len(groups) > jobs:
                return None
        return groups

    lo, hi = 0.0, cost(0, len(order))
    best = cuts(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        got = cuts(mid)
        if got is None:
            lo = mid
        else:
            hi, best = mid, got
    assert best is not None
    return [sorted(g) for g in best]


def _eval_with_jobs(tcfg: Any, jobs: int) -> Any:
    """``[train] eval_background = "auto"`` when cells run ``jobs`` at a time: a run's evaluation
    worker process needs a core of its own, so with fewer than two cores per job the runs evaluate
    in their own process (``off``; the results are the same either way)."""
    from mixbench.device import available_cores

    if tcfg.eval_background != "auto" or jobs == 1 or 2 * jobs <= available_cores():
        return tcfg
    return tcfg.replace(eval_background="off")


class _Workers:
    """The sweep's ``jobs`` worker processes, started once (spawned: no forked torch thread pools) on
    first use and reused by every phase (scorer, unpair stores, stacked programs, cells), so each
    phase does not pay the workers' start and imports again. ``jobs`` 1: everything in this process."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: Any = None

    def pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def map(self, fn: Any, items: list[Any]) -> list[Any]:
        """``fn`` over ``items``, in order: here (``jobs`` 1 or one item) or in the workers."""
        if self.jobs == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        return list(self.pool().map(fn, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _run_cells(root: Path, configs: dict[str, Any], grid: list[tuple[str | None, str, float, int]],
               workers: _Workers) -> list[dict[str, Any]]:
    """Every cell ``(mode, strategy, ratio, seed)`` of ``grid`` (in grid order), ``jobs`` at a time."""
    total = len(grid)
    jobs = workers.jobs
    if jobs == 1 or total == 1:
        cells = []
        for done, (mode, strategy, ratio, seed) in enumerate(grid, 1):
            log.info("sweep cell %d/%d: %sstrategy=%s ratio=%g seed=%d", done, total,
                     f"mode={mode} " if mode else "", strategy, ratio, seed)
            cells.append(_run_cell(root, configs, mode, strategy, ratio, seed))
        return cells
    from concurrent.futures import as_completed

    log.info("sweep: %d cells, %d at a time", total, jobs)
    results: dict[int, dict[str, Any]] = {}
    futures = {workers.pool().submit(_cell_worker, (root, configs, *cell)): i for i, cell in enumerate(grid)}
    for future in as_completed(futures):
        i = futures[future]
        results[i] = future.result()
        mode, strategy, ratio, seed = grid[i]
        log.info("sweep cell %d/%d done: %sstrategy=%s ratio=%g seed=%d", len(results), total,
                 f"mode={mode} " if mode else "", strategy, ratio, seed)
    return [results[i] for i in range(total)]


def _summarise(cells: list[dict[str, Any]], strategies: list[str], ratios: list[float], method: str) -> list[dict[str, Any]]:
    rows = []
    for strategy in strategies:
        for ratio in ratios:
            group = [c for c in cells if c["strategy"] == strategy and c["ratio"] == ratio]
            for m in sorted({k for c in group for k in c["methods"]}):
                for split in ("test", "train"):
                    row: dict[str, Any] = {"strategy": strategy, "ratio": ratio, "method": m, "split": split, "n": len(group)}
                    for metric in ALL_METRICS:
                        vals = [c["methods"][m][split][metric] for c in group
                                if split in c["methods"].get(m, {}) and metric in c["methods"][m][split]]
                        row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(vals)
                    rows.append(row)
    return rows


def _table(summary: list[dict[str, Any]], strategies: list[str], ratios: list[float], metric: str, method: str, seeds: int,
           order: list[str] | None = None) -> str:
    """Markdown: one row per (strategy, method), one column per ratio, mean ± std of the test metric
    (``order``: the methods first, in this order, then the baselines)."""
    tested = {r["method"] for r in summary if r["split"] == "test" and r[f"{metric}_mean"] == r[f"{metric}_mean"]}
    first = order or [method]
    methods = first + sorted(m for m in tested if m not in first)  # e.g. kmeans-concat has no test rows at test_ratio 1
    head = f"test {_label(metric)} (mean ± std over {seeds} seed(s))"
    lines = ["| strategy | method | " + " | ".join(f"r = {r:g}" for r in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for strategy in strategies:
        for m in methods:
            cells = []
            for ratio in ratios:
                row = next((x for x in summary if x["strategy"] == strategy and x["ratio"] == ratio
                            and x["method"] == m and x["split"] == "test"), None)
                if row is None or row[f"{metric}_mean"] != row[f"{metric}_mean"]:  # absent or NaN (no such rows)
                    cells.append("—")
                else:
                    cells.append(f"{row[f'{metric}_mean']:.3f} ± {row[f'{metric}_std']:.3f}")
            lines.append(f"| {strategy} | {m} | " + " | ".join(cells) + " |")
    return head + "\n\n" + "\n".join(lines)


def _csv(summary: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if summary:
        w = csv.DictWriter(buf, fieldnames=list(summary[0]))
        w.writeheader()
        for row in summary:
            w.writerow(row)
    return buf.getvalue()


def _plot(summary: list[dict[str, Any]], strategies: list[str], ratios: list[float], metric: str, method: str, path: Path,
          baselines: bool = True, methods: list[str] | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        log.warning("matplotlib is not installed; no sweep plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if methods:  # a method axis: one colour per method (and baseline), one line style per strategy
        drawn = methods + (["kmeans-pooled", "kmeans-linked"] if baselines else [])
        styles = ["-o", "--s", ":^", "-.v", "-x", "--d"]
        for mi, m in enumerate(drawn):
            for si, strategy in enumerate(strategies):
                points = [x for r in ratios for x in summary if x["strategy"] == strategy and x["ratio"] == r
                          and x["method"] == m and x["split"] == "test" and x[f"{metric}_mean"] == x[f"{metric}_mean"]]
                if not points:
                    continue
                ax.errorbar([x["ratio"] for x in points], [x[f"{metric}_mean"] for x in points],
                            yerr=[x[f"{metric}_std"] for x in points], fmt=styles[si % len(styles)],
                            color=colours[mi % len(colours)], capsize=3, alpha=0.6 if m.startswith("kmeans") else 1.0,
                            label=m if len(strategies) == 1 else f"{m}, {strategy}")
        ax.set_title(f"test {_label(metric)} against unpairing ratio", fontsize=9)
        strategies = []  # drawn
    for si, strategy in enumerate(strategies):
        colour = colours[si % len(colours)]
        lines = ((method, "-o"), ("kmeans-pooled", "--x"), ("kmeans-linked", ":s")) if baselines else ((method, "-o"),)
        for m, style in lines:
            found = [(r, next((x for x in summary if x["strategy"] == strategy and x["ratio"] == r and x["method"] == m
                               and x["split"] == "test"), None)) for r in ratios]
            # kmeans-linked has no value at ratio 1 (no links): plot the ratios a method has
            points = [(r, x) for r, x in found if x is not None and x[f"{metric}_mean"] == x[f"{metric}_mean"]]
            if not points:
                continue
            ax.errorbar([r for r, _ in points], [x[f"{metric}_mean"] for _, x in points],
                        yerr=[x[f"{metric}_std"] for _, x in points], fmt=style, color=colour, capsize=3,
                        label=f"{m}, {strategy}" if baselines else strategy, alpha=1.0 if m == method else 0.6)
    ax.set_xlabel("ratio of training pairs unpaired")
    ax.set_ylabel(f"test {_label(metric)}")
    if not methods:
        ax.set_title(f"{method}: test {_label(metric)} against unpairing ratio", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
