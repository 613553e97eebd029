"""The method registry (``[train] method``): a backend registered beside DM2C runs through the same
train stage (run folder, baselines for clustering methods, metrics.json, report, reuse), and bad
method names / options are refused before any work."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from mixbench.cli import main
from mixbench.config import Config, option
from mixbench.errors import ConfigError
from train import Method, MethodResult, RunContext, list_methods, register_method, train
from train.data import BenchmarkData
from train.kmeans import KMeans
from train.metrics import clustering_metrics


@dataclass(frozen=True)
class PooledOptions(Config):
    section: ClassVar[str] = "train.method_options"
    n_init: int = option(2, "k-means restarts", low=1)


def _pooled(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    """k-means on the pooled train rows, applied to test: a real (if plain) clustering method."""
    opts = ctx.options
    assert isinstance(opts, PooledOptions)
    tr = data.splits["train"]
    x = torch.cat([tr.x[m] for m in data.modalities])
    km = KMeans(data.n_classes, n_init=opts.n_init, seed=ctx.cfg.seed, device=ctx.device).fit(x)
    metrics = {}
    for split, s in data.splits.items():
        xs = torch.cat([s.x[m] for m in data.modalities])
        y = torch.cat([s.y[m] for m in data.modalities]).cpu().numpy()
        metrics[split] = clustering_metrics(y, np.asarray(km.predict(xs).cpu()))
    if ctx.runlog is not None:
        ctx.runlog.append({"phase": "fit", "epoch": 0, "test_acc": metrics["test"]["acc"]})
    return MethodResult(metrics={"test-pooled": metrics}, final_epoch=0, extra={"restarts": opts.n_init},
                        report_sections=["## Extra\n\nA section of the method's own."])


def _retrieval_like(data: BenchmarkData, ctx: RunContext) -> MethodResult:
    table = "| method | I→T | T→I |\n|---|---|---|\n| test-map | 0.5 | 0.25 |"
    return MethodResult(metrics={"test-map": {"test": {"map_i2t": 0.5, "map_t2i": 0.25}}}, table=table,
                        report_sections=["## Retrieval\n\n" + table])


register_method(Method(name="test-pooled", run=_pooled, options_cls=PooledOptions, description="test only"))
register_method(Method(name="test-map", run=_retrieval_like, clustering=False, description="test only"))


def test_registry_lists_dm2c_first_class() -> None:
    assert {"dm2c", "test-pooled"} <= set(list_methods())


def test_clustering_method_runs_through_the_stage(wiki_bench: Path, tmp_path: Path) -> None:
    cfg = {"method": "test-pooled", "method_options": {"n_init": 3}, "device": "cpu", "n_init": 3}
    result = train(wiki_bench, tmp_path / "run", cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "test-pooled" and metrics["restarts"] == 3
    assert {"test-pooled", "kmeans-pooled", "kmeans-centred"} <= set(metrics["methods"])  # baselines beside it
    assert 0 <= metrics["methods"]["test-pooled"]["test"]["acc"] <= 1
    assert metrics["lineage"][-1]["config"]["method_options"] == {"n_init": 3}
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith("# test-pooled run") and "A section of the method's own." in report
    assert "| test-pooled |" in result["table"]
    assert (tmp_path / "run" / "run.json").exists()
    assert json.loads((tmp_path / "run" / "epochs.jsonl").read_text().splitlines()[0])["phase"] == "fit"
    again = train(wiki_bench, tmp_path / "run", cfg)
    assert again["reused"] and again["table"] == result["table"]


def test_non_clustering_method_gets_no_kmeans_baselines(wiki_bench: Path, tmp_path: Path) -> None:
    result = train(wiki_bench, tmp_path / "run", {"method": "test-map", "device": "cpu", "plots": False})
    assert set(result["metrics"]["methods"]) == {"test-map"} and result["metrics"]["headroom"] is None
    assert result["table"].startswith("| method | I→T")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Test" not in report and "| test-map | 0.5 | 0.25 |" in report


def test_bad_method_and_options_are_refused(wiki_bench: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[train\] method = 'test-poled': unknown method. Did you mean 'test-pooled'"):
        train(wiki_bench, tmp_path / "a", {"method": "test-poled"})
    with pytest.raises(ConfigError, match=r"method_options \(test-pooled\)"):
        train(wiki_bench, tmp_path / "b", {"method": "test-pooled", "method_options": {"n_iit": 3}})
    with pytest.raises(ConfigError, match="method_options is for the other methods"):
        train(wiki_bench, tmp_path / "c", {"method": "dm2c", "method_options": {"n_init": 3}})
    with pytest.raises(ConfigError, match="variant_options is for DM2C variants"):
        train(wiki_bench, tmp_path / "d", {"method": "test-pooled", "variant_options": {"anchor": "text"}})
    assert not (tmp_path / "a").exists()


def test_cli_lists_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "methods"]) == 0
    assert "dm2c" in capsys.readouterr().out.split()
