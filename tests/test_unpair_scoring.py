"""The loss scorer and the selection strategies of ``unpair`` (CPU, synthetic data: fast).

The scorer must key every loss by pair id and make a pair's score independent of the batch it
was trained in (the two bugs of the published MMU code; unpair/scoring.py says which).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mixbench.errors import ConfigError, DataError
from unpair import UnpairConfig, list_strategies
from unpair.scoring import ScorerSettings, info_nce, per_sample_info_nce, score_pairs
from unpair.strategies import assign_kept, exact_count, ranks_of, select, stratified_ranks

N, DA, DB, N_BAD = 240, 24, 16, 12
FAST = ScorerSettings(epochs=6, window=2, batch_size=64, lr=1e-2, hidden=64, dim=16, temperature=0.2, device="cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aligned synthetic pairs (x_b is a noisy linear map of x_a) with N_BAD mismatched pairs.

    Pair ids are spread out (not 0..N-1) so that keying by id and by position differ."""
    rng = np.random.default_rng(7)
    xa = rng.normal(size=(N, DA)).astype(np.float32)
    w = rng.normal(size=(DA, DB)).astype(np.float32)
    xb = (xa @ w + 0.3 * rng.normal(size=(N, DB))).astype(np.float32)
    bad = np.sort(rng.choice(N, size=N_BAD, replace=False))
    xb[bad] = xb[np.roll(bad, 1)]  # these pairs now hold another pair's second half
    pair = 1000 + 7 * np.arange(N, dtype=np.int64)
    return xa, xb, pair, pair[bad]


def test_frozen_model_scores_do_not_depend_on_shuffling(pairs):
    xa, xb, pair, _ = pairs
    frozen = ScorerSettings(**{**FAST.to_dict(), "lr": 0.0})
    r1 = score_pairs(xa, xb, pair, frozen, seed=3, shuffle_seed=1, progress=False)
    r2 = score_pairs(xa, xb, pair, frozen, seed=3, shuffle_seed=2, progress=False)
    assert np.array_equal(r1.per_epoch, r2.per_epoch)
    assert np.array_equal(r1.scores, r2.scores)
    # the batch losses do depend on the shuffling: only the separate scoring pass is batch-free
    assert r1.train_loss != r2.train_loss


def test_shuffle_seed_is_used_when_training(pairs):
    xa, xb, pair, _ = pairs
    r1 = score_pairs(xa, xb, pair, FAST, seed=3, shuffle_seed=1, progress=False)
    r2 = score_pairs(xa, xb, pair, FAST, seed=3, shuffle_seed=2, progress=False)
    assert not np.array_equal(r1.scores, r2.scores)


def test_permuting_rows_gives_identical_scores_keyed_by_id(pairs):
    xa, xb, pair, _ = pairs
    base = score_pairs(xa, xb, pair, FAST, seed=5, progress=False)
    perm = np.random.default_rng(1).permutation(N)
    moved = score_pairs(xa[perm], xb[perm], pair[perm], FAST, seed=5, progress=False)
    assert np.array_equal(base.pair, np.sort(pair))
    assert np.array_equal(moved.pair, base.pair)
    assert np.array_equal(moved.scores, base.scores)
    assert np.array_equal(moved.per_epoch, base.per_epoch)
    # looked up by id from the permuted order, every pair finds its own score
    assert np.array_equal(moved.score_of(pair[perm]), base.score_of(pair)[perm])


def test_score_follows_the_sample(pairs):
    """Mismatched pairs get the highest losses, wherever their rows sit."""
    xa, xb, pair, bad_ids = pairs
    perm = np.random.default_rng(2).permutation(N)
    for order in (np.arange(N), perm):
        res = score_pairs(xa[order], xb[order], pair[order], FAST, seed=0, progress=False)
        top = res.pair[np.argsort(res.scores)[-N_BAD:]]
        assert set(top.tolist()) == set(bad_ids.tolist())
        assert res.score_of(bad_ids).min() > np.delete(res.scores, np.searchsorted(res.pair, bad_ids)).max()
        sel = select("loss-highest", n_pairs=N, ratio=N_BAD / N, rng=np.random.default_rng(0), scores=res.scores)
        assert set(res.pair[sel.broken].tolist()) == set(bad_ids.tolist())
        low = select("loss-lowest", n_pairs=N, ratio=N_BAD / N, rng=np.random.default_rng(0), scores=res.scores)
        assert not set(res.pair[low.broken].tolist()) & set(bad_ids.tolist())


def test_scores_average_the_last_window_epochs(pairs):
    xa, xb, pair, _ = pairs
    res = score_pairs(xa, xb, pair, FAST, seed=0, progress=False)
    assert res.per_epoch.shape == (FAST.epochs, N)
    assert np.allclose(res.scores, res.per_epoch[-FAST.window :].astype(np.float64).mean(0))
    assert len(res.train_loss) == FAST.epochs and res.train_loss[-1] < res.train_loss[0]
    s = res.summary()
    assert s["final_train_loss"] == res.train_loss[-1] and s["n_negatives"] == N - 1


def test_per_sample_pass_matches_full_batch_info_nce():
    """With all pairs as negatives, the mean per-sample loss is the full-batch symmetric InfoNCE,
    and chunking does not change the per-sample values."""
    g = torch.Generator().manual_seed(0)
    za = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    zb = torch.nn.functional.normalize(torch.randn(50, 8, generator=g), dim=1)
    per = per_sample_info_nce(za, zb, None, 0.3, chunk=7)
    assert torch.allclose(per.mean(), info_nce(za, zb, 0.3), atol=1e-5)
    assert torch.allclose(per, per_sample_info_nce(za, zb, None, 0.3, chunk=50), atol=1e-6)
    # brute force for one row: candidates are itself plus every other pair
    i = 13
    la = -torch.log_softmax(za[i] @ zb.T / 0.3, 0)[i]
    lb = -torch.log_softmax(zb[i] @ za.T / 0.3, 0)[i]
    assert torch.allclose(per[i], 0.5 * (la + lb), atol=1e-5)


def test_reference_subset_of_negatives(pairs):
    xa, xb, pair, bad_ids = pairs
    small = ScorerSettings(**{**FAST.to_dict(), "negatives": 100, "chunk": 33})
    res = score_pairs(xa, xb, pair, small, seed=0, progress=False)
    assert res.n_negatives == 100 and res.reference is not None and len(res.reference) == 100
    assert set(res.reference.tolist()) <= set(pair.tolist())
    assert np.isfinite(res.scores).all()
    top = res.pair[np.argsort(res.scores)[-N_BAD:]]
    assert len(set(top.tolist()) & set(bad_ids.tolist())) >= N_BAD - 2


def test_scorer_rejects_bad_input(pairs):
    xa, xb, pair, _ = pairs
    with pytest.raises(DataError, match="aligned"):
        score_pairs(xa, xb[:-1], pair, FAST, progress=False)
    bad = xa.copy()
    bad[5, 0] = np.nan
    with pytest.raises(DataError, match=f"pair {int(pair[5])}"):
        score_pairs(bad, xb, pair, FAST, progress=False)
    with pytest.raises(DataError, match="unique"):
        score_pairs(xa, xb, np.zeros(N, dtype=np.int64), FAST, progress=False)


# -- strategies ------------------------------------------------------------------------------


def test_registry_and_exact_counts():
    assert list_strategies() == ["random", "loss-highest", "loss-lowest", "loss-stratified", "positional"]
    assert exact_count(0.3, 2173) == 652 and exact_count(0.3, 693) == 208
    assert exact_count(0.5, 3) == 2 and exact_count(0.5, 5) == 3 and exact_count(1.0, 7) == 7 and exact_count(0.0, 7) == 0
    with pytest.raises(ConfigError, match="random, loss-highest"):
        select("loss-max", n_pairs=3, ratio=0.5, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="loss-highest"):
        UnpairConfig(strategy="loss-max")


def test_rank_strategies_use_the_sample_at_each_rank():
    """order[r] (the pair at rank r), not where(order == r) (the rank of pair r): MMU's second bug."""
    scores = np.array([5.0, 1.0, 4.0, 0.0, 3.0, 2.0, 9.0, 7.0])
    rng = np.random.default_rng(0)
    hi = select("loss-highest", n_pairs=8, ratio=3 / 8, rng=rng, scores=scores)
    lo = select("loss-lowest", n_pairs=8, ratio=3 / 8, rng=rng, scores=scores)
    assert np.flatnonzero(hi.broken).tolist() == [0, 6, 7]
    assert np.flatnonzero(lo.broken).tolist() == [1, 3, 5]
    order = np.argsort(scores)
    assert order.tolist() == [3, 1, 5, 4, 2, 0, 7, 6]
    assert ranks_of(scores).tolist() == [5, 1, 4, 0, 3, 2, 7, 6]
    buggy_lowest = [int(np.flatnonzero(order == r)[0]) for r in range(3)]  # MMU's where(order == i)
    assert sorted(buggy_lowest) != np.flatnonzero(lo.broken).tolist()
    # ties: broken by position (= pair id in canonical order)
    tied = select("loss-highest", n_pairs=4, ratio=0.5, rng=rng, scores=np.array([1.0, 1.0, 1.0, 1.0]))
    assert np.flatnonzero(tied.broken).tolist() == [2, 3]


def test_stratified_spreads_over_the_ranking():
    assert stratified_ranks(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert stratified_ranks(10, 10).tolist() == list(range(10))
    assert stratified_ranks(10, 0).tolist() == []
    for n, k in ((2173, 652), (99, 20), (7, 3), (1000, 999)):
        r = stratified_ranks(n, k)
        assert len(np.unique(r)) == k and r.min() >= 0 and r.max() < n
        gaps = np.diff(r)
        assert gaps.max() - gaps.min() <= 1  # even spread
    scores = np.random.default_rng(0).random(200)
    sel = select("loss-stratified", n_pairs=200, ratio=0.25, rng=np.random.default_rng(0), scores=scores)
    assert sel.n_broken == 50
    assert sorted(ranks_of(scores)[sel.broken].tolist()) == stratified_ranks(200, 50).tolist()


def test_positional_reproduces_the_umml_rule():
    sel = select("positional", n_pairs=10000, ratio=0.2, rng=np.random.default_rng(0))
    assert sel.details["p"] == 20 and sel.details["period"] == 99
    assert sel.n_broken == 2021  # UMML: 20 of every 99 of 10,000 rows
    counter = np.arange(10000) % 99
    assert np.array_equal(sel.broken, counter < 20)
    assert select("positional", n_pairs=10000, ratio=0.8, rng=np.random.default_rng(0)).n_broken == 8081
    assert select("positional", n_pairs=500, ratio=1.0, rng=np.random.default_rng(0)).n_broken == 500
    assert select("positional", n_pairs=500, ratio=0.0, rng=np.random.default_rng(0)).n_broken == 0


def test_random_is_seeded_and_exact():
    a = select("random", n_pairs=1000, ratio=0.37, rng=np.random.default_rng(1))
    b = select("random", n_pairs=1000, ratio=0.37, rng=np.random.default_rng(1))
    c = select("random", n_pairs=1000, ratio=0.37, rng=np.random.default_rng(2))
    assert a.n_broken == 370 and np.array_equal(a.broken, b.broken) and not np.array_equal(a.broken, c.broken)


def test_loss_strategy_needs_finite_scores():
    with pytest.raises(ConfigError, match="needs one score"):
        select("loss-highest", n_pairs=4, ratio=0.5, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="not finite"):
        select("loss-lowest", n_pairs=3, ratio=0.5, rng=np.random.default_rng(0), scores=np.array([0.0, np.nan, 1.0]))


@pytest.mark.parametrize("k", [0, 1, 7, 8, 301])
def test_assign_kept_balanced(k):
    broken = np.zeros(400, dtype=bool)
    broken[np.random.default_rng(k).choice(400, size=k, replace=False)] = True
    kept = assign_kept(broken, "balanced", np.random.default_rng(0))
    assert (kept[~broken] == -1).all() and set(kept[broken].tolist()) <= {0, 1}
    assert int((kept == 0).sum()) == math.ceil(k / 2) and int((kept == 1).sum()) == k // 2
    assert (assign_kept(broken, 1, np.random.default_rng(0))[broken] == 1).all()


def test_assign_kept_balanced_per_class():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, size=500)
    broken = rng.random(500) < 0.6
    kept = assign_kept(broken, "balanced", np.random.default_rng(0), labels=labels)
    k = int(broken.sum())
    assert int((kept == 0).sum()) == math.ceil(k / 2) and int((kept == 1).sum()) == k // 2
    for c in range(7):
        in_c = labels == c
        assert abs(int((kept[in_c] == 0).sum()) - int((kept[in_c] == 1).sum())) <= 1
        assert int((kept[in_c] >= 0).sum()) == int((broken & in_c).sum())
