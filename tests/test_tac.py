"""TAC / DXMC heads and losses (train.tac): the losses against numpy re-derivations of the
reference code and hand-built cases, and the three methods through the train stage on the real
UCI mfeat views (paired, half-broken, fully broken), with exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import prep
import train
import unpair
from mixbench.errors import DataError
from train.data import BenchmarkData
from train.registry import RunContext, method_options
from train.runlog import RunLog
from train.tac import (
    Heads,
    TacOptions,
    batch_entropy,
    cluster_contrastive,
    consistency,
    instance_contrastive,
    nearest_neighbours,
    run_tac,
)


# -- numpy re-derivations, in the reference code's own form (mask of correlated rows, positives
#    first, CrossEntropy summed then divided by N) ------------------------------------------------
def _ce_rows(logits: np.ndarray) -> float:
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    return float((lse - logits[:, 0]).sum())


def np_distill(c_i: np.ndarray, c_j: np.ndarray, tau: float) -> float:
    k = c_i.shape[1]
    c = np.concatenate([c_i.T, c_j.T])
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    sim = c @ c.T / tau
    mask = np.ones((2 * k, 2 * k), dtype=bool)
    np.fill_diagonal(mask, False)
    for i in range(k):
        mask[i, k + i] = mask[k + i, i] = False
    pos = np.concatenate([np.diag(sim, k), np.diag(sim, -k)])[:, None]
    neg = sim[mask].reshape(2 * k, -1)
    return _ce_rows(np.concatenate([pos, neg], axis=1)) / (2 * k)


def np_instance(z_i: np.ndarray, z_j: np.ndarray, tau: float) -> float:
    b = z_i.shape[0]
    z = np.concatenate([z_i, z_j])
    sim = z @ z.T / tau
    mask = np.ones((2 * b, 2 * b), dtype=bool)
    np.fill_diagonal(mask, False)
    for i in range(b):
        mask[i, b + i] = mask[b + i, i] = False
    pos = np.concatenate([np.diag(sim, b), np.diag(sim, -b)])[:, None]
    return _ce_rows(np.concatenate([pos, sim[mask].reshape(2 * b, -1)], axis=1)) / (2 * b)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_losses_match_numpy() -> None:
    rng = np.random.default_rng(0)
    p, q = _softmax(rng.normal(size=(16, 5))), _softmax(rng.normal(size=(16, 5)))
    tp, tq = torch.tensor(p), torch.tensor(q)
    for tau in (0.5, 5.0):
        assert cluster_contrastive(tp, tq, tau).item() == pytest.approx(np_distill(p, q, tau), rel=1e-10)
    z_i, z_j = rng.normal(size=(12, 7)), rng.normal(size=(12, 7))
    assert instance_contrastive(torch.tensor(z_i), torch.tensor(z_j), 0.05).item() == pytest.approx(
        np_instance(z_i, z_j, 0.05), rel=1e-10)
    s = (p * q).sum(1)
    assert consistency(tp, tq).item() == pytest.approx(float(np.mean(-np.log(s))), rel=1e-10)
    m = p.mean(0)
    assert batch_entropy(tp).item() == pytest.approx(float(-(m * np.log(m)).sum()), rel=1e-10)


def test_losses_hand_built() -> None:
    k = 4
    eye = torch.eye(k, dtype=torch.float64)  # B = K rows, one per cluster: orthonormal columns
    # each column's positive has cosine 1, its 2K - 2 negatives cosine 0
    assert cluster_contrastive(eye, eye, 0.5).item() == pytest.approx(math.log(1 + (2 * k - 2) * math.exp(-2.0)))
    assert batch_entropy(eye).item() == pytest.approx(math.log(k))  # balanced: the maximum
    assert batch_entropy(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert consistency(eye, eye).item() == pytest.approx(0.0, abs=1e-12)  # identical one-hot rows: BCE 0


def test_heads_architecture() -> None:
    torch.manual_seed(0)
    m = Heads(64, 32, 10, instance_dim=128)
    assert [type(x).__name__ for x in m.text] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "Softmax"]
    assert m.image[0].in_features == 32 and m.text[3].out_features == 10
    assert m.text_ins[2].out_features == 128 and [type(x).__name__ for x in m.image_ins] == ["Linear", "ReLU", "Linear"]
    w = m.image[0].weight.detach()
    # trunc_normal_(std=0.02) with timm's / torch's default bounds a=-2, b=2 (absolute, so barely truncated)
    assert 0.018 < float(w.std()) < 0.022 and float(w.abs().max()) < 2
    out = m(torch.randn(5, 64), torch.randn(5, 32))
    assert len(out) == 4 and torch.allclose(out[0].sum(1), torch.ones(5))
    assert len(Heads(8, 8, 3)(torch.randn(4, 8), torch.randn(4, 8))) == 2


def test_nearest_neighbours_drop_the_first_hit() -> None:
    x = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 1.0]]), dim=1)
    nb = nearest_neighbours(x, 2, chunk_elems=4)
    assert nb[:, 0].tolist() == [1, 0, 3, 2]


# -- through the stage, on the real UCI views ------------------------------------------------------
@pytest.fixture(scope="module")
def uci_stores(tmp_path_factory: pytest.TempPathFactory, uci_dir: Path) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("uci-tac")
    prep.prepare({"adapter": "uci-mfeat", "root": str(uci_dir), "views": ["fou", "kar"]}, root / "prep")
    out = {}
    for ratio in (0.0, 0.5, 1.0):
        out[ratio] = root / f"unpair-{ratio}"
        unpair.unpair(root / "prep", out[ratio], {"ratio": ratio, "seed": 0})
    return out


FAST = {"epochs": 3, "batch_size": 256, "neighbours": 10}


@pytest.mark.parametrize("method", ["concat-kmeans", "tac", "dxmc"])
def test_methods_on_paired_and_broken_stores(uci_stores: dict[float, Path], tmp_path: Path, method: str) -> None:
    opts = {"restarts": 3} if method == "concat-kmeans" else FAST
    for ratio in (0.0, 0.5):
        run = tmp_path / f"run-{ratio}"
        # (the stage's k-means baselines beside a method: tests/test_methods.py; slow here, so off)
        result = train.train(uci_stores[ratio], run, {"method": method, "method_options": opts, "device": "cpu",
                                                      "plots": False, "baselines": False})
        metrics = json.loads((run / "metrics.json").read_text())
        assert set(metrics["methods"]) == {method, f"{method}-image"}
        for split in ("train", "test"):
            assert 0.0 <= metrics["methods"][method][split]["acc"] <= 1.0
        assert f"| {method} |" in result["table"]
        assert "Rows" in (run / "report.md").read_text()


@pytest.mark.parametrize("method", ["concat-kmeans", "tac"])
def test_paired_accuracy_with_defaults(uci_stores: dict[float, Path], tmp_path: Path, method: str) -> None:
    """TAC's default schedule (20 epochs, batches of 512) on the paired UCI views: both well above the
    0.1 of chance (5-seed figures of the full defaults: README, bench/heads.py)."""
    opts = {"restarts": 3} if method == "concat-kmeans" else {"neighbours": 10}
    result = train.train(uci_stores[0.0], tmp_path / "run", {"method": method, "method_options": opts,
                                                             "device": "cpu", "plots": False, "baselines": False})
    assert result["metrics"]["methods"][method]["test"]["acc"] > 0.6
    with pytest.raises(DataError, match="no linked"):
        train.train(uci_stores[1.0], tmp_path / "run-1.0", {"method": method, "method_options": opts, "device": "cpu"})


def test_tac_trains_on_linked_pairs_only(uci_stores: dict[float, Path], tmp_path: Path) -> None:
    result = train.train(uci_stores[0.5], tmp_path / "run", {"method": "tac", "method_options": FAST,
                                                             "device": "cpu", "plots": False, "baselines": False})
    m = result["metrics"]
    assert m["linked_train_pairs"] == 800 and m["steps_per_epoch"] == 800 // 256  # 1,600 train pairs, half broken
    rows = [json.loads(line) for line in (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all("loss_distill" in r and "test_acc" in r for r in rows)


def test_tac_resumes_exactly(uci_stores: dict[float, Path], tmp_path: Path) -> None:
    store = uci_stores[0.0]
    data = BenchmarkData.from_store(store)
    cfg = train.TrainConfig.from_dict({"method": "tac", "method_options": {**FAST, "epochs": 4}, "device": "cpu"})

    def ctx(folder: Path, runlog: RunLog) -> RunContext:
        return RunContext(cfg=cfg, options=method_options(cfg), device=torch.device("cpu"), out=folder,
                          runlog=runlog, checkpoint_dir=folder / "checkpoints", input_sha256="x")

    full = run_tac(data, ctx(tmp_path / "a", RunLog(tmp_path / "a")))

    class Stop(Exception):
        pass

    class Interrupting(RunLog):
        def append(self, row: dict) -> None:  # type: ignore[override]
            if row["epoch"] == 3:
                raise Stop
            super().append(row)

    (tmp_path / "b").mkdir()
    with pytest.raises(Stop):
        run_tac(data, ctx(tmp_path / "b", Interrupting(tmp_path / "b")))
    resumed = run_tac(data, ctx(tmp_path / "b", RunLog(tmp_path / "b")))
    assert resumed.resumed and resumed.metrics == full.metrics
    np.testing.assert_array_equal(resumed.embeddings["test_embedding"], full.embeddings["test_embedding"])
    other = train.TrainConfig.from_dict({"method": "tac", "method_options": {**FAST, "epochs": 4, "lr": 0.01}})
    from mixbench.errors import ConfigError

    with pytest.raises(ConfigError, match="fields that differ: options"):
        run_tac(data, RunContext(cfg=other, options=method_options(other), device=torch.device("cpu"),
                                 out=tmp_path / "b", runlog=None, checkpoint_dir=tmp_path / "b" / "checkpoints",
                                 input_sha256="x"))
    from mixbench.errors import StoreError

    ck = tmp_path / "b" / "checkpoints" / "last.pt"
    raw = bytearray(ck.read_bytes())
    raw[-10] ^= 0xFF
    ck.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="does not match its recorded sha256"):
        run_tac(data, ctx(tmp_path / "b", RunLog(tmp_path / "b")))


def test_stage_resumes_an_interrupted_tac_run(uci_stores: dict[float, Path], tmp_path: Path) -> None:
    """Through the train stage: a run folder left with checkpoints/last.pt (an interrupted run) is kept
    and the method resumes from it instead of starting afresh."""
    cfg = {"method": "tac", "method_options": {**FAST, "epochs": 2}, "device": "cpu", "plots": False,
           "baselines": False}
    out = tmp_path / "run"
    first = train.train(uci_stores[0.0], out, cfg)
    assert not first["metrics"]["resumed"] and (out / "checkpoints" / "last.pt").is_file()
    (out / "run.json").unlink()  # as if killed after the last checkpoint, before the run was marked complete
    again = train.train(uci_stores[0.0], out, cfg)
    assert again["metrics"]["resumed"] and again["metrics"]["methods"] == first["metrics"]["methods"]


def test_too_few_pairs_for_a_batch(uci_stores: dict[float, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fewer than batch_size = 4096"):
        train.train(uci_stores[0.0], tmp_path / "r", {"method": "tac", "method_options": {"batch_size": 4096}})
    assert TacOptions().epochs == 20 and TacOptions().batch_size == 512  # TAC's defaults


def test_sweep_with_a_tac_method(uci_dir: Path, tmp_path: Path) -> None:
    from mixbench.sweep import run_sweep

    recipe = tmp_path / "uci-tac.toml"
    recipe.write_text(f"""
name = "uci-tac"
[prep]
adapter = "uci-mfeat"
root = "{uci_dir}"
views = ["fou", "kar"]
[embed]
[unpair]
test_ratio = 0.0
[train]
method = "tac"
plots = false
baselines = false
method_options = {{epochs = 2, batch_size = 256, neighbours = 10}}
""")
    result = run_sweep(recipe, ratios=[0.0, 0.5], strategies=["random"], seeds=1, out=tmp_path / "sweep")
    lines = [line for line in result["table"].splitlines() if line.startswith("| random")]
    assert lines[0].startswith("| random | tac |") and "—" not in lines[0]  # the recipe's method leads the table
