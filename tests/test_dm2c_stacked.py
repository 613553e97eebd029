"""Stacked DM2C (train.dm2c_stacked): several runs as one program equal their solo runs.

In float64 the stacked step and the solo step are the same arithmetic up to the order of sums, so
losses agree to ~1e-12 over whole epochs (float32 differences of the last bit grow through the
adversarial steps, as between two machines: bench/dm2c.py --batched compares the distributions).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import TrainConfig
from train.data import BenchmarkData
from train.dm2c import FaithfulTrainer
from train.dm2c_stacked import MaskedBatchNorm, StackedTrainer
from train.kmeans import KMeans
from train.kmeans_stacked import fit_many

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _double(data: BenchmarkData) -> BenchmarkData:
    for split in data.splits.values():
        split.x = {m: v.double() for m, v in split.x.items()}
    return data


def _trainers(data: BenchmarkData, seeds: list[int], double: bool, **over: object) -> list[FaithfulTrainer]:
    out = []
    for s in seeds:
        cfg = TrainConfig.from_dict({"seed": s, "device": "cpu", "threads": 1, "pretrain_epochs": 2, "epochs": 2,
                                     "n_init": 3, **over})
        t = FaithfulTrainer(cfg, data)
        if double:
            t.net.double()
        out.append(t)
    return out


def _floats(row: dict) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, float) and k != "seconds"}


@pytest.mark.parametrize("over", [{}, {"gan": "naive", "critic_every": 2}], ids=["faithful", "naive"])
def test_stacked_equals_solo_in_float64(wiki_bench: Path, over: dict) -> None:
    """Three seeds, whose mixed batches split differently between the modalities (padding and
    masks): every epoch row (losses, metrics, k-means seed) of the stacked program equals the solo run's."""
    data = _double(BenchmarkData.from_store(wiki_bench))
    seeds = [0, 1, 2]
    solo = _trainers(data, seeds, True, **over)
    for t in solo:
        t.run()
    stacked = _trainers(data, seeds, True, **over)
    evs = StackedTrainer(stacked).run()
    for a, b, ev in zip(solo, stacked, evs):
        assert len(a.history) == len(b.history)
        assert a.skipped_batches == b.skipped_batches
        for ra, rb in zip(a.history, b.history):
            assert (ra["phase"], ra["epoch"], ra.get("steps"), ra.get("kmeans_seed")) == \
                   (rb["phase"], rb["epoch"], rb.get("steps"), rb.get("kmeans_seed"))
            fa, fb = _floats(ra), _floats(rb)
            assert fa.keys() == fb.keys()
            for k in fa:
                assert math.isclose(fa[k], fb[k], rel_tol=1e-9, abs_tol=1e-9), (ra["phase"], ra["epoch"], k)
        assert ev.metrics == a.last_eval.metrics
        for pa, pb in zip(a.net.parameters(), b.net.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-10)
        for ba, bb in zip(a.net.buffers(), b.net.buffers()):
            torch.testing.assert_close(ba.double(), bb.double(), rtol=1e-9, atol=1e-10)


def _fewer_rows(data: BenchmarkData, modality: str, keep: int) -> BenchmarkData:
    """A copy whose train split keeps only the first ``keep`` rows of ``modality`` (another store shape)."""
    import copy

    out = copy.copy(data)
    tr = copy.copy(data.splits["train"])
    tr.x, tr.y, tr.pair, tr.ids = (dict(d) for d in (tr.x, tr.y, tr.pair, tr.ids))
    for d in (tr.x, tr.y, tr.pair, tr.ids):
        d[modality] = d[modality][:keep]
    out.splits = {**data.splits, "train": tr}
    return out


def test_stacked_runs_on_stores_of_different_sizes_equal_solo_in_float64(wiki_bench: Path) -> None:
    """Runs on stores with other row counts (as the cells of a sweep): fewer pre-training and joint
    steps for one run (it sits out the others' extra steps), each equal to its solo run."""
    base = _double(BenchmarkData.from_store(wiki_bench))
    datas = [base, _fewer_rows(base, base.modalities[0], 700), _fewer_rows(base, base.modalities[1], 400)]
    cfg = {"pretrain_epochs": 2, "epochs": 2}

    def make(data: BenchmarkData, seed: int) -> FaithfulTrainer:
        return _trainers(data, [seed], True, **cfg)[0]

    solo = [make(d, s) for s, d in enumerate(datas)]
    for t in solo:
        t.run()
    stacked = [make(d, s) for s, d in enumerate(datas)]
    StackedTrainer(stacked).run()
    assert len({t.history[-1]["steps"] for t in solo}) == 3  # three step counts per epoch
    for a, b in zip(solo, stacked):
        assert len(a.history) == len(b.history)
        for ra, rb in zip(a.history, b.history):
            assert ra.get("steps") == rb.get("steps")
            fa, fb = _floats(ra), _floats(rb)
            for k in fa:
                assert math.isclose(fa[k], fb[k], rel_tol=1e-9, abs_tol=1e-9), (ra["phase"], ra["epoch"], k)


def test_skipped_batches_are_counted_per_run_as_solo(wiki_bench: Path) -> None:
    """Batches of 8: a modality often has fewer than 2 rows, and each run skips other batches.
    (Losses are not compared here: BatchNorm over 2–3 rows amplifies even float64 rounding by
    about 10× per step; the masked update itself is checked in the optimiser test below.)"""
    data = BenchmarkData.from_store(wiki_bench)
    over = {"batch_size": 8, "pretrain_epochs": 1, "epochs": 1, "eval_every": 0}
    solo = _trainers(data, [0, 1, 2], False, **over)
    for t in solo:
        t.run()
    stacked = _trainers(data, [0, 1, 2], False, **over)
    StackedTrainer(stacked).run()
    assert [t.skipped_batches for t in stacked] == [t.skipped_batches for t in solo]
    assert len({t.skipped_batches for t in solo}) > 1, "the runs should skip different batches"
    for a, b in zip(solo, stacked):
        assert [(r["phase"], r["steps"], r.get("critic_steps")) for r in a.history] == \
               [(r["phase"], r["steps"], r.get("critic_steps")) for r in b.history]


@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_masked_optimizer_step_leaves_inactive_runs_untouched(kind: str) -> None:
    """An inactive run keeps its parameters and state bit for bit; the active runs move exactly as
    a torch.optim optimiser moves each of them alone (Adam: per-run step counts)."""
    from train.dm2c_stacked import StackedOptimizer

    g = torch.Generator().manual_seed(0)
    leaf = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).requires_grad_()
    opt = StackedOptimizer([([leaf], 0.01)], kind, 3, weight_decay=0.1, betas=(0.5, 0.999))
    solo = [[leaf[p, s].detach().clone().requires_grad_() for s in range(3)] for p in range(2)]
    make = (lambda ps: torch.optim.RMSprop(ps, lr=0.01, weight_decay=0.1)) if kind == "rmsprop" else \
        (lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.5, 0.999), weight_decay=0.1))
    solo_opts = [make([solo[0][s], solo[1][s]]) for s in range(3)]
    for active in ([True, True, True], [True, False, True], [False, True, True], [True, True, True]):
        grad = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
        before = leaf.detach().clone()
        leaf.grad = grad.clone()
        opt.step(np.array(active))
        for s in range(3):
            if active[s]:
                for p in range(2):
                    solo[p][s].grad = grad[p, s].clone()
                solo_opts[s].step()
            else:
                assert torch.equal(leaf.detach()[:, s], before[:, s])
            for p in range(2):
                torch.testing.assert_close(leaf.detach()[p, s], solo[p][s].detach(), rtol=1e-12, atol=1e-14)


def test_stacked_checkpoint_resumes_as_a_finished_solo_run(wiki_bench: Path, tmp_path: Path) -> None:
    """float32, as the product runs: each run's final checkpoint (weights, optimiser states, RNG,
    history) is one the solo trainer resumes as finished, giving the same final evaluation."""
    data = BenchmarkData.from_store(wiki_bench)
    trainers = []
    for s in (3, 4):
        cfg = TrainConfig.from_dict({"seed": s, "device": "cpu", "threads": 1, "pretrain_epochs": 1, "epochs": 2, "n_init": 3})
        trainers.append(FaithfulTrainer(cfg, data, checkpoint_dir=tmp_path / f"s{s}"))
    evs = StackedTrainer(trainers).run()
    for t, ev in zip(trainers, evs):
        again = FaithfulTrainer(t.cfg, data, checkpoint_dir=t.checkpoint_dir)
        assert again.restore()
        ev2 = again.run()
        assert ev2.metrics == ev.metrics
        assert again.history == t.history
        for pa, pb in zip(again.net.parameters(), t.net.parameters()):
            assert torch.equal(pa, pb)


def test_stacked_refuses_mixed_configs(wiki_bench: Path) -> None:
    data = BenchmarkData.from_store(wiki_bench)
    a = FaithfulTrainer(TrainConfig.from_dict({"seed": 0, "device": "cpu", "epochs": 1}), data)
    b = FaithfulTrainer(TrainConfig.from_dict({"seed": 1, "device": "cpu", "epochs": 2}), data)
    with pytest.raises(Exception, match="same \\[train\\] config except the seed"):
        StackedTrainer([a, b])


def test_masked_batchnorm_gradient_matches_autograd_of_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 1, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, 1, 4, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 7, 1, dtype=torch.float64)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    count = mask.sum(1, keepdim=True)
    up = torch.randn(3, 7, 4, generator=g, dtype=torch.float64) * mask  # padded rows get no gradient

    def reference(x, w, b):
        mean = (x * mask).sum(1, keepdim=True) / count
        var = (((x - mean) ** 2) * mask).sum(1, keepdim=True) / count
        return (x - mean) / torch.sqrt(var + 1e-5) * w + b

    grads = []
    for fn in (lambda x, w, b: MaskedBatchNorm.apply(x, w, b, mask, count, 1e-5)[0], reference):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = fn(xs, ws, bs)
        (y * up).sum().backward()
        grads.append((y.detach() * mask, xs.grad, ws.grad, bs.grad))
    for u, v in zip(*grads):
        torch.testing.assert_close(u, v)


def test_fit_many_equals_kmeans_per_dataset() -> None:
    """The batched evaluation k-means gives each dataset (different row counts) KMeans's result."""
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(400 - 31 * i, 6, generator=g) + (torch.arange(400 - 31 * i) % 5).unsqueeze(1).float() for i in range(3)]
    seeds = [5, 6, 7]
    many = fit_many(xs, 5, seeds, n_init=4, max_iter=300, tol=1e-4)
    for x, s, km in zip(xs, seeds, many):
        solo = KMeans(5, n_init=4, max_iter=300, tol=1e-4, seed=s, backend="torch").fit(x)
        assert math.isclose(km.inertia_, solo.inertia_, rel_tol=1e-6)
        assert np.array_equal(km.labels_.numpy(), np.asarray(solo.labels_))
        assert np.array_equal(km.predict(x[:20]).numpy(), np.asarray(solo.predict(x[:20])))
