"""Selection strategies: which pairs of a split are broken, and which half of each survives.

Pairs are always handled in *canonical order*: sorted by pair id (prep assigns pair ids in the
source file's order, so this is also the source order). A strategy gets the number of pairs, the
ratio, a seeded ``np.random.Generator`` and, for the loss strategies, one score per pair (same
order), and returns a :class:`Selection`: a boolean mask over the pairs plus how the count was
obtained.

Counts are exact: ``n_broken = floor(ratio * n_pairs + 0.5)`` (round half up, computed once), except
for ``positional``, which reproduces the UMML release: pairs in source order, a counter 0..98 that
wraps at 99, a pair broken iff its counter is below ``p = floor(100 * ratio + 0.5)``; its count is
whatever the rule gives (``p/99`` of the pairs, roughly), and it is recorded as such.

Ranks (loss strategies): rank 0 is the lowest score; ties are broken by pair id (stable sort).

>>> import numpy as np
>>> sel = select("loss-highest", n_pairs=5, ratio=0.4, rng=np.random.default_rng(0),
...              scores=np.array([0.1, 0.9, 0.5, 0.3, 0.7]))
>>> np.flatnonzero(sel.broken).tolist()
[1, 4]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixbench.errors import ConfigError, DataError

UMML_PERIOD = 99
COUNT_RULE = "floor(ratio * n_pairs + 0.5)"


def exact_count(ratio: float, n_pairs: int) -> int:
    """``floor(ratio * n_pairs + 0.5)``: the number of pairs broken at ``ratio`` (round half up)."""
    return min(n_pairs, max(0, math.floor(ratio * n_pairs + 0.5)))


@dataclass(frozen=True)
class Selection:
    """The outcome of a strategy over ``n`` pairs in canonical order."""

    broken: np.ndarray  # (n,) bool
    rule: str  # how the count was obtained
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n_broken(self) -> int:
        return int(self.broken.sum())


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: ``fn(n_pairs, ratio, rng, scores) -> Selection``."""

    name: str
    needs_scores: bool
    help: str
    fn: Callable[[int, float, np.random.Generator, np.ndarray | None], Selection]


_REGISTRY: dict[str, Strategy] = {}


def register(name: str, *, needs_scores: bool, help: str) -> Callable[[Callable[..., Selection]], Callable[..., Selection]]:
    """Decorator adding a strategy to the registry (``list_strategies()`` shows it)."""

    def deco(fn: Callable[..., Selection]) -> Callable[..., Selection]:
        if name in _REGISTRY:
            raise ValueError(f"strategy {name!r} is registered twice")
        _REGISTRY[name] = Strategy(name, needs_scores, help, fn)
        return fn

    return deco


def list_strategies() -> list[str]:
    """Names of the registered strategies, in registration order."""
    return list(_REGISTRY)


def get_strategy(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown unpair strategy {name!r}; choose one of {', '.join(_REGISTRY)}.") from None


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """Rank of every pair (0 = lowest score, ties by position = pair id); ``order[ranks] == arange``."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(len(scores), dtype=np.int64)
    return ranks


def stratified_ranks(n: int, k: int) -> np.ndarray:
    """``k`` distinct ranks spread evenly over ``0..n-1``: ``floor((i + 1/2) * n / k)``, i = 0..k-1."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    i = np.arange(k, dtype=np.int64)
    return ((2 * i + 1) * n) // (2 * k)


def _mask(n: int, chosen: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[chosen] = True
    return m


def _require_scores(name: str, n: int, scores: np.ndarray | None) -> np.ndarray:
    if scores is None:
        raise ConfigError(f"strategy {name!r} ranks pairs by loss; it needs one score per pair (none given).")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (n,):
        raise DataError(f"strategy {name!r}: got {s.shape} scores for {n} pairs; one score per pair is needed.")
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise DataError(
            f"strategy {name!r}: the score of pair #{bad} (canonical order) is not finite; the loss scorer "
            "diverged. Lower score_lr or raise score_temperature and rerun."
        )
    return s


@register("random", needs_scores=False, help="a seeded uniform sample of exactly n_broken pairs")
def _random(n: int, ratio: float, rng: np.random.Generator, scores: np.ndarray | None) -> Selection:
    k = exact_count(ratio, n)
    return Selection(_mask(n, rng.permutation(n)[:k]), COUNT_RULE, {"exact": ratio * n})


def _by_rank(name: str, pick: Callable[[int, int], np.ndarray]) -> Callable[..., Selection]:
    def fn(n: int, ratio: float, rng: np.random.Generator, scores: np.ndarray | None) -> Selection:
        s = _require_scores(name, n, scores)
        k = exact_count(ratio, n)
        order = np.argsort(s, kind="stable")  # order[r] = the pair at rank r (not where(order == r))
        return Selection(_mask(n, order[pick(n, k)]), COUNT_RULE, {"exact": ratio * n})

    return fn


register("loss-highest", needs_scores=True, help="the n_broken pairs with the highest loss")(
    _by_rank("loss-highest", lambda n, k: np.arange(n - k, n))
)
register("loss-lowest", needs_scores=True, help="the n_broken pairs with the lowest loss")(
    _by_rank("loss-lowest", lambda n, k: np.arange(k))
)
register(
    "loss-stratified", needs_scores=True, help="n_broken pairs spread evenly over the loss ranking"
)(_by_rank("loss-stratified", stratified_ranks))


@register(
    "positional",
    needs_scores=False,
    help="UMML release: pairs in source order, counter 0..98 wrapping at 99, broken iff counter < round(100*ratio)",
)
def _positional(n: int, ratio: float, rng: np.random.Generator, scores: np.ndarray | None) -> Selection:
    p = math.floor(100 * ratio + 0.5)
    counter = np.arange(n) % UMML_PERIOD
    broken = counter < p
    return Selection(
        broken,
        f"UMML positional rule: counter = position % {UMML_PERIOD}, broken iff counter < p",
        {"p": p, "period": UMML_PERIOD, "exact": ratio * n},
    )


def select(
    name: str, *, n_pairs: int, ratio: float, rng: np.random.Generator, scores: np.ndarray | None = None
) -> Selection:
    """Run strategy ``name`` over ``n_pairs`` pairs (canonical order)."""
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"ratio = {ratio!r}: must be a number in [0, 1].")
    return get_strategy(name).fn(n_pairs, ratio, rng, scores)


def assign_kept(
    broken: np.ndarray,
    keep: str | int,
    rng: np.random.Generator,
    *,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Which half of every broken pair survives: 0 (first modality), 1 (second); -1 where not broken.

    ``keep = "balanced"``: a seeded half of the broken pairs keeps each modality, ``ceil(k/2)`` the
    first. With ``labels`` (one int per pair), the split is balanced within every class as well:
    each class is split half/half and the odd pair of each odd-sized class goes, alternately
    (over the odd classes in a seeded order), to the first and the second modality, so both
    the per-class and the overall difference are at most one (overall ``ceil(k/2)`` first).
    ``keep = 0`` or ``1``: every broken pair keeps that modality.
    """
    broken = np.asarray(broken, dtype=bool)
    kept = np.full(len(broken), -1, dtype=np.int8)
    idx = np.flatnonzero(broken)
    if keep in (0, 1):
        kept[idx] = keep
        return kept
    if keep != "balanced":
        raise ConfigError(f"keep = {keep!r}: use 'balanced' or a modality index 0/1.")
    if labels is None:
        perm = idx[rng.permutation(len(idx))]
        first = math.ceil(len(idx) / 2)
        kept[perm[:first]] = 0
        kept[perm[first:]] = 1
        return kept
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != len(broken):
        raise DataError(f"class balancing needs one integer label per pair; got labels of shape {labels.shape}.")
    classes = np.unique(labels[idx])
    odd = [c for c in classes if np.count_nonzero(labels[idx] == c) % 2 == 1]
    odd_order = [odd[i] for i in rng.permutation(len(odd))]
    extra_first = {c: (j % 2 == 0) for j, c in enumerate(odd_order)}
    for c in classes:
        members = idx[labels[idx] == c]
        members = members[rng.permutation(len(members))]
        half = len(members) // 2
        first = half + (1 if extra_first.get(c, False) else 0)
        kept[members[:first]] = 0
        kept[members[first:]] = 1
    return kept
