"""unpair: turn a paired features store into a mixed-modal benchmark.

``unpair(src, out, config)`` breaks a ratio of the training pairs, chosen by a strategy
(``list_strategies()``: random, loss-highest, loss-lowest, loss-stratified, positional), in one of
three modes (drop, zero, decouple), and saves the selection (scores, ranks, chosen ids) next to
the benchmark as ``selection.h5``.
"""

from .config import UnpairConfig
from .scoring import ScorerSettings, ScoreResult, score_pairs
from .stage import unpair
from .strategies import list_strategies

__all__ = ["ScoreResult", "ScorerSettings", "UnpairConfig", "list_strategies", "score_pairs", "unpair"]
