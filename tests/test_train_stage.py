"""The train stage: run folder contents, reuse of an identical finished run, overwrite and resume,
input validation, and the CLI on top of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixbench.cli import main
from mixbench.errors import ConfigError, DataError, StoreError
from mixbench.store.manifest import lineage_entry, run_key
from mixbench.store.shards import StoreWriter, feature_schema
from train import train
from train.runlog import read_jsonl

SHORT = {"pretrain_epochs": 2, "epochs": 3, "n_init": 3, "device": "cpu"}
METRICS = ("acc", "ari", "nmi", "f_score", "precision", "recall", "purity")
HEADER = "| algorithm | ACC | ARI | NMI | F-score | Precision | Recall | Purity |"


@pytest.fixture(scope="module")
def run(wiki_bench: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "train"
    return out, train(wiki_bench, out, SHORT)


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_run_folder(run: tuple[Path, dict], wiki_bench: Path) -> None:
    out, result = run
    assert result["run_dir"] == str(out) and not result["reused"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["methods"] == metrics["methods"]
    methods = metrics["methods"]
    assert "dm2c" in methods and len(methods) >= 3  # DM2C and the k-means baselines
    for method, per_split in methods.items():
        for split in ("train", "test"):
            assert set(per_split[split]) >= set(METRICS), (method, split)
            assert all(-1 <= per_split[split][k] <= 1 for k in METRICS)
    assert metrics["seed"] == 0 and metrics["epochs"] == 3 and metrics["final_epoch"] == 2
    assert metrics["architecture"]["hiddens"] == [32, 16, 8]
    wall = metrics["wall_time"]
    assert wall["total"] > 0 and {"pretrain-image", "pretrain-text", "joint-train", "eval-embed", "kmeans",
                                  "metrics", "baselines"} <= set(wall["phases"])
    assert metrics["config"]["variant"] == "faithful" and metrics["versions"]["torch"]
    lineage = metrics["lineage"]
    assert [e["stage"] for e in lineage] == ["prep", "test-benchmark", "train"]
    assert lineage[-1]["run_key"] == result["run_key"] and lineage[-1]["inputs"]["store"]["manifest_sha256"]
    # the final row of the epoch log is the reported DM2C result
    rows = read_jsonl(out / "epochs.jsonl")
    assert [r["phase"] for r in rows] == ["pretrain-image"] * 2 + ["pretrain-text"] * 2 + ["joint"] * 3
    assert rows[-1]["test_acc"] == methods["dm2c"]["test"]["acc"]
    csv_lines = (out / "epochs.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and csv_lines[0].startswith("phase,epoch,seconds,steps")
    report = (out / "report.md").read_text()
    assert report.count(HEADER) == 2 and "| dm2c (faithful) |" in report
    for png in ("losses", "metrics", "embedding", "confusion"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
        assert f"plots/{png}.png" in report
    assert HEADER in result["table"] and "**test**" in result["table"]
    # the benchmark's headroom, next to the DM2C result
    head = metrics["headroom"]
    assert set(head) == {"train", "test"} and head["test"]["acc_text"] > head["test"]["acc_image"]
    assert head["test"]["aligned_random"] < head["test"]["aligned_oracle"]
    assert "## Headroom" in report and f"| test | {head['test']['acc_image']:.4f} |" in report
    emb = np.load(out / "embeddings.npz")
    assert emb["test_embedding"].shape == (693, 8) and emb["train_cluster"].shape == (2173,)
    assert {"last.pt", "pretrain-image.pt", "pretrain-text.pt", "joint.pt"} <= {p.name for p in (out / "checkpoints").iterdir()}
    marker = json.loads((out / "run.json").read_text())
    assert marker["run_key"] == result["run_key"] and "metrics.json" in marker["files"]


def test_identical_run_is_reused(run: tuple[Path, dict], wiki_bench: Path) -> None:
    out, first = run
    before = _mtimes(out)
    again = train(wiki_bench, out, SHORT)
    assert again["reused"] and again["metrics"]["methods"] == first["metrics"]["methods"]
    assert again["table"] == first["table"]
    assert _mtimes(out) == before


def test_overwrite_and_resume(wiki_bench: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    cfg = {**SHORT, "baselines": False, "plots": False, "epochs": 2}
    first = train(wiki_bench, out, cfg)
    # another config on a finished run needs overwrite
    with pytest.raises(StoreError, match="overwrite"):
        train(wiki_bench, out, {**cfg, "seed": 1})
    # a crash after training (run.json never written): the final checkpoint is resumed, same result
    (out / "run.json").unlink()
    (out / "report.md").unlink()
    again = train(wiki_bench, out, cfg)
    assert again["metrics"]["resumed"] and not again["reused"]
    assert again["metrics"]["methods"] == first["metrics"]["methods"]
    assert len(read_jsonl(out / "epochs.jsonl")) == 2 + 2 + 2
    # an interrupted run of another config is refused, naming the field ...
    (out / "run.json").unlink()
    with pytest.raises(ConfigError, match="lambda3: 0.5 \\(checkpoint\\) vs 1.0 \\(now\\)"):
        train(wiki_bench, out, {**cfg, "lambda3": 1.0})
    # ... and replaced with overwrite
    third = train(wiki_bench, out, {**cfg, "lambda3": 1.0}, overwrite=True)
    assert not third["metrics"]["resumed"] and third["metrics"]["config"]["lambda3"] == 1.0
    assert not (out / "plots").exists()


# -- input validation on small synthetic stores -------------------------------------------------


def _store(path: Path, rows: dict[str, dict[str, int]], *, n_classes: int = 3, dim: int = 4,
           labels: list[int] | None = None, multilabel: bool = False) -> Path:
    rng = np.random.default_rng(0)
    conf = {"synthetic": True}
    writer = StoreWriter(
        path, kind="benchmark", dataset="synthetic", classes=[f"c{i}" for i in range(n_classes)],
        schema={m: feature_schema(dim, n_labels=n_classes if multilabel else None) for m in ("image", "text")},
        lineage=[lineage_entry("synthetic", conf, {})], run_key=run_key("synthetic", conf, {}), multilabel=multilabel,
    )
    for split, per_mod in rows.items():
        tables = {}
        for m, n in per_mod.items():
            lab = np.resize(np.asarray(labels or list(range(n_classes))), n)
            label = np.eye(n_classes, dtype=np.uint8)[lab] if multilabel else lab
            tables[m] = {"id": [f"{split}-{m}-{i}" for i in range(n)], "label": label, "pair": np.full(n, -1),
                         "feat": rng.normal(size=(n, dim)).astype(np.float32) + lab[:, None]}
        writer.write_shard(split, 0, tables)
    writer.finish()
    return path


def test_input_validation(tmp_path: Path) -> None:
    tiny = {**SHORT, "pretrain_epochs": 1, "epochs": 1, "n_init": 2, "baselines": False, "plots": False, "batch_size": 16}
    empty = _store(tmp_path / "empty", {"train": {"image": 30, "text": 0}, "test": {"image": 5, "text": 5}})
    with pytest.raises(DataError, match="no rows of modality 'text'"):
        train(empty, tmp_path / "o1", tiny)
    assert not (tmp_path / "o1").exists()  # nothing half-written
    few = _store(tmp_path / "few", {"train": {"image": 2, "text": 2}}, n_classes=10)
    with pytest.raises(DataError, match="4 rows but k-means needs at least k = 10"):
        train(few, tmp_path / "o2", tiny)
    multi = _store(tmp_path / "multi", {"train": {"image": 20, "text": 20}}, multilabel=True)
    with pytest.raises(DataError, match="multi-label"):
        train(multi, tmp_path / "o3", tiny)
    gap = _store(tmp_path / "gap", {"train": {"image": 40, "text": 40}, "test": {"image": 8, "text": 8}},
                 labels=[0, 1])
    result = train(gap, tmp_path / "o4", tiny)
    warnings = result["metrics"]["data"]["warnings"]
    assert any("c2" in w and "'train'" in w for w in warnings)
    assert "## Warnings" in (tmp_path / "o4" / "report.md").read_text()


def test_cli_train(wiki_bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["train", str(wiki_bench), str(out), "--pretrain-epochs", "1", "--epochs", "1", "--n-init", "2",
            "--pretrain-lr", "1e-4,1e-5", "--baselines", "false", "--plots", "false", "--device", "cpu"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert HEADER in printed and "| dm2c (faithful) |" in printed and f"run folder: {out}" in printed
    assert json.loads((out / "metrics.json").read_text())["config"]["pretrain_lr"] == [1e-4, 1e-5]
    assert main(["train", str(wiki_bench), str(out), "--epochs", "0", "--variant", "nope"]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_plots_skip_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    import sys

    from train.report import make_plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    rows = [{"phase": "pretrain-image", "epoch": 0, "rec": 1.0}]
    with caplog.at_level("INFO", logger="train.report"):
        assert make_plots(tmp_path, rows, modalities=["image", "text"], classes=["a", "b"], test=None) == {}
    assert "matplotlib is not installed" in caplog.text and not (tmp_path / "plots").exists()


def test_single_class_store_is_refused_before_training(tmp_path: Path) -> None:
    from train import train

    rng = np.random.default_rng(0)
    schema = {m: feature_schema(4) for m in ("image", "text")}
    w = StoreWriter(tmp_path / "one", kind="features", dataset="one", classes=["a", "b"], schema=schema,
                    lineage=[], run_key="k")
    for split in ("train", "test"):
        w.write_shard(split, 0, {m: {"id": [f"{m}{i}" for i in range(20)], "label": np.zeros(20, dtype=np.int64),
                                     "pair": np.arange(20), "feat": rng.normal(size=(20, 4)).astype(np.float32)}
                                 for m in schema})
    w.finish()
    with pytest.raises(DataError, match=r"1 class\(es\) \('a'\).*at least 2"):
        train(tmp_path / "one", tmp_path / "run", {"pretrain_epochs": 1, "epochs": 1, "device": "cpu"})
