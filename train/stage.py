"""The train stage: benchmark store → run folder.

``train(src, out, config)`` runs the configured method (``[train] method``, :mod:`train.registry`;
``dm2c`` by default: :class:`train.estimator.DM2C`, checkpoints under ``out/checkpoints``, resumed
when compatible), the k-means baselines beside a clustering method, and writes::

    out/metrics.json     per method (e.g. "dm2c" and every baseline) per split, its metrics; seed,
                         epochs, wall time (total and per part), config, lineage, versions
    out/report.md        the results tables (DM2C paper layout), run facts, warnings, plot links
    out/epochs.jsonl     per-epoch losses and metrics (also out/epochs.csv)
    out/embeddings.npz   final unified embeddings, labels, predictions, modality flags, row ids
    out/plots/*.png      loss curves, metric curves, test embedding map, matched confusion matrix
    out/checkpoints/     last.pt, and <phase>.pt at each phase end
    out/run.json         written last (atomically): marks the run complete, records its run key

An identical finished run (same config hash and input manifest sha256) is reused (``reuse``). A
finished run of another config needs ``overwrite``; so does an interrupted one whose checkpoint
another config wrote (without ``overwrite`` it is refused, naming the fields that differ).
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixbench import dist
from mixbench.device import resolve_device
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.stagekit import OutputLock
from mixbench.store.manifest import (
    atomic_write_bytes,
    atomic_write_json,
    lineage_entry,
    now,
    run_key,
    sha256_file,
    versions,
)
from mixbench.store.shards import Store

from .checkpoint import check_compatible, load_checkpoint
from .config import TrainConfig
from .data import BenchmarkData
from .kmeans import KMeans
from .registry import RunContext, get_method, method_options
from .report import make_plots, results_tables, write_report
from .runlog import RunLog

log = logging.getLogger(__name__)

RUN_MARKER = "run.json"
RUN_SCHEMA = "mixbench-train-run"
RUN_FILES = (RUN_MARKER, "metrics.json", "report.md", "epochs.jsonl", "epochs.csv", "embeddings.npz")
RUN_DIRS = ("checkpoints", "plots")
ACCEPTED_KINDS = ("benchmark", "features")


def train(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    reuse: bool = True,
) -> dict[str, Any]:
    """Train the configured method (and the k-means baselines) on the store ``src``; write the run folder ``out``.

    Returns ``{"run_dir", "metrics" (the metrics.json payload), "table" (markdown, as the CLI prints it),
    "reused", "run_key"}``. Under ``torchrun`` the run happens on rank 0 (DM2C is small: one device is
    plenty) and every rank gets its result."""
    result = dist.on_main(lambda: _locked_train(src, out, config, overwrite=overwrite, reuse=reuse))
    assert result is not None
    return result


def _locked_train(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | Mapping[str, Any] | None,
    *,
    overwrite: bool,
    reuse: bool,
) -> dict[str, Any]:
    with OutputLock(out, "train"):
        return _train(src, out, config, overwrite=overwrite, reuse=reuse)


def _train(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig | Mapping[str, Any] | None,
    *,
    overwrite: bool,
    reuse: bool,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    out = Path(out)
    store = Store(src)
    if store.kind not in ACCEPTED_KINDS:
        raise StoreError(
            f"{store.path}: a '{store.kind}' store; train needs a benchmark store (unpair output) or a "
            "features store (embed output) with a 'feat' column per modality."
        )
    inputs = {"store": store.input_record()}
    conf = cfg.to_dict()
    key = run_key("train", conf, inputs)
    if reuse and (done := finished_run(out, key)) is not None:
        log.info("train: %s is complete with the same config and input; reusing it", out)
        table = done.get("table") or results_tables(done["methods"], variant=_variant(cfg))
        return {"run_dir": str(out), "metrics": done, "table": table, "reused": True, "run_key": key}
    entry = lineage_entry("train", conf, inputs, seed=cfg.seed)
    device = resolve_device(cfg.device)
    method = get_method(cfg.method)
    options = method_options(cfg)
    data = (method.load(store, device, options) if method.load is not None
            else BenchmarkData.from_store(store, device=device))
    ctx = RunContext(cfg=cfg, options=options, device=device, out=out, runlog=None,
                     checkpoint_dir=out / "checkpoints", input_sha256=store.manifest_sha256)
    if method.check is not None:
        method.check(data, ctx)
    warnings = check_data(data, store) if isinstance(data, BenchmarkData) else list(data.warnings)
    _prepare_run_dir(out, cfg, data, store.manifest_sha256, overwrite=overwrite)

    runlog = RunLog(out)
    if not (out / "checkpoints" / "last.pt").exists():
        runlog.restore([])
    ctx = replace(ctx, runlog=runlog)
    result = method.run(data, ctx)
    runlog.write_csv()
    phases = dict(result.timings)

    methods: dict[str, dict[str, dict[str, float]]] = dict(result.metrics)
    bounds: dict[str, dict[str, float]] | None = None
    if cfg.baselines and method.clustering:
        from .baselines import kmeans_baselines, modality_kmeans
        from .dm2c import cpu_threads

        with cpu_threads(_baseline_threads(cfg, data, device)):
            t0 = time.perf_counter()
            train_split = data.splits.get("train")
            # One per-modality k-means serves kmeans-linked and the headroom figures (same seed and settings).
            per_modality = (
                modality_kmeans(data, seed=cfg.seed, n_init=cfg.n_init, device=device)
                if train_split is not None and all(train_split.n(m) >= data.n_classes for m in data.modalities)
                else None
            )
            methods.update(kmeans_baselines(data, seed=cfg.seed, n_init=cfg.n_init, device=device,
                                            modality_models=per_modality))
            phases["baselines"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            bounds = _headroom(data, cfg, device, per_modality)
            phases["headroom"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if result.embeddings:
        buf = io.BytesIO()
        np.savez(buf, **result.embeddings)
        atomic_write_bytes(out / "embeddings.npz", buf.getvalue())
    plots = (make_plots(out, runlog.rows, modalities=data.modalities, classes=data.classes, test=result.plot_view)
             if cfg.plots else {})
    phases["report"] = time.perf_counter() - t0
    entry["finished"] = now()
    entry["run_key"] = key
    table = result.table if result.table is not None else results_tables(methods, variant=_variant(cfg))
    payload = {
        "schema": RUN_SCHEMA,
        "dataset": store.dataset,
        "classes": data.classes,
        "modalities": data.modalities,
        "method": cfg.method,
        "methods": methods,
        "seed": cfg.seed,
        "final_epoch": result.final_epoch,
        **result.extra,
        "headroom": bounds,
        "resumed": result.resumed,
        "wall_time": {"total": time.perf_counter() - t_start, "phases": {k: round(v, 4) for k, v in phases.items()}},
        "device": device_name(device),
        "config": conf,
        "config_hash": cfg.config_hash(),
        "input": inputs["store"],
        "data": {"rows": {s: {m: t.n(m) for m in data.modalities} for s, t in data.splits.items()},
                 "dims": data.dims, "warnings": warnings},
        "lineage": store.lineage + [entry],
        "versions": versions(),
        "run_key": key,
        "table": table,
    }
    atomic_write_json(out / "metrics.json", payload)
    write_report(out, payload, plots, sections=result.report_sections)
    atomic_write_json(out / RUN_MARKER, {
        "schema": RUN_SCHEMA,
        "run_key": key,
        "config_hash": cfg.config_hash(),
        "input_manifest_sha256": store.manifest_sha256,
        "finished": now(),
        "files": {name: sha256_file(out / name) for name in RUN_FILES[1:] if (out / name).exists()},
    })
    log.info("train: wrote %s (%.1f s)", out, payload["wall_time"]["total"])
    return {"run_dir": str(out), "metrics": payload, "table": table, "reused": False, "run_key": key}


def _baseline_threads(cfg: TrainConfig, data: BenchmarkData, device: torch.device) -> int | None:
    """Torch CPU threads for the k-means baselines and headroom (None: leave torch's setting).

    The rule of DM2C's own loop (``FaithfulTrainer.intra_op_threads``): ``threads`` when set, else one
    thread when the k-means distance buffer of one restart batch is small (below 2²⁴ elements:
    ``rows × k × n_init``), where a second thread only adds synchronisation. On a busy 2-core
    machine two threads made these k-means fits 4× slower (0.25 s → 1.05 s for 2,173 × 8, k = 10,
    20 restarts); with one the results are the same."""
    if device.type != "cpu":
        return None
    if cfg.threads:
        return cfg.threads
    rows = max((s.n() for s in data.splits.values()), default=0)
    return 1 if rows * max(cfg.n_init, 1) * max(data.n_classes, 1) < (1 << 24) else None


def _variant(cfg: TrainConfig) -> str | None:
    return cfg.variant if cfg.method == "dm2c" else None


def _headroom(
    data: BenchmarkData, cfg: TrainConfig, device: torch.device, models: Mapping[str, KMeans] | None
) -> dict[str, dict[str, float]] | None:
    """The benchmark's alignment bounds (:mod:`train.headroom`, on the per-modality k-means ``models``
    where given), or None where they do not apply (a modality with fewer train rows than clusters)."""
    from .headroom import headroom

    try:
        return headroom(data, seed=cfg.seed, n_init=cfg.n_init, device=device, models=models)
    except DataError as exc:
        log.info("train: no headroom figures (%s)", exc)
        return None


# ---------------------------------------------------------------------------------------------
# run folder state
# ---------------------------------------------------------------------------------------------


def finished_run(out: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """The metrics.json payload of a complete run at ``out`` with run key ``key``, else None."""
    out = Path(out)
    try:
        marker = json.loads((out / RUN_MARKER).read_text())
        if marker.get("run_key") != key:
            return None
        for name, digest in marker.get("files", {}).items():
            if sha256_file(out / name) != digest:
                log.warning("train: %s changed since the run finished; redoing the run", out / name)
                return None
        return json.loads((out / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def clear_run(out: Path) -> None:
    """Remove a run folder's own files (those listed in RUN_FILES / RUN_DIRS); nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)


def _prepare_run_dir(out: Path, cfg: TrainConfig, data: BenchmarkData, input_sha256: str, *, overwrite: bool) -> None:
    """Start afresh, or keep a compatible interrupted run's checkpoint for resuming."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / RUN_MARKER).exists():
        if not overwrite:
            raise StoreError(
                f"{out} holds a finished run of another config or input (or reuse is off); pass overwrite=True "
                "(CLI: --overwrite) to replace it, or choose another output folder."
            )
        log.info("train: replacing the finished run in %s", out)
        clear_run(out)
        return
    last = out / "checkpoints" / "last.pt"
    if not last.exists() or (cfg.method != "dm2c" and overwrite):
        clear_run(out)
        return
    if cfg.method != "dm2c":  # other methods check their own checkpoints (and refuse another config's)
        return
    try:
        state = load_checkpoint(last)
        check_compatible(state, cfg, dims=dict(data.dims), input_sha256=input_sha256, variant=cfg.variant, path=last)
    except (ConfigError, DataError, StoreError) as exc:
        if not overwrite:
            raise
        log.warning("train: not resuming (%s); starting afresh (overwrite)", exc)
        clear_run(out)


# ---------------------------------------------------------------------------------------------
# input checks and outputs
# ---------------------------------------------------------------------------------------------


def check_data(data: BenchmarkData, store: Store) -> list[str]:
    """Errors for unusable input; warnings (returned, shown in the report) for classes without rows."""
    warnings = []
    train_split = data.splits.get("train")
    if train_split is not None:
        y = torch.cat([train_split.y[m] for m in data.modalities]).cpu()
        present = torch.unique(y).tolist() if y.ndim == 1 else list(range(data.n_classes))
        if len(present) < 2:
            names = ", ".join(repr(data.classes[int(i)]) for i in present if 0 <= int(i) < data.n_classes)
            raise DataError(
                f"{store.path}: the train split holds {len(present)} class(es) ({names or 'none'}); clustering "
                "needs at least 2 (with one, every metric reads 1.0). Rebuild the store from labelled data with "
                "two or more classes (prep refuses a single-class dataset)."
            )
    for split, s in data.splits.items():
        for m in data.modalities:
            if s.n(m) == 0 and split != "train":
                warnings.append(f"split '{split}' has no rows of modality '{m}'.")
        y = torch.cat([s.y[m] for m in data.modalities])
        counts = torch.bincount(y.cpu(), minlength=data.n_classes).tolist() if len(y) else [0] * data.n_classes
        empty = [data.classes[i] for i, c in enumerate(counts[: data.n_classes]) if c == 0]
        if empty:
            warnings.append(f"split '{split}': class(es) with no rows: {', '.join(empty)} (metrics count them as absent).")
    for w in warnings:
        log.warning("train: %s: %s", store.path, w)
    return warnings


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    from mixbench import PORTABLE_MATH

    portable = all(os.environ.get(k) == v for k, v in PORTABLE_MATH.items())
    return (f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
            + (", portable math: MKL_CBWR=COMPATIBLE, ATEN_CPU_CAPABILITY=default)" if portable else ")"))
