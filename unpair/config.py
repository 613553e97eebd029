"""``[unpair]`` configuration: which training pairs to break, how, and how the loss ranking is scored.

Every field is, with the same spelling, a recipe key, a ``mixbench unpair`` flag and a key in the
benchmark store's lineage. Constraints are checked once when the config is built::

    recipe data/recipes/wiki.toml [unpair] ratio = 1.5: must be a number in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mixbench.config import Config, option
from mixbench.errors import ConfigError

from .scoring import ScorerSettings
from .strategies import list_strategies

MODES = ("drop", "zero", "decouple")
BALANCED = "balanced"


@dataclass(frozen=True)
class UnpairConfig(Config):
    """Settings of the unpair stage.

    ``ratio`` is the fraction of *training* pairs broken; the count is exact,
    ``n_broken = floor(ratio * n_pairs + 0.5)``, except for ``positional`` whose count is the UMML
    rule's (p = round(100 * ratio) of every 99 pairs). Non-train splits use ``test_ratio`` with the
    ``random`` strategy (the loss ranking exists only for the training split).
    """

    section: ClassVar[str] = "unpair"

    ratio: float = option(1.0, "fraction of TRAIN pairs broken", low=0.0, high=1.0)
    test_ratio: float = option(
        0.0, "fraction of test (and val) pairs broken, always by the random strategy", low=0.0, high=1.0
    )
    mode: str = option(
        "drop",
        "drop: keep one half of a broken pair; zero: keep both rows, zero-fill and mask the missing half; "
        "decouple: keep both halves, remove the link",
        choices=MODES,
    )
    strategy: str = option(
        "random",
        "which training pairs are broken: " + ", ".join(list_strategies()),
    )
    keep: str = option(
        BALANCED,
        "drop/zero modes: which half of a broken pair survives: 'balanced' (half each, the odd one to the "
        "first modality) or a modality name",
    )
    balance_classes: bool = option(False, "balance the kept halves within each class too (|n_a - n_b| <= 1 per class)")
    seed: int = option(0, "seed of the selection, the half assignment and the loss scorer")
    score_epochs: int = option(20, "loss scorer: training epochs", low=1)
    score_window: int = option(5, "loss scorer: a sample's score is its mean loss over the last K epochs", low=1)
    score_batch_size: int = option(256, "loss scorer: training batch size (pairs)", low=2)
    score_lr: float = option(1e-3, "loss scorer: AdamW learning rate (0 freezes the model)", low=0.0)
    score_weight_decay: float = option(1e-4, "loss scorer: AdamW weight decay", low=0.0)
    score_dim: int = option(64, "loss scorer: shared embedding dimension", low=1)
    score_hidden: int = option(256, "loss scorer: hidden width of each tower's MLP", low=1)
    score_temperature: float = option(0.1, "loss scorer: InfoNCE temperature", low=0.0, low_open=True)
    score_negatives: int = option(
        20000,
        "loss scorer: per-sample scores use all train pairs as negatives up to this many, else a fixed "
        "seeded reference subset of this size",
        low=1,
    )
    score_chunk: int = option(2048, "loss scorer: rows per chunk of the per-sample scoring pass", low=1)
    device: str = option("auto", "loss scorer device: auto (CUDA when present), cpu, cuda, cuda:N")

    def validate(self) -> None:
        if self.strategy not in list_strategies():
            raise ConfigError(
                f"[{self.section}] strategy = {self.strategy!r}: unknown strategy; choose one of "
                f"{', '.join(list_strategies())}."
            )
        if self.score_window > self.score_epochs:
            raise ConfigError(
                f"[{self.section}] score_window = {self.score_window}: the averaging window cannot be longer "
                f"than score_epochs = {self.score_epochs}; lower score_window or raise score_epochs."
            )
        if not self.keep:
            raise ConfigError(f"[{self.section}] keep = '': use 'balanced' or a modality name.")
        if self.balance_classes and self.keep != BALANCED:
            raise ConfigError(
                f"[{self.section}] balance_classes = true needs keep = 'balanced' (got keep = {self.keep!r}): "
                "with one fixed kept modality there is nothing to balance."
            )

    def scorer(self) -> ScorerSettings:
        """The loss-scorer settings of this config."""
        return ScorerSettings(
            epochs=self.score_epochs,
            window=self.score_window,
            batch_size=self.score_batch_size,
            lr=self.score_lr,
            weight_decay=self.score_weight_decay,
            dim=self.score_dim,
            hidden=self.score_hidden,
            temperature=self.score_temperature,
            negatives=self.score_negatives,
            chunk=self.score_chunk,
            device=self.device,
        )
